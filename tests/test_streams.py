"""Stream guarantees: release on every exit path, timeouts, exactly-once resume, clear failures."""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from collections.abc import AsyncIterator

import pytest

import chatsdk
from chatsdk.server import Faults, ReferenceServer
from tests.scripted import Reply, ScriptedServer, sse
from tests.support import FAST, KEY, PROJECT

pytestmark = pytest.mark.anyio

QUESTION = "How do I resume a dropped stream?"
POOL = 2


@pytest.fixture
async def client(server: ReferenceServer) -> AsyncIterator[chatsdk.ChatClient]:
    async with chatsdk.ChatClient(
        KEY, project=PROJECT, base_url=server.base_url, retries=FAST, max_connections=POOL
    ) as c:
        yield c


async def assert_pool_free(client: chatsdk.ChatClient, server: ReferenceServer) -> None:
    """Every connection of the pool is free: POOL streams opened at once all get their
    answer's headers within a bounded wait (a leaked connection would block the last)."""
    faults, server.faults = server.faults, Faults()
    streams = [start(client) for _ in range(POOL)]
    try:
        async with asyncio.timeout(5):
            for stream in streams:
                await stream.__aenter__()
    finally:
        for stream in streams:
            await stream.aclose()
        server.faults = faults


def start(client: chatsdk.ChatClient) -> chatsdk.ChatStream:
    return client.chat.create(integration_id="docs", messages=QUESTION)


# -- 1. release on every exit path -------------------------------------------------------

ABANDONED = 200


