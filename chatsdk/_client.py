"""ChatClient: settings, the shared transport, and the ``tokens`` and ``chat`` resources."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Literal, Self

import aiohttp

from ._config import NOT_GIVEN, NotGiven, RetryPolicy, Settings, Timeout
from ._transport import TokenProvider, Transport
from .chat import Chat
from .errors import ValidationError
from .sse import DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_LINE_SIZE
from .tokens import Tokens

__all__ = ["ChatClient"]


class ChatClient:
    """The asyncio client: one connection pool for every call, on one event loop.

    Attributes: :attr:`tokens` (``create``, ``revoke``), :attr:`chat` (``create``,
    ``continue_``, and ``chat.completions.create``).

    Authenticate with the secret ``api_key`` (server side; token operations need it and
    ``project``), or with ``session_token`` (a client token from ``tokens.create``, or a
    callable, async or plain, returning a fresh one) plus ``project``. Not both: that is
    a :class:`ValidationError`, as is both ``CHATSDK_API_KEY`` and
    ``CHATSDK_SESSION_TOKEN`` set; an explicit argument beats the other's variable.

    Arguments (each unset one read from its ``CHATSDK_*`` variable):

    - ``project`` (``CHATSDK_PROJECT``): the Gram project slug.
    - ``service`` (``CHATSDK_SERVICE``): ``"gram"`` or ``"inkeep"``: the real service's
      addresses and API-key header (SPEC 1.9). Default: Gram when a project or a client
      token is given, else Inkeep.
    - ``base_url`` (``CHATSDK_BASE_URL``): one server for every API (the reference
      server, a proxy, a self-hosted Gram); ``tokens_base_url`` and ``chat_base_url``
      (``CHATSDK_TOKENS_BASE_URL``, ``CHATSDK_CHAT_BASE_URL``) per API, the chat one
      serving both chat wires. With none, the real services are used.
    - ``origin`` (``CHATSDK_ORIGIN``): the ``Origin`` header to send, as a browser would.
    - ``timeout`` (``CHATSDK_TIMEOUT``, seconds): a :class:`Timeout` or a number of
      seconds for connect, read and idle; ``None``: no limit of any kind.
    - ``retries``: a :class:`RetryPolicy` or a number of retries; ``None``: none.
    - ``headers``: extra headers sent with every request (their values are scrubbed
      from errors like secrets).
    - ``max_connections``: the pool's size; 0 means no limit. Default 100.
    - ``max_event_size`` / ``max_line_size``: the largest event and line of a stream, in
      characters of decoded text (not bytes); larger is a :class:`StreamError`. Defaults
      8 Mi and 4 Mi characters.
    - ``token_auth``: how a client token is sent: ``"gram-chat-session"`` (the
      ``Gram-Chat-Session`` header, default) or ``"bearer"`` (``Authorization: Bearer``).
    - ``proxy`` (``CHATSDK_PROXY``): an HTTP proxy URL for every request; with
      ``trust_env`` (default True) ``HTTP_PROXY``, ``HTTPS_PROXY`` and ``NO_PROXY`` are
      honoured too.
    - ``http_session``: an aiohttp ``ClientSession`` to use instead of the client's own;
      the client never closes it, and ``max_connections``, ``proxy`` and ``trust_env``
      do not apply to it.

    Raises :class:`ValidationError` for a bad setting, naming it as the user set it.

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
        service: Literal["gram", "inkeep"] | None = None,
        base_url: str | None = None,
        tokens_base_url: str | None = None,
        chat_base_url: str | None = None,
        origin: str | None = None,
        timeout: Timeout | float | NotGiven | None = NOT_GIVEN,
        retries: RetryPolicy | int | NotGiven | None = NOT_GIVEN,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        token_auth: Literal["gram-chat-session", "bearer"] = "gram-chat-session",
        proxy: str | None = None,
        trust_env: bool = True,
        http_session: aiohttp.ClientSession | None = None,
    ):
        settings = Settings.resolve(
            api_key=api_key,
            project=project,
            session_token=session_token,
            service=service,
            base_url=base_url,
            tokens_base_url=tokens_base_url,
            chat_base_url=chat_base_url,
            origin=origin,
            headers=headers,
            timeout=timeout,
            retries=retries,
            max_connections=max_connections,
            max_event_size=max_event_size,
            max_line_size=max_line_size,
            token_auth=token_auth,
            proxy=proxy,
            trust_env=trust_env,
        )
        if http_session is not None and not isinstance(http_session, aiohttp.ClientSession):
            raise ValidationError(
                f"http_session must be an aiohttp.ClientSession, got {type(http_session).__name__}"
            )
        self._transport = Transport(settings, session=http_session)
        self._tokens = Tokens(self._transport)
        self._chat = Chat(self._transport)

    @property
    def tokens(self) -> Tokens:
        """Mint and revoke client tokens: ``tokens.create(...)``, ``tokens.revoke(...)``."""
        return self._tokens

    @property
    def chat(self) -> Chat:
        """Stream chat answers: ``chat.completions.create(...)`` (the current API);
        ``chat.create(...)``, ``chat.continue_(...)`` (``chat_results``)."""
        return self._chat

    @property
    def settings(self) -> Settings:
        """Every option as resolved (secrets masked in its repr)."""
        return self._transport.settings

    @property
    def base_url(self) -> str:
        """The chat API's base URL."""
        return self._transport.settings.chat_base_url

    async def aclose(self) -> None:
        """Close the connection pool. Streams still open are closed with it."""
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        transport = getattr(self, "_transport", None)  # None: __init__ refused its arguments
        if transport is not None:
            transport.close_dropped(self)

    def __repr__(self) -> str:
        s = self._transport.settings
        auth = "api_key" if s.api_key else ("session_token" if s.session_token else "none")
        if s.token_provider is not None:
            auth = "session_token provider"
        return f"<ChatClient base_url={s.chat_base_url!r} project={s.project!r} auth={auth}>"
