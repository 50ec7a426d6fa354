"""The stream core both chat wires share: send, retry, read, resume, judge the end, release.

An :class:`EventStream` is returned at once by ``chat.create``, ``chat.continue_`` and
``chat.completions.create``; the request is sent on first use (iteration, ``async with``
or ``await``). What an event's data means and how a result is folded from the events is
the job of a small per-wire adapter (:class:`Wire`, in ``chat.py`` and ``completions.py``);
every guarantee below is kept here, once, for both wires:

- **Release.** The connection is released on every exit path: the body read to its end
  (back to the pool); ``aclose()``, leaving ``async with``, an error or a cancellation
  (closed at once); ``break`` or an exception in the caller's loop body (closed by the
  iterator's ``finally`` within an event-loop turn, whatever else references the stream).
  A stream closed before its end refuses to give a result (``StreamError``).
- **Time.** ``Timeout.idle`` bounds the gap between two parsed events (the wait before a
  resume included), ``Timeout.total`` the whole call.
- **Resume** (SPEC 1.7). A dropped connection is resumed when the server gave
  ``Content-Location``: ``GET`` it with ``Last-Event-ID`` after a wait the server may set
  with ``retry:`` (capped at ``RetryPolicy.max_delay``). Events a resumed connection sends
  again are dropped only when they are provably ones already delivered; an ambiguous
  replay is a ``StreamError``, never a silently shorter or doubled answer.
- **The end** (SPEC 1.4, 1.8). A body that ends inside an event, or (on a wire with an end
  sentinel) before it, is a ``StreamError`` unless the stream can be resumed.
- **Decoding by what the body is** (SPEC 1.6): the first non-blank byte decides between an
  event stream and a whole JSON answer when the ``Content-Type`` says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncIterator, Generator, Iterator
from types import TracebackType
from typing import Any, Final, Generic, Protocol, Self, TypeVar
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from ._config import RetryPolicy, Timeout, check_header_value
from ._transport import (
    DECODE_ERRORS,
    MAX_JSON_BODY,
    Api,
    Transport,
    deadline_for,
    earliest,
    invalid_response,
    mapped_errors,
    read_at_most,
    scrubbed,
    scrubbed_headers,
    within_read,
)
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ChatSDKError,
    StreamError,
    ValidationError,
)
from .sse import EventRun, ServerSentEvent, SSEDecoder, event_runs

__all__ = ["EventStream", "Wire"]

log = logging.getLogger("chatsdk")

EventT = TypeVar("EventT")
ResultT = TypeVar("ResultT")
ResultT_co = TypeVar("ResultT_co", covariant=True)

# What decoding a run of payloads may raise: a malformed payload, or an error chunk.
_PAYLOAD_ERRORS: tuple[type[Exception], ...] = (*DECODE_ERRORS, APIError)
# The id a connection's decoder starts with: one no id line can give (WHATWG ignores an
# id that holds a NUL), so that it stands for "no id line read on this connection yet".
_NO_ID: Final = "\x00"
_MARKER_ERRORS: tuple[type[Exception], ...] = (*_PAYLOAD_ERRORS, StreamError)

# Before deciding what a body is (SPEC 1.6), at most this much blank text is skipped.
MAX_SNIFF = 64 * 1024

# What may come before a body's first meaningful byte: a BOM and white space.
_BLANK = b"\xef\xbb\xbf \t\r\n"

# The first bytes of an event stream: a field name or a comment (WHATWG: "data", "event",
# "id", "retry", or ":"), after an optional BOM.
_SSE_STARTS = (b"data", b"event", b"id", b"retry", b":")


#: The error of a stream under way when its client was closed (async, and sync: sync.py).
CLOSED_BY_CLIENT: Final = (
    "the client was closed while this stream was being read: its answer is incomplete"
)
# The error of a stream closed before its end, by how it was closed (see _closed_how).
_CLOSED_EARLY: Final = {
    None: "the stream was closed before its end (aclose(), break, or leaving `async with` "
    "early): its answer is incomplete",
    "loop": "the stream was closed before its end when a loop over it was left (break, an "
    "exception, anext(aiter(stream))): its answer is incomplete; `await anext(stream)` "
    "takes one event and leaves the stream open",
    "cancelled": "the stream was closed before its end when a read of it was cancelled (a "
    "timeout around it, a task cancelled): its answer is incomplete",
}


def _concurrent_read(message: str) -> ValidationError:
    """The error of a read refused because another task's is under way (which the
    refused one then leaves alone: see _iterate)."""
    error = ValidationError(message)
    error.concurrent_read = True  # type: ignore[attr-defined]
    return error


class Wire(Protocol[EventT, ResultT_co]):
    """One chat wire's adapter: what events mean, and how they fold into a result.

    One adapter object serves one stream (it holds that stream's fold). ``decode`` turns
    runs of ``(event type, [data, ...])`` into events, folds them and returns the events
    to hand out, or raises any of ``DECODE_ERRORS`` or :class:`APIError` having folded
    nothing; the core then calls ``decode_one`` payload by payload to deliver the events
    before the culprit and raise its error after them. ``take`` folds such a batch (or
    a whole JSON answer's) and returns the events to hand out (an adapter may add events
    it derives, such as Inkeep's links). ``finished`` is True once the wire's end
    marker came (nothing after it is read: Chat Completions' ``[DONE]``); ``ended`` once
    the answer is whole (``[DONE]``, or chat_results' chunk with a ``finish_reason``): a
    body that ends before that is cut short; ``answered`` once the answer itself says it
    is whole (its ``finish_reason``), end marker aside. ``end`` names that end, for
    errors. ``failure`` is the :class:`APIError` for the server's report of a failure.
    """

    finished: bool
    end: str

    @property
    def ended(self) -> bool: ...

    @property
    def answered(self) -> bool: ...

    def failure(self, data: str) -> APIError: ...

    def decode(self, runs: list[EventRun]) -> list[EventT]: ...

    def decode_one(self, event: str, data: str) -> list[EventT]: ...

    def take(self, events: list[EventT]) -> list[EventT]: ...

    def whole(self, body: bytes) -> list[EventT]: ...

    def text(self, event: EventT) -> str | None: ...

    def result(self) -> ResultT_co: ...


class EventStream(Generic[EventT, ResultT]):
    """The answer to one chat call: an async iterator of events and an async context manager.

    Iterate it for the wire's typed events, use :attr:`text_stream` for the text alone,
    or ``await`` it (or :meth:`final_result`) for the whole result. Errors (a status, a
    timeout, a malformed stream) are raised on first use, not when the stream is made.
    """

    def __init__(
        self,
        transport: Transport,
        wire: Wire[EventT, ResultT],
        *,
        api: Api,
        url: str,
        body: bytes,
        timeout: Timeout,
        retries: RetryPolicy,
    ):
        self._transport = transport
        self._wire = wire
        self._api: Api = api
        self._url = url
        self._body = body
        self._timeout = timeout
        self._retries = retries
        self._secrets = transport.secrets()  # scrubbed from whatever a read raises
        transport.streams.add(self)
        self._max_event_size = transport.settings.max_event_size
        self._max_line_size = transport.settings.max_line_size
        self._response: aiohttp.ClientResponse | None = None
        self._headers: CIMultiDictProxy[str] | None = None  # the last response's, as sent
        self._decoder: SSEDecoder | None = None
        self._carry = b""  # bytes read while deciding what the body is, not yet decoded
        self._broken: APIConnectionError | None = None  # a drop while those were read
        self._reading = False  # a read is under way (one task at a time)
        self._loops = 0  # loops over the stream begun and not yet closed (see __aiter__)
        self._loop_task: asyncio.Task[Any] | None = None  # the task that began the last
        # How the stream was closed before its end, if not by aclose(): "loop" (a loop
        # over it was left early) or "cancelled" (a read was cancelled); for the error.
        self._closed_how: str | None = None
        self._closed_by_client = False  # ended by the client's aclose() (client_closed)
        self._location_refused = False  # the server's Content-Location could not be used
        self._since_id = 0  # events delivered after the last with an id line (SSEDecoder)
        self._deadline: float | None = None
        self._started = False
        self._done = False  # nothing more will be read
        self._complete = False  # the whole answer was read (the result may be given)
        self._pending: Iterator[EventT] = iter(())
        # A malformed payload found after good events of the same read: raised next.
        self._error: BaseException | None = None
        # Resumption state (SPEC 1.7).
        self._resume_url: str | None = None
        self._last_event_id = ""
        self._retry_ms: int | None = None
        self._failed_resumes = 0
        self._events_seen = 0  # SSE events dispatched so far (the ones a replay repeats)
        self._first_id: str | None = None  # the id of the stream's first event
        # After a resume, until the first event of the new connection settles it: the
        # Last-Event-ID sent. See _drop_replays.
        self._replay_of: str | None = None
        self._top_replay_left = 0  # events of a replay from the top still to drop
        self._resumed_idle = False  # resumed, and no event since
        self.resumes = 0
        """How many times this stream reconnected after a dropped connection."""
        self.replays_dropped = 0
        """Events a resumed connection sent again (provably delivered before), not delivered."""

    # -- public surface ---------------------------------------------------------------

    @property
    def text_stream(self) -> AsyncIterator[str]:
        """The answer's text pieces as they arrive (each a non-empty ``str``)."""
        return self._texts()

    @property
    def headers(self) -> CIMultiDictProxy[str] | None:
        """The HTTP headers of the response the answer is read from (after a resume, the
        resumed connection's), looked up in any case (``stream.headers["x-ratelimit-
        remaining-tokens"]``), every secret the call sent masked; ``None`` until the
        stream has started (its first event read, or the stream awaited)."""
        if self._headers is None:
            return None
        return CIMultiDictProxy(scrubbed_headers(self._headers, self._secrets))

    @property
    def request_id(self) -> str | None:
        """The server's ``X-Request-Id`` for this answer (quote it when you report a
        problem), from :attr:`headers`; ``None`` before they came, or without one."""
        headers = self.headers
        return None if headers is None else headers.get("X-Request-Id")

    async def _texts(self) -> AsyncIterator[str]:
        text = self._wire.text
        with self._abandoned_when_left():
            async for event in self:
                piece = text(event)
                if piece:
                    yield piece

    async def final_result(self) -> ResultT:
        """Read the rest of the stream and return the whole answer.

        Raises :class:`StreamError` if the stream was closed before its end (``aclose()``,
        ``break``, leaving ``async with`` early): its answer would be incomplete.
        """
        while True:
            try:
                await self.__anext__()
            except StopAsyncIteration:  # raised only for a whole answer
                return self._wire.result()

    def __await__(self) -> Generator[Any, None, ResultT]:
        return self.final_result().__await__()

    def __aiter__(self) -> AsyncIterator[EventT]:
        # `async for` gets an async generator over the same state: CPython resumes one
        # far more cheaply per item than it calls a Python-level __anext__. Its finally
        # is what releases the connection after `break` or an exception in the loop body
        # (asyncio closes an abandoned async generator within an event-loop turn).
        if self._loops:
            self._close_left_loop()
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[EventT]:
        self._loops += 1
        self._loop_task = asyncio.current_task()
        try:
            with self._abandoned_when_left("loop"):
                while True:
                    for event in self._pending:
                        yield event
                    if self._done:
                        self._check_complete()
                        return
                    await self._read_batch()
        finally:
            self._loops -= 1

    @contextlib.contextmanager
    def _abandoned_when_left(self, how: str | None = None) -> Iterator[None]:
        """Around a loop over the stream: however it is left (its end, ``break``, an
        error), the stream is abandoned, unless a read was refused because another task
        is reading it: that read goes on there."""
        refused = False
        try:
            yield
        except ValidationError as exc:
            refused = getattr(exc, "concurrent_read", False)
            raise
        finally:
            if not refused:
                self._abandon(how)

    def _close_left_loop(self) -> None:
        """Before a new read while a loop over the stream is not closed: that loop was
        left (``break``, an exception, ``anext(aiter(stream))``) and asyncio closes it
        only at a later turn; it is closed now, so what the new read gives never hangs
        on when that happens. A loop still open in another task is being read there."""
        task = self._loop_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            raise _concurrent_read(
                "this stream is already being read by another task (a loop over it "
                "there is not closed): a stream is read by one task at a time"
            )
        self._abandon("loop")

    async def __anext__(self) -> EventT:
        # The hot path: hand out the next decoded event (a for loop is the cheapest way
        # to take one item from an iterator); read more only when the batch is used up.
        if self._loops:
            self._close_left_loop()
        for event in self._pending:
            return event
        while not self._done:
            await self._read_batch()
            for event in self._pending:
                return event
        self._check_complete()
        raise StopAsyncIteration

    async def _read_batch(self) -> None:
        if self._reading:
            raise _concurrent_read(
                "this stream is already being read by another task: a stream is read by "
                "one task at a time"
            )
        self._reading = True
        try:
            await self._read_events()
        except BaseException as exc:
            # An error or a cancellation mid-read: nothing more will be read, and asking
            # again raises the same error.
            self._ended()
            self._close_connection()
            if isinstance(exc, Exception):
                self._raise_if_closed_by_client()
            if isinstance(exc, ChatSDKError):
                self._error = scrubbed(exc, self._secrets)
            elif isinstance(exc, Exception):
                self._error = exc
            else:
                self._closed_how = self._closed_how or "cancelled"
            raise
        finally:
            self._reading = False

    def _raise_if_closed_by_client(self) -> None:
        # In an error's handling: what broke the call or the read was the client's closing.
        if self._closed_by_client and self._error is not None:
            raise self._error from None

    def _check_complete(self) -> None:
        if self._error is not None:
            raise self._error
        if not self._complete:
            raise StreamError(_CLOSED_EARLY[self._closed_how])

    async def __aenter__(self) -> Self:
        if not self._started:
            try:
                await self._open()
            except ChatSDKError as exc:
                self._ended()
                self._raise_if_closed_by_client()
                raise scrubbed(exc, self._secrets) from exc.__cause__
            except BaseException:
                self._ended()
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
        self._abandon()

    @property
    def in_use(self) -> bool:
        """Whether the stream may still read (not begun, or under way): for the client."""
        return not self._done

    def client_closed(self) -> None:
        """The client was closed: a stream under way ends now, its reader told why (one
        not yet begun is left to fail as any call on a closed client does)."""
        if not self._started or self._done:
            return
        if self._error is None:
            self._error = StreamError(CLOSED_BY_CLIENT)
        self._closed_by_client = True
        self._abandon()

    def _ended(self, *, complete: bool = False) -> None:
        """Nothing more will be read (``complete``: the whole answer was): the one place
        that says so, and tells the client (a pool left by a dropped client closes when
        its last stream ends)."""
        self._done = True
        self._complete = self._complete or complete
        self._transport.stream_ended()

    def _abandon(self, how: str | None = None) -> None:
        """Stop here: nothing more is read, the connection is released at once. ``how``
        it was closed, if before its end, for the error that says so (_CLOSED_EARLY)."""
        if not self._done:
            self._ended()
            self._closed_how = how
            self._pending = iter(())
        self._close_connection()

    def __del__(self) -> None:
        # Every exit path releases the connection; one still open here is a stream driven
        # by hand with __anext__ and dropped. Close it, and say so, as aiohttp would.
        response = getattr(self, "_response", None)  # None: __init__ refused its arguments
        if response is not None and not self._done:
            self._ended()  # a pool left by a dropped client may close now
        if response is not None and not response.closed:
            response.close()
            warnings.warn(
                f"unclosed chat stream {self!r}: use `async with`, iterate it to its end, "
                "or call aclose()",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )

    def __repr__(self) -> str:
        if self._done:
            state = "complete" if self._complete else "closed"
        else:
            state = "open" if self._started else "not started"
        return f"<{type(self).__name__} {self._url.split('?')[0]!r} {state}>"

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
        await self._accept(response, earliest(self._deadline, self._idle_end()))

    def _idle_end(self) -> float | None:
        idle = self._timeout.idle
        return None if idle is None else asyncio.get_running_loop().time() + idle

    async def _accept(self, response: aiohttp.ClientResponse, wait_until: float | None) -> None:
        """Take a response: an event stream to read, or a whole JSON answer to replay.

        The ``Content-Type`` decides when the body agrees with it; otherwise the first
        non-blank byte does (SPEC 1.6): ``{`` a JSON answer, a field name or ``:`` an
        event stream, anything else a typed error carrying an excerpt.
        """
        self._response = response
        self._headers = response.headers
        # The token the request went out with, known now: a provider's is fetched (or
        # refreshed after a 401) inside the call, after this stream was made.
        self._secrets |= self._transport.secrets()
        head, broke = await self._read_head(response, wait_until)
        self._carry = head
        kind = _body_kind(response.content_type, head)
        if broke is not None and kind != "sse":
            raise broke
        self._broken = broke
        if kind == "json":
            self._carry = b""
            body = head + await self._read_rest(response, wait_until, len(head))
            try:
                events = self._wire.whole(body)
            except APIError as exc:
                raise _with_response(exc, response) from None
            except DECODE_ERRORS as exc:
                raise invalid_response(
                    f"the answer is not valid JSON of this API: {exc}", response, body
                ) from None
            if not events:
                raise invalid_response("the answer holds no answer", response, body)
            if self._events_seen:
                # A resume answered with the whole answer: it repeats the events already
                # delivered, and what in it is new cannot be told apart.
                raise StreamError(
                    "the stream was cut and the server answered the resume with a whole "
                    f"JSON answer, which repeats the {self._events_seen} event(s) already "
                    "delivered: the rest of the answer cannot be told apart",
                    received=body,
                )
            self._ended(complete=True)
            self._take(events)
            return
        if kind == "sse":
            location = response.headers.get("Content-Location")
            if location:
                self._resume_url = _resume_url(self._url, location)
                self._location_refused = self._resume_url is None
            # After a resume the decoder starts with no id (WHATWG would seed the id
            # sent): an event that repeats it then shows whether it carried it itself.
            # _NO_ID, not "": an `id:` line with an empty value (which clears the id to
            # resume from) is then told apart from no id line yet on this connection.
            self._decoder = SSEDecoder(
                max_line_size=self._max_line_size,
                max_event_size=self._max_event_size,
                last_event_id=_NO_ID,
            )
            return
        raise invalid_response(
            f"expected an event stream or a JSON answer, got Content-Type "
            f"{response.headers.get('Content-Type')!r} and a body that is neither",
            response,
            head,
        )

    async def _read_head(
        self, response: aiohttp.ClientResponse, wait_until: float | None
    ) -> tuple[bytes, APIConnectionError | None]:
        """The body's first bytes (enough to tell what it is), and the error if the
        connection broke first (what came before it still counts)."""
        head = b""
        while len(head) < MAX_SNIFF:
            try:
                chunk = await self._read_chunk(response, wait_until)
            except APITimeoutError:
                raise
            except APIConnectionError as exc:
                return head, exc
            if not chunk:
                break
            head += chunk
            start = head.lstrip(_BLANK)
            # Enough to tell a field name from anything else (or a JSON answer).
            if len(start) >= 6 or start[:1] in (b"{", b"[", b":") or b"\n" in start:
                break
        return head, None

    async def _read_rest(
        self, response: aiohttp.ClientResponse, wait_until: float | None, have: int
    ) -> bytes:
        with mapped_errors("reading the answer", self._timeout, self._deadline, self._secrets):
            async with asyncio.timeout_at(wait_until):
                body = await read_at_most(
                    response, MAX_JSON_BODY - have, limit=MAX_JSON_BODY, timeout=self._timeout
                )
        response.release()
        self._response = None
        return body

    async def _read_chunk(
        self, response: aiohttp.ClientResponse, wait_until: float | None
    ) -> bytes:
        with mapped_errors("reading the stream", self._timeout, self._deadline, self._secrets):
            # What is already buffered needs no timeout (no wait): the common case on a
            # busy stream, and a timer less per read.
            chunk = response.content.read_nowait()
            if chunk:
                return chunk
            # ``read`` bounds the wait too, not only aiohttp's socket timer (within_read).
            return await within_read(
                response.content.readany(), self._timeout, wait_until, "reading the stream"
            )

    async def _resume(self, cause: BaseException, wait_until: float | None) -> None:
        """Reconnect after a drop with ``Last-Event-ID``, or raise if that cannot be done."""
        self._close_connection()
        note = ""
        if self._resume_url is None:
            note = (
                " (not resumable: the server's Content-Location is not a path on the same server)"
                if self._location_refused
                else " (not resumable: the server gave no Content-Location)"
            )
        elif not self._retries.max_resumes:
            note = " (not resumed: the retry policy allows no resumes)"
        if note:  # the error as it came (a drop stays an APIConnectionError), and why
            if isinstance(cause, StreamError):
                raise StreamError(f"{cause}{note}") from cause.__cause__
            raise type(cause)(f"{cause}{note}") from cause.__cause__
        if not self._last_event_id and self._events_seen:
            # Without an id to resume from, the server would start again from the top.
            raise StreamError(
                "the stream was cut and there is no event id to resume from (no event "
                "carried one, or an empty `id:` line reset it); reconnecting would repeat "
                "events already delivered"
            ) from cause
        since = self._since_id
        if since:
            # They report the last id too: a server resuming after it would send them
            # again, and which of its events are new could not be told.
            raise StreamError(
                f"the stream was cut and the last {since} event(s) delivered carried no id "
                f"of their own (the last id, {self._last_event_id!r}, came before them): a "
                "resume from that id would repeat them"
            ) from cause
        if self._failed_resumes >= self._retries.max_resumes:
            raise StreamError(
                f"the stream was cut; gave up after {self._failed_resumes} reconnects "
                "without a new event"
            ) from cause
        # The server may choose the wait (``retry:``), within the retry policy's cap.
        delay = (
            self._retry_ms / 1000
            if self._retry_ms is not None
            else self._retries.backoff(self._failed_resumes)
        )
        delay = min(delay, self._retries.max_delay)
        loop = asyncio.get_running_loop()
        if wait_until is not None and loop.time() + delay >= wait_until:
            which = "total" if wait_until == self._deadline else "idle"
            raise APITimeoutError(
                f"the stream was cut and waiting {delay:g} s to resume would pass the "
                f"{which} timeout"
            ) from cause
        self._failed_resumes += 1
        self.resumes += 1
        log.info(
            "stream cut (%s); resuming %s in %.2f s (resume %d)",
            type(cause).__name__,
            "after the last event id" if self._last_event_id else "from the start",
            delay,
            self.resumes,
        )
        await self._transport.sleep(delay)  # ends early if the client closes
        headers = {"Accept": "text/event-stream"}
        if self._last_event_id:
            try:  # the server's value, sent back: it must be a valid header value
                headers["Last-Event-ID"] = check_header_value("id", self._last_event_id)
            except ValidationError:
                raise StreamError(
                    "the stream was cut and its last event id cannot be sent back as "
                    "Last-Event-ID (it holds a control character): not resumable",
                    received=self._last_event_id,
                ) from cause
        self._replay_of = self._last_event_id or None
        self._top_replay_left = 0
        self._resumed_idle = True
        assert self._resume_url is not None  # else not resumable, above
        try:
            response = await self._transport.send(
                "GET",
                self._resume_url,
                api=self._api,
                headers=headers,
                timeout=self._timeout,
                retries=self._retries,
                deadline=earliest(self._deadline, wait_until),
            )
        except APITimeoutError as exc:
            if wait_until is None or wait_until == self._deadline or loop.time() < wait_until:
                raise
            # The limit that passed was idle, counted from the last event (the transport
            # saw only a deadline, and would name the total timeout).
            raise APITimeoutError(
                f"the stream was cut and its resume brought no event within the idle "
                f"timeout ({self._timeout.idle} s, counted from the last event)"
            ) from exc
        await self._accept(response, wait_until)

    # -- reading ------------------------------------------------------------------------

    async def _read_events(self) -> None:
        """Read until at least one event is ready or the body ends."""
        if self._error is not None:
            raise self._error
        if not self._started:
            await self._open()
            if self._done:  # a whole JSON answer, already queued
                return
        # Idle counts from the last event, across resumes: a new wait starts here.
        wait_until = earliest(self._deadline, self._idle_end())
        while True:
            if self._done:  # a resumed connection answered with a whole JSON answer
                return
            response, decoder = self._response, self._decoder
            assert response is not None and decoder is not None
            if self._carry:
                chunk, self._carry = self._carry, b""
            elif self._broken is not None:  # the connection broke while the head was read
                broken, self._broken = self._broken, None
                await self._resume(broken, wait_until)
                continue
            else:
                try:
                    chunk = await self._read_chunk(response, wait_until)
                except APITimeoutError:
                    if (failure := self._reported_failure(decoder)) is not None:
                        raise failure from None  # what the server said, then silence
                    raise
                except APIConnectionError as exc:
                    if self._done:  # closed by the caller (a `break`) while reading
                        return
                    if (failure := self._reported_failure(decoder)) is not None:
                        raise failure from None
                    await self._resume(exc, wait_until)
                    continue
            if not chunk:
                if (failure := self._reported_failure(decoder)) is not None:
                    raise failure
                try:
                    decoder.end()
                except StreamError as exc:  # the body ended inside an event: cut short
                    if not self._ends_on_marker(decoder):
                        await self._resume(exc, wait_until)
                        continue
                if not self._wire.ended:
                    if self._resumed_idle:
                        # A resumed connection that ends cleanly with nothing new: the
                        # server has no more of this answer, and asking again is moot.
                        raise StreamError(
                            f"the stream ended before {self._wire.end}, and the "
                            f"server resumed it with nothing after event id "
                            f"{self._last_event_id!r}: the answer is incomplete"
                        )
                    incomplete = StreamError(
                        f"the stream ended before {self._wire.end}: the answer is incomplete"
                    )
                    await self._resume(incomplete, wait_until)
                    continue
                self._finish(response, at_eof=True)
                return
            if self._replay_of is not None:
                runs = self._drop_replays(decoder.feed(chunk))
            elif not self._events_seen:
                runs = self._first_runs(decoder, chunk)
            else:
                runs = decoder.feed_runs(chunk)
            self._retry_ms = decoder.retry
            self._since_id = decoder.events_since_id
            if self._replay_of is None and decoder.last_event_id not in (
                _NO_ID,
                self._last_event_id,
            ):
                self._last_event_id = decoder.last_event_id
                self._failed_resumes = 0
            if runs:
                self._failed_resumes = 0
                self._resumed_idle = False
                self._events_seen += sum([len(datas) for _, datas in runs])
                self._pending = iter(self._decode(runs))
                if self._wire.finished:
                    if (failure := self._reported_failure(decoder)) is not None:
                        # Raised once the events before the end marker are handed out.
                        self._error = scrubbed(failure, self._secrets)
                        self._ended()
                        self._close_connection()
                        return
                    self._finish(response, at_eof=response.content.at_eof())
                return

    def _reported_failure(self, decoder: SSEDecoder) -> APIError | None:
        """The server's own report that the answer failed, if it made one and the answer
        is not whole by its own content: an ``error:`` line (llama.cpp's server writes
        one, then ``[DONE]``, nothing, a dropped connection or silence). Such an answer
        is neither a whole one, nor a cut to resume, nor a timeout."""
        if decoder.error_line is None or self._wire.answered:
            return None
        return _with_response(self._wire.failure(decoder.error_line), self._response)

    def _ends_on_marker(self, decoder: SSEDecoder) -> bool:
        """Whether the event under way at the body's end is the wire's end marker alone
        (``data: [DONE]``) that lacks only its blank line. WHATWG drops such an event,
        but it cuts nothing short: the marker says the answer is whole (openai-python
        takes it too). Any other event under way is an answer cut short."""
        try:
            events = decoder.feed(b"\n\n")  # the blank line it lacks
            if len(events) != 1:
                return False
            decoded = self._wire.decode_one(events[0].event, events[0].data)
        except _MARKER_ERRORS:
            return False
        return not decoded and self._wire.ended

    def _finish(self, response: aiohttp.ClientResponse, *, at_eof: bool) -> None:
        self._ended(complete=True)
        self._response = None
        if at_eof:
            response.release()
        else:  # the end marker came before the body's end: nothing after it matters
            self._transport.release_when_read(response)

    def _first_runs(self, decoder: SSEDecoder, chunk: bytes) -> list[EventRun]:
        """``feed_runs`` for the stream's first events, noting the first event id on the way.

        That id tells a replay from the top apart (see _drop_replays); the first event
        is decoded on its own to read it, the rest of the chunk as usual.
        """
        cut = chunk.find(b"\n\n") + 2
        if cut < 2:  # no LF LF (not one whole event yet, or CR line ends)
            cut = len(chunk)
        head = decoder.feed(chunk[:cut])
        if head and self._first_id is None:
            self._first_id = head[0].id if head[0].id not in ("", _NO_ID) else None
        return event_runs(head, *decoder.feed_runs(chunk[cut:]))

    def _drop_replays(self, events: list[ServerSentEvent]) -> list[EventRun]:
        """The events of a resumed connection, less those provably delivered already.

        SPEC 1.7 says a resumed stream starts after the Last-Event-ID sent, and ids are
        opaque strings (WHATWG): they have no order, so an unknown id is a new event. Two
        replays can be proven: a first event that carries the id sent itself (the server
        resent that event: it is dropped), and a first event with the stream's first id (a
        replay from the top: as many events as were delivered are dropped, and the last
        of them must carry the id sent, or the resume is ambiguous: StreamError).
        """
        sent = self._replay_of
        assert sent is not None
        index = 0
        for event in events:
            if self._top_replay_left:
                self._top_replay_left -= 1
                if not self._top_replay_left:
                    if event.id != sent:
                        raise StreamError(
                            "the resumed stream started again from its first event but "
                            f"did not reach the last event id sent ({sent!r}) where expected: "
                            "cannot tell which events are new",
                            received=event.data,
                        )
                    self._replay_of = None
                index += 1
                if self._replay_of is None:
                    break
                continue
            if event.id and event.id == self._first_id and self._events_seen > 1:
                # Tried first: when ids repeat, the stream's first id may be the id sent
                # too, and a server cannot resume after an id it gave several events.
                self._top_replay_left = self._events_seen - 1
                index += 1
                continue
            if event.id == sent:
                index += 1
                self._replay_of = None
            else:
                self._replay_of = None
            break
        if index:
            self.replays_dropped += index
            log.info("dropped %d replayed event(s) up to id %r", index, sent)
        return event_runs(events[index:])

    def _decode(self, runs: list[EventRun]) -> list[EventT]:
        wire = self._wire
        try:
            return wire.decode(runs)
        except _PAYLOAD_ERRORS:
            pass
        # Find the culprit, to report it precisely; the events before it are still
        # delivered (what the caller sees must not depend on how the bytes were cut),
        # and the error is raised when the caller asks for the next one.
        wire.finished = False
        good: list[EventT] = []
        for event, datas in runs:
            for data in datas:
                try:
                    good += wire.decode_one(event, data)
                except APIError as exc:
                    error: BaseException = _with_response(exc, self._response)
                except DECODE_ERRORS as exc:
                    error = StreamError(
                        f"invalid {event} payload: {exc}", event=event, received=data
                    )
                else:
                    if wire.finished:
                        return wire.take(good)
                    continue
                if not good:
                    raise error
                self._error = error
                return wire.take(good)
        # Every payload decoded one by one: the batch's decode failed only for want of
        # a lenient second try (a null in a field with a default, see completions.py).
        return wire.take(good)

    def _take(self, events: list[EventT]) -> None:
        """Queue events for the caller, folding the result from them."""
        self._pending = iter(self._wire.take(events))


def _with_response(error: APIError, response: aiohttp.ClientResponse | None) -> APIError:
    """``error``, which the server reported inside a 2xx answer (an error chunk, an
    ``event: error``, a whole JSON error), with that answer's headers and
    ``X-Request-Id``: errors.md's promise of every APIError, and the id a report of the
    failure needs."""
    if response is not None and not error.headers:
        error.headers = CIMultiDict(response.headers)
        request_id = response.headers.get("X-Request-Id")
        if request_id and error.request_id is None:
            error.request_id = request_id
            error.args = (f"{error} (request id {request_id})", *error.args[1:])
    return error


def _body_kind(content_type: str, head: bytes) -> str:
    """``"json"``, ``"sse"`` or ``"other"``: what a body is, by its label and first bytes.

    SPEC 1.6: the label decides when the body agrees with it, the first non-blank byte
    when not. An event stream may begin with any field name (WHATWG ignores unknown
    ones), so a body labelled ``text/event-stream`` is one unless it opens with ``{``.
    """
    start = head.lstrip(_BLANK)
    if start[:1] in (b"{", b"["):
        return "json"
    if start[:1] == b"<":  # an HTML page (a proxy's, a login portal's), however labelled
        return "other"
    if content_type == "text/event-stream" or start.startswith(_SSE_STARTS):
        return "sse"
    if not start and (content_type == "application/json" or content_type.endswith("+json")):
        return "json"
    return "other"


def _resume_url(request_url: str, location: str) -> str | None:
    """``Content-Location`` resolved against the request URL; None if it cannot be used.

    Credentials go with the resume request, so it must stay on the server that was asked;
    a value that is not a usable URL path (control characters, a malformed authority)
    makes the stream not resumable rather than failing later.
    """
    try:
        check_header_value("Content-Location", location)
        resolved = urljoin(request_url, location)
        a, b = urlsplit(request_url), urlsplit(resolved)
        b.port  # noqa: B018 - ValueError for a port that is not a number
    except (ValueError, ValidationError):
        log.info("ignoring an unusable Content-Location; the stream is not resumable")
        return None
    if (a.scheme, a.netloc) != (b.scheme, b.netloc) or any(c.isspace() for c in resolved):
        return None
    if any(unquote(segment) in (".", "..") for segment in b.path.split("/")):
        # Left by urljoin in an absolute or percent-encoded value: the request would
        # go to another path than the one named (and is refused as such).
        return None
    return resolved
