"""``client.chat``: start and continue chat sessions, answers streamed as events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import msgspec

from ._config import RetryPolicy, Timeout
from ._streaming import ChatStream
from ._transport import Transport
from .errors import ValidationError
from .models import (
    ChatRequestSession,
    ContinueChatRequest,
    CreateChatRequest,
    Message,
    RecordsCited,
)

__all__ = ["Chat"]

ROLES = ("user", "assistant")


class Chat:
    """Chat operations; authenticated by the API key or by a client token."""

    def __init__(self, transport: Transport):
        self._transport = transport

    def create(
        self,
        *,
        integration_id: str,
        messages: Sequence[Message | Mapping[str, Any]] | str,
        guidance: str | None = None,
        context: str | None = None,
        tags: Sequence[str] | None = None,
        chat_mode: str | None = None,
        stream: bool = True,
        timeout: Timeout | float | None = None,
        retries: RetryPolicy | int | None = None,
    ) -> ChatStream:
        """Start a chat session; returns its answer as a :class:`ChatStream` (no ``await``).

        ``messages`` is the conversation so far, ending with the user's question (a plain
        string is one user message). With ``stream=False`` the server answers in one JSON
        body, and the stream replays it as events.
        """
        _check_text("integration_id", integration_id)
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
        return self._stream(
            "/chat_sessions/chat_results", msgspec.json.encode(body), timeout, retries
        )

    def continue_(
        self,
        chat_session_id: str,
        *,
        integration_id: str,
        message: Message | Mapping[str, Any] | str,
        stream: bool = True,
        timeout: Timeout | float | None = None,
        retries: RetryPolicy | int | None = None,
    ) -> ChatStream:
        """Ask the next question in an existing session; the server keeps the history.

        ``message`` is a :class:`Message` or a plain string (a user message).
        """
        _check_text("chat_session_id", chat_session_id)
        _check_text("integration_id", integration_id)
        question = _message(message, "message")
        if question.role != "user":
            raise ValidationError(
                f"message.role must be 'user' (the next question), got {question.role!r}"
            )
        body = ContinueChatRequest(
            integration_id=integration_id, message=question, stream=bool(stream)
        )
        path = f"/chat_sessions/{quote(chat_session_id, safe='')}/chat_results"
        return self._stream(path, msgspec.json.encode(body), timeout, retries)

    def _stream(
        self,
        path: str,
        body: bytes,
        timeout: Timeout | float | None,
        retries: RetryPolicy | int | None,
    ) -> ChatStream:
        t = self._transport
        return ChatStream(
            t,
            api="chat",
            url=t.url("chat", path),
            body=body,
            timeout=Timeout.coerce(timeout) if timeout is not None else t.timeout,
            retries=RetryPolicy.coerce(retries) if retries is not None else t.retries,
            max_event_size=t.max_event_size,
        )


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
    if value.role not in ROLES:
        raise ValidationError(f"{where}.role must be 'user' or 'assistant', got {value.role!r}")
    if not isinstance(value.content, str):
        raise ValidationError(f"{where}.content must be a string")
    if value.records_cited is not None and not isinstance(value.records_cited, RecordsCited):
        raise ValidationError(f"{where}.records_cited must be a RecordsCited or None")
    if value.role == "user" and not value.content.strip():
        raise ValidationError(f"{where}.content must not be empty")
    return value
