"""Promises kept: what the stream core guarantees, checked on both chat wires.

Each promise runs on the ``chat_results`` wire (``client.chat.create``: ``event:
message_chunk`` / ``records_cited`` events, no end marker) and on the Chat Completions
wire (``client.chat.completions.create``: ``data: {chunk}`` events ending with ``data:
[DONE]``), against real servers on loopback sockets: :class:`ScriptedServer` where an
aiohttp server can say it, a raw-socket server where the bytes (or the moment a
connection closes) matter. Every call runs under ``asyncio.timeout``: a hang fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

import chatsdk
from tests.scripted import Reply, ScriptedServer
from tests.support import play, read_request

KEY = "promises-test-api-key-1234"
FAST = chatsdk.RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.05)
SSE = "text/event-stream"


@pytest.fixture(autouse=True)
def _no_chatsdk_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CHATSDK_* variable of the machine running the tests leaks into them."""
    import os

    for name in list(os.environ):
        if name.startswith("CHATSDK_"):
            monkeypatch.delenv(name)


# == the two wires ======================================================================


@dataclass(frozen=True)
class WireKit:
    """How one wire's events look on the wire, and how to call it."""

    name: str

    def create(self, client: chatsdk.ChatClient, **kw: Any) -> chatsdk.EventStream[Any, Any]:
        if self.name == "chat":
            return client.chat.create(integration_id="docs", messages="q", **kw)
        return client.chat.completions.create(model="m", messages="q", **kw)

    def event(self, text: str, *, id: str | None = None, finish: str | None = None) -> bytes:
        """One content event (``finish``: its finish_reason)."""
        if self.name == "chat":
            data = {"chat_session_id": "s1", "content_chunk": text, "finish_reason": finish}
            head = b"event: message_chunk\n"
        else:
            data = {
                "id": "cmpl-1",
                "object": "chat.completion.chunk",
                "created": 1718000000,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
            }
            head = b""
        id_line = f"id: {id}\n".encode() if id is not None else b""
        return id_line + head + b"data: " + json.dumps(data).encode() + b"\n\n"

    def end(self, *, id: str | None = None) -> bytes:
        """What ends a whole answer: the finishing event, then records_cited / [DONE]."""
        if self.name == "chat":
            return self.event("", id=id, finish="stop") + CITED
        return self.event("", id=id, finish="stop") + DONE

    def tail(self) -> bytes:
        """What follows a finishing event (already sent with ``event(finish=...)``)."""
        return CITED if self.name == "chat" else DONE

    def answer(self, *texts: str) -> bytes:
        return b"".join(self.event(t) for t in texts) + self.end()

    def cut(self) -> bytes:
        """A body that ends here ends inside a field line."""
        if self.name == "chat":
            return b'event: message_chunk\ndata: {"content_chunk": "x"'
        return b'data: {"choices": [{"index": 0, "delta": {"content": "x"'

    def texts(self, events: Sequence[Any]) -> list[str]:
        out = []
        for event in events:
            if isinstance(event, chatsdk.MessageChunk):
                if event.content_chunk:
                    out.append(event.content_chunk)
            elif isinstance(event, chatsdk.ChatCompletionChunk):
                out += [c.delta.content for c in event.choices if c.delta.content]
        return out


CITED = (
    b"event: records_cited\n"
    b'data: {"citations": [{"number": 1, "record": {"type": "documentation", "url": "u"}}]}\n\n'
)
DONE = b"data: [DONE]\n\n"
WIRES = [WireKit("chat"), WireKit("completions")]
wires = pytest.mark.parametrize("kit", WIRES, ids=lambda k: k.name)


def client_for(url: str, **kw: Any) -> chatsdk.ChatClient:
    kw.setdefault("retries", FAST)
    kw.setdefault("timeout", chatsdk.Timeout(connect=2, read=2, idle=2, total=10))
    return chatsdk.ChatClient(KEY, base_url=url, **kw)


async def collect(stream: chatsdk.EventStream[Any, Any], into: list[Any]) -> Any:
    """Iterate ``stream`` into ``into``, then return its result (under a time limit)."""
    async with asyncio.timeout(10):
        async for event in stream:
            into.append(event)
        return await stream


# == a raw-socket server: bytes written by hand, connections watched ===================


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def head(
    status: str = "200 OK",
    content_type: str = SSE,
    *,
    length: int | None = None,
    extra: Sequence[bytes] = (),
) -> bytes:
    """A response head; chunked unless ``length`` is given; always ``Connection: close``."""
    lines = [b"HTTP/1.1 " + status.encode(), b"Content-Type: " + content_type.encode()]
    if length is None:
        lines.append(b"Transfer-Encoding: chunked")
    else:
        lines.append(b"Content-Length: %d" % length)
    lines.append(b"Connection: close")
    lines += list(extra)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def whole(body: bytes, content_type: str = SSE, extra: Sequence[bytes] = ()) -> bytes:
    """A complete response with a Content-Length."""
    return head(content_type=content_type, length=len(body), extra=extra) + body


Step = bytes | float | str  # bytes to write, seconds to sleep, or "reset" / "close"


@dataclass
class Connection:
    request: bytes = b""
    closed_by_client: asyncio.Event = field(default_factory=asyncio.Event)
    closed_at: float | None = None


class RawServer:
    """Answers request number n (one per connection) with ``scripts[n]`` (the last
    repeats), then waits for the client to close the connection, noting when it did."""

    def __init__(self, *scripts: Sequence[Step]):
        self.scripts = list(scripts)
        self.connections: list[Connection] = []
        self.url = ""
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.append(writer)
        conn = Connection()
        self.connections.append(conn)
        script = self.scripts[min(len(self.connections) - 1, len(self.scripts) - 1)]
        try:
            conn.request = await read_request(reader)
            if await play(script, writer):
                return
            # Hold the connection until the client closes it (EOF, or a reset).
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass
            conn.closed_at = asyncio.get_running_loop().time()
            conn.closed_by_client.set()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


PAUSE = 0.05  # lets the client read what was written before the connection is cut


# == 1. a server-chosen retry: is bounded ================================================


def hour_retry_then_drop(kit: WireKit) -> list[Reply]:
    first = Reply(
        pieces=[b"retry: 3600000\n" + kit.event("A", id="1")],
        abort=True,
        content_type=SSE,
        headers={"Content-Location": "/r"},
    )
    rest = Reply(
        body=kit.event("B", id="2") + kit.end(id="3"),
        content_type=SSE,
        headers={"Content-Location": "/r"},
    )
    return [first, rest]


