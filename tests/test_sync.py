"""SyncChatClient against the reference server running in a background thread."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import chatsdk
from chatsdk import SyncChatClient
from chatsdk.server import Faults, ReferenceServer

KEY = "sync-test-secret-key-51c9"
PROJECT = "sync-project"
ORIGIN = "https://docs.example.com"
QUESTION = "How do client tokens work?"
FOLLOW_UP = "Tell me more."
FAST = chatsdk.RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.05)


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer(api_key=KEY, project=PROJECT).serve_in_thread() as running:
        yield running


@pytest.fixture
def client(server: ReferenceServer) -> Iterator[SyncChatClient]:
    with SyncChatClient(KEY, project=PROJECT, base_url=server.base_url, retries=FAST) as c:
        yield c


@pytest.fixture
def slow_streams(server: ReferenceServer) -> Iterator[None]:
    """Streams that take seconds to finish, so a stream left early is still open."""
    server.faults = Faults(event_delay=0.05)
    try:
        yield
    finally:
        server.faults = Faults()


def portal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "chatsdk-sync"]


def test_iterating_yields_typed_events(client: SyncChatClient) -> None:
    stream = client.chat.create(integration_id="docs", messages=QUESTION)
    events = list(stream)
    chunks = [e for e in events if isinstance(e, chatsdk.MessageChunk)]
    cited = [e for e in events if isinstance(e, chatsdk.RecordsCited)]
    assert len(chunks) > 5 and len(cited) == 1
    assert "".join(c.content_chunk for c in chunks).startswith("A client token")
    assert chunks[-1].finish_reason == "stop"
    assert cited[0].citations[0].record.title == "Client tokens and origins"
    assert stream.chat_session_id is not None
    assert list(stream) == []  # exhausted


def test_text_stream_final_result_and_continue(client: SyncChatClient) -> None:
    with client.chat.create(
        integration_id="docs", messages=[chatsdk.Message(role="user", content=QUESTION)]
    ) as stream:
        text = "".join(stream.text_stream)
        result = stream.final_result()
    assert result.text == text and text.startswith("A client token")
    assert result.chat_session_id == stream.chat_session_id is not None
    assert [c.record.url for c in result.citations] == ["https://chatsdk.dev/docs/client-tokens"]

    assert result.chat_session_id is not None
    follow = client.chat.continue_(result.chat_session_id, integration_id="docs", message=FOLLOW_UP)
    answer = follow.final_result()
    assert answer.text.startswith("Continuing on Client tokens and origins:")
    assert answer.chat_session_id == result.chat_session_id


def test_partly_read_stream_gives_the_whole_final_result(client: SyncChatClient) -> None:
    # next(stream) reads one event; the stream stays open (leaving a for loop closes it).
    stream = client.chat.create(integration_id="docs", messages=QUESTION)
    first = next(stream)
    assert isinstance(first, chatsdk.MessageChunk)
    whole = stream.final_result()
    assert whole.text.startswith(first.content_chunk) and whole.citations


def test_non_streaming_answer(client: SyncChatClient) -> None:
    result = client.chat.create(integration_id="docs", messages=QUESTION, stream=False)
    assert result.final_result().text.startswith("A client token")


def test_tokens_and_chat_with_a_client_token(
    client: SyncChatClient, server: ReferenceServer
) -> None:
    token = client.tokens.create(embed_origin=ORIGIN, expires_after=600, user_identifier="u1")
    assert token.expires_after == 600 and token.embed_origin == ORIGIN
    with SyncChatClient(
        session_token=token.client_token,
        project=PROJECT,
        base_url=server.base_url,
        origin=ORIGIN,
        retries=FAST,
    ) as browser:
        assert token.client_token not in repr(browser)
        answer = browser.chat.create(integration_id="docs", messages=QUESTION).final_result()
        assert answer.text.startswith("A client token")
        client.tokens.revoke(token)
        client.tokens.revoke(token.client_token)  # twice is fine
        with pytest.raises(chatsdk.AuthenticationError):
            browser.chat.create(integration_id="docs", messages=QUESTION).final_result()


def test_plain_callable_token_provider(client: SyncChatClient, server: ReferenceServer) -> None:
    calls: list[int] = []

    def mint() -> chatsdk.ChatSessionToken:
        calls.append(1)
        return client.tokens.create(embed_origin=ORIGIN)  # blocking is fine here

    with SyncChatClient(
        session_token=mint, project=PROJECT, base_url=server.base_url, origin=ORIGIN
    ) as browser:
        for _ in range(2):
            assert browser.chat.create(integration_id="docs", messages=QUESTION).final_result()
    assert calls == [1]  # fetched once, reused while fresh


def test_errors_surface_as_chatsdk_errors(client: SyncChatClient, server: ReferenceServer) -> None:
    with pytest.raises(chatsdk.NotFoundError):
        client.chat.continue_("no-such-session", integration_id="docs", message="hi").final_result()
    with (
        pytest.raises(chatsdk.NotFoundError),
        client.chat.continue_("no-such-session", integration_id="docs", message="hi"),
    ):
        pass  # the request is sent on entering the block
    with pytest.raises(chatsdk.ValidationError):
        client.chat.create(integration_id="docs", messages=[])
    with pytest.raises(chatsdk.ValidationError):
        client.tokens.create(embed_origin="not an origin")
    with SyncChatClient("wrong-key", project=PROJECT, base_url=server.base_url) as wrong:
        with pytest.raises(chatsdk.AuthenticationError) as caught:
            wrong.tokens.create(embed_origin=ORIGIN)
        assert "wrong-key" not in str(caught.value)


@pytest.mark.usefixtures("slow_streams")
def test_leaving_streams_early_releases_their_connections(server: ReferenceServer) -> None:
    # One connection in the pool: a stream that kept its connection would make the next
    # call wait for the pool until its total timeout.
    with SyncChatClient(
        KEY,
        project=PROJECT,
        base_url=server.base_url,
        max_connections=1,
        timeout=chatsdk.Timeout(total=5),
    ) as client:
        for _ in range(8):  # break, and the stream is dropped
            for _event in client.chat.create(integration_id="docs", messages=QUESTION):
                break
        for _ in range(3):  # break out of text_stream
            for _text in client.chat.create(integration_id="docs", messages=QUESTION).text_stream:
                break
        for _ in range(3):  # an exception inside `with`
            with (
                pytest.raises(KeyError),
                client.chat.create(integration_id="docs", messages=QUESTION) as stream,
            ):
                next(stream)
                raise KeyError("boom")
        for _ in range(3):  # close() with the stream still referenced
            kept = client.chat.create(integration_id="docs", messages=QUESTION)
            next(kept)
            kept.close()
            kept.close()
            with pytest.raises(chatsdk.StreamError, match="closed before its end"):
                list(kept)  # never quietly a part of the answer
        server.faults = Faults()
        answer = client.chat.create(integration_id="docs", messages=QUESTION).final_result()
        assert answer.text.startswith("A client token")


@pytest.mark.usefixtures("slow_streams")
@pytest.mark.parametrize("how", ["break", "next(iter(stream))", "close"])
def test_a_loop_begun_after_the_stream_was_left_early_is_a_stream_error(
    client: SyncChatClient, how: str
) -> None:
    stream = client.chat.create(integration_id="docs", messages=QUESTION)
    if how == "break":
        for _event in stream:
            break
    elif how == "close":
        next(stream)
        stream.close()
    else:
        next(iter(stream))  # a loop of its own, left at once
    for _ in range(2):  # never a quiet end on part of the answer
        with pytest.raises(chatsdk.StreamError, match="closed before its end") as info:
            list(stream)
        assert ("next(stream) takes one event" in str(info.value)) == (how != "close")


@pytest.mark.usefixtures("slow_streams")
def test_a_second_thread_looping_over_a_stream_is_refused_and_the_first_reads_on(
    client: SyncChatClient,
) -> None:
    stream = client.chat.create(integration_id="docs", messages=QUESTION)
    got: list[Any] = []
    reading = threading.Event()

    def read() -> None:
        for event in stream:
            got.append(event)
            reading.set()

    first = threading.Thread(target=read)
    first.start()
    assert reading.wait(5)
    with pytest.raises(chatsdk.ValidationError, match="another thread"):
        list(stream)
    first.join(10)
    assert not first.is_alive()
    chunks = [e for e in got if isinstance(e, chatsdk.MessageChunk)]
    assert "".join(c.content_chunk for c in chunks) == stream.final_result().text


@pytest.mark.usefixtures("slow_streams")
def test_next_takes_one_event_and_the_loop_goes_on(client: SyncChatClient) -> None:
    stream = client.chat.create(integration_id="docs", messages=QUESTION)
    first = next(stream)
    rest = list(stream)
    chunks = [e for e in [first, *rest] if isinstance(e, chatsdk.MessageChunk)]
    assert "".join(c.content_chunk for c in chunks) == stream.final_result().text
    assert list(stream) == []  # read to its end: an exhausted iterator


@pytest.mark.usefixtures("slow_streams")
def test_leaving_a_for_loop_early_closes_the_stream(client: SyncChatClient) -> None:
    stream = client.chat.create(integration_id="docs", messages=QUESTION)
    for _event in stream:
        break
    with pytest.raises(chatsdk.StreamError, match="closed before its end"):
        stream.final_result()
    texts = client.chat.completions.create(model="m", messages=QUESTION)
    for _text in texts.text_stream:
        break
    with pytest.raises(chatsdk.StreamError, match="closed before its end"):
        texts.final_result()


@pytest.mark.usefixtures("slow_streams")
def test_a_dropped_stream_is_closed_on_the_client_loop(server: ReferenceServer) -> None:
    # Closed on the client's loop thread (aiohttp objects are not thread-safe): with a
    # pool of one connection, the next call gets it within a bounded wait.
    with SyncChatClient(
        KEY, project=PROJECT, base_url=server.base_url, max_connections=1, timeout=5
    ) as client:
        for _event in client.chat.create(integration_id="docs", messages=QUESTION):
            break
        began = time.monotonic()
        stream = client.chat.create(integration_id="docs", messages=QUESTION)
        assert next(iter(stream)) is not None
        stream.close()
        assert time.monotonic() - began < 2


def test_ctrl_c_while_waiting_cancels_the_read(
    client: SyncChatClient, server: ReferenceServer
) -> None:
    server.faults = Faults(event_delay=1.0)
    try:
        stream = client.chat.create(integration_id="docs", messages=QUESTION)
        next(stream)  # the next event is a second away
        main = threading.main_thread().ident
        assert main is not None and threading.get_ident() == main
        timer = threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            next(stream)
        timer.join()
    finally:
        server.faults = Faults()
    # The interrupted read was cancelled in the loop: the stream is over (reading it
    # again says so), the client fine.
    with pytest.raises(chatsdk.StreamError, match="closed before its end"):
        list(stream)
    assert client.chat.create(integration_id="docs", messages=QUESTION).final_result().text


def test_closing_the_client_ends_a_call_entering_its_stream_while_the_provider_runs(
    server: ReferenceServer,
) -> None:
    release = threading.Event()

    def slow_provider() -> str:
        release.wait(5)
        return "never-used-token-1234"

    client = SyncChatClient(session_token=slow_provider, project=PROJECT, base_url=server.base_url)

    def read() -> None:
        with client.chat.create(integration_id="docs", messages=QUESTION) as stream:
            stream.final_result()

    close_while_reading(client, read)
    release.set()


@pytest.mark.parametrize("reads", ["for", "final_result", "next"])
def test_closing_the_client_from_another_thread_ends_a_call_waiting_for_headers(
    reads: str,
) -> None:
    # A server that takes the request and never answers: the call waits for headers.
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    client = SyncChatClient(KEY, project=PROJECT, base_url=url, timeout=chatsdk.Timeout(idle=8))
    stream = client.chat.create(integration_id="docs", messages=QUESTION)

    def read() -> None:
        if reads == "for":
            list(stream)
        elif reads == "next":
            next(stream)
        else:
            stream.final_result()

    close_while_reading(client, read)
    listener.close()


def close_while_reading(client: SyncChatClient, read: Callable[[], object]) -> None:
    """Run ``read`` in a thread, close ``client`` from this one 0.3 s in: the read must end
    within 2 s with StreamError saying the client was closed."""
    outcome: list[BaseException] = []

    def reader() -> None:
        try:
            read()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.3)
    began = time.monotonic()
    client.close()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - began < 2
    assert len(outcome) == 1 and isinstance(outcome[0], chatsdk.StreamError), outcome
    assert "client was closed" in str(outcome[0])


@pytest.mark.usefixtures("slow_streams")
@pytest.mark.usefixtures("slow_streams")
def test_a_stream_read_on_after_its_client_closed_says_the_client_closed_it(
    server: ReferenceServer,
) -> None:
    # As the async client does: a StreamError, not "this client is closed" (a
    # ValidationError, which README keeps for bad arguments).
    client = SyncChatClient(KEY, project=PROJECT, base_url=server.base_url, retries=FAST)
    stream = client.chat.completions.create(model="m", messages=QUESTION)
    next(stream)
    client.close()
    with pytest.raises(chatsdk.StreamError, match="the client was closed"):
        list(stream)
    with pytest.raises(chatsdk.StreamError, match="the client was closed"):
        stream.final_result()
    not_begun = chatsdk.SyncChatClient(KEY, project=PROJECT, base_url=server.base_url)
    never_read = not_begun.chat.completions.create(model="m", messages=QUESTION)
    not_begun.close()
    with pytest.raises(chatsdk.ValidationError, match="closed"):
        next(never_read)  # as any call on a closed client


def test_a_stream_whole_before_its_client_closed_still_gives_its_answer(
    server: ReferenceServer,
) -> None:
    # As the async stream does: its events and result were read before the close.
    client = SyncChatClient(KEY, project=PROJECT, base_url=server.base_url, retries=FAST)
    stream = client.chat.completions.create(model="m", messages=QUESTION)
    with stream:
        first = next(stream)
        result = stream.final_result()
    client.close()
    assert first is not None
    assert stream.final_result() == result
    assert result.text


def read_on(client: SyncChatClient, reading: threading.Barrier, outcomes: list[str]) -> None:
    """Begin a stream, wait at ``reading``, then read on; note how the read ended."""
    stream = client.chat.completions.create(model="m", messages=QUESTION)
    next(stream)
    reading.wait()
    try:
        list(stream)
    except chatsdk.ChatSDKError as exc:
        outcomes.append(f"{type(exc).__name__}: {exc}"[:52])


@pytest.mark.usefixtures("slow_streams")
def test_closing_the_client_while_threads_read_ends_each_read_and_leaks_nothing(
    server: ReferenceServer, recwarn: pytest.WarningsRecorder
) -> None:
    unraisable: list[Any] = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        for _ in range(10):  # a race: each round may close between two reads or in one
            client = SyncChatClient(KEY, project=PROJECT, base_url=server.base_url, retries=FAST)
            outcomes: list[str] = []
            reading = threading.Barrier(7)
            args = (client, reading, outcomes)
            threads = [threading.Thread(target=read_on, args=args) for _ in range(6)]
            for thread in threads:
                thread.start()
            reading.wait()
            time.sleep(0.05)
            client.close()
            for thread in threads:
                thread.join(10)
            gc.collect()
            assert outcomes == ["StreamError: the client was closed while this stream"] * 6
    finally:
        sys.unraisablehook = hook
    assert unraisable == []  # no finalizer closed a connection off its loop
    assert [w for w in recwarn if issubclass(w.category, ResourceWarning)] == []


def test_close_closes_open_streams_and_stops_the_thread(server: ReferenceServer) -> None:
    before = len(portal_threads())
    client = SyncChatClient(KEY, project=PROJECT, base_url=server.base_url)
    assert len(portal_threads()) == before + 1
    stream = client.chat.create(integration_id="docs", messages=QUESTION)
    next(stream)
    client.close()
    client.close()  # idempotent
    assert client.closed and len(portal_threads()) == before
    with pytest.raises(chatsdk.StreamError, match="the client was closed"):
        next(stream)  # it was being read: as the async client says
    with pytest.raises(chatsdk.ValidationError, match="closed"):
        client.tokens.create(embed_origin=ORIGIN)
    del stream
    gc.collect()


def test_an_unclosed_client_stops_its_thread_when_collected(server: ReferenceServer) -> None:
    before = len(portal_threads())
    client = SyncChatClient(KEY, project=PROJECT, base_url=server.base_url)
    client.tokens.create(embed_origin=ORIGIN)
    del client  # no gc.collect(): nothing keeps it in a reference cycle
    assert len(portal_threads()) == before

    # A stream keeps its client's loop alive.
    stream = SyncChatClient(KEY, project=PROJECT, base_url=server.base_url).chat.create(
        integration_id="docs", messages=QUESTION
    )
    assert stream.final_result().text.startswith("A client token")
    assert len(portal_threads()) == before + 1
    del stream
    assert len(portal_threads()) == before


def test_calls_are_refused_inside_a_running_event_loop(server: ReferenceServer) -> None:
    async def build() -> bool:
        # Building one is not refused (a module that makes one at import, imported in
        # a notebook), nor is closing it, which does not block the loop.
        client = SyncChatClient(KEY, project=PROJECT, base_url=server.base_url)
        with pytest.raises(chatsdk.ValidationError, match="ChatClient"):
            client.tokens.create(embed_origin=ORIGIN)
        client.close()
        return client.closed

    assert asyncio.run(build())

    with SyncChatClient(KEY, project=PROJECT, base_url=server.base_url) as client:

        async def call() -> None:
            client.tokens.create(embed_origin=ORIGIN)

        with pytest.raises(chatsdk.ValidationError, match=r"async chatsdk\.ChatClient"):
            asyncio.run(call())
        stream = client.chat.create(integration_id="docs", messages=QUESTION)

        async def iterate() -> None:
            next(stream)

        with pytest.raises(chatsdk.ValidationError):
            asyncio.run(iterate())
        assert stream.final_result().text  # still usable from plain code


@pytest.mark.anyio
async def test_refused_inside_an_anyio_test(server: ReferenceServer) -> None:
    with SyncChatClient(KEY, project=PROJECT, base_url=server.base_url) as client:
        with pytest.raises(chatsdk.ValidationError, match="running event loop"):
            client.chat.completions.create(model="m", messages=QUESTION)


@pytest.mark.usefixtures("slow_streams")
def test_a_sync_stream_dropped_in_an_event_loop_thread_is_closed(server: ReferenceServer) -> None:
    # An async app reads a sync stream in worker threads (asyncio.to_thread) and drops
    # its iterator in the loop thread: the close there used to be refused, every later
    # close() did nothing, and the pool's only connection stayed taken.
    async def app(client: SyncChatClient) -> str:
        stream = await asyncio.to_thread(
            client.chat.completions.create, model="m", messages=QUESTION
        )
        events = iter(stream)
        await asyncio.to_thread(next, events)
        del events  # the generator's finally runs here, in the loop thread
        gc.collect()
        await asyncio.sleep(0.2)
        answer = await asyncio.to_thread(
            lambda: client.chat.completions.create(model="m", messages="Hi").final_result()
        )
        return answer.text

    server.faults = Faults(event_delay=0.2)
    with SyncChatClient(
        KEY, project=PROJECT, base_url=server.base_url, max_connections=1, timeout=3
    ) as client:
        server.faults = Faults(event_delay=0.05)
        assert asyncio.run(app(client))


FORKED = """
import os, sys
import chatsdk

