"""msgspec Structs for every wire body (SPEC §1) and the typed stream events.

Structs are declared once and used in both directions. Response structs
ignore unknown fields (msgspec's default), so a newer server does not break
an older client. Events and results are immutable (``frozen=True``).
Decoders are built once per type, at import, never per event.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

import msgspec

__all__ = [
    "KNOWN_RECORD_TYPES",
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


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    """A chat message. ``role`` is ``"user"`` or ``"assistant"``."""

    role: str
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
