"""Hostile servers: fuzzed event streams, and misbehaviour written byte by byte on raw sockets.

The promise under test: whatever a server sends, only :class:`chatsdk.StreamError` or
:class:`chatsdk.APIConnectionError` (``APITimeoutError`` included) escapes, or the
stream finishes cleanly; memory stays bounded by the event-size limit; nothing hangs
(every call runs under ``asyncio.timeout``); no connection leaks (pytest turns a
``ResourceWarning`` into an error).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import itertools
import json
import os
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import aiohttp
import multidict
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chatsdk
from chatsdk.sse import SSEDecoder
from tests.scripted import Reply, ScriptedServer
from tests.support import play
from tests.support import read_request as read_head

pytestmark = pytest.mark.anyio

KEY = "hostile-test-api-key-1234"
FAST = chatsdk.RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.02)
TYPED = (chatsdk.StreamError, chatsdk.APIConnectionError, chatsdk.APIError)
# Small limits make oversized lines and events cheap to reach.
LIMIT = 2048

CHUNK = (
    b"event: message_chunk\n"
    b'data: {"chat_session_id":"s","content_chunk":"hi","finish_reason":null}\n\n'
)
LAST = (
    b"event: message_chunk\n"
    b'data: {"chat_session_id":"s","content_chunk":"","finish_reason":"stop"}\n\n'
)
CITED = (
    b"event: records_cited\n"
    b'data: {"citations":[{"number":1,"record":{"type":"documentation","url":"u"}}]}\n\n'
)

# -- adversarial event streams -----------------------------------------------------------

_JSON_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20
).map(json.dumps)

_PIECES: list[st.SearchStrategy[bytes]] = [
    st.binary(max_size=64),  # random bytes
    st.sampled_from([CHUNK, LAST, CITED, b"data: plain\n\n", b"id: 7\ndata: x\n\n"]),
    _JSON_TEXT.map(
        lambda t: b'event: message_chunk\ndata: {"content_chunk":' + t.encode() + b"}\n\n"
    ),
    st.integers(1, 3 * LIMIT).map(lambda n: b"data: " + b"x" * n),  # huge line
    st.integers(1, 400).map(lambda n: b"data: abcdef\n" * n),  # endless data lines
    st.sampled_from(
        [
            b"\x00",
            b"id: 1\x002\n\n",
            b"event: message_chunk\x00\ndata: {}\n\n",
            b"\r",  # lone CR
            b"data: a\rdata: b\r\r",
            b"\r\n\r\n",
            b"\xff\xfe",  # invalid UTF-8
            b"\xc3",  # a character cut in half
            b"\xed\xa0\x80",  # an encoded surrogate
            b"\xef\xbb\xbf",  # a BOM, anywhere
            b": ping\n",
            b"retry: 99999999999999999999999999\n",
            b"retry: -1\n",
            b"retry: \xd9\xa3\n",
            b"event: message_chunk\ndata: {not json\n\n",
            b'event: message_chunk\ndata: {"content_chunk": 5}\n\n',
            b'event: message_chunk\ndata: {"content_chunk": "a", "finish_reason": [1]}\n\n',
            b'event: message_chunk\ndata: ["content_chunk"]\n\n',
            b"event: message_chunk\ndata: \n\n",
            b"event: message_chunk\ndata: null\n\n",
            b'event: records_cited\ndata: {"citations": 1}\n\n',
            b'event: records_cited\ndata: {"citations": [{"record": {}}]}\n\n',
            b'event: records_cited\ndata: {"citations": [{"record": {"type": "x"}, "number": 1e9'
            b"99}]}\n\n",
            b"event: brand_new\ndata: {}\n\n",  # unknown event
            b"event: \ndata: x\n\n",
            b"event\ndata\n\n",
            b"data:" + "é".encode() * 10 + b"\n\n",
        ]
    ),
]

streams = st.lists(st.one_of(*_PIECES), max_size=12).map(b"".join)


@st.composite
def chunked(draw: st.DrawFn) -> list[bytes]:
    """An adversarial stream cut into chunks at arbitrary points."""
    data = draw(streams)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


# == 1. the sans-IO decoder =============================================================


@settings(max_examples=400, deadline=None, derandomize=True)
@given(chunked(), st.booleans())
def test_decoder_only_ever_raises_stream_error(chunks: list[bytes], fast_path: bool) -> None:
    decoder = SSEDecoder(max_line_size=LIMIT, max_event_size=LIMIT, fast_path=fast_path)
    try:
        for chunk in chunks:
            for event in decoder.feed(chunk):
                assert len(event.data) <= LIMIT
                assert "\x00" not in event.id
                assert isinstance(event.event, str) and event.event
    except chatsdk.StreamError as exc:
        assert len(str(exc)) < 2000  # an excerpt, never the whole input


# Input that must make the decoder fail fast: one line or one event grows without end.
OVERFLOWING = {
    "one endless data line": b"data: " + b"x" * 65530,
    "one endless comment": b":" + b"x" * 65535,
    "endless data lines": b"data: abcdefghijklmnopqrstuvwxyz\n" * 2048,
    "endless NUL bytes": b"\x00" * 65536,
    "endless invalid UTF-8": b"\xff" * 65536,
}
# Input the decoder may take forever, keeping nothing: lines that never grow an event.
# About a thousand lines each, for tracemalloc makes each line some 20 µs slower.
HARMLESS = {
    "endless event-type lines": b"event: message_chunk\n" * 1000,
    "endless id lines": b"id: 12345\n" * 1000,
    "endless lone CRs": b"\r" * 1000,
    "endless tiny events": b"data:x\n\n" * 1000,
    "endless comments": b": ping\n" * 1000,
}
MEMORY_LIMIT = 4096


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "reference"])
@pytest.mark.parametrize("name", list(OVERFLOWING))
def test_decoder_fails_fast_on_input_that_grows_without_end(name: str, fast_path: bool) -> None:
    """16 MiB offered 64 KiB at a time against a 4 KiB limit: StreamError within the
    first two chunks, holding little more than one chunk."""
    chunk = OVERFLOWING[name]
    decoder = SSEDecoder(
        max_line_size=MEMORY_LIMIT, max_event_size=MEMORY_LIMIT, fast_path=fast_path
    )
    fed = 0
    tracemalloc.start()
    try:
        with pytest.raises(chatsdk.StreamError):
            while fed < 16 * 1024 * 1024:
                fed += len(chunk)
                decoder.feed(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fed <= 2 * len(chunk)
    assert peak < 1024 * 1024, f"{name}: peak {peak} bytes"


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "reference"])
@pytest.mark.parametrize("name", list(HARMLESS))
def test_decoder_memory_does_not_grow_with_endless_input(name: str, fast_path: bool) -> None:
    """The peak while feeding 16 more chunks is no higher than while feeding the first 4:
    nothing accumulates (the events are dropped at once, as a consumer would)."""
    chunk = HARMLESS[name]
    decoder = SSEDecoder(
        max_line_size=MEMORY_LIMIT, max_event_size=MEMORY_LIMIT, fast_path=fast_path
    )
    tracemalloc.start()
    try:
        for _ in range(4):
            decoder.feed(chunk)
        _, warm = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(16):
            decoder.feed(chunk)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= warm + 16 * 1024, f"{name}: {warm} then {peak} bytes"
    assert peak < 1024 * 1024 and current < 64 * 1024


# Input on which a reader that searches for separators could go quadratic: long runs of
# blank or comment lines after events (each blank line starts a search that reads on).
# Read line by line they take some 20 ms; quadratically, tens of seconds each.
LINEAR = {
    "65,000 blank lines": b"data: c\n\n" + b"\n" * 65000,
    "21,800 comment pings": b"data: c\n\n" + b":\n\n" * 21800,
    "32,700 CRLF blank lines": b"data: c\r\n\r\n" + b"\r\n" * 32700,
    "20,000 pings before another type": b": ping\n\n" * 20000 + b"event: b\ndata: 3\n\n",
}


@pytest.mark.timeout(8)  # a hang guard, not a speed test: linear takes well under 1 s
@pytest.mark.parametrize("name", list(LINEAR))
def test_decoder_stays_linear_on_long_runs_of_blank_and_comment_lines(name: str) -> None:
    for warm_up in (b"", b"data: a\n\n\ndata: b\n\n", b"event: a\ndata: 1\n\n:\n\n"):
        decoder, reference = SSEDecoder(), SSEDecoder(fast_path=False)
        assert decoder.feed(warm_up) == reference.feed(warm_up)  # comment lines seen
        assert decoder.feed(LINEAR[name]) == reference.feed(LINEAR[name])


# == 2. the stream object, over HTTP =====================================================


def make_client(url: str, **kw: Any) -> chatsdk.ChatClient:
    kw.setdefault("retries", 0)
    kw.setdefault("timeout", chatsdk.Timeout(connect=2, read=2, idle=2, total=10))
    return chatsdk.ChatClient(KEY, base_url=url, max_event_size=LIMIT, **kw)


async def consume(client: chatsdk.ChatClient) -> list[chatsdk.ChatEvent]:
    events: list[chatsdk.ChatEvent] = []
    async with asyncio.timeout(15):  # a hang fails the test instead of stalling it
        async for event in client.chat.create(integration_id="docs", messages="q"):
            events.append(event)
    return events


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(chunked())
async def test_stream_object_only_raises_typed_errors(chunks: list[bytes]) -> None:
    reply = Reply(pieces=chunks or [b""], content_type="text/event-stream")
    async with ScriptedServer([reply]) as srv, make_client(srv.url) as client:
        try:
            events = await consume(client)
        except TYPED as exc:
            assert len(str(exc)) < 4000
        else:
            kinds = (chatsdk.MessageChunk, chatsdk.RecordsCited, chatsdk.UnknownEvent)
            assert all(isinstance(e, kinds) for e in events)


@pytest.mark.parametrize(
    ("name", "piece", "expected"),
    [
        ("endless data line", b"data: " + b"x" * 65530, chatsdk.StreamError),
        ("endless data lines", b"data: abcdefghijklmnopqrstuvwxyz\n" * 2048, chatsdk.StreamError),
        ("endless comments", b": ping\n" * 9000, chatsdk.APITimeoutError),
    ],
)
async def test_stream_memory_is_bounded_whatever_the_server_sends(
    name: str, piece: bytes, expected: type[Exception]
) -> None:
    """The server offers 64 MiB; the client's peak stays a few MiB (aiohttp's buffers
    included) and the call ends with the typed error."""
    reply = Reply(pieces=[piece] * 1024, content_type="text/event-stream")
    async with ScriptedServer([reply]) as srv:
        tracemalloc.start()
        try:
            async with make_client(srv.url, timeout=chatsdk.Timeout(idle=0.5, total=20)) as client:
                with pytest.raises(expected):
                    await consume(client)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"{name}: peak {peak} bytes"


async def deeply_nested_json_payload_is_a_stream_error() -> None:
    deep = b'{"content_chunk":"a","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    body = b"event: message_chunk\ndata: " + deep + b"\n\n"
    async with ScriptedServer([Reply(body=body, content_type="text/event-stream")]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as client:
            with pytest.raises(chatsdk.StreamError):
                await consume(client)


async def test_deeply_nested_json_in_an_event_payload_is_a_stream_error_xfail() -> None:
    await deeply_nested_json_payload_is_a_stream_error()


async def test_non_utf8_json_answer_is_an_invalid_response() -> None:
    body = b'{"chat_session_id": "s", "message": {"role": "assistant", "content": "\xff"}}'
    async with ScriptedServer([Reply(body=body)]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as client:
            with pytest.raises(chatsdk.APIResponseValidationError, match="UTF-8"):
                await client.chat.create(integration_id="docs", messages="q", stream=False)


async def test_non_utf8_token_answer_is_an_invalid_response() -> None:
    body = b'{"client_token": "\xff", "embed_origin": "x", "expires_after": 1, "status": "a"}'
    async with ScriptedServer([Reply(body=body)]) as srv:
        async with chatsdk.ChatClient(KEY, project="p", base_url=srv.url, retries=0) as client:
            with pytest.raises(chatsdk.APIResponseValidationError, match="UTF-8"):
                await client.tokens.create(embed_origin="https://a.example")


async def test_a_large_non_streaming_answer_is_read_whole() -> None:
    answer = {"chat_session_id": "s", "message": {"role": "assistant", "content": "x" * 300_000}}
    body = json.dumps(answer).encode()
    pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    async with ScriptedServer([Reply(pieces=pieces, delay=0.01)]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as client:
            result = await client.chat.create(integration_id="docs", messages="q", stream=False)
    assert len(result.text) == 300_000


async def test_a_server_replaying_from_the_start_on_every_resume_is_refused() -> None:
    # Each resume gets event 1 again and the same cut: the replay is dropped, so no
    # resume brings a new event and the resume budget runs out.
    body = b"id: 1\n" + CHUNK + b"event: message_chunk\ndata: {"  # ends mid-event
    reply = Reply(body=body, content_type="text/event-stream", headers={"Content-Location": "/r"})
    async with ScriptedServer([reply]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=FAST) as client:
            with pytest.raises(chatsdk.StreamError):
                async with asyncio.timeout(3):
                    await consume(client)


def numbered(first: int, last: int, *, final: bool = False) -> bytes:
    """Events ``first``..``last`` (ids and content alike), as the reference server numbers
    them; with ``final``, the last one finishes the answer (``finish_reason``)."""
    return b"".join(
        b'id: %d\nevent: message_chunk\ndata: {"content_chunk":"%d "%s}\n\n'
        % (n, n, b',"finish_reason":"stop"' if final and n == last else b"")
        for n in range(first, last + 1)
    )


CUT = b"event: message_chunk\ndata: {"  # a body that ends here ends mid-event: a drop
RESUMABLE = {"Content-Location": "/chat_sessions/results/r1/events"}


async def read_resumed(
    *bodies: bytes,
) -> tuple[chatsdk.ChatStream, list[chatsdk.ChatEvent], ScriptedServer]:
    """A stream read whole from resumable answers with these bodies, one per connection."""
    replies = [Reply(body=b, content_type="text/event-stream", headers=RESUMABLE) for b in bodies]
    async with ScriptedServer(replies) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=FAST) as client:
            stream = client.chat.create(integration_id="docs", messages="q")
            got = [event async for event in stream]
    return stream, got, srv


def texts(events: list[chatsdk.ChatEvent]) -> list[str]:
    return [e.content_chunk for e in events if isinstance(e, chatsdk.MessageChunk)]


@pytest.mark.parametrize(
    ("ids", "replayed_from"), [("decimal", 1), ("decimal", 5), ("opaque", 1), ("opaque", 5)]
)
async def test_a_resume_that_replays_events_already_delivered_delivers_them_once(
    ids: str, replayed_from: int
) -> None:
    # Events 1-5 arrive, the connection drops, and the resumed body starts again at an
    # event already delivered. Ids are opaque (WHATWG), decimal or not: a replay is
    # recognised as the id sent (5) or, for a replay from the top, the stream's first id.
    first = numbered(1, 5) + CUT
    again = numbered(replayed_from, 8, final=True)
    if ids == "opaque":
        first, again = (body.replace(b"id: ", b"id: ev-") for body in (first, again))
    stream, got, srv = await read_resumed(first, again)
    assert texts(got) == [f"{n} " for n in range(1, 9)]
    assert stream.resumes == 1
    assert stream.replays_dropped == 6 - replayed_from
    last_event_id = "5" if ids == "decimal" else "ev-5"
    assert srv.seen[1].headers["Last-Event-ID"] == last_event_id


async def test_a_drop_in_the_middle_of_a_replay_resumes_from_the_id_first_sent() -> None:
    replies = [
        Reply(body=numbered(1, 5) + CUT, content_type="text/event-stream", headers=RESUMABLE),
        # Replays 1-3 (dropped), then drops again: the next resume must still say 5.
        Reply(body=numbered(1, 3) + CUT, content_type="text/event-stream", headers=RESUMABLE),
        Reply(body=numbered(6, 8, final=True), content_type="text/event-stream", headers=RESUMABLE),
    ]
    async with ScriptedServer(replies) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=FAST) as client:
            stream = client.chat.create(integration_id="docs", messages="q")
            got = [event async for event in stream]
    assert texts(got) == [f"{n} " for n in range(1, 9)]
    assert [seen.headers.get("Last-Event-ID") for seen in srv.seen] == [None, "5", "5"]
    assert stream.replays_dropped == 3


async def test_a_resumed_connection_that_sends_no_event_keeps_the_id_to_resume_from() -> None:
    replies = [
        Reply(body=numbered(1, 2) + CUT, content_type="text/event-stream", headers=RESUMABLE),
        # Resumed, but only a comment and a cut: still nothing after id 2.
        Reply(body=b": ping\n\n" + CUT, content_type="text/event-stream", headers=RESUMABLE),
        Reply(body=numbered(3, 4, final=True), content_type="text/event-stream", headers=RESUMABLE),
    ]
    async with ScriptedServer(replies) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=FAST) as client:
            got = await consume(client)
    assert texts(got) == ["1 ", "2 ", "3 ", "4 "]
    assert [seen.headers.get("Last-Event-ID") for seen in srv.seen] == [None, "2", "2"]


async def test_a_drop_after_events_without_ids_is_refused_rather_than_replayed() -> None:
    # Nothing to put in Last-Event-ID: a reconnection would start from the top.
    body = CHUNK * 3 + CUT
    reply = Reply(body=body, content_type="text/event-stream", headers=RESUMABLE)
    async with ScriptedServer([reply]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=FAST) as client:
            got: list[chatsdk.ChatEvent] = []
            with pytest.raises(chatsdk.StreamError, match="no event id to resume from"):
                async for event in client.chat.create(integration_id="docs", messages="q"):
                    got.append(event)
    assert len(got) == 3
    assert len(srv.seen) == 1  # no reconnection was attempted


def plain(first: int, last: int, *, final: bool = False) -> bytes:
    """Events ``first``..``last`` as numbered() makes them, without their id lines."""
    return b"".join(
        line for line in numbered(first, last, final=final).splitlines(True) if b"id: " not in line
    )


@pytest.mark.parametrize(
    "delivered",
    [
        numbered(1, 1) + plain(2, 3),  # an id on the first event only
        numbered(1, 1) + plain(2, 2) + numbered(3, 3) + plain(4, 4),  # on odd events
        numbered(1, 2) + b"id: 3\x00\n" + plain(3, 3),  # an id holding a NUL is no id
    ],
    ids=["first-only", "odd-events", "nul-id"],
)
async def test_a_drop_after_events_without_their_own_id_is_refused_rather_than_doubled(
    delivered: bytes,
) -> None:
    # Those events report the id before them (WHATWG): a server that honours
    # Last-Event-ID would send them again, so resuming would double them.
    honouring = plain(2, 5, final=True)  # what a resume after id 1 would bring
    got = await a_refused_resume(
        Reply(body=delivered + CUT, content_type="text/event-stream", headers=RESUMABLE),
        honouring,
        "carried no id of their own",
    )
    assert texts(got) == [f"{n} " for n in range(1, len(got) + 1)]


async def a_refused_resume(first: Reply, honouring: bytes, error: str) -> list[chatsdk.ChatEvent]:
    """The events a stream cut after ``first`` delivered before raising a StreamError
    matching ``error``, without reconnecting (to a server that would send ``honouring``)."""
    replies = [first, Reply(body=honouring, content_type="text/event-stream", headers=RESUMABLE)]
    async with ScriptedServer(replies) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=FAST) as client:
            got: list[chatsdk.ChatEvent] = []
            with pytest.raises(chatsdk.StreamError, match=error):
                async for event in client.chat.create(integration_id="docs", messages="q"):
                    got.append(event)
    assert len(srv.seen) == 1  # no reconnection was attempted
    return got


@pytest.mark.parametrize("where", ["last event", "an id-only block after it"])
async def test_a_drop_after_an_empty_id_line_is_refused_rather_than_resumed_from_the_id_before(
    where: str,
) -> None:
    # An empty `id:` clears the id (WHATWG): resuming from the one before it would bring
    # the events after it again.
    cleared = (
        b"id:\n" + plain(3, 3)
        if where == "last event"
        else plain(3, 3) + b"id:\n\n"  # a block with only the id line
    )
    # Written apart, so that the client reads id 2 before the line that clears it.
    delivered = [numbered(1, 2), cleared + CUT]
    got = await a_refused_resume(
        Reply(pieces=delivered, delay=0.05, content_type="text/event-stream", headers=RESUMABLE),
        plain(3, 5, final=True),
        "no event id to resume from",
    )
    assert texts(got) == ["1 ", "2 ", "3 "]


async def test_a_replay_from_the_top_is_dropped_when_every_event_has_the_same_id() -> None:
    # The first replayed event carries the id sent and the stream's first id at once:
    # with ids that repeat, only a replay from the top makes sense.
    same = b"".join(
        b'id: c1\nevent: message_chunk\ndata: {"content_chunk":"%d "%s}\n\n'
        % (n, b',"finish_reason":"stop"' if n == 5 else b"")
        for n in range(1, 6)
    )
    cut_after_3 = b"".join(same.split(b"\n\n")[i] + b"\n\n" for i in range(3))
    stream, got, _ = await read_resumed(cut_after_3 + CUT, same)
    assert texts(got) == [f"{n} " for n in range(1, 6)]
    assert stream.replays_dropped == 3


# == 3. raw sockets =====================================================================

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handle: Handler) -> AsyncIterator[str]:
    """A server answering with bytes written by hand; yields its base URL."""
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)  # type: ignore[arg-type]
        writers.append(writer)
        try:
            await handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            # The client left, as it should after a failure, or the test is over. (A
            # cancelled handler would make asyncio log an error from its done callback.)
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        for writer in writers:
            writer.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def scripted(*steps: bytes | float | str) -> Handler:
    """A handler: read the request, then write bytes, sleep (float) or "reset"/"close"."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        if not await play(steps, writer):
            await reader.read()  # hold the connection until the client leaves

    return handle


