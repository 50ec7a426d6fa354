"""A sans-IO decoder for server-sent events (``text/event-stream``).

Contract, in the manner of h11's readers: create one :class:`SSEDecoder` per response
body and call :meth:`SSEDecoder.feed` with each chunk of bytes as it arrives, in order
and cut anywhere. Each call has one of three outcomes: it returns the events the chunk
completed; it returns nothing because the rest of an event is still to come (need more
data); or it raises :class:`~chatsdk.errors.StreamError`, a protocol error, when a line
or an event grows past its size limit, after which the decoder must be dropped. When
the body ends, call :meth:`SSEDecoder.end`: it raises ``StreamError`` if the body ended
inside an event (field lines not yet ended by a blank line, or an unterminated field
line; a trailing partial comment is no event) and returns otherwise.
Parsing follows the WHATWG HTML "Event stream interpretation" rules exactly, so the
events, :attr:`~SSEDecoder.last_event_id` and :attr:`~SSEDecoder.retry` never depend on
where the chunks were cut; nor does the speed depend on the layout a server keeps to (any
field order, line end, ping rate or event type). A layout that changes from event to event,
or floods of blank or comment lines, are read line by line, several times slower. The
decoder never does IO and keeps no reference to the bytes it was given.
:meth:`SSEDecoder.feed_runs` is the same contract for a consumer that needs only each
event's type and data, grouped in runs of one type, without :class:`ServerSentEvent`
objects.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Iterable
from itertools import pairwise, repeat
from typing import Final, NamedTuple, TypeAlias

import msgspec

from chatsdk.errors import StreamError, ValidationError

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

# A larger chunk is decoded in pieces of about this many bytes, each ending after its
# last LF where there is one (one memrchr; a search for a blank line would read the
# whole piece when lines end CRLF). A piece's text then stays below the size at which
# malloc maps fresh pages for every allocation (128 KiB by default in glibc), which on
# the 256 KiB reads aiohttp hands over cost some 15% of stream throughput in page faults.
# (Measured again with the one-pass reader: the decoder alone gains nothing, 243 against
# 234 ns/event on 256 KiB chunks; end to end, 5 interleaved runs gave it some 10% of
# wall and CPU time, within this machine's noise. Kept, being cheap.)
# The decoder's results do not depend on where chunks are cut, so this changes none.
_PIECE: Final = 64 * 1024


def _pieces(data: bytes) -> tuple[bytes, ...] | list[bytes]:
    if len(data) <= _PIECE:
        return (data,)
    pieces = []
    start, end = 0, len(data)
    while end - start > _PIECE:
        cut = data.rfind(b"\n", start, start + _PIECE) + 1
        if cut <= start:  # no line end in reach: a plain cut
            cut = start + _PIECE
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    return pieces


# -- the one-pass reader ----------------------------------------------------------------
#
# A server repeats one layout of event: the same field lines in the same order, each with
# or without the space after its colon, and mostly the same event type. The decoder
# learns that layout (its *shape*) from the first event it meets, taking the type and
# any retry value as literal text. All that lies between the data of one event and the
# data of the next is then that same text but for the id: one regular expression (most
# often a plain literal, found by a fast search) matches it, and one split of a run of
# events at those separators yields every event's data, in C, creating nothing else.
# The split is checked rather than trusted: no data value may hold a line end, and the
# text before the first value and after the last must be the shape's. Comment and blank
# lines may lie between events (pings do not end a run). A stream whose type changes
# from one event to the next gets shapes that read the type too. What a shape cannot
# say (a comment or an unknown field inside an event, a field without a colon, a NUL in
# an id, an id between data lines, an event longer than the limits) is read line by
# line by _process_line, the WHATWG reference that the tests hold the shapes to.

# The fields a shape may have, and the most lines it learns (more: line by line).
_SHAPE_FIELDS: Final = frozenset({"data", "event", "id", "retry"})
_SHAPE_LINES: Final = 8
# Learning a shape costs a line-by-line look at an event (and the first time, compiling
# its patterns): worth it once per run of many events, not per event. Once the type has
# changed _TYPE_CHANGES times, on average at least every _RUN_LENGTH events, shapes
# read the type from each event. Once _MISSES events were not taken at once by a shape
# (it had to be learned, or none could take the event), on average one in _RUN_LENGTH
# // 4 or more, the stream is read line by line from then on: its layout keeps changing.
# (Anthropic's messages open with three events of three types: a few changes are usual.)
_TYPE_CHANGES: Final = 8
_MISSES: Final = 32
_RUN_LENGTH: Final = 16
# Comment and blank lines read between two events of a run, at most (more end the run):
# the separators are searched for at every blank line, and each look may read this many.
_BETWEEN_LINES: Final = 16

#: One field line of a shape: name, separator (``":"`` or ``": "``), and the value of an
#: ``event`` or ``retry`` line (a literal in the patterns; ``""`` for ``data`` and ``id``).
_Field: TypeAlias = tuple[str, str, str]


class _Shape(NamedTuple):
    event: re.Pattern[str]  # one event, after any comment or blank lines; its data in "data"
    run: re.Pattern[str]  # as many events as follow each other, each after any such lines
    head: re.Pattern[str]  # from a run's start to the first event's first data value
    # From the end of one event's data to the start of the next one's: the shape's own
    # text, then the same with comment and blank lines between the two events.
    separators: tuple[re.Pattern[str], re.Pattern[str]]
    tail: re.Pattern[str]  # the last event's data (group 1), then the rest of the run
    step: int  # items per event in a separator's split(): the data, then the groups
    inner: str  # the text between two data lines of one event ("": one data line)
    data_lines: int  # how many data lines an event has (0: any number, inner is theirs)
    no_space: bool  # data lines have no space after the colon: no value starts with one
    event_type: str | None  # every event's type (None: read per event, group "type")
    type_first: bool  # the event line comes before the data (else after it)
    id_prefix: str  # "id:" or "id: ", each event's one id line starts so ("": none)
    id_first: bool  # the id line comes before the data (else after it)
    read_ids: bool  # the separators read each id (group "id"), else only the last is
    retry: int | None  # the reconnection time the events set (None: they set none)
    eol: str  # what ends each line: LF, or CRLF (read as it is, see _feed)


def _shape_at(text: str, pos: int, endpos: int, eol: str) -> tuple[_Field, ...] | None:
    # The shape of the first whole event in text[pos:endpos], after any comment or blank
    # lines, its lines ending eol; None if there is none or a shape cannot describe it.
    fields: list[_Field] = []
    cut = len(eol) - 1  # the CR before each LF, if lines end CRLF
    line_end = text.find("\n", pos, endpos)
    while line_end >= 0:
        if text[line_end - cut : line_end] != eol[:cut]:
            return None
        line = text[pos : line_end - cut]
        pos = line_end + 1
        if cut and "\r" in line:
            return None  # a lone CR: it ends a line, which the shape would not see
        if not line:
            if fields:
                return tuple(fields) if any(f[0] == "data" for f in fields) else None
        elif line[0] != ":":
            name, colon, value = line.partition(":")
            if not colon or name not in _SHAPE_FIELDS or len(fields) == _SHAPE_LINES:
                return None
            separator = ": " if value[:1] == " " else ":"
            literal = value[len(separator) - 1 :] if name in ("event", "retry") else ""
            fields.append((name, separator, literal))
        elif fields:
            return None  # a comment inside the event
        line_end = text.find("\n", pos, endpos)
    return None


def _same_but_types(a: tuple[_Field, ...], b: tuple[_Field, ...]) -> bool:
    # Whether two shapes differ at most in the type their event lines give.
    return len(a) == len(b) and all(
        x[:2] == y[:2] and (x == y or x[0] == "event") for x, y in zip(a, b, strict=True)
    )


# Bounded because shapes come from the server: one that keeps inventing new ones costs
# a compilation per event and never grows the cache.
@functools.lru_cache(maxsize=64)
def _compile(
    fields: tuple[_Field, ...], eol: str, read_types: bool, read_ids: bool
) -> _Shape | None:
    # The patterns of a shape; None if it is one the reader does not take (more than one
    # id line; an id, or with read_types an event line, between data lines). read_types:
    # the type is read from each event, not the literal one; read_ids: the separators
    # read every id (else only the last is found).
    names = [name for name, _, _ in fields]
    data_at = [i for i, name in enumerate(names) if name == "data"]
    first, last = data_at[0], data_at[-1]
    if names.count("id") > 1:
        return None
    if len({fields[i][1] for i in data_at}) > 1:
        return None  # data lines apart in their separators: rare, read line by line
    data_prefix = "data" + fields[first][1]
    no_space = data_prefix == "data:"
    value = "[^\r\n]*"
    ignored = f"(?::{value}{eol}|{eol})"  # a comment or blank line (CR, LF: themselves)
    between = ignored + "*"  # before a run's first event, after its last
    between_two = f"{ignored}{{0,{_BETWEEN_LINES}}}+"  # between two events of a run

    def lines(part: tuple[_Field, ...], capture: tuple[str, ...]) -> str:
        out = []
        for name, separator, literal in part:
            start = re.escape(name + separator)
            if name == "retry" or (name == "event" and not read_types):
                out.append(re.escape(name + separator + literal) + eol)
                continue
            bare = value if separator == ": " else f"(?! ){value}"
            group = "type" if name == "event" else "id"
            if group in capture:
                bare = f"(?P<{group}>{bare})"
            out.append(f"{start}{bare}{eol}")
        return "".join(out)

    lookahead = "(?! )" if no_space else ""
    id_prefix = next((n + s for n, s, _ in fields if n == "id"), "")
    inner = ""
    for a, b in pairwise(data_at):
        text = eol + "".join(n + s + lit + eol for n, s, lit in fields[a + 1 : b]) + data_prefix
        if (inner and text != inner) or "\x00" in text or "id" in names[a:b]:
            return None
        if read_types and "event" in names[a:b]:
            return None
        inner = text
    # How many data lines each event must have (0: any number, all being together).
    data_lines = 0 if inner == eol + data_prefix else len(data_at)
    inner_re = re.escape(inner) + lookahead if inner else ""

    def head(capture: tuple[str, ...]) -> str:
        return lines(fields[:first], capture) + re.escape(data_prefix) + lookahead

    def tail(capture: tuple[str, ...]) -> str:
        return eol + lines(fields[last + 1 :], capture) + eol

    datas = value
    if inner:
        datas += f"(?:{inner_re}{value})" + (f"{{{data_lines - 1}}}" if data_lines else "*")
    one_event = head(()) + datas + tail(())
    both = ("type", "id")
    some = both if read_ids else ("type",)
    strict = re.compile(tail(some) + head(some))
    step = strict.groups + 1
    type_first = "event" in names[:first]
    retry = None
    for name, _, literal in fields:
        if name == "retry":
            parsed = _parse_retry(literal)
            retry = retry if parsed is None else parsed
    event_type = None
    if not read_types:
        types = [literal for name, _, literal in fields if name == "event"]
        event_type = (types[-1] if types else "") or "message"
    return _Shape(
        re.compile(between + head(both) + f"(?P<data>{datas})" + tail(both)),
        re.compile(f"{between}{one_event}(?:{between_two}{one_event})*"),
        re.compile(between + head(both)),
        (strict, re.compile(tail(some) + between_two + head(some))),
        re.compile(f"({datas}){tail(both)}{between}"),
        step,
        inner,
        data_lines,
        no_space,
        event_type,
        type_first,
        id_prefix,
        "id" in names[:first],
        read_ids,
        retry,
        eol,
    )


#: A run of consecutive events of one type: the type, and each event's data in order.
EventRun: TypeAlias = tuple[str, list[str]]


def _append_run(runs: list[EventRun], event_type: str, datas: list[str]) -> None:
    # Appends events of one type, to the last run if it has that type.
    if runs and runs[-1][0] == event_type:
        runs[-1][1].extend(datas)
    else:
        runs.append((event_type, datas))


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
    >>> decoder.end()

    ``max_line_size`` and ``max_event_size`` bound, in characters, one line and the
    data of one event (its data values with a line end each, plus the whole line being
    read, field name included); crossing either raises
    :class:`~chatsdk.errors.StreamError`. ``fast_path=False`` reads every line with the
    line-by-line reference parser alone (same results, slower; meant for tests).
    ``last_event_id`` is the id a reconnection resumes from (the ``Last-Event-ID`` it
    sent): events that carry no ``id`` line report it, as they would have on the first
    connection.
    """

    __slots__ = (
        "_between",
        "_bom_checked",
        "_data",
        "_data_len",
        "_error_line",
        "_event_type",
        "_events",
        "_fast_limit",
        "_fast_path",
        "_fields_seen",
        "_id_buffer",
        "_id_line",
        "_key",
        "_last_event_id",
        "_max_event_size",
        "_max_line_size",
        "_misses",
        "_nul",
        "_partial",
        "_partial_len",
        "_pending_cr",
        "_read_types",
        "_retry",
        "_shape",
        "_since_id",
        "_text_decoder",
        "_type_changes",
        "_undecoded",
        "_whole_blocks",
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
            raise ValidationError("max_line_size and max_event_size must be positive")
        self._max_line_size = max_line_size
        self._max_event_size = max_event_size
        self._fast_path = fast_path
        self._fast_limit = min(max_line_size, max_event_size)
        self._shape: _Shape | None = None  # the shape of the last run read in one pass
        self._key: tuple[_Field, ...] | None = None  # ... as learned from its first event
        self._misses = 0  # events a shape did not take at once (learned, refused: _MISSES)
        self._type_changes = 0  # ... because the type changed
        self._events = 0  # events read in runs
        self._read_types = False  # types change from event to event: shapes read them
        self._between = False  # comment or blank lines came between events of a run
        self._whole_blocks = True  # see _read_run
        self._nul = -1
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
        self._id_line = False  # the event under way has an id line of its own
        self._since_id = 0  # events dispatched after the last one with an id line
        self._last_event_id = last_event_id
        self._retry: int | None = None
        self._error_line: str | None = None

    @property
    def last_event_id(self) -> str:
        """The last event id, as committed by the most recent blank line (``""`` before any)."""
        return self._last_event_id

    @property
    def events_since_id(self) -> int:
        """How many events were dispatched after the last block with a valid ``id`` line
        (0 when the last event had one). Those events report that id too (WHATWG), so a
        server resuming after it (``Last-Event-ID``) would send them again."""
        return self._since_id

    @property
    def retry(self) -> int | None:
        """The reconnection time in milliseconds from the latest valid ``retry:`` field."""
        return self._retry

    @property
    def error_line(self) -> str | None:
        """The value of the latest ``error`` field line, None before any; at the end of a
        body, the line it ends on too, though no line end ends it. WHATWG ignores that
        field name (no event carries it); llama.cpp's server reports a failure mid-answer
        with one, so the caller can say what the server said."""
        if self._partial and self._partial[0].startswith("error"):
            name, colon, value = "".join(self._partial).partition(":")
            if name == "error" and colon:
                return value[1:] if value[:1] == " " else value
        return self._error_line

    @property
    def at_event_boundary(self) -> bool:
        """True when no event is under way: no field line (of any name) since the last
        blank line, and no unterminated line or character unless it is a comment's.
        False at the end of a body means the body ended mid-event (see :meth:`end`)."""
        if self._fields_seen:
            return False
        if self._partial:
            return self._partial[0][0] == ":"
        return not self._undecoded

    def end(self) -> None:
        """Tell the decoder the body ended; raise :class:`~chatsdk.errors.StreamError`
        if it ended inside an event (whose events are then never dispatched)."""
        if not self.at_event_boundary:
            pending = "\n".join([*self._data, self._partial_start()]).strip("\n")
            raise StreamError(
                "the event stream ended in the middle of an event",
                event=self._event_type or None,
                received=pending[:_EXCERPT_CHARS] or None,
            )

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
        decoder's state afterwards is the same. Cheaper: events read in one pass never
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
        if "\r" in text and "\n" in text and self._fast_path:
            # Lines that end CRLF: making them end LF (below) costs more than reading
            # their events, so runs of such events are read as they are. The event under
            # way, if any, is first finished the usual way: where a text is cut changes
            # no result.
            pos = 0
            if self._partial or self._fields_seen:
                pos = text.find("\r\n\r\n") + 4
                if pos < 4:
                    pos = len(text)
                self._feed_text(text[:pos], events, runs)
            if pos < len(text) and not (self._partial or self._fields_seen):
                if self._pending_cr and text[pos] == "\n":
                    pos += 1
                self._pending_cr = False
                self._nul, self._whole_blocks = -1, True
                pos = self._read_runs(text, pos, events, runs, "\r\n")
            text = text[pos:]  # an event under way, or events no shape takes
        self._feed_text(text, events, runs)

    def _feed_text(
        self, text: str, events: list[ServerSentEvent], runs: list[EventRun] | None
    ) -> None:
        if not text:
            return
        pos = 0
        if self._pending_cr and text[0] == "\n":
            pos = 1  # the LF of a CRLF split between two chunks
        # A CR ending the text ends its line; an LF opening the next text belongs to it.
        self._pending_cr = text[-1] == "\r"
        if "\r" in text:
            # CR, LF and CRLF end lines alike, so making every line end LF changes no
            # line (nor the LF skipped above): from here on a line ends at LF. (Without
            # LF there is no CRLF, and a scan for LF is far cheaper than one for CRLF.)
            if "\n" in text:
                text = text.replace("\r\n", "\n")
            text = text.replace("\r", "\n")
        # Where the next NUL is in text (once a run with ids looked), and whether a run
        # may take the whole rest of it: see _read_run. Both hold for one text only.
        self._nul, self._whole_blocks = -1, True
        end = len(text)
        if self._partial:
            # Only the new text is searched for the line end; the pieces are joined once.
            line_end = text.find("\n", pos)
            if line_end < 0:
                self._buffer_partial(text[pos:])
                return
            self._partial.append(text[pos:line_end])
            line = "".join(self._partial)
            self._partial = []
            self._partial_len = 0
            self._process_line(line, events)
            pos = line_end + 1
        while pos < end:
            if self._fast_path and not self._fields_seen:
                pos = self._read_runs(text, pos, events, runs, "\n")
                if pos == end:
                    break
            # What the shapes do not take: line by line, to the end of the next event.
            pos = self._read_lines(text, pos, events)

    def _read_runs(
        self,
        text: str,
        pos: int,
        events: list[ServerSentEvent],
        runs: list[EventRun] | None,
        eol: str,
    ) -> int:
        # Reads runs of events whose lines end eol from pos on, while there are any;
        # returns where they end. An event no longer than both limits cannot break
        # either, so no run is looked for further than that.
        end = len(text)
        while pos < end:
            run_end = self._read_run(text, pos, min(end, pos + self._fast_limit), events, runs, eol)
            if run_end == pos:
                break
            pos = run_end
        return pos

    def _read_run(
        self,
        text: str,
        pos: int,
        endpos: int,
        events: list[ServerSentEvent],
        runs: list[EventRun] | None,
        eol: str,
    ) -> int:
        # Dispatches the run of events of one shape at text[pos:endpos], exactly as
        # _process_line would, and returns where it ends (pos if there is none). The
        # shape is the last run's if it fits the first event, else that event's own.
        read_ids = runs is None  # each event's id is wanted, not only the last one
        shape = self._shape
        first = None
        if shape is not None and shape.eol == eol:
            if shape.read_ids != read_ids and shape.id_prefix:
                shape = self._shape = _compile(self._key, eol, shape.event_type is None, read_ids)
                assert shape is not None  # it compiled before
            first = shape.event.match(text, pos, endpos)
        if shape is None or first is None:
            self._misses += 1
            if self._misses >= _MISSES and self._misses * _RUN_LENGTH > 4 * self._events:
                self._fast_path = False  # the layout keeps changing: line by line it is
                return pos
            fields = _shape_at(text, pos, endpos, eol)
            if fields is None:
                return pos
            if self._key is not None and _same_but_types(fields, self._key):
                self._type_changes += 1
                self._read_types |= (
                    self._type_changes >= _TYPE_CHANGES
                    and self._type_changes * _RUN_LENGTH > self._events
                )
            read_types = self._read_types and [f[0] for f in fields].count("event") == 1
            if read_types:  # one shape for every type
                fields = tuple((n, s, "" if n == "event" else v) for n, s, v in fields)
            self._key = fields
            shape = self._shape = _compile(fields, eol, read_types, read_ids)
            if shape is None:
                return pos
            first = shape.event.match(text, pos, endpos)
            if first is None:
                return pos
        if shape.id_prefix or shape.inner:
            # A NUL voids an id, which the patterns do not check, and several data lines
            # are told apart with one: the run stops before the next NUL (searched for
            # once, not per event), and the event that holds it is read line by line.
            if self._nul < pos:
                self._nul = _find(text, "\x00", pos)
            if self._nul < first.end():
                self._misses += 1
                return pos
            endpos = min(endpos, self._nul)
        read: tuple[list[str], str | list[str], list[str] | None] | None
        if first.end() == len(text):
            # One event, the whole text (as a server flushing each event is read): the
            # pattern that matched it has its values.
            end = first.end()
            data = first["data"]
            read = (
                [data.replace(shape.inner, "\n") if shape.inner else data],
                shape.event_type or [first["type"] or "message"],
                [first["id"]] if shape.id_prefix else None,
            )
        elif self._whole_blocks:
            # Optimistically, everything up to the last blank line is one run (it usually
            # is); if not, the rest of the text finds each run's end before splitting it.
            end = text.rfind(eol + eol, pos, endpos) + 2 * len(eol)
            read = self._split(shape, text, pos, end)
            self._whole_blocks = read is not None
        else:
            read = None
        if read is None:
            run = shape.run.match(text, pos, endpos)
            assert run is not None  # its first event matched
            end = run.end()
            read = self._split(shape, text, pos, end)
            if read is None:  # pragma: no cover - the run pattern says it is one
                return pos
        datas, types, ids = read
        self._events += len(datas)
        if ids is not None:
            self._id_buffer = ids[-1]
        # With an id line, every event of the run has one (none holds a NUL: see above).
        self._since_id = 0 if shape.id_prefix else self._since_id + len(datas)
        self._last_event_id = self._id_buffer
        if shape.retry is not None:
            self._retry = shape.retry
        if runs is None:
            events.extend(
                map(
                    ServerSentEvent,
                    repeat(types) if isinstance(types, str) else types,
                    datas,
                    repeat(self._id_buffer) if ids is None else ids,
                    repeat(self._retry),
                )
            )
            return end
        _append_events(runs, events)
        if isinstance(types, str):
            _append_run(runs, types, datas)
        elif types.count(types[0]) == len(types):
            _append_run(runs, types[0], datas)
        else:
            for event_type, data in zip(types, datas, strict=True):
                _append_run(runs, event_type, [data])
        return end

    def _split(
        self, shape: _Shape, text: str, pos: int, end: int
    ) -> tuple[list[str], str | list[str], list[str] | None] | None:
        # The data, types and ids of the events that text[pos:end] holds, read with one
        # split at the separators between them; None unless it is such events exactly
        # (any comment and blank lines between them aside).
        head = shape.head.match(text, pos, end)
        if head is None:
            return None
        body = text[head.end() : end]
        eol = shape.eol
        separator = shape.separators[self._between]
        split = self._split_at(shape, body, separator)
        if split is None and not self._between and (eol + eol + ":" in body or eol * 3 in body):
            # Comment or blank lines between events: split around them from now on.
            separator = shape.separators[1]
            split = self._split_at(shape, body, separator)
            self._between = split is not None
        if split is None:
            return None
        items, tail, datas = split
        step = shape.step
        types: str | list[str] | None = shape.event_type
        if types is None:
            column = items[separator.groupindex["type"] :: step]
            types = [head["type"], *column] if shape.type_first else [*column, tail["type"]]
            if "" in types:  # an empty type is "message"
                types = [event_type or "message" for event_type in types]
        ids = None
        if not shape.id_prefix:
            pass
        elif shape.read_ids:
            column = items[separator.groupindex["id"] :: step]
            ids = [head["id"], *column] if shape.id_first else [*column, tail["id"]]
        elif not shape.id_first or len(datas) == 1:
            # Only the last id: the one in force after the run.
            ids = [head["id"] if shape.id_first else tail["id"]]
        else:
            # The last event's id line is the last line of the run that starts so (no
            # value holds a line end).
            start = text.rfind(eol + shape.id_prefix, pos, end) + len(eol + shape.id_prefix)
            ids = [text[start : text.find(eol, start)]]
        return datas, types, ids

    @staticmethod
    def _split_at(
        shape: _Shape, body: str, separator: re.Pattern[str]
    ) -> tuple[list[str], re.Match[str], list[str]] | None:
        # body split at separator, the last event's tail, and every event's data; None
        # unless every line end of the body is the shape's own.
        items = separator.split(body)
        tail = shape.tail.fullmatch(items[-1])
        if tail is None:
            return None
        step, inner = shape.step, shape.inner
        datas = items[::step] if step > 1 else items
        datas[-1] = tail[1]
        if not inner:
            joined = "".join(datas)
            if "\n" in joined or (shape.eol != "\n" and "\r" in joined):
                return None
            return items, tail, datas
        # Several data lines: the text between two of them (inner) ends a value, a NUL
        # (none is in the run, see _read_run) tells the data of two events apart, and
        # there is no other line end (nor, without a space after the colon, a value
        # that starts with one).
        values = "\x00".join(datas).split(inner)
        joined = "\n".join(values)
        if (
            "\n" in "".join(values)
            or (shape.eol != "\n" and "\r" in joined)
            or (shape.no_space and "\n " in joined)
        ):
            return None
        datas = joined.split("\x00")
        if shape.data_lines:
            # Every event has its data lines, and so the fields between them.
            counts = [data.count("\n") for data in datas]
            if counts.count(shape.data_lines - 1) != len(counts):
                return None
        return items, tail, datas

    def _read_lines(self, text: str, pos: int, events: list[ServerSentEvent]) -> int:
        # Reads text from pos line by line to the end of the next event (the comment and
        # blank lines before it included) and returns where it stopped; at the end of
        # the text, keeps its unterminated last line. After a refused run the reader
        # thus moves on by a whole event, so no text is searched for a shape twice.
        end = len(text)
        while pos < end:
            line_end = text.find("\n", pos)
            if line_end < 0:
                self._buffer_partial(text[pos:])
                return end
            in_event = self._fields_seen
            self._process_line(text[pos:line_end], events)
            pos = line_end + 1
            if in_event and not self._fields_seen:
                break
        return pos

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
                self._since_id += 1
            if self._id_line:
                self._since_id = 0
                self._id_line = False
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
                self._id_line = True
        elif name == "retry":
            retry = _parse_retry(value)
            if retry is not None:
                self._retry = retry
        elif name == "error":
            self._error_line = value  # ignored but kept: see error_line
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
