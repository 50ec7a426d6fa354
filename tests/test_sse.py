"""The sans-IO event-stream decoder, byte by byte: WHATWG conformance, limits, chunking."""

from __future__ import annotations

import random
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatsdk import sse
from chatsdk.errors import StreamError
from chatsdk.sse import (
    DEFAULT_MAX_EVENT_SIZE,
    DEFAULT_MAX_LINE_SIZE,
    ServerSentEvent,
    SSEDecoder,
    event_runs,
)

BOM = "\ufeff".encode()
E = ServerSentEvent

# Every behavioural test runs on both paths: the fast path on, and the reference alone.
both_paths = pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "general"])


def feed_in(decoder: SSEDecoder, data: bytes, cuts: Sequence[int] = ()) -> list[ServerSentEvent]:
    """Feed data cut at the given offsets; return every event, in order."""
    events: list[ServerSentEvent] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        events += decoder.feed(data[start:cut])
        start = max(start, cut)
    return events


def parse(
    data: bytes, *, fast_path: bool = True, cuts: Sequence[int] = ()
) -> list[ServerSentEvent]:
    """The events of a whole stream."""
    return feed_in(SSEDecoder(fast_path=fast_path), data, cuts)


def outcome(
    data: bytes,
    cuts: Sequence[int] = (),
    *,
    fast_path: bool = True,
    max_line_size: int = DEFAULT_MAX_LINE_SIZE,
    max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
) -> tuple[list[ServerSentEvent], str, int | None, bool, int] | str:
    """Everything observable after feeding a stream, or "raised" if a limit was hit."""
    decoder = SSEDecoder(
        fast_path=fast_path, max_line_size=max_line_size, max_event_size=max_event_size
    )
    try:
        events = feed_in(decoder, data, cuts)
    except StreamError:
        return "raised"
    try:
        decoder.end()
    except StreamError:
        assert not decoder.at_event_boundary
    else:
        assert decoder.at_event_boundary
    return (
        events,
        decoder.last_event_id,
        decoder.retry,
        decoder.at_event_boundary,
        decoder.events_since_id,
    )


Step = tuple[list[ServerSentEvent] | list[tuple[str, str]], str, int | None, bool, int]


def per_chunk(
    data: bytes,
    cuts: Sequence[int] = (),
    *,
    runs: bool = False,
    fast_path: bool = True,
    max_line_size: int = DEFAULT_MAX_LINE_SIZE,
    max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
) -> list[Step | str]:
    """Chunk by chunk: the events each completed (from feed, or from feed_runs as
    (type, data) pairs) and the state after it; "raised" once a limit was hit."""
    decoder = SSEDecoder(
        fast_path=fast_path, max_line_size=max_line_size, max_event_size=max_event_size
    )
    steps: list[Step | str] = []
    start = 0
    try:
        for cut in [*sorted(cuts), len(data)]:
            chunk = data[start:cut]
            start = max(start, cut)
            events: list[ServerSentEvent] | list[tuple[str, str]]
            if runs:
                got = decoder.feed_runs(chunk)
                assert all(datas for _, datas in got), "a run is never empty"
                events = [(event, data) for event, datas in got for data in datas]
            else:
                events = decoder.feed(chunk)
            steps.append(
                (
                    events,
                    decoder.last_event_id,
                    decoder.retry,
                    decoder.at_event_boundary,
                    decoder.events_since_id,
                )
            )
    except StreamError:
        steps.append("raised")
    return steps


def type_and_data(steps: list[Step | str]) -> list[Step | str]:
    """per_chunk steps of feed as those of feed_runs look."""
    return [
        step
        if isinstance(step, str)
        else ([(e.event, e.data) for e in step[0] if isinstance(e, ServerSentEvent)], *step[1:])
        for step in steps
    ]


def bytewise(data: bytes) -> list[int]:
    return list(range(1, len(data)))


# --- the WHATWG specification's own examples -------------------------------------------


@both_paths
def test_spec_stock_ticker_data_lines_are_joined(fast_path: bool) -> None:
    assert parse(b"data: YHOO\ndata: +2\ndata: 10\n\n", fast_path=fast_path) == [
        E(data="YHOO\n+2\n10")
    ]


@both_paths
def test_spec_four_blocks_and_last_event_id(fast_path: bool) -> None:
    stream = (
        b": test stream\n\n"
        b"data: first event\nid: 1\n\n"
        b"data:second event\nid\n\n"
        b"data:  third event\n\n"
    )
    decoder = SSEDecoder(fast_path=fast_path)
    events = decoder.feed(stream)
    assert events == [
        E(data="first event", id="1"),
        E(data="second event", id=""),
        E(data=" third event", id=""),
    ]
    assert decoder.last_event_id == ""


@both_paths
def test_spec_empty_data_and_unterminated_last_event(fast_path: bool) -> None:
    decoder = SSEDecoder(fast_path=fast_path)
    assert decoder.feed(b"data\n\ndata\ndata\n\ndata:") == [E(data=""), E(data="\n")]
    assert not decoder.at_event_boundary


@both_paths
def test_spec_space_after_colon_is_optional(fast_path: bool) -> None:
    first, second = parse(b"data:test\n\ndata: test\n\n", fast_path=fast_path)
    assert first == second == E(data="test")


# --- line ends -------------------------------------------------------------------------


@both_paths
@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"], ids=["LF", "CR", "CRLF"])
def test_each_line_end(fast_path: bool, eol: bytes) -> None:
    stream = b"event: e" + eol + b"data: a" + eol + b"data: b" + eol + eol
    assert parse(stream, fast_path=fast_path) == [E(event="e", data="a\nb")]


@both_paths
def test_mixed_line_ends(fast_path: bool) -> None:
    stream = b"data: a\rdata: b\r\ndata: c\n\r\ndata: d\r\r"
    assert parse(stream, fast_path=fast_path) == [E(data="a\nb\nc"), E(data="d")]


@both_paths
def test_crlf_split_across_chunks_is_one_line_end(fast_path: bool) -> None:
    decoder = SSEDecoder(fast_path=fast_path)
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []  # the LF pairs with the CR: no blank line
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\r\n") == [E(data="a\nb")]


@both_paths
def test_cr_then_cr_in_next_chunk_is_two_line_ends(fast_path: bool) -> None:
    decoder = SSEDecoder(fast_path=fast_path)
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [E(data="a")]


@both_paths
def test_lf_after_pending_cr_only_once(fast_path: bool) -> None:
    decoder = SSEDecoder(fast_path=fast_path)
    decoder.feed(b"data: a\r")
    assert decoder.feed(b"\n\n") == [E(data="a")]


@both_paths
def test_cr_cr_lf_is_two_line_ends(fast_path: bool) -> None:
    assert parse(b"data: a\r\r\ndata: b\n\n", fast_path=fast_path) == [E(data="a"), E(data="b")]


@both_paths
def test_other_unicode_line_breaks_are_data(fast_path: bool) -> None:
    stream = "data: a\x0bb\x0cc\x1cd\x85e\u2028f\n\n".encode()
    assert parse(stream, fast_path=fast_path) == [E(data="a\x0bb\x0cc\x1cd\x85e\u2028f")]


# --- byte order mark and UTF-8 ---------------------------------------------------------


@both_paths
def test_leading_bom_is_stripped(fast_path: bool) -> None:
    assert parse(BOM + b"data: x\n\n", fast_path=fast_path) == [E(data="x")]


@both_paths
def test_only_one_bom_is_stripped(fast_path: bool) -> None:
    # The second BOM becomes part of the field name "\ufeffdata", an unknown field.
    assert parse(BOM + BOM + b"data: x\n\n", fast_path=fast_path) == []
    assert parse(BOM + b"data: " + BOM + b"x\n\n", fast_path=fast_path) == [E(data="\ufeffx")]