def dripped(data: bytes, every: float) -> Handler:
    """A handler writing ``data`` one byte at a time (then closing)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)
        writer.close()

    return handle


def forever(prefix: bytes, unit: bytes, every: float) -> Handler:
    """A handler writing ``prefix`` then ``unit`` every ``every`` seconds, forever."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(prefix)
        while True:
            writer.write(unit)
            await writer.drain()
            await asyncio.sleep(every)

    return handle


PAUSE = 0.05  # lets the client read what was written before the connection is cut
STREAM_FAILURES: dict[str, tuple[Handler, type[Exception], int]] = {
    # name: (server, the error expected, events the caller gets before it)
    "reset before the status line": (scripted("reset"), chatsdk.APIConnectionError, 0),
    "close before the status line": (scripted("close"), chatsdk.APIConnectionError, 0),
    "reset after the headers": (scripted(SSE_HEAD, PAUSE, "reset"), chatsdk.APIConnectionError, 0),
    "reset mid-event": (
        scripted(SSE_HEAD, chunk(CHUNK), chunk(b"event: message_chunk\ndata: {"), PAUSE, "reset"),
        chatsdk.APIConnectionError,
        1,
    ),
    "reset mid-chunk-size line": (
        scripted(SSE_HEAD, chunk(CHUNK), b"1", PAUSE, "reset"),
        chatsdk.APIConnectionError,
        1,
    ),
    "truncated chunked encoding (no last chunk)": (
        scripted(SSE_HEAD, chunk(CHUNK), PAUSE, "close"),
        chatsdk.APIConnectionError,
        1,
    ),
    "chunk shorter than its size": (
        # 256 bytes announced, one event sent: the event is data, and arrives.
        scripted(SSE_HEAD, chunk(CHUNK), b"100\r\n" + CHUNK, PAUSE, "close"),
        chatsdk.APIConnectionError,
        2,
    ),
    # A StreamError at once with either of aiohttp's parsers (its C parser alone would
    # leave the reader waiting: see test_a_body_that_cannot_be_framed_fails_at_once).
    "invalid chunk size": (
        scripted(SSE_HEAD, chunk(CHUNK), PAUSE, b"zz\r\n" + CHUNK, PAUSE, "close"),
        chatsdk.StreamError,
        1,
    ),
    "body shorter than Content-Length": (
        scripted(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 10000\r\n\r\n",
            CHUNK,
            PAUSE,
            "close",
        ),
        chatsdk.APIConnectionError,
        1,
    ),
    "garbage status line": (scripted(b"SPAM EGGS\r\n\r\n"), chatsdk.APIConnectionError, 0),
    "garbage header line": (
        scripted(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"),
        chatsdk.APIConnectionError,
        0,
    ),
    "1 MiB header": (
        scripted(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 2**20 + b"\r\n\r\n"),
        chatsdk.APIConnectionError,
        0,
    ),
    "switching protocols": (
        scripted(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n",
            b"\x00" * 64,
        ),
        chatsdk.ChatSDKError,
        0,
    ),
}


@pytest.mark.parametrize("name", list(STREAM_FAILURES))
async def test_misbehaving_server_raises_a_typed_error(name: str) -> None:
    handler, expected, before = STREAM_FAILURES[name]
    got: list[chatsdk.ChatEvent] = []
    async with raw_server(handler) as url:
        timeout = chatsdk.Timeout(connect=2, read=1, idle=1)
        async with chatsdk.ChatClient(KEY, base_url=url, retries=FAST, timeout=timeout) as client:
            began = time.monotonic()
            with pytest.raises(expected) as info:
                async with asyncio.timeout(10):
                    async for event in client.chat.create(integration_id="docs", messages="q"):
                        got.append(event)
    assert isinstance(info.value, TYPED), repr(info.value)
    assert len(got) == before
    assert time.monotonic() - began < 5
    gc.collect()  # an unclosed connection would warn (an error here) now


async def test_a_valid_stream_dripped_byte_by_byte_finishes() -> None:
    body = CHUNK + LAST + CITED
    data = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )
    async with raw_server(dripped(data, 0.001)) as url:
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0) as client:
            async with asyncio.timeout(20):
                result = await client.chat.create(integration_id="docs", messages="q")
    assert result.text == "hi" and result.finish_reason == "stop" and result.citations


