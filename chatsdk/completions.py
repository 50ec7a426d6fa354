"""``client.chat.completions``: the Chat Completions wire (SPEC 1.8), as Gram and Inkeep serve it.

This module is that wire's adapter to the stream core (``_streaming``): chunks decoded
from data-only events, ``data: [DONE]`` as the end marker, an ``{"error": ...}`` chunk
raised as :class:`APIError`, tool-call fragments joined per index, and Inkeep's
``provideLinks`` / ``provideAIAnnotations`` tool calls decoded into typed events.
Names follow openai-python's (``client.chat.completions.create``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeVar, cast

import msgspec

from ._config import NOT_GIVEN, NotGiven, RetryPolicy, Timeout, json_body, json_value
from ._streaming import EventStream
from ._transport import DECODE_ERRORS, Transport, message_of
from .errors import APIError, ValidationError
from .models import (
    _EMPTY_DELTA,
    COMPLETION_ROLES,
    AIAnnotations,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageParam,
    ChatCompletionMessageToolCall,
    ChatCompletionRequest,
    ChatCompletionResult,
    ChatCompletionTool,
    ChoiceDelta,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallFunction,
    ChunkChoice,
    CompletionEvent,
    CompletionUsage,
    Function,
    FunctionDefinition,
    Link,
    ProvidedLinks,
    StreamOptions,
    UnknownEvent,
)
from .sse import EventRun

__all__ = ["INKEEP_TOOLS", "CompletionStream", "Completions", "error_event"]

log = logging.getLogger("chatsdk")

_CHUNK = msgspec.json.Decoder(ChatCompletionChunk)
_WHOLE = msgspec.json.Decoder(ChatCompletion)
_DONE: Final = "[DONE]"
_T = TypeVar("_T")


class _LinksArguments(msgspec.Struct):
    links: list[Link]  # required: other JSON is not this tool's arguments


class _Annotations(msgspec.Struct, frozen=True):
    answerConfidence: str | None = None


class _AnnotationsArguments(msgspec.Struct):
    aiAnnotations: _Annotations  # required: other JSON is not this tool's arguments


_LINKS = msgspec.json.Decoder(_LinksArguments)
_ANNOTATIONS = msgspec.json.Decoder(_AnnotationsArguments)

#: Inkeep's citation tools (SPEC 1.8): pass ``tools=INKEEP_TOOLS`` (with
#: ``tool_choice="auto"``) and the answer's sources arrive as :class:`ProvidedLinks` and
#: :class:`AIAnnotations` events and on the result (``links``, ``answer_confidence``).
INKEEP_TOOLS: Final = (
    ChatCompletionTool(
        function=FunctionDefinition(
            name="provideLinks",
            description="Provide the links the answer drew on.",
            parameters={
                "type": "object",
                "properties": {
                    "links": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "label": {"type": "string"},
                                "url": {"type": "string"},
                                "title": {"type": "string"},
                                "type": {"type": "string"},
                                "breadcrumbs": {"type": "array", "items": {"type": "string"}},
                            },
                            "required": ["url"],
                        },
                    }
                },
                "required": ["links"],
            },
        )
    ),
    ChatCompletionTool(
        function=FunctionDefinition(
            name="provideAIAnnotations",
            description="Say how confident the answer is.",
            parameters={
                "type": "object",
                "properties": {
                    "aiAnnotations": {
                        "type": "object",
                        "properties": {"answerConfidence": {"type": "string"}},
                    }
                },
                "required": ["aiAnnotations"],
            },
        )
    ),
)


_INKEEP_NAMES: Final = frozenset(tool.function.name for tool in INKEEP_TOOLS)
# A message's fields that only an answer has: never sent back in a request.
_ANSWER_ONLY: Final = frozenset({"reasoning_content", "reasoning"})


class _ToolCallParts:
    """The fragments of one tool call, joined as they come."""

    __slots__ = ("arguments", "extra_content", "id", "name", "type")

    def __init__(self) -> None:
        self.id = ""
        self.type = "function"
        self.name = ""
        self.arguments: list[str] = []
        self.extra_content: Any = None

    def add(self, fragment: ChoiceDeltaToolCall) -> None:
        if fragment.id and not self.id:  # the first id a call is given is its id
            self.id = fragment.id
        if fragment.extra_content is not None and self.extra_content is None:
            self.extra_content = fragment.extra_content
        if fragment.type:
            self.type = fragment.type
        function = fragment.function
        if function is not None:
            if function.name:
                self.name = function.name
            if function.arguments:
                self.arguments.append(function.arguments)

    def whole(self) -> ChatCompletionMessageToolCall:
        return ChatCompletionMessageToolCall(
            id=self.id,
            type=self.type,
            function=Function(name=self.name, arguments="".join(self.arguments)),
            extra_content=msgspec.UNSET if self.extra_content is None else self.extra_content,
        )


class _CompletionsWire:
    """Chat Completions chunks and their fold into a :class:`ChatCompletionResult`.

    The fold follows choice 0 (the only one unless the request asked for ``n`` > 1;
    every choice is still in the chunks). The end marker is ``data: [DONE]``.
    """

    end = "its end marker (data: [DONE]) or the chunk that finishes the answer"

    def __init__(self, *, usage_expected: bool = False) -> None:
        self.finished = False
        # A body may end whole without [DONE] once the answer is finished (see ended):
        # the usage chunk asked for, if it was, has come, and no choice but 0 (which
        # _finish_reason follows) is under way.
        self._usage_expected = usage_expected
        self._unfinished: set[int] = set()
        # Choice 0 went on after its finish_reason (tool calls after it, some servers):
        # a body ending without [DONE] then shows no end, and is not taken as whole.
        self._after_finish = False
        self._id = ""
        self._model = ""
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._refusal: list[str] = []
        # Each call by (index, n): the n-th call at that index (another id at an index
        # in use is another call); _latest: the key of each index's latest call.
        self._tool_calls: dict[tuple[int, int], _ToolCallParts] = {}
        self._latest: dict[int, tuple[int, int]] = {}
        self._by_id: dict[str, tuple[int, int]] = {}  # the call of each id seen
        self._last_index = 0
        self._finish_reason: str | None = None
        self._usage: CompletionUsage | None = None
        self._links: list[Link] = []
        self._answer_confidence: str | None = None
        # The first system_fingerprint and service_tier the chunks gave (OpenAI's).
        self._served_by: tuple[str | None, str | None] | None = None
        self._inkeep_done = False

    def decode(self, runs: list[EventRun]) -> list[CompletionEvent]:
        decode_chunk = _CHUNK.decode
        decoded: list[CompletionEvent] = []
        named = False  # an event with a name of its own: not every event is a chunk
        for event, datas in runs:
            if self.finished:
                break
            if event != "message":
                for data in datas:
                    decoded += self.decode_one(event, data)
                named = True
                continue
            if _DONE in datas:
                datas = datas[: datas.index(_DONE)]
                self.finished = True
            decoded += map(decode_chunk, datas)
        if named:
            return self.take(decoded)
        return self._take_chunks(cast(list[ChatCompletionChunk], decoded), decoded)

    @property
    def ended(self) -> bool:
        # [DONE]; or, when the body ends without it, an answer that is not cut short
        # (SPEC 1.8: a body ending without it *mid-answer* is incomplete): choice 0 and
        # every other choice seen have their finish_reason, and the usage chunk came if
        # it was asked for. ik_llama.cpp, mistral.rs before 0.4 and text-generation-webui
        # end so; openai-python takes them too.
        return self.finished or self.answered

    @property
    def answered(self) -> bool:
        return (
            self._finish_reason is not None
            and not self._after_finish
            and not self._unfinished
            and (self._usage is not None or not self._usage_expected)
        )

    def failure(self, data: str) -> APIError:
        return error_event(data)

    def decode_one(self, event: str, data: str) -> list[CompletionEvent]:
        if self.finished:
            return []
        if data.strip() == _DONE:  # with stray spaces too (the fast path takes it exact)
            self.finished = True
            return []
        if event == "error":
            raise error_event(data)
        if event != "message":
            # The wire's events have no name. One that has, and holds a chunk, is read as
            # one (never a shorter answer); any other is yielded, not dropped (SPEC 1.4's
            # rule for unknown events).
            try:
                chunk = _chunk(data)
            except DECODE_ERRORS:
                return [UnknownEvent(event=event, data=data)]
            if not chunk.choices and chunk.usage is None and chunk.error is None:
                return [UnknownEvent(event=event, data=data)]
        else:
            try:
                chunk = _chunk(data)
            except DECODE_ERRORS:
                if data.lstrip().startswith("[") and '"error"' in data:
                    # Gemini's endpoint wraps its error object in a one-item list.
                    raise error_event(data) from None
                raise
        if chunk.error is not None:
            raise _error_of(chunk.error)
        if chunk.object == "error":
            # vLLM's and FastChat's error object sent as a chunk, not inside "error".
            raise error_event(data)
        return [chunk]

    def whole(self, body: bytes) -> list[CompletionEvent]:
        answer = _lenient(_WHOLE, body)
        if answer.error is not None:
            raise _error_of(answer.error, "answered with an error")
        if answer.object == "error":  # vLLM's and FastChat's error object, not wrapped
            raise error_event(body, "answered with an error")
        if not answer.choices:
            # Every field has a default (servers leave some out), so any JSON object
            # decodes: one without a choice is not an answer (the core says so).
            return []
        self.finished = True
        choices = [
            ChunkChoice(
                index=choice.index,
                delta=ChoiceDelta(
                    role=choice.message.role,
                    content=choice.message.content,
                    reasoning_content=choice.message.reasoning_content,
                    reasoning=choice.message.reasoning,
                    refusal=choice.message.refusal,
                    tool_calls=[
                        ChoiceDeltaToolCall(
                            index=i,
                            id=call.id,
                            type=call.type,
                            function=ChoiceDeltaToolCallFunction(
                                name=call.function.name, arguments=call.function.arguments
                            ),
                            extra_content=(
                                None if call.extra_content is msgspec.UNSET else call.extra_content
                            ),
                        )
                        for i, call in enumerate(choice.message.tool_calls or [])
                    ]
                    or None,
                ),
                finish_reason=choice.finish_reason,
                logprobs=choice.logprobs,
            )
            for choice in answer.choices
        ]
        return [
            ChatCompletionChunk(
                id=answer.id,
                choices=choices,
                created=answer.created,
                model=answer.model,
                system_fingerprint=answer.system_fingerprint,
                service_tier=answer.service_tier,
                usage=answer.usage,
            )
        ]

    def take(self, events: list[CompletionEvent]) -> list[CompletionEvent]:
        chunks = [event for event in events if type(event) is ChatCompletionChunk]
        return self._take_chunks(chunks, events)

    def _take_chunks(
        self, chunks: list[ChatCompletionChunk], events: list[CompletionEvent]
    ) -> list[CompletionEvent]:
        # Folds the chunks of events. Most carry one choice whose delta is text alone:
        # one comprehension (CPython runs those far faster than a loop of statements)
        # takes the text of a batch of such chunks. Any other batch is folded field by
        # field, walking one by one only the rare deltas with tool calls or reasoning.
        text = [
            delta.content
            for chunk in chunks
            if chunk.usage is None
            and chunk.error is None
            and len(choices := chunk.choices) == 1
            and not (choice := choices[0]).index
            and choice.finish_reason is None
            and (delta := choice.delta).tool_calls is None
            and delta.reasoning_content is None
            and delta.reasoning is None
            and delta.refusal is None
        ]
        if len(text) != len(chunks):
            if [c for c in chunks if c.error is not None or c.object == "error"]:
                raise APIError("an error chunk")  # located and raised by decode_one
            if (fixed := _messages_as_deltas(chunks, events)) is not None:
                return self._take_chunks(*fixed)
            text = self._fold(chunks)
        elif self._finish_reason is not None and any(text):
            self._after_finish = True
        if not self._id and chunks:
            self._id, self._model = chunks[0].id, chunks[0].model
        if self._served_by is None and chunks:
            # A batch's first chunk is looked at (OpenAI sends both in every chunk), and
            # each chunk of a batch folded field by field (the finishing one among them).
            self._note_served_by(chunks[:1])
        try:
            joined = "".join(text)  # type: ignore[arg-type]
        except TypeError:  # a delta without content (None): rare, and only checked here
            if (fixed := _messages_as_deltas(chunks, events)) is not None:
                return self._take_chunks(*fixed)
            joined = "".join(filter(None, text))
        if joined:
            self._text.append(joined)
        if (self._finish_reason is not None or self.finished) and not self._inkeep_done:
            # Right after the chunk that finished choice 0 (else at the end marker): the
            # same place however the chunks were batched.
            at = next(
                (
                    i + 1
                    for i, event in enumerate(events)
                    if type(event) is ChatCompletionChunk
                    and [c for c in event.choices if c.finish_reason and not c.index]
                ),
                len(events),
            )
            return [*events[:at], *self._inkeep_events(), *events[at:]]
        return events

    def _note_served_by(self, chunks: list[ChatCompletionChunk]) -> None:
        for chunk in chunks:
            if chunk.system_fingerprint is not None or chunk.service_tier is not None:
                self._served_by = (chunk.system_fingerprint, chunk.service_tier)
                return

    def _fold(self, chunks: list[ChatCompletionChunk]) -> list[str | None]:
        # Folds all but the text of chunks into the result; returns the text.
        if self._served_by is None:
            self._note_served_by(chunks)
        choices = [choice for chunk in chunks for choice in chunk.choices if not choice.index]
        deltas = [choice.delta for choice in choices]
        ended = self._finish_reason is not None
        for choice in choices:
            d = choice.delta
            if ended and (
                d.content or d.tool_calls or d.reasoning_content or d.reasoning or d.refusal
            ):
                self._after_finish = True
                break
            ended = ended or bool(choice.finish_reason)
        for delta in [
            d for d in deltas if d.tool_calls or d.reasoning_content or d.reasoning or d.refusal
        ]:
            reasoning = delta.reasoning_content or delta.reasoning
            if reasoning:
                self._reasoning.append(reasoning)
            if delta.refusal:
                self._refusal.append(delta.refusal)
            if delta.tool_calls:
                self._add_tool_calls(delta.tool_calls)
        finished = [choice.finish_reason for choice in choices if choice.finish_reason]
        if finished:
            self._finish_reason = finished[-1]
        for other in [c for chunk in chunks for c in chunk.choices if c.index]:
            if other.finish_reason:
                self._unfinished.discard(other.index)
            else:
                self._unfinished.add(other.index)
        usage = [chunk.usage for chunk in chunks if chunk.usage is not None]
        if usage:
            self._usage = usage[-1]
        return [delta.content for delta in deltas]

    def _add_tool_calls(self, fragments: list[ChoiceDeltaToolCall]) -> None:
        calls, latest = self._tool_calls, self._latest
        for fragment in fragments:
            # A known id is its call's, wherever it comes; else the index says, and
            # another id at an index in use is another call (some servers number every
            # call 0); without an index (some servers leave it out), a new id is a new
            # call and a fragment without one continues the last call. Without an id,
            # a fragment naming a function after a whole call starts the next one.
            key = self._by_id.get(fragment.id) if fragment.id else None
            if key is None:
                index = fragment.index
                if index is None:
                    last = latest.get(self._last_index)
                    starts = fragment.id or _starts_a_call(fragment, last and calls[last])
                    index = max(latest, default=-1) + 1 if starts else self._last_index
                key = latest.get(index)
                if key is None or (
                    # Another id at the index: another call, unless the call there is
                    # under way (some servers give each fragment of one call an id of
                    # its own: Poolside's, mlx-openai-server's).
                    (calls[key].id and (_names(fragment) or _whole(calls[key])))
                    if fragment.id
                    else _starts_a_call(fragment, calls[key])
                ):
                    key = (index, 0 if key is None else key[1] + 1)
                    calls[key] = _ToolCallParts()
                    latest[index] = key
            if fragment.id:
                self._by_id[fragment.id] = key
            self._last_index = key[0]
            calls[key].add(fragment)

    def _inkeep_events(self) -> list[CompletionEvent]:
        """Inkeep's citation tool calls as typed events, once the calls are whole."""
        self._inkeep_done = True
        events: list[CompletionEvent] = []
        for parts in self._tool_calls.values():
            arguments = "".join(parts.arguments)
            try:
                if parts.name == "provideLinks":
                    links = _LINKS.decode(arguments).links
                    self._links += links
                    events.append(ProvidedLinks(links=links))
                elif parts.name == "provideAIAnnotations":
                    confidence = _ANNOTATIONS.decode(arguments).aiAnnotations.answerConfidence
                    self._answer_confidence = confidence
                    events.append(AIAnnotations(answer_confidence=confidence))
            except (msgspec.DecodeError, ValueError, RecursionError) as exc:
                # The model's own output: kept whole in result().tool_calls, not fatal.
                log.warning("could not read the %s tool call's arguments: %s", parts.name, exc)
        return events

    def text(self, event: CompletionEvent) -> str | None:
        if type(event) is not ChatCompletionChunk:
            return None
        return "".join([c.delta.content for c in event.choices if not c.index and c.delta.content])

    def result(self) -> ChatCompletionResult:
        tool_calls = [self._tool_calls[i].whole() for i in sorted(self._tool_calls)]
        to_answer = [call for call in tool_calls if call.function.name not in _INKEEP_NAMES]
        return ChatCompletionResult(
            id=self._id,
            model=self._model,
            message=ChatCompletionMessage(
                role="assistant",
                content="".join(self._text) if self._text or not to_answer else None,
                tool_calls=to_answer or None,
                refusal="".join(self._refusal) or None,
            ),
            tool_calls=tool_calls,
            finish_reason=self._finish_reason,
            usage=self._usage,
            reasoning="".join(self._reasoning) or None,
            links=self._links,
            answer_confidence=self._answer_confidence,
            system_fingerprint=(self._served_by or (None, None))[0],
            service_tier=(self._served_by or (None, None))[1],
        )


