"""Routes of the Chat Completions wire (SPEC 1.8; Gram ``/chat/completions``, Inkeep
``/v1/chat/completions``).

The server keeps no history here: the deterministic responder answers the last user
message of the conversation the request sends. When the request offers Inkeep's tools
(``provideLinks``, ``provideAIAnnotations``), the answer text is followed by calls of
them, built from the responder's citations, and ``finish_reason`` is ``"tool_calls"``.
A streamed answer is ``data:`` events only (no ``event:`` field), ending with ``[DONE]``::

    data: {"id":"chatcmpl-…","object":"chat.completion.chunk",…,"choices":[{"index":0,
           "delta":{"role":"assistant","content":""},"finish_reason":null}]}
    data: {…"delta":{"content":"Retries "},…}                     (one per word)
    data: {…"delta":{"tool_calls":[{"index":0,"id":"call_…","type":"function",
           "function":{"name":"provideLinks","arguments":"{\\"links\\":[{\\"u"}}]},…}
    data: {…"delta":{"tool_calls":[{"index":0,"function":{"arguments":"rl\\":…"}}]},…}
    data: {…"delta":{},"finish_reason":"tool_calls"}
    data: {…"choices":[],"usage":{"prompt_tokens":4,…}}            (include_usage)
    data: [DONE]
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import msgspec
from aiohttp import web

from chatsdk.models import (
    ChatCompletionMessage,
    CompletionTokensDetails,
    CompletionUsage,
    FunctionDefinition,
    Link,
    Message,
    PromptTokensDetails,
    StreamOptions,
)
from chatsdk.server.errors import decode_body, invalid, json_encoder
from chatsdk.server.plumbing import ServerState, authenticate_chat, read_body
from chatsdk.server.responder import Answer, split_words
from chatsdk.server.responder import answer as respond
from chatsdk.server.streaming import DONE, Event, answer_once

__all__ = [
    "ChatCompletionBody",
    "ContentPart",
    "NamedToolChoice",
    "RequestMessage",
    "chat_completions",
]

PROVIDE_LINKS: Final = "provideLinks"
PROVIDE_AI_ANNOTATIONS: Final = "provideAIAnnotations"
_INKEEP_TOOLS: Final = (PROVIDE_LINKS, PROVIDE_AI_ANNOTATIONS)
# Tool-call arguments are streamed in pieces of this many characters, so a client
# must join the fragments of one index (a real model's are a token or two each).
_FRAGMENT: Final = 32


class NamedFunction(msgspec.Struct, frozen=True):
    """The function a named ``tool_choice`` forces."""

    name: str


class NamedToolChoice(msgspec.Struct, frozen=True, kw_only=True):
    """``tool_choice: {"type": "function", "function": {"name": ...}}``."""

    function: NamedFunction
    type: str = "function"


class ContentPart(msgspec.Struct, frozen=True):
    """One part of a message's content given as a list (OpenAI's ``{"type": "text",
    "text": ...}``; other types, such as ``image_url``, are taken and not read)."""

    type: str
    text: str | None = None


class RequestMessage(ChatCompletionMessage, frozen=True, omit_defaults=True):
    """A message as the server reads it: ``content`` a string or a list of parts."""

    content: str | list[ContentPart] | None = None  # type: ignore[assignment]

    @property
    def text(self) -> str:
        """The content's text: the string, or the text parts joined."""
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class RequestTool(msgspec.Struct, frozen=True):
    """A tool as the server reads it: a function, or a kind of tool of another
    service's (``{"type": "web_search_preview"}``), taken and not used."""

    type: str = "function"
    function: FunctionDefinition | None = None


class ChatCompletionBody(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``POST /chat/completions`` as the server reads it: the messages and tools
    of models.py, a default for ``stream``, and the ranges OpenAI documents. Unknown
    fields are ignored."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    messages: Annotated[
        list[RequestMessage],
        msgspec.Meta(min_length=1, description="The whole conversation; no history is kept."),
    ]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    tools: list[RequestTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    response_format: dict[str, Any] | None = None


_decoder = msgspec.json.Decoder(ChatCompletionBody)


@dataclass(frozen=True)
class _ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class _Completion:
    """One answer, before it is put on the wire streamed or whole."""

    id: str
    created: int
    model: str
    words: list[str]
    tool_calls: list[_ToolCall]
    finish_reason: str
    prompt_tokens: int

    def usage(self) -> CompletionUsage:
        fragments = sum(len(_fragments(call.arguments)) for call in self.tool_calls)
        completion = len(self.words) + fragments
        # With the details OpenAI gives (nothing cached, no reasoning here).
        return CompletionUsage(
            self.prompt_tokens,
            completion,
            self.prompt_tokens + completion,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=0),
            completion_tokens_details=CompletionTokensDetails(reasoning_tokens=0),
        )