async def test_a_body_read_until_close_finishes_cleanly() -> None:
    # HTTP/1.0 without a length: the body ends when the server closes. Legitimate.
    data = b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + CHUNK + LAST
    async with raw_server(scripted(data, "close")) as url:
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0) as client:
            async with asyncio.timeout(10):
                result = await client.chat.create(integration_id="docs", messages="q")
    assert result.text == "hi"


async def test_a_body_read_until_close_reset_mid_event_is_a_stream_error() -> None:
    # Without a length a reset looks like the body's end to aiohttp (it ends the body
    # at the close either way): the event left unfinished makes it a StreamError, typed
    # and never a quietly shorter answer, the events before it delivered.
    data = b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + CHUNK
    handler = scripted(data, b"event: message_chunk\ndata: {", PAUSE, "reset")
    async with raw_server(handler) as url:
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0) as client:
            got: list[Any] = []
            with pytest.raises(chatsdk.StreamError, match="middle of an event"):
                async with asyncio.timeout(10):
                    async for event in client.chat.create(integration_id="docs", messages="q"):
                        got.append(event)
    assert [e.content_chunk for e in got] == ["hi"]


IDLE = chatsdk.Timeout(connect=2, read=5, idle=0.5)
HANGS: dict[str, Handler] = {
    # Each byte resets aiohttp's read timeout; only idle (or total) can end these.
    "headers dripped forever": forever(b"HTTP/1.1 200 OK\r\n", b"X", 0.01),
    "header lines forever": forever(b"HTTP/1.1 200 OK\r\n", b"X-A: b\r\n", 0.01),
    "100 Continue forever": forever(b"", b"HTTP/1.1 100 Continue\r\n\r\n", 0.01),
    "comments forever": forever(SSE_HEAD, chunk(b": ping\n"), 0.01),
    "one endless line": forever(SSE_HEAD + chunk(b"data: "), chunk(b"x"), 0.01),
    "chunk-size digits forever": forever(SSE_HEAD, b"0", 0.01),
    "event never finished": forever(
        SSE_HEAD + chunk(b"event: message_chunk\n"), chunk(b"id: 1\n"), 0.01
    ),
}