@pytest.mark.anyio
@wires
async def test_server_retry_of_an_hour_resumes_within_max_delay(kit: WireKit) -> None:
    async with ScriptedServer(hour_retry_then_drop(kit)) as srv:
        retries = chatsdk.RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.2)
        async with client_for(srv.url, retries=retries, timeout=chatsdk.Timeout(idle=1)) as c:
            began = time.monotonic()
            stream = kit.create(c)
            events: list[Any] = []
            result = await collect(stream, events)
            elapsed = time.monotonic() - began
    assert elapsed < 1.0, f"took {elapsed:.2f} s: the server's retry: was not capped"
    assert result.text == "AB"
    assert kit.texts(events) == ["A", "B"]
    assert stream.resumes == 1
    assert [s.method for s in srv.seen] == ["POST", "GET"]
    assert srv.seen[1].path == "/r"
    assert srv.seen[1].headers.get("Last-Event-ID") == "1"


@pytest.mark.anyio
@wires
async def test_server_retry_of_an_hour_with_default_max_delay_times_out_at_idle(
    kit: WireKit,
) -> None:
    async with ScriptedServer(hour_retry_then_drop(kit)) as srv:
        # The default policy caps the wait at 8 s, longer than idle=1: a timeout, soon.
        async with client_for(
            srv.url, retries=chatsdk.RetryPolicy(), timeout=chatsdk.Timeout(idle=1)
        ) as c:
            began = time.monotonic()
            with pytest.raises(chatsdk.APITimeoutError):
                async with asyncio.timeout(10):
                    await kit.create(c)
            elapsed = time.monotonic() - began
    assert elapsed < 1.5, f"took {elapsed:.2f} s"


# == 2. break (or an exception, or leaving text_stream) releases at once ===============


def streaming_forever(kit: WireKit) -> list[Step]:
    """One event, then nothing more (the body never ends): only the client can close."""
    return [head(), chunk(kit.event("first")), chunk(b": ping\n")]


def full_answer(kit: WireKit) -> list[Step]:
    return [whole(kit.answer("second"))]


async def leave_early(kit: WireKit, stream: chatsdk.EventStream[Any, Any], how: str) -> None:
    class Boom(Exception):
        pass

    async with asyncio.timeout(5):
        if how == "break":
            async for _ in stream:
                break
        elif how == "exception":
            with pytest.raises(Boom):
                async for _ in stream:
                    raise Boom
        else:  # text_stream
            async for _ in stream.text_stream:
                break


@pytest.mark.anyio
@wires
@pytest.mark.parametrize("how", ["break", "exception", "text_stream break"])
async def test_leaving_the_loop_closes_the_connection_while_the_stream_lives(
    kit: WireKit, how: str
) -> None:
    async with RawServer(streaming_forever(kit), full_answer(kit)) as srv:
        async with client_for(srv.url, max_connections=1) as client:
            stream = kit.create(client)
            await leave_early(kit, stream, how)
            left = asyncio.get_running_loop().time()
            # The server sees the connection closed, soon, while `stream` is referenced.
            conn = srv.connections[0]
            try:
                await asyncio.wait_for(conn.closed_by_client.wait(), 0.5)
            except TimeoutError:
                pytest.fail(f"the server still had the connection open 0.5 s after {how}")
            assert conn.closed_at is not None and conn.closed_at - left < 0.5
            # And by behaviour: the one pooled connection is free for a second call.
            async with asyncio.timeout(2):
                result = await kit.create(client)
            assert result.text == "second"
            assert stream is not None  # still referenced up to here


# == 3. a trailing partial comment does not lose a complete answer =====================


@pytest.mark.anyio
@wires
@pytest.mark.parametrize("variant", ["plain", "content-location", "content-location+ids"])
async def test_a_trailing_partial_comment_after_a_whole_answer_is_harmless(
    kit: WireKit, variant: str
) -> None:
    # Needs the decoder change (a partial comment at the end of a body is not "inside an
    # event"). On the completions wire the comment follows data: [DONE].
    if variant.endswith("ids"):
        body = kit.event("Hel", id="1") + kit.event("lo", id="2") + kit.end(id="3")
    else:
        body = kit.answer("Hel", "lo")
    body += b": keep-alive"
    headers = {"Content-Location": "/r"} if variant != "plain" else {}
    async with ScriptedServer([Reply(body=body, content_type=SSE, headers=headers)]) as srv:
        async with client_for(srv.url) as client:
            stream = kit.create(client)
            events: list[Any] = []
            result = await collect(stream, events)
    assert result.text == "Hello"
    assert kit.texts(events) == ["Hel", "lo"]
    assert result.finish_reason == "stop"
    assert stream.resumes == 0
    assert len(srv.seen) == 1


@pytest.mark.anyio
@wires
async def test_a_trailing_partial_comment_chunked_and_split_is_harmless(kit: WireKit) -> None:
    # The same, with the partial comment arriving in its own transfer chunk.
    pieces = [kit.answer("Hel", "lo"), b": keep", b"-alive"]
    async with ScriptedServer([Reply(pieces=pieces, content_type=SSE)]) as srv:
        async with client_for(srv.url) as client:
            stream = kit.create(client)
            result = await collect(stream, [])
    assert result.text == "Hello"
    assert stream.resumes == 0


@pytest.mark.anyio
@wires
async def test_a_body_ending_inside_a_field_line_is_a_stream_error(kit: WireKit) -> None:
    body = kit.event("A") + kit.cut()
    async with ScriptedServer([Reply(body=body, content_type=SSE)]) as srv:
        async with client_for(srv.url) as client:
            events: list[Any] = []
            with pytest.raises(chatsdk.StreamError):
                await collect(kit.create(client), events)
    assert kit.texts(events) == ["A"]
    assert len(srv.seen) == 1


def dropped(body: bytes) -> Reply:
    """A resumable answer (``Content-Location: /r``) whose connection drops after ``body``."""
    return Reply(pieces=[body], abort=True, content_type=SSE, headers={"Content-Location": "/r"})


# == 4. ordered-looking ids never drop real events =====================================