async def test_hundreds_of_abandoned_streams_never_exhaust_a_small_pool(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    server.faults = Faults(event_delay=0.005)  # a slow server: streams are mid-body when left
    exits = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with asyncio.timeout(60):  # a leak would block on the pool of 2: fail, not hang
            for i in range(ABANDONED):
                mode = i % 5
                if mode == 0:  # break out of async for
                    async for _ in start(client):
                        break
                elif mode == 1:  # an exception in the loop body
                    with pytest.raises(KeyError):
                        async for _ in start(client):
                            raise KeyError("consumer failed")
                elif mode == 2:  # aclose()
                    stream = start(client)
                    await stream.__anext__()
                    await stream.aclose()
                elif mode == 3:  # leaving async with early
                    async with start(client) as stream:
                        await stream.__anext__()
                else:  # started, then simply dropped
                    stream = start(client)
                    await stream.__anext__()
                    del stream
                exits += 1
        gc.collect()
        await asyncio.sleep(0.05)
    assert exits == ABANDONED
    await assert_pool_free(client, server)
    assert not [w for w in caught if "Unclosed" in str(w.message)]


async def test_cancellation_mid_stream_releases_the_connection(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    server.faults = Faults(event_delay=0.05)

    async def consume() -> None:
        async for _ in start(client):
            pass

    for _ in range(2 * POOL + 1):
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.12)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await assert_pool_free(client, server)
    server.faults = Faults()
    assert (await start(client)).text  # the pool still works


async def test_a_finished_stream_returns_its_connection_for_reuse() -> None:
    body = sse(("message_chunk", '{"content_chunk":"a","finish_reason":"stop"}'))
    async with ScriptedServer([Reply(body=body, content_type="text/event-stream")]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, max_connections=1) as client:
            for _ in range(5):
                await start(client)
    # One connection, kept alive and reused for every call.
    assert len({seen.peer for seen in srv.seen}) == 1 and len(srv.seen) == 5


# -- 2. timeouts -------------------------------------------------------------------------


async def test_pings_do_not_reset_the_idle_timeout(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    server.faults = Faults(pings_only=True, ping_interval=0.02)
    began = time.monotonic()
    with pytest.raises(chatsdk.APITimeoutError, match="idle") as info:
        await client.chat.create(
            integration_id="docs", messages=QUESTION, timeout=chatsdk.Timeout(idle=0.3)
        )
    assert "no event from the server for 0.3 s" in str(info.value)
    assert time.monotonic() - began < 5
    await assert_pool_free(client, server)


async def test_the_idle_timeout_on_a_whole_answer_says_it_did_not_come_whole() -> None:
    # Bytes keep coming (5 every 50 ms), but not the whole answer within idle.
    body = b'{"chat_session_id": "s", "message": {"role": "assistant", "content": "slow"}}'
    reply = Reply(body=body, pieces=[body[i : i + 5] for i in range(0, len(body), 5)], delay=0.05)
    async with ScriptedServer([reply]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as c:
            with pytest.raises(chatsdk.APITimeoutError) as info:
                await c.chat.create(
                    integration_id="docs", messages=QUESTION, timeout=chatsdk.Timeout(idle=0.3)
                )
    assert "the whole answer did not come within 0.3 s (idle timeout)" in str(info.value)


async def test_faults_set_to_none_means_no_misbehaviour(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    server.faults = Faults(fail_first=5)
    server.faults = None  # as the constructor's default
    assert (await client.chat.create(integration_id="docs", messages=QUESTION)).text


@pytest.mark.parametrize(
    ("timeout", "says"),
    [
        (
            chatsdk.Timeout(connect=0.3, read=None, idle=None, total=None),
            ("connect timeout", "max_connections"),
        ),
        # streaming.md: idle bounds the wait for the answer, getting a connection included.
        (
            chatsdk.Timeout(connect=5, read=None, idle=0.3, total=None),
            ("idle", "getting a connection"),
        ),
    ],
    ids=["connect", "idle, when shorter"],
)
async def test_the_wait_for_a_free_connection_of_a_full_pool_is_bounded(
    server: ReferenceServer, timeout: chatsdk.Timeout, says: tuple[str, str]
) -> None:
    server.faults = Faults(event_delay=1)  # the first stream holds the only connection
    async with chatsdk.ChatClient(
        KEY,
        project=PROJECT,
        base_url=server.base_url,
        max_connections=1,
        timeout=timeout,
        retries=0,
    ) as c:
        holder = c.chat.create(integration_id="docs", messages=QUESTION, timeout=None)
        async with holder:
            await anext(holder)
            began = time.monotonic()
            with pytest.raises(chatsdk.APITimeoutError) as info:
                async with asyncio.timeout(5):
                    await c.chat.create(integration_id="docs", messages=QUESTION)
            assert time.monotonic() - began < 2
            assert all(part in str(info.value) for part in says), info.value
    server.faults = Faults()


async def test_total_timeout_bounds_the_whole_call(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    server.faults = Faults(event_delay=0.05)
    with pytest.raises(chatsdk.APITimeoutError, match="total"):
        await client.chat.create(
            integration_id="docs", messages=QUESTION, timeout=chatsdk.Timeout(total=0.3)
        )


async def test_a_slow_healthy_stream_is_not_killed(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    server.faults = Faults(event_delay=0.02)
    result = await client.chat.create(
        integration_id="docs", messages=QUESTION, timeout=chatsdk.Timeout(read=0.5, idle=0.5)
    )
    assert result.finish_reason == "stop"


# -- 3. resume, exactly once -------------------------------------------------------------


async def events_of(stream: chatsdk.ChatStream) -> list[chatsdk.ChatEvent]:
    return [e async for e in stream]


async def test_dropped_streams_resume_with_every_event_exactly_once(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    reference = await events_of(start(client))
    server.faults = Faults(drop_after_events=3)
    resumed = 0
    for _ in range(10):
        stream = start(client)
        got = await events_of(stream)
        resumed += stream.resumes
        # Same answer, same order; only the session id differs between runs.
        assert [strip(e) for e in got] == [strip(e) for e in reference]
        assert len({e.chat_session_id for e in got if isinstance(e, chatsdk.MessageChunk)}) == 1
    assert resumed >= 10 * (len(reference) // 3 - 1)


def strip(event: chatsdk.ChatEvent) -> object:
    if isinstance(event, chatsdk.MessageChunk):
        return (event.content_chunk, event.finish_reason)
    return event


async def test_after_a_resume_the_headers_are_the_resumed_connections(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    # docs/streaming.md: stream.headers and request_id follow the resume.
    server.faults = Faults(drop_after_events=2, drop_times=1)
    stream = start(client)
    first = None
    async for _ in stream:
        if first is None:
            first = stream.request_id
    assert stream.resumes == 1 and first is not None
    assert stream.request_id is not None and stream.request_id != first
    assert stream.headers is not None and stream.headers["X-Request-Id"] == stream.request_id


async def test_resume_honours_the_servers_retry_field(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    server.faults = Faults(drop_after_events=4, drop_times=1, retry_ms=200)
    # The server's wait is honoured up to the policy's cap (max_delay), here above it.
    stream = client.chat.create(
        integration_id="docs", messages=QUESTION, retries=chatsdk.RetryPolicy(max_delay=1.0)
    )
    began = time.monotonic()
    await stream.final_result()
    assert stream.resumes == 1
    assert time.monotonic() - began >= 0.2


async def test_a_drop_without_content_location_is_a_connection_error(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    server.faults = Faults(drop_after_events=3, no_content_location=True)
    stream = start(client)
    seen = []
    with pytest.raises(chatsdk.APIConnectionError, match=r"not resumable"):
        async for event in stream:
            seen.append(event)
    assert len(seen) == 3
    await assert_pool_free(client, server)


async def test_a_retried_create_does_not_make_a_second_session(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    # The first answer is lost before any event: the client resumes the same result.
    server.faults = Faults(drop_after_events=0, drop_times=1)
    result = await start(client)
    assert result.text and result.chat_session_id
    follow = await client.chat.continue_(
        result.chat_session_id, integration_id="docs", message="Tell me more."
    )
    assert follow.chat_session_id == result.chat_session_id


# -- 5. clear failures from the server ---------------------------------------------------


async def test_malformed_payload_names_the_event_and_what_arrived(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    server.faults = Faults(malformed_after=2)
    with pytest.raises(chatsdk.StreamError) as info:
        await start(client)
    assert info.value.event == "message_chunk"
    assert "{not json" in info.value.received
    await assert_pool_free(client, server)


async def test_a_mislabelled_event_stream_is_decoded_by_what_it_is(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    # SPEC 1.6: the body's first byte decides when the label (text/plain) disagrees.
    server.faults = Faults(wrong_content_type=True)
    result = await start(client)
    assert result.text and result.finish_reason == "stop"


async def test_body_ending_mid_event_is_a_stream_error() -> None:
    body = sse(("message_chunk", '{"content_chunk":"a"}')) + b"event: message_chunk\ndata: {"
    async with ScriptedServer([Reply(body=body, content_type="text/event-stream")]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as c:
            got = []
            with pytest.raises(chatsdk.StreamError, match="middle of an event"):
                async for event in c.chat.create(integration_id="docs", messages="q"):
                    got.append(event)
    assert got == [chatsdk.MessageChunk(content_chunk="a")]


async def test_oversized_event_is_refused_without_buffering_it() -> None:
    pieces = [b"event: message_chunk\ndata: " + b"x" * 4096] * 64  # 256 KiB, no line end
    async with (
        ScriptedServer(
            [Reply(pieces=pieces, content_type="text/event-stream", delay=0.001)]
        ) as srv,
        chatsdk.ChatClient(KEY, base_url=srv.url, retries=0, max_event_size=10_000) as c,
    ):
        with pytest.raises(chatsdk.StreamError) as info:
            await c.chat.create(integration_id="docs", messages="q")
    assert len(info.value.received) < 1000


async def test_unknown_events_are_surfaced_not_fatal() -> None:
    body = sse(
        ("ping_v2", '{"t": 1}'),
        ("message_chunk", '{"content_chunk":"ok","finish_reason":"stop","extra":[1]}'),
        ("records_cited", '{"citations":[{"record":{"type":"brand_new_type","url":null}}]}'),
    )
    async with ScriptedServer([Reply(body=body, content_type="text/event-stream")]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url) as c:
            stream = c.chat.create(integration_id="docs", messages="q")
            events = [e async for e in stream]
            result = await stream.final_result()
    assert events[0] == chatsdk.UnknownEvent(event="ping_v2", data='{"t": 1}')
    assert result.text == "ok" and result.citations[0].record.type == "brand_new_type"


async def test_good_events_before_a_malformed_one_are_delivered_first() -> None:
    body = sse(
        ("message_chunk", '{"content_chunk":"a"}'),
        ("message_chunk", '{"content_chunk":"b"}'),
        ("message_chunk", '{"content_chunk":"x"},{"content_chunk":"'),
        ("message_chunk", '"}'),
    )
    async with ScriptedServer([Reply(body=body, content_type="text/event-stream")]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as c:
            got = []
            with pytest.raises(chatsdk.StreamError) as info:
                async for event in c.chat.create(integration_id="docs", messages="q"):
                    got.append(event)
    # Two payloads whose join is a valid JSON array are still refused one by one.
    assert [e.content_chunk for e in got if isinstance(e, chatsdk.MessageChunk)] == ["a", "b"]
    assert info.value.event == "message_chunk"


# -- 6. final_result folds what was delivered, without keeping the events ---------------

FOLD_BODY = sse(
    ("message_chunk", '{"content_chunk":"one ","chat_session_id":"cs_1"}'),
    ("message_chunk", '{"content_chunk":"two ","finish_reason":"length"}'),
    ("records_cited", '{"citations":[{"number":1,"record":{"type":"documentation"}}]}'),
    ("message_chunk", '{"content_chunk":"three "}'),
    ("ping_v2", "{}"),
    *[("message_chunk", f'{{"content_chunk":"w{i} "}}') for i in range(300)],
    ("message_chunk", '{"content_chunk":"","finish_reason":"tool_use"}'),
    ("message_chunk", '{"content_chunk":"tail"}'),
    ("records_cited", '{"citations":[{"number":2,"record":{"type":"api"}}]}'),
)


@pytest.mark.parametrize("piece", [1, 7, 64, 1000, len(FOLD_BODY)])
async def test_final_result_is_the_fold_of_every_event_however_the_body_is_cut(
    piece: int,
) -> None:
    pieces = [FOLD_BODY[i : i + piece] for i in range(0, len(FOLD_BODY), piece)]
    reply = Reply(pieces=pieces, content_type="text/event-stream")
    async with ScriptedServer([reply]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as c:
            stream = c.chat.create(integration_id="docs", messages="q")
            events = [e async for e in stream]
            result = await stream.final_result()
    chunks = [e for e in events if isinstance(e, chatsdk.MessageChunk)]
    cited = [e for e in events if isinstance(e, chatsdk.RecordsCited)]
    assert len(chunks) == 305 and len(cited) == 2
    assert result.text == "".join(e.content_chunk for e in chunks)
    # The last reason given wins, even when later chunks give none.
    assert result.finish_reason == "tool_use"
    assert [c.number for c in result.citations] == [1, 2]
    assert result.message.records_cited is not None
    assert result.message.records_cited.citations == result.citations
    assert result.chat_session_id == "cs_1"


async def test_a_long_stream_does_not_keep_the_events_it_delivered() -> None:
    import tracemalloc

    n = 20_000
    session = "cs_" + "s" * 60
    body = sse(*[("message_chunk", f'{{"content_chunk":"w","chat_session_id":"{session}"}}')] * n)
    body += sse(("message_chunk", '{"content_chunk":"","finish_reason":"stop"}'))
    async with ScriptedServer([Reply(body=body, content_type="text/event-stream")]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as c:
            stream = c.chat.create(integration_id="docs", messages="q")
            tracemalloc.start()
            try:
                count = 0
                async for _ in stream:
                    count += 1
                gc.collect()
                held, _ = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert count == n + 1
            assert (await stream.final_result()).text == "w" * n
    # Each event, kept, would pin a struct and a 63-character session id: well over
    # 100 bytes an event. What remains is the folded text and the connection's buffers.
    assert held < 20 * n, f"{held:,} bytes still held after {n:,} events"
