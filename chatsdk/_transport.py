"""The one aiohttp session: auth headers, idempotency keys, the retry loop, error mapping.

The error boundary lives here: :func:`mapped_errors` turns an aiohttp, asyncio or OS
failure into a chatsdk error for every send and every body read (``_streaming`` uses it
too), :data:`DECODE_ERRORS` is the one tuple of decode failures, and
:func:`invalid_response` the one error for a 2xx body that is not what the API answers.
Nothing here logs or formats a credential: log lines carry the method, the path
without its query, the status and the attempt number. Error messages and bodies are
scrubbed of every secret the call sent (the API key, the client token, extra header
values, query values such as a revoked token) in case a server echoes one, and an
aiohttp exception is only chained as the cause once it cannot show the request's
query or headers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import ipaddress
import logging
import os
import re
import time
import urllib.request
import uuid
import warnings
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from errno import ECONNRESET, EPIPE
from typing import Any, Final, Literal, Protocol, TypeAlias, TypeVar
from urllib.parse import quote, quote_plus, unquote, urlsplit

import aiohttp
import msgspec
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.http_exceptions import ContentLengthError, HttpProcessingError, TransferEncodingError
from aiohttp.tracing import Trace
from multidict import CIMultiDict

from ._config import (
    NotGiven,
    RetryPolicy,
    Settings,
    Timeout,
    asked_wait,
    check_base_url,
    check_header_value,
    without_query,
)
from .errors import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    ChatSDKError,
    StreamError,
    ValidationError,
    error_layers,
    escaped,
    excerpt,
    printable,
    status_error_class,
)
from .models import ChatSessionToken
from .sse import DEFAULT_MAX_EVENT_SIZE

__all__ = [
    "DECODE_ERRORS",
    "USER_AGENT",
    "TokenProvider",
    "Transport",
    "invalid_response",
    "mapped_errors",
]

_T = TypeVar("_T")
_E = TypeVar("_E", bound=BaseException)

# Every way decoding a body can fail: msgspec's DecodeError and ValidationError, the
# UnicodeDecodeError (a ValueError) it raises for bytes that are not UTF-8, and the
# RecursionError it raises for absurdly deep nesting.
DECODE_ERRORS: tuple[type[Exception], ...] = (msgspec.DecodeError, ValueError, RecursionError)

log = logging.getLogger("chatsdk")

USER_AGENT = "chatsdk-python/0.1.0"

#: A callable the client calls for a fresh client token: async, or plain.
TokenProvider: TypeAlias = Callable[
    [], "Awaitable[str | ChatSessionToken] | str | ChatSessionToken"
]

#: Which API a request belongs to: it picks the base URL and the auth headers.
Api: TypeAlias = Literal["tokens", "chat", "completions"]

# Refresh a client token this long before it expires: the public chat widget re-fetches
# within 30 s of `exp`, which leaves room for a slow mint and clock skew.
REFRESH_MARGIN = 30.0

# An error body is read for its message and kept on the exception; cap it so a server
# answering an error with a huge body cannot make us buffer it.
MAX_ERROR_BODY = 64 * 1024
# ... and do not wait long for it: it is only a message, and a server dripping it a byte
# at a time (each byte resetting the read timeout) must not hold the call.
ERROR_BODY_TIMEOUT = 10.0
# The one limit on a whole JSON answer (a token's, or a chat answer asked with
# stream=False), in bytes: a non-streamed answer is the whole text a stream would carry in
# its events, so it gets the size of the largest event (sse.DEFAULT_MAX_EVENT_SIZE), and a
# hostile server still cannot make us buffer more.
MAX_JSON_BODY = DEFAULT_MAX_EVENT_SIZE
# Secrets shorter than this are not scrubbed from messages (nor by the CLI): no real key
# or token is that short, and masking a placeholder (local servers take any key: "ollama",
# "sk-1234") would mangle every message that names it ("registry.***.ai/library/...").
MIN_SECRET_LENGTH = 8


class _TokenSource:
    """Holds the client token: a fixed string, or one fetched (and refreshed) from a provider."""

    def __init__(self, static: str | None, provider: TokenProvider | None, closing: asyncio.Event):
        self._provider = provider
        self._closing = closing  # set when the client closes: a wait for the provider ends
        self._token = static
        self._expires_at = _jwt_expiry(static) if static else None
        self._margin = REFRESH_MARGIN  # refreshed this long before expiry
        # The provider call under way: one serves every call that needs a token, and a
        # caller cancelled meanwhile does not stop it for the others.
        self._refreshing: asyncio.Task[str] | None = None

    @property
    def refreshable(self) -> bool:
        return self._provider is not None

    @property
    def configured(self) -> bool:
        return self._provider is not None or self._token is not None

    @property
    def current(self) -> str | None:
        """The token last sent or fetched (a secret: for scrubbing messages only)."""
        return self._token

    async def get(self, *, stale: str | None = None) -> str | None:
        """The token to send: a new one when missing, about to expire, or equal to ``stale``."""
        if self._provider is None or self._usable(stale):
            return self._token
        task = self._refreshing
        if task is None or task.done():
            task = self._refreshing = asyncio.ensure_future(self._refresh(self._provider))
            # Read its outcome even when every caller has gone (no "never retrieved").
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await _unless_closed(self._closing, asyncio.shield(task))

    def close(self) -> None:
        """The client closed: a provider call under way is abandoned."""
        if self._refreshing is not None:
            self._refreshing.cancel()

    async def _refresh(self, provider: TokenProvider) -> str:
        try:
            fetched = await self._fetch(provider)
        except ChatSDKError:
            raise
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the client closed
            # The provider's own, not a cancellation of this call: a failure of it.
            raise APIConnectionError(
                "the session_token provider failed: it raised CancelledError"
            ) from exc
        except (Exception, GeneratorExit) as exc:  # the caller's code: typed, chained
            raise APIConnectionError(
                f"the session_token provider failed: {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(fetched, ChatSessionToken):
            token = fetched.client_token
            expires_at: float | None = _jwt_expiry(token) or (time.time() + fetched.expires_after)
        elif isinstance(fetched, str):
            token = fetched
            expires_at = _jwt_expiry(token)
        else:
            raise ValidationError(
                "session_token provider must return a str or ChatSessionToken, "
                f"got {type(fetched).__name__}"
            )
        check_header_value("session_token", token)
        # A token that lives less than twice the margin is refreshed halfway through its
        # life, not at once (which would call the provider for every call).
        lifetime = None if expires_at is None else expires_at - time.time()
        self._margin = REFRESH_MARGIN if lifetime is None else min(REFRESH_MARGIN, lifetime / 2)
        self._token, self._expires_at = token, expires_at
        return token

    @staticmethod
    async def _fetch(provider: TokenProvider) -> object:
        # A plain function runs in a worker thread: a slow one (a call to a backend)
        # must not stall the event loop, nor keep a close of the client waiting.
        if inspect.iscoroutinefunction(provider):
            fetched: object = await provider()
        else:
            fetched = await asyncio.to_thread(_call_plain, provider)
        if inspect.isawaitable(fetched):
            fetched = await fetched
        return fetched

    def _usable(self, stale: str | None) -> bool:
        if self._token is None or self._token == stale:
            return False
        return self._expires_at is None or time.time() < self._expires_at - self._margin


def _call_plain(provider: TokenProvider) -> object:
    # In a worker thread. StopIteration cannot cross into the awaiting future (asyncio
    # would leave the call waiting): it is reported here.
    try:
        return provider()
    except StopIteration as exc:
        raise APIConnectionError("the session_token provider failed: StopIteration") from exc


async def _unless_closed(closing: asyncio.Event, awaitable: Awaitable[_T]) -> _T:
    """``awaitable``'s result, unless the client closes first (then it is cancelled)."""
    work = asyncio.ensure_future(awaitable)
    closed = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait((work, closed), return_when=asyncio.FIRST_COMPLETED)
    finally:
        closed.cancel()
        if not work.done():
            work.cancel()
    if not work.done() or work.cancelled():
        raise APIConnectionError("the client was closed during the call")
    return work.result()


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it (only the server can verify)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = msgspec.json.decode(base64.urlsafe_b64decode(payload))
    except DECODE_ERRORS:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class _ClientStream(Protocol):
    def client_closed(self) -> None: ...

    @property
    def in_use(self) -> bool: ...