@pytest.mark.anyio
@wires
async def test_ids_that_look_smaller_after_a_resume_are_new_events(kit: WireKit) -> None:
    first = dropped(kit.event("a", id="1718000005000") + kit.event("b", id="1718000005007"))
    resumed = Reply(
        body=kit.event("c", id="1718000003100")
        + kit.event("d", id="1718000003101", finish="stop")
        + kit.tail(),
        content_type=SSE,
        headers={"Content-Location": "/r"},
    )
    async with ScriptedServer([first, resumed]) as srv:
        async with client_for(srv.url) as client:
            stream = kit.create(client)
            events: list[Any] = []
            result = await collect(stream, events)
    assert kit.texts(events) == ["a", "b", "c", "d"]
    assert result.text == "abcd"
    assert stream.replays_dropped == 0
    assert stream.resumes == 1
    assert srv.seen[1].headers.get("Last-Event-ID") == "1718000005007"


@pytest.mark.anyio
@wires
@pytest.mark.parametrize(
    "retries", [None, chatsdk.RetryPolicy(max_resumes=0)], ids=["retries=None", "max_resumes=0"]
)
async def test_a_drop_with_resumes_off_is_an_api_connection_error(
    kit: WireKit, retries: chatsdk.RetryPolicy | None
) -> None:
    # docs/errors.md: a connection that breaks is an APIConnectionError wherever it breaks.
    first = dropped(kit.event("a", id="1"))
    async with ScriptedServer([first]) as srv:
        async with client_for(srv.url, retries=retries) as client:
            events: list[Any] = []
            with pytest.raises(chatsdk.APIConnectionError, match="allows no resumes"):
                await collect(kit.create(client), events)
    assert kit.texts(events) == ["a"]
    assert len(srv.seen) == 1


@pytest.mark.anyio
@wires
async def test_a_resume_answered_with_a_whole_json_answer_is_a_stream_error(kit: WireKit) -> None:
    # The whole answer repeats what was delivered: taken as the rest, the text would
    # come twice; what in it is new cannot be told apart.
    first = dropped(kit.event("a", id="1") + kit.event("b", id="2"))
    if kit.name == "chat":
        whole = {"chat_session_id": "s1", "message": {"role": "assistant", "content": "abcd"}}
    else:
        message = {"role": "assistant", "content": "abcd"}
        whole = {"id": "c", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    resumed = Reply(body=json.dumps(whole), headers={"Content-Location": "/r"})
    async with ScriptedServer([first, resumed]) as srv:
        async with client_for(srv.url) as client:
            stream = kit.create(client)
            events: list[Any] = []
            with pytest.raises(chatsdk.StreamError, match="whole JSON answer") as info:
                await collect(stream, events)
    assert kit.texts(events) == ["a", "b"]
    assert "abcd" in str(info.value)
    assert stream.resumes == 1


@pytest.mark.anyio
@wires
@pytest.mark.parametrize(
    "replay",
    [
        # From the top, but one event short of the id sent ("3")...
        [("a", "1"), ("c", "3"), ("d", "4"), ("e", "5")],
        # ... or one event too many before it.
        [("a", "1"), ("a2", "1b"), ("b", "2"), ("c", "3"), ("d", "4")],
    ],
    ids=["one short", "one extra"],
)
async def test_a_replay_from_the_top_that_does_not_line_up_is_a_stream_error(
    kit: WireKit, replay: list[tuple[str, str]]
) -> None:
    location = {"Content-Location": "/r"}
    first = Reply(
        pieces=[kit.event("a", id="1") + kit.event("b", id="2") + kit.event("c", id="3")],
        abort=True,
        content_type=SSE,
        headers=location,
    )
    *middle, (last_text, last_id) = replay
    body = b"".join(kit.event(t, id=i) for t, i in middle)
    body += kit.event(last_text, id=last_id, finish="stop") + kit.tail()
    resumed = Reply(body=body, content_type=SSE, headers=location)
    async with ScriptedServer([first, resumed]) as srv:
        async with client_for(srv.url) as client:
            events: list[Any] = []
            with pytest.raises(chatsdk.StreamError):
                await collect(kit.create(client), events)
    # Never a shorter or doubled answer: exactly what was delivered before the drop.
    assert kit.texts(events) == ["a", "b", "c"]
    assert len(srv.seen) == 2


# == 5. server-controlled values never escape untyped ==================================


def resumable_head(location: bytes = b"/r") -> bytes:
    return head(extra=[b"Content-Location: " + location])


async def outcome(kit: WireKit, client: chatsdk.ChatClient) -> Any:
    """The result, or the chatsdk error; anything else fails the test. Never hangs."""
    try:
        async with asyncio.timeout(8):
            return await kit.create(client)
    except chatsdk.ChatSDKError as exc:
        return exc


BAD_IDS = {"control": "a\x01b", "latin-1": "caf\u00e9", "line separator": "a\u2028b"}


@pytest.mark.anyio
@wires
@pytest.mark.parametrize("bad_id", list(BAD_IDS))
async def test_an_event_id_that_cannot_be_a_header_is_handled(kit: WireKit, bad_id: str) -> None:
    event_id = BAD_IDS[bad_id]
    async with RawServer(
        [resumable_head(), chunk(kit.event("A", id=event_id)), PAUSE, "reset"],
        [whole(kit.event("B", id="2") + kit.end(id="3"), extra=[b"Content-Location: /r"])],
    ) as srv:
        async with client_for(srv.url) as client:
            began = time.monotonic()
            got = await outcome(kit, client)
    assert time.monotonic() - began < 5
    if not isinstance(got, chatsdk.ChatSDKError):
        assert got.text == "AB"  # resumed, whole


GARBAGE_LOCATIONS = {
    "malformed IPv6": b"http://[::1",
    "DEL character": b"/r\x7f",
    "space inside": b"/r x",
    "other origin": b"",  # filled in with localhost:<port> (same server, other origin)
    "scheme only": b"http:",
}


@pytest.mark.anyio
@wires
@pytest.mark.parametrize("name", list(GARBAGE_LOCATIONS))
async def test_a_garbage_content_location_is_handled(kit: WireKit, name: str) -> None:
    srv = RawServer()
    async with srv:
        location = GARBAGE_LOCATIONS[name] or f"http://localhost:{srv.port}/r".encode()
        srv.scripts = [
            [resumable_head(location), chunk(kit.event("A", id="1")), PAUSE, "reset"],
            [whole(kit.event("B", id="2") + kit.end(id="3"))],
        ]
        async with client_for(srv.url) as client:
            began = time.monotonic()
            got = await outcome(kit, client)
    assert time.monotonic() - began < 5
    if name == "other origin":
        # Credentials must not follow a Content-Location to another origin: not resumable.
        assert isinstance(got, chatsdk.APIConnectionError), repr(got)
        assert len(srv.connections) == 1
    elif not isinstance(got, chatsdk.ChatSDKError):
        # "http:" resolves (RFC 3986) to the request URL itself: a resume there is fine.
        assert got.text == "AB"


@pytest.mark.anyio
@wires
async def test_an_enormous_retry_field_is_handled(kit: WireKit) -> None:
    async with RawServer(
        [
            resumable_head(),
            chunk(b"retry: 99999999999999999999\n" + kit.event("A", id="1")),
            PAUSE,
            "reset",
        ],
        [whole(kit.event("B", id="2") + kit.end(id="3"))],
    ) as srv:
        retries = chatsdk.RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.2)
        async with client_for(srv.url, retries=retries) as client:
            began = time.monotonic()
            got = await outcome(kit, client)
    assert time.monotonic() - began < 2
    if not isinstance(got, chatsdk.ChatSDKError):
        assert got.text == "AB"


