"""Injectable misbehaviour for the reference server.

A client library is only as good as its handling of servers that fail. ``Faults``
lets a test make the reference server fail in precise, repeatable ways::

    async with ReferenceServer() as server:
        server.faults = Faults(drop_after_events=3, drop_times=1)
        ...  # the next stream is cut after 3 events; its resume succeeds

Assigning ``server.faults`` resets every counter, so each assignment starts a
fresh scenario. All fields default to "behave".
"""

from __future__ import annotations

import math

import msgspec

from chatsdk.errors import ValidationError

__all__ = ["FaultState", "Faults"]


class Faults(msgspec.Struct, frozen=True, kw_only=True):
    """What the reference server should get wrong; every field defaults to off.

    Stream faults apply to every event-stream response of both chat wires
    (``chat_results`` and Chat Completions): ``POST`` calls with ``stream: true``, their
    idempotent replays, and resume ``GET``\\ s. Where a fault writes something of its own
    (``malformed_after``, ``error_chunk_after``), it is shaped like the wire's events.
    """

    drop_after_events: int | None = None
    """Close the connection, without finishing the chunked body, after writing this
    many events of a streaming response. Each response counts from its own start, so
    a resume that has at most this many events left completes. ``0`` drops right after
    the headers (combine it with ``drop_times``, or resumes never finish)."""

    drop_times: int | None = None
    """Only drop the first this many responses (those actually cut), then behave.
    ``None`` drops every response that reaches ``drop_after_events`` events."""

    event_delay: float = 0.0
    """Seconds to sleep between two events of a stream (pacing, idle timeouts)."""

    fail_first: int = 0
    """Answer the first this many API requests (every route except ``/healthz``,
    counted from when the faults were set) with ``fail_status`` and a small JSON body,
    without doing any work."""

    fail_status: int = 503
    """The status used by ``fail_first`` (402 is answered as Gram's
    ``insufficient_credits``)."""

    retry_after: str | None = None
    """A ``Retry-After`` value (seconds or an HTTP date) sent with ``fail_first``
    answers."""

    pings_only: bool = False
    """Answer streams with 200 ``text/event-stream`` and then nothing but ``: ping``
    comments every ``ping_interval`` seconds, until the client leaves or the server
    closes (tests idle timeouts: comments must not count as events)."""

    ping_interval: float = 0.05
    """Seconds between two pings of ``pings_only``."""

    malformed_after: int | None = None
    """After this many events send an event whose data is not JSON (``event:
    message_chunk`` on chat_results, a bare ``data:`` on Chat Completions), then end the
    body normally."""

    error_chunk_after: int | None = None
    """After this many events send the wire's mid-stream error, ``data: {"error":
    {"message", "type", "code"}}`` (on chat_results under ``event: error``, an event the
    client does not know), then end the body normally."""

    no_done: bool = False
    """End Chat Completions bodies cleanly before their end: without the chunk that
    finishes the answer, what follows it (the usage chunk) and ``data: [DONE]`` (a
    truncated answer; a body ending after the finishing chunk is whole, SPEC 1.8).
    chat_results streams have no end event, so it changes nothing there."""

    wrong_content_type: bool = False
    """Serve stream bodies as ``text/plain`` instead of ``text/event-stream``."""

    no_content_location: bool = False
    """Omit ``Content-Location`` from stream responses, so they are not resumable."""

    retry_ms: int | None = None
    """Send an SSE ``retry: <ms>`` field at the start of each stream."""

    def __post_init__(self) -> None:
        # msgspec does not check a Struct's types when it is built by hand: a fault set
        # wrong would fail inside the server's handler (an int retry_after), or hang
        # it (a NaN event_delay), where the test cannot see why.
        for field in msgspec.structs.fields(self):
            name, default, value = field.name, field.default, getattr(self, field.name)
            if name == "retry_after":
                ok = value is None or (isinstance(value, str) and value.strip() != "")
                need = "a string (seconds or an HTTP date) or None"
            elif isinstance(default, bool):
                ok, need = isinstance(value, bool), "True or False"
            elif isinstance(default, float):
                ok = not isinstance(value, bool) and isinstance(value, int | float)
                ok = ok and math.isfinite(value) and value >= 0
                need = "a finite number of seconds >= 0"
            else:  # the counts, None where they may be off
                number = isinstance(value, int) and not isinstance(value, bool)
                ok = (value is None and default is None) or (number and value >= 0)
                need = "an int >= 0" + (" or None" if default is None else "")
            if not ok:
                raise ValidationError(f"Faults.{name} must be {need}, got {value!r}")
        if self.ping_interval == 0:
            raise ValidationError("Faults.ping_interval must be > 0 (0 would ping without pause)")
        if not 100 <= self.fail_status <= 599:
            raise ValidationError(
                f"Faults.fail_status must be an HTTP status, got {self.fail_status}"
            )


class FaultState:
    """The counters of one ``Faults`` value; replaced whenever ``server.faults`` is set.

    Only the server's event loop touches the counters, so no lock is needed; a test
    thread swapping the whole object is a single atomic attribute store.
    """

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._failed = 0
        self._dropped = 0

    def take_failure(self) -> bool:
        """Whether this API request must be answered with ``fail_status``."""
        if self._failed < self.faults.fail_first:
            self._failed += 1
            return True
        return False

    def take_drop(self) -> bool:
        """Whether the current response, having reached ``drop_after_events``, is cut."""
        limit = self.faults.drop_times
        if limit is not None and self._dropped >= limit:
            return False
        self._dropped += 1
        return True
