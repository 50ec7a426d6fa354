"""Soak test: many concurrent streams through one reference server, with injected faults.

One ``ReferenceServer`` runs in its own process (this file with ``--serve``); this process
keeps ``--streams`` chat streams in flight through one ``ChatClient`` for ``--seconds``,
each asking one of a fixed set of questions, while a controller cycles the server's
faults: dropped connections (``Faults.drop_after_events`` / ``drop_times``, resumed by
the client with ``Last-Event-ID``) and bursts of 503 and 429 answers
(``Faults.fail_first`` with ``Retry-After``, retried by the client). Every stream's
events are compared with the answer the deterministic responder gives for its question:
an expected event that never arrived is *lost*, one that arrived twice is *duplicated*.
Both must be 0, and every stream must complete.

::

    python benchmarks/soak.py                          # 1,000 streams for 60 s
    python benchmarks/soak.py --streams 200 --seconds 10 --json soak.json

Exit status 0 when nothing was lost, duplicated or failed; 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec

import chatsdk
from chatsdk.server import Faults, ReferenceServer
from chatsdk.server.responder import answer, split_words

# The benchmark helpers sit beside this file (run.py does the same).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import raise_fd_limit

SELF = os.path.abspath(__file__)
KEY = "soak-test-api-key-0123456789"
PROJECT = "demo"
QUESTIONS = (
    "How do I retry a failed request?",
    "How do client tokens and origins work?",
    "What happens when a stream drops?",
    "How do I set timeouts?",
    "How do I test my integration?",
    "What errors can the client raise?",
    "How do I resume a dropped stream?",
    "Tell me about the console script.",
    "What is the capital of Peru?",  # no match: the fixed answer, no citations
)

# What a stream is compared on: each event's kind, text and finish reason, and the
# citations (the session id differs between runs, so it is checked for consistency
# within a stream instead).
Key = tuple[str, str, str | None]


def expected_events(question: str) -> list[Key]:
    """The events the reference server sends for ``question`` on a new session."""
    reply = answer([chatsdk.Message(role="user", content=question)])
    keys: list[Key] = [("chunk", word, None) for word in split_words(reply.text)]
    keys.append(("chunk", "", "stop"))
    keys.append(("cited", msgspec.json.encode(reply.records_cited).decode(), None))
    return keys


def key_of(event: chatsdk.ChatEvent) -> Key:
    if isinstance(event, chatsdk.MessageChunk):
        return ("chunk", event.content_chunk, event.finish_reason)
    if isinstance(event, chatsdk.RecordsCited):
        return ("cited", msgspec.json.encode(event).decode(), None)
    return ("unknown", event.event, event.data)


# -- the server process -------------------------------------------------------------------


def serve(max_streams: int, event_delay: float) -> None:
    """Run the server; print its URL, then apply one Faults per stdin line (JSON),
    answering each with a line. When stdin closes, print how many failures and drops
    all the faults injected, and stop."""
    raise_fd_limit()

    async def main() -> None:
        base = Faults(event_delay=event_delay)
        server = ReferenceServer(
            api_key=KEY, project=PROJECT, max_streams_per_key=max_streams, faults=base
        )
        await server.start()
        print(json.dumps({"base_url": server.base_url}), flush=True)
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()
        # Every scenario's counters: a response keeps counting in the scenario it began
        # in, after the next one is set, so they are only added up at the end.
        states = [server._fault_state]

        def report() -> dict[str, Any]:
            # The benchmark's own server: reading its private counters is fine here.
            return {
                "failed": sum(state._failed for state in states),
                "dropped": sum(state._dropped for state in states),
            }

        def apply(line: str) -> None:
            fields = {"event_delay": event_delay, **json.loads(line)}
            server.faults = msgspec.convert(fields, Faults)
            states.append(server._fault_state)
            print(json.dumps({"applied": fields}), flush=True)

        def read_commands() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(apply, line)
            loop.call_soon_threadsafe(stopped.set)

        threading.Thread(target=read_commands, daemon=True).start()
        await stopped.wait()
        await server.close()  # every response has finished counting
        print(json.dumps({"final": report()}), flush=True)

    asyncio.run(main())


class ServerProcess:
    """The server in a child process, driven over its stdin and stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, base_url: str):
        self.proc = proc
        self.base_url = base_url
        self.injected_failures = 0
        self.drops = 0

    @classmethod
    async def start(cls, max_streams: int, event_delay: float) -> ServerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            SELF,
            "--serve",
            "--max-streams",
            str(max_streams),
            "--event-delay",
            str(event_delay),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError("the server process did not start")
        return cls(proc, json.loads(line)["base_url"])

    async def set_faults(self, **faults: Any) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(faults).encode() + b"\n")
        await self.proc.stdin.drain()
        await self.proc.stdout.readline()  # applied

    async def stop(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        with contextlib.suppress(ValueError, KeyError, TimeoutError):
            final = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 30))["final"]
            self.injected_failures, self.drops = final["failed"], final["dropped"]
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


