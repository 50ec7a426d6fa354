"""The purpose-built benchmark server: pre-generated SSE bodies, paced and held streams.

Run by ``run.py`` in its own process on 127.0.0.1; it prints its port on the first
line of stdout and serves until stdin closes (so it never outlives the harness).

Every client sends the request the SDK always sends (``POST /chat_sessions/chat_results``
with a SPEC §1.4 body) and names the scenario in ``integration_id``:

- ``small-N``         N ``message_chunk`` events (SPEC §1.4 shape), the final chunk
                       and a ``records_cited``; written in 64 KiB slices.
- ``large-N-S``       the same with N events whose ``content_chunk`` is S bytes.
- ``paced-N-US``      N events, one every US microseconds, each written on its own;
                       ``content_chunk`` is the server's ``time.monotonic_ns()`` at send.
- ``hold-G-K-N``      K events, then a pause until ``GET /release/G``, then the rest
                       of N (for measuring streams held open mid-body).
- ``shape|S|N|W``      the wire shape S of ``shapes.py`` with N events, written in
                       64 KiB slices (W ``bulk``) or one event per write (W ``token``,
                       a server flushing per token). Also the ``model`` of
                       ``POST /chat/completions`` (and ``/v1/chat/completions``), where
                       S is ``completions``.
- ``POST /rpc/chatSessions.create`` and ``DELETE /rpc/chatSessions.revoke``: fixed
  answers (200 JSON and 204), for the token-operations benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid

from aiohttp import web
from common import raise_fd_limit
from shapes import event_body

SESSION_ID = str(uuid.UUID(int=0x5EED))
WORDS = ("alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta ", "eta ", "theta ")
WRITE_SLICE = 64 * 1024

TOKEN_BODY = json.dumps(
    {
        "client_token": "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjQxMDI0NDQ4MDB9.c2lnbmF0dXJlLWZvci1iZW5jaA",
        "embed_origin": "https://a.example",
        "expires_after": 3600,
        "status": "active",
    }
).encode()


def chunk_event(content: str, finish_reason: str | None = None) -> bytes:
    data = json.dumps(
        {"chat_session_id": SESSION_ID, "content_chunk": content, "finish_reason": finish_reason},
        separators=(",", ":"),
    )
    return f"event: message_chunk\ndata: {data}\n\n".encode()


def tail_events() -> bytes:
    """The final chunk and one ``records_cited``, as SPEC §1.4 orders them."""
    cited = {
        "citations": [
            {
                "number": i + 1,
                "record": {
                    "type": "documentation",
                    "url": f"https://docs.example.com/page/{i}",
                    "title": f"Page {i}",
                    "description": "A cited page.",
                    "breadcrumbs": ["Docs", "Guides", f"Page {i}"],
                },
                "hit_url": f"https://docs.example.com/page/{i}#hit",
            }
            for i in range(3)
        ]
    }
    data = json.dumps(cited, separators=(",", ":"))
    return chunk_event("", "stop") + f"event: records_cited\ndata: {data}\n\n".encode()


def small_body(n: int) -> bytes:
    return b"".join(chunk_event(WORDS[i % len(WORDS)]) for i in range(n)) + tail_events()


def large_body(n: int, size: int) -> bytes:
    # A different letter per event so no two payloads are the same object anywhere.
    letters = "abcdefghijklmnopqrstuvwxyz"
    return b"".join(chunk_event(letters[i % 26] * size) for i in range(n)) + tail_events()


class BenchServer:
    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.releases: dict[str, asyncio.Event] = {}
        self.shaped: dict[str, list[bytes]] = {}

    def shape_events(self, key: str) -> list[bytes]:
        found = self.shaped.get(key)
        if found is None:
            _, shape, n, _ = key.split("|")
            found = self.shaped[key] = event_body(shape, int(n))
        return found

    def body(self, key: str) -> bytes:
        if key.startswith("shape|"):
            found = self.bodies.get(key)
            if found is None:
                found = self.bodies[key] = b"".join(self.shape_events(key))
            return found
        found = self.bodies.get(key)
        if found is None:
            kind, *args = key.split("-")
            if kind == "small":
                found = small_body(int(args[0]))
            elif kind == "large":
                found = large_body(int(args[0]), int(args[1]))
            else:
                raise web.HTTPNotFound(text=f"unknown scenario {key!r}")
            self.bodies[key] = found
        return found

    def held_body(self, first: int, n: int) -> tuple[bytes, bytes]:
        """``small-n`` cut after its first ``first`` events."""
        body = self.body(f"small-{n}")
        cut = 0
        for _ in range(first):
            cut = body.index(b"\n\n", cut) + 2
        return body[:cut], body[cut:]

    async def prepare(self, request: web.Request) -> web.Response:
        """Build a scenario's body ahead of the measurements that use it."""
        return web.Response(text=str(len(self.body(request.match_info["scenario"]))))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            scenario = json.loads(await request.read())["integration_id"]
        except (ValueError, KeyError, TypeError):
            raise web.HTTPUnprocessableEntity(text="integration_id names the scenario") from None
        kind = scenario.split("-", 1)[0]
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        )
        if scenario.startswith("shape|"):
            await response.prepare(request)
            await self.write_shape(response, scenario)
        elif kind in ("small", "large"):
            body = self.body(scenario)
            await response.prepare(request)
            view = memoryview(body)
            for start in range(0, len(body), WRITE_SLICE):
                await response.write(view[start : start + WRITE_SLICE])
        elif kind == "paced":
            _, n, interval_us = scenario.split("-")
            await response.prepare(request)
            await self.paced(response, int(n), int(interval_us) / 1e6)
        elif kind == "hold":
            _, group, first, n = scenario.split("-")
            head, rest = self.held_body(int(first), int(n))
            release = self.releases.setdefault(group, asyncio.Event())
            await response.prepare(request)
            await response.write(head)
            await release.wait()
            await response.write(rest)
        else:
            raise web.HTTPNotFound(text=f"unknown scenario {scenario!r}")
        await response.write_eof()
        return response

    async def write_shape(self, response: web.StreamResponse, scenario: str) -> None:
        if scenario.endswith("|token"):
            for event in self.shape_events(scenario):
                await response.write(event)
            return
        body = self.body(scenario)
        view = memoryview(body)
        for start in range(0, len(body), WRITE_SLICE):
            await response.write(view[start : start + WRITE_SLICE])

    async def completions(self, request: web.Request) -> web.StreamResponse:
        try:
            scenario = json.loads(await request.read())["model"]
        except (ValueError, KeyError, TypeError):
            raise web.HTTPUnprocessableEntity(text="model names the scenario") from None
        if not scenario.startswith("shape|completions|"):
            raise web.HTTPNotFound(text=f"unknown scenario {scenario!r}")
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        )
        await response.prepare(request)
        await self.write_shape(response, scenario)
        await response.write_eof()
        return response

    async def paced(self, response: web.StreamResponse, n: int, interval: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        for _ in range(n):
            now = loop.time()
            if due > now:
                await asyncio.sleep(due - now)
            await response.write(chunk_event(str(time.monotonic_ns())))
            due += interval
        await response.write(tail_events())

    async def release(self, request: web.Request) -> web.Response:
        self.releases.setdefault(request.match_info["group"], asyncio.Event()).set()
        return web.Response(text="released")

    async def token_create(self, request: web.Request) -> web.Response:
        await request.read()
        if "Gram-Key" not in request.headers:
            raise web.HTTPUnauthorized()
        return web.Response(body=TOKEN_BODY, content_type="application/json")

    async def token_revoke(self, request: web.Request) -> web.Response:
        if "Gram-Key" not in request.headers or not request.query.get("token"):
            raise web.HTTPBadRequest()
        return web.Response(status=204)


async def main(port: int) -> None:
    raise_fd_limit()
    state = BenchServer()
    app = web.Application()
    app.router.add_post("/chat_sessions/chat_results", state.chat)
    app.router.add_post("/chat/completions", state.completions)
    app.router.add_post("/v1/chat/completions", state.completions)
    app.router.add_get("/release/{group}", state.release)
    app.router.add_get("/prepare/{scenario}", state.prepare)
    app.router.add_post("/rpc/chatSessions.create", state.token_create)
    app.router.add_delete("/rpc/chatSessions.revoke", state.token_revoke)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    # A backlog above the 1,000 simultaneous connects of the concurrency benchmark.
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    bound = runner.addresses[0][1]
    print(bound, flush=True)
    loop = asyncio.get_running_loop()
    # Serve until the harness closes our stdin (or dies).
    await loop.run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