@both_paths
def test_bom_split_across_chunks_is_stripped(fast_path: bool) -> None:
    stream = BOM + b"data: x\n\n"
    assert parse(stream, fast_path=fast_path, cuts=[1, 2]) == [E(data="x")]
    assert parse(stream, fast_path=fast_path, cuts=bytewise(stream)) == [E(data="x")]


@both_paths
def test_bom_later_in_stream_is_kept(fast_path: bool) -> None:
    decoder = SSEDecoder(fast_path=fast_path)
    assert decoder.feed(b"data: a\n\n") == [E(data="a")]
    assert decoder.feed(BOM + b"data: b\n\n") == []  # field "\ufeffdata" is unknown


@both_paths
def test_bom_after_empty_chunks_still_counts_as_leading(fast_path: bool) -> None:
    decoder = SSEDecoder(fast_path=fast_path)
    assert decoder.feed(b"") == []
    assert decoder.feed(BOM) == []
    assert decoder.feed(b"data: x\n\n") == [E(data="x")]


@both_paths
@pytest.mark.parametrize(
    "raw",
    [b"a\xffb", b"\xe2\x82", b"\xc3", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\x80\x80"],
    ids=["stray", "cut-3-byte", "cut-2-byte", "surrogate", "cut-4-byte", "continuations"],
)
def test_invalid_utf8_becomes_replacement_character(fast_path: bool, raw: bytes) -> None:
    expected = raw.decode("utf-8", "replace")
    assert "\ufffd" in expected
    stream = b"data: " + raw + b"\n\n"
    assert parse(stream, fast_path=fast_path) == [E(data=expected)]
    assert parse(stream, fast_path=fast_path, cuts=bytewise(stream)) == [E(data=expected)]


@both_paths
@pytest.mark.parametrize("text", ["é", "€", "😀", "日本語", "a€😀é"])
def test_multibyte_characters_split_across_chunks(fast_path: bool, text: str) -> None:
    stream = f"event: {text}\ndata: {text}\n\n".encode()
    expected = [E(event=text, data=text)]
    assert parse(stream, fast_path=fast_path, cuts=bytewise(stream)) == expected


def test_chunk_ending_inside_a_character_is_not_an_event_boundary() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: a\n\n")
    decoder.feed(b"\xe2\x82")
    assert not decoder.at_event_boundary
    assert decoder.feed(b"\xac") == []
    assert not decoder.at_event_boundary  # a partial line now


# --- fields ----------------------------------------------------------------------------


@both_paths
def test_comments_are_ignored(fast_path: bool) -> None:
    stream = b":\n: keep-alive\ndata: a\n:comment: with colon\ndata: b\n\n: done\n"
    decoder = SSEDecoder(fast_path=fast_path)
    assert decoder.feed(stream) == [E(data="a\nb")]
    assert decoder.at_event_boundary  # a trailing comment leaves nothing partial


@both_paths
def test_field_without_colon_has_empty_value(fast_path: bool) -> None:
    stream = b"event: x\nevent\nid: 5\nid\ndata\n\n"
    assert parse(stream, fast_path=fast_path) == [E(event="message", data="", id="")]


@both_paths
@pytest.mark.parametrize(
    ("line", "value"),
    [
        (b"data:x", "x"),
        (b"data: x", "x"),
        (b"data:  x", " x"),
        (b"data:   ", "  "),
        (b"data: ", ""),
        (b"data:", ""),
        (b"data:\tx", "\tx"),
        (b"data: x ", "x "),
        (b"data: a: b", "a: b"),
    ],
)
def test_exactly_one_space_after_colon_is_removed(fast_path: bool, line: bytes, value: str) -> None:
    assert parse(line + b"\n\n", fast_path=fast_path) == [E(data=value)]


@both_paths
def test_one_space_removed_from_every_field(fast_path: bool) -> None:
    stream = b"id:  7\nevent:  e\ndata:  d\n\n"
    assert parse(stream, fast_path=fast_path) == [E(event=" e", data=" d", id=" 7")]


@both_paths
def test_id_containing_nul_is_ignored(fast_path: bool) -> None:
    stream = b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\nid: \x00\ndata: c\n\n"
    decoder = SSEDecoder(fast_path=fast_path)
    assert decoder.feed(stream) == [E(data="a", id="1"), E(data="b", id="1"), E(data="c", id="1")]
    assert decoder.last_event_id == "1"


@both_paths
def test_nul_in_data_and_event_is_kept(fast_path: bool) -> None:
    stream = b"event: a\x00b\ndata: c\x00d\n\n"
    assert parse(stream, fast_path=fast_path) == [E(event="a\x00b", data="c\x00d")]


@both_paths
def test_retry_sets_reconnection_time(fast_path: bool) -> None:
    decoder = SSEDecoder(fast_path=fast_path)
    assert decoder.retry is None
    assert decoder.feed(b"data: a\n\n") == [E(data="a", retry=None)]
    assert decoder.feed(b"retry: 1500\n") == []
    assert decoder.retry == 1500  # at once, without waiting for a dispatch
    assert decoder.feed(b"data: b\n\ndata: c\n\n") == [
        E(data="b", retry=1500),
        E(data="c", retry=1500),
    ]
    assert decoder.feed(b"retry:007\n\n") == []
    assert decoder.retry == 7


@both_paths
@pytest.mark.parametrize(
    "value",
    [b"15x", b"-1", b"+1", b"1.5", b"", b" 10", b"1 0", "\u00b2".encode(), "\u0663".encode()],
    ids=repr,
)
def test_retry_other_than_ascii_digits_is_ignored(fast_path: bool, value: bytes) -> None:
    decoder = SSEDecoder(fast_path=fast_path)
    events = decoder.feed(b"retry: 3000\n\nretry: " + value + b"\ndata: x\n\n")
    assert decoder.retry == 3000
    assert events == [E(data="x", retry=3000)]


@both_paths
def test_retry_without_colon_is_ignored(fast_path: bool) -> None:
    decoder = SSEDecoder(fast_path=fast_path)
    decoder.feed(b"retry\n\n")
    assert decoder.retry is None


@both_paths
def test_retry_with_absurdly_many_digits_is_ignored(fast_path: bool) -> None:
    decoder = SSEDecoder(fast_path=fast_path)
    decoder.feed(b"retry: 5\n\nretry: " + b"9" * 10_000 + b"\n\n")
    assert decoder.retry == 5
    decoder.feed(b"retry: " + b"0" * 10_000 + b"42\n\n")
    assert decoder.retry == 42


@both_paths
def test_unknown_fields_are_ignored(fast_path: bool) -> None:
    stream = b"foo: bar\nData: x\nDATA: y\ndata : z\n data: w\nevents: q\ndata: kept\n\n"
    assert parse(stream, fast_path=fast_path) == [E(data="kept")]


@both_paths
def test_an_error_field_dispatches_nothing_and_is_kept(fast_path: bool) -> None:
    # llama.cpp's server reports a failure mid-answer as an `error:` line.
    decoder = SSEDecoder(fast_path=fast_path)
    assert decoder.error_line is None
    events = decoder.feed(b'data: a\n\ndata: b\n\nerror: first\n\nerror:{"message":"x"}\n\n')
    assert [e.data for e in events] == ["a", "b"]
    assert decoder.error_line == '{"message":"x"}'
    decoder.end()


@both_paths
def test_field_order_within_an_event_does_not_matter(fast_path: bool) -> None:
    stream = b"data: x\nid: 5\nevent: e\n\n"
    assert parse(stream, fast_path=fast_path) == [E(event="e", data="x", id="5")]


@both_paths
def test_later_field_of_same_name_wins(fast_path: bool) -> None:
    stream = b"event: a\nid: 1\nevent: b\nid: 2\ndata: x\n\n"
    assert parse(stream, fast_path=fast_path) == [E(event="b", data="x", id="2")]


@both_paths
def test_empty_event_type_means_message(fast_path: bool) -> None:
    assert parse(b"event:\ndata: x\n\n", fast_path=fast_path) == [E(event="message", data="x")]
    assert parse(b"event: \ndata: x\n\n", fast_path=fast_path) == [E(event="message", data="x")]


# --- dispatch --------------------------------------------------------------------------


@both_paths
def test_no_dispatch_without_data(fast_path: bool) -> None:
    assert parse(b"event: x\n\nid: 1\n\nretry: 5\n\n\n\n", fast_path=fast_path) == []


@both_paths
def test_blank_line_commits_id_even_without_data(fast_path: bool) -> None:
    decoder = SSEDecoder(fast_path=fast_path)
    assert decoder.feed(b"id: 7\n") == []
    assert decoder.last_event_id == ""  # not committed until the blank line
    assert not decoder.at_event_boundary
    assert decoder.feed(b"\n") == []
    assert decoder.last_event_id == "7"
    assert decoder.at_event_boundary
    assert decoder.feed(b"data: x\n\n") == [E(data="x", id="7")]


@both_paths
def test_last_event_id_persists_across_events(fast_path: bool) -> None:
    decoder = SSEDecoder(fast_path=fast_path)
    stream = b"id: 1\ndata: a\n\ndata: b\n\nevent: e\ndata: c\n\n"
    assert decoder.feed(stream) == [E(data="a", id="1"), E(data="b", id="1"), E("e", "c", "1")]
    assert decoder.last_event_id == "1"


@both_paths
def test_empty_id_resets_last_event_id(fast_path: bool) -> None:
    decoder = SSEDecoder(fast_path=fast_path)
    assert decoder.feed(b"id: 1\ndata: a\n\nid:\ndata: b\n\n") == [
        E(data="a", id="1"),
        E(data="b", id=""),
    ]
    assert decoder.last_event_id == ""


@both_paths
def test_event_type_and_data_reset_on_every_blank_line(fast_path: bool) -> None:
    stream = b"event: a\ndata: 1\n\ndata: 2\n\nevent: b\n\ndata: 3\n\n"
    assert parse(stream, fast_path=fast_path) == [
        E(event="a", data="1"),
        E(data="2"),
        E(data="3"),
    ]


@both_paths
def test_final_newline_of_data_removed_once(fast_path: bool) -> None:
    assert parse(b"data: a\ndata:\n\n", fast_path=fast_path) == [E(data="a\n")]
    assert parse(b"data:\ndata:\ndata:\n\n", fast_path=fast_path) == [E(data="\n\n")]


@both_paths
@pytest.mark.parametrize(
    "tail",
    [b"data: x", b"data: x\n", b"data: x\r", b"id: 2\n", b"event: e\n", b"retry: 9\n", b"foo\n"],
    ids=repr,
)
def test_unterminated_event_is_never_dispatched(fast_path: bool, tail: bytes) -> None:
    decoder = SSEDecoder(fast_path=fast_path)
    assert decoder.at_event_boundary
    assert decoder.feed(b"id: 1\ndata: a\n\n" + tail) == [E(data="a", id="1")]
    assert not decoder.at_event_boundary
    assert decoder.last_event_id == "1"
    assert decoder.feed(b"") == []
    assert not decoder.at_event_boundary


@both_paths
def test_event_boundary_after_each_complete_event(fast_path: bool) -> None:
    decoder = SSEDecoder(fast_path=fast_path)
    assert decoder.feed(b"data: a\n\n") == [E(data="a")]
    assert decoder.at_event_boundary
    decoder.feed(b"data: b\n\n: ping\n\n")
    assert decoder.at_event_boundary
    decoder.feed(b":partial comment")
    assert decoder.at_event_boundary  # a partial comment line is no event
    decoder.end()
    decoder.feed(b"\ndata: c")
    assert not decoder.at_event_boundary  # a partial field line is


@both_paths
@pytest.mark.parametrize(
    "tail", [b"", b": keep-alive", b":", b": x\n", b": x\r\n: y", b"\n\n", b": \xc3"], ids=repr
)
def test_end_returns_at_an_event_boundary(fast_path: bool, tail: bytes) -> None:
    # A complete answer followed by nothing, a blank line, or a comment (even an
    # unterminated one, even cut inside a character) ended where it should.
    decoder = SSEDecoder(fast_path=fast_path)
    assert decoder.feed(b"event: e\ndata: a\n\n" + tail) == [E(event="e", data="a")]
    assert decoder.at_event_boundary
    decoder.end()


@both_paths
@pytest.mark.parametrize(
    ("tail", "event", "received"),
    [
        (b"data: x", None, "data: x"),  # an unterminated field line
        (b"event: big\ndata: x\ndata: y\n", "big", "x\ny"),  # no blank line yet
        (b"event: big\ndata: x\n: comment", "big", "x\n: comment"),
        (b"id: 2\n", None, ""),  # any field counts, not only data
        (b"retry: 9\n", None, ""),
        (b"foo\n", None, ""),
        (b"data: x\r", None, "x"),  # a CR ends the line, not the event
        (b"\xc3", None, ""),  # a character cut at the start of a line
    ],
    ids=repr,
)
def test_end_raises_inside_an_event(
    fast_path: bool, tail: bytes, event: str | None, received: str
) -> None:
    decoder = SSEDecoder(fast_path=fast_path)
    assert decoder.feed(b"data: a\n\n" + tail) == [E(data="a")]
    assert not decoder.at_event_boundary
    with pytest.raises(StreamError) as caught:
        decoder.end()
    assert caught.value.event == event
    assert caught.value.received == received
    assert "ended in the middle of an event" in str(caught.value)


def test_end_excerpt_is_bounded() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: " + b"z" * 10_000 + b"\n")
    with pytest.raises(StreamError) as caught:
        decoder.end()
    assert 0 < len(caught.value.received) <= 256


@pytest.mark.parametrize(
    "chunk",
    [
        b"event: x\r\r\ndata: y\r\n\n",  # a lone CR, and as many CRs as LFs
        b"event: x\r\ndata: y\r\n\nevent: x\r\ndata: y\r\n\n",  # blank lines bare LF
        b"event: x\r\ndata: y\rz\r\n\r\n",  # a lone CR inside a value
        b"event: x\ndata: y\r\n\r\n",  # LF, then CRLF
    ],
    ids=repr,
)
def test_lines_ending_lf_then_crlf_in_one_stream(chunk: bytes) -> None:
    # The shape learned from LF lines never reads CRLF text as it is, nor the reverse.
    body = b"event: x\ndata: y\n\n" * 3 + chunk + b"event: x\r\ndata: y\r\n\r\n" * 3 + chunk
    expected = SSEDecoder(fast_path=False).feed(body)
    assert SSEDecoder().feed(body) == expected
    cuts = [57, len(body) - len(chunk)]
    assert per_chunk(body, cuts) == per_chunk(body, cuts, fast_path=False)


def test_nul_in_an_id_after_crlf_runs_in_the_same_chunk() -> None:
    # CRLF runs are read before the rest of the chunk is made LF: where the next NUL is
    # must be found again in that text.
    body = (
        b"id: 1\r\ndata: a\r\n\r\n" * 3
        + b"id: 22\ndata: b\n\n" * 30
        + b"id: a\x00b\ndata: c\n\n"
        + b"id: 3\ndata: d\n\n"
    )
    expected = SSEDecoder(fast_path=False).feed(body)
    assert [e.id for e in expected[-2:]] == ["22", "3"]
    assert SSEDecoder().feed(body) == expected


def test_event_is_an_immutable_value() -> None:
    event = E()
    assert (event.event, event.data, event.id, event.retry) == ("message", "", "", None)
    with pytest.raises(AttributeError):
        event.data = "x"  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(E("e", "d", "1", 5)), type=E) == E(
        "e", "d", "1", 5
    )


