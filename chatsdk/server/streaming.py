"""Event-stream answers of both chat wires: result event logs, sending them with the
faults in force, the resume ``GET`` (SPEC 1.7) and the once-only answer of a ``POST``.

Every streamed answer is first stored as a numbered event log (``store.save_result``)
and then sent from it, so the first response, an idempotent replay and a resume after
``Last-Event-ID`` all send the same events with the same ids. A Chat Completions log is
one whose events have no name (``data:`` only); its last event is ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

import msgspec
from aiohttp import web

from chatsdk.server.errors import ApiError, json_encoder
from chatsdk.server.faults import FaultState
from chatsdk.server.plumbing import (
    ServerState,
    authenticate_chat,
    cors_headers,
    idempotency_lookup,
    last_event_id,
    replayed,
    request_id,
    save_outcome,
    stream_slot,
)
from chatsdk.server.store import IdempotencyRecord, StoredEvent

__all__ = ["DONE", "answer_once", "result_events", "result_path", "send_stream"]

#: The data of the Chat Completions end event (``data: [DONE]``).
DONE: Final = "[DONE]"

#: An event to store: its name ("" for none, as on the Chat Completions wire) and data.
Event = tuple[str, str]


def result_path(result_id: str) -> str:
    """The path of a result's event log: its ``Content-Location``, the resume ``GET``."""
    return f"/chat_sessions/results/{result_id}/events"


def _frame(event: StoredEvent) -> bytes:
    if event.event:
        return f"id: {event.id}\nevent: {event.event}\ndata: {event.data}\n\n".encode()
    return f"id: {event.id}\ndata: {event.data}\n\n".encode()


def _error_frame(completions: bool) -> bytes:
    error = {
        "error": {
            "message": "injected error (Faults.error_chunk_after)",
            "type": "server_error",
            "code": "injected_error",
        }
    }
    data = json_encoder.encode(error).decode()
    return (
        f"data: {data}\n\n".encode() if completions else f"event: error\ndata: {data}\n\n".encode()
    )


_CUT: Final = b""  # yielded by _faulty_frames: drop the connection here


def _before_the_end(events: Sequence[StoredEvent]) -> Sequence[StoredEvent]:
    """A Chat Completions body cut cleanly before its end (``no_done``): without the
    chunk that finishes the answer, and so without what follows it (the usage chunk,
    ``[DONE]``); a body that ends after that chunk is a whole answer (SPEC 1.8)."""
    for i, event in enumerate(events):
        if event.data == DONE:
            return events[:i]
        try:
            chunk = msgspec.json.decode(event.data)
        except msgspec.DecodeError:
            continue
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if any(isinstance(c, dict) and c.get("finish_reason") for c in choices or ()):
            return events[:i]
    return events


async def _faulty_frames(
    events: Sequence[StoredEvent], state: FaultState, *, completions: bool
) -> AsyncIterator[bytes]:
    """The frames of ``events`` with the faults of ``state`` applied; :data:`_CUT` means
    drop the connection now."""
    faults = state.faults
    if faults.retry_ms is not None:
        yield f"retry: {faults.retry_ms}\n\n".encode()
    if faults.pings_only:
        while True:
            yield b": ping\n\n"
            await asyncio.sleep(faults.ping_interval)
    if faults.drop_after_events == 0 and state.take_drop():
        yield _CUT
        return
    if faults.no_done and completions:
        events = _before_the_end(events)
    for sent, event in enumerate(events):
        if sent == faults.malformed_after:
            break
        if sent == faults.error_chunk_after:
            yield _error_frame(completions)
            return
        if sent and faults.event_delay:
            await asyncio.sleep(faults.event_delay)
        yield _frame(event)
        if sent + 1 == faults.drop_after_events and state.take_drop():
            yield _CUT
            return
    if faults.malformed_after is not None and faults.malformed_after <= len(events):
        yield (
            b"data: {not json\n\n" if completions else b"event: message_chunk\ndata: {not json\n\n"
        )
    elif faults.error_chunk_after is not None and faults.error_chunk_after == len(events):
        yield _error_frame(completions)