@pytest.mark.parametrize("name", list(HANGS))
async def test_a_slow_drip_ends_at_the_idle_timeout(name: str) -> None:
    async with raw_server(HANGS[name]) as url:
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0, timeout=IDLE) as client:
            began = time.monotonic()
            with pytest.raises(chatsdk.APITimeoutError, match="idle"):
                async with asyncio.timeout(10):
                    await client.chat.create(integration_id="docs", messages="q")
    assert time.monotonic() - began < 3


async def test_a_total_timeout_bounds_a_drip_that_never_stops() -> None:
    handler = forever(SSE_HEAD, chunk(CHUNK), 0.01)  # healthy-looking, but endless
    async with raw_server(handler) as url:
        timeout = chatsdk.Timeout(total=0.5)
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0, timeout=timeout) as client:
            began = time.monotonic()
            with pytest.raises(chatsdk.APITimeoutError, match="total"):
                async with asyncio.timeout(10):
                    await client.chat.create(integration_id="docs", messages="q")
    assert time.monotonic() - began < 3


TOKEN_FAILURES: dict[str, tuple[Handler, type[Exception]]] = {
    "reset before the status line": (scripted("reset"), chatsdk.APIConnectionError),
    "garbage status line": (scripted(b"HTTP/1.1 abc\r\n\r\n"), chatsdk.APIConnectionError),
    "1 MiB header": (
        scripted(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 2**20 + b"\r\n\r\n"),
        chatsdk.APIConnectionError,
    ),
    "answer larger than 8 MiB": (
        scripted(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9437184\r\n\r\n",
            b'{"client_token": "' + b"a" * (9 * 2**20 - 20) + b'"}',
        ),
        chatsdk.APIResponseValidationError,
    ),
    "answer dripped forever": (
        forever(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 99999\r\n\r\n{",
            b" ",
            0.01,
        ),
        chatsdk.APITimeoutError,
    ),
    "error body dripped forever": (
        forever(
            b"HTTP/1.1 400 Bad\r\nContent-Type: text/plain\r\nContent-Length: 99999\r\n\r\n",
            b"x",
            0.01,
        ),
        chatsdk.BadRequestError,
    ),
    "reset mid-answer": (
        scripted(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            PAUSE,
            "reset",
        ),
        chatsdk.APIConnectionError,
    ),
}


@pytest.mark.parametrize("name", list(TOKEN_FAILURES))
async def test_token_operations_against_a_misbehaving_server(name: str) -> None:
    handler, expected = TOKEN_FAILURES[name]
    async with raw_server(handler) as url:
        async with chatsdk.ChatClient(
            KEY, project="p", base_url=url, retries=FAST, timeout=IDLE
        ) as client:
            began = time.monotonic()
            with pytest.raises(expected):
                async with asyncio.timeout(10):
                    await client.tokens.create(embed_origin="https://a.example")
    assert time.monotonic() - began < 3


async def test_a_resume_that_never_answers_ends_at_idle_and_says_so() -> None:
    # The idle limit counts from the last event, across the resume: the message names
    # it (the transport, seeing only a deadline, would have named the total timeout).
    first = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Content-Location: /r\r\nConnection: close\r\n\r\n" + numbered(1, 2) + CUT
    )
    answered: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        answered.append(1)
        if len(answered) == 1:
            writer.write(first)
            await writer.drain()
            writer.close()
        else:
            await reader.read()  # the resume: never answered

    async with raw_server(handle) as url:
        timeout = chatsdk.Timeout(connect=2, read=None, idle=0.5, total=None)
        async with chatsdk.ChatClient(KEY, base_url=url, retries=FAST, timeout=timeout) as client:
            started = time.monotonic()
            with pytest.raises(chatsdk.APITimeoutError) as info:
                async with asyncio.timeout(5):
                    await consume(client)
    assert time.monotonic() - started < 2
    assert "idle timeout (0.5 s" in str(info.value)
    assert "total" not in str(info.value)
    assert len(answered) == 2


