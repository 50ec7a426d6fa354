"""The reference server's lifecycle: :class:`ReferenceServer` (start, close, serve in
a thread) and :func:`create_app`, the route table. The routes live by wire:

=======  ====================================================  ===============================
GET      ``/healthz``                                          liveness, plain ``ok``
POST     ``/rpc/chatSessions.create``                          mint a client token (tokens.py)
DELETE   ``/rpc/chatSessions.revoke?token=...``                revoke a client token
POST     ``[/v0]/chat_sessions/chat_results``                  new session (chat_results.py)
POST     ``[/v0]/chat_sessions/{chat_session_id}/chat_results`` next turn of a session
POST     ``[/v1]/chat/completions``                            Chat Completions (completions.py)
GET      ``/chat_sessions/results/{result_id}/events``         a result's event log (resume,
                                                               both wires; streaming.py)
GET      ``/openapi.json``                                     the OpenAPI 3.1 document
=======  ====================================================  ===============================

The unprefixed paths are Gram's and ours, ``/v0`` and ``/v1`` Inkeep's (SPEC 1.9).
Shared plumbing (credentials, idempotency, errors, CORS) is in plumbing.py and errors.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Final, Self

import anyio
from aiohttp import web

from chatsdk.server import chat_results, completions, streaming, tokens
from chatsdk.server.auth import TokenSigner
from chatsdk.server.errors import ApiError
from chatsdk.server.faults import Faults, FaultState
from chatsdk.server.openapi import openapi_json
from chatsdk.server.plumbing import ServerState, make_middleware, preflight
from chatsdk.server.store import Store

__all__ = ["ApiError", "ReferenceServer", "create_app"]

DEFAULT_API_KEY: Final = "chatsdk-test-key"
DEFAULT_PROJECT: Final = "demo"
# Large enough for any real chat history, small enough that a runaway client cannot
# make the server buffer unbounded memory.
DEFAULT_MAX_BODY_SIZE: Final = 1024 * 1024


class ReferenceServer:
    """The chatsdk reference server: every operation of SPEC §1 on loopback, no network.

    ::

        async with ReferenceServer() as server:
            client = ChatClient(api_key=server.api_key, project=server.project,
                                base_url=server.base_url)

    ``db=None`` keeps state in memory; a path keeps sessions, revocations, result logs
    and the signing secret across restarts. Set :attr:`faults` between calls to make
    the following requests misbehave.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        project: str = DEFAULT_PROJECT,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        db: str | os.PathLike[str] | None = None,
        faults: Faults | None = None,
        signing_secret: str | None = None,
        result_ttl: float = 600.0,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        max_streams_per_key: int = 1000,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        if not project:
            raise ValueError("project must not be empty")
        if signing_secret is not None:
            TokenSigner(signing_secret, project)  # fail now, not at start(), on a weak secret
        self.host = host
        self.port = port
        self.db = db
        self._signing_secret = signing_secret
        self._state = ServerState(
            api_key=api_key,
            project=project,
            result_ttl=result_ttl,
            max_body_size=max_body_size,
            max_streams_per_key=max_streams_per_key,
            fault_state=FaultState(faults if faults is not None else Faults()),
        )
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # The settings live in the state the routes share; these read them from there.

    @property
    def api_key(self) -> str:
        """The API key the server accepts."""
        return self._state.api_key

    @property
    def project(self) -> str:
        """The project slug it serves."""
        return self._state.project

    @property
    def result_ttl(self) -> float:
        """Seconds a result log (resume) and an idempotency record are kept."""
        return self._state.result_ttl

    @property
    def max_body_size(self) -> int:
        """The request body limit in bytes."""
        return self._state.max_body_size

    @property
    def max_streams_per_key(self) -> int:
        """Open streams allowed per credential before a 429."""
        return self._state.max_streams_per_key

    def __repr__(self) -> str:
        # No api_key here: reprs end up in logs and test reports.
        where = self._base_url or "not started"
        return f"ReferenceServer(project={self.project!r}, {where})"

    # -- public surface ---------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """The misbehaviour in force. Assigning a new value resets every fault counter."""
        return self._state.fault_state.faults

    @faults.setter
    def faults(self, value: Faults | None) -> None:
        # None is no misbehaviour, as in the constructor.
        self._state.fault_state = FaultState(Faults() if value is None else value)

    @property
    def _fault_state(self) -> FaultState:
        # Read by tests and the soak benchmark to see the counters of a scenario.
        return self._state.fault_state

    @property
    def _open_streams(self) -> Counter[str]:
        # Read by tests to see when the server noticed a client leave.
        return self._state.open_streams

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server (the real port when ``port=0``)."""
        if self._base_url is None:
            raise RuntimeError("the server is not running; use 'async with' or start()")
        return self._base_url

    async def start(self) -> None:
        """Open the store, bind the socket and start serving."""
        if self._runner is not None:
            raise RuntimeError("the server is already running")
        state = self._state
        state.closing = False
        store = Store(self.db)
        store.open()
        try:
            secret = self._signing_secret or store.signing_secret(lambda: secrets.token_urlsafe(48))
            state.signer_ = TokenSigner(secret, self.project)
            state.store_ = store
            state.purge()
            runner = web.AppRunner(
                create_app(self),
                access_log=None,
                # A backstop only: close() cancels open streams itself, so the remaining
                # handlers are short ones that finish well within this; what is left
                # (a client that never finishes sending its body) is cut, so a test
                # suite's teardown or a SIGTERM never waits long.
                shutdown_timeout=1.0,
            )
            await runner.setup()
            try:
                site = web.TCPSite(runner, self.host, self.port)
                await site.start()
            except BaseException:
                await runner.cleanup()
                raise
        except BaseException:
            store.close()
            state.store_ = None
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{shown}:{port}"

    async def close(self) -> None:
        """Stop serving: cut open streams, finish short requests, close the store.

        Shielded from cancellation: a close interrupted half-way would leak the socket
        and the store, and every step here is bounded.
        """
        with anyio.CancelScope(shield=True):
            await self._close()

    async def _close(self) -> None:
        runner = self._runner
        if runner is None:
            return
        state = self._state
        state.closing = True
        # Stop accepting connections first, so no new stream starts while the open ones
        # are being cancelled.
        for site in list(runner.sites):
            await site.stop()
        tasks = [t for t in state.stream_tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await runner.cleanup()
        self._runner = None
        self._base_url = None
        if state.store_ is not None:
            state.store_.close()
            state.store_ = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        """Serve until cancelled (Ctrl-C under ``asyncio.run``), then close.

        Starts the server if needed; call :meth:`start` first to learn ``base_url``.
        """
        if self._runner is None:
            await self.start()
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            await self.close()

    @contextlib.contextmanager
    def serve_in_thread(self) -> Iterator[Self]:
        """Run the server on its own event loop in a background thread.

        For synchronous code (the sync client, browsers, plain tests)::

            with ReferenceServer().serve_in_thread() as server:
                requests.get(server.base_url + "/healthz")
        """
        ready = threading.Event()
        loop_box: list[asyncio.AbstractEventLoop] = []
        stop_box: list[asyncio.Event] = []
        errors: list[BaseException] = []

        async def main() -> None:
            stop = asyncio.Event()
            loop_box.append(asyncio.get_running_loop())
            stop_box.append(stop)
            try:
                await self.start()
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            try:
                await stop.wait()
            finally:
                await self.close()

        thread = threading.Thread(
            target=asyncio.run, args=(main(),), name="chatsdk-reference-server", daemon=True
        )
        thread.start()
        ready.wait()
        if errors:
            thread.join()
            raise errors[0]
        try:
            yield self
        finally:
            loop_box[0].call_soon_threadsafe(stop_box[0].set)
            thread.join()

    # -- internals ------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The open store (running servers only; tests read it)."""
        return self._state.store


