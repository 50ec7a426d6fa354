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
from ._config import NOT_GIVEN, RetryPolicy, Timeout
from ._streaming import EventStream
from ._transport import TokenProvider
from .chat import ChatStream
from .completions import INKEEP_TOOLS, CompletionStream
from .errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
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
    KNOWN_RECORD_TYPES,
    AIAnnotations,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageParam,
    ChatCompletionMessageToolCall,
    ChatCompletionResult,
    ChatCompletionTool,
    ChatEvent,
    ChatResult,
    ChatSessionToken,
    Choice,
    ChoiceDelta,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallFunction,
    ChunkChoice,
    Citation,
    CompletionEvent,
    CompletionTokensDetails,
    CompletionUsage,
    Function,
    FunctionDefinition,
    Link,
    Message,
    MessageChunk,
    PromptTokensDetails,
    ProvidedLinks,
    Record,
    RecordsCited,
    StreamOptions,
    UnknownEvent,
)

if TYPE_CHECKING:
    from .sync import SyncChatClient, SyncChatStream, SyncTokenProvider

__version__ = "0.1.0"

__all__ = [
    "INKEEP_TOOLS",
    "KNOWN_RECORD_TYPES",
    "NOT_GIVEN",
    "AIAnnotations",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ChatClient",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatCompletionMessageParam",
    "ChatCompletionMessageToolCall",
    "ChatCompletionResult",
    "ChatCompletionTool",
    "ChatEvent",
    "ChatResult",
    "ChatSDKError",
    "ChatSessionToken",
    "ChatStream",
    "Choice",
    "ChoiceDelta",
    "ChoiceDeltaToolCall",
    "ChoiceDeltaToolCallFunction",
    "ChunkChoice",
    "Citation",
    "CompletionEvent",
    "CompletionStream",
    "CompletionTokensDetails",
    "CompletionUsage",
    "ConflictError",
    "Function",
    "FunctionDefinition",
    "EventStream",
    "InternalServerError",
    "Link",
    "Message",
    "MessageChunk",
    "NotFoundError",
    "PermissionDeniedError",
    "PromptTokensDetails",
    "ProvidedLinks",
    "RateLimitError",
    "Record",
    "RecordsCited",
    "RetryPolicy",
    "StreamError",
    "StreamOptions",
    "SyncChatClient",
    "SyncChatStream",
    "SyncTokenProvider",
    "Timeout",
    "TokenProvider",
    "UnknownEvent",
    "UnprocessableEntityError",
    "ValidationError",
    "__version__",
]


if not TYPE_CHECKING:  # seen by type checkers, a module __getattr__ makes every name Any

    def __getattr__(name: str) -> Any:
        # The sync facade pulls in anyio's thread portal; import it only when asked for.
        if name in ("SyncChatClient", "SyncChatStream", "SyncTokenProvider"):
            from . import sync

            return getattr(sync, name)
        raise AttributeError(f"module 'chatsdk' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public names (the lazy sync ones included), not this module's own imports.
    return sorted(__all__)
