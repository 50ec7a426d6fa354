"""chatsdk: an asyncio-first SDK for chat-session services.

>>> import chatsdk
>>> url = "http://127.0.0.1:8080"
>>> async with chatsdk.ChatClient(api_key="...", project="demo", base_url=url) as client:
...     async for text in client.chat.create(integration_id="docs", messages="Hi").text_stream:
...         print(text, end="")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._client import ChatClient
from ._config import RetryPolicy, Timeout
from ._streaming import ChatStream
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ChatSDKError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    StreamError,
    UnprocessableEntityError,
    ValidationError,
)
from .models import (
    ChatEvent,
    ChatResult,
    ChatSessionToken,
    Citation,
    Message,
    MessageChunk,
    Record,
    RecordsCited,
    UnknownEvent,
)

if TYPE_CHECKING:
    from .sync import SyncChatClient

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ChatClient",
    "ChatEvent",
    "ChatResult",
    "ChatSDKError",
    "ChatSessionToken",
    "ChatStream",
    "Citation",
    "ConflictError",
    "InternalServerError",
    "Message",
    "MessageChunk",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "Record",
    "RecordsCited",
    "RetryPolicy",
    "StreamError",
    "SyncChatClient",
    "Timeout",
    "UnknownEvent",
    "UnprocessableEntityError",
    "ValidationError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The sync facade pulls in anyio's thread portal; import it only when asked for.
    if name == "SyncChatClient":
        from .sync import SyncChatClient

        return SyncChatClient
    raise AttributeError(f"module 'chatsdk' has no attribute {name!r}")
