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
it was given.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable
from itertools import repeat
from operator import itemgetter
from typing import Final, NamedTuple

import msgspec

from chatsdk.errors import StreamError

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "DEFAULT_MAX_LINE_SIZE",
    "SSEDecoder",
    "ServerSentEvent",
]

# Limits are counted in characters of decoded text. A chat event is a few hundred
# bytes; the largest we know of, ``records_cited``, is tens of KiB. Go's bufio.Scanner,
# which many SSE clients are built on, stops at 64 KiB by default, and those clients
# routinely raise it to a few MiB after meeting large LLM events; 4 MiB per line keeps
# that headroom (about 100x our largest event) while bounding what one stream can make
# us hold.
DEFAULT_MAX_LINE_SIZE: Final = 4 * 1024 * 1024
# An event's data may span many ``data:`` lines, so it gets twice the line limit: room
# for any legitimate event, and still a fixed bound on the memory one stream can pin.
DEFAULT_MAX_EVENT_SIZE: Final = 8 * 1024 * 1024

# How much of an oversized line or event a StreamError keeps.
_EXCERPT_CHARS: Final = 256

# A line ends at CRLF, CR or LF (a CRLF counts once).
_LINE_END: Final = re.compile(r"\r\n|\r|\n")


class _Shape(NamedTuple):
    # A common event shape: some field lines in a fixed order, then the blank line.
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


def _shape(fields: tuple[str, ...], space: bool) -> _Shape:
    # All of an event's lines put one space after the colon, or none do (then the
    # value must not start with a space, which would be removed). An event type is
    # never empty (that would mean "message"). ``.`` matches anything but LF: the
    # caller turns every CR line end into LF and keeps NUL (it voids an id) out of the
    # searched span.
    separator = ": " if space else ":"
    value = ".*" if space else "(?:[^ \n].*)?"
    event_type = ".+" if space else "[^ \n].*"
    lines = "".join(
        f"{name}{separator}{event_type if name == 'event' else value}\n" for name in fields
    )

    def line(name: str) -> int:
        return fields.index(name) if name in fields else -1

    def value_of(name: str) -> Callable[[str], str]:
        return itemgetter(slice(len(name + separator), None))

    return _Shape(
        re.compile(f"(?:{lines}\n)+"),
        len(fields) + 1,
        line("id"),
        value_of("id"),
        line("event"),
        value_of("event"),
        line("data"),
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


def _line_end(text: str, pos: int, has_cr: bool) -> tuple[int, int]:
    # Where the line starting at pos ends and where the next one starts; (-1, -1)
    # when it does not end in text. str.find is much faster than a regex search.
    if has_cr:
        match = _LINE_END.search(text, pos)
        return match.span() if match is not None else (-1, -1)
    index = text.find("\n", pos)
    return index, index + 1


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
    parser (same results, slower; meant for tests).
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
    )

    def __init__(
        self,
        *,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        fast_path: bool = True,
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
        self._id_buffer = ""
        self._fields_seen = False
        self._last_event_id = ""
        self._retry: int | None = None

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
        """True when nothing partial is buffered: no partial line or character, no field
        of an undispatched event. False at the end of a body means it ended mid-event."""
        return not (self._partial or self._fields_seen or self._undecoded)

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Decode the next chunk of the stream; return the events it completed, in order.

        Raises :class:`~chatsdk.errors.StreamError` when a line or an event exceeds
        its limit (events completed earlier in the same chunk are then lost too).
        """
        if not data:
            return []
        if self._undecoded or data[-1] >= 0x80:
            # The chunk may end inside a character: the decoder keeps those bytes.
            text = self._text_decoder.decode(data)
            self._undecoded = bool(self._text_decoder.getstate()[0])
        else:
            # Nothing held back and the chunk ends in ASCII: decoding at once is the
            # same, and cheaper.
            text = data.decode("utf-8", "replace")
        if not text:
            return []
        if not self._bom_checked:
            self._bom_checked = True
            if text[0] == "\ufeff":
                text = text[1:]
                if not text:
                    return []
        events: list[ServerSentEvent] = []
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
                return events
            self._partial.append(text[pos:line_end])
            line = "".join(self._partial)
            self._partial = []
            self._partial_len = 0
            self._process_line(line, events)
            pos = pos_after

        fast_path = self._fast_path
        next_nul = -1
        while pos < end:
            if fast_path and not self._fields_seen:
                # Fast path: at the start of an event, take the longest run of
                # common-shape events with one regex match and read all their fields
                # with one split, all in C. The span searched stops before the next NUL
                # and after ``_fast_limit`` characters (so no event in it can break a
                # limit). The general path below handles everything else and is the
                # reference this must agree with.
                if next_nul < pos:
                    next_nul = _find(text, "\x00", pos)
                run_end = self._dispatch_common(
                    text, pos, min(next_nul, pos + self._fast_limit), events
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
        return events

    def _dispatch_common(
        self, text: str, pos: int, endpos: int, events: list[ServerSentEvent]
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
        event_types: Iterable[str] = repeat("message")
        if shape.event_line >= 0:
            event_types = list(map(shape.event_value, lines[shape.event_line : stop : stride]))
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