# --- common shapes the fast path takes, checked against the reference ---------------------


def typical_stream(count: int, *, ids: bool = True, space: bool = True, eol: str = "\n") -> bytes:
    sep = ": " if space else ":"
    parts = []
    for i in range(count):
        payload = f'{{"chat_session_id":"s-1","content_chunk":"word{i} ","finish_reason":null}}'
        lines = [f"id{sep}{i}"] if ids else []
        lines += [f"event{sep}message_chunk", f"data{sep}{payload}", ""]
        parts.append(eol.join(lines) + eol)
    return "".join(parts).encode()


@pytest.mark.parametrize(
    "stream",
    [
        typical_stream(300),
        typical_stream(300, ids=False),
        typical_stream(300, space=False),
        typical_stream(300, eol="\r\n"),
        typical_stream(300, eol="\r"),
        b"".join(b"data: %d\n\n" % i for i in range(300)),
        b"".join(b"id: %d\ndata: %d\n\n" % (i, i) for i in range(300)),
        typical_stream(100) + b": ping\n\n" + typical_stream(100, ids=False) + b"retry: 5\n\n",
    ],
    ids=["id-event-data", "event-data", "no-space", "crlf", "cr", "data", "id-data", "mixed"],
)
@pytest.mark.parametrize("chunk", [1, 7, 100, 1024, 65536])
def test_typical_streams_same_on_both_paths(stream: bytes, chunk: int) -> None:
    cuts = range(chunk, len(stream), chunk)
    expected = outcome(stream, fast_path=False)
    assert outcome(stream, cuts, fast_path=True) == expected
    assert outcome(stream, cuts, fast_path=False) == expected