@pytest.mark.anyio
@wires
@pytest.mark.parametrize(
    "retry_after",
    ["inf", "nan", "-5", "Wed, 21 Oct 9999 07:28:00 GMT", "1e999", "-inf", "1_0", "+1", "\u0663"],
)
async def test_a_strange_retry_after_on_503_is_a_typed_error_soon(
    kit: WireKit, retry_after: str
) -> None:
    busy = Reply(status=503, body="busy", content_type="text/plain")
    busy.headers["Retry-After"] = retry_after
    async with ScriptedServer([busy]) as srv:
        retries = chatsdk.RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)
        # No total timeout (the default): only the retry policy can bound the wait.
        timeout = chatsdk.Timeout(connect=2, read=2, idle=2, total=None)
        async with client_for(srv.url, retries=retries, timeout=timeout) as client:
            began = time.monotonic()
            with pytest.raises(chatsdk.InternalServerError) as info:
                async with asyncio.timeout(8):
                    await kit.create(client)
    assert time.monotonic() - began < 3
    assert info.value.status == 503
    assert 1 <= len(srv.seen) <= 3


@pytest.mark.anyio
@wires
@pytest.mark.parametrize("how", ["Timeout(idle=1)", "timeout=1"])
@pytest.mark.parametrize(
    ("headers", "named"),
    [({"Retry-After": "20"}, "Retry-After"), ({"retry-after-ms": "20000"}, "retry-after-ms")],
)
async def test_a_retry_after_longer_than_idle_is_not_waited_for(
    kit: WireKit, how: str, headers: dict[str, str], named: str
) -> None:
    # The wait for the server's answer is bounded by idle, a retry's as a resume's; the
    # note names the header that asked for it.
    busy = Reply(status=503, body="busy", content_type="text/plain", headers=headers)
    timeout: chatsdk.Timeout | float = 1 if how == "timeout=1" else chatsdk.Timeout(idle=1)
    async with ScriptedServer([busy, busy]) as srv:
        async with client_for(srv.url, retries=chatsdk.RetryPolicy(max_retries=1)) as client:
            began = time.monotonic()
            with pytest.raises(
                chatsdk.InternalServerError,
                match=f"the server's {named} asks for a wait of 20 s, which would pass the idle",
            ):
                async with asyncio.timeout(5):
                    await kit.create(client, timeout=timeout)
    assert time.monotonic() - began < 1
    assert len(srv.seen) == 1


# == 6. misuse ==========================================================================

TWO_LOOPS = textwrap.dedent(
    """
    import asyncio, json, sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import chatsdk

    ANSWER = json.dumps(
        {"chat_session_id": "s", "message": {"role": "assistant", "content": "hi"}}
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(ANSWER)))
            self.end_headers()
            self.wfile.write(ANSWER)
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d" % server.server_address[1]
    client = chatsdk.ChatClient("two-loops-key-123456", base_url=url, retries=0)

    async def ask():
        return await client.chat.create(integration_id="docs", messages="q", stream=False)

    print("FIRST", asyncio.run(ask()).text)
    try:
        asyncio.run(ask())
    except chatsdk.ValidationError as exc:
        print("SECOND ValidationError:", exc)
    except BaseException as exc:
        print("SECOND other:", type(exc).__name__, exc)
    else:
        print("SECOND no error")
    try:
        asyncio.run(client.aclose())  # its connections belong to the first loop
    except chatsdk.ValidationError as exc:
        print("ACLOSE ValidationError:", exc)
    else:
        print("ACLOSE no error")
    import gc; gc.collect()
    server.shutdown()
    """
)


def test_a_client_used_in_two_event_loops_raises_validation_error_and_leaves_no_task() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", TWO_LOOPS],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "FIRST hi" in done.stdout
    assert "SECOND ValidationError:" in done.stdout, done.stdout
    assert "event loop" in done.stdout  # names the cause
    assert "ACLOSE ValidationError: aclose() in another event loop" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert "never retrieved" not in done.stderr, done.stderr
    assert "Task was destroyed" not in done.stderr, done.stderr


@pytest.mark.anyio
@wires
async def test_a_plain_function_as_session_token_is_called(kit: WireKit) -> None:
    calls: list[int] = []

    def provider() -> str:
        calls.append(1)
        return "plain-function-token-1234"

    async with ScriptedServer([Reply(body=kit.answer("hi"), content_type=SSE)]) as srv:
        async with chatsdk.ChatClient(
            session_token=provider, project="p", base_url=srv.url, retries=0
        ) as client:
            async with asyncio.timeout(5):
                result = await kit.create(client)
    assert result.text == "hi"
    assert calls
    assert srv.seen[0].headers.get("Gram-Chat-Session") == "plain-function-token-1234"
    assert srv.seen[0].headers.get("Gram-Project") == "p"