async def test_an_error_keeps_every_value_of_a_repeated_header() -> None:
    answer = (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nConnection: close\r\n\r\nno!"
    )
    async with raw_server(scripted(answer, "close")) as url:
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0) as client:
            with pytest.raises(chatsdk.BadRequestError) as info:
                await client.chat.create(integration_id="docs", messages="q")
    headers = info.value.headers
    assert isinstance(headers, multidict.CIMultiDict)
    assert headers.getall("set-cookie") == ["a=1", "b=2"]


# == 4. answers HTTP cannot parse, redirects, proxies (an outside check) =================


def test_aiohttps_pure_python_parser_errors_are_typed_too() -> None:
    # Where aiohttp's C extension is missing its pure-Python parser raises its own
    # HttpProcessingError family, which escaped untyped (a TransferEncodingError).
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--timeout",
            "60",
            f"{__file__}::test_misbehaving_server_raises_a_typed_error",
            # An error answer's unframable body escaped as a TransferEncodingError.
            f"{__file__}::test_a_body_that_cannot_be_framed_fails_at_once",
        ],
        env={**os.environ, "AIOHTTP_NO_EXTENSIONS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:]


def _gzip_head(extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
        b"Transfer-Encoding: chunked\r\n" + extra + b"\r\n"
    )


async def test_a_body_that_does_not_decode_is_a_stream_error_and_is_not_resumed() -> None:
    # A corrupt gzip body was "cut off", an APIConnectionError, and resumed five times.
    packer = zlib.compressobj(wbits=31)
    good = packer.compress(CHUNK) + packer.flush(zlib.Z_SYNC_FLUSH)
    requests = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await read_head(reader)
        requests += 1
        location = b"Content-Location: /chat_sessions/results/r1/events\r\n"
        await play(
            [
                _gzip_head(location),
                chunk(good),
                PAUSE,
                chunk(b"\x00garbage" * 8),
                PAUSE,
                b"0\r\n\r\n",
            ],
            writer,
        )
        await reader.read()

    got: list[Any] = []
    async with raw_server(handle) as url:
        async with chatsdk.ChatClient(KEY, base_url=url, retries=FAST) as client:
            with pytest.raises(chatsdk.StreamError, match="could not be read"):
                async with asyncio.timeout(10):
                    async for event in client.chat.create(integration_id="docs", messages="q"):
                        got.append(event)
    assert len(got) == 1 and requests == 1


async def test_an_answer_http_cannot_parse_is_not_retried() -> None:
    # An encoding the client never asked for, headers over aiohttp's limit: the same
    # POST went out three times for an answer that could not change.
    requests = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await read_head(reader)
        requests += 1
        await play([b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"], writer)
        await reader.read()

    async with raw_server(handle) as url:
        retries = chatsdk.RetryPolicy(max_retries=2, initial_delay=0.01)
        async with chatsdk.ChatClient(KEY, base_url=url, retries=retries) as client:
            with pytest.raises(chatsdk.APIConnectionError, match="invalid response"):
                async with asyncio.timeout(10):
                    await client.chat.completions.create(model="m", messages="q")
    assert requests == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308, 300])
@pytest.mark.parametrize("call", ["revoke", "create", "chat"])
async def test_a_redirect_is_an_error_that_names_where_it_points(status: int, call: str) -> None:
    # A revoke answered by a single sign-on redirect was reported as done; a 3xx whose
    # body looked like an event stream was read as the answer.
    body = b"data: " + json.dumps({"choices": [{"delta": {"content": "moved"}}]}).encode()
    reply = Reply(
        status=status,
        body=body + b"\n\ndata: [DONE]\n\n",
        content_type="text/event-stream",
        headers={"Location": "https://sso.example/login"},
    )
    async with ScriptedServer([reply, reply, reply]) as srv:
        async with chatsdk.ChatClient(KEY, project="p", base_url=srv.url, retries=FAST) as client:
            with pytest.raises(chatsdk.APIStatusError) as info:
                async with asyncio.timeout(10):
                    if call == "revoke":
                        await client.tokens.revoke("a-client-token-1234")
                    elif call == "create":
                        await client.tokens.create(embed_origin="https://a.example")
                    else:
                        await client.chat.completions.create(model="m", messages="q")
    assert info.value.status == status and len(srv.seen) == 1
    assert "https://sso.example/login" in str(info.value) and "not followed" in str(info.value)
    assert info.value.headers["Location"] == "https://sso.example/login"


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 400 Bad \xe2\x80\xae\x1b[2J\x1b]0;pwned\x07 \xae\xff phrase\r\n",
        b"HTTP/1.1 302 Found\r\nLocation: http://evil/\xe2\x80\xae\x1b[2Jx\xff\r\n",
    ],
    ids=["reason phrase", "Location"],
)
async def test_a_reason_phrase_and_a_location_are_shown_not_obeyed(head: bytes) -> None:
    # Both reached the message raw: ESC, BEL, U+202E and bytes that are not UTF-8 (lone
    # surrogates, which a terminal's surrogateescape writes out as they came).
    answer = head + b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    async with raw_server(scripted(answer, "close")) as url:
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0) as client:
            with pytest.raises(chatsdk.APIStatusError) as info:
                await client.chat.completions.create(model="m", messages="q")
    message = str(info.value)
    assert "\x1b" not in message and "\x07" not in message and "\u202e" not in message
    assert not any("\ud800" <= char <= "\udfff" for char in message), repr(message)
    assert "\\x1b[2J" in message and "\\u202e" in message  # shown