def _is_completions_log(log: Sequence[StoredEvent]) -> bool:
    return bool(log) and not log[0].event


def _cut(request: web.Request) -> None:
    """Drop the connection mid-body, as a crashed proxy or server would.

    ``close()`` (not ``abort()``) so the events already written reach the client
    first; the chunked body is never terminated, which the client sees as an
    interrupted stream.
    """
    transport = request.transport
    if transport is not None:
        transport.close()


async def send_stream(
    state: ServerState, request: web.Request, result_id: str, after: int
) -> web.StreamResponse:
    """Stream a result's stored events after ``after``, applying the faults in force."""
    if state.closing:
        raise ApiError(503, "the server is shutting down", headers={"Retry-After": "1"})
    log = state.store.result_events(result_id)
    completions = _is_completions_log(log)
    events = [event for event in log if event.id > after]
    faults = state.fault_state  # one scenario per response, even if swapped meanwhile
    response = web.StreamResponse(status=200)
    response.content_type = (
        "text/plain" if faults.faults.wrong_content_type else "text/event-stream"
    )
    response.headers["Cache-Control"] = "no-cache"
    if not faults.faults.no_content_location:
        response.headers["Content-Location"] = result_path(result_id)
    response.headers["X-Request-Id"] = request_id()
    response.headers.update(cors_headers(request))

    task = asyncio.current_task()
    assert task is not None
    state.stream_tasks.add(task)
    try:
        await response.prepare(request)
        async for frame in _faulty_frames(events, faults, completions=completions):
            if not frame:
                _cut(request)
                return response
            await response.write(frame)
        await response.write_eof()
    except ConnectionError:
        pass  # the client left; nobody is listening for the rest
    finally:
        state.stream_tasks.discard(task)
    return response


async def result_events(state: ServerState, request: web.Request) -> web.StreamResponse:
    """``GET /chat_sessions/results/{result_id}/events``: replay after ``Last-Event-ID``.

    One route for the logs of both wires; each wire's credentials resume its logs.
    """
    result_id = request.match_info["result_id"]
    completions = _is_completions_log(state.store.result_events(result_id)[:1])
    caller = authenticate_chat(state, request, gram_key=completions)
    after = last_event_id(request)
    not_before = time.time() - state.result_ttl
    if not state.store.result_exists(result_id, state.project, not_before):
        raise ApiError(404, "no such result (unknown or expired)")
    with stream_slot(state, caller):
        return await send_stream(state, request, result_id, after)


async def answer_once(
    state: ServerState,
    request: web.Request,
    caller: str,
    body: bytes,
    *,
    stream: bool,
    produce: Callable[[], tuple[str, Sequence[Event] | bytes]],
) -> web.StreamResponse:
    """Answer a chat ``POST`` once per ``Idempotency-Key``, streamed or whole.

    ``produce`` runs inside the store transaction that also keeps the result log and
    the idempotency record, so a crash never leaves a turn that a retry would repeat.
    It returns the owner of the result (a session id, a completion id) and the events
    to store (``stream``) or the JSON body (otherwise). A repeat of a streamed call
    replays the first call's log, from the start or after its ``Last-Event-ID``.
    """
    store = state.store
    after = last_event_id(request)  # refused when malformed, used by replays
    with stream_slot(state, caller) if stream else contextlib.nullcontext():
        claim = idempotency_lookup(state, request, body)
        if isinstance(claim, IdempotencyRecord):
            if claim.result_id is None:
                return replayed(claim)
            return await send_stream(state, request, claim.result_id, after)
        result_id = secrets.token_urlsafe(12)
        with store.transaction():
            owner, made = produce()
            if isinstance(made, bytes):
                save_outcome(state, claim, "application/json", made)
            else:
                store.save_result(result_id, state.project, owner, made, time.time())
                save_outcome(state, claim, "text/event-stream", result_id=result_id)
        state.purge()
        if isinstance(made, bytes):
            return web.Response(body=made, content_type="application/json")
        return await send_stream(state, request, result_id, 0)