def create_app(server: ReferenceServer) -> web.Application:
    """The aiohttp application serving ``server``'s routes, every operation under each
    path the real services use (SPEC 1.9)."""
    state = server._state
    app = web.Application(middlewares=[make_middleware(state)], client_max_size=state.max_body_size)

    def bind(
        handler: Callable[[ServerState, web.Request], Awaitable[web.StreamResponse]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        return functools.partial(handler, state)

    router = app.router
    router.add_get("/healthz", _healthz)
    router.add_post("/rpc/chatSessions.create", bind(tokens.create_token))
    router.add_delete("/rpc/chatSessions.revoke", bind(tokens.revoke_token))
    for prefix in ("", "/v0"):
        router.add_post(f"{prefix}/chat_sessions/chat_results", bind(chat_results.chat_create))
        router.add_post(
            f"{prefix}/chat_sessions/{{chat_session_id}}/chat_results",
            bind(chat_results.chat_continue),
        )
        router.add_route("OPTIONS", f"{prefix}/chat_sessions/{{tail:.*}}", preflight)
    for prefix in ("", "/v1"):
        router.add_post(f"{prefix}/chat/completions", bind(completions.chat_completions))
        router.add_route("OPTIONS", f"{prefix}/chat/completions", preflight)
    router.add_get(streaming.result_path("{result_id}"), bind(streaming.result_events))
    # Documentation routes; plumbing counts them as no API call (never fail_first).
    router.add_get("/openapi.json", _openapi)
    return app


async def _healthz(request: web.Request) -> web.StreamResponse:
    """``GET /healthz``: liveness."""
    return web.Response(text="ok")


async def _openapi(request: web.Request) -> web.StreamResponse:
    """``GET /openapi.json``: the OpenAPI 3.1 document of the routes."""
    return web.Response(body=openapi_json(), content_type="application/json")