def test_typical_stream_values() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(typical_stream(3))
    assert [(e.event, e.id) for e in events] == [("message_chunk", str(i)) for i in range(3)]
    assert msgspec.json.decode(events[2].data)["content_chunk"] == "word2 "
    assert decoder.last_event_id == "2"
    assert decoder.at_event_boundary


# --- feed_runs, the batch form the stream layer reads ------------------------------------


@pytest.mark.parametrize(
    "stream",
    [
        typical_stream(300),
        typical_stream(300, ids=False),
        typical_stream(300, space=False),
        typical_stream(300, eol="\r\n"),
        b"".join(b"data: %d\n\n" % i for i in range(300)),
        b"".join(b"id: %d\ndata: %d\n\n" % (i, i) for i in range(300)),
    ],
    ids=["id-event-data", "event-data", "no-space", "crlf", "data", "id-data"],
)
def test_a_whole_common_run_is_one_run(stream: bytes) -> None:
    decoder = SSEDecoder()
    runs = decoder.feed_runs(stream)
    reference = SSEDecoder(fast_path=False)
    events = reference.feed(stream)
    assert runs == [(events[0].event, [e.data for e in events])]
    assert len(events) == 300
    assert decoder.last_event_id == reference.last_event_id
    assert decoder.events_since_id == reference.events_since_id
    assert decoder.at_event_boundary


def shaped(count: int, order: str, *, sep: str = ": ", eol: str = "\n", ping: int = 0) -> bytes:
    """count events whose lines follow order (comma-separated names; ``data`` twice makes
    two data lines), a ``: ping`` comment and blank line after every ping-th."""
    parts = []
    for i in range(count):
        values = {"id": str(i), "event": "message_chunk", "retry": "3000", "data": f'{{"n":{i}}}'}
        lines = [f"{name}{sep}{values[name]}" for name in order.split(",")]
        parts.append("\n".join(lines) + "\n\n")
        if ping and i % ping == ping - 1 and i < count - 1:
            parts.append(": ping\n\n")
    return "".join(parts).replace("\n", eol).encode()


# Every wire form the shape matrix of benchmarks/ measures, and more.
FORMS = {
    "event,data": shaped(100, "event,data"),
    "id,event,data": shaped(100, "id,event,data"),
    "event,id,data": shaped(100, "event,id,data"),
    "data,event": shaped(100, "data,event"),
    "id,data": shaped(100, "id,data"),
    "id,data,event": shaped(100, "id,data,event"),
    "event,data,id": shaped(100, "event,data,id"),
    "data": shaped(100, "data"),
    "no-space": shaped(100, "id,event,data", sep=":"),
    "crlf": shaped(100, "event,data", eol="\r\n"),
    "cr": shaped(100, "event,id,data", eol="\r"),
    "pings": shaped(100, "event,data", ping=10),
    "retry-line": shaped(100, "retry,event,data"),
    "two-data-lines": shaped(100, "event,data,data"),
    "data-event-data": shaped(100, "data,event,data"),
    "completions": b"".join(b'data: {"n":%d}\n\n' % i for i in range(99)) + b"data: [DONE]\n\n",
    "nul-in-data": b"".join(b"data: \x00 %d\n\n" % i for i in range(100)),
}


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
@pytest.mark.parametrize("runs", [True, False], ids=["feed_runs", "feed"])
def test_every_form_is_read_in_one_pass(
    monkeypatch: pytest.MonkeyPatch, form: bytes, runs: bool
) -> None:
    # Structure, not speed: a chunk of whole events of one shape, whatever the shape,
    # never reaches the line-by-line reader (comment lines between events included).
    expected = SSEDecoder(fast_path=False).feed(form)
    assert len(expected) == 100

    def fail(*args: object) -> None:
        raise AssertionError("read line by line")

    monkeypatch.setattr(SSEDecoder, "_process_line", fail)
    decoder = SSEDecoder()
    if runs:
        flat = [(t, d) for t, datas in decoder.feed_runs(form) for d in datas]
        assert flat == [(e.event, e.data) for e in expected]
    else:
        assert decoder.feed(form) == expected
    assert decoder.last_event_id == expected[-1].id
    assert decoder.retry == expected[-1].retry


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
@pytest.mark.parametrize("chunk", [1, 7, 100, 4096])
def test_every_form_same_on_both_paths_whatever_the_chunking(form: bytes, chunk: int) -> None:
    cuts = range(chunk, len(form), chunk)
    expected = per_chunk(form, cuts, fast_path=False)
    assert per_chunk(form, cuts) == expected
    assert per_chunk(form, cuts, runs=True) == type_and_data(expected)


def test_feed_runs_keeps_order_across_types_and_paths() -> None:
    stream = (
        b"event: a\ndata: 1\n\n"
        b"event: b\ndata: 2\n\nevent: b\ndata: 3\n\n"
        b": ping\n\n"
        b"data: 4\ndata: 5\n\n"
        b"event: a\ndata: 6\n\n"
    )
    expected = [("a", ["1"]), ("b", ["2", "3"]), ("message", ["4\n5"]), ("a", ["6"])]
    assert SSEDecoder().feed_runs(stream) == expected
    assert SSEDecoder(fast_path=False).feed_runs(stream) == expected


def _interrupted(tail: bytes) -> bytes:
    return typical_stream(6) + tail + typical_stream(6)


