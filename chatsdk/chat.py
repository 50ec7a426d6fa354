"""``client.chat``: the ``chat_results`` wire (SPEC 1.4/1.5), and ``chat.completions``.

This module is that wire's adapter to the stream core (``_streaming``): its events,
their decoding, and the fold into a :class:`ChatResult`. Sending, retries, timeouts,
resume and release are the core's, shared with Chat Completions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast
from urllib.parse import quote

import msgspec

from ._config import NOT_GIVEN, NotGiven, RetryPolicy, Timeout, check_header_value, json_body
from ._streaming import EventStream
from ._transport import Transport
from .completions import Completions, error_event
from .errors import APIError, ValidationError
from .models import (
    MESSAGE_ROLES,
    ChatEvent,
    ChatRequestSession,
    ChatResponse,
    ChatResult,
    Citation,
    ContinueChatRequest,
    CreateChatRequest,
    Message,
    MessageChunk,
    RecordsCited,
    UnknownEvent,
)
from .sse import EventRun

__all__ = ["Chat", "ChatStream"]

# Built once per type (msgspec's advice): a Decoder caches its type's validation plan.
_CHUNK = msgspec.json.Decoder(MessageChunk)
_CITED = msgspec.json.Decoder(RecordsCited)
_RESPONSE = msgspec.json.Decoder(ChatResponse)


class _ChatResultsWire:
    """The ``chat_results`` events and their fold into a :class:`ChatResult`.

    The wire has no end marker (SPEC 1.4): the body ends after the chunk that carries a
    ``finish_reason`` (and the ``records_cited`` that follows it). A body that ends before
    any ``finish_reason`` is an answer cut short. An ``error`` event is the server saying
    it failed: :class:`APIError`, as on the Chat Completions wire.
    """

    finished = False
    end = "the chunk with a finish_reason that ends every answer"

    def __init__(self) -> None:
        self._text: list[str] = []
        self._citations: list[Citation] = []
        self._finish_reason: str | None = None
        self.chat_session_id: str | None = None

    def decode(self, runs: list[EventRun]) -> list[ChatEvent]:
        if len(runs) == 1 and runs[0][0] == "message_chunk":
            # The hot path: each payload decoded on its own, all in C (one decode of a
            # run joined as a JSON array or JSON lines is no cheaper, and accepts
            # malformed payloads whose join is valid: '{"a":"x"},{"a":"' and '"}'), and
            # folded knowing they are all chunks.
            chunks = list(map(_CHUNK.decode, runs[0][1]))
            self._fold(chunks)
            return cast("list[ChatEvent]", chunks)
        decoded: list[ChatEvent] = []
        for event, datas in runs:
            if event == "message_chunk":
                decoded += map(_CHUNK.decode, datas)
            else:
                for data in datas:
                    decoded += self.decode_one(event, data)
        return self.take(decoded)

    @property
    def ended(self) -> bool:
        return self._finish_reason is not None

    answered = ended  # chat_results has no end marker: its answer says it is whole

    def failure(self, data: str) -> APIError:
        return error_event(data)

    def decode_one(self, event: str, data: str) -> list[ChatEvent]:
        if event == "message_chunk":
            return [_CHUNK.decode(data)]
        if event == "records_cited":
            return [_CITED.decode(data)]
        if event == "error":
            raise error_event(data)
        return [UnknownEvent(event=event, data=data)]

    def whole(self, body: bytes) -> list[ChatEvent]:
        try:
            answer = _RESPONSE.decode(body)
        except msgspec.ValidationError:
            if b'"error"' in body:  # {"error": {...}}: the server's failure, not an answer
                error = msgspec.json.decode(body)
                if isinstance(error, dict) and error.get("error") is not None:
                    raise error_event(body, "answered with an error") from None
            raise
        events: list[ChatEvent] = [
            MessageChunk(
                content_chunk=answer.message.content,
                chat_session_id=answer.chat_session_id,
                finish_reason="stop",
            )
        ]
        if answer.message.records_cited is not None:
            events.append(answer.message.records_cited)
        return events

    def take(self, events: list[ChatEvent]) -> list[ChatEvent]:
        chunks = [event for event in events if type(event) is MessageChunk]
        if len(chunks) != len(events):
            for event in events:
                if type(event) is RecordsCited:
                    self._citations.extend(event.citations)
        self._fold(chunks)
        return events

    def _fold(self, chunks: list[MessageChunk]) -> None:
        # Comprehensions: CPython's specialised attribute reads beat attrgetter.
        self._text.append("".join([chunk.content_chunk for chunk in chunks]))
        finished = [chunk.finish_reason for chunk in chunks if chunk.finish_reason is not None]
        if finished:
            self._finish_reason = finished[-1]
        if self.chat_session_id is None:
            ids = [chunk.chat_session_id for chunk in chunks if chunk.chat_session_id]
            if ids:
                self.chat_session_id = ids[0]

    def text(self, event: ChatEvent) -> str | None:
        return event.content_chunk if type(event) is MessageChunk else None

    def result(self) -> ChatResult:
        citations = list(self._citations)
        return ChatResult(
            chat_session_id=self.chat_session_id,
            message=Message(
                role="assistant",
                content="".join(self._text),
                records_cited=RecordsCited(citations) if citations else None,
            ),
            citations=citations,
            finish_reason=self._finish_reason,
        )


class ChatStream(EventStream[ChatEvent, ChatResult]):
    """The answer to ``chat.create`` / ``chat.continue_``: events of the ``chat_results`` wire.

    Iterate it for :class:`MessageChunk`, :class:`RecordsCited` and :class:`UnknownEvent`
    values, use :attr:`text_stream` for the text alone, or ``await`` it (or
    :meth:`final_result`) for the whole :class:`ChatResult`::

        async with client.chat.create(integration_id="docs", messages=[...]) as stream:
            async for text in stream.text_stream:
                print(text, end="")
            result = await stream.final_result()
    """

    @property
    def chat_session_id(self) -> str | None:
        """The chat session this answer belongs to, once the server has said it."""
        return cast(_ChatResultsWire, self._wire).chat_session_id


class Chat:
    """Chat operations; authenticated by the API key or by a client token.

    ``chat.create`` and ``chat.continue_`` speak the ``chat_results`` wire (SPEC 1.4/1.5,
    Inkeep v0, deprecated by Inkeep); ``chat.completions.create`` the current Chat
    Completions wire of both services (SPEC 1.8).
    """

    def __init__(self, transport: Transport):
        self._transport = transport
        self._completions = Completions(transport)

    @property
    def completions(self) -> Completions:
        """Chat Completions (``chat.completions.create(...)``), the current chat API."""
        return self._completions

    def create(
        self,
        *,
        integration_id: str,
        messages: Sequence[Message | Mapping[str, Any]] | str,
        guidance: str | None = None,
        context: str | None = None,
        tags: Sequence[str] | None = None,
        chat_mode: Literal["turbo", "auto"] | str | None = None,
        stream: bool = True,
        timeout: Timeout | float | NotGiven | None = NOT_GIVEN,
        retries: RetryPolicy | int | NotGiven | None = NOT_GIVEN,
    ) -> ChatStream:
        """Start a chat session (SPEC 1.4); returns its answer as a :class:`ChatStream`.

        No ``await``: the request is sent on first use of the stream, and every error
        (a refused call, a timeout, a malformed stream) is raised there.

        - ``integration_id``: the integration (the knowledge base and settings) to ask.
        - ``messages``: the conversation so far, ending with the user's question: a list
          of :class:`Message` (or mappings with ``role`` ``"user"``/``"assistant"`` and
          ``content``), or a plain string (one user message).
        - ``guidance``: extra instructions for this answer, not shown to the user.
        - ``context``: extra text the answer may draw on (e.g. the page the user is on).
        - ``tags``: labels kept with the session, for analytics.
        - ``chat_mode``: ``"turbo"`` (fast) or ``"auto"`` (the service picks), or any
          mode the service knows.
        - ``stream``: False asks for one JSON answer, which the stream replays as events.
        - ``timeout``, ``retries``: this call's (``None``: no limit, no retries).

        Raises :class:`ValidationError` at once for bad arguments.
        """
        _check_text("integration_id", integration_id)
        _check_bool("stream", stream)
        history = _messages(messages)
        for name, value in (("guidance", guidance), ("context", context), ("chat_mode", chat_mode)):
            if value is not None and not isinstance(value, str):
                raise ValidationError(f"{name} must be a string when given")
        if tags is not None and (
            isinstance(tags, str) or not all(isinstance(t, str) for t in tags)
        ):
            raise ValidationError("tags must be a list of strings")
        body = CreateChatRequest(
            integration_id=integration_id,
            chat_session=ChatRequestSession(
                messages=history,
                guidance=guidance,
                context=context,
                tags=list(tags) if tags is not None else None,
            ),
            chat_mode=chat_mode,
            stream=bool(stream),
        )
        return self._stream("/chat_sessions/chat_results", body, timeout, retries)

    def continue_(
        self,
        chat_session_id: str,
        *,
        integration_id: str,
        message: Message | Mapping[str, Any] | str,
        stream: bool = True,
        timeout: Timeout | float | NotGiven | None = NOT_GIVEN,
        retries: RetryPolicy | int | NotGiven | None = NOT_GIVEN,
    ) -> ChatStream:
        """Ask the next question in an existing session (SPEC 1.5); the server keeps the
        history. Returns a :class:`ChatStream`, as :meth:`create` does.

        ``chat_session_id`` is :attr:`ChatStream.chat_session_id` of an earlier answer;
        ``message`` a :class:`Message` with role ``"user"`` or a plain string.
        """
        _check_text("chat_session_id", chat_session_id)
        if chat_session_id in (".", ".."):
            # In the path it would name another endpoint (yarl resolves dot segments).
            raise ValidationError(
                f"chat_session_id must be a session's id, not the path segment "
                f"{chat_session_id!r} (it would send the request to another endpoint)"
            )
        check_header_value("chat_session_id", chat_session_id)  # no control or lone surrogate
        _check_text("integration_id", integration_id)
        _check_bool("stream", stream)
        question = _message(message, "message")
        if question.role != "user":
            raise ValidationError(
                f"message.role must be 'user' (the next question), got {question.role!r}"
            )
        body = ContinueChatRequest(
            integration_id=integration_id, message=question, stream=bool(stream)
        )
        path = f"/chat_sessions/{quote(chat_session_id, safe='')}/chat_results"
        return self._stream(path, body, timeout, retries)

    def _stream(
        self,
        path: str,
        body: CreateChatRequest | ContinueChatRequest,
        timeout: Timeout | float | NotGiven | None,
        retries: RetryPolicy | int | NotGiven | None,
    ) -> ChatStream:
        t = self._transport
        timeout_, retries_ = t.per_call(timeout, retries)
        return ChatStream(
            t,
            _ChatResultsWire(),
            api="chat",
            url=t.url("chat", path),
            body=json_body(body),
            timeout=timeout_,
            retries=retries_,
        )


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValidationError(f"{name} must be True or False, got {value!r}")


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} must be a non-empty string, got {value!r}")


def _messages(messages: Sequence[Message | Mapping[str, Any]] | str) -> list[Message]:
    if isinstance(messages, str):
        messages = [Message(role="user", content=messages)]
    if not isinstance(messages, Sequence) or not messages:
        raise ValidationError("messages must be a non-empty list of Message (or a question string)")
    history = [_message(m, f"messages[{i}]") for i, m in enumerate(messages)]
    if history[-1].role != "user":
        raise ValidationError("the last message must be the user's (role='user')")
    return history


def _message(value: Message | Mapping[str, Any] | str, where: str) -> Message:
    if isinstance(value, str):
        value = Message(role="user", content=value)
    elif isinstance(value, Mapping):
        try:
            value = msgspec.convert(dict(value), Message)
        except msgspec.ValidationError as exc:
            raise ValidationError(f"{where}: {exc}") from None
    if not isinstance(value, Message):
        raise ValidationError(f"{where} must be a Message, a mapping or a string")
    if value.role not in MESSAGE_ROLES:
        raise ValidationError(f"{where}.role must be 'user' or 'assistant', got {value.role!r}")
    if not isinstance(value.content, str):
        raise ValidationError(f"{where}.content must be a string")
    if value.records_cited is not None and not isinstance(value.records_cited, RecordsCited):
        raise ValidationError(f"{where}.records_cited must be a RecordsCited or None")
    if value.role == "user" and not value.content.strip():
        raise ValidationError(f"{where}.content must not be empty")
    return value