@pytest.mark.anyio
@wires
@pytest.mark.parametrize("provider_kind", ["async", "plain"])
async def test_closing_the_client_ends_a_call_waiting_for_its_token(
    kit: WireKit, provider_kind: str
) -> None:
    # A slow token provider (a call to the page's backend): closing the client ends the
    # call at once; a plain function runs off the event loop, which stays free meanwhile.
    release = threading.Event()

    async def slow_async() -> str:
        await asyncio.sleep(5)
        return "never-used-token-1234"

    def slow_plain() -> str:
        release.wait(5)
        return "never-used-token-1234"

    provider = slow_async if provider_kind == "async" else slow_plain
    async with ScriptedServer([Reply(body=kit.answer("hi"), content_type=SSE)]) as srv:
        client = chatsdk.ChatClient(session_token=provider, project="p", base_url=srv.url)
        call = asyncio.create_task(kit.create(client).final_result())
        began = asyncio.get_running_loop().time()
        await asyncio.sleep(0.2)  # the loop runs while the provider waits
        assert asyncio.get_running_loop().time() - began < 0.4
        await close_and_expect_prompt_end(client, call)
        release.set()
    assert not srv.seen


@pytest.mark.anyio
@wires
async def test_closing_the_client_ends_the_wait_before_a_resume(kit: WireKit) -> None:
    first = dropped(b"retry: 3000\n" + kit.event("a", id="1") + kit.event("b", id="2"))
    async with ScriptedServer([first]) as srv:
        client = client_for(
            srv.url, retries=chatsdk.RetryPolicy(), timeout=chatsdk.Timeout(idle=10)
        )
        stream = kit.create(client)
        got: list[Any] = []

        async def read() -> None:
            async for event in stream:
                got.append(event)

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.5)  # the drop came; the resume waits 3 s (retry: 3000)
        assert len(got) == 2 and len(srv.seen) == 1  # not resumed yet
        await close_and_expect_prompt_end(client, reader)
    assert len(srv.seen) == 1


def test_api_key_and_session_token_together_are_refused() -> None:
    with pytest.raises(chatsdk.ValidationError):
        chatsdk.ChatClient("an-api-key-123456", session_token="a-token-123456", project="p")


def test_both_variables_set_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSDK_API_KEY", "env-api-key-123456")
    monkeypatch.setenv("CHATSDK_SESSION_TOKEN", "env-token-123456")
    with pytest.raises(chatsdk.ValidationError):
        chatsdk.ChatClient(project="p")


