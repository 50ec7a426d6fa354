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
import atexit
import inspect
import os
import selectors
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import CancelledError, Future
from contextlib import contextmanager, suppress
from functools import partial
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeAlias, TypeVar

import anyio
import anyio.to_thread
from anyio.from_thread import BlockingPortal
from multidict import CIMultiDictProxy

from ._client import ChatClient
from ._config import Settings
from ._streaming import CLOSED_BY_CLIENT, EventStream
from .chat import Chat
from .completions import Completions
from .errors import APIConnectionError, ChatSDKError, StreamError, ValidationError
from .models import (
    ChatCompletionResult,
    ChatEvent,
    ChatResult,
    ChatSessionToken,
    CompletionEvent,
)
from .tokens import Tokens

__all__ = ["SyncChatClient", "SyncChatStream", "SyncTokenProvider"]

T = TypeVar("T")
EventT = TypeVar("EventT")
ResultT = TypeVar("ResultT")
P = ParamSpec("P")
SelfT = TypeVar("SelfT")


def _arguments_of(
    method: Callable[Concatenate[Any, P], object],
) -> Callable[[Callable[Concatenate[SelfT, ...], T]], Callable[Concatenate[SelfT, P], T]]:
    """Gives a sync method the parameters of the async ``method`` it forwards to, for
    type checkers and for ``help()``: one list of parameters, kept in one place."""

    def decorate(
        forwarder: Callable[Concatenate[SelfT, ...], T],
    ) -> Callable[Concatenate[SelfT, P], T]:
        own = inspect.signature(forwarder)
        forwarder.__signature__ = inspect.signature(method).replace(  # type: ignore[attr-defined]
            return_annotation=own.return_annotation
        )
        return forwarder

    return decorate


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


_FORKED_MESSAGE = (
    "this SyncChatClient was made before os.fork(), and its background thread does not "
    "survive a fork (gunicorn --preload, multiprocessing, Celery's prefork pool): make a "
    "new client in the child process"
)


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _refuse_running_loop() -> None:
    if _in_running_loop():
        raise ValidationError(_IN_LOOP_MESSAGE)


_RUNNERS: weakref.WeakSet[_Runner] = weakref.WeakSet()


def _forget_runners() -> None:
    # In a forked child: every runner's loop thread stayed in the parent. Its calls are
    # refused (they would wait for ever), and closing it must not wait for it either.
    for runner in list(_RUNNERS):
        runner.forked = runner.closed = True
        # Its aiohttp objects, collected at the child's exit, would report themselves
        # unclosed through this loop's handler: noise in every prefork worker's stderr.
        runner.loop.set_exception_handler(lambda loop, context: None)
        # The loop's epoll set is the parent's too (a fork shares it): the child closing
        # its copies of the sockets (their finalizers, at its exit) would take them out
        # of the parent's set, whose reads would then never wake. A fresh selector of the
        # child's own takes those removals instead.
        selector = getattr(runner.loop, "_selector", None)
        if isinstance(selector, selectors.BaseSelector):
            with suppress(Exception):
                runner.loop._selector = type(selector)()  # type: ignore[attr-defined]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_runners)


def _note_exit() -> None:
    # Run at interpreter exit, just before the clients left open are closed (see _Handle).
    for runner in list(_RUNNERS):
        runner.exiting = True


@contextmanager
def _exit_at_exit(runner: _Runner) -> Iterator[None]:
    """Around a call: when the interpreter exit closed the client under a thread still
    using it (a daemon thread: Python joins the others before its exit functions run),
    that thread gets ``SystemExit``, which ends it silently as the interpreter will,
    rather than an error whose traceback ``threading`` would print at every exit."""
    try:
        yield
    except ChatSDKError as exc:
        if runner.exiting and threading.current_thread() is not threading.main_thread():
            raise SystemExit("the interpreter is exiting: chatsdk closed the client") from exc
        raise


class _Done:
    """Marks the end of a stream across the thread hop (StopAsyncIteration stays inside)."""


_DONE = _Done()


async def _next_event(stream: EventStream[EventT, Any]) -> EventT | _Done:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return _DONE


