"""The wire shapes of the shape matrix: one body builder for the server, the harness
and the sans-IO decoder benchmark, so all three measure the same bytes.

Each shape is a legal ``text/event-stream`` body that a real server might send for the
same answer: ``n`` ``message_chunk`` events (SPEC §1.4 data), laid out differently
(field order, the space after the colon, line ends, pings, ``retry``, data split over
lines), then the final chunk and one ``records_cited``, laid out the same way. The
``completions`` shape is the Chat Completions wire (SPEC §1.8): data-only chunks, then
``data: [DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

SESSION_ID = "00000000-0000-0000-0000-000000005eed"
WORDS = ("alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta ", "eta ", "theta ")
COMPLETION_CHUNK = (
    '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    '"choices":[{"index":0,"delta":{"content":"tok"},"finish_reason":null}]}'
)
COMPLETION_LAST = (
    '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
)


def chunk_data(content: str, finish_reason: str | None = None) -> str:
    return json.dumps(
        {"chat_session_id": SESSION_ID, "content_chunk": content, "finish_reason": finish_reason},
        separators=(",", ":"),
    )


def cited_data() -> str:
    record = {
        "type": "documentation",
        "url": "https://docs.example.com/page/0",
        "title": "Page 0",
        "description": "A cited page.",
        "breadcrumbs": ["Docs", "Guides", "Page 0"],
    }
    citations = [{"number": 1, "record": record, "hit_url": "https://docs.example.com/#hit"}]
    return json.dumps({"citations": citations}, separators=(",", ":"))


def _fields(order: str, sep: str = ": ") -> Callable[[int, str, str], str]:
    # An event whose lines follow ``order`` (comma-separated field names).
    names = order.split(",")

    def event(i: int, event_type: str, data: str) -> str:
        values = {"id": str(i + 1), "event": event_type, "data": data, "retry": "3000"}
        return "".join(f"{name}{sep}{values[name]}\n" for name in names) + "\n"

    return event


def _two_data_lines(i: int, event_type: str, data: str) -> str:
    # The JSON cut after its first comma, so each line is half of it.
    cut = data.index(",") + 1
    return f"event: {event_type}\ndata: {data[:cut]}\ndata: {data[cut:]}\n\n"


# name -> (how one event is written, what the body is made of, in words for RESULTS.md)
SHAPES: dict[str, tuple[Callable[[int, str, str], str], str]] = {
    "event,data": (_fields("event,data"), "`event: message_chunk` then `data: {...}`, LF"),
    "id,event,data": (_fields("id,event,data"), "`id: <n>`, `event:`, `data:`, LF"),
    "event,id,data": (_fields("event,id,data"), "`event:`, `id: <n>`, `data:`, LF"),
    "data,event": (_fields("data,event"), "`data:` before `event:`, LF"),
    "id,data,event": (_fields("id,data,event"), "`id:`, `data:`, `event:`, LF"),
    "event,data,id": (_fields("event,data,id"), "`event:`, `data:`, `id:` last, LF"),
    "no space": (_fields("event,data", ":"), "`event:message_chunk` / `data:{...}`, no space"),
    "CRLF": (_fields("event,data"), "`event,data` with every line ending CRLF"),
    "CR": (_fields("event,data"), "`event,data` with every line ending CR alone"),
    "pings": (
        _fields("event,data"),
        "`event,data`, and a `: ping` comment line + blank line every 10 events",
    ),
    "retry": (
        _fields("retry,event,data"),
        "`retry: 3000` as the first line of every event, then `event,data`",
    ),
    "two data lines": (
        _two_data_lines,
        "`event:`, then the JSON cut after its first comma over two `data:` lines",
    ),
}


def event_body(shape: str, n: int) -> list[bytes]:
    """The body of ``shape`` as its events, each one write's worth of bytes."""
    if shape == "completions":
        chunks = [f"data: {COMPLETION_CHUNK}\n\n" for _ in range(n)]
        chunks += [f"data: {COMPLETION_LAST}\n\n", "data: [DONE]\n\n"]
        return [c.encode() for c in chunks]
    write, _ = SHAPES[shape]
    events = [write(i, "message_chunk", chunk_data(WORDS[i % len(WORDS)])) for i in range(n)]
    events.append(write(n, "message_chunk", chunk_data("", "stop")))
    events.append(write(n + 1, "records_cited", cited_data()))
    if shape == "pings":
        events = [e if i % 10 != 9 else e + ": ping\n\n" for i, e in enumerate(events)]
    elif shape == "CRLF":
        events = [e.replace("\n", "\r\n") for e in events]
    elif shape == "CR":
        events = [e.replace("\n", "\r") for e in events]
    return [e.encode() for e in events]


def terminator(shape: str) -> bytes:
    """What ends an event (a blank line) in this shape's bytes."""
    return {"CRLF": b"\r\n\r\n", "CR": b"\r\r"}.get(shape, b"\n\n")


ALL_SHAPES = [*SHAPES, "completions"]