# Streams whose runs of one shape and type are broken by something the uniform fast path
# must not take for one of its events; each is checked against the reference below.
INTERRUPTIONS = {
    "other-type": _interrupted(b"id: x\nevent: other\ndata: 1\n\n"),
    "type-prefix": _interrupted(b"id: x\nevent: message_chunkX\ndata: 1\n\n"),
    "no-event": _interrupted(b"id: x\ndata: 1\n\n"),
    "no-id": _interrupted(b"event: message_chunk\ndata: 1\n\n"),
    "comment": _interrupted(b": keep-alive\n\n"),
    "comment-in-event": _interrupted(b"id: x\nevent: message_chunk\n: c\ndata: 1\n\n"),
    "retry": _interrupted(b"retry: 10\n\n"),
    "two-data-lines": _interrupted(b"id: x\nevent: message_chunk\ndata: 1\ndata: 2\n\n"),
    "nul-in-id": _interrupted(b"id: 1\x002\nevent: message_chunk\ndata: 1\n\n"),
    "nul-in-data": _interrupted(b"id: 7\nevent: message_chunk\ndata: 1\x002\n\n"),
    "no-space": _interrupted(b"id:x\nevent:message_chunk\ndata:1\n\n"),
    "two-spaces": _interrupted(b"id: x\nevent: message_chunk\ndata:  1\n\n"),
    "mixed-separators": _interrupted(b"id: x\nevent:message_chunk\ndata: 1\n\n"),
    "empty-id": _interrupted(b"id:\nevent: message_chunk\ndata: 1\n\n"),
    "blank-line": _interrupted(b"\n"),
    "field-without-colon": _interrupted(b"id\nevent: message_chunk\ndata: 1\n\n"),
    "unknown-field": _interrupted(b"idx: 1\nevent: message_chunk\ndata: 1\n\n"),
    "junk-before-id": _interrupted(b"xid: 1\nevent: message_chunk\ndata: 1\n\n"),
    "unterminated": typical_stream(6) + b"id: 9\nevent: message_chunk\ndata: x",
    "cr": _interrupted(b"id: x\revent: message_chunk\rdata: 1\r\r"),
    "lone-cr-in-run": typical_stream(6) + b"id: x\nevent: message_chunk\ndata: 1\r\n",
    "bom-later": _interrupted("\ufeffid: x\nevent: message_chunk\ndata: 1\n\n".encode()),
    "event-only": _interrupted(b"event: message_chunk\n\n"),
    "data-shape-then-other": b"data: a\n\ndata: b\n\ndata:c\n\ndata: d\n\n",
    "one-then-other-type": b"event: a\ndata: 1\n\nevent: b\ndata: 2\n\n" * 3,
    "regex-type": b"event: a.c\ndata: 1\n\nevent: a.c\ndata: 2\n\nevent: abc\ndata: 3\n\n",
    "regex-type-ids": b"id: 1\nevent: (x)\ndata: 1\n\nid: 2\nevent: x\ndata: 2\n\n" * 2,
    "id-data-then-id-event-data": b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n" + typical_stream(5),
}


@pytest.mark.parametrize("stream", INTERRUPTIONS.values(), ids=INTERRUPTIONS.keys())
@pytest.mark.parametrize("chunk", [1, 7, 100, 1 << 20])
def test_interrupted_runs_same_on_every_path(stream: bytes, chunk: int) -> None:
    cuts = range(chunk, len(stream), chunk)
    expected = per_chunk(stream, cuts, fast_path=False)
    assert per_chunk(stream, cuts) == expected
    assert per_chunk(stream, cuts, runs=True) == type_and_data(expected)


@pytest.mark.parametrize("runs", [True, False], ids=["feed_runs", "feed"])
def test_uniform_run_ids_and_state(runs: bool) -> None:
    decoder = SSEDecoder()
    stream = b"".join(b"id: %d\ndata: {}\n\n" % i for i in range(5))
    if runs:
        assert decoder.feed_runs(stream) == [("message", ["{}"] * 5)]
    else:
        assert decoder.feed(stream) == [E(data="{}", id=str(i)) for i in range(5)]
    assert decoder.last_event_id == "4"
    assert decoder.at_event_boundary
    # Events without an id line keep the last one in force.
    assert decoder.feed(b"data: a\n\ndata: b\n\n") == [E(data="a", id="4"), E(data="b", id="4")]


def test_uniform_run_carries_the_retry_in_force() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"retry: 1500\n\n") == []
    stream = b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n"
    assert decoder.feed(stream) == [
        E(data="a", id="1", retry=1500),
        E(data="b", id="2", retry=1500),
    ]
    assert decoder.feed(typical_stream(2, ids=False)) == [
        E("message_chunk", e.data, "2", 1500) for e in SSEDecoder().feed(typical_stream(2))
    ]


def test_feed_runs_raises_at_the_limits_like_feed() -> None:
    stream = b"data: ok\n\n" * 50 + b"data: " + b"x" * 80 + b"\n\n" + b"data: ok\n\n" * 50
    for feed in (SSEDecoder.feed, SSEDecoder.feed_runs):
        with pytest.raises(StreamError):
            feed(SSEDecoder(max_line_size=64, max_event_size=64), stream)
    decoder = SSEDecoder(max_line_size=64, max_event_size=64)
    runs = decoder.feed_runs(b"data: 0123456789\n\n" * 1000)
    assert sum(len(datas) for _, datas in runs) == 1000


# --- limits ----------------------------------------------------------------------------


def test_default_limits_are_a_few_mebibytes() -> None:
    assert 1 << 20 <= DEFAULT_MAX_LINE_SIZE <= DEFAULT_MAX_EVENT_SIZE <= 64 << 20


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SSEDecoder(max_line_size=0)
    with pytest.raises(ValueError):
        SSEDecoder(max_event_size=-1)


@both_paths
def test_line_at_the_limit_is_accepted(fast_path: bool) -> None:
    decoder = SSEDecoder(max_line_size=16, fast_path=fast_path)
    line = b"data: " + b"x" * 10  # exactly 16 characters
    assert decoder.feed(line + b"\n\n") == [E(data="x" * 10)]


@both_paths
def test_line_over_the_limit_raises(fast_path: bool) -> None:
    decoder = SSEDecoder(max_line_size=16, fast_path=fast_path)
    with pytest.raises(StreamError) as caught:
        decoder.feed(b"event: big\ndata: " + b"x" * 11 + b"\n\n")
    assert caught.value.event == "big"
    assert caught.value.received.startswith("data: xxxx")
    assert "16" in str(caught.value)


@both_paths
def test_line_limit_raises_before_the_line_ends(fast_path: bool) -> None:
    decoder = SSEDecoder(max_line_size=100, fast_path=fast_path)
    decoder.feed(b"data: ")
    fed = 6
    with pytest.raises(StreamError) as caught:
        for _ in range(1000):
            fed += 7
            decoder.feed(b"y" * 7)
    assert 100 < fed <= 107  # raised by the chunk that crossed the limit
    assert caught.value.event is None
    assert caught.value.received.startswith("data: yyy")


@both_paths
def test_event_over_the_limit_raises(fast_path: bool) -> None:
    decoder = SSEDecoder(max_line_size=100, max_event_size=40, fast_path=fast_path)
    with pytest.raises(StreamError) as caught:
        decoder.feed(b"event: big\n" + b"data: 0123456789\n" * 5 + b"\n")
    assert caught.value.event == "big"
    assert caught.value.received.startswith("0123456789")  # the start of the data


@both_paths
def test_event_limit_raises_in_small_chunks(fast_path: bool) -> None:
    decoder = SSEDecoder(max_line_size=1000, max_event_size=500, fast_path=fast_path)
    stream = b"id: 1\nevent: big\n" + (b"data: " + b"z" * 100 + b"\n") * 100
    fed = 0
    with pytest.raises(StreamError) as caught:
        for start in range(0, len(stream), 3):
            fed = start + 3
            decoder.feed(stream[start:fed])
    assert 17 + 4 * 107 < fed < 17 + 5 * 107  # while reading the fifth data line
    assert caught.value.event == "big"
    assert caught.value.received.startswith("zzz")


@both_paths
def test_event_limit_counts_the_line_being_read(fast_path: bool) -> None:
    decoder = SSEDecoder(max_line_size=1000, max_event_size=50, fast_path=fast_path)
    decoder.feed(b"data: " + b"a" * 40 + b"\n")  # 41 characters of data
    with pytest.raises(StreamError):
        decoder.feed(b"data: " + b"b" * 20)  # no line end yet


@both_paths
def test_many_small_events_never_reach_the_event_limit(fast_path: bool) -> None:
    decoder = SSEDecoder(max_line_size=64, max_event_size=64, fast_path=fast_path)
    events = decoder.feed(b"data: 0123456789\n\n" * 1000)
    assert len(events) == 1000


@both_paths
def test_oversized_event_in_a_run_of_small_ones_raises(fast_path: bool) -> None:
    decoder = SSEDecoder(max_line_size=64, max_event_size=64, fast_path=fast_path)
    stream = b"data: ok\n\n" * 50 + b"data: " + b"x" * 80 + b"\n\n" + b"data: ok\n\n" * 50
    with pytest.raises(StreamError):
        decoder.feed(stream)


