"""A small purpose-built server for fault tests: it answers each request from a script.

Each request takes the next ``Reply`` from the queue (the last one repeats) and is
recorded with its method, path, query, headers and body, so tests can check what the
client sent (idempotency keys, auth headers) and how it handles what came back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Reply:
    """What to answer: a status, headers and a body, optionally sent in slow pieces."""

    status: int = 200
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    # Write the body in these pieces, with `delay` seconds between them.
    pieces: Sequence[bytes] | None = None
    delay: float = 0.0
    # Abort the connection after writing the pieces (a drop mid-body).
    abort: bool = False


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    # The client's (host, port): requests over one kept-alive connection share it.
    peer: tuple[str, int] | None = None


class ScriptedServer:
    """``async with ScriptedServer([Reply(...), ...]) as server:`` then use ``server.url``."""

    def __init__(self, replies: Sequence[Reply]):
        self.replies = list(replies)
        self.seen: list[Seen] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            Seen(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
                body=await request.read(),
                peer=request.transport.get_extra_info("peername") if request.transport else None,
            )
        )
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if reply.pieces is None:
            body = reply.body.encode() if isinstance(reply.body, str) else reply.body
            return web.Response(
                status=reply.status,
                body=body,
                headers={"Content-Type": reply.content_type, **reply.headers},
            )
        response = web.StreamResponse(
            status=reply.status, headers={"Content-Type": reply.content_type, **reply.headers}
        )
        await response.prepare(request)
        for piece in reply.pieces:
            await response.write(piece)
            if reply.delay:
                await asyncio.sleep(reply.delay)
        if reply.abort:
            assert request.transport is not None
            request.transport.abort()
            return response
        await response.write_eof()
        return response

    async def __aenter__(self) -> ScriptedServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def sse(*events: tuple[str, str], ids: bool = False) -> bytes:
    """An event-stream body from (event, data) pairs."""
    out = []
    for n, (event, data) in enumerate(events, 1):
        out.append((f"id: {n}\n" if ids else "") + f"event: {event}\ndata: {data}\n\n")
    return "".join(out).encode()