async def test_a_3xx_without_a_location_is_not_called_a_redirect() -> None:
    # A 304 Not Modified was "a redirect to (no Location)".
    async with ScriptedServer([Reply(status=304)]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as client:
            with pytest.raises(chatsdk.APIStatusError) as info:
                await client.chat.completions.create(model="m", messages="q")
    assert info.value.status == 304 and "redirect" not in str(info.value)
    assert "304 answer with no Location" in str(info.value)


@pytest.mark.parametrize("status", [600, 999])
async def test_a_status_past_599_is_no_server_failure_and_is_not_retried(status: int) -> None:
    # RFC 9110 stops at 599: 600 and 999 were InternalServerError, retried as a 5xx.
    async with ScriptedServer([Reply(status=status, body=b'{"error": "odd"}')]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=FAST) as client:
            with pytest.raises(chatsdk.APIStatusError) as info:
                await client.chat.completions.create(model="m", messages="q")
    assert type(info.value) is chatsdk.APIStatusError and info.value.status == status
    assert len(srv.seen) == 1


async def through_a_proxy(
    handle: Handler, base_url: str, user: str, password: str
) -> chatsdk.ChatSDKError:
    """The error of a call to ``base_url`` through a raw proxy that ``handle`` answers."""
    async with raw_server(handle) as proxy:
        proxy_url = proxy.replace("http://", f"http://{user}:{password}@")
        async with chatsdk.ChatClient(KEY, base_url=base_url, proxy=proxy_url, retries=0) as c:
            with pytest.raises(chatsdk.ChatSDKError) as info:
                async with asyncio.timeout(10):
                    await c.chat.completions.create(model="m", messages="q")
    return info.value


async def test_a_proxys_credentials_are_never_shown() -> None:
    # A proxy answering 407 and quoting the request showed its password and the
    # Proxy-Authorization value (the API key beside them was already masked).
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await read_head(reader)).decode("latin-1")
        quoted = " ".join(line for line in head.split("\r\n") if "Authorization" in line)
        body = f"refused. You sent {quoted}".encode()
        await play(
            [
                b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Type: text/plain"
                b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            ],
            writer,
        )
        await reader.read()

    password = "proxyPASSWORD-9d8c7b6a"
    error = await through_a_proxy(handle, "http://127.0.0.9:1", "user", password)
    assert isinstance(error, chatsdk.APIStatusError)
    shown = f"{error} {error.body} {error!r}"
    assert error.status == 407 and "Proxy-Authorization" in shown
    for secret in (password, base64.b64encode(f"user:{password}".encode()).decode(), KEY):
        assert secret not in shown


async def test_an_absolute_content_location_with_dot_segments_is_not_resumable() -> None:
    # It raised ValidationError (your arguments) mid-stream; the relative form resumed.
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        port = writer.get_extra_info("sockname")[1]
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 9999\r\n"
            b"Content-Location: http://127.0.0.1:%d/x/../resume\r\n\r\n" % port
        )
        await play([head, b"id: 1\n" + CHUNK, PAUSE, "close"], writer)

    async with raw_server(handle) as url:
        async with chatsdk.ChatClient(KEY, base_url=url, retries=FAST) as client:
            with pytest.raises(chatsdk.APIConnectionError, match="not resumable"):
                async with asyncio.timeout(10):
                    await client.chat.create(integration_id="docs", messages="q")


