"""ChatStream: send on first use, decode events, accumulate the answer, resume, release.

A ``ChatStream`` is returned at once by ``chat.create``/``chat.continue_``; the request
is sent on the first iteration (or on ``async with``/``await``). It is a plain class,
not an async generator, so that every exit path can release the connection itself:

- the body is read to the end: the connection goes back to the pool;
- ``aclose()``, leaving ``async with``, an exception or a cancellation inside
  ``__anext__``: the connection is closed at once;
- ``break`` (or an exception in the caller's loop body) and the stream dropped:
  ``__del__`` closes the connection, which CPython runs as soon as the loop lets go.

A dropped connection is resumed (SPEC §1.7) when the server gave ``Content-Location``:
``GET`` it with ``Last-Event-ID`` and go on, so the caller sees each event once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Generator, Iterator
from types import TracebackType
from typing import Any, cast
from urllib.parse import urljoin, urlsplit

import aiohttp
import msgspec

from ._config import RetryPolicy, Timeout
from ._transport import Api, Transport, deadline_for, read_at_most, read_capped
from .errors import APIConnectionError, APITimeoutError, StreamError
from .models import (
    ChatEvent,
    ChatResponse,
    ChatResult,
    Citation,
    Message,
    MessageChunk,
    RecordsCited,
    UnknownEvent,
)
from .sse import DEFAULT_MAX_EVENT_SIZE, EventRun, ServerSentEvent, SSEDecoder, event_runs

__all__ = ["ChatStream"]

log = logging.getLogger("chatsdk")

# Built once per type (msgspec's advice): a Decoder caches its type's validation plan.
_CHUNK = msgspec.json.Decoder(MessageChunk)
_CITED = msgspec.json.Decoder(RecordsCited)
_RESPONSE = msgspec.json.Decoder(ChatResponse)

# msgspec raises UnicodeDecodeError (a ValueError) for bytes that are not UTF-8 and
# RecursionError for absurd nesting, besides its own DecodeError.
_DECODE_ERRORS = (msgspec.DecodeError, ValueError, RecursionError)

# A non-streaming answer is read whole; bound it like the decoder bounds one event.
MAX_JSON_BODY = 8 * 1024 * 1024


class ChatStream:
    """The answer to one chat call: an async iterator of events and an async context manager.

    Iterate it for :class:`MessageChunk`, :class:`RecordsCited` and :class:`UnknownEvent`
    values, use :attr:`text_stream` for the text alone, or ``await`` it (or
    :meth:`final_result`) for the whole :class:`ChatResult`::

        async with client.chat.create(integration_id="docs", messages=[...]) as stream:
            async for text in stream.text_stream:
                print(text, end="")
            result = await stream.final_result()
    """

    def __init__(
        self,
        transport: Transport,
        *,
        api: Api,
        url: str,
        body: bytes,
        timeout: Timeout,
        retries: RetryPolicy,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
    ):
        self._transport = transport
        self._api: Api = api
        self._url = url
        self._body = body
        self._timeout = timeout
        self._retries = retries
        self._max_event_size = max_event_size
        self._response: aiohttp.ClientResponse | None = None
        self._decoder: SSEDecoder | None = None
        self._deadline: float | None = None
        self._started = False
        self._done = False
        self._pending: Iterator[ChatEvent] = iter(())
        # A malformed payload found after good events of the same read: raised next.
        self._error: StreamError | None = None
        # What final_result() needs, folded in as each batch is queued (the events
        # themselves are not kept: a long stream must not pin every struct it made).
        self._text: list[str] = []
        self._citations: list[Citation] = []
        self._finish_reason: str | None = None
        self._chat_session_id: str | None = None
        # Resumption state (SPEC §1.7).
        self._resume_url: str | None = None
        self._last_event_id = ""
        self._retry_ms: int | None = None
        self._failed_resumes = 0
        # After a resume: the Last-Event-ID sent, until the server has sent an event
        # after it (events at or before it are replays, dropped: see _drop_replays).
        self._replay_floor: str | None = None
        self._resumed_first_event = False  # the next event is a resumed connection's first
        self._replay_from_top = False  # dropping everything up to the floor's event
        self._delivered = False  # some event was handed to the caller
        self._first_id: str | None = None  # the first event id delivered
        self.resumes = 0
        """How many times this stream reconnected after a dropped connection."""
        self.replays_dropped = 0
        """Events a resumed connection sent again (at or before Last-Event-ID), not delivered."""

    # -- public surface ---------------------------------------------------------------

    @property
    def chat_session_id(self) -> str | None:
        """The chat session this answer belongs to, once the server has said it."""
        return self._chat_session_id

    @property
    def text_stream(self) -> AsyncIterator[str]:
        """The answer's text pieces as they arrive (non-empty ``content_chunk`` values)."""
        return self._texts()

    async def _texts(self) -> AsyncIterator[str]:
        async for event in self:
            if type(event) is MessageChunk and event.content_chunk:
                yield event.content_chunk

    async def final_result(self) -> ChatResult:
        """Read the rest of the stream and return the whole answer."""
        while True:
            try:
                await self.__anext__()
            except StopAsyncIteration:
                break
        return ChatResult(
            chat_session_id=self._chat_session_id,
            message=Message(
                role="assistant",
                content="".join(self._text),
                records_cited=RecordsCited(list(self._citations)) if self._citations else None,
            ),
            citations=list(self._citations),
            finish_reason=self._finish_reason,
        )

    def __await__(self) -> Generator[Any, None, ChatResult]:
        return self.final_result().__await__()

    def __aiter__(self) -> AsyncIterator[ChatEvent]:
        # `async for` gets an async generator over the same state: CPython resumes one
        # far more cheaply per item than it calls a Python-level __anext__. Abandoning
        # it is safe: the connection belongs to this stream, whose exits all release it.
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ChatEvent]:
        while True:
            for event in self._pending:
                yield event
            if self._done:
                return
            await self._read_batch()

    async def __anext__(self) -> ChatEvent:
        # The hot path: hand out the next decoded event (a for loop is the cheapest way
        # to take one item from an iterator); read more only when the batch is used up.
        for event in self._pending:
            return event
        return await self._next_batch()

    async def _next_batch(self) -> ChatEvent:
        while not self._done:
            await self._read_batch()
            for event in self._pending:
                return event
        raise StopAsyncIteration

    async def _read_batch(self) -> None:
        try:
            await self._read_events()
        except BaseException:
            # An error or a cancellation mid-read: nothing more will be read.
            self._done = True
            self._close_connection()
            raise

    async def __aenter__(self) -> ChatStream:
        if not self._started:
            try:
                await self._open()
            except BaseException:
                self._done = True
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and release the connection (closing it if the body was unfinished)."""
        self._done = True
        self._pending = iter(())
        self._close_connection()

    def __del__(self) -> None:
        # A stream abandoned after `break` ends here; close rather than leak the socket.
        response = self._response
        if response is not None and not response.closed:
            response.close()

    def __repr__(self) -> str:
        state = "done" if self._done else ("open" if self._started else "not started")
        return f"<ChatStream {self._url.split('?')[0]!r} {state}>"

    # -- connection ---------------------------------------------------------------------

    def _close_connection(self) -> None:
        response, self._response = self._response, None
        if response is not None and not response.closed:
            response.close()

    async def _open(self) -> None:
        self._started = True
        self._deadline = deadline_for(self._timeout)
        response = await self._transport.send(
            "POST",
            self._url,
            api=self._api,
            body=self._body,
            headers={"Accept": "text/event-stream, application/json"},
            timeout=self._timeout,
            retries=self._retries,
            deadline=self._deadline,
        )
        await self._accept(response)

    async def _accept(self, response: aiohttp.ClientResponse) -> None:
        """Take a response: an event stream to read, or a whole JSON answer to replay."""
        self._response = response
        content_type = response.content_type
        if content_type == "text/event-stream":
            location = response.headers.get("Content-Location")
            if location:
                self._resume_url = _same_origin_url(self._url, location)
            self._decoder = SSEDecoder(
                max_line_size=self._max_event_size,
                max_event_size=self._max_event_size,
                last_event_id=self._last_event_id,
            )
            return
        if content_type == "application/json" or content_type.endswith("+json"):
            body = await self._read_whole(response)
            try:
                answer = _RESPONSE.decode(body)
            except _DECODE_ERRORS as exc:
                raise StreamError(
                    f"invalid JSON answer: {type(exc).__name__}: {exc}", received=body
                ) from exc
            events: list[ChatEvent] = [
                MessageChunk(
                    content_chunk=answer.message.content,
                    chat_session_id=answer.chat_session_id,
                    finish_reason="stop",
                )
            ]
            if answer.message.records_cited is not None:
                events.append(answer.message.records_cited)
            self._done = True
            self._take(events)
            return
        preview = await read_capped(response, 512)
        raise StreamError(
            f"expected an event stream, got Content-Type {response.headers.get('Content-Type')!r}",
            received=preview,
        )

    async def _read_whole(self, response: aiohttp.ClientResponse) -> bytes:
        # A whole answer is one "event": bounded by idle as well as total.
        wait_until = self._deadline
        if self._timeout.idle is not None:
            idle_end = asyncio.get_running_loop().time() + self._timeout.idle
            wait_until = idle_end if wait_until is None else min(wait_until, idle_end)
        try:
            async with asyncio.timeout_at(wait_until):
                body = await read_at_most(response, MAX_JSON_BODY)
        except TimeoutError as exc:
            raise APITimeoutError("timed out reading the answer") from exc
        except aiohttp.ClientError as exc:
            raise APIConnectionError("the connection broke while reading the answer") from exc
        response.release()
        self._response = None
        return body

    async def _resume(self, cause: BaseException) -> None:
        """Reconnect after a drop with ``Last-Event-ID``, or raise StreamError if we cannot."""
        self._close_connection()
        if self._resume_url is None:
            raise StreamError(
                "the connection dropped mid-stream and the server did not make the stream "
                "resumable (no Content-Location)",
                event=None,
            ) from cause
        if not self._last_event_id and self._delivered:
            # Without an id to resume from, the server would start again from the top.
            raise StreamError(
                "the connection dropped mid-stream and no event so far carried an id to "
                "resume from; reconnecting would repeat events already delivered"
            ) from cause
        if self._failed_resumes >= self._retries.max_resumes:
            raise StreamError(
                f"the connection dropped mid-stream; gave up after {self._failed_resumes} "
                "reconnects without a new event"
            ) from cause
        delay = (
            self._retry_ms / 1000
            if self._retry_ms is not None
            else self._retries.backoff(self._failed_resumes)
        )
        if self._deadline is not None:
            loop_time = asyncio.get_running_loop().time()
            if loop_time + delay >= self._deadline:
                raise APITimeoutError(
                    "total timeout expired while resuming a dropped stream"
                ) from cause
        self._failed_resumes += 1
        self.resumes += 1
        log.debug(
            "stream dropped (%s); resuming after event id %r",
            type(cause).__name__,
            self._last_event_id,
        )
        await asyncio.sleep(delay)
        headers = {"Accept": "text/event-stream"}
        if self._last_event_id:
            headers["Last-Event-ID"] = self._last_event_id
        self._replay_floor = self._last_event_id or None
        self._resumed_first_event = True
        self._replay_from_top = False
        response = await self._transport.send(
            "GET",
            self._resume_url,
            api=self._api,
            headers=headers,
            timeout=self._timeout,
            retries=self._retries,
            deadline=self._deadline,
        )
        await self._accept(response)

    # -- reading ------------------------------------------------------------------------

    async def _read_events(self) -> None:
        """Read until at least one event is ready or the body ends."""
        if self._error is not None:
            raise self._error
        if not self._started:
            await self._open()
            if self._done:  # a whole JSON answer, already queued
                return
        loop = asyncio.get_running_loop()
        idle = self._timeout.idle
        wait_until = None if idle is None else loop.time() + idle
        if self._deadline is not None and (wait_until is None or self._deadline < wait_until):
            wait_until = self._deadline
        while True:
            response, decoder = self._response, self._decoder
            assert response is not None and decoder is not None
            try:
                async with asyncio.timeout_at(wait_until):
                    chunk = await response.content.readany()
            except aiohttp.ServerTimeoutError as exc:
                raise APITimeoutError(
                    f"no bytes from the server for {self._timeout.read} s (read timeout)"
                ) from exc
            except TimeoutError as exc:
                if self._deadline is not None and loop.time() >= self._deadline:
                    raise APITimeoutError("total timeout expired while streaming") from exc
                raise APITimeoutError(
                    f"no event from the server for {idle} s (idle timeout; pings do not count)"
                ) from exc
            except aiohttp.ClientError as exc:
                await self._resume(exc)
                continue
            if not chunk:
                if not decoder.at_event_boundary:
                    if self._resume_url is not None:
                        await self._resume(StreamError("the body ended mid-event"))
                        continue
                    raise StreamError("the event stream ended in the middle of an event")
                self._done = True
                self._response = None
                response.release()
                return
            if self._replay_floor is not None:
                events = self._drop_replays(decoder.feed(chunk))
            elif not self._delivered:
                events = self._read_first_events(decoder, chunk)
            else:
                events = decoder.feed_runs(chunk)
            self._retry_ms = decoder.retry
            # (While replays are dropped, the id to resume from stays the one sent.)
            if self._replay_floor is None and decoder.last_event_id != self._last_event_id:
                self._last_event_id = decoder.last_event_id
                self._failed_resumes = 0
            if events:
                self._failed_resumes = 0
                decoded = self._decode(events)
                # The usual batch: one run of message chunks, all of them decoded.
                chunks_only = (
                    len(events) == 1
                    and events[0][0] == "message_chunk"
                    and len(decoded) == len(events[0][1])
                )
                self._take(decoded, chunks_only=chunks_only)
                return

    def _read_first_events(self, decoder: SSEDecoder, chunk: bytes) -> list[EventRun]:
        """feed_runs for the stream's first events, noting the first event id on the way.

        That id tells a replay from the top apart (see _drop_replays); the first event
        is decoded on its own to read it, the rest of the chunk as usual.
        """
        cut = chunk.find(b"\n\n") + 2
        if cut < 2:  # no LF LF (not one whole event yet, or CRLF line ends)
            cut = len(chunk)
        head = decoder.feed(chunk[:cut])
        if self._first_id is None:
            self._first_id = next((event.id for event in head if event.id), None)
        return event_runs(head, *decoder.feed_runs(chunk[cut:]))

    def _drop_replays(self, events: list[ServerSentEvent]) -> list[EventRun]:
        """The events of a resumed connection that come after the Last-Event-ID sent.

        SPEC §1.7 says a resumed stream starts after that id; a server that starts
        earlier (ignoring the header, or replaying from the top) would otherwise make
        the caller see events twice. Leading events whose id is the one sent, or a
        decimal id not above it, are dropped; so is everything up to and including
        the event with the id sent when the first one has the stream's first id (a
        replay from the top, which opaque ids show no other way). The first event
        after that ends the check.
        """
        floor = self._replay_floor
        assert floor is not None
        index = 0
        for event in events:
            if self._replay_from_top:  # dropped, through the event with the id sent
                self._replay_from_top = event.id != floor
            elif self._resumed_first_event and event.id == self._first_id != floor:
                self._replay_from_top = True
            elif not _at_or_before(event.id, floor):
                self._replay_floor = None
                break
            self._resumed_first_event = False
            index += 1
        if index:
            self.replays_dropped += index
            log.debug("dropped %d replayed event(s) at or before id %r", index, floor)
        return event_runs(events[index:])

    def _decode(self, runs: list[EventRun]) -> list[ChatEvent]:
        # runs: from SSEDecoder.feed_runs, usually one run of message chunks a chunk.
        decode_chunk = _CHUNK.decode
        decoded: list[ChatEvent] = []
        try:
            for event, datas in runs:
                if event == "message_chunk":
                    # The hot path: each payload decoded on its own, all in C. (One
                    # decode of a run joined as a JSON array or JSON lines is cheaper,
                    # but accepts malformed payloads whose join is valid: '{"a":"x"},
                    # {"a":"' and '"}' as an array, '{"a":' and '1} {"a":2}' as lines.)
                    decoded += map(decode_chunk, datas)
                else:
                    decoded += [_decode_other(ServerSentEvent(event, data)) for data in datas]
            return decoded
        except _DECODE_ERRORS:
            pass
        # Find the culprit, to report it precisely; the events before it are still
        # delivered (what the caller sees must not depend on how the bytes were cut),
        # and the error is raised when the caller asks for the next one.
        good: list[ChatEvent] = []
        for event, datas in runs:
            for data in datas:
                try:
                    if event == "message_chunk":
                        good.append(decode_chunk(data))
                    else:
                        good.append(_decode_other(ServerSentEvent(event, data)))
                except _DECODE_ERRORS as exc:
                    error = StreamError(
                        f"invalid {event} payload: {type(exc).__name__}: {exc}",
                        event=event,
                        received=data,
                    )
                    error.__cause__ = exc
                    if not good:
                        raise error from exc
                    self._error = error
                    return good
        raise AssertionError("unreachable: a payload failed only once")  # pragma: no cover

    def _take(self, events: list[ChatEvent], *, chunks_only: bool = False) -> None:
        """Queue events for the caller, folding what final_result() needs from them."""
        self._delivered = self._delivered or bool(events)
        if chunks_only:
            # All of them MessageChunk: no type test per event.
            chunks = cast(list[MessageChunk], events)
            # Comprehensions: CPython's specialised attribute reads beat attrgetter.
            self._text.append("".join([chunk.content_chunk for chunk in chunks]))
            finished = [chunk for chunk in chunks if chunk.finish_reason is not None]
            if finished:
                self._finish_reason = finished[-1].finish_reason
        else:
            self._fold(events)
        if self._chat_session_id is None:
            for event in events:
                if type(event) is MessageChunk and event.chat_session_id is not None:
                    self._chat_session_id = event.chat_session_id
                    break
        self._pending = iter(events)

    def _fold(self, events: list[ChatEvent]) -> None:
        for event in events:
            if type(event) is MessageChunk:
                self._text.append(event.content_chunk)
                if event.finish_reason is not None:
                    self._finish_reason = event.finish_reason
            elif type(event) is RecordsCited:
                self._citations.extend(event.citations)


def _at_or_before(event_id: str, floor: str) -> bool:
    """Whether an event with this id (the id in force) is one a resume from ``floor`` had.

    Ids are opaque strings, so only equality says so in general; decimal ids (what
    the reference server sends) are also ordered, compared as numbers of any length.
    """
    if event_id == floor:
        return True
    if event_id.isdigit() and floor.isdigit() and event_id.isascii() and floor.isascii():
        a, b = event_id.lstrip("0"), floor.lstrip("0")
        return (len(a), a) <= (len(b), b)
    return False


def _decode_other(event: ServerSentEvent) -> ChatEvent:
    if event.event == "records_cited":
        return _CITED.decode(event.data)
    return UnknownEvent(event=event.event, data=event.data)


def _same_origin_url(request_url: str, location: str) -> str | None:
    """``location`` resolved against the request URL, or None if it points at another origin.

    Credentials go with the resume request, so it must stay on the server that was asked.
    """
    resolved = urljoin(request_url, location)
    a, b = urlsplit(request_url), urlsplit(resolved)
    if (a.scheme, a.netloc) != (b.scheme, b.netloc):
        return None
    return resolved