@pytest.mark.anyio
@wires
@pytest.mark.parametrize("explicit", ["api_key", "session_token"])
async def test_an_explicit_credential_beats_the_other_variable(
    kit: WireKit, explicit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if explicit == "api_key":
        monkeypatch.setenv("CHATSDK_SESSION_TOKEN", "env-token-123456")
        given: dict[str, Any] = {"api_key": "explicit-key-123456"}
    else:
        monkeypatch.setenv("CHATSDK_API_KEY", "env-api-key-123456")
        given = {"session_token": "explicit-token-123456", "project": "p"}
    async with ScriptedServer([Reply(body=kit.answer("hi"), content_type=SSE)]) as srv:
        async with chatsdk.ChatClient(base_url=srv.url, retries=0, **given) as client:
            async with asyncio.timeout(5):
                await kit.create(client)
    headers = srv.seen[0].headers
    if explicit == "api_key":
        assert headers.get("Authorization") == "Bearer explicit-key-123456"
        assert "Gram-Chat-Session" not in headers
    else:
        assert headers.get("Gram-Chat-Session") == "explicit-token-123456"
        assert "Authorization" not in headers and "Gram-Key" not in headers
    assert "env-" not in json.dumps(headers)


def slow_answer(kit: WireKit) -> Reply:
    # The end comes later than the first event: leaving early is really leaving early.
    return Reply(pieces=[kit.event("A"), kit.event("B") + kit.end()], delay=0.3, content_type=SSE)


@pytest.mark.anyio
@wires
@pytest.mark.parametrize("how", ["aclose after one event", "aclose before use", "async with"])
async def test_awaiting_a_stream_closed_early_is_a_stream_error(kit: WireKit, how: str) -> None:
    async with ScriptedServer([slow_answer(kit)]) as srv:
        async with client_for(srv.url) as client:
            stream = kit.create(client)
            async with asyncio.timeout(5):
                if how == "aclose after one event":
                    await stream.__anext__()
                    await stream.aclose()
                elif how == "aclose before use":
                    await stream.aclose()
                else:
                    async with stream:
                        async for _ in stream:
                            break
                with pytest.raises(chatsdk.StreamError):
                    await stream
                with pytest.raises(chatsdk.StreamError):
                    await stream.final_result()


@pytest.mark.anyio
@wires
@pytest.mark.parametrize("pace", ["whole answer in one write", "one event per write"])
@pytest.mark.parametrize(
    "how", ["break", "anext(aiter(stream))", "aclose", "text_stream break", "exception"]
)
async def test_a_loop_begun_after_the_stream_was_left_early(
    kit: WireKit, pace: str, how: str
) -> None:
    # A later loop never ends quietly on part of the answer, nor reads on: it raises
    # StreamError, whether the old loop is closed yet or not; unless the whole answer
    # had been read when the stream was left (nothing is lost), when it gives the rest.
    texts = [f"t{i} " for i in range(30)]
    body = kit.answer(*texts)
    pieces = [body] if pace == "whole answer in one write" else split_events(body)
    async with ScriptedServer([Reply(pieces=pieces, delay=0.002, content_type=SSE)]) as srv:
        async with client_for(srv.url) as client:
            stream = kit.create(client)
            before: list[Any] = []
            async with asyncio.timeout(5):
                if how == "break":
                    async for event in stream:
                        before.append(event)
                        break
                elif how == "anext(aiter(stream))":
                    before.append(await anext(aiter(stream)))
                elif how == "aclose":
                    before.append(await anext(stream))
                    await stream.aclose()
                elif how == "text_stream break":
                    async for _ in stream.text_stream:
                        before.append(chatsdk.MessageChunk(content_chunk=texts[0]))
                        break
                else:
                    with pytest.raises(KeyError):
                        async for event in stream:
                            before.append(event)
                            raise KeyError("boom")
                whole = stream._complete  # the whole answer was read before leaving
                for again in range(2):
                    got: list[Any] = []
                    try:
                        async for event in stream:
                            got.append(event)
                    except chatsdk.StreamError as exc:
                        assert not whole and "closed before its end" in str(exc)
                        assert got == [], f"loop {again + 2} read {len(got)} events"
                        with pytest.raises(chatsdk.StreamError, match="closed before its end"):
                            await stream
                    else:
                        assert whole, f"loop {again + 2} ended quietly on part of the answer"
                        if not again:
                            assert kit.texts(before + got) == texts
                        assert (await stream).text == "".join(texts)
    if pace == "one event per write":
        assert not whole


@pytest.mark.anyio
@wires
async def test_anext_takes_one_event_and_the_loop_goes_on(kit: WireKit) -> None:
    texts = [f"t{i} " for i in range(30)]
    async with ScriptedServer(
        [Reply(pieces=split_events(kit.answer(*texts)), delay=0.002, content_type=SSE)]
    ) as srv:
        async with client_for(srv.url) as client:
            stream = kit.create(client)
            async with asyncio.timeout(5):
                first = await anext(stream)
                rest = [event async for event in stream]
                result = await stream
            assert kit.texts([first, *rest]) == texts
            assert result.text == "".join(texts)
            # A stream read to its end is an exhausted iterator: no events, no error.
            assert [event async for event in stream] == []


@pytest.mark.anyio
@wires
@pytest.mark.parametrize("first_reads", ["async for", "await stream", "anext", "text_stream"])
@pytest.mark.parametrize("second_reads", ["async for", "text_stream", "await stream"])
async def test_a_second_task_reading_a_stream_is_refused_and_the_first_reads_on(
    kit: WireKit, first_reads: str, second_reads: str
) -> None:
    texts = [f"t{i} " for i in range(20)]
    reply = Reply(pieces=split_events(kit.answer(*texts)), delay=0.005, content_type=SSE)
    async with ScriptedServer([reply]) as srv:
        async with client_for(srv.url) as client:
            stream = kit.create(client)

            async def read(how: str) -> str:
                if how == "async for":
                    return "".join(kit.texts([event async for event in stream]))
                if how == "text_stream":
                    return "".join([piece async for piece in stream.text_stream])
                if how == "anext":
                    got = []
                    with contextlib.suppress(StopAsyncIteration):
                        while True:
                            got.append(await anext(stream))
                    return "".join(kit.texts(got))
                return str((await stream).text)

            async with asyncio.timeout(5):
                first = asyncio.create_task(read(first_reads))
                await asyncio.sleep(0.02)  # the first read is under way
                with pytest.raises(chatsdk.ValidationError, match="another task"):
                    await read(second_reads)
                assert await first == "".join(texts)


@pytest.mark.anyio
@wires
@pytest.mark.parametrize("waiting", ["for the headers", "out a Retry-After"])
async def test_closing_the_client_ends_a_call_waiting_at_once(kit: WireKit, waiting: str) -> None:
    finished = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request(reader)
            if waiting == "out a Retry-After":
                writer.write(b"HTTP/1.1 503 Busy\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
            await finished.wait()
        finally:
            writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    async with server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        retries = chatsdk.RetryPolicy(max_retries=2, initial_delay=0.01)
        client = client_for(url, retries=retries, timeout=chatsdk.Timeout(idle=8))
        call = asyncio.create_task(kit.create(client).final_result())
        await asyncio.sleep(0.3)
        await close_and_expect_prompt_end(client, call)
        finished.set()
        await asyncio.sleep(0.05)  # the handlers close their sockets


@pytest.mark.anyio
@wires
@pytest.mark.parametrize("timeout", [None, chatsdk.Timeout(idle=30)], ids=["no timeout", "idle"])
async def test_closing_the_client_ends_a_stream_being_read_at_once(
    kit: WireKit, timeout: chatsdk.Timeout | None
) -> None:
    texts = [f"t{i} " for i in range(100)]
    reply = Reply(pieces=split_events(kit.answer(*texts)), delay=0.05, content_type=SSE)
    async with ScriptedServer([reply]) as srv:
        client = client_for(srv.url, timeout=timeout)
        stream = kit.create(client)
        got: list[Any] = []
        three = asyncio.Event()

        async def read() -> None:
            async for event in stream:
                got.append(event)
                if len(got) == 3:
                    three.set()

        reader = asyncio.create_task(read())
        async with asyncio.timeout(5):
            await three.wait()
        await close_and_expect_prompt_end(client, reader)
        assert 3 <= len(got) < len(texts)


async def close_and_expect_prompt_end(client: chatsdk.ChatClient, call: asyncio.Task[Any]) -> None:
    """Close ``client``: ``call`` (a task using it) must end at once, with StreamError."""
    await client.aclose()
    closed = asyncio.get_running_loop().time()
    with pytest.raises(chatsdk.StreamError, match="client was closed"):
        async with asyncio.timeout(5):
            await call
    assert asyncio.get_running_loop().time() - closed < 0.5


def split_events(body: bytes) -> list[bytes]:
    """``body``'s events, one per write."""
    return [event + b"\n\n" for event in body.split(b"\n\n") if event]


@pytest.mark.anyio
@wires
async def test_a_stream_whose_read_was_cancelled_says_so(kit: WireKit) -> None:
    async with ScriptedServer([slow_answer(kit)]) as srv:
        async with client_for(srv.url) as client:
            stream = kit.create(client)
            async with asyncio.timeout(5):
                await anext(stream)
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(anext(stream), 0.05)
                for _ in range(2):
                    with pytest.raises(chatsdk.StreamError, match="a read of it was cancelled"):
                        await stream
                with pytest.raises(chatsdk.StreamError, match="a read of it was cancelled"):
                    [event async for event in stream]


HTML = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Please sign in</body>"


@pytest.mark.anyio
async def test_an_html_200_answer_to_tokens_create_is_a_response_validation_error() -> None:
    reply = Reply(body=HTML, content_type="text/html", headers={"X-Request-Id": "req-html-1"})
    async with ScriptedServer([reply]) as srv:
        async with chatsdk.ChatClient(KEY, project="p", base_url=srv.url, retries=0) as client:
            with pytest.raises(chatsdk.APIResponseValidationError) as info:
                async with asyncio.timeout(5):
                    await client.tokens.create(embed_origin="https://a.example")
    exc = info.value
    assert exc.status == 200
    assert exc.url == srv.url + "/rpc/chatSessions.create"
    assert exc.request_id == "req-html-1"
    assert "ValidationError" not in str(exc)
    assert "msgspec" not in str(exc)


@pytest.mark.anyio
@wires
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
async def test_an_html_200_answer_to_a_chat_call_is_a_response_validation_error(
    kit: WireKit, stream: bool
) -> None:
    reply = Reply(body=HTML, content_type="text/html", headers={"X-Request-Id": "req-html-2"})
    async with ScriptedServer([reply]) as srv:
        async with client_for(srv.url) as client:
            with pytest.raises(chatsdk.APIResponseValidationError) as info:
                async with asyncio.timeout(5):
                    await kit.create(client, stream=stream)
    exc = info.value
    assert exc.status == 200
    assert exc.url.startswith(srv.url + "/")
    assert exc.request_id == "req-html-2"
    assert "Please sign in" in str(exc) or "Sign in" in str(exc)  # an excerpt
    assert "ValidationError" not in str(exc)


# == 7. classification: a dropped connection is an APIConnectionError ==================


@pytest.mark.anyio
@wires
@pytest.mark.parametrize("where", ["mid-JSON", "mid-SSE"])
async def test_a_dropped_connection_is_an_api_connection_error(kit: WireKit, where: str) -> None:
    if where == "mid-JSON":
        json_start = b'{"chat_session_id": "s", "message": {"role": "assistant", "cont'
        if kit.name == "completions":
            json_start = b'{"id": "c", "object": "chat.completion", "choices": [{"index": 0, "me'
        script: list[Step] = [
            head(content_type="application/json", length=4000),
            json_start,
            PAUSE,
            "reset",
        ]
    else:
        script = [head(), chunk(kit.event("A") + kit.event("B")[:20]), PAUSE, "reset"]
    async with RawServer(script) as srv:
        async with client_for(srv.url) as client:
            with pytest.raises(chatsdk.APIConnectionError) as info:
                async with asyncio.timeout(5):
                    await kit.create(client, stream=where == "mid-SSE")
    assert not isinstance(info.value, chatsdk.APITimeoutError)
    assert len(srv.connections) == 1  # a body was under way: no retry


# == found by a fresh user trying to break it ===========================================

ECHO_KEY = "sk-echoed-secret-key-98765"


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> None:
    head = (await read_request(reader)).split(b"\r\n\r\n", 1)[0]
    page = body.replace(b"{HEADERS}", head.replace(b"\r\n", b" | "))  # one line
    auth = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"authorization"))
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n"
        b"X-Request-Id: %s\r\nX-Echo: %s\r\n\r\n"
        % (
            b"text/event-stream" if page.startswith((b"data", b"event")) else b"text/html",
            len(page),
            auth.split(b":", 1)[1].strip(),
            auth,
        )
        + page
    )
    await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def echoing(body: bytes) -> Any:
    """A server (a proxy, a WAF) that puts the request's headers into its answer."""
    server = await asyncio.start_server(lambda r, w: _echo(r, w, body), "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


def _error_chunk(wire: str) -> bytes:
    error = b'{"error": {"message": "{HEADERS}", "type": "x"}}'
    return (b"event: error\ndata: " if wire == "chat" else b"data: ") + error + b"\n\n"


@pytest.mark.anyio
@pytest.mark.parametrize("wire", ["chat", "completions"])
@pytest.mark.parametrize("answer", ["html", "wrong shape", "error event"])
async def test_an_echoed_key_never_reaches_an_exception(wire: str, answer: str) -> None:
    body = {
        "html": b"<html><body>Blocked: {HEADERS}</body></html>",
        "wrong shape": b'{"choices": "{HEADERS}", "chat_session_id": 1, "message": 2}',
        "error event": _error_chunk(wire),
    }[answer]
    async with echoing(body) as url:
        async with chatsdk.ChatClient(ECHO_KEY, base_url=url, retries=0) as client:
            with pytest.raises(chatsdk.ChatSDKError) as info:
                await WireKit(wire).create(client)
    error = info.value
    shown = "".join([str(error), repr(error), repr(vars(error)), *traceback_lines(error)])
    assert "Bearer" in shown or answer == "wrong shape"  # the echo arrived
    assert ECHO_KEY not in shown


def traceback_lines(error: BaseException) -> list[str]:
    import traceback

    return traceback.format_exception(error)


@pytest.mark.anyio
@pytest.mark.parametrize("wire", ["chat", "completions"])
async def test_awaiting_after_breaking_out_of_text_stream_is_a_stream_error(wire: str) -> None:
    kit = WireKit(wire)
    pieces = [kit.event(f"w{n} ") for n in range(40)] + [kit.end()]
    reply = Reply(pieces=pieces, delay=0.02, content_type=SSE, headers={"Content-Location": "/r"})
    async with ScriptedServer([reply]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=FAST) as client:
            stream = kit.create(client)
            async for _text in stream.text_stream:
                break
            began = time.monotonic()
            with pytest.raises(chatsdk.StreamError, match="closed before its end"):
                await stream
            assert time.monotonic() - began < 0.5  # no resume, no reading on
            assert stream.resumes == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("provider_kind", "raised"),
    [
        ("async", "RuntimeError: the backend is down"),
        ("plain", "RuntimeError: the backend is down"),
        ("plain, StopIteration", "StopIteration"),  # next() on an empty cache
        ("async, its own CancelledError", "CancelledError"),
        ("plain, GeneratorExit", "GeneratorExit"),
    ],
)
async def test_a_failing_token_provider_is_a_typed_error_with_its_cause(
    provider_kind: str, raised: str
) -> None:
    # docs/errors.md: every error derives from ChatSDKError; the provider's own is chained.
    async def failing_async() -> str:
        raise RuntimeError("the backend is down")

    def failing_plain() -> str:
        raise RuntimeError("the backend is down")

    def stop() -> str:
        return next(iter([]))

    async def cancelled() -> str:
        raise asyncio.CancelledError

    def generator_exit() -> str:
        raise GeneratorExit

    provider = {
        "async": failing_async,
        "plain": failing_plain,
        "plain, StopIteration": stop,
        "async, its own CancelledError": cancelled,
        "plain, GeneratorExit": generator_exit,
    }[provider_kind]
    async with ScriptedServer([Reply(body=b"", content_type=SSE)]) as srv:
        async with chatsdk.ChatClient(session_token=provider, project="p", base_url=srv.url) as c:
            with pytest.raises(chatsdk.APIConnectionError, match="provider failed") as info:
                async with asyncio.timeout(5):
                    await c.chat.completions.create(model="m", messages="q")
    assert raised in str(info.value)
    assert type(info.value.__cause__).__name__ == raised.split(":")[0]
    assert srv.seen == []