async def test_an_answer_over_the_cap_names_the_cap_itself() -> None:
    # It named what was left of the cap after the bytes that told the body apart.
    big = b'{"id": "x", "pad": "' + b"a" * (9 * 2**20) + b'"}'
    async with ScriptedServer([Reply(body=big)]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as client:
            with pytest.raises(chatsdk.APIResponseValidationError) as info:
                async with asyncio.timeout(20):
                    await client.chat.completions.create(model="m", messages="q", stream=False)
    assert f"larger than {8 * 2**20} bytes" in str(info.value)


@pytest.mark.parametrize("terminator_after", [0.0, 0.005, 0.05])
async def test_a_connection_whose_last_chunk_trails_done_goes_back_to_the_pool(
    terminator_after: float,
) -> None:
    # The chunked body's last chunk a few ms after [DONE]: every call opened a new
    # connection (a new TLS handshake against a real server), as the stream closed it.
    connections = 0
    done = chunk(b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n')

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            await read_head(reader)
            await play([SSE_HEAD, done, terminator_after, b"0\r\n\r\n"], writer)

    async with raw_server(handle) as url:
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0) as client:
            for _ in range(4):
                async with asyncio.timeout(5):
                    assert (await client.chat.completions.create(model="m", messages="q")).text
                await asyncio.sleep(0.1)
    assert connections == 1


async def test_a_server_hanging_after_done_neither_delays_the_answer_nor_leaks() -> None:
    done = chunk(b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n')
    async with raw_server(scripted(SSE_HEAD, done)) as url:  # and the body never ends
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0) as client:
            began = time.monotonic()
            async with asyncio.timeout(5):
                assert (await client.chat.completions.create(model="m", messages="q")).text
            assert time.monotonic() - began < 0.2
            await asyncio.sleep(0.4)  # past the wait for the body's end: closed, not pooled
            gc.collect()
        began = time.monotonic()
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0) as client:
            async with asyncio.timeout(5):
                assert (await client.chat.completions.create(model="m", messages="q")).text
        # Closing the client within the wait closes the connection at once.
    gc.collect()


async def test_a_proxys_echo_of_its_credentials_in_a_refused_connect_is_not_chained() -> None:
    # An https call through a proxy that refuses CONNECT with a 407 echoing the
    # Proxy-Authorization: the chained aiohttp error kept the proxy's headers.
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await read_head(reader)).decode("latin-1")
        sent = next(
            (
                line.split(":", 1)[1].strip()
                for line in head.split("\r\n")
                if line.lower().startswith("proxy-authorization")
            ),
            "none",
        )
        await play(
            [
                b"HTTP/1.1 407 Proxy Authentication Required\r\nX-You-Sent: "
                + sent.encode()
                + b"\r\nContent-Length: 0\r\n\r\n"
            ],
            writer,
        )
        await reader.read()

    password = "Sup3rS3cretPassw0rd"
    encoded = base64.b64encode(f"proxyuser:{password}".encode()).decode()
    error = await through_a_proxy(handle, "https://10.9.9.9:444", "proxyuser", password)
    shown, cause = f"{error!r} {error}", error.__cause__
    while cause is not None:
        shown += f" {cause!r} {cause} {getattr(cause, 'headers', '')}"
        cause = cause.__cause__
    assert encoded not in shown and password not in shown


Call = Callable[[chatsdk.ChatClient], Awaitable[Any]]

UNFRAMED: dict[str, tuple[Handler, Call]] = {
    # aiohttp 3.14's C parser, after an invalid chunk size, closes the connection but
    # neither wakes the body's reader nor keeps its read timer (its pure-Python parser
    # raises at once): the wait used to end only at chatsdk's own read bound.
    "a stream": (
        scripted(SSE_HEAD, chunk(CHUNK), PAUSE, b"zz\r\n" + CHUNK),
        lambda client: client.chat.create(integration_id="docs", messages="q"),
    ),
    "a completions stream": (
        scripted(
            SSE_HEAD,
            chunk(b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'),
            PAUSE,
            b"zz\r\n",
        ),
        lambda client: client.chat.completions.create(model="m", messages="q"),
    ),
    "a whole answer": (
        scripted(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            chunk(b'{"id": "x", '),
            PAUSE,
            b"zz\r\n",
        ),
        lambda client: client.chat.completions.create(model="m", messages="q", stream=False),
    ),
    "an error answer": (
        scripted(
            b"HTTP/1.1 500 Oops\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            chunk(b'{"error": '),
            PAUSE,
            b"zz\r\n",
        ),
        lambda client: client.chat.completions.create(model="m", messages="q", stream=False),
    ),
}


async def _drain(result: Any) -> None:
    if hasattr(result, "__aiter__"):
        async for _ in result:
            pass
    else:
        await result


@pytest.mark.parametrize("name", list(UNFRAMED))
async def test_a_body_that_cannot_be_framed_fails_at_once(name: str) -> None:
    handler, call = UNFRAMED[name]
    async with raw_server(handler) as url:
        # Long waits allowed: the error must not wait for any of them.
        timeout = chatsdk.Timeout(connect=2, read=30, idle=30)
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0, timeout=timeout) as client:
            began = time.monotonic()
            with pytest.raises(chatsdk.ChatSDKError) as info:
                async with asyncio.timeout(10):
                    await _drain(call(client))
    assert time.monotonic() - began < 2
    if name == "an error answer":  # the status is what the server said
        assert isinstance(info.value, chatsdk.InternalServerError), repr(info.value)
    else:
        assert isinstance(info.value, chatsdk.StreamError), repr(info.value)
        message = str(info.value)
        # What went wrong, on one line, without aiohttp's own status (400, which the
        # server never sent) and with the server's bytes escaped (a CR came through).
        assert "chunk" in message and "400" not in message, message
        assert "\r" not in message and "\n" not in message, message


async def test_a_kept_alive_connection_holds_no_answer_it_carried() -> None:
    # The framing check (above) hooks each answer to its connection until the answer's
    # body ends (here written in two pieces, so it is not whole with the headers): a
    # connection carrying a hundred answers keeps none of them alive.
    answer = (
        b'{"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices":'
        b' [{"index": 0, "message": {"role": "assistant", "content": "hi"},'
        b' "finish_reason": "stop"}]}'
    )
    async with ScriptedServer([Reply(pieces=[answer[:20], answer[20:]], delay=0.005)]) as server:
        async with chatsdk.ChatClient(KEY, base_url=server.url, retries=0) as client:

            async def ask() -> None:
                await client.chat.completions.create(model="m", messages="q", stream=False)

            for _ in range(5):
                await ask()
            gc.collect()
            before = sum(isinstance(o, aiohttp.ClientResponse) for o in gc.get_objects())
            for _ in range(100):
                await ask()
            gc.collect()
            after = sum(isinstance(o, aiohttp.ClientResponse) for o in gc.get_objects())
    assert len({seen.peer for seen in server.seen}) == 1  # one connection carried them all
    assert after <= before + 2