def test_error_excerpt_is_bounded() -> None:
    decoder = SSEDecoder(max_line_size=100_000)
    with pytest.raises(StreamError) as caught:
        decoder.feed(b"data: " + b"q" * 200_000)
    assert len(caught.value.received) < 1000
    assert len(str(caught.value)) < 1500


# --- linear time (structure only; speed is measured in benchmarks/) ---------------------


@both_paths
def test_one_mebibyte_line_fed_in_kibibyte_chunks(fast_path: bool) -> None:
    size = 1 << 20
    stream = b"event: big\ndata: " + b"x" * size + b"\n\n"
    decoder = SSEDecoder(fast_path=fast_path)
    events: list[ServerSentEvent] = []
    for start in range(0, len(stream), 1024):
        events += decoder.feed(stream[start : start + 1024])
    assert len(events) == 1
    assert events[0].event == "big"
    assert len(events[0].data) == size
    assert decoder.at_event_boundary


@both_paths
def test_one_mebibyte_event_of_many_lines_in_kibibyte_chunks(fast_path: bool) -> None:
    line = b"data: " + b"y" * 1017 + b"\n"  # 1024 bytes a line
    stream = line * 1024 + b"\n"
    events = parse(stream, fast_path=fast_path, cuts=range(1000, len(stream), 1000))
    assert len(events) == 1
    assert events[0].data == "\n".join(["y" * 1017] * 1024)


# --- the one-pass reader against what would fool a split -------------------------------
#
# The reader splits a run at the text between one event's data and the next one's and
# checks the result rather than trusting it. Each body below hides, inside a run of
# well-formed events, one that a split alone would read wrongly; the reader must give
# what the line-by-line reference gives, whole and cut anywhere.

_NORMAL = {
    "event,data": "event: message_chunk\ndata: {n}\n\n",
    "id,event,data": "id: {n}\nevent: message_chunk\ndata: {n}\n\n",
    "data,event": "data: {n}\nevent: message_chunk\n\n",
    "event,data,id": "event: message_chunk\ndata: {n}\nid: {n}\n\n",
    "two data lines": "event: message_chunk\ndata: {n}\ndata: {n}\n\n",
    "no space": "event:message_chunk\ndata:{n}\n\n",
    "two data lines, no space": "event:message_chunk\ndata:{n}\ndata:{n}\n\n",
    "data,event,data": "data: {n}\nevent: message_chunk\ndata: {n}\n\n",
    "data,data": "data: {n}\ndata: {n}\n\n",
}
_ODD_ONES = {
    "an id-only event between two": "id: x9\n\n",
    "an event with no data": "event: message_chunk\n\n",
    "one more data line": "event: message_chunk\ndata: a\ndata: b\ndata: c\n\n",
    "one data line fewer": "event: message_chunk\ndata: a\n\n",
    "data lines apart": "data: a\nevent: message_chunk\ndata: b\ndata: c\n\n",
    "a value that starts with a space": "event: message_chunk\ndata:  spaced\n\n",
    "no space, then a space": "event:message_chunk\ndata: spaced\n\n",
    "no space, then a space on a second data line": "event:message_chunk\ndata:a\ndata: b\n\n",
    "another type": "event: records_cited\ndata: {}\n\n",
    "an empty type": "event:\ndata: empty\n\n",
    "a ping": ": ping\n\n",
    "blank lines": "\n\n\n",
    "a comment inside an event": "event: message_chunk\n: hi\ndata: c\n\n",
    "an unknown field": "event: message_chunk\nfoo: bar\ndata: u\n\n",
    "a NUL in an id": "id: a\x00b\nevent: message_chunk\ndata: nul\n\n",
    "a retry line": "retry: 5\nevent: message_chunk\ndata: r\n\n",
    "the separator's text as data": "data: event: message_chunk\n\n",
    "a blank line, then data lines' text as data": "\ndata: data: q\ndata: data: q\n\n",
    "an id line between data lines": "data: a\nid: 3\ndata: b\n\n",
    "a field without a colon": "event: message_chunk\ndata\n\n",
}


@pytest.mark.parametrize("odd", _ODD_ONES.values(), ids=list(_ODD_ONES))
@pytest.mark.parametrize("normal", _NORMAL.values(), ids=list(_NORMAL))
@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_runs_with_one_odd_event_read_as_the_reference_does(
    normal: str, odd: str, eol: str
) -> None:
    before = "".join(normal.format(n=n) for n in range(6))
    after = "".join(normal.format(n=n) for n in range(6, 12))
    stream = (before + odd + after + odd + odd + before).replace("\n", eol).encode()
    cuts = [len(before), len(before) + len(odd), len(stream) // 2, len(stream) - 7]
    for chunking in ([], cuts, [len(stream) - len(before)]):
        expected = per_chunk(stream, chunking, fast_path=False)
        assert per_chunk(stream, chunking) == expected
        assert per_chunk(stream, chunking, runs=True) == type_and_data(expected)


def shapes_learned(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The shapes a decoder learns from now on (calls of the one-pass reader's learner)."""
    learned: list[object] = []
    shape_at = sse._shape_at

    def counting(*args: Any) -> Any:
        learned.append(args)
        return shape_at(*args)

    monkeypatch.setattr(sse, "_shape_at", counting)
    return learned


def test_types_that_change_every_event_are_read_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = "".join(f"id: {n}\nevent: {'ab'[n % 2]}\ndata: {n}\n\n" for n in range(400)).encode()
    expected = per_chunk(stream, [100, 700], fast_path=False)
    assert per_chunk(stream, [100, 700]) == expected
    assert per_chunk(stream, [100, 700], runs=True) == type_and_data(expected)
    # Structure, not speed: after a few events the reader stops learning a shape per
    # type and reads the type from each event.
    learned = shapes_learned(monkeypatch)
    assert len([d for _, datas in SSEDecoder().feed_runs(stream) for d in datas]) == 400
    assert len(learned) <= sse._TYPE_CHANGES + 2


@pytest.mark.parametrize(
    "make",
    [
        lambda n: f"id: {n}\ndata: {n}\n\n" if n % 2 else f"data: {n}\n\n",
        lambda n: f"retry: {1000 + n}\ndata: {n}\n\n",
        lambda n: f"id: {n}\ndata: a\x00{n}\n\n",
        lambda n: f"event: x\n: note\ndata: {n}\n\n",
    ],
    ids=["id on every other event", "a new retry value each event", "NUL", "comment inside"],
)
def test_a_layout_that_keeps_changing_is_soon_read_line_by_line(
    monkeypatch: pytest.MonkeyPatch, make: Any
) -> None:
    # Structure, not speed: learning a shape per event would cost more than reading the
    # events line by line, so after a few the reader stops trying.
    stream = "".join(map(make, range(2000))).encode()
    expected = per_chunk(stream, [1000, 20000], fast_path=False)
    assert per_chunk(stream, [1000, 20000]) == expected
    learned = shapes_learned(monkeypatch)
    decoder = SSEDecoder()
    assert len(decoder.feed(stream)) == 2000
    assert len(learned) <= sse._MISSES


# --- properties ------------------------------------------------------------------------

_VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "x",
            "1500",
            "007",
            "message_chunk",
            '{"content_chunk":"hi ","finish_reason":null}',
            "a\x00b",
            "é€😀",
            "\ufeff",
            ": ",
            " x",
            "data: x",
            "event: message_chunk",
            "id: 7",
        ]
    ),
    st.text(max_size=6),
)
_LINES = st.one_of(
    st.builds(
        lambda name, sep, value: name + sep + value,
        st.sampled_from(["data", "event", "id", "retry", "foo", "Data", "", ":"]),
        st.sampled_from([":", ": ", ":  ", ""]),
        _VALUES,
    ),
    st.sampled_from(["", "", ":", ": keep-alive"]),
)
_EOL = st.sampled_from(["\n", "\n", "\r", "\r\n"])


