"""A sans-IO decoder for server-sent events (``text/event-stream``).

Contract: create one :class:`SSEDecoder` per response body and call
:meth:`SSEDecoder.feed` with each chunk of bytes as it arrives, in order and
chunked any way at all. Each call returns the list of :class:`ServerSentEvent`
that the chunk completed (often empty: the rest of an event is still to come)
or raises :class:`~chatsdk.errors.StreamError` when a line or an event grows
past its size limit, after which the decoder must be dropped. Parsing follows
the WHATWG HTML "Event stream interpretation" rules exactly, so the events,
:attr:`~SSEDecoder.last_event_id` and :attr:`~SSEDecoder.retry` never depend
on where the chunks were cut. There is no end-of-input call: an event not
terminated by a blank line is never dispatched, and the caller tells a body
that ended mid-event by :attr:`~SSEDecoder.at_event_boundary` being false.
The decoder never does IO, never blocks and keeps no reference to the bytes
it was given. :meth:`SSEDecoder.feed_runs` is the same contract for a consumer
that needs only each event's type and data: it returns them grouped in runs of
one type, without building :class:`ServerSentEvent` objects.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Callable, Iterable
from itertools import repeat
from operator import itemgetter
from typing import Final, NamedTuple, TypeAlias

import msgspec

from chatsdk.errors import StreamError

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "DEFAULT_MAX_LINE_SIZE",
    "EventRun",
    "SSEDecoder",
    "ServerSentEvent",
]

# Limits are counted in characters of decoded text. A chat event is a few hundred
# bytes; the largest we know of, ``records_cited``, is tens of KiB. Go's bufio.Scanner,
# the base of many SSE clients, stops at 64 KiB by default, a cap LLM clients commonly
# raise into the MiB range once large events break it. 4 MiB per line is about 100x our
# largest event, and still bounds what one stream can make us hold.
DEFAULT_MAX_LINE_SIZE: Final = 4 * 1024 * 1024
# An event's data may span many ``data:`` lines, so it gets twice the line limit: room
# for any legitimate event, and still a fixed bound on the memory one stream can pin.
DEFAULT_MAX_EVENT_SIZE: Final = 8 * 1024 * 1024

# How much of an oversized line or event a StreamError keeps.
_EXCERPT_CHARS: Final = 256

# A line ends at CRLF, CR or LF (a CRLF counts once).
_LINE_END: Final = re.compile(r"\r\n|\r|\n")

# A larger chunk is decoded in pieces of about this many bytes, each ending after a
# blank line where there is one. A piece's text then stays below the size at which
# malloc maps fresh pages for every allocation (128 KiB by default in glibc), which on
# the 256 KiB reads aiohttp hands over cost some 15% of stream throughput in page faults.
# The decoder's results do not depend on where chunks are cut, so this changes none.
_PIECE: Final = 64 * 1024


def _pieces(data: bytes) -> tuple[bytes, ...] | list[bytes]:
    if len(data) <= _PIECE:
        return (data,)
    pieces = []
    start, end = 0, len(data)
    while end - start > _PIECE:
        cut = data.rfind(b"\n\n", start, start + _PIECE) + 2
        if cut < start + 2:  # no blank line in reach: a plain cut
            cut = start + _PIECE
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    return pieces


class _Shape(NamedTuple):
    # A common event shape: some field lines in a fixed order, then the blank line.
    fields: tuple[str, ...]
    separator: str  # ": " or ":", the same on every line of the event
    run: re.Pattern[str]  # matches a run of one or more events of this shape
    stride: int  # lines per event, the blank line included
    # For each of id, event type and data: which line of an event holds it (-1: none)
    # and what takes its value from that line.
    id_line: int
    id_value: Callable[[str], str]
    event_line: int
    event_value: Callable[[str], str]
    data_line: int
    data_value: Callable[[str], str]


def _event_regex(
    fields: tuple[str, ...],
    separator: str,
    event_type: str | None = None,
    groups: tuple[str, ...] = (),
) -> str:
    # One event of a common shape. All of its lines put one space after the colon, or
    # none do (then a value must not start with a space, which would be removed). The
    # event type is any non-empty one (empty would mean "message"), or exactly
    # event_type; the values of the fields named in groups are captured. ``.`` matches
    # anything but LF: the caller turns every CR line end into LF and keeps NUL (it
    # voids an id) out of any span where an id is matched.
    value = ".*" if separator == ": " else "(?:[^ \n].*)?"
    patterns = {"id": value, "event": ".+" if separator == ": " else "[^ \n].*", "data": value}
    if event_type is not None:
        patterns["event"] = re.escape(event_type)
    for name in groups:
        patterns[name] = f"({patterns[name]})"
    return "".join(f"{name}{separator}{patterns[name]}\n" for name in fields) + "\n"


def _shape(fields: tuple[str, ...], space: bool) -> _Shape:
    separator = ": " if space else ":"

    def position(name: str) -> int:
        return fields.index(name) if name in fields else -1

    def value_of(name: str) -> Callable[[str], str]:
        return itemgetter(slice(len(name + separator), None))

    return _Shape(
        fields,
        separator,
        re.compile(f"(?:{_event_regex(fields, separator)})+"),
        len(fields) + 1,
        position("id"),
        value_of("id"),
        position("event"),
        value_of("event"),
        position("data"),
        value_of("data"),
    )


# The shapes nearly every server sends, by the first letter of an event, the most
# common first. Anything else (comments, retry, several data lines, mixed spacing)
# takes the general path.
_COMMON_SHAPES: Final[dict[str, tuple[_Shape, ...]]] = {
    initial: tuple(
        _shape(fields, space)
        for space in (True, False)
        for fields in (("id", "event", "data"), ("id", "data"), ("event", "data"), ("data",))
        if fields[0][0] == initial
    )
    for initial in "ied"
}


# Bounded because the event type comes from the server: a stream of ever new types
# costs at most one compilation per chunk and never grows the cache.
@functools.lru_cache(maxsize=32)
def _uniform_pattern(shape: _Shape, event_type: str, with_ids: bool) -> tuple[re.Pattern[str], int]:
    # One event of this shape and type, its data (and with_ids, its id) captured; and
    # how many characters such an event has besides its id and data values.
    groups = ("id", "data") if with_ids and shape.id_line >= 0 else ("data",)
    pattern = re.compile(_event_regex(shape.fields, shape.separator, event_type, groups))
    other = sum(len(name + shape.separator + "\n") for name in shape.fields) + 1
    if shape.event_line >= 0:
        other += len(event_type)
    return pattern, other


#: A run of consecutive events of one type: the type, and each event's data in order.
EventRun: TypeAlias = tuple[str, list[str]]


def _append_run(runs: list[EventRun], event_type: str, datas: list[str]) -> None:
    # Appends events of one type, to the last run if it has that type.
    if runs and runs[-1][0] == event_type:
        runs[-1][1].extend(datas)
    else:
        runs.append((event_type, datas))


def _append_columns(runs: list[EventRun], event_types: list[str], datas: list[str]) -> None:
    # Appends the events of these types and data, in order.
    if event_types.count(event_types[0]) == len(event_types):  # the usual case: one type
        _append_run(runs, event_types[0], datas)
    else:
        for event_type, data in zip(event_types, datas, strict=True):
            _append_run(runs, event_type, [data])


def _append_events(runs: list[EventRun], events: list[ServerSentEvent]) -> None:
    # Moves events into runs, in order.
    for event in events:
        _append_run(runs, event.event, [event.data])
    events.clear()


def event_runs(events: Iterable[ServerSentEvent], *more: EventRun) -> list[EventRun]:
    """These events as :meth:`SSEDecoder.feed_runs` groups them, then the runs ``more``:
    consecutive events of one type, here or across the two, share one run."""
    runs: list[EventRun] = []
    for event in events:
        _append_run(runs, event.event, [event.data])
    for event_type, datas in more:
        _append_run(runs, event_type, datas)
    return runs


def _line_end(text: str, pos: int, has_cr: bool) -> tuple[int, int]:
    # Where the line starting at pos ends (-1: not in text) and where the next one
    # starts. Without CR, str.find does it far faster than a regex search.
    if has_cr:
        match = _LINE_END.search(text, pos)
        return match.span() if match is not None else (-1, -1)
    index = text.find("\n", pos)
    return index, index + 1


# Above this many characters an event's data is read by _large_datas, not a regex.
_LARGE_EVENT: Final = 2048


def _line_start(text: str, pos: int, index: int) -> int:
    # Where line ``index`` (0-based) of the lines starting at pos begins.
    for _ in range(index):
        pos = text.index("\n", pos) + 1
    return pos


def _line(text: str, pos: int, index: int) -> str:
    # Line ``index`` of the lines starting at pos, without its LF.
    start = _line_start(text, pos, index)
    return text[start : text.index("\n", start)]


def _first_event_end(text: str, pos: int, endpos: int) -> int:
    # Just past the blank line ending the event at pos if it has at most three field
    # lines (every common shape) and ends before endpos; -1 otherwise.
    for _ in range(4):
        line_end = text.find("\n", pos, endpos)
        if line_end < 0:
            return -1
        if line_end == pos:
            return pos + 1
        pos = line_end + 1
    return -1


def _last_event_end(text: str, start: int, endpos: int) -> int:
    # Just past the last LF LF in text[start:endpos] (the end of the last whole event
    # there), or -1 if there is none. A few memrchr steps back over the partial event
    # that usually follows it, else one two-character search.
    line_end = endpos
    for _ in range(4):
        line_end = text.rfind("\n", start + 1, line_end)
        if line_end < 0:
            return -1
        if text[line_end - 1] == "\n":
            return line_end + 1
    found = text.rfind("\n\n", start, endpos)
    return found + 2 if found >= 0 else -1


def _large_datas(text: str, pos: int, end: int, lead: str, no_space: bool) -> list[str] | None:
    # The data of each event in text[pos:end] if every one is ``lead`` (its lines up
    # to the data value, the same for all), a data value (no LF; not starting with a
    # space when no_space, as the separator had none) and a blank line; else None.
    datas = []
    skip = len(lead)
    while pos < end:
        if not text.startswith(lead, pos, end):
            return None
        line_end = text.find("\n", pos + skip, end)
        if line_end < 0 or line_end + 2 > end or text[line_end + 1] != "\n":
            return None
        data = text[pos + skip : line_end]
        if no_space and data[:1] == " ":
            return None
        datas.append(data)
        pos = line_end + 2
    return datas


def _find(text: str, char: str, start: int) -> int:
    # Where char next occurs in text from start; len(text) if nowhere.
    index = text.find(char, start)
    return len(text) if index < 0 else index


def _parse_retry(value: str) -> int | None:
    # Only ASCII digits count; str.isdigit alone would accept "²" or "٣".
    if not (value.isascii() and value.isdigit()):
        return None
    try:
        return int(value.lstrip("0") or "0")
    except ValueError:
        # More digits than Python converts (sys.get_int_max_str_digits): no usable
        # reconnection time is that long, so the field counts as invalid.
        return None


# gc=False: an event holds only str and int, so it can never be part of a reference
# cycle, and untracked structs are markedly cheaper to create in bulk.
class ServerSentEvent(msgspec.Struct, frozen=True, gc=False):
    """One dispatched event.

    ``event`` is the event type (``"message"`` when the stream gave none), ``data``
    the data lines joined by ``"\\n"``, ``id`` the last event id in force when it was
    dispatched and ``retry`` the reconnection time in milliseconds then in force
    (``None`` while the stream has not set one).
    """

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    """Turns the bytes of one event stream into :class:`ServerSentEvent` values.

    >>> decoder = SSEDecoder()
    >>> decoder.feed(b"event: greeting\\ndata: hel")
    []
    >>> decoder.feed(b"lo\\n\\n")
    [ServerSentEvent(event='greeting', data='hello', id='', retry=None)]

    ``max_line_size`` and ``max_event_size`` bound, in characters, one line and the
    data of one event (counting the line being read); crossing either raises
    :class:`~chatsdk.errors.StreamError`. ``fast_path=False`` disables the one-pass
    recognition of common-shape events, leaving only the line-by-line reference
    parser (same results, slower; meant for tests). ``last_event_id`` is the id a
    reconnection resumes from (the ``Last-Event-ID`` it sent): events that carry no
    ``id`` line report it, as they would have on the first connection.
    """

    __slots__ = (
        "_bom_checked",
        "_data",
        "_data_len",
        "_event_type",
        "_fast_limit",
        "_fast_path",
        "_fields_seen",
        "_id_buffer",
        "_last_event_id",
        "_max_event_size",
        "_max_line_size",
        "_partial",
        "_partial_len",
        "_pending_cr",
        "_retry",
        "_text_decoder",
        "_undecoded",
        "_uniform_backoff",
        "_uniform_wait",
    )

    def __init__(
        self,
        *,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        fast_path: bool = True,
        last_event_id: str = "",
    ) -> None:
        if max_line_size < 1 or max_event_size < 1:
            raise ValueError("max_line_size and max_event_size must be positive")
        self._max_line_size = max_line_size
        self._max_event_size = max_event_size
        self._fast_path = fast_path
        # An event no longer than both limits cannot break either, so the fast path
        # only ever looks at that many characters at once.
        self._fast_limit = min(max_line_size, max_event_size)
        self._text_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._undecoded = False  # the text decoder holds the start of a character
        self._bom_checked = False
        # The previous chunk ended in CR: an LF starting the next one ends no line.
        self._pending_cr = False
        # The unterminated last line, kept as pieces so each byte is scanned once.
        self._partial: list[str] = []
        self._partial_len = 0
        # The WHATWG buffers: data (as its lines), event type, last event id.
        self._data: list[str] = []
        self._data_len = 0
        self._event_type = ""
        # A reconnecting client starts from the id it sent in Last-Event-ID: the
        # WHATWG buffer outlives a connection, so events without an id line keep it.
        self._id_buffer = last_event_id
        self._fields_seen = False
        self._last_event_id = last_event_id
        self._retry: int | None = None
        # Which fast path to try (no bearing on results): after a uniform run was tried
        # and refused, skip that many chunks before trying again, doubling up to 16.
        self._uniform_wait = 0
        self._uniform_backoff = 1

    @property
    def last_event_id(self) -> str:
        """The last event id, as committed by the most recent blank line (``""`` before any)."""
        return self._last_event_id

    @property
    def retry(self) -> int | None:
        """The reconnection time in milliseconds from the latest valid ``retry:`` field."""
        return self._retry

    @property
    def at_event_boundary(self) -> bool:
        """True when nothing partial is buffered: no partial line or character, and no
        field line (of any name; comments aside) since the last blank line. False at
        the end of a body means the body ended mid-event."""
        return not (self._partial or self._fields_seen or self._undecoded)

    def end(self) -> None:
        """The body ended: raise StreamError if it ended inside an event."""
        if not self.at_event_boundary:
            raise StreamError("the event stream ended in the middle of an event")

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Decode the next chunk of the stream; return the events it completed, in order.

        Raises :class:`~chatsdk.errors.StreamError` when a line or an event exceeds
        its limit (events completed earlier in the same chunk are then lost too).
        """
        events: list[ServerSentEvent] = []
        for piece in _pieces(data):
            self._feed(piece, events, None)
        return events

    def feed_runs(self, data: bytes) -> list[EventRun]:
        """Like :meth:`feed`, for a consumer that wants only each event's type and data.

        Returns the events the chunk completed as runs of consecutive events of one
        type, ``(event_type, [data, ...])``, in order; flattened, they are exactly the
        ``(event.event, event.data)`` of what :meth:`feed` would return, and the
        decoder's state afterwards is the same. Cheaper: common-shape runs never
        become :class:`ServerSentEvent` objects.
        """
        events: list[ServerSentEvent] = []
        runs: list[EventRun] = []
        for piece in _pieces(data):
            self._feed(piece, events, runs)
        if events:
            _append_events(runs, events)
        return runs

    def _feed(
        self, data: bytes, events: list[ServerSentEvent], runs: list[EventRun] | None
    ) -> None:
        # Dispatches into events, or (runs not None) into runs as well: events then
        # holds those not yet moved into runs.
        if not data:
            return
        if self._undecoded or data[-1] >= 0x80:
            # The chunk may end inside a character: the decoder keeps those bytes.
            text = self._text_decoder.decode(data)
            self._undecoded = bool(self._text_decoder.getstate()[0])
        else:
            # Nothing held back and the chunk ends in ASCII: decoding at once is the
            # same, and cheaper.
            text = data.decode("utf-8", "replace")
        if not text:
            return
        if not self._bom_checked:
            self._bom_checked = True
            if text[0] == "\ufeff":
                text = text[1:]
                if not text:
                    return
        pos = 0
        if self._pending_cr and text[0] == "\n":
            pos = 1  # the LF of a CRLF split between two chunks
        # A CR ending the text ends its line; an LF opening the next text belongs to it.
        self._pending_cr = text[-1] == "\r"
        has_cr = "\r" in text
        if has_cr and self._fast_path:
            # CR, LF and CRLF end lines alike, so making every line end LF changes no
            # line (nor the LF skipped above); the fast path then never meets a CR.
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            has_cr = False
        end = len(text)
        if self._partial:
            # Only the new text is searched for the line end; the pieces are joined once.
            line_end, pos_after = _line_end(text, pos, has_cr)
            if line_end < 0:
                self._buffer_partial(text[pos:])
                return
            self._partial.append(text[pos:line_end])
            line = "".join(self._partial)
            self._partial = []
            self._partial_len = 0
            self._process_line(line, events)
            pos = pos_after

        fast_path = self._fast_path
        # The uniform run is tried once a chunk, at the first event start: a refused try
        # costs a pass over the chunk, not to be paid again for every event, nor for
        # every chunk of a stream that mixes event types.
        uniform = fast_path and not self._uniform_wait
        if self._uniform_wait:
            self._uniform_wait -= 1
        next_nul = -1
        while pos < end:
            if fast_path and not self._fields_seen:
                # Fast paths: at the start of an event, and never looking further than
                # ``_fast_limit`` characters (so no event they take can break a limit).
                # The general path below handles everything else and is the reference
                # they must agree with.
                if uniform:
                    uniform = False
                    run_end = self._dispatch_uniform(
                        text, pos, pos + self._fast_limit, events, runs
                    )
                    if run_end != pos:
                        pos = run_end
                        continue
                # Else take the longest run of common-shape events with one regex
                # match and read all their fields with one split, all in C. The span
                # searched also stops before the next NUL.
                if next_nul < pos:
                    next_nul = _find(text, "\x00", pos)
                run_end = self._dispatch_common(
                    text, pos, min(next_nul, pos + self._fast_limit), events, runs
                )
                if run_end != pos:
                    pos = run_end
                    continue
            line_end, pos_after = _line_end(text, pos, has_cr)
            if line_end < 0:
                self._buffer_partial(text[pos:])
                break
            self._process_line(text[pos:line_end], events)
            pos = pos_after

    def _dispatch_uniform(
        self,
        text: str,
        pos: int,
        endpos: int,
        events: list[ServerSentEvent],
        runs: list[EventRun] | None,
    ) -> int:
        # Dispatches every whole event in text[pos:endpos] if they are two or more,
        # all of the first one's common shape and type, exactly as _process_line would,
        # and returns where they end (pos if they are not). The usual chunk of a chat
        # stream is such a run, and one regex call then reads all of it in C.
        # (A common shape has no blank field line: each event ends at the first LF LF.)
        # Line ends are found with single-character searches (memchr), which cost next
        # to nothing even over events of many KiB.
        first_end = _first_event_end(text, pos, endpos)
        if first_end < 0:
            return pos
        end = _last_event_end(text, first_end, endpos)
        if end < 0:
            return pos  # fewer than two whole events
        for shape in _COMMON_SHAPES.get(text[pos], ()):
            if shape.run.match(text, pos, first_end) is not None:
                break
        else:
            return pos
        has_ids = shape.id_line >= 0
        if has_ids and text.find("\x00", pos, end) >= 0:
            return pos
        event_type = "message"
        if shape.event_line >= 0:
            event_type = shape.event_value(_line(text, pos, shape.event_line))
        with_ids = has_ids and runs is None  # feed_runs needs only the last event's id
        ids: Iterable[str] = repeat(self._id_buffer)
        if not has_ids and first_end - pos > _LARGE_EVENT:
            # Large events: the regex would read every character of the data; walking
            # from line end to line end (memchr) reads next to none of them.
            data_start = _line_start(text, pos, shape.data_line) + len("data" + shape.separator)
            lead = text[pos:data_start]
            datas = _large_datas(text, pos, end, lead, shape.separator == ":")
            if datas is None:
                return self._uniform_refused(pos)
        elif not has_ids:
            # Matches never overlap and each is an event of its data's length plus
            # ``other``, so they tile the span exactly when those lengths add up to it.
            pattern, other = _uniform_pattern(shape, event_type, False)
            datas = pattern.findall(text, pos, end)
            # (The length of their join is their total length, and cheaper to get.)
            if len("".join(datas)) + len(datas) * other != end - pos:
                return self._uniform_refused(pos)
        else:
            # Ids vary in length: split, and check that the gaps between matches (the
            # text no event took) are all empty.
            pattern, _ = _uniform_pattern(shape, event_type, with_ids)
            parts = pattern.split(text[pos:end])
            step = 3 if with_ids else 2
            if any(parts[::step]):
                return self._uniform_refused(pos)
            datas = parts[step - 1 :: step]
            if with_ids:
                ids = parts[1::step]
                self._id_buffer = parts[-3]
            else:  # the last event's id line, the first of its lines in these shapes
                last = text.rfind("\n\n", pos, end - 2) + 2
                self._id_buffer = shape.id_value(text[last : text.find("\n", last)])
        self._uniform_backoff = 1
        self._last_event_id = self._id_buffer
        if runs is None:
            events.extend(map(ServerSentEvent, repeat(event_type), datas, ids, repeat(self._retry)))
        else:
            _append_events(runs, events)
            _append_run(runs, event_type, datas)
        return end

    def _uniform_refused(self, pos: int) -> int:
        # A stream that mixes types or shapes would be refused again: back off.
        self._uniform_wait = self._uniform_backoff
        self._uniform_backoff = min(2 * self._uniform_backoff, 16)
        return pos

    def _dispatch_common(
        self,
        text: str,
        pos: int,
        endpos: int,
        events: list[ServerSentEvent],
        runs: list[EventRun] | None,
    ) -> int:
        # Dispatches the run of common-shape events at text[pos:endpos], exactly as
        # _process_line would, and returns where the run ends (pos if there is none).
        for shape in _COMMON_SHAPES.get(text[pos], ()):
            run = shape.run.match(text, pos, endpos)
            if run is not None:
                break
        else:
            return pos
        # The run is known to be well formed, so splitting it at LF puts each field at
        # a fixed line of every event.
        lines = text[pos : run.end()].split("\n")
        stride = shape.stride
        stop = len(lines) - 1  # the last item is the empty string after the final LF
        if stop == stride:
            # One event, as when each read brings one: build it directly.
            event_type = "message"
            if shape.event_line >= 0:
                event_type = shape.event_value(lines[shape.event_line])
            if shape.id_line >= 0:
                self._id_buffer = shape.id_value(lines[shape.id_line])
            self._last_event_id = self._id_buffer
            data = shape.data_value(lines[shape.data_line])
            events.append(ServerSentEvent(event_type, data, self._id_buffer, self._retry))
            return run.end()
        # Many events: take each field as a column of lines, and build them all in C.
        datas = list(map(shape.data_value, lines[shape.data_line : stop : stride]))
        event_types: list[str] = ["message"] * len(datas)
        if shape.event_line >= 0:
            event_types = list(map(shape.event_value, lines[shape.event_line : stop : stride]))
        if runs is not None:  # no event objects, and only the last id
            if shape.id_line >= 0:
                self._id_buffer = shape.id_value(lines[stop - stride + shape.id_line])
            self._last_event_id = self._id_buffer
            _append_events(runs, events)
            _append_columns(runs, event_types, datas)
            return run.end()
        ids: Iterable[str] = repeat(self._id_buffer)
        if shape.id_line >= 0:
            id_column = list(map(shape.id_value, lines[shape.id_line : stop : stride]))
            self._id_buffer = id_column[-1]
            ids = id_column
        self._last_event_id = self._id_buffer
        events.extend(map(ServerSentEvent, event_types, datas, ids, repeat(self._retry)))
        return run.end()

    def _buffer_partial(self, piece: str) -> None:
        self._partial.append(piece)
        self._partial_len += len(piece)
        # Checked as the line grows, so an endless line fails without waiting for its end.
        if self._partial_len > self._max_line_size:
            raise self._line_too_long(self._partial_start())
        if self._data_len + self._partial_len > self._max_event_size:
            raise self._event_too_large(self._partial_start())

    def _partial_start(self) -> str:
        start: list[str] = []
        size = 0
        for piece in self._partial:
            start.append(piece)
            size += len(piece)
            if size >= _EXCERPT_CHARS:
                break
        return "".join(start)[:_EXCERPT_CHARS]

    def _process_line(self, line: str, events: list[ServerSentEvent]) -> None:
        # The WHATWG "Event stream interpretation" steps for one line, in order.
        if len(line) > self._max_line_size:
            raise self._line_too_long(line)
        if self._data_len + len(line) > self._max_event_size:
            raise self._event_too_large(line)
        if not line:
            # The last event id is committed even when no event is dispatched.
            self._last_event_id = self._id_buffer
            if self._data:
                events.append(
                    ServerSentEvent(
                        self._event_type or "message",
                        "\n".join(self._data),
                        self._id_buffer,
                        self._retry,
                    )
                )
                self._data = []
                self._data_len = 0
            self._event_type = ""
            self._fields_seen = False
            return
        if line[0] == ":":
            return  # a comment
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        self._fields_seen = True
        if name == "data":
            self._data.append(value)
            self._data_len += len(value) + 1
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\x00" not in value:
                self._id_buffer = value
        elif name == "retry":
            retry = _parse_retry(value)
            if retry is not None:
                self._retry = retry
        # Any other field name is ignored.

    def _line_too_long(self, start: str) -> StreamError:
        return StreamError(
            f"event stream line longer than {self._max_line_size} characters",
            event=self._event_type or None,
            received=start[:_EXCERPT_CHARS],
        )

    def _event_too_large(self, line: str) -> StreamError:
        start = self._data[0] if self._data else line
        return StreamError(
            f"event stream event larger than {self._max_event_size} characters",
            event=self._event_type or None,
            received=start[:_EXCERPT_CHARS],
        )