async def test_a_pooled_connection_reset_while_idle_logs_nothing() -> None:
    # The framing check asks aiohttp for the connection's "closed" future, which a reset
    # fails: asyncio would log that exception as never retrieved once it is collected.
    body = b'{"id": "c", "choices": [{"index": 0, "message": '
    body += b'{"role": "assistant", "content": "hi"}}]}'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    logged: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: logged.append(context))
    try:
        answer_then_reset = scripted(head % len(body) + body[:10], PAUSE, body[10:], PAUSE, "reset")
        async with raw_server(answer_then_reset) as url:
            async with chatsdk.ChatClient(KEY, base_url=url, retries=0) as client:
                for _ in range(2):  # the second drops the first's connection from the pool
                    answer = await client.chat.completions.create(
                        model="m", messages="q", stream=False
                    )
                    assert answer.text == "hi"
                    await asyncio.sleep(3 * PAUSE)  # the pooled connection is reset meanwhile
                gc.collect()
                await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert not logged, logged


def _answer(text: str) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": "stop"}]}
    body = b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body


@pytest.mark.parametrize(
    "idle_bytes",
    [
        _answer("an answer nobody asked for"),  # a server or proxy answering twice
        # An idle timeout announced before the close (some servers do, RFC 9110 §15.5.9).
        b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["a second answer", "408 then close"],
)
async def test_what_a_server_writes_on_an_idle_connection_answers_no_call(
    idle_bytes: bytes,
) -> None:
    # aiohttp kept those bytes and read them as the next request's answer: one caller got
    # what was written after another's answer, or a 408 for a call the server never saw.
    asked: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_head(reader)
            asked.append(json.loads(request.partition(b"\r\n\r\n")[2])["messages"][0]["content"])
            writer.write(_answer(f"to {asked[-1]}"))
            await writer.drain()
            await asyncio.sleep(PAUSE)
            writer.write(idle_bytes)
            await writer.drain()

    async with raw_server(handle) as url:
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0) as client:
            first = await client.chat.completions.create(model="m", messages="Alice")
            await asyncio.sleep(3 * PAUSE)  # the idle bytes come meanwhile
            second = await client.chat.completions.create(model="m", messages="Bob")
    assert (first.text, second.text) == ("to Alice", "to Bob")
    assert asked == ["Alice", "Bob"]


async def test_a_kept_alive_connection_closed_under_a_request_is_sent_again_at_once() -> None:
    # The keep-alive race (uvicorn closes a connection idle for 5 s): the server closes
    # a pooled connection just as a request goes out on it. With retries=0 the call
    # failed ("closed the connection without answering"); with retries it waited a
    # backoff. Here every connection's second request meets its close.
    keys: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for n in range(2):
            request = await read_head(reader)
            head = request.partition(b"\r\n\r\n")[0].decode().lower()
            keys.append(head.partition("idempotency-key: ")[2].partition("\r\n")[0])
            if n == 1:
                writer.close()  # as the request arrives: no answer
                return
            writer.write(_answer("hi"))
            await writer.drain()

    async with raw_server(handle) as url:
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0) as client:
            began = time.monotonic()
            for _ in range(3):
                answer = await client.chat.completions.create(model="m", messages="q")
                assert answer.text == "hi"
            assert time.monotonic() - began < 1  # no backoff
    # Calls 2 and 3 each went out twice (a kept-alive connection, then a fresh one),
    # with one Idempotency-Key per call.
    assert len(keys) == 5 and keys[1] == keys[2] and keys[3] == keys[4], keys
    assert len(set(keys)) == 3


async def test_the_keep_alive_race_resends_once_on_a_new_connection() -> None:
    # Four kept-alive connections, each closed under its next request (a server that
    # closed every idle connection at once): the call was sent again on each pooled
    # connection in turn, five times with retries=0. Once, on a new connection, is the rule.
    asked: list[str] = []
    all_warm = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_head(reader)
        asked.append(json.loads(request.partition(b"\r\n\r\n")[2])["messages"][0]["content"])
        if len(asked) >= 4:
            all_warm.set()
        await all_warm.wait()  # four calls at once: four connections
        writer.write(_answer(f"to {asked[-1]}"))
        await writer.drain()
        request = await read_head(reader)
        asked.append(json.loads(request.partition(b"\r\n\r\n")[2])["messages"][0]["content"])
        writer.close()  # a request on a kept-alive connection meets its close

    async with raw_server(handle) as url:
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0, max_connections=4) as client:
            ask = partial(client.chat.completions.create, model="m")
            await asyncio.gather(*(ask(messages="warm") for _ in range(4)))
            answer = await ask(messages="the question")
    assert answer.text == "to the question"
    assert asked.count("the question") == 2, asked  # sent, then resent on a new connection


async def test_a_call_failing_after_the_resend_counts_it_among_its_attempts() -> None:
    # A request that makes the server close: sent twice (the resend), and the error said
    # nothing of the second send.
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while b"poison" not in await read_head(reader):
            writer.write(_answer("fine"))
            await writer.drain()
        writer.close()

    async with raw_server(handle) as url:
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0) as client:
            await client.chat.completions.create(model="m", messages="warm")
            with pytest.raises(chatsdk.APIConnectionError) as info:
                await client.chat.completions.create(model="m", messages="poison")
    assert "gave up after 2 attempts" in str(info.value)


async def test_a_fresh_connection_closed_without_an_answer_is_not_sent_again() -> None:
    # The resend is for kept-alive connections alone: retries=0 is otherwise kept.
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        seen.append(1)
        writer.close()

    async with raw_server(handle) as url:
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0) as client:
            with pytest.raises(chatsdk.APIConnectionError, match="without answering"):
                await client.chat.completions.create(model="m", messages="q")
    assert seen == [1]


READ_BOUND: dict[str, tuple[Handler, Call]] = {
    # After a 1xx answer aiohttp does not arm its read timer again. With idle=None each
    # of these waited for ever, read=1 or not.
    "103 Early Hints, then silence": (
        scripted(b"HTTP/1.1 103 Early Hints\r\n\r\n"),
        lambda client: client.chat.completions.create(model="m", messages="q"),
    ),
    "100 Continue, then silence": (
        scripted(b"HTTP/1.1 100 Continue\r\n\r\n"),
        lambda client: client.chat.completions.create(model="m", messages="q"),
    ),
}


@pytest.mark.parametrize("name", list(READ_BOUND))
async def test_every_wait_for_bytes_is_bounded_by_read_when_idle_is_off(name: str) -> None:
    handler, call = READ_BOUND[name]
    async with raw_server(handler) as url:
        timeout = chatsdk.Timeout(connect=2, read=1, idle=None)
        async with chatsdk.ChatClient(KEY, base_url=url, retries=0, timeout=timeout) as client:
            began = time.monotonic()
            with pytest.raises(chatsdk.APITimeoutError) as info:
                async with asyncio.timeout(10):
                    await call(client)
    assert time.monotonic() - began < 3
    if "then silence" in name:
        assert "read timeout" in str(info.value)