class _Runner:
    """The background event loop: runs coroutines for the sync facade, then shuts down."""

    def __init__(self) -> None:
        # The loop thread is ours, not start_blocking_portal's: a context manager that
        # a forked child's garbage collection would close, waiting for a thread that
        # stayed in the parent.
        ready: Future[tuple[BlockingPortal, asyncio.AbstractEventLoop]] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="chatsdk-sync", daemon=True
        )
        self._thread.start()
        self.portal, self.loop = ready.result()
        self.closed = False
        self.forked = False  # this is a child process's copy: the loop thread is gone
        self.exiting = False  # the interpreter is exiting: see _exit_at_exit
        self._lock = threading.Lock()
        self._loop_thread = self.portal.call(threading.get_ident)
        self.streams: weakref.WeakSet[EventStream[Any, Any]] = weakref.WeakSet()
        """The async streams handed out and not yet collected; closed with the client."""
        _RUNNERS.add(self)

    @staticmethod
    def _run(ready: Future[tuple[BlockingPortal, asyncio.AbstractEventLoop]]) -> None:
        async def serve() -> None:
            async with BlockingPortal() as portal:
                ready.set_result((portal, asyncio.get_running_loop()))
                await portal.sleep_until_stopped()

        try:
            anyio.run(serve, backend="asyncio")
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    def call(self, func: Callable[[], Awaitable[T]]) -> T:
        """Run ``func()`` in the loop and wait for its result (or exception).

        If the caller is interrupted while waiting (Ctrl-C), the task is cancelled
        rather than left running behind its back.
        """
        with _exit_at_exit(self):
            return self._call(func)

    def _call(self, func: Callable[[], Awaitable[T]]) -> T:
        _refuse_running_loop()
        if self.forked:
            raise ValidationError(_FORKED_MESSAGE)
        if self.closed:
            raise ValidationError("this client is closed: create a new one")
        try:
            future: Future[T] = self.portal.start_task_soon(func)
        except RuntimeError:  # the portal stopped between the check and here
            raise ValidationError("this client is closed: create a new one") from None
        try:
            return future.result()
        except CancelledError:
            if self.closed:  # the client was closed from another thread meanwhile
                raise APIConnectionError("the client was closed during the call") from None
            raise
        except BaseException:
            future.cancel()  # a no-op when the task has already finished
            raise

    def call_soon(self, func: Callable[[], Awaitable[object]]) -> None:
        """Start ``func()`` in the loop without waiting; for cleanup, so errors are ignored."""
        if self.closed:
            return
        # RuntimeError: the portal stopped meanwhile, or this runs in the loop thread
        # itself (a garbage collection there); the stream closes its own socket.
        with suppress(RuntimeError):
            self.portal.start_task_soon(func)

    def shutdown(self, last: Callable[[], Awaitable[object]] | None = None) -> None:
        """Run ``last()`` (best effort), cancel what is left and stop the loop thread."""
        with self._lock:
            if self.closed:
                return
            # Held until ``last`` has closed them on the loop: a reader told of the close
            # may drop its stream first, and its connection must close in the loop's
            # thread (aiohttp's objects are not thread-safe), not in a finalizer elsewhere.
            held = list(self.streams)
            self.closed = True
        if threading.get_ident() == self._loop_thread or _in_running_loop():
            # A garbage collection inside the loop dropped the last handle (the loop
            # cannot wait for itself), or an event loop runs here (an async app closing
            # it at shutdown), which must not block: another thread does the waiting.
            threading.Thread(target=self._stop, args=(last, held), daemon=True).start()
        else:
            self._stop(last, held)

    def _stop(
        self, last: Callable[[], Awaitable[object]] | None, held: list[EventStream[Any, Any]]
    ) -> None:
        try:
            if last is not None:
                with suppress(Exception):  # closing must not stop halfway
                    self.portal.call(last)
            with suppress(RuntimeError):  # already stopped
                self.portal.call(self.portal.stop, True)
        finally:
            self._thread.join()
            held.clear()


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
        # Exit functions run last registered first: registered again after the finalizer
        # (whose exit function weakref registers once), _note_exit runs before it.
        atexit.unregister(_note_exit)
        atexit.register(_note_exit)