@pytest.mark.anyio
async def test_one_provider_call_serves_every_waiting_call_even_if_its_caller_is_cancelled() -> (
    None
):
    calls: list[int] = []

    async def provider() -> str:
        calls.append(1)
        await asyncio.sleep(0.2)
        return "shared-token-1234"

    replies = [Reply(body=WireKit("completions").answer("hi"), content_type=SSE)] * 10
    async with ScriptedServer(replies) as srv:
        async with chatsdk.ChatClient(session_token=provider, project="p", base_url=srv.url) as c:
            tasks = [
                asyncio.create_task(
                    c.chat.completions.create(model="m", messages="q").final_result()
                )
                for _ in range(10)
            ]
            await asyncio.sleep(0.05)
            tasks[0].cancel()  # the call that started the provider
            async with asyncio.timeout(5):
                done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[0], asyncio.CancelledError)
    assert [r.text for r in done[1:]] == ["hi"] * 9
    assert calls == [1]
    assert {s.headers["Gram-Chat-Session"] for s in srv.seen} == {"shared-token-1234"}


@pytest.mark.anyio
async def test_a_hanging_token_provider_is_bounded_by_the_timeouts() -> None:
    async def never() -> str:
        await asyncio.sleep(3600)
        return "never"

    async with ScriptedServer([Reply(body=b"", content_type=SSE)]) as srv:
        async with chatsdk.ChatClient(
            session_token=never, project="p", base_url=srv.url, timeout=chatsdk.Timeout(total=0.3)
        ) as client:
            began = time.monotonic()
            with pytest.raises(chatsdk.APITimeoutError, match="session_token provider"):
                await client.chat.completions.create(model="m", messages="q")
    assert time.monotonic() - began < 1.5 and srv.seen == []