class Transport:
    """One aiohttp ``ClientSession`` shared by every call of a client, on one event loop."""

    def __init__(self, settings: Settings, *, session: aiohttp.ClientSession | None = None):
        self.settings = settings
        self.timeout = settings.timeout
        self.retries = settings.retries
        self._closing = asyncio.Event()  # set by aclose(): ends the waits of calls at once
        self._tokens = _TokenSource(settings.session_token, settings.token_provider, self._closing)
        self._session = session
        self._owns_session = session is None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proxies: dict[str, str | None] = {}  # per scheme://host:port
        self._proxy_credentials: set[str] | None = None  # see secrets()
        self._draining: set[aiohttp.ClientResponse] = set()  # see release_when_read()
        self._dropped = False  # the client was collected while its streams were read
        self._closed = False
        # The streams made on this transport: closing it ends those still being read.
        self.streams: weakref.WeakSet[_ClientStream] = weakref.WeakSet()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ValidationError(
                "this client is closed (aclose() or the end of `async with`): create a new one"
            )
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            # aiohttp would raise a RuntimeError from deep inside and leave a task behind.
            raise ValidationError(
                "this client was first used in another event loop (a second asyncio.run(), "
                "or a thread): a client and its connections belong to one loop. Create the "
                "client inside the loop that uses it, e.g. `async with ChatClient(...) as "
                "client:` in each asyncio.run()"
            )
        if self._session is None or self._session.closed:
            # Created lazily so that a client can be built outside a running loop.
            s = self.settings
            connector = _Connector(limit=s.max_connections, ttl_dns_cache=300)
            # No trust_env: aiohttp would read the environment (and ~/.netrc) on every
            # request, which halved the rate of a thousand short streams; the proxy is
            # looked up once per server instead (_proxy_for).
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": USER_AGENT}
            )
        return self._session

    def _proxy_for(self, url: str) -> str | None:
        """The proxy for ``url``: ``proxy=``, else (with ``trust_env``) the environment's
        (:func:`_environment_proxy`), looked up once per server."""
        s = self.settings
        if s.proxy is not None or not s.trust_env:
            return s.proxy
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        if key not in self._proxies:
            self._proxies[key] = _environment_proxy(parts.scheme, parts.netloc)
        return self._proxies[key]

    def per_call(
        self,
        timeout: Timeout | float | NotGiven | None,
        retries: RetryPolicy | int | NotGiven | None,
    ) -> tuple[Timeout, RetryPolicy]:
        """A call's timeout and retry policy: the client's, unless the call gave its own."""
        return (
            self.timeout if isinstance(timeout, NotGiven) else Timeout.coerce(timeout),
            self.retries if isinstance(retries, NotGiven) else RetryPolicy.coerce(retries),
        )

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the client closes meanwhile (the caller then
        finds it closed)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()

    async def aclose(self) -> None:
        """Close the connection pool (only when this transport created it), and end the
        streams still being read: their readers get a ``StreamError`` at once.

        Raises :class:`ValidationError` in another event loop than the one that used the
        client: its connections belong to that loop, and cannot be closed from here."""
        session = self._session
        in_use = session is not None and not session.closed and self._owns_session
        loop = self._loop
        if in_use and loop is not None and loop is not asyncio.get_running_loop():
            where = (
                "that loop has ended, so its connections can no longer be closed: next time"
                if loop.is_closed()
                else "so close the client there,"
            )
            raise ValidationError(
                "aclose() in another event loop than the one that used this client (a "
                f"second asyncio.run()): its connections belong to that loop; {where} "
                "use it as `async with ChatClient(...) as client:` inside the loop"
            )
        self._closed = True
        self._closing.set()
        self._tokens.close()
        for stream in list(self.streams):
            stream.client_closed()
        for response in list(self._draining):
            response.close()
        self._draining.clear()
        if self._session is not None and self._owns_session and not self._session.closed:
            await self._session.close()

    def close_dropped(self, client: object) -> None:
        """For ``client``'s finalizer: a client dropped unclosed in its own running loop
        (a notebook cell run again rebinds ``client``) has its pool closed, quietly but
        for a ResourceWarning (shown with -X dev, as for a file), rather than with
        aiohttp's "Unclosed client session" printed into the output; when the last
        stream it made ends, if some are still being read. Elsewhere (no loop, another
        one) aiohttp's own warning stands."""
        session = self._session
        if not self._owns_session or (session is not None and session.closed):
            return
        if [stream for stream in self.streams if stream.in_use]:
            self._dropped = True  # see stream_ended (the pool may not be made yet)
            return
        if session is not None:
            self._close_dropped_pool()

    def stream_ended(self) -> None:
        """A stream of this transport is done (read whole, closed or failed)."""
        if self._dropped and not [stream for stream in self.streams if stream.in_use]:
            self._dropped = False
            self._close_dropped_pool()

    def _close_dropped_pool(self) -> None:
        session = self._session
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if session is None or session.closed or loop is not self._loop:
            return
        task = loop.create_task(session.close())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)
        warnings.warn(
            "unclosed chatsdk.ChatClient: its connections were closed when it was "
            "collected; use `async with ChatClient(...)` or `await client.aclose()`",
            ResourceWarning,
            stacklevel=1,
        )

    def release_when_read(self, response: aiohttp.ClientResponse) -> None:
        """Return the connection of an answer that is whole before its body ended (the
        end marker came, the chunked body's last chunk not yet) to the pool once the rest
        of the body is read, in the background: it is usually just behind, and a pooled
        connection spares the next call a new connection (and TLS handshake). A body
        that does not end within ``DRAIN_WAIT`` is closed instead."""
        # aiohttp releases a response's connection itself when its body ends, read or
        # not (data past the end marker waits in its buffer, up to its flow-control
        # limit): only the close of one that does not end is left to do.
        self._draining.add(response)

        def close() -> None:
            self._draining.discard(response)
            response.close()  # a no-op once aiohttp released it

        asyncio.get_running_loop().call_later(DRAIN_WAIT, close)

    # -- auth ---------------------------------------------------------------------------

    async def _auth_headers(self, api: Api, *, refresh_from: str | None = None) -> dict[str, str]:
        """The auth headers of ``api`` (SPEC 1.1, 1.8, 1.9).

        Token operations: ``Gram-Key`` + ``Gram-Project``. Chat with the API key:
        ``Authorization: Bearer`` (Inkeep), except Chat Completions on Gram (``Gram-Key``
        + ``Gram-Project``). Chat with a client token: ``Gram-Chat-Session`` +
        ``Gram-Project``, or ``Authorization: Bearer`` with ``token_auth="bearer"``.
        """
        s = self.settings
        headers = dict(s.headers)
        if api == "tokens":
            if s.api_key is None or s.project is None:
                raise ValidationError(
                    "token operations need the secret API key and the project: pass "
                    "api_key=... and project=... (or set CHATSDK_API_KEY and CHATSDK_PROJECT)"
                    + s.env_hint
                )
            headers["Gram-Key"] = s.api_key
            headers["Gram-Project"] = s.project
            return headers
        if s.api_key is not None:
            if api == "completions" and s.service == "gram":
                if s.project is None:
                    raise ValidationError(
                        "Gram needs the project with the API key: pass project=... (or set "
                        "CHATSDK_PROJECT)" + s.env_hint
                    )
                headers["Gram-Key"] = s.api_key
                headers["Gram-Project"] = s.project
            else:
                headers["Authorization"] = f"Bearer {s.api_key}"
        elif self._tokens.configured:
            if s.project is None and s.token_auth == "gram-chat-session":
                raise ValidationError(
                    "a client token must be sent with its project: pass project=... "
                    "(or set CHATSDK_PROJECT)" + s.env_hint
                )
            token = await self._tokens.get(stale=refresh_from)
            if token is None:  # pragma: no cover - configured implies a token or a provider
                raise ValidationError("no client token available")
            if s.token_auth == "bearer":
                headers["Authorization"] = f"Bearer {token}"
            else:
                headers["Gram-Chat-Session"] = token
            if s.project is not None:
                headers["Gram-Project"] = s.project
        else:
            raise ValidationError(
                "chat operations need api_key=... (server side) or session_token=... "
                "(a client token from tokens.create, or a callable returning one)" + s.env_hint
            )
        if s.origin is not None:
            headers["Origin"] = s.origin
        return headers

    def sent_token(self, headers: Mapping[str, str]) -> str | None:
        """The client token among auth headers (a secret to scrub), if one was sent."""
        if not self._tokens.configured:
            return None
        token = headers.get("Gram-Chat-Session")
        if token is None and self.settings.token_auth == "bearer":
            token = headers.get("Authorization", "").removeprefix("Bearer ") or None
        return token

    # -- requests -----------------------------------------------------------------------

    def url(self, api: Api, path: str) -> str:
        """The absolute URL of ``path`` on the server of ``api``."""
        s = self.settings
        if api == "tokens":
            return s.tokens_base_url + path
        return (s.chat_base_url if api == "chat" else s.completions_base_url) + path

    async def send(
        self,
        method: str,
        url: str,
        *,
        api: Api,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeout,
        retries: RetryPolicy,
        deadline: float | None,
        idempotent_post: bool = True,
        retried_400_ok: bool = False,
    ) -> aiohttp.ClientResponse:
        """Send a request, retrying per ``retries``; return the response with its body unread.

        Raises the mapped :class:`APIStatusError` for an error status, and
        :class:`APIConnectionError` / :class:`APITimeoutError` when no response came; the
        error says how many attempts were made over how long (``attempts``, ``elapsed``
        on a status error). Each retry is logged at INFO on the ``chatsdk`` logger.
        ``deadline`` is a ``loop.time()`` by which everything must be done.
        With ``retried_400_ok``, a 400 answering a retry counts as success (a revoke
        whose first attempt went through but whose answer was lost).
        """
        for name, value in (params or {}).items():
            # Encoded by aiohttp, so no injection is possible; still, a control character
            # in a token is a caller's mistake worth reporting before anything is sent.
            check_header_value(name, value)
        _check_no_dot_segments(url)
        session = self._get_session()
        secrets = self.secrets(params)
        request_headers: dict[str, str] = {}
        if body is not None:
            request_headers["Content-Type"] = "application/json"
        if method == "POST" and idempotent_post:
            # One key per logical call, the same across its retries (SPEC 1.7).
            request_headers["Idempotency-Key"] = str(uuid.uuid4())
        if headers:
            request_headers.update(headers)
        # aiohttp's connect covers the wait for a free connection of a full pool too.
        client_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeout.connect,
            sock_connect=timeout.connect,
            sock_read=timeout.read,
        )
        # Redacted once here: it goes into log lines as well as errors (a server's
        # Content-Location, resumed from, may hold a secret).
        doing = redact(f"{method} {without_query(url)}", secrets)
        attempt = 0
        refreshed_token: str | None = None
        resent = resending = False  # the keep-alive race's one resend: done, under way
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            provider_by = earliest(deadline, timeout.idle and loop.time() + timeout.idle)
            try:
                async with asyncio.timeout_at(provider_by):
                    auth = await self._auth_headers(api, refresh_from=refreshed_token)
            except TimeoutError:
                raise APITimeoutError(
                    "the session_token provider did not return a token within the "
                    f"{'total' if _past(deadline) else 'idle'} timeout"
                ) from None
            sent_token = self.sent_token(auth)
            if sent_token is not None and len(sent_token) >= MIN_SECRET_LENGTH:
                secrets.add(sent_token)
            # The wait for the response headers is bounded by ``idle`` too: a server
            # dripping header bytes (each one resetting the read timeout) or sending 1xx
            # answers forever would otherwise hold the call with no total timeout set.
            # And by ``read`` (within_read): after a 1xx answer (103 Early Hints) aiohttp's
            # own read timer is not armed again, and the wait for the answer had no end.
            headers_by = earliest(deadline, timeout.idle and loop.time() + timeout.idle)
            error: APIConnectionError | APIStatusError
            # The wait the server asked for (None: none) and the header that asked.
            wait_asked: float | None = None
            asked = "Retry-After"
            if self._closed:  # closed while this call waited (auth, a retry's backoff)
                raise APIConnectionError(f"{doing}: the client was closed during the call")
            _REUSED.set(False)  # set by _Connector.connect
            _FRESH.set(resending)
            resending = False
            try:
                with mapped_errors(doing, timeout, deadline, secrets):
                    response = await within_read(
                        session.request(
                            method,
                            url,
                            data=body,
                            params=params,
                            headers={**auth, **request_headers},
                            timeout=client_timeout,
                            allow_redirects=False,
                            proxy=self._proxy_for(url),
                        ),
                        timeout,
                        headers_by,
                        doing,
                    )
            except APIConnectionError as exc:
                if exc._unanswered and _REUSED.get() and not resent:
                    # The keep-alive race: the server closed a kept-alive connection as
                    # idle while the request went out on it. Sent again once, at once, on
                    # a new connection, whatever the retry policy says (RFC 9112 §9.3.1),
                    # as browsers do; the same Idempotency-Key makes it safe.
                    log.debug("%s: a kept-alive connection was closed under it; sent again", doing)
                    resent = resending = True
                    continue
                error = exc
                delay: float | None = retries.backoff(attempt)
                retryable = not _past(deadline) and not exc._final
            else:
                _fail_reader_on_framing_error(response)
                status = response.status
                log.debug("%s -> %d (attempt %d)", doing, status, attempt + 1)
                if status < 300 or (retried_400_ok and status == 400 and attempt > 0):
                    return response
                if (
                    status == 401
                    and api != "tokens"
                    and self._tokens.refreshable
                    and sent_token is not None
                    and refreshed_token is None
                ):
                    # One refresh on a 401: the token may have expired or been revoked.
                    response.release()
                    refreshed_token = sent_token
                    continue
                try:
                    # Bounded like every other wait for the server: idle and total.
                    wait = min(ERROR_BODY_TIMEOUT, timeout.idle or ERROR_BODY_TIMEOUT)
                    if deadline is not None:
                        wait = max(0.0, min(wait, deadline - loop.time()))
                    error = await _status_error(response, doing, secrets, wait)
                finally:
                    response.release()
                wait_asked, asked = asked_wait(response.headers)
                delay = retries.delay_for(attempt, wait_asked)
                retryable = retries.is_retryable_status(status)
            # A wait for the server's answer is bounded by idle and total, a retry's as
            # a resume's: one that would pass either is not waited for.
            why = ""
            if not retryable or attempt >= retries.max_retries:
                pass
            elif delay is None:
                why = (
                    f"the server's {asked} asks for more than max_retry_after, "
                    f"{retries.max_retry_after:g} s"
                )
            else:
                waiting = f"a wait of {delay:.3g} s"
                if delay == wait_asked:
                    waiting = f"the server's {asked} asks for {waiting}, which"
                if _would_pass(deadline, delay):
                    limit = "the call's time limit"
                    if timeout.total is not None:
                        limit = f"the total timeout of {timeout.total:g} s"
                    why = f"{waiting} would pass {limit}"
                elif timeout.idle is not None and delay > timeout.idle:
                    why = f"{waiting} would pass the idle timeout of {timeout.idle:g} s"
            if why:
                error.args = (f"{error} (not retried: {why})",)
            if why or not retryable or attempt >= retries.max_retries:
                # The keep-alive race's resend went out too: counted among the attempts.
                raise _gave_up(error, attempt + 1 + resent, loop.time() - started)
            assert delay is not None
            log.info(
                "%s failed (%s); retry %d of %d in %.2f s",
                doing,
                _short(error),
                attempt + 1,
                retries.max_retries,
                delay,
            )
            attempt += 1
            await self.sleep(delay)

    async def request_json(
        self,
        method: str,
        url: str,
        *,
        api: Api,
        body: bytes | None,
        decoder: msgspec.json.Decoder[_T] | None,
        params: Mapping[str, str] | None = None,
        timeout: Timeout,
        retries: RetryPolicy,
        retried_400_ok: bool = False,
        show_body: bool = True,
    ) -> _T | None:
        """Send a request and decode its whole (successful) body; None for an empty one
        or when no ``decoder`` is given (the body is read and dropped).

        The body is read within ``idle`` and ``total`` and at most ``MAX_JSON_BODY``
        bytes. A body that is not JSON of the expected shape is an
        :class:`APIResponseValidationError` (its excerpt withheld with ``show_body=False``,
        for an answer that may hold a secret).
        """
        deadline = deadline_for(timeout)
        secrets = self.secrets(params)
        response = await self.send(
            method,
            url,
            api=api,
            body=body,
            params=params,
            timeout=timeout,
            retries=retries,
            deadline=deadline,
            retried_400_ok=retried_400_ok,
        )
        loop = asyncio.get_running_loop()
        # The body is bounded like the headers: by ``idle`` as well as ``total``.
        body_by = earliest(deadline, timeout.idle and loop.time() + timeout.idle)
        try:
            with mapped_errors(f"{method} {without_query(url)}", timeout, deadline, secrets):
                async with asyncio.timeout_at(body_by):
                    raw = await read_at_most(
                        response,
                        MAX_JSON_BODY,
                        show=show_body,
                        timeout=timeout,
                        doing=f"{method} {without_query(url)}",
                    )
        except APIResponseValidationError as exc:
            raise scrubbed(exc, secrets) from None
        finally:
            response.release()
        if decoder is None and raw.lstrip()[:1] == b"<":
            # Any 2xx with any body is success (SPEC 1.3), but an HTML page is a login
            # portal or a proxy answering in the server's place: nothing was done.
            error = invalid_response("the answer is an HTML page", response, raw)
            raise scrubbed(error, secrets)
        if decoder is None or not raw.strip():
            return None
        try:
            return decoder.decode(raw)
        except DECODE_ERRORS as exc:
            message = f"the answer is not JSON of the expected shape ({_decode_reason(exc)})"
            error = invalid_response(message, response, raw if show_body else None)
            raise scrubbed(error, secrets) from None

    def secrets(self, params: Mapping[str, str] | None = None) -> set[str]:
        """Every secret a call may send: scrubbed from whatever it raises."""
        s = self.settings
        values = [s.api_key, self._tokens.current, *s.headers.values(), *(params or {}).values()]
        found = {v for v in values if v is not None and len(v) >= MIN_SECRET_LENGTH}
        if self._proxy_credentials is None:
            # A proxy's password, and its Proxy-Authorization value, which a proxy's 407
            # may quote back; the environment's proxies read once, as _proxy_for does.
            urls = [s.proxy] if s.proxy is not None or not s.trust_env else []
            if s.proxy is None and s.trust_env:
                urls = list(urllib.request.getproxies_environment().values())
            self._proxy_credentials = {c for url in urls if url for c in _credentials_of(url)}
        found |= self._proxy_credentials
        # As a query or a path carries them (a server may quote the URL it was sent), with
        # its %XX escapes in upper or lower case (RFC 3986 §2.1: the same to a server).
        encoded = {quote(v, safe="") for v in found} | {quote_plus(v) for v in found}
        lower = {_ESCAPE.sub(lambda m: m.group().lower(), v) for v in encoded}
        return found | encoded | lower