@st.composite
def _common_run(draw: st.DrawFn) -> str:
    # A run of events in the shapes the fast path takes, with awkward values.
    fields = draw(st.sampled_from([("id", "event", "data"), ("id", "data"), ("event", "data")]))
    sep = draw(st.sampled_from([": ", ":"]))
    events = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            fields = draw(st.sampled_from([("data",), ("id", "event", "data")]))
        lines = [name + sep + draw(_VALUES) for name in fields]
        events.append("\n".join(lines) + "\n\n")
    return "".join(events)


@st.composite
def _uniform_run(draw: st.DrawFn) -> str:
    # Two or more events of one common shape and one type, as the uniform fast path
    # takes them whole (or must refuse them: a value may break the shape).
    fields = draw(
        st.sampled_from([("id", "event", "data"), ("id", "data"), ("event", "data"), ("data",)])
    )
    sep = draw(st.sampled_from([": ", ":"]))
    values = {"event": draw(_VALUES)}
    events = []
    for _ in range(draw(st.integers(2, 5))):
        values["id"] = draw(_VALUES)
        values["data"] = draw(_VALUES)
        events.append("".join(f"{name}{sep}{values[name]}\n" for name in fields) + "\n")
    return "".join(events)


def _layout(draw: st.DrawFn, most: int) -> tuple[list[str], list[str], str]:
    # A random event layout: up to most field names (data the likeliest), a separator for
    # each line, and the line end.
    names = draw(
        st.lists(
            st.sampled_from(["id", "event", "retry", "data", "data"]), min_size=1, max_size=most
        )
    )
    return names, [draw(st.sampled_from([": ", ":"])) for _ in names], draw(_EOL)


@st.composite
def _shaped_run(draw: st.DrawFn) -> str:
    # Events of one random shape: any order of id, event, retry and data lines (data
    # possibly on several lines, together or apart), either separator on each line,
    # comment and blank lines between events, and one line ending throughout. The
    # one-pass reader takes such runs, or must refuse them where a value breaks the shape.
    names, seps, eol = _layout(draw, 5)
    between = st.sampled_from(["", "", "", ": ping\n", "\n", ":\n\n", ": a\n: b\n\n"])
    events = []
    for _ in range(draw(st.integers(1, 5))):
        lines = [name + sep + draw(_VALUES) for name, sep in zip(names, seps, strict=True)]
        events.append(draw(between) + "\n".join(lines) + "\n\n")
    return "".join(events).replace("\n", eol)


@st.composite
def _long_run(draw: st.DrawFn) -> str:
    # Many events of one random shape, as a server writes them: mostly one type, now and
    # then another (or a new one each time), pings now and then, awkward values seldom.
    # The reader learns such runs once and must hold what it learned to them alone.
    names, seps, eol = _layout(draw, 4)
    types = draw(st.sampled_from([["a"], ["a", "a", "a", "b"], ["a", "b"], ["a", "", "message"]]))
    between = st.sampled_from(["", "", "", "", "", ": ping\n", "\n"])
    values = st.one_of(st.sampled_from(['{"x":1}', "[DONE]", "7"]), st.just("v"), _VALUES)
    events = []
    for index in range(draw(st.integers(3, 30))):
        lines = []
        for name, sep in zip(names, seps, strict=True):
            value = draw(st.sampled_from(types)) if name == "event" else str(index)
            if name == "data" or draw(st.integers(0, 9)) == 0:
                value = draw(values)
            lines.append(name + sep + value)
        events.append(draw(between) + "\n".join(lines) + "\n\n")
    return "".join(events).replace("\n", eol)


_FRAGMENTS = st.one_of(
    st.builds(lambda line, eol: (line + eol).encode(), _LINES, _EOL),
    _common_run().map(str.encode),
    _uniform_run().map(str.encode),
    _shaped_run().map(str.encode),
    _shaped_run().map(str.encode),
    _long_run().map(str.encode),
    st.sampled_from(
        [BOM, b"\xff", b"\xe2\x82", b"\xf0\x9f", b"\r", b"\n", b"\x00", b"retry: 7\n\n"]
    ),
    st.binary(max_size=4),
)


