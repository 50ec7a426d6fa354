"""ChatClient: settings, the shared transport, and the ``tokens`` and ``chat`` resources."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType

import aiohttp

from ._config import RetryPolicy, Settings, Timeout
from ._transport import TokenProvider, Transport
from .chat import Chat
from .errors import ValidationError
from .sse import DEFAULT_MAX_EVENT_SIZE
from .tokens import Tokens

__all__ = ["ChatClient"]


class ChatClient:
    """The asyncio client: one connection pool for every call.

    Authenticate with the secret ``api_key`` (server side; token operations need it and
    ``project``), or with ``session_token`` plus ``project`` (a client token from
    ``tokens.create``, or an async callable returning a fresh one). Unset arguments are
    read from ``CHATSDK_API_KEY``, ``CHATSDK_PROJECT``, ``CHATSDK_SESSION_TOKEN``,
    ``CHATSDK_BASE_URL`` (and ``CHATSDK_TOKENS_BASE_URL``, ``CHATSDK_CHAT_BASE_URL``,
    ``CHATSDK_ORIGIN``).

    >>> url = "http://127.0.0.1:8080"
    >>> async with ChatClient(api_key="...", project="demo", base_url=url) as client:
    ...     answer = await client.chat.create(integration_id="docs", messages="How do I retry?")
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        project: str | None = None,
        session_token: str | TokenProvider | None = None,
        base_url: str | None = None,
        tokens_base_url: str | None = None,
        chat_base_url: str | None = None,
        origin: str | None = None,
        timeout: Timeout | float | None = None,
        retries: RetryPolicy | int | None = None,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        http_session: aiohttp.ClientSession | None = None,
    ):
        provider: TokenProvider | None = None
        static_token: str | None = None
        if callable(session_token):
            provider = session_token
        else:
            static_token = session_token
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or max_connections < 0
        ):
            raise ValidationError("max_connections must be an int >= 0 (0: no limit)")
        if (
            isinstance(max_event_size, bool)
            or not isinstance(max_event_size, int)
            or max_event_size < 1
        ):
            raise ValidationError("max_event_size must be a positive int (characters)")
        settings = Settings.resolve(
            api_key=api_key,
            project=project,
            session_token=static_token,
            base_url=base_url,
            tokens_base_url=tokens_base_url,
            chat_base_url=chat_base_url,
            origin=origin,
            headers=headers,
            token_provider=provider is not None,
        )
        self._transport = Transport(
            settings,
            timeout=Timeout.coerce(timeout),
            retries=RetryPolicy.coerce(retries),
            token_provider=provider,
            max_connections=max_connections,
            max_event_size=max_event_size,
            session=http_session,
        )
        self.tokens = Tokens(self._transport)
        """Mint and revoke client tokens (``tokens.create``, ``tokens.revoke``)."""
        self.chat = Chat(self._transport)
        """Stream chat answers (``chat.create``, ``chat.continue_``)."""

    @property
    def base_url(self) -> str:
        """The chat API's base URL."""
        return self._transport.settings.chat_base_url

    async def aclose(self) -> None:
        """Close the connection pool. Streams still open are closed with it."""
        await self._transport.aclose()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        s = self._transport.settings
        auth = "api_key" if s.api_key else ("session_token" if s.session_token else "none")
        return f"<ChatClient base_url={s.chat_base_url!r} project={s.project!r} auth={auth}>"