@pytest.mark.anyio
@pytest.mark.parametrize("wire", ["chat", "completions"])
async def test_an_html_page_labelled_as_an_event_stream_is_an_invalid_response(wire: str) -> None:
    page = b"<!doctype html><html><title>Sign in</title></html>"
    async with ScriptedServer([Reply(body=page, content_type=SSE)]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as client:
            with pytest.raises(chatsdk.APIResponseValidationError, match="Sign in"):
                await WireKit(wire).create(client)


@pytest.mark.anyio
async def test_a_login_page_answering_a_revoke_is_not_a_revoke() -> None:
    page = b"<html>Please sign in</html>"
    async with ScriptedServer([Reply(body=page, content_type="text/html")]) as srv:
        async with chatsdk.ChatClient(KEY, project="p", base_url=srv.url, retries=0) as client:
            with pytest.raises(chatsdk.APIResponseValidationError, match="HTML"):
                await client.tokens.revoke("a-client-token-123456")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [b"", b": only a comment\n\n", b'event: message_chunk\ndata: {"content_chunk": "Hi "}\n\n'],
    ids=["empty", "comment", "no finish_reason"],
)
async def test_a_chat_results_body_without_a_finished_answer_is_a_stream_error(
    body: bytes,
) -> None:
    async with ScriptedServer([Reply(body=body, content_type=SSE)]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as client:
            with pytest.raises(chatsdk.StreamError, match="answer is incomplete") as info:
                await client.chat.create(integration_id="docs", messages="q")
    assert "finish_reason" in str(info.value)  # what ends a chat_results answer
    assert "end marker" not in str(info.value)  # the wire has none


@pytest.mark.anyio
async def test_a_chat_results_body_ending_right_after_the_finish_is_whole() -> None:
    # No records_cited after it (a server that cites nothing sends none).
    body = (
        b'event: message_chunk\ndata: {"content_chunk": "Hi "}\n\n'
        b'event: message_chunk\ndata: {"content_chunk": "", "finish_reason": "stop"}\n\n'
    )
    async with ScriptedServer([Reply(body=body, content_type=SSE)]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as client:
            result = await client.chat.create(integration_id="docs", messages="q")
    assert (result.text, result.finish_reason, result.citations) == ("Hi ", "stop", [])


@pytest.mark.anyio
async def test_two_tasks_reading_one_stream_is_a_validation_error() -> None:
    kit = WireKit("completions")
    reply = Reply(pieces=[kit.event("a "), kit.end()], delay=0.3, content_type=SSE)
    async with ScriptedServer([reply]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as client:
            stream = kit.create(client)
            first = asyncio.create_task(stream.final_result())
            await asyncio.sleep(0.1)
            with pytest.raises(chatsdk.ValidationError, match="one task at a time"):
                await stream.final_result()
            assert (await first).text == "a "


def test_a_misspelled_variable_is_reported_even_with_a_key(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CHATSDK_BASEURL", "http://127.0.0.1:9")
    with caplog.at_level("WARNING", logger="chatsdk"):
        chatsdk.ChatClient(KEY)
    assert "CHATSDK_BASE_URL for CHATSDK_BASEURL" in caplog.text


def test_retry_policies_refuse_what_cannot_be_computed() -> None:
    for bad in ({"initial_delay": float("nan")}, {"multiplier": float("inf")}):
        with pytest.raises(chatsdk.ValidationError):
            chatsdk.RetryPolicy(**bad)  # type: ignore[arg-type]
    # Thousands of retries: the wait is the cap, never an OverflowError.
    assert chatsdk.RetryPolicy(max_retries=5000, jitter=0).backoff(4999) == 8.0


@pytest.mark.parametrize("wire", ["chat", "completions"])
def test_stream_must_be_a_bool_and_a_question_not_empty(wire: str) -> None:
    client = chatsdk.ChatClient(KEY, base_url="http://127.0.0.1:9")
    with pytest.raises(chatsdk.ValidationError, match="stream must be True or False"):
        WireKit(wire).create(client, stream="yes")
    with pytest.raises(chatsdk.ValidationError, match="empty"):
        if wire == "chat":
            client.chat.create(integration_id="docs", messages="  ")
        else:
            client.chat.completions.create(model="m", messages="  ")