# -- the client side ---------------------------------------------------------------------


@dataclass
class Tally:
    """What the run saw."""

    streams_started: int = 0
    streams_completed: int = 0
    streams_failed: int = 0
    streams_unfinished: int = 0
    streams_resumed: int = 0
    resumes: int = 0
    events_expected: int = 0
    events_received: int = 0
    events_lost: int = 0
    events_duplicated: int = 0
    streams_out_of_order: int = 0
    streams_with_mixed_session_ids: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)
    max_in_flight: int = 0

    def check(self, expected: Sequence[Key], got: Sequence[chatsdk.ChatEvent]) -> None:
        keys = [key_of(e) for e in got]
        want, have = Counter(expected), Counter(keys)
        self.events_expected += len(expected)
        self.events_received += len(keys)
        self.events_lost += sum((want - have).values())
        self.events_duplicated += sum((have - want).values())
        if keys != list(expected):
            self.streams_out_of_order += 1
        ids = {e.chat_session_id for e in got if isinstance(e, chatsdk.MessageChunk)}
        if len(ids) != 1 or None in ids:
            self.streams_with_mixed_session_ids += 1


# Fault phases, cycled by the controller. Each assignment resets the server's counters.
def fault_phases(streams: int) -> list[tuple[str, dict[str, Any]]]:
    burst = max(20, streams // 4)
    drops = max(20, streams // 2)
    return [
        ("drops after 5 events", {"drop_after_events": 5, "drop_times": drops}),
        (
            "503 burst (Retry-After: 0) + drops after 12",
            {
                "fail_first": burst,
                "fail_status": 503,
                "retry_after": "0",
                "drop_after_events": 12,
                "drop_times": drops,
            },
        ),
        ("drops after 1 event", {"drop_after_events": 1, "drop_times": drops}),
        (
            "429 burst (Retry-After: 1)",
            {"fail_first": burst, "fail_status": 429, "retry_after": "1"},
        ),
        ("drops right after the headers", {"drop_after_events": 0, "drop_times": burst // 2}),
        ("no faults", {}),
    ]


async def run(
    *, streams: int, seconds: float, seed: int, event_delay: float, phase_seconds: float
) -> dict[str, Any]:
    raise_fd_limit()
    expected = {q: expected_events(q) for q in QUESTIONS}
    server = await ServerProcess.start(max_streams=streams * 2 + 100, event_delay=event_delay)
    tally = Tally()
    phases_run: list[str] = []
    in_flight = 0
    began = time.monotonic()
    deadline = began + seconds
    try:
        async with chatsdk.ChatClient(
            KEY,
            project=PROJECT,
            base_url=server.base_url,
            max_connections=streams + 50,
            retries=chatsdk.RetryPolicy(
                max_retries=10, initial_delay=0.05, max_delay=1.0, max_resumes=10
            ),
            timeout=chatsdk.Timeout(connect=30, read=60, idle=60),
        ) as client:

            async def worker(n: int) -> None:
                nonlocal in_flight
                worker_rng = random.Random(seed * 1_000_003 + n)
                # Spread the starts so that the first wave does not arrive as one burst.
                await asyncio.sleep(worker_rng.random() * min(1.0, seconds / 10))
                while time.monotonic() < deadline:
                    question = worker_rng.choice(QUESTIONS)
                    stream = client.chat.create(integration_id="docs", messages=question)
                    tally.streams_started += 1
                    in_flight += 1
                    tally.max_in_flight = max(tally.max_in_flight, in_flight)
                    started = time.monotonic()
                    got: list[chatsdk.ChatEvent] = []
                    try:
                        async with stream:
                            async for event in stream:
                                got.append(event)
                    except chatsdk.ChatSDKError as exc:
                        tally.streams_failed += 1
                        tally.failures[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
                        continue
                    finally:
                        in_flight -= 1
                    tally.streams_completed += 1
                    tally.durations.append(time.monotonic() - started)
                    if stream.resumes:
                        tally.streams_resumed += 1
                        tally.resumes += stream.resumes
                    tally.check(expected[question], got)

            async def controller() -> None:
                phases = fault_phases(streams)
                index = 0
                while time.monotonic() < deadline:
                    name, faults = phases[index % len(phases)]
                    await server.set_faults(**faults)
                    phases_run.append(name)
                    index += 1
                    await asyncio.sleep(min(phase_seconds, max(0.0, deadline - time.monotonic())))
                await server.set_faults()  # end without faults, so that every stream completes

            tasks = [asyncio.create_task(worker(n)) for n in range(streams)]
            control = asyncio.create_task(controller())
            # The streams in flight at the deadline finish; a stuck one would show here.
            _, pending = await asyncio.wait([*tasks, control], timeout=seconds + 120)
            for task in pending:
                task.cancel()
            tally.streams_unfinished = in_flight if pending else 0
            await asyncio.gather(*pending, return_exceptions=True)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    tally.failures[f"worker crashed: {exc!r}"[:160]] += 1
    finally:
        await server.stop()
    elapsed = time.monotonic() - began
    durations = sorted(tally.durations) or [float("nan")]
    result = asdict(tally)
    result.pop("durations")
    result["failures"] = dict(tally.failures)
    result.update(
        streams_concurrent=streams,
        seconds=round(elapsed, 1),
        seed=seed,
        event_delay=event_delay,
        phases=phases_run,
        injected_failures=server.injected_failures,
        server_drops=server.drops,
        stream_seconds_median=round(statistics.median(durations), 3),
        stream_seconds_p99=round(durations[int(0.99 * (len(durations) - 1))], 3),
        events_per_second=round(tally.events_received / elapsed),
        ok=tally.events_lost == 0
        and tally.events_duplicated == 0
        and tally.streams_failed == 0
        and tally.streams_unfinished == 0
        and tally.streams_out_of_order == 0
        and tally.streams_with_mixed_session_ids == 0
        and not tally.failures,
    )
    return result


def summary(result: dict[str, Any]) -> str:
    lines = [
        f"soak: {result['streams_concurrent']} concurrent streams for {result['seconds']} s "
        f"(seed {result['seed']}, event delay {result['event_delay']} s, "
        f"at most {result['max_in_flight']} in flight)",
        f"  streams: {result['streams_started']} started, {result['streams_completed']} "
        f"completed, {result['streams_failed']} failed, {result['streams_unfinished']} unfinished",
        f"  faults injected by the server: {result['server_drops']} dropped connections, "
        f"{result['injected_failures']} 429/503 answers",
        f"  client: {result['streams_resumed']} streams resumed ({result['resumes']} resumes)",
        f"  events: {result['events_expected']} expected, {result['events_received']} received, "
        f"{result['events_lost']} lost, {result['events_duplicated']} duplicated, "
        f"{result['streams_out_of_order']} streams out of order",
        f"  stream time: median {result['stream_seconds_median']} s, "
        f"p99 {result['stream_seconds_p99']} s; {result['events_per_second']} events/s",
        f"  phases: {', '.join(dict.fromkeys(result['phases']))}",
    ]
    for failure, count in result["failures"].items():
        lines.append(f"  failure x{count}: {failure}")
    lines.append("  result: " + ("OK" if result["ok"] else "FAILED"))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to keep going")
    parser.add_argument("--seed", type=int, default=1, help="seeds each worker's questions")
    parser.add_argument(
        "--event-delay", type=float, default=0.02, help="server pause between events (s)"
    )
    parser.add_argument(
        "--phase-seconds", type=float, default=5.0, help="how long each fault phase lasts"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--max-streams", type=int, default=2100, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.max_streams, args.event_delay)
        return 0
    result = asyncio.run(
        run(
            streams=args.streams,
            seconds=args.seconds,
            seed=args.seed,
            event_delay=args.event_delay,
            phase_seconds=args.phase_seconds,
        )
    )
    print(summary(result))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