class SyncChatStream(Generic[EventT, ResultT]):
    """The answer to one chat call, for synchronous code (either chat wire).

    Iterate it for the wire's events, use :attr:`text_stream` for the text alone, and
    :meth:`final_result` for the whole answer. The request is sent on first use.
    Leaving early (``break`` and dropping the stream, an exception, :meth:`close`, the
    end of a ``with`` block) releases the connection.

    >>> with client.chat.create(integration_id="docs", messages="Hi") as stream:
    ...     for text in stream.text_stream:
    ...         print(text, end="")
    """

    def __init__(self, runner: _Runner, stream: EventStream[EventT, ResultT], handle: _Handle):
        self._runner = runner
        self._stream = stream
        self._closed = False
        self._loop_left = False  # closed by leaving a for loop early
        self._reader: int | None = None  # the thread whose for loop is under way
        # Keeps the loop alive while a stream of it is in use.
        self._handle = handle
        runner.streams.add(stream)

    @property
    def chat_session_id(self) -> str | None:
        """The ``chat_results`` session this answer belongs to (None on Chat Completions)."""
        value = getattr(self._stream, "chat_session_id", None)
        return value if isinstance(value, str) else None

    @property
    def resumes(self) -> int:
        """How many times this stream reconnected after a dropped connection."""
        return self._stream.resumes

    @property
    def replays_dropped(self) -> int:
        """Events a resumed connection sent again, not delivered twice."""
        return self._stream.replays_dropped

    @property
    def headers(self) -> CIMultiDictProxy[str] | None:
        """The answer's HTTP response headers, secrets masked (``None`` until it started):
        see :attr:`chatsdk.ChatStream.headers`."""
        return self._stream.headers

    @property
    def request_id(self) -> str | None:
        """The server's ``X-Request-Id`` for this answer (``None`` before or without one)."""
        return self._stream.request_id

    @property
    def text_stream(self) -> Iterator[str]:
        """The answer's text pieces as they arrive (each a non-empty ``str``)."""
        return self._texts()

    def _texts(self) -> Iterator[str]:
        text = self._stream._wire.text
        for event in self:
            piece = text(event)
            if piece:
                yield piece

    def __iter__(self) -> Iterator[EventT]:
        # A generator: `break` drops it, and CPython runs its finally at once.
        me = threading.get_ident()
        if self._reader not in (None, me):
            raise ValidationError(
                "this stream is already being read by another thread (a loop over it "
                "there is not closed): a stream is read by one task at a time"
            )
        self._reader = me
        refused = False
        try:
            while True:
                try:
                    event = self.__next__()
                except StopIteration:
                    return
                except ValidationError:
                    # Another thread is reading the stream (or the client is closed):
                    # this loop is refused, and must not close that reader's stream.
                    refused = True
                    raise
                yield event
        finally:
            self._reader = None
            if not self._stream._complete and not refused:
                self._loop_left |= not self._closed
                self.close()

    def __next__(self) -> EventT:
        if self._closed:
            # Closed before its end (a loop left early, close()): a StreamError, as the
            # async stream gives; a loop never ends quietly on a part of the answer.
            if self._loop_left and self._stream._error is None:
                raise StreamError(
                    "the stream was closed before its end when a loop over it was left "
                    "(break, an exception, next(iter(stream))): its answer is incomplete; "
                    "next(stream) takes one event and leaves the stream open"
                )
            self._stream._check_complete()
            raise StopIteration
        if self._runner.closed and self._stream._complete:
            # Whole before the client closed: what is left was read already, no loop needed.
            for left in self._stream._pending:
                return left
            raise StopIteration
        event = self._call(partial(_next_event, self._stream))
        if isinstance(event, _Done):
            raise StopIteration
        return event

    def final_result(self) -> ResultT:
        """Read the rest of the stream and return the whole answer."""
        if self._runner.closed and self._stream._complete:
            return self._stream._wire.result()  # as the async stream gives it then
        return self._call(self._stream.final_result)

    def _call(self, func: Callable[[], Awaitable[T]]) -> T:
        with _exit_at_exit(self._runner):
            if self._runner.closed:
                self._raise_if_closed_under_way()
            try:
                return self._runner.call(func)
            except (APIConnectionError, ValidationError):
                if self._runner.closed:  # the client was closed meanwhile
                    self._raise_if_closed_under_way()
                raise

    def _raise_if_closed_under_way(self) -> None:
        # The client is closed: a stream it closed while under way says so, as the async
        # one does (the loop may not have told it yet); one not begun fails as any call.
        stream = self._stream
        if isinstance(stream._error, StreamError):
            raise stream._error from None
        if stream._started and not stream._complete:
            raise StreamError(CLOSED_BY_CLIENT) from None

    def close(self) -> None:
        """Stop reading and release the connection. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._runner.closed:
            return
        if _in_running_loop():
            # An event loop runs here (an iterator dropped in an async app's loop
            # thread): closed on the client's loop without blocking this one.
            self._runner.call_soon(self._stream.aclose)
        else:
            self._runner.call(self._stream.aclose)

    def __enter__(self) -> SyncChatStream[EventT, ResultT]:
        # Sends the request now, so that an error status surfaces at the `with`.
        self._call(self._stream.__aenter__)
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


class _SyncResource:
    def __init__(self, runner: _Runner, client: ChatClient, handle: _Handle):
        self._runner = runner
        self._client = client
        self._handle = handle

    def _wrap(self, stream: EventStream[EventT, ResultT]) -> SyncChatStream[EventT, ResultT]:
        return SyncChatStream(self._runner, stream, self._handle)


class SyncTokens(_SyncResource):
    """Token operations (``ChatClient.tokens``, without ``await``); same arguments."""

    @_arguments_of(Tokens.create)
    def create(self, **arguments: Any) -> ChatSessionToken:
        """Mint a client token: see :meth:`chatsdk.tokens.Tokens.create`.

        >>> tok = client.tokens.create(embed_origin="https://docs.example.com", expires_after=900)
        """
        return self._runner.call(partial(self._client.tokens.create, **arguments))

    @_arguments_of(Tokens.revoke)
    def revoke(self, token: str | ChatSessionToken, **arguments: Any) -> None:
        """Revoke a client token: see :meth:`chatsdk.tokens.Tokens.revoke`."""
        self._runner.call(partial(self._client.tokens.revoke, token, **arguments))


class SyncCompletions(_SyncResource):
    """``client.chat.completions`` without ``await``."""

    @_arguments_of(Completions.create)
    def create(self, **arguments: Any) -> SyncChatStream[CompletionEvent, ChatCompletionResult]:
        """Ask for a chat completion: see :meth:`chatsdk.completions.Completions.create`.

        Arguments are checked at once; the request is sent on first use of the stream.
        """
        _refuse_running_loop()
        return self._wrap(self._client.chat.completions.create(**arguments))


class SyncChat(_SyncResource):
    """Chat operations (``ChatClient.chat``, without ``await``); same arguments."""

    def __init__(self, runner: _Runner, client: ChatClient, handle: _Handle):
        super().__init__(runner, client, handle)
        self.completions = SyncCompletions(runner, client, handle)
        """Chat Completions (``chat.completions.create``)."""

    @_arguments_of(Chat.create)
    def create(self, **arguments: Any) -> SyncChatStream[ChatEvent, ChatResult]:
        """Start a chat session: see :meth:`chatsdk.chat.Chat.create`.

        Arguments are checked at once; the request is sent on first use of the stream.
        """
        _refuse_running_loop()
        # Building the stream only validates and encodes; nothing touches the loop yet.
        return self._wrap(self._client.chat.create(**arguments))

    @_arguments_of(Chat.continue_)
    def continue_(
        self, chat_session_id: str, **arguments: Any
    ) -> SyncChatStream[ChatEvent, ChatResult]:
        """Ask the next question in a session: see :meth:`chatsdk.chat.Chat.continue_`."""
        _refuse_running_loop()
        return self._wrap(self._client.chat.continue_(chat_session_id, **arguments))


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

    Takes the same arguments as :class:`~chatsdk.ChatClient` (read from the same
    ``CHATSDK_*`` environment variables when unset), except ``http_session``; a plain
    ``session_token`` callable runs in a worker thread, so it may block. Use it as a context
    manager, or call :meth:`close` when done.

    Raises :class:`~chatsdk.ValidationError` when built or called inside a running event
    loop: use the async ``ChatClient`` there.

    >>> with SyncChatClient(api_key="...", project="demo", base_url=url) as client:
    ...     tok = client.tokens.create(embed_origin="https://docs.example.com")
    ...     for event in client.chat.create(integration_id="docs", messages="Hi"):
    ...         print(event)
    """

    @_arguments_of(ChatClient.__init__)
    def __init__(
        self,
        api_key: str | None = None,
        *,
        session_token: str | SyncTokenProvider | None = None,
        **settings: Any,
    ) -> None:
        # Built anywhere, even where an event loop runs (a module imported in a notebook);
        # only the calls, which block, are refused there.
        token = _async_provider(session_token) if callable(session_token) else session_token
        if "http_session" in settings:
            raise ValidationError("SyncChatClient makes its own connection pool: no http_session")
        # Built (and its arguments checked) here, before a thread is started for it; its
        # connection pool is created lazily, inside the loop, on the first call.
        client = ChatClient(api_key, session_token=token, **settings)
        runner = _Runner()
        self._runner = runner
        self._client = client
        # A client that is never closed still stops its thread once it and everything it
        # handed out are collected, or at interpreter exit.
        self._handle = _Handle(runner, client)
        self.tokens = SyncTokens(runner, client, self._handle)
        """Mint and revoke client tokens (``tokens.create``, ``tokens.revoke``)."""
        self.chat = SyncChat(runner, client, self._handle)
        """Stream chat answers (``chat.completions.create``, ``chat.create``, ``continue_``)."""

    @property
    def base_url(self) -> str:
        """The chat API's base URL."""
        return self._client.base_url

    @property
    def settings(self) -> Settings:
        """Every option as resolved (``ChatClient.settings``): arguments, then ``CHATSDK_*``
        variables, then the defaults; its ``repr`` masks the secrets."""
        return self._client.settings

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._runner.closed

    def close(self) -> None:
        """Close open streams and the connection pool, and stop the background loop.

        Where an event loop runs (an async app shutting down), this does not block: the
        closing finishes in the background."""
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


async def _close_all(client: ChatClient, streams: weakref.WeakSet[EventStream[Any, Any]]) -> None:
    await client.aclose()  # first: a stream being read is told the client was closed
    for stream in list(streams):
        await stream.aclose()