@st.composite
def streams_and_cuts(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    prefix = draw(st.sampled_from([b"", b"", BOM, BOM + BOM]))
    fragments = draw(st.lists(_FRAGMENTS, max_size=25))
    stream = prefix + b"".join(fragments)
    # Cut anywhere, or only where fragments meet (then chunks often hold whole runs).
    ends = list(accumulate(map(len, fragments), initial=len(prefix)))
    anywhere = st.integers(0, len(stream))
    cuts = draw(st.lists(anywhere, max_size=12) | st.lists(st.sampled_from(ends), max_size=12))
    return stream, sorted(cuts)


@st.composite
def uniform_streams_and_cuts(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    # Runs the uniform fast path takes whole, among things that set state or break runs,
    # cut mostly where they meet: the uniform path then starts chunks with state in force.
    others = st.sampled_from(
        [b"", b"retry: 7\n\n", b"id: 5\n\n", b"id\n\n", b": c\n", b"data: x\n\n", b"\n", b"id: 1"]
    )
    runs = st.one_of(_uniform_run(), _shaped_run(), _long_run()).map(str.encode)
    fragments = draw(st.lists(st.one_of(runs, others), max_size=8))
    stream = b"".join(fragments)
    ends = list(accumulate(map(len, fragments), initial=0))
    cuts = draw(st.lists(st.sampled_from(ends) | st.integers(0, len(stream)), max_size=8))
    return stream, sorted(cuts)


SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(streams_and_cuts())
def test_any_chunking_gives_the_same_result(case: tuple[bytes, list[int]]) -> None:
    stream, cuts = case
    for fast_path in (True, False):
        whole = outcome(stream, fast_path=fast_path)
        assert outcome(stream, cuts, fast_path=fast_path) == whole
    assert outcome(stream, bytewise(stream), fast_path=False) == outcome(stream, fast_path=False)


@SETTINGS
@given(streams_and_cuts())
def test_fast_paths_match_the_reference(case: tuple[bytes, list[int]]) -> None:
    # Chunk by chunk, and whole: the same events from feed, the same types and data from
    # feed_runs, and the same state after each chunk.
    stream, cuts = case
    for chunking in (cuts, []):
        expected = per_chunk(stream, chunking, fast_path=False)
        assert per_chunk(stream, chunking) == expected
        assert per_chunk(stream, chunking, runs=True) == type_and_data(expected)


@settings(max_examples=100, deadline=None)
@given(uniform_streams_and_cuts())
def test_uniform_runs_match_the_reference(case: tuple[bytes, list[int]]) -> None:
    stream, cuts = case
    expected = per_chunk(stream, cuts, fast_path=False)
    assert per_chunk(stream, cuts) == expected
    assert per_chunk(stream, cuts, runs=True) == type_and_data(expected)


@settings(max_examples=200, deadline=None)
@given(streams_and_cuts(), st.integers(1, 40), st.integers(1, 60))
def test_limits_hit_whatever_the_chunking_and_path(
    case: tuple[bytes, list[int]], max_line: int, max_event: int
) -> None:
    stream, cuts = case
    expected = outcome(stream, fast_path=False, max_line_size=max_line, max_event_size=max_event)
    for fast_path in (False, True):
        got = outcome(
            stream, cuts, fast_path=fast_path, max_line_size=max_line, max_event_size=max_event
        )
        assert got == expected
    by_chunk = per_chunk(
        stream, cuts, fast_path=False, max_line_size=max_line, max_event_size=max_event
    )
    runs = per_chunk(stream, cuts, runs=True, max_line_size=max_line, max_event_size=max_event)
    assert runs == type_and_data(by_chunk)


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_reconnection_starts_from_the_last_event_id_it_sent(fast_path: bool) -> None:
    decoder = SSEDecoder(fast_path=fast_path, last_event_id="7")
    assert decoder.last_event_id == "7"
    body = b"event: message_chunk\ndata: a\n\n" * 3
    assert decoder.feed_runs(body) == [("message_chunk", ["a", "a", "a"])]
    assert decoder.last_event_id == "7"
    events = decoder.feed(b"data: b\n\nid: 8\ndata: c\n\ndata: d\n\nid\ndata: e\n\n")
    assert [(e.data, e.id) for e in events] == [("b", "7"), ("c", "8"), ("d", "8"), ("e", "")]
    assert decoder.last_event_id == ""


def _large_streams() -> dict[str, bytes]:
    # Chunks above the decoder's 64 KiB piece size, cut in every way it can cut them.
    chunk = 'event: message_chunk\ndata: {"content_chunk":"%s","n":%d}\n\n'
    lf = "".join(chunk % ("word", n) for n in range(3000)).encode()
    wide = "".join(chunk % ("é😀" * (n % 7), n) for n in range(3000)).encode()
    long_line = ("data: " + "é" * 150_000 + "\n\n").encode()  # no blank line in reach
    cr_at_cut = b"data: " + b"x" * (65536 - 7) + b"\r\n\r\ndata: y\n\n"  # CRLF on the cut
    return {
        "lf": lf,
        "crlf": lf.replace(b"\n", b"\r\n"),
        "multibyte": wide,
        "long-line": long_line + lf[:70_000],
        "cr-at-cut": cr_at_cut * 3,
        "ids-retry": b"".join(b"id: %d\nretry: %d\ndata: %d\n\n" % (n, n, n) for n in range(9000)),
    }


@pytest.mark.parametrize("name", sorted(_large_streams()))
def test_chunks_larger_than_a_piece_decode_as_small_ones(name: str) -> None:
    body = _large_streams()[name]
    assert len(body) > 2 * 65536
    reference = SSEDecoder(fast_path=False)
    expected = feed_in(reference, body, range(1000, len(body), 1000))
    assert expected
    whole = SSEDecoder()
    assert whole.feed(body) == expected
    by_runs = SSEDecoder()
    runs = by_runs.feed_runs(body[:100_000]) + by_runs.feed_runs(body[100_000:])
    assert [(t, d) for t, datas in runs for d in datas] == [(e.event, e.data) for e in expected]
    for decoder in (whole, by_runs):
        assert decoder.last_event_id == reference.last_event_id
        assert decoder.retry == reference.retry
        assert decoder.at_event_boundary == reference.at_event_boundary


def _large_event_stream(seed: int) -> bytes:
    # Mostly runs of large events of one shape (what the large-event fast path reads),
    # broken up by everything that must stop or refuse it.
    rng = random.Random(seed)
    big = ["x", "é", "😀", " lead", "a:b", "\x00"]

    def value() -> str:
        return "".join(rng.choice(big) for _ in range(rng.choice([1, 5, 3000, 9000])))

    templates = [
        lambda: f"event: message_chunk\ndata: {value()}\n\n",
        lambda: f"event: message_chunk\ndata: {value()}\n\n",
        lambda: f"data: {value()}\n\n",
        lambda: f"event:message_chunk\ndata:{value()}\n\n",
        lambda: f"event: records_cited\ndata: {value()}\n\n",
        lambda: f"id: {rng.randint(1, 99)}\nevent: message_chunk\ndata: {value()}\n\n",
        lambda: f"event: message_chunk\ndata: {value()}\ndata: {value()}\n\n",
        lambda: f": comment {value()}\n",
        lambda: f"retry: {rng.randint(1, 9)}\n",
        lambda: f"event: message_chunk\r\ndata: {value()}\r\n\r\n",
        lambda: f"event: message_chunk\ndata: {value()}\n\n" * rng.randint(2, 6),
    ]
    shapes = [
        "event: message_chunk\ndata: {}\n\n",
        "event:message_chunk\ndata:{}\n\n",  # a value starting with a space is not one
        "data: {}\n\n",
        "data:{}\n\n",
        "event: message_chunk\ndata: {}\ndata: {}\n\n",
    ]
    for shape in shapes:  # runs in which each event has its own value

        def run(shape: str = shape) -> str:
            return "".join(
                rng.choice([shape, rng.choice(shapes)]).format(value(), value())
                for _ in range(rng.randint(2, 6))
            )

        templates.append(run)
    return "".join(rng.choice(templates)() for _ in range(40)).encode()


@pytest.mark.parametrize("seed", range(40))
def test_large_events_decode_alike_on_every_path(seed: int) -> None:
    body = _large_event_stream(seed)
    rng = random.Random(seed)
    reference = SSEDecoder(fast_path=False)
    expected = feed_in(reference, body, range(4096, len(body), 4096))
    for size in (len(body), 65536 + rng.randint(1, 999), rng.randint(2000, 30000)):
        cuts = range(size, len(body), size)
        fast = SSEDecoder()
        assert feed_in(fast, body, cuts) == expected
        by_runs = SSEDecoder()
        start, flat = 0, []
        for cut in [*cuts, len(body)]:
            flat += [(t, d) for t, datas in by_runs.feed_runs(body[start:cut]) for d in datas]
            start = cut
        assert flat == [(e.event, e.data) for e in expected]
        for decoder in (fast, by_runs):
            assert decoder.last_event_id == reference.last_event_id
            assert decoder.retry == reference.retry


@both_paths
def test_a_large_run_is_not_split_at_a_line_that_only_looks_like_an_event_start(
    fast_path: bool,
) -> None:
    # The second event's data line is followed by a field line, not a blank one: an
    # unknown field ("xevent") that ends in text shaped like the next event's start.
    big = "é" * 3000
    body = (
        f"event: message_chunk\ndata: {big}\n\n"
        f"event: message_chunk\ndata: a\nxevent: message_chunk\ndata: b\n\n"
        f"event: message_chunk\ndata: {big}\n\n"
    ).encode()
    events = SSEDecoder(fast_path=fast_path).feed(body)
    assert [e.data for e in events] == [big, "a\nb", big]


def test_event_runs_groups_events_as_feed_runs_does() -> None:
    body = b"event: a\ndata: 1\n\nevent: a\ndata: 2\n\ndata: 3\n\nevent: b\ndata: 4\n\n"
    assert event_runs(SSEDecoder().feed(body)) == SSEDecoder().feed_runs(body)
    head, tail = body[:36], body[36:]
    decoder = SSEDecoder()
    merged = event_runs(decoder.feed(head), *decoder.feed_runs(tail))
    assert merged == [("a", ["1", "2"]), ("message", ["3"]), ("b", ["4"])]


@pytest.mark.parametrize(
    ("body", "since"),
    [
        (b"id: 1\ndata: a\n\n", 0),
        (b"id: 1\ndata: a\n\ndata: b\n\ndata: c\n\n", 2),  # b and c report id 1 too
        (b"data: a\n\nid: 2\n\n", 0),  # an id without an event counts as well
        (b"id: 1\ndata: a\n\nid: 2\x00\ndata: b\n\n", 1),  # an id with a NUL is no id
        (b"id: 1\ndata: a\n\nid:\ndata: b\n\n", 0),  # an empty id is an id (it resets)
        (b"data: a\n\ndata: b\n\n", 2),
        (b"id: 1\ndata: a\n\n: ping\n\n\n", 0),  # pings and blank lines dispatch nothing
    ],
)
def test_events_since_id_counts_the_events_after_the_last_id_line(body: bytes, since: int) -> None:
    for fast_path in (True, False):
        for cuts in ([], bytewise(body)):
            decoder = SSEDecoder(fast_path=fast_path)
            feed_in(decoder, body, cuts)
            assert decoder.events_since_id == since, (fast_path, cuts)
    long_run = b"".join(b"id: %d\ndata: x\n\n" % i for i in range(50)) + b"data: y\n\n" * 40
    decoder = SSEDecoder()
    decoder.feed_runs(long_run)
    assert decoder.events_since_id == 40