def _names(fragment: ChoiceDeltaToolCall) -> bool:
    return bool(fragment.function is not None and fragment.function.name)


def _whole(call: _ToolCallParts) -> bool:
    # Whether a call's arguments so far are whole JSON.
    arguments = "".join(call.arguments)
    if not arguments.strip():
        return False
    try:
        msgspec.json.decode(arguments)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


def _starts_a_call(fragment: ChoiceDeltaToolCall, last: _ToolCallParts | None) -> bool:
    """Whether a fragment without an id starts a call after ``last`` (at its index, or
    the last call when it has no index): it names a function, bringing arguments or
    naming another one, and ``last`` is whole (named, its arguments whole JSON). Servers
    sending each call whole in a chunk of its own give no id (or the same index); one
    repeating its call's name on every fragment goes on with that call."""
    function = fragment.function
    name = function.name if function is not None else None
    if not name or last is None or not last.name:
        return False
    brings = bool(function and (function.arguments or "").strip())
    if name == last.name and not brings:
        return False  # the name again (with nothing, or blanks), not a call
    # Under way (no arguments yet, or not whole JSON): only another name is new.
    return _whole(last) or name != last.name


def _chunk(data: str) -> ChatCompletionChunk:
    return _lenient(_CHUNK, data)


def _lenient(decoder: msgspec.json.Decoder[_T], data: str | bytes) -> _T:
    """``data`` decoded, a ``null`` where a field has a default read as that default.

    Servers send ``"model": null``, ``"usage": {"completion_tokens": null}``: the
    answer must not be lost over a bookkeeping field (openai-python takes them too).
    Tried only when the strict decode fails, so the hot path never pays for it.
    """
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        try:
            # strict=False: a count sent as 2.0, as openai-python takes it.
            value: _T = msgspec.convert(
                _normalized(msgspec.json.decode(data)), decoder.type, strict=False
            )
            return value
        except msgspec.ValidationError:
            raise exc from None


