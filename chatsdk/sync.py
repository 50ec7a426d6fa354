"""SyncChatClient: the ChatClient API for plain synchronous code.

The async client runs on an event loop of its own, in a background thread started with
anyio's blocking portal; every sync call hops into that loop and waits for the answer.
The caller needs no event loop, and must not be running one: blocking inside a running
loop would freeze it, so that is refused with a :class:`~chatsdk.ValidationError`
pointing at the async :class:`~chatsdk.ChatClient`.

>>> with SyncChatClient(api_key="...", project="demo", base_url="http://127.0.0.1:8080") as client:
...     with client.chat.create(integration_id="docs", messages="How do I retry?") as stream:
...         for text in stream.text_stream:
...             print(text, end="")
...         print(stream.final_result().citations)
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, suppress
from functools import partial
from types import TracebackType
from typing import Any, TypeAlias, TypeVar

import anyio.to_thread
from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._client import ChatClient
from ._config import RetryPolicy, Timeout
from ._streaming import ChatStream
from .errors import APIConnectionError, ValidationError
from .models import ChatEvent, ChatResult, ChatSessionToken, Message, MessageChunk

__all__ = ["SyncChatClient", "SyncChatStream", "SyncTokenProvider"]

T = TypeVar("T")

#: What ``SyncChatClient(session_token=...)`` accepts besides a string: a callable
#: (plain or async) returning a fresh client token. A plain one runs in a worker thread,
#: so it may block, e.g. on an HTTP call to the backend that mints tokens.
SyncTokenProvider: TypeAlias = Callable[
    [], "str | ChatSessionToken | Awaitable[str | ChatSessionToken]"
]

_IN_LOOP_MESSAGE = (
    "SyncChatClient cannot be used from inside a running event loop (it would block the "
    "loop); use the async chatsdk.ChatClient there, with await and async for"
)


def _refuse_running_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise ValidationError(_IN_LOOP_MESSAGE)


class _Done:
    """Marks the end of a stream across the thread hop (StopAsyncIteration stays inside)."""


_DONE = _Done()


async def _next_event(stream: ChatStream) -> ChatEvent | _Done:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return _DONE


class _Runner:
    """The background event loop: runs coroutines for the sync facade, then shuts down."""

    def __init__(self) -> None:
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal(
            "asyncio", name="chatsdk-sync"
        )
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self.closed = False
        self._lock = threading.Lock()
        self._loop_thread = self.portal.call(threading.get_ident)
        self.streams: weakref.WeakSet[ChatStream] = weakref.WeakSet()
        """The async streams handed out and not yet collected; closed with the client."""

    def call(self, func: Callable[[], Awaitable[T]]) -> T:
        """Run ``func()`` in the loop and wait for its result (or exception).

        If the caller is interrupted while waiting (Ctrl-C), the task is cancelled
        rather than left running behind its back.
        """
        _refuse_running_loop()
        if self.closed:
            raise APIConnectionError("the client is closed")
        try:
            future: Future[T] = self.portal.start_task_soon(func)
        except RuntimeError:  # the portal stopped between the check and here
            raise APIConnectionError("the client is closed") from None
        try:
            return future.result()
        except BaseException:
            future.cancel()  # a no-op when the task has already finished
            raise

    def call_soon(self, func: Callable[[], Awaitable[object]]) -> None:
        """Start ``func()`` in the loop without waiting; for cleanup, so errors are ignored."""
        if self.closed:
            return
        # RuntimeError: the portal stopped meanwhile, or this runs in the loop thread
        # itself (a garbage collection there); ChatStream's own finalizer closes the socket.
        with suppress(RuntimeError):
            self.portal.start_task_soon(func)

    def shutdown(self, last: Callable[[], Awaitable[object]] | None = None) -> None:
        """Run ``last()`` (best effort), cancel what is left and stop the loop thread."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        if threading.get_ident() == self._loop_thread:
            # A garbage collection inside the loop dropped the last handle: the loop
            # cannot wait for itself, so another thread does the waiting.
            threading.Thread(target=self._stop, args=(last,), daemon=True).start()
        else:
            self._stop(last)

    def _stop(self, last: Callable[[], Awaitable[object]] | None) -> None:
        try:
            if last is not None:
                with suppress(Exception):  # closing must not stop halfway
                    self.portal.call(last)
            with suppress(RuntimeError):  # already stopped
                self.portal.call(self.portal.stop, True)
        finally:
            self._portal_cm.__exit__(None, None, None)