_ESCAPE: Final = re.compile("%[0-9A-F]{2}")


def _environment_proxy(scheme: str, netloc: str) -> str | None:
    """The proxy the environment names for a URL, as curl, requests and httpx read it:
    ``HTTP_PROXY`` or ``HTTPS_PROXY`` by its scheme, else ``ALL_PROXY``; none for a host
    ``NO_PROXY`` names; ``host:port`` is an HTTP proxy. Raises :class:`ValidationError`,
    never showing the URL (it may hold a password), for one that is not a valid URL or is
    not an HTTP proxy (SOCKS: aiohttp would speak HTTP to it, and going around it would
    send the traffic where the user said not to)."""
    proxies = urllib.request.getproxies_environment()
    variable, proxy = f"{scheme.upper()}_PROXY", proxies.get(scheme)
    if not proxy:
        variable, proxy = "ALL_PROXY", proxies.get("all")
    if not proxy or _no_proxy_for(netloc, proxies.get("no", "")):
        return None
    if "://" not in proxy:
        proxy = f"http://{proxy}"
    kind = proxy.partition("://")[0].lower()
    if kind not in ("http", "https"):
        raise ValidationError(
            f"the {variable} environment variable names a {kind[:20]} proxy; chatsdk speaks "
            "only to http:// and https:// proxies: name one, exclude this host with "
            "NO_PROXY, or pass trust_env=False (or an http_session= with a SOCKS connector)"
        )
    return check_base_url(f"the {variable} environment variable", proxy, credentials=True)