def _without_nulls(value: Any) -> Any:
    # The JSON value with every null member of an object left out (list items stay).
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _normalized(value: Any) -> Any:
    """A chunk or a whole answer as OpenAI shapes it: nulls left out, and the variants
    other servers send read as what they mean (their text is not lost over a shape):
    ``content`` as a list of parts (Mistral's Magistral: text parts, and ``thinking``
    parts, kept as the reasoning), ``tool_calls`` as one object (TGI before 3), and
    ``function.arguments`` as a JSON object, not its text (Cloudflare Workers AI)."""
    value = _without_nulls(value)
    choices = value.get("choices") if isinstance(value, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        for key in ("delta", "message"):
            if isinstance(choice, dict) and isinstance(choice.get(key), dict):
                choice[key] = _message_normalized(choice[key])
    return value


def _message_normalized(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, dict):
        content = [content]  # one part, not in a list
    if isinstance(content, list):
        texts, thoughts = [], []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") == "thinking":
                thoughts.append(_text_of(part.get("thinking")))
            elif isinstance(part, dict):  # "text", "output_text", or no type
                texts.append(_text_of(part.get("text")))
        message = {**message, "content": "".join(texts)}
        if thoughts:
            said = message.get("reasoning") or message.get("reasoning_content") or ""
            message["reasoning"] = "".join(thoughts) + said
            message.pop("reasoning_content", None)
    calls = message.get("tool_calls")
    if isinstance(calls, dict):
        calls = [calls] if calls else []
    if isinstance(calls, list):
        with_id = "delta" not in message  # a whole answer's call: its id may be missing
        message = {
            **message,
            "tool_calls": [_call_normalized(call, with_id) for call in calls if call],
        }
    return message


def _call_normalized(call: Any, with_id: bool) -> Any:
    if not isinstance(call, dict):
        return call
    if with_id and not isinstance(call.get("id"), str):
        call = {**call, "id": "" if call.get("id") is None else str(call["id"])}
    function = call.get("function")
    if isinstance(function, dict) and isinstance(function.get("arguments"), dict | list):
        arguments = msgspec.json.encode(function["arguments"]).decode()
        return {**call, "function": {**function, "arguments": arguments}}
    return call


def _text_of(value: Any) -> str:
    # A part's text: a string, or (Magistral's thinking) a list of text parts.
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_text_of(item.get("text")) for item in value if isinstance(item, dict))
    return ""