client = chatsdk.SyncChatClient(
    sys.argv[1], project=sys.argv[2], base_url=sys.argv[3], timeout=3, retries=0
)
if sys.argv[4] == "used":
    client.tokens.create(embed_origin="https://docs.example.com")
pid = os.fork()
if pid == 0:
    try:
        client.tokens.create(embed_origin="https://docs.example.com")
    except chatsdk.ValidationError as exc:
        print("child:", exc, flush=True)
        sys.exit(0)  # and interpreter exit must not wait for the parent's thread
    sys.exit(3)
_, status = os.waitpid(pid, 0)
print("child exit:", os.waitstatus_to_exitcode(status), flush=True)
print("parent:", client.tokens.create(embed_origin="https://docs.example.com").status)
client.close()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork here")
@pytest.mark.parametrize("before_fork", ["unused", "used"])
def test_a_client_carried_across_fork_is_refused_in_the_child(
    server: ReferenceServer, before_fork: str
) -> None:
    # gunicorn --preload, multiprocessing and Celery's prefork pool fork a process that
    # made a client at import: the child's calls waited for ever for a thread that
    # stayed in the parent (timeout= could not end them).
    done = subprocess.run(
        [sys.executable, "-c", FORKED, KEY, PROJECT, server.base_url, before_fork],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "child: this SyncChatClient was made before os.fork()" in done.stdout
    assert "child exit: 0" in done.stdout and "parent: active" in done.stdout
    # The child's exit collects the parent's aiohttp objects: they used to report
    # themselves unclosed on its stderr (every prefork worker's log).
    assert "Unclosed" not in done.stderr, done.stderr


def test_bad_arguments_fail_before_a_thread_starts() -> None:
    before = len(portal_threads())
    with pytest.raises(chatsdk.ValidationError):
        SyncChatClient(KEY, project=PROJECT, base_url="not a url")
    with pytest.raises(chatsdk.ValidationError):
        SyncChatClient(KEY, project=PROJECT, base_url="http://x", max_connections=-1)
    assert len(portal_threads()) == before


def test_repr_shows_no_secret(server: ReferenceServer) -> None:
    with SyncChatClient(KEY, project=PROJECT, base_url=server.base_url) as client:
        text = repr(client)
        stream = client.chat.create(integration_id="docs", messages=QUESTION)
        text += repr(stream)
        stream.close()
    assert KEY not in text and "SyncChatClient" in text and "closed" in repr(client)


def test_settings_are_shown_as_resolved(server: ReferenceServer) -> None:
    with SyncChatClient(KEY, project=PROJECT, base_url=server.base_url) as client:
        assert client.settings.completions_base_url == server.base_url
        assert KEY not in repr(client.settings)


AT_EXIT = """
import atexit, sys, threading
import chatsdk


def after():  # runs after the client is closed (registered before it was made)
    try:
        client.tokens.create(embed_origin="https://docs.example.com")
    except chatsdk.ValidationError as exc:
        print("main thread:", type(exc).__name__, flush=True)  # an error stays one here


atexit.register(after)
client = chatsdk.SyncChatClient(sys.argv[1], project=sys.argv[2], base_url=sys.argv[3], retries=0)
reading = threading.Event()


def read(api):
    stream = (
        client.chat.create(integration_id="docs", messages="q")
        if api == "chat"
        else client.chat.completions.create(model="m", messages="q")
    )
    try:
        for _ in stream:
            reading.set()
    except SystemExit as exc:
        print(f"{api} thread: SystemExit ({exc}) from {type(exc.__cause__).__name__}", flush=True)
        raise


for api in ("chat", "completions"):
    threading.Thread(target=read, args=(api,), daemon=True).start()
reading.wait(10)
print("main exits", flush=True)
"""


@pytest.mark.usefixtures("slow_streams")
def test_daemon_threads_reading_at_exit_end_silently(server: ReferenceServer) -> None:
    # The client left open is closed at exit, under threads still reading it: each
    # printed a StreamError traceback at every exit. Python joins non-daemon threads
    # before its exit functions run, so only daemon threads meet this.
    done = subprocess.run(
        [sys.executable, "-c", AT_EXIT, KEY, PROJECT, server.base_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "Unclosed" not in done.stderr, done.stderr
    for api in ("chat", "completions"):
        assert f"{api} thread: SystemExit (the interpreter is exiting" in done.stdout
    assert "main thread: ValidationError" in done.stdout, done.stdout