class _Handle:
    """Held by a client, its ``tokens``/``chat`` and every stream it handed out.

    When the last holder is gone (or :meth:`SyncChatClient.close` runs), the streams and
    the connection pool are closed and the loop thread stops. Nothing it refers to refers
    back to a holder, so plain reference counting finalizes it, in the thread that lets
    go last, rather than whichever thread a cyclic garbage collection happens to run in.
    """

    __slots__ = ("__weakref__", "close")

    def __init__(self, runner: _Runner, client: ChatClient):
        self.close = weakref.finalize(
            self, runner.shutdown, partial(_close_all, client, runner.streams)
        )


class SyncChatStream:
    """The answer to one chat call, for synchronous code.

    Iterate it for events (:class:`~chatsdk.MessageChunk`, :class:`~chatsdk.RecordsCited`,
    :class:`~chatsdk.UnknownEvent`), or use :attr:`text_stream` for the text alone, and
    :meth:`final_result` for the whole answer. The request is sent on first use. Leaving
    early (``break`` and dropping the stream, an exception, :meth:`close`, the end of a
    ``with`` block) releases the connection.

    >>> with client.chat.create(integration_id="docs", messages="Hi") as stream:
    ...     for text in stream.text_stream:
    ...         print(text, end="")
    """

    def __init__(self, runner: _Runner, stream: ChatStream, handle: _Handle):
        self._runner = runner
        self._stream = stream
        self._closed = False
        # Keeps the loop alive while a stream of it is in use.
        self._handle = handle
        runner.streams.add(stream)

    @property
    def chat_session_id(self) -> str | None:
        """The chat session this answer belongs to, once the server has said it."""
        return self._stream.chat_session_id

    @property
    def resumes(self) -> int:
        """How many times this stream reconnected after a dropped connection."""
        return self._stream.resumes

    @property
    def text_stream(self) -> Iterator[str]:
        """The answer's text pieces as they arrive (non-empty ``content_chunk`` values)."""
        return self._texts()

    def _texts(self) -> Iterator[str]:
        for event in self:
            if type(event) is MessageChunk and event.content_chunk:
                yield event.content_chunk

    def __iter__(self) -> Iterator[ChatEvent]:
        return self

    def __next__(self) -> ChatEvent:
        if self._closed:
            raise StopIteration
        event = self._runner.call(partial(_next_event, self._stream))
        if isinstance(event, _Done):
            raise StopIteration
        return event

    def final_result(self) -> ChatResult:
        """Read the rest of the stream and return the whole answer."""
        return self._runner.call(self._stream.final_result)

    def close(self) -> None:
        """Stop reading and release the connection. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        if not self._runner.closed:
            self._runner.call(self._stream.aclose)

    def __enter__(self) -> SyncChatStream:
        # Sends the request now, so that an error status surfaces at the `with`.
        self._runner.call(self._stream.__aenter__)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # `break` out of a for loop and the stream dropped: close it on its own loop
        # (aiohttp objects are not thread-safe), without blocking whoever dropped it.
        if not getattr(self, "_closed", True):
            self._closed = True
            self._runner.call_soon(self._stream.aclose)

    def __repr__(self) -> str:
        return f"<SyncChatStream of {self._stream!r}>"


class SyncTokens:
    """Token operations; they need the secret API key and the project (server side only)."""

    def __init__(self, runner: _Runner, client: ChatClient, handle: _Handle):
        self._runner = runner
        self._client = client
        self._handle = handle

    def create(
        self,
        *,
        embed_origin: str,
        expires_after: int = 3600,
        user_identifier: str | None = None,
        timeout: Timeout | float | None = None,
        retries: RetryPolicy | int | None = None,
    ) -> ChatSessionToken:
        """Mint a client token for pages served from ``embed_origin``.

        >>> tok = client.tokens.create(embed_origin="https://docs.example.com", expires_after=900)
        """
        return self._runner.call(
            partial(
                self._client.tokens.create,
                embed_origin=embed_origin,
                expires_after=expires_after,
                user_identifier=user_identifier,
                timeout=timeout,
                retries=retries,
            )
        )

    def revoke(
        self,
        token: str | ChatSessionToken,
        *,
        timeout: Timeout | float | None = None,
        retries: RetryPolicy | int | None = None,
    ) -> None:
        """Revoke a client token; revoking one twice is not an error."""
        self._runner.call(
            partial(self._client.tokens.revoke, token, timeout=timeout, retries=retries)
        )


class SyncChat:
    """Chat operations; authenticated by the API key or by a client token."""

    def __init__(self, runner: _Runner, client: ChatClient, handle: _Handle):
        self._runner = runner
        self._client = client
        self._handle = handle

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
    ) -> SyncChatStream:
        """Start a chat session; returns its answer as a :class:`SyncChatStream`.

        Arguments are checked at once; the request is sent on first use of the stream.
        """
        _refuse_running_loop()
        # Building the stream only validates and encodes; nothing touches the loop yet.
        async_stream = self._client.chat.create(
            integration_id=integration_id,
            messages=messages,
            guidance=guidance,
            context=context,
            tags=tags,
            chat_mode=chat_mode,
            stream=stream,
            timeout=timeout,
            retries=retries,
        )
        return SyncChatStream(self._runner, async_stream, self._handle)

    def continue_(
        self,
        chat_session_id: str,
        *,
        integration_id: str,
        message: Message | Mapping[str, Any] | str,
        stream: bool = True,
        timeout: Timeout | float | None = None,
        retries: RetryPolicy | int | None = None,
    ) -> SyncChatStream:
        """Ask the next question in an existing session; the server keeps the history."""
        _refuse_running_loop()
        async_stream = self._client.chat.continue_(
            chat_session_id,
            integration_id=integration_id,
            message=message,
            stream=stream,
            timeout=timeout,
            retries=retries,
        )
        return SyncChatStream(self._runner, async_stream, self._handle)


def _async_provider(
    provider: SyncTokenProvider,
) -> Callable[[], Awaitable[str | ChatSessionToken]]:
    """An async token provider for ChatClient from a plain or async callable."""

    async def fetch() -> str | ChatSessionToken:
        # A plain callable may block (it often asks a backend over HTTP): run it in a
        # worker thread. An async one only builds its coroutine there; it runs here.
        result = await anyio.to_thread.run_sync(provider)
        if inspect.isawaitable(result):
            result = await result
        return result

    return fetch


class SyncChatClient:
    """The synchronous client: the same API as :class:`~chatsdk.ChatClient`, no ``await``.

    Takes the same arguments as ``ChatClient`` (read from the same ``CHATSDK_*``
    environment variables when unset), except ``http_session``; ``session_token`` may
    also be a plain callable returning a fresh token. Use it as a context manager, or
    call :meth:`close` when done.

    Raises :class:`~chatsdk.ValidationError` when built or called inside a running event
    loop: use the async ``ChatClient`` there.

    >>> with SyncChatClient(api_key="...", project="demo", base_url=url) as client:
    ...     tok = client.tokens.create(embed_origin="https://docs.example.com")
    ...     for event in client.chat.create(integration_id="docs", messages="Hi"):
    ...         print(event)
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        project: str | None = None,
        session_token: str | SyncTokenProvider | None = None,
        base_url: str | None = None,
        tokens_base_url: str | None = None,
        chat_base_url: str | None = None,
        origin: str | None = None,
        timeout: Timeout | float | None = None,
        retries: RetryPolicy | int | None = None,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
    ):
        _refuse_running_loop()
        token = _async_provider(session_token) if callable(session_token) else session_token
        # Built (and its arguments checked) here, before a thread is started for it; its
        # connection pool is created lazily, inside the loop, on the first call.
        client = ChatClient(
            api_key,
            project=project,
            session_token=token,
            base_url=base_url,
            tokens_base_url=tokens_base_url,
            chat_base_url=chat_base_url,
            origin=origin,
            timeout=timeout,
            retries=retries,
            headers=headers,
            max_connections=max_connections,
        )
        runner = _Runner()
        self._runner = runner
        self._client = client
        # A client that is never closed still stops its thread once it and everything it
        # handed out are collected, or at interpreter exit.
        self._handle = _Handle(runner, client)
        self.tokens = SyncTokens(runner, client, self._handle)
        """Mint and revoke client tokens (``tokens.create``, ``tokens.revoke``)."""
        self.chat = SyncChat(runner, client, self._handle)
        """Stream chat answers (``chat.create``, ``chat.continue_``)."""

    @property
    def base_url(self) -> str:
        """The chat API's base URL."""
        return self._client.base_url

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._runner.closed

    def close(self) -> None:
        """Close open streams and the connection pool, and stop the background loop."""
        _refuse_running_loop()
        self._handle.close()

    def __enter__(self) -> SyncChatClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        inner = repr(self._client).removeprefix("<ChatClient ").removesuffix(">")
        state = " closed" if self.closed else ""
        return f"<SyncChatClient {inner}{state}>"


async def _close_all(client: ChatClient, streams: weakref.WeakSet[ChatStream]) -> None:
    for stream in list(streams):
        await stream.aclose()
    await client.aclose()