def _messages_as_deltas(
    chunks: list[ChatCompletionChunk], events: list[CompletionEvent]
) -> tuple[list[ChatCompletionChunk], list[CompletionEvent]] | None:
    """The chunks and events again, each choice that has a ``message`` and no ``delta``
    given that message as its delta; None when no choice is so. Some servers stream a
    choice's text as ``message``: read as a choice without a delta, the text was lost.
    (A choice with both, as Perplexity sends, keeps its delta: there the message is the
    text so far.)"""

    def message_only(choice: ChunkChoice) -> bool:
        return choice.delta is _EMPTY_DELTA and choice.message is not None

    if not [c for chunk in chunks for c in chunk.choices if message_only(c)]:
        return None

    def fixed(event: CompletionEvent) -> CompletionEvent:
        if type(event) is not ChatCompletionChunk:
            return event
        choices = [
            msgspec.structs.replace(c, delta=c.message) if message_only(c) else c
            for c in event.choices
        ]
        return msgspec.structs.replace(event, choices=choices)

    events = [fixed(event) for event in events]
    return [e for e in events if type(e) is ChatCompletionChunk], events


def error_event(data: str | bytes, what: str = "failed mid-answer") -> APIError:
    """The :class:`APIError` for an ``event: error``: its data is ``{"error": {...}}``, the
    error object itself, or any text (``what`` the server did, for the message)."""
    try:
        body = msgspec.json.decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError):
        body = data if isinstance(data, str) else data.decode("utf-8", "replace")
    if isinstance(body, list) and len(body) == 1:
        body = body[0]  # Gemini's endpoint: [{"error": {...}}]
    if isinstance(body, dict) and body.get("error") is not None:
        body = body["error"]
    return _error_of(body, what)


