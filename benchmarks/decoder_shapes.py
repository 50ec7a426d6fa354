"""CPU per event of the sans-IO decoder alone, for every wire shape of the matrix.

    .venv/bin/python benchmarks/decoder_shapes.py [--events 20000] [--repeats 7]
        [--chunk 65536] [--compare path/to/other/sse.py] [--json]

No network and no JSON decoding: each shape's body (``shapes.py``, the bytes the
server sends) is cut in ``--chunk``-byte chunks and fed to ``SSEDecoder.feed_runs``
(what the stream layer calls) and to ``SSEDecoder.feed``, plus one event per chunk
(a server flushing per token). Reported: nanoseconds of process CPU time per event,
the median of ``--repeats`` interleaved rounds, so a regression in one shape shows here
without the network. ``--compare`` measures another copy of ``sse.py`` beside it
(for example the previous commit's, from ``git show HEAD~1:chatsdk/sse.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from shapes import ALL_SHAPES, event_body  # noqa: E402


def load(path: str | None) -> ModuleType:
    if path is None:
        import chatsdk.sse

        return chatsdk.sse
    spec = importlib.util.spec_from_file_location("other_sse", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chunks_of(events: list[bytes], size: int) -> list[bytes]:
    body = b"".join(events)
    return [body[i : i + size] for i in range(0, len(body), size)]


def ns_per_event(sse: ModuleType, chunks: list[bytes], expected: int, how: str) -> float:
    decoder = sse.SSEDecoder()
    start = time.process_time_ns()
    count = 0
    if how == "feed":
        for chunk in chunks:
            count += len(decoder.feed(chunk))
    else:
        for chunk in chunks:
            for _, datas in decoder.feed_runs(chunk):
                count += len(datas)
    elapsed = time.process_time_ns() - start
    if count != expected:
        raise AssertionError(f"{how}: {count} events, expected {expected}")
    return elapsed / expected


def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    modules = {"chatsdk": load(None)}
    if args.compare:
        modules["compared"] = load(args.compare)
    bodies = {}
    for shape in ALL_SHAPES:
        events = event_body(shape, args.events)
        # (pings are not events; [DONE] is one, as the decoder sees it)
        bodies[shape] = (chunks_of(events, args.chunk), events, len(events))
    runs: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for shape, (chunks, events, expected) in bodies.items():
            for name, module in modules.items():
                for how, pieces in (
                    ("feed_runs", chunks),
                    ("feed", chunks),
                    ("per-token feed_runs", events),
                ):
                    key = f"{shape}|{name}|{how}"
                    value = ns_per_event(module, pieces, expected, how.split()[-1])
                    runs.setdefault(key, []).append(value)
    table: dict[str, dict[str, float]] = {}
    for key, values in runs.items():
        shape, name, how = key.split("|")
        table.setdefault(shape, {})[f"{name} {how}"] = statistics.median(values)
    return table


def measure_spec(spec: dict[str, int]) -> dict[str, dict[str, float]]:
    """measure() for the harness (worker kind ``decoder-shapes``)."""
    args = argparse.Namespace(
        events=spec["events"], repeats=spec["repeats"], chunk=65536, compare=None
    )
    return measure(args)


def markdown(table: dict[str, dict[str, float]]) -> str:
    columns = list(next(iter(table.values())))
    lines = [
        "| shape | " + " | ".join(f"{c} ns/event" for c in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    worst = sorted(table, key=lambda s: -table[s][columns[0]])
    for shape in worst:
        cells = " | ".join(f"{table[shape][c]:.0f}" for c in columns)
        lines.append(f"| {shape} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--compare", help="another sse.py to measure beside chatsdk's")
    parser.add_argument("--json", action="store_true", help="print JSON, not a table")
    args = parser.parse_args(argv)
    table = measure(args)
    print(json.dumps(table) if args.json else markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
