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

``--budget`` adds, for the completions body, the CPU per event of each stage a stream
runs after aiohttp hands over the bytes, each measured alone: the SSE decoder, msgspec
typing the chunks, the fold into the result, and ``async for`` handing each event out
(an async generator, as ``EventStream`` uses); then all of them together, sans-IO.
Set beside the raw floor (aiohttp reading the bytes), they say what share of the floor
the completions row can reach at best.
"""

from __future__ import annotations

import argparse
import asyncio
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


BUDGET_KEY = "completions budget"


def budget(events: int, repeats: int, chunk: int = 65536) -> dict[str, float]:
    """CPU ns per event of the completions row sans-IO, one stage added at a time (as a
    stream runs them, so each stage finds the previous one's output in the cache):
    median of interleaved rounds; ``... min`` keys: the least of them."""
    import msgspec

    from chatsdk.completions import _CompletionsWire
    from chatsdk.models import ChatCompletionChunk
    from chatsdk.sse import SSEDecoder

    chunks = chunks_of(event_body("completions", events), chunk)
    typed = msgspec.json.Decoder(ChatCompletionChunk).decode
    done = "[DONE]"

    def sse() -> int:
        decoder, count = SSEDecoder(), 0
        for c in chunks:
            for _, datas in decoder.feed_runs(c):
                count += len(datas) - (done in datas)
        return count

    def with_msgspec() -> int:
        decoder, count = SSEDecoder(), 0
        for c in chunks:
            for _, datas in decoder.feed_runs(c):
                count += len(list(map(typed, [d for d in datas if d != done])))
        return count

    def with_fold() -> int:
        decoder, wire, count = SSEDecoder(), _CompletionsWire(), 0
        for c in chunks:
            count += len(wire.decode(decoder.feed_runs(c)))
        return count

    def with_hand_out() -> int:
        async def stream():  # type: ignore[no-untyped-def]
            decoder, wire = SSEDecoder(), _CompletionsWire()
            for c in chunks:
                for event in wire.decode(decoder.feed_runs(c)):
                    yield event

        async def read() -> int:
            count = 0
            async for _ in stream():
                count += 1
            return count

        return asyncio.run(read())

    stages = {
        "SSE decoder (feed_runs)": sse,
        "+ msgspec: data -> ChatCompletionChunk": with_msgspec,
        "+ the fold into the result": with_fold,
        "+ async for hand-out (an async generator)": with_hand_out,
    }
    runs: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(repeats):
        for name, stage in stages.items():
            start = time.process_time_ns()
            count = stage()
            runs[name].append((time.process_time_ns() - start) / count)
    out = {name: statistics.median(values) for name, values in runs.items()}
    out.update({f"{name} min": min(values) for name, values in runs.items()})
    return out


def budget_markdown(figures: dict[str, float], floor_ns: float | None = None) -> str:
    stages = [k for k in figures if not k.endswith(" min")]
    lines = [
        "| stages, cumulative | ns/event (median) | ns/event (least) | the stage added (median) |",
        "|---|---|---|---|",
    ]
    before = 0.0
    for name in stages:
        lines.append(
            f"| {name} | {figures[name]:.0f} | {figures[name + ' min']:.0f} "
            f"| {figures[name] - before:.0f} |"
        )
        before = figures[name]
    if floor_ns:
        allowed = floor_ns / 0.3
        ours = figures[stages[-1] + " min"]
        lines.append("")
        lines.append(
            f"The floor read the completions row at {floor_ns:.0f} ns/event (aiohttp and the "
            f"socket, which chatsdk pays too): at 0.3 of the floor chatsdk may spend "
            f"{allowed:.0f} ns/event, {allowed - floor_ns:.0f} of them in its own stages. "
            f"They take {ours:.0f} at their least above, so this design reaches at best "
            f"{floor_ns / (floor_ns + ours):.2f} of the floor on this row."
        )
    return "\n".join(lines)


def measure_spec(spec: dict[str, int]) -> dict[str, dict[str, float]]:
    """measure() and budget() for the harness (worker kind ``decoder-shapes``)."""
    args = argparse.Namespace(
        events=spec["events"], repeats=spec["repeats"], chunk=65536, compare=None
    )
    return {**measure(args), BUDGET_KEY: budget(spec["events"] * 5, spec["repeats"])}


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
    parser.add_argument(
        "--budget", action="store_true", help="also the completions row's stages, each alone"
    )
    parser.add_argument(
        "--budget-only", action="store_true", help="only the completions row's stages"
    )
    args = parser.parse_args(argv)
    table: dict[str, dict[str, float]] = {} if args.budget_only else measure(args)
    if args.budget or args.budget_only:
        table[BUDGET_KEY] = budget(args.events * 5, args.repeats, args.chunk)
    if args.json:
        print(json.dumps(table))
        return 0
    figures = table.pop(BUDGET_KEY, None)
    if table:
        print(markdown(table))
    if figures:
        print(budget_markdown(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