def _error_of(error: Any, what: str = "failed mid-answer") -> APIError:
    """The :class:`APIError` for an ``{"error": ...}`` chunk (SPEC 1.8), or (``what``
    another wording) a whole answer that is one."""
    said = message_of(error, "the server reported an error")
    return APIError(f"the server {what}: {said}", body=error)


class CompletionStream(EventStream[CompletionEvent, ChatCompletionResult]):
    """The answer to ``chat.completions.create``: Chat Completions chunks, as they arrive.

    Iterate it for :class:`ChatCompletionChunk` values (and, when Inkeep's tools were
    offered, :class:`ProvidedLinks` and :class:`AIAnnotations`), use :attr:`text_stream`
    for the text alone, or ``await`` it for the :class:`ChatCompletionResult`::

        stream = client.chat.completions.create(model="inkeep-qa-expert", messages=[...])
        async for text in stream.text_stream:
            print(text, end="")
    """


class Completions:
    """``client.chat.completions``: the Chat Completions API (SPEC 1.8)."""

    def __init__(self, transport: Transport):
        self._transport = transport

    def create(
        self,
        *,
        model: str,
        messages: Sequence[ChatCompletionMessageParam] | str,
        tools: Sequence[ChatCompletionTool | Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        stream: bool = True,
        stream_options: StreamOptions | Mapping[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        response_format: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: Timeout | float | NotGiven | None = NOT_GIVEN,
        retries: RetryPolicy | int | NotGiven | None = NOT_GIVEN,
    ) -> CompletionStream:
        """Ask for a chat completion; returns its answer as a :class:`CompletionStream`.

        No ``await``: the request is sent on first use of the stream, and every error
        (a refused call, a timeout, a malformed or cut stream, an error chunk) is
        raised there.

        - ``model``: e.g. ``"inkeep-qa-expert"`` (Inkeep names ``{mode}-{model}``).
        - ``messages``: the whole conversation (the server keeps no history):
          :class:`ChatCompletionMessage` values or mappings with ``role``
          (``"system"``, ``"developer"``, ``"user"``, ``"assistant"``, ``"tool"``) and
          ``content`` (a string, or in a mapping a list of content parts); a ``"tool"``
          message needs ``tool_call_id``. A plain string is one user message. A mapping
          is sent as given (less ``reasoning_content`` and ``reasoning``), fields chatsdk
          has no name for included.
          ``result.message`` is the assistant's turn, ready to append for the next call.
        - ``tools``, ``tool_choice``: functions the model may call (a mapping is sent as
          given: ``strict``, or a server's own kind of tool); tool-call argument
          fragments are joined per index into ``result.tool_calls``.
          :data:`INKEEP_TOOLS` gives Inkeep's typed links and answer confidence.
        - ``stream_options``: ``{"include_usage": True}`` puts ``usage`` on the result.
        - ``temperature`` (0 to 2), ``max_tokens`` (> 0), ``response_format``: as the
          service defines them; ``extra_body``: more fields, merged into the JSON body.
        - ``stream``: False asks for one JSON answer, replayed as one chunk.
        - ``timeout``, ``retries``: this call's (``None``: no limit, no retries).

        Raises :class:`ValidationError` at once for bad arguments.
        """
        if not isinstance(model, str) or not model.strip():
            raise ValidationError(f"model must be a non-empty string, got {model!r}")
        if not isinstance(stream, bool):
            raise ValidationError(f"stream must be True or False, got {stream!r}")
        if tools is not None and (
            isinstance(tools, str | Mapping) or not isinstance(tools, Sequence)
        ):
            raise ValidationError("tools must be a list of tools")
        checked, sent = _messages(messages)
        request = ChatCompletionRequest(
            model=model,
            messages=checked,
            stream=bool(stream),
            stream_options=_convert(stream_options, StreamOptions, "stream_options"),
            tool_choice=_tool_choice(tool_choice),
            temperature=_number("temperature", temperature, 0, 2),
            max_tokens=_max_tokens(max_tokens),
            response_format=_mapping("response_format", response_format),
        )
        try:
            fields = msgspec.to_builtins(request, enc_hook=_as_dict)
            fields["messages"] = sent
            if isinstance(stream_options, Mapping):
                # Checked above, sent as given: other servers' options too (vLLM's
                # continuous_usage_stats), as a message's fields are.
                fields["stream_options"] = dict(stream_options)
            if tools is not None:
                fields["tools"] = _tools(tools)
            fields.update(extra_body or {})
            body = json_body(fields, enc_hook=_as_dict)
        except ValidationError:
            raise  # says what and where: a lone surrogate, a NaN, an object (_as_dict)
        except (TypeError, ValueError, RecursionError, msgspec.EncodeError) as exc:
            # A value JSON has no form for, nesting too deep or a cycle.
            raise ValidationError(f"{_NOT_JSON}: {type(exc).__name__}: {exc}") from None
        options = fields.get("stream_options")
        usage_expected = isinstance(options, Mapping) and bool(options.get("include_usage"))
        t = self._transport
        timeout_, retries_ = t.per_call(timeout, retries)
        return CompletionStream(
            t,
            _CompletionsWire(usage_expected=usage_expected),
            api="completions",
            url=t.url("completions", "/chat/completions"),
            body=body,
            timeout=timeout_,
            retries=retries_,
        )


def _mapping(name: str, value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, Mapping):
        raise ValidationError(
            f"{name} must be a mapping (e.g. {{'type': 'json_object'}}), got {value!r:.80}"
        )
    return None if value is None else dict(value)


_NOT_JSON: Final = (
    "messages, tools, tool_choice, response_format and extra_body must be JSON-serialisable"
)


def _as_dict(value: Any) -> Any:
    # msgspec's hook for a type it cannot encode: any Mapping is a JSON object; else as
    # every request body has it (json_value).
    if isinstance(value, Mapping):
        return dict(value)
    try:
        return json_value(value)
    except ValidationError:
        raise ValidationError(
            f"{_NOT_JSON}: a value of type {type(value).__name__} is not"
        ) from None


def _convert(value: Any, kind: type[Any], where: str) -> Any:
    if value is None or isinstance(value, kind):
        return value
    if not isinstance(value, Mapping):
        raise ValidationError(f"{where} must be a {kind.__name__} or a mapping")
    try:
        return msgspec.convert(dict(value), kind)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"{where}: {exc}") from None
    except RecursionError:
        raise ValidationError(f"{where} is nested too deeply (or holds itself)") from None


def _messages(
    messages: Sequence[ChatCompletionMessageParam] | str,
) -> tuple[list[ChatCompletionMessage], list[Any]]:
    """The messages checked, and as they are sent: a mapping as given (fields chatsdk
    has no name for, like ``cache_control``, included; SPEC 1.8 wants them passable),
    less ``reasoning_content`` and ``reasoning``, an answer's fields never sent back."""
    if isinstance(messages, str):
        messages = [ChatCompletionMessage(role="user", content=messages)]
    if not isinstance(messages, Sequence) or not messages:
        raise ValidationError(
            "messages must be a non-empty list of messages (or a question string)"
        )
    checked: list[ChatCompletionMessage] = []
    sent: list[Any] = []
    for i, value in enumerate(messages):
        where = f"messages[{i}]"
        parts = given = None
        if isinstance(value, Mapping):
            given = {k: v for k, v in value.items() if k not in _ANSWER_ONLY}
            if isinstance(given.get("content"), list):
                parts = _content_parts(given["content"], f"{where}.content")
                value = {**given, "content": None}  # the parts are checked apart
        message = _convert(value, ChatCompletionMessage, where)
        if not isinstance(message, ChatCompletionMessage):
            raise ValidationError(f"{where} must be a ChatCompletionMessage or a mapping")
        if message.reasoning_content is not None or message.reasoning is not None:
            message = msgspec.structs.replace(message, reasoning_content=None, reasoning=None)
        if message.role not in COMPLETION_ROLES:
            raise ValidationError(
                f"{where}.role must be one of {', '.join(COMPLETION_ROLES)}, got {message.role!r}"
            )
        if message.content is not None and not isinstance(message.content, str):
            raise ValidationError(f"{where}.content must be a string, a list of parts or None")
        has_content = parts is not None or message.content is not None
        calls_or_refuses = message.tool_calls or message.refusal is not None
        if not has_content and not (message.role == "assistant" and calls_or_refuses):
            raise ValidationError(
                f"{where}.content may be None only on an assistant message with tool_calls "
                "or a refusal"
            )
        if message.role == "user" and not (parts or (message.content or "").strip()):
            raise ValidationError(f"{where}.content must not be empty (the question)")
        if message.role == "tool" and not message.tool_call_id:
            raise ValidationError(f"{where} is a tool message: it needs tool_call_id")
        checked.append(message)
        sent.append(message if given is None else given)
    return checked, sent


def _content_parts(parts: list[Any], where: str) -> list[Any]:
    # OpenAI's content parts ({"type": "text", "text": ...}, "image_url", ...): each an
    # object with a type; what each type holds is the server's to judge.
    for j, part in enumerate(parts):
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            raise ValidationError(
                f"{where}[{j}] must be a content part: a mapping with a string 'type'"
            )
    return parts


def _tools(tools: Sequence[ChatCompletionTool | Mapping[str, Any]]) -> list[Any]:
    # Checked, and sent as given (``function.strict``, other tool types' fields).
    sent: list[Any] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, ChatCompletionTool | Mapping):
            raise ValidationError(f"{where} must be a ChatCompletionTool or a mapping")
        if isinstance(tool, Mapping) and tool.get("type", "function") != "function":
            if not isinstance(tool.get("type"), str):
                raise ValidationError(f"{where}.type must be a string")
            sent.append(dict(tool))  # a server's own kind of tool (web_search_preview...)
            continue
        checked = _convert(tool, ChatCompletionTool, where)
        sent.append(dict(tool) if isinstance(tool, Mapping) else checked)
    return sent


def _tool_choice(value: str | Mapping[str, Any] | None) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return dict(value)
    # Any string is sent: servers have their own ("any" is Mistral's).
    raise ValidationError(
        'tool_choice must be a string ("auto", "none", "required", or a server\'s own such '
        'as "any") or a mapping'
    )


def _number(name: str, value: float | None, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValidationError(f"{name} must be a number from {low} to {high}, got {value!r}")
    return value


def _max_tokens(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValidationError(f"max_tokens must be an int > 0, got {value!r}")
    return value