def _no_proxy_for(netloc: str, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` names the host of ``netloc``: as urllib reads it (``*``, names,
    ``.domains``, ``host:port``) and, as curl and requests do, an address range in CIDR
    notation (``10.0.0.0/8``) or an IPv6 address with or without its brackets."""
    # urllib's own reading of NO_PROXY (present since Python 2, absent from typeshed).
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if bypass(netloc, {"no": no_proxy}):
        return True
    try:
        address = ipaddress.ip_address(urlsplit(f"//{netloc}").hostname or "")
    except ValueError:  # a name, not an address: urllib's rules were all there is
        return False
    for entry in no_proxy.split(","):
        try:
            if address in ipaddress.ip_network(entry.strip().strip("[]"), strict=False):
                return True
        except ValueError:
            continue
    return False


def _credentials_of(url: str) -> set[str]:
    """The secrets a URL's userinfo makes: its password, and ``user:password`` as it goes
    in a ``Basic`` authorization header (RFC 7617), plain and base64-encoded."""
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
    except ValueError:
        return set()
    if not password:
        return set()
    pair = f"{user}:{password}"
    found = {password, pair, base64.b64encode(pair.encode()).decode()}
    return {value for value in found if len(value) >= MIN_SECRET_LENGTH}


@contextmanager
def mapped_errors(
    doing: str, timeout: Timeout, deadline: float | None, secrets: Collection[str] = ()
) -> Iterator[None]:
    """The error boundary: an aiohttp, asyncio or OS failure inside becomes a chatsdk error.

    A timeout becomes :class:`APITimeoutError` (saying which limit: connect, read, idle or
    total); anything else that broke the connection, :class:`APIConnectionError`. The
    message starts with ``doing`` and never shows a secret; the cause is chained only
    when it cannot show one either (:func:`_safe_cause`).
    """
    try:
        yield
    except TimeoutError as exc:  # asyncio's, and aiohttp's ServerTimeoutError family
        reason = _timeout_reason(exc, timeout, deadline, doing)
        raise APITimeoutError(f"{doing}: {reason}") from _safe_cause(exc, secrets)
    except (aiohttp.ClientError, OSError, HttpProcessingError) as exc:
        # (HttpProcessingError: aiohttp's pure-Python parser lets its own errors out.)
        message = redact(f"{doing}: {_describe(exc)}", secrets)
        malformed = _malformed(exc)
        if malformed and doing.startswith("reading"):
            # A body that cannot be framed or decoded: the server's answer is broken,
            # and asking again (a resume) would be answered alike.
            raise StreamError(message) from _safe_cause(exc, secrets)
        error = APIConnectionError(message)
        error._final = malformed or isinstance(exc, aiohttp.ClientConnectorCertificateError)
        error._unanswered = isinstance(exc, aiohttp.ServerDisconnectedError) or (
            isinstance(exc, aiohttp.ClientOSError) and exc.errno in (ECONNRESET, EPIPE)
        )
        raise error from _safe_cause(exc, secrets)


# The closes of pools whose client was collected unclosed (close_dropped), held until
# done: the loop keeps only a weak reference to a task.
_CLOSING: set[asyncio.Task[None]] = set()

# How long a finished answer's connection waits for the rest of its body (a chunked
# body's last chunk, usually just behind the end marker) before it is closed, not pooled.
DRAIN_WAIT: Final = 0.25


# Whether the request under way went out on a kept-alive connection from the pool (set
# in the calling task's context by _Connector.connect, read by Transport.send); and
# whether it must go out on a new connection (set by Transport.send for its resend).
_REUSED: ContextVar[bool] = ContextVar("chatsdk_reused_connection", default=False)
_FRESH: ContextVar[bool] = ContextVar("chatsdk_fresh_connection", default=False)


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connection pool, except that a kept-alive connection the server wrote
    to while it sat idle in the pool is closed, never handed to the next call.

    aiohttp keeps such bytes and reads them as the next request's answer: a server or
    proxy writing an answer twice, or a ``408`` before closing an idle connection, would
    answer a call with what another call got, or fail a call the server never saw (RFC
    9112 §9.8: a server may close an idle connection; the client must not take what came
    before its request as the answer to it)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # The connections handed out before: the ones that come back from the pool.
        self._handed_out: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        while True:
            connection = await super().connect(req, traces, timeout)
            protocol = connection.protocol
            if protocol is None or protocol not in self._handed_out:
                if protocol is not None:
                    self._handed_out.add(protocol)
                return connection
            if _FRESH.get():
                # A resend after the keep-alive race (Transport.send): the pool's other
                # connections are as old as the one the server closed, so likely closed
                # as well; the resend goes out on a new one.
                connection.close()
            elif protocol.should_close:  # the server wrote to it while it was idle
                log.debug("dropped a pooled connection the server wrote to while it was idle")
                connection.close()
            else:
                _REUSED.set(True)
                return connection


def _fail_reader_on_framing_error(response: aiohttp.ClientResponse) -> None:
    """Make a body that HTTP cannot frame fail its reader at once, not at a timeout.

    aiohttp 3.14's C parser, on an invalid chunk size (or any error it finds in a body),
    records the error on the connection and closes it, but neither wakes the body's
    reader nor ends the body, so a read would wait for ``read`` or ``idle`` and then
    report a timeout. When that connection is lost with the body neither ended nor
    failed, the body fails with aiohttp's own error for it (``ClientPayloadError``,
    caused by the parser's ``HttpProcessingError``), as its pure-Python parser does:
    :func:`mapped_errors` makes that a :class:`StreamError`, never retried nor resumed."""
    connection = response.connection
    protocol = None if connection is None else connection.protocol
    lost = None if protocol is None else protocol.closed
    if protocol is None or lost is None:
        return  # no connection, or one already lost: aiohttp ended the body then

    def failed(future: asyncio.Future[None]) -> None:
        error = protocol.exception()
        content = response.content
        if error is None or content.is_eof() or content.exception() is not None:
            return
        reason = str(getattr(error, "message", error)).strip().splitlines()[0].rstrip(": ")
        failure = aiohttp.ClientPayloadError(f"the response body cannot be framed: {reason}")
        failure.__cause__ = error
        content.set_exception(failure)

    def ended() -> None:
        # A body read to its end no longer needs the hook; nor does the pooled
        # connection, which would otherwise hold one per answer it carried.
        lost.remove_done_callback(failed)

    lost.add_done_callback(failed)
    response.content.on_eof(ended)
    # asyncio logs an error for a future whose exception (a link lost to a reset, say)
    # nobody retrieved: the future asked for above is retrieved, once per connection.
    lost.remove_done_callback(_retrieved)
    lost.add_done_callback(_retrieved)


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _malformed(exc: BaseException) -> bool:
    """Whether an aiohttp failure is an answer HTTP cannot parse (framing, a content
    encoding that does not decode, headers over aiohttp's limits), not a broken link."""
    if "not completed" in str(exc):
        return False  # aiohttp's words for a body cut short: a broken link
    seen: BaseException | None = exc
    for _ in range(4):  # aiohttp wraps the parser's error once or twice
        if seen is None:
            break
        if isinstance(seen, ContentLengthError) or "Not enough data" in str(seen):
            return False  # the body ended early (a length or a chunk not met): cut short
        if isinstance(seen, HttpProcessingError):
            return True
        seen = seen.__cause__ or seen.__context__
    return isinstance(exc, aiohttp.ClientPayloadError) and "decode" in str(exc)


def invalid_response(
    message: str, response: aiohttp.ClientResponse, body: bytes | None
) -> APIResponseValidationError:
    """The error for a 2xx answer whose body is not what the API answers (SPEC 1.6).

    Its excerpt is server text: whoever raises it scrubs it (:func:`scrubbed`).
    """
    return APIResponseValidationError(
        message,
        status=response.status,
        url=without_query(str(response.url)),
        body=excerpt(body) if body else None,
        request_id=response.headers.get("X-Request-Id"),
        headers=CIMultiDict(response.headers),
    )


def scrubbed(error: _E, secrets: Collection[str]) -> _E:
    """``error`` with every secret a call sent removed from its message and from the
    server text it carries (``body``, ``received``, ``headers``, ``request_id``): a proxy
    or a server may echo the request (its ``Authorization`` header) into what it answers."""
    if not secrets:
        return error
    error.args = tuple(_redact_value(arg, secrets) for arg in error.args)
    for name in ("body", "received", "request_id"):
        if hasattr(error, name):
            setattr(error, name, _redact_value(getattr(error, name), secrets))
    headers = getattr(error, "headers", None)
    if isinstance(headers, Mapping) and headers:
        error.headers = scrubbed_headers(headers, secrets)  # type: ignore[attr-defined]
    return error


def _decode_reason(exc: BaseException) -> str:
    """msgspec's reason, without its exception's name (its ``ValidationError`` reads like
    chatsdk's)."""
    if isinstance(exc, UnicodeDecodeError):
        return "bytes that are not UTF-8"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc) or type(exc).__name__


def _gave_up(error: _E, attempts: int, elapsed: float) -> _E:
    """``error``, saying how many attempts were made over how long."""
    if isinstance(error, APIStatusError):
        error.attempts, error.elapsed = attempts, elapsed
    if attempts > 1:
        error.args = (f"{error} (gave up after {attempts} attempts over {elapsed:.1f} s)",)
    return error


def _short(error: BaseException) -> str:
    if isinstance(error, APIStatusError):
        return f"status {error.status}"
    return type(error).__name__


def deadline_for(timeout: Timeout) -> float | None:
    """The ``loop.time()`` by which a call with this timeout must be done, or None."""
    if timeout.total is None:
        return None
    return asyncio.get_running_loop().time() + timeout.total


def earliest(deadline: float | None, other: float | None) -> float | None:
    """The earlier of two ``loop.time()`` limits (None: no limit)."""
    if deadline is None:
        return other
    if other is None:
        return deadline
    return min(deadline, other)


def read_timeout_reason(timeout: Timeout) -> str:
    return f"no bytes from the server for {timeout.read} s (read timeout)"


async def within_read(wait: Awaitable[_T], timeout: Timeout, until: float | None, doing: str) -> _T:
    """``wait`` (a wait for bytes from the server), ended by ``until`` (a ``loop.time()``;
    its ``TimeoutError`` as it comes) or by ``timeout.read``, whichever is first: the
    latter is an :class:`APITimeoutError` naming ``doing``. aiohttp's own read timer is
    not enough: it is not armed again after a 1xx answer, and it stops after a body its
    C parser cannot frame (which :func:`_fail_reader_on_framing_error` ends at once).
    One timer either way."""
    loop = asyncio.get_running_loop()
    read_by = None if timeout.read is None else loop.time() + timeout.read
    try:
        async with asyncio.timeout_at(earliest(until, read_by)):
            return await wait
    except TimeoutError:
        if (
            read_by is not None
            and loop.time() >= read_by
            and not (until is not None and until <= read_by)
        ):
            raise APITimeoutError(f"{doing}: {read_timeout_reason(timeout)}") from None
        raise


def _timeout_reason(
    exc: BaseException, timeout: Timeout, deadline: float | None, doing: str
) -> str:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return (
            f"no connection within the connect timeout ({timeout.connect} s): the server did "
            "not accept one, or every connection of the pool (max_connections) was in use"
        )
    if isinstance(exc, aiohttp.SocketTimeoutError | aiohttp.ServerTimeoutError):
        return read_timeout_reason(timeout)
    if _past(deadline):
        return f"the total timeout ({timeout.total} s) expired"
    # What idle bounds (Timeout): the gap between events, a whole JSON answer, the head.
    if doing == "reading the stream":
        return f"no event from the server for {timeout.idle} s (idle timeout; pings do not count)"
    if doing == "reading the answer":
        return f"the whole answer did not come within {timeout.idle} s (idle timeout)"
    return (
        f"no answer within {timeout.idle} s (idle timeout; the wait includes getting a "
        "connection, which a pool with every connection in use delays)"
    )


def _check_no_dot_segments(url: str) -> None:
    """Refuse a path with a ``.`` or ``..`` segment (also percent-encoded).

    yarl resolves them before sending, so ``continue_("..")`` would otherwise reach
    another endpoint (``/chat_sessions/../chat_results`` is ``/chat_results``).
    """
    for segment in urlsplit(url).path.split("/"):
        if unquote(segment) in (".", ".."):
            raise ValidationError(
                f"the request path {without_query(url)!r} has a '.' or '..' segment, which "
                "would send the request to another endpoint (is a chat_session_id '.' or '..'?)"
            )


def _past(deadline: float | None) -> bool:
    return deadline is not None and asyncio.get_running_loop().time() >= deadline


def _would_pass(deadline: float | None, delay: float) -> bool:
    return deadline is not None and asyncio.get_running_loop().time() + delay >= deadline


def _parser_words(text: str) -> str:
    """aiohttp's words for what it could not parse, on one line, without the internal
    status it gives every such error (``400, message:``), the server's bytes it quotes
    shown, not obeyed."""
    return printable(" ".join(re.sub(r"\b400, message:", "", text).split()), 300)


def _describe(exc: BaseException) -> str:
    """A short description of an aiohttp error that cannot contain a URL's query or headers."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, HttpProcessingError | aiohttp.ClientResponseError):
        # A parser's error (its status, 400, is aiohttp's, not the server's); a
        # ClientResponseError's own message would include the request URL.
        words = exc.message or type(exc).__name__
        if isinstance(exc, TransferEncodingError) and "chunk" not in words.lower():
            words = f"invalid chunked framing: {words}"
        return f"invalid response ({_parser_words(words)})"
    if isinstance(exc, aiohttp.ClientPayloadError):
        if _malformed(exc):
            return f"the response body could not be read ({_parser_words(str(exc))})"
        return "the response body was cut off"
    if isinstance(exc, aiohttp.ClientOSError):
        # A connection of the pool the server had closed, a reset: the OS's words.
        reason = exc.strerror or ""
        if not reason or "://" in reason:  # aiohttp's own words may hold the URL
            reason = os.strerror(exc.errno) if exc.errno else "an OS error"
        return f"the connection failed ({reason}; the server may have closed it)"
    return type(exc).__name__ + (f": {exc}" if str(exc) and "://" not in str(exc) else "")


async def read_capped(
    response: aiohttp.ClientResponse, cap: int, timeout: float = ERROR_BODY_TIMEOUT
) -> bytes:
    """Up to ``cap`` bytes of a body, for an error report, waiting at most ``timeout``
    seconds; a broken, unframable or slow read keeps what came."""
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while size < cap:
                data = await response.content.read(cap - size)
                if not data:
                    break
                parts.append(data)
                size += len(data)
    except (aiohttp.ClientError, HttpProcessingError, TimeoutError):
        pass
    return b"".join(parts)


async def read_at_most(
    response: aiohttp.ClientResponse,
    cap: int,
    *,
    show: bool = True,
    limit: int | None = None,
    timeout: Timeout | None = None,
    doing: str = "reading the answer",
) -> bytes:
    """The whole body; :class:`APIResponseValidationError` once it passes ``cap`` bytes
    (nothing more is read). ``limit``: the size the error names, when ``cap`` is what is
    left of it after bytes already read. Each read waits at most ``timeout.read``
    (:class:`APITimeoutError` naming ``doing``), as :func:`within_read` says."""
    parts: list[bytes] = []
    size = 0
    while True:
        # content.read(n) returns what is buffered (up to n), not n bytes: loop to EOF.
        wait = response.content.read(cap + 1 - size)
        data = await (wait if timeout is None else within_read(wait, timeout, None, doing))
        if not data:
            return b"".join(parts)
        parts.append(data)
        size += len(data)
        if size > cap:
            shown = parts[0] if show else None
            size_limit = cap if limit is None else limit
            raise invalid_response(f"the answer is larger than {size_limit} bytes", response, shown)


async def _status_error(
    response: aiohttp.ClientResponse,
    doing: str,
    secrets: Collection[str] = (),
    wait: float = ERROR_BODY_TIMEOUT,
) -> APIStatusError:
    """The typed error for an error response, carrying its parsed body (read up to a cap)."""
    raw = await read_capped(response, MAX_ERROR_BODY, wait)
    body: Any = None
    if raw:
        # A JSON object or array whatever the label (proxies relabel error bodies
        # text/plain); anything else is text ("404", "Not Found").
        try:
            body = msgspec.json.decode(raw)
        except DECODE_ERRORS:
            body = None
        if not isinstance(body, dict | list | str):
            body = raw.decode("utf-8", "replace")
    body = _redact_value(body, secrets)
    cls = status_error_class(response.status)
    said = message_of(body)
    location = response.headers.get("Location")
    if 300 <= response.status < 400 and location is not None:
        # Never followed: the credentials would go wherever the server points.
        said = (
            f"a redirect to {escaped(location)}, not followed (chatsdk sends credentials "
            "only where base_url says: point it there)"
        )
    elif 300 <= response.status < 400:  # 304 Not Modified: chatsdk asked for no such thing
        said = f"a {response.status} answer with no Location: nothing to follow, and no answer"
    return cls(
        redact(f"{escaped(response.reason or 'error')} from {doing}: {said}", secrets),
        status=response.status,
        body=body,
        request_id=redact(response.headers.get("X-Request-Id") or "", secrets) or None,
        headers=scrubbed_headers(response.headers, secrets),
    )


def scrubbed_headers(headers: Mapping[str, str], secrets: Collection[str]) -> CIMultiDict[str]:
    """A copy of response headers with every secret a call sent masked (:func:`redact`):
    a proxy may echo the request's ``Authorization`` into one."""
    return CIMultiDict(
        (redact(str(k), secrets), redact(str(v), secrets)) for k, v in headers.items()
    )


# A copy of a secret cut short (a server quoting a long key's first bytes) is as bad as
# the whole: this many of its first characters, or more, are redacted too.
_SECRET_PREFIX: Final = 8


def redact(text: str, secrets: Collection[str]) -> str:
    """``text`` with every secret replaced by ``***`` (longest first, so none half-shows),
    and every copy of one's start that a server cut short (at least its first
    ``_SECRET_PREFIX`` characters)."""
    ordered = sorted(secrets, key=len, reverse=True)
    for secret in ordered:
        if secret in text:
            text = text.replace(secret, "***")
    # Then the cut copies, once no whole copy is left: masking a longer form's start
    # first (a key's %XX-escaped form) would leave the rest of a plain copy showing.
    for secret in ordered:
        start = secret[:_SECRET_PREFIX]
        if len(start) == _SECRET_PREFIX and start in text:
            text = _without_cut_copies(text, secret)
    return text


def _without_cut_copies(text: str, secret: str) -> str:
    # Each copy of secret's start in text, as far as it follows secret, made ***.
    pieces, pos = [], 0
    while (at := text.find(secret[:_SECRET_PREFIX], pos)) >= 0:
        copy = text[at : at + len(secret)]
        differ = (i for i, (a, b) in enumerate(zip(copy, secret, strict=False)) if a != b)
        matched = next(differ, len(copy))
        pieces += [text[pos:at], "***"]
        pos = at + matched
    return "".join([*pieces, text[pos:]])


def _redact_value(value: Any, secrets: Collection[str]) -> Any:
    """A decoded JSON value with :func:`_redact` applied to every string in it."""
    if not secrets:
        return value
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [_redact_value(item, secrets) for item in value]
    if isinstance(value, dict):
        return {redact(str(k), secrets): _redact_value(v, secrets) for k, v in value.items()}
    return value


def _shows_secret(exc: BaseException, secrets: Collection[str]) -> bool:
    """Whether ``exc`` or anything chained to it shows a secret in its str or repr."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        try:
            text = f"{current!s}\n{current!r}"
        except Exception:  # a broken __str__ cannot be shown either
            return True
        if any(secret in text for secret in secrets):
            return True
        current = current.__cause__ or current.__context__
    return False


def _safe_cause(exc: BaseException, secrets: Collection[str]) -> BaseException | None:
    """``exc`` to chain as the cause of a chatsdk error, or a copy that hides the request.

    aiohttp's ClientResponseError (raised for a garbage status line or headers) shows
    the request URL in its str (a revoke call's token is in the query) and the request
    headers (the API key) in its repr; it is replaced by a copy without either. Any other
    exception that would show a secret is not chained at all (None).
    """
    if isinstance(exc, aiohttp.ClientResponseError):
        info = exc.request_info
        try:
            # An empty header mapping of aiohttp's own types (multidict's, which chatsdk
            # does not depend on by name).
            no_headers = type(info.headers)(type(info.headers.copy())())
            clean_info = aiohttp.RequestInfo(
                info.url.with_query(None).with_fragment(None).with_user(None),
                info.method,
                no_headers,
                info.real_url.with_query(None).with_fragment(None).with_user(None),
            )
            clean = type(exc)(
                clean_info,
                (),
                status=exc.status,
                message=redact(exc.message, secrets),
                # A proxy's 407 may echo the request's Proxy-Authorization back.
                headers=None
                if exc.headers is None
                else CIMultiDict((k, redact(v, secrets)) for k, v in exc.headers.items()),
            )
        except Exception:  # a subclass with another signature: chain nothing
            return None
        parse_error = exc.__cause__  # what was wrong with the server's bytes
        if parse_error is not None and not _shows_secret(parse_error, secrets):
            clean.__cause__ = parse_error
        return clean.with_traceback(exc.__traceback__)
    if _shows_secret(exc, secrets):
        return None
    return exc


def message_of(body: Any, default: str = "no details") -> str:
    """The human message in an error body: in the first of its :func:`error_layers` that
    has one, a string ``error`` (``{"error": "..."}``), ServiceError's or OpenAI's
    ``message``, or a 422 ``detail`` (a string, or ``loc``/``msg`` items); or the body
    itself when it is text."""
    for layer in error_layers(body):
        error, message, detail = layer.get("error"), layer.get("message"), layer.get("detail")
        if isinstance(error, str) and error.strip():
            return printable(error, 300)
        if isinstance(message, str):
            return printable(message, 300)
        if isinstance(detail, str):
            return printable(detail, 300)
        if isinstance(detail, list):
            parts = [
                f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg', '')}"
                for item in detail[:5]
                if isinstance(item, dict)
            ]
            return printable("; ".join(parts), 300) or "invalid request"
    if isinstance(body, str) and body.strip():
        return printable(body.strip(), 300)
    return default
