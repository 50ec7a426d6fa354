"""msgspec Structs for every wire body (SPEC §1) and the typed stream events.

Structs are declared once and used in both directions. Response structs
ignore unknown fields (msgspec's default), so a newer server does not break
an older client. Events and results are immutable (``frozen=True``).
Decoders are built once per type, at import, never per event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias, get_args

import msgspec

__all__ = [
    "COMPLETION_ROLES",
    "KNOWN_RECORD_TYPES",
    "MESSAGE_ROLES",
    "AIAnnotations",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatCompletionMessageParam",
    "ChatCompletionMessageToolCall",
    "ChatCompletionRequest",
    "ChatCompletionResult",
    "ChatCompletionTool",
    "Choice",
    "ChoiceDelta",
    "ChoiceDeltaToolCall",
    "ChoiceDeltaToolCallFunction",
    "ChunkChoice",
    "CompletionEvent",
    "CompletionRole",
    "CompletionTokensDetails",
    "CompletionUsage",
    "Function",
    "FunctionDefinition",
    "Link",
    "PromptTokensDetails",
    "ProvidedLinks",
    "StreamOptions",
    "ChatEvent",
    "ChatRequestSession",
    "ChatResponse",
    "ChatResult",
    "ChatSessionToken",
    "Citation",
    "ContinueChatRequest",
    "CreateChatRequest",
    "CreateTokenRequest",
    "HTTPValidationError",
    "Message",
    "MessageChunk",
    "MessageRole",
    "Record",
    "RecordsCited",
    "ServiceErrorBody",
    "UnknownEvent",
    "ValidationErrorItem",
]

#: Record types the public API documents; any other string is kept as it is.
KNOWN_RECORD_TYPES: Final = frozenset(
    {
        "documentation",
        "site",
        "discourse_post",
        "github_issue",
        "github_discussion",
        "stackoverflow_question",
        "discord_forum_post",
        "discord_message",
        "custom_question_answer",
    }
)


class Record(msgspec.Struct, frozen=True, omit_defaults=True):
    """A cited source: its ``type`` (any string is kept), url, title, description, breadcrumbs."""

    type: str
    url: str | None = None
    title: str | None = None
    description: str | None = None
    breadcrumbs: list[str] | None = None


class Citation(msgspec.Struct, frozen=True, omit_defaults=True):
    """One citation of a ``records_cited`` event."""

    record: Record
    number: int | None = None
    hit_url: str | None = None


class RecordsCited(msgspec.Struct, frozen=True):
    """The ``records_cited`` event: the sources the answer drew on."""

    citations: list[Citation] = []


class MessageChunk(msgspec.Struct, frozen=True, gc=False):
    """The ``message_chunk`` event: a piece of the answer text.

    The last chunk usually has ``content_chunk == ""`` and ``finish_reason == "stop"``.
    """

    content_chunk: str
    chat_session_id: str | None = None
    finish_reason: str | None = None


class UnknownEvent(msgspec.Struct, frozen=True, gc=False):
    """An event whose name this SDK does not know; ``data`` is the raw payload."""

    event: str
    data: str


#: What iterating a chat stream yields.
ChatEvent: TypeAlias = MessageChunk | RecordsCited | UnknownEvent


#: Roles a ``chat_results`` message may have (SPEC 1.4), shared like CompletionRole.
MessageRole: TypeAlias = Literal["user", "assistant"]
MESSAGE_ROLES: Final = get_args(MessageRole)


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    """A ``chat_results`` message (SPEC 1.4): ``role`` is ``"user"`` or ``"assistant"``."""

    role: MessageRole
    content: str
    records_cited: RecordsCited | None = None


class ChatRequestSession(msgspec.Struct, frozen=True, omit_defaults=True):
    """The ``chat_session`` object of a create request."""

    messages: list[Message]
    guidance: str | None = None
    context: str | None = None
    tags: list[str] | None = None


class CreateChatRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """Body of ``POST /chat_sessions/chat_results``."""

    integration_id: str
    chat_session: ChatRequestSession
    chat_mode: str | None = None
    stream: bool


class ContinueChatRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """Body of ``POST /chat_sessions/{chat_session_id}/chat_results``."""

    integration_id: str
    message: Message
    stream: bool


class ChatResponse(msgspec.Struct, frozen=True):
    """The non-streaming answer: ``{"chat_session_id", "message"}``."""

    chat_session_id: str
    message: Message


class ChatResult(msgspec.Struct, frozen=True):
    """The whole answer of one chat call, as ``ChatStream.final_result()`` returns it."""

    chat_session_id: str | None
    message: Message
    citations: list[Citation] = []
    finish_reason: str | None = None

    @property
    def text(self) -> str:
        """The answer text (``message.content``)."""
        return self.message.content

    def __repr__(self) -> str:
        return (
            f"ChatResult(chat_session_id={self.chat_session_id!r}, text={_short(self.text)}, "
            f"citations={len(self.citations)}, finish_reason={self.finish_reason!r})"
        )


class CreateTokenRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """Body of ``POST /rpc/chatSessions.create``."""

    embed_origin: str
    expires_after: int
    user_identifier: str | None = None


class ChatSessionToken(msgspec.Struct, frozen=True):
    """A minted chat-session token. ``client_token`` is a secret: it never appears in ``repr``."""

    client_token: str
    embed_origin: str
    expires_after: int
    status: str
    user_identifier: str | None = None

    def __repr__(self) -> str:
        return (
            f"ChatSessionToken(client_token='***', embed_origin={self.embed_origin!r}, "
            f"expires_after={self.expires_after!r}, status={self.status!r}, "
            f"user_identifier={self.user_identifier!r})"
        )

    __str__ = __repr__

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        # rich and IPython's pretty printer use this instead of __repr__.
        return [
            ("client_token", "***"),
            ("embed_origin", self.embed_origin),
            ("expires_after", self.expires_after),
            ("status", self.status),
            ("user_identifier", self.user_identifier),
        ]


class ServiceErrorBody(msgspec.Struct, frozen=True):
    """The token operations' error body (Goa ``ServiceError``)."""

    name: str
    id: str
    message: str
    temporary: bool
    timeout: bool
    fault: bool