async def chat_completions(state: ServerState, request: web.Request) -> web.StreamResponse:
    """``POST /chat/completions`` (also ``/v1/chat/completions``): answer a conversation."""
    caller = authenticate_chat(state, request, gram_key=True)
    body = await read_body(state, request)
    params = decode_body(_decoder, body)
    for i, tool in enumerate(params.tools or ()):
        if tool.type == "function" and tool.function is None:
            raise invalid(["body", "tools", i, "function"], "Field required", "missing")
    conversation = _conversation(params.messages)
    stream = bool(params.stream)
    include_usage = bool(params.stream_options and params.stream_options.include_usage)

    def produce() -> tuple[str, list[Event] | bytes]:
        completion = _complete(params, conversation, hashlib.sha256(body).hexdigest())
        if stream:
            return completion.id, _chunk_events(completion, include_usage)
        return completion.id, json_encoder.encode(_whole(completion))

    return await answer_once(state, request, caller, body, stream=stream, produce=produce)


def _conversation(messages: list[RequestMessage]) -> list[Message]:
    """The user and assistant turns up to the last user message, as the responder reads
    them (system and tool messages carry no question)."""
    turns = [
        Message(role=m.role, content=m.text)
        for m in messages
        if m.role == "user" or m.role == "assistant"
    ]
    last_user = max((i for i, m in enumerate(turns) if m.role == "user"), default=None)
    if last_user is None:
        raise invalid(["body", "messages"], "the conversation has no user message")
    return turns[: last_user + 1]


def _complete(params: ChatCompletionBody, conversation: list[Message], digest: str) -> _Completion:
    answer = respond(conversation)
    words = split_words(answer.text)
    finish = "stop"
    if params.max_tokens is not None and len(words) > params.max_tokens:
        words, finish = words[: params.max_tokens], "length"
    completion_id = f"chatcmpl-{digest[:24]}"
    calls = []
    if finish == "stop":
        for name in _called_tools(params):
            arguments = _tool_arguments(name, answer)
            if arguments is not None:
                call_id = "call_" + hashlib.sha256(f"{completion_id}/{name}".encode()).hexdigest()
                calls.append(_ToolCall(call_id[:29], name, arguments))
        if calls:
            finish = "tool_calls"
    prompt = sum(len(split_words(m.text)) for m in params.messages)
    return _Completion(completion_id, int(time.time()), params.model, words, calls, finish, prompt)


def _called_tools(params: ChatCompletionBody) -> list[str]:
    """The Inkeep tools offered and allowed by ``tool_choice``, in Inkeep's order."""
    offered = {tool.function.name for tool in params.tools or () if tool.function is not None}
    choice = params.tool_choice
    if choice == "none":
        return []
    if isinstance(choice, NamedToolChoice):
        offered &= {choice.function.name}
    return [name for name in _INKEEP_TOOLS if name in offered]


def _confidence(answer: Answer) -> str:
    if not answer.documents:
        return "no_sources"
    return "very_confident" if len(answer.documents) == 1 else "somewhat_confident"


def _tool_arguments(name: str, answer: Answer) -> str | None:
    """The JSON arguments of an Inkeep tool call, or None when there is nothing to say."""
    if name == PROVIDE_LINKS:
        if not answer.documents:
            return None
        links = [
            Link(
                url=doc.url,
                label=doc.title,
                title=doc.title,
                type="documentation",
                breadcrumbs=list(doc.breadcrumbs),
            )
            for doc in answer.documents
        ]
        return json_encoder.encode({"links": links}).decode()
    return json_encoder.encode(
        {"aiAnnotations": {"answerConfidence": _confidence(answer)}}
    ).decode()


def _fragments(arguments: str) -> list[str]:
    return [arguments[i : i + _FRAGMENT] for i in range(0, len(arguments), _FRAGMENT)] or [""]


def _chunk_events(completion: _Completion, include_usage: bool) -> list[Event]:
    """The event log of a streamed answer (module docstring)."""
    base: dict[str, Any] = {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model,
    }
    # With include_usage, OpenAI sends "usage": null on every chunk but the last.
    tail: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> Event:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return "", json_encoder.encode({**base, "choices": [choice], **tail}).decode()

    events = [chunk({"role": "assistant", "content": ""})]
    events.extend(chunk({"content": word}) for word in completion.words)
    for index, call in enumerate(completion.tool_calls):
        first, *rest = _fragments(call.arguments)
        head = {"name": call.name, "arguments": first}
        events.append(
            chunk(
                {
                    "tool_calls": [
                        {"index": index, "id": call.id, "type": "function", "function": head}
                    ]
                }
            )
        )
        events.extend(
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in rest
        )
    events.append(chunk({}, completion.finish_reason))
    if include_usage:
        usage = {**base, "choices": [], "usage": completion.usage()}
        events.append(("", json_encoder.encode(usage).decode()))
    events.append(("", DONE))
    return events


def _whole(completion: _Completion) -> dict[str, Any]:
    """The ``stream: false`` answer (``"object": "chat.completion"``)."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(completion.words)}
    if completion.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in completion.tool_calls
        ]
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.model,
        "choices": [{"index": 0, "message": message, "finish_reason": completion.finish_reason}],
        "usage": completion.usage(),
    }
