"""Profile chatsdk's streaming hot path with py-spy and summarise where the time goes.

    .venv/bin/python benchmarks/profile_stream.py [--scenario small-100000] [--streams 20]

Starts the benchmark server, then runs a client process (``--child``) that reads the
scenario ``--streams`` times through ``async for`` under ``py-spy record`` (a sampling
profiler outside the process, so the measured code runs at full speed). Samples from
imports and connection set-up are left out; the rest is grouped by pipeline stage and
listed by the hottest source lines.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Stage of a sample: the first of these (innermost frames checked first) that its
# stack contains. Checked from the leaf upwards.
STAGES = [
    ("msgspec decode (payload -> struct)", re.compile(r"_decode|Decoder\.decode")),
    ("SSE decode (chatsdk.sse)", re.compile(r"SSEDecoder\.|sse\.py")),
    ("socket read + aiohttp HTTP parsing", re.compile(r"selector_events|client_proto|streams\.py")),
    ("ChatStream read loop (timeouts, bookkeeping)", re.compile(r"_read_events|_read_batch")),
    ("async iteration (__anext__ / generator)", re.compile(r"_streaming\.py")),
    ("caller's loop body", re.compile(r"child_main|count")),
    ("event loop", re.compile(r"base_events|events\.py")),
]
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")


async def child_main(base_url: str, scenario: str, streams: int) -> None:
    import chatsdk

    async with chatsdk.ChatClient("bench-key", project="bench", base_url=base_url) as client:
        async for _ in client.chat.create(integration_id="small-1000", messages="q"):
            pass
        total = 0
        start = time.perf_counter()
        for _ in range(streams):
            async for _ in client.chat.create(integration_id=scenario, messages="q"):
                total += 1
        elapsed = time.perf_counter() - start
    print(f"{total:,} events in {elapsed:.2f} s: {total / elapsed:,.0f} events/s (profiled)")


def summarise(raw: Path, top: int) -> None:
    stages: collections.Counter[str] = collections.Counter()
    lines: collections.Counter[str] = collections.Counter()
    total = 0
    for row in raw.read_text().splitlines():
        stack, _, count = row.rpartition(" ")
        frames = stack.split(";")
        if any("_find_and_load" in f or "_open " in f or "__aenter__" in f for f in frames):
            continue  # imports, connection set-up
        n = int(count)
        total += n
        for frame in reversed(frames):
            stage = next((name for name, pattern in STAGES if pattern.search(frame)), None)
            if stage is not None:
                stages[stage] += n
                break
        else:
            stages["other"] += n
        match = FRAME.match(frames[-1])
        leaf = frames[-1] if match is None else f"{match['func']} ({match['file']}:{match['line']})"
        lines[leaf] += n
    if not total:
        print("no samples")
        return
    print(f"\n{total} samples of the streaming loop, by stage (innermost frame wins):")
    for name, n in stages.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    print(f"\nhottest lines (self time), top {top}:")
    for name, n in lines.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="small-100000")
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--child", metavar="BASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child_main(args.child, args.scenario, args.streams))
        return 0
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        print("py-spy not found: pip install py-spy (benchmarks/requirements.txt has it)")
        return 1
    from run import Server

    server = Server()
    try:
        server.prepare(urllib.parse.quote(args.scenario, safe=""))
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "profile.txt"
            child = [sys.executable, __file__, "--child", server.base_url]
            child += ["--scenario", args.scenario, "--streams", str(args.streams)]
            subprocess.run(
                [py_spy, "record", "-r", str(args.rate), "-f", "raw", "-o", str(raw), "--", *child],
                check=True,
                stderr=subprocess.DEVNULL,
            )
            summarise(raw, args.top)
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