class ValidationErrorItem(msgspec.Struct, frozen=True):
    """One item of a 422 ``detail`` list."""

    loc: list[str | int]
    msg: str
    type: str


class HTTPValidationError(msgspec.Struct, frozen=True):
    """The chat operations' 422 body."""

    detail: list[ValidationErrorItem]


# -- Chat Completions (SPEC 1.8) -------------------------------------------------------
# Names follow openai-python's types (ChatCompletionChunk, ChoiceDelta, ...), so a user
# moving from it finds them where expected. Every response field has a default: the
# OpenAI-compatible servers (vLLM, Ollama, llama.cpp, LiteLLM, ...) each leave some out.

#: Roles a Chat Completions request accepts (SPEC 1.8): the client checks them before
#: sending and the reference server decodes requests with this type, so both share it.
CompletionRole: TypeAlias = Literal["system", "developer", "user", "assistant", "tool"]
COMPLETION_ROLES: Final = get_args(CompletionRole)


class Function(msgspec.Struct, frozen=True):
    """A whole function call: its ``name`` and its ``arguments`` (a JSON text)."""

    name: str
    arguments: str = ""


class ChatCompletionMessageToolCall(msgspec.Struct, frozen=True):
    """A whole tool call of an assistant message (assembled from stream fragments).

    ``extra_content``: what the server attached to the call for its own use, as it sent
    it (Gemini's ``{"google": {"thought_signature": ...}}``, which it needs back with the
    call in the next request); ``msgspec.UNSET`` (falsy, and never sent) when it sent none.
    """

    id: str
    function: Function
    type: str = "function"
    extra_content: Any | msgspec.UnsetType = msgspec.UNSET


class ChatCompletionMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """A Chat Completions message, in a request or in an answer.

    ``role`` is ``"system"``, ``"developer"``, ``"user"``, ``"assistant"`` or ``"tool"``;
    ``content`` is ``None`` on an assistant message that only calls tools;
    ``tool_call_id`` names the call a ``"tool"`` message answers. ``reasoning_content``
    (DeepSeek's, vLLM's name) or ``reasoning`` (Ollama's, OpenRouter's) is a reasoning
    model's thinking in an answer (never sent back in a request by chatsdk);
    ``refusal`` the model's refusal to answer (OpenAI's ``delta.refusal`` pieces, joined).
    """

    role: CompletionRole
    content: str | None = None
    tool_calls: list[ChatCompletionMessageToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    reasoning_content: str | None = None
    refusal: str | None = None
    reasoning: str | None = None


class FunctionDefinition(msgspec.Struct, frozen=True, omit_defaults=True):
    """A function a model may call: ``parameters`` is a JSON Schema object."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ChatCompletionTool(msgspec.Struct, frozen=True):
    """A tool offered to the model (``{"type": "function", "function": {...}}``)."""

    function: FunctionDefinition
    type: str = "function"


class StreamOptions(msgspec.Struct, frozen=True, omit_defaults=True):
    """``stream_options``: ``include_usage`` asks for a last chunk carrying ``usage``."""

    include_usage: bool | None = None


class ChatCompletionRequest(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """Body of ``POST /chat/completions`` (SPEC 1.8); extra fields are merged in by the caller."""

    model: str
    messages: list[ChatCompletionMessage]
    stream: bool
    stream_options: StreamOptions | None = None
    tools: list[ChatCompletionTool] | None = None
    tool_choice: Any = None
    temperature: float | None = None
    max_tokens: int | None = None
    response_format: Any = None


class ChoiceDeltaToolCallFunction(msgspec.Struct, frozen=True, gc=False):
    """A fragment of a tool call's function: the name once, the arguments in pieces."""

    name: str | None = None
    arguments: str | None = None


class ChoiceDeltaToolCall(msgspec.Struct, frozen=True):
    """A fragment of tool call number ``index``: fragments of one index are joined.
    ``extra_content`` as on :class:`ChatCompletionMessageToolCall` (None when absent)."""

    index: int | None = None
    id: str | None = None
    type: str | None = None
    function: ChoiceDeltaToolCallFunction | None = None
    extra_content: Any = None


class ChoiceDelta(msgspec.Struct, frozen=True, gc=False):
    """What one chunk adds to a choice: text, reasoning, tool-call fragments."""

    role: str | None = None
    content: str | None = None
    tool_calls: list[ChoiceDeltaToolCall] | None = None
    # The model's reasoning, apart from the answer: DeepSeek, vLLM and LiteLLM say
    # ``reasoning_content``, OpenRouter and Ollama ``reasoning``.
    reasoning_content: str | None = None
    reasoning: str | None = None
    refusal: str | None = None


_EMPTY_DELTA: Final = ChoiceDelta()


class ChunkChoice(msgspec.Struct, frozen=True, gc=False):
    """One choice of a stream chunk (openai-python's ``chunk.choices[i]``); ``logprobs``
    as the server sent it (JSON values), when the request asked for them. ``message``:
    what some servers send beside or instead of ``delta`` (None when absent); a choice
    with a message and no delta is handed out with the message as its delta."""

    index: int = 0
    delta: ChoiceDelta = _EMPTY_DELTA
    finish_reason: str | None = None
    logprobs: Any = None
    message: ChoiceDelta | None = None


class PromptTokensDetails(msgspec.Struct, frozen=True, omit_defaults=True):
    """``usage.prompt_tokens_details``: of the prompt's tokens, those read from the
    server's prompt cache (``cached_tokens``) and those of audio input."""

    cached_tokens: int | None = None
    audio_tokens: int | None = None


class CompletionTokensDetails(msgspec.Struct, frozen=True, omit_defaults=True):
    """``usage.completion_tokens_details``: of the answer's tokens, the reasoning's
    (counted though not shown), audio, and predicted-output ones accepted or rejected."""

    reasoning_tokens: int | None = None
    audio_tokens: int | None = None
    accepted_prediction_tokens: int | None = None
    rejected_prediction_tokens: int | None = None


class CompletionUsage(msgspec.Struct, frozen=True):
    """Token counts of a completion (``usage``); the details when the server gives them
    (OpenAI's names: what was cached, what the reasoning took)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class ChatCompletionChunk(msgspec.Struct, frozen=True, gc=False):
    """One event of a Chat Completions stream (``"object": "chat.completion.chunk"``).

    ``choices`` may be empty (the usage chunk, and some servers' keep-alive chunks).
    ``system_fingerprint`` (the backend configuration that served it) and ``service_tier``
    (the processing tier used): as OpenAI sends them, None when the server sends none.
    """

    id: str = ""
    choices: list[ChunkChoice] = []
    created: int | float = 0
    model: str = ""
    object: str = "chat.completion.chunk"
    system_fingerprint: str | None = None
    service_tier: str | None = None
    usage: CompletionUsage | None = None
    # ``{"error": {...}}`` in place of a chunk: the server reporting a failure mid-stream.
    error: Any = None


class Choice(msgspec.Struct, frozen=True):
    """One choice of a whole (non-streamed) completion; ``logprobs`` as the server sent
    it (JSON values), when the request asked for them."""

    message: ChatCompletionMessage
    index: int = 0
    finish_reason: str | None = None
    logprobs: Any = None


class ChatCompletion(msgspec.Struct, frozen=True):
    """The whole answer of ``stream=False`` (``"object": "chat.completion"``);
    ``system_fingerprint`` and ``service_tier`` as on :class:`ChatCompletionChunk`."""

    id: str = ""
    choices: list[Choice] = []
    created: int | float = 0
    model: str = ""
    object: str = "chat.completion"
    system_fingerprint: str | None = None
    service_tier: str | None = None
    usage: CompletionUsage | None = None
    error: Any = None


class Link(msgspec.Struct, frozen=True, omit_defaults=True):
    """One source Inkeep gives through its ``provideLinks`` tool (SPEC 1.8).

    ``type`` is one of :data:`KNOWN_RECORD_TYPES` or any other string (kept as it is).
    """

    url: str
    label: str | None = None
    title: str | None = None
    type: str | None = None
    breadcrumbs: list[str] | None = None


class ProvidedLinks(msgspec.Struct, frozen=True):
    """Event: the model called ``provideLinks``; its sources, typed."""

    links: list[Link]


class AIAnnotations(msgspec.Struct, frozen=True):
    """Event: the model called ``provideAIAnnotations``.

    ``answer_confidence`` is ``"very_confident"``, ``"somewhat_confident"``,
    ``"not_confident"``, ``"no_sources"``, ``"other"`` or any other string.
    """

    answer_confidence: str | None


#: What iterating a Chat Completions stream yields.
CompletionEvent: TypeAlias = ChatCompletionChunk | ProvidedLinks | AIAnnotations | UnknownEvent

#: One message of a conversation sent to ``chat.completions.create``: a
#: :class:`ChatCompletionMessage` (as ``result.message`` is) or a mapping sent as given
#: (``role``, ``content``...). Annotate a history with it: ``list[ChatCompletionMessageParam]``.
ChatCompletionMessageParam: TypeAlias = ChatCompletionMessage | Mapping[str, Any]


class ChatCompletionResult(msgspec.Struct, frozen=True):
    """The whole answer of one ``chat.completions.create`` call.

    ``message`` is the assistant message to append to the conversation for the next
    turn: its text and the tool calls the caller must answer (Inkeep's ``provideLinks``
    and ``provideAIAnnotations`` are left out: they are read into ``links`` and
    ``answer_confidence``, and a server would want a ``tool`` answer for each).
    ``tool_calls`` is every assembled tool call, Inkeep's included, in index order;
    ``text`` the answer text (``""`` when none); ``system_fingerprint`` and
    ``service_tier`` as the chunks gave them (OpenAI sends both in each; None if not sent).
    """

    id: str
    model: str
    message: ChatCompletionMessage
    tool_calls: list[ChatCompletionMessageToolCall] = []
    finish_reason: str | None = None
    usage: CompletionUsage | None = None
    reasoning: str | None = None
    links: list[Link] = []
    answer_confidence: str | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None

    @property
    def text(self) -> str:
        """The answer text (``message.content``, ``""`` when the model only called tools)."""
        return self.message.content or ""

    def __repr__(self) -> str:
        calls = ", ".join(call.function.name for call in self.tool_calls)
        return (
            f"ChatCompletionResult(id={self.id!r}, model={self.model!r}, text={_short(self.text)}, "
            f"tool_calls=[{calls}], links={len(self.links)}, "
            f"answer_confidence={self.answer_confidence!r}, finish_reason={self.finish_reason!r}, "
            f"usage={self.usage!r})"
        )


def _short(text: str, limit: int = 60) -> str:
    """A repr of ``text`` cut to ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
