"""One measurement of one client, in a process of its own; prints one JSON line.

``python benchmarks/worker.py '<json spec>'`` where the spec names the ``kind`` of
measurement, the ``peer`` and the server's ``base_url`` (see ``run.py``). The last
line of stdout is the result as JSON; anything else (warnings) goes to stderr.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import sys
import time
import uuid
from typing import Any

from common import median, percentile, raise_fd_limit
from peers import PEERS, Peer


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


async def timed_count(peer: Peer, scenario: str, warm_up: str) -> dict[str, Any]:
    """Read a warm-up stream, then ``scenario`` to the end, timed (wall and CPU)."""
    await peer.count(warm_up)  # connection up, code paths warm
    gc.collect()
    cpu = time.process_time()
    start = time.perf_counter()
    events, chunks = await peer.count(scenario)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    return {
        "events": events,
        "chunks": chunks,
        "seconds": elapsed,
        "events_per_s": events / elapsed,
        # This process's CPU time alone: less disturbed by other load than wall time.
        "events_per_cpu_s": events / cpu if cpu > 0 else float("nan"),
        "peak_rss": peak_rss_bytes(),
    }


async def throughput(peer: Peer, spec: dict[str, Any]) -> dict[str, Any]:
    return await timed_count(peer, spec["scenario"], "small-1000")


async def latency(peer: Peer, spec: dict[str, Any]) -> dict[str, Any]:
    await peer.count("small-100")
    gc.collect()
    delays: list[int] = []
    first: int | None = None
    events = 0
    start = time.monotonic_ns()
    async for event in peer.stream(spec["scenario"]):
        now = time.monotonic_ns()
        events += 1
        if first is None:
            first = now - start
        sent = peer.sent_ns(event)
        if sent is not None:
            delays.append(now - sent)
    return {
        "events": events,
        "samples": len(delays),
        "ttfe_us": (first or 0) / 1e3,
        "p50_us": median(delays) / 1e3,
        "p99_us": percentile(delays, 99) / 1e3,
        "max_us": max(delays) / 1e3 if delays else float("nan"),
    }


async def concurrency(peer: Peer, spec: dict[str, Any]) -> dict[str, Any]:
    streams, per_stream, head = spec["streams"], spec["per_stream"], spec["head"]
    await peer.count("small-10")
    gc.collect()
    rss_before = rss_bytes()
    group = uuid.uuid4().hex[:12]
    scenario = f"hold-{group}-{head}-{per_stream}"
    opened = 0
    all_open = asyncio.Event()

    async def one() -> int:
        nonlocal opened
        iterator = aiter(peer.stream(scenario))
        await anext(iterator)
        count = 1
        opened += 1
        if opened == streams:
            all_open.set()
        async for _ in iterator:
            count += 1
        return count

    start = time.perf_counter()
    tasks = [asyncio.create_task(one()) for _ in range(streams)]
    waiter = asyncio.create_task(all_open.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED, timeout=120)
    if not all_open.is_set():
        for task in tasks:
            task.cancel()
        failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
        raise RuntimeError(
            f"only {opened}/{streams} streams opened"
            + (f": {failed[0].exception()!r}" if failed else "")
        )
    opened_at = time.perf_counter()
    rss_open = rss_bytes()  # every stream open, mid-body, its first events read
    await peer.release(group)
    counts = await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    expected = per_stream + 2
    return {
        "streams": streams,
        "events": sum(counts),
        "complete_streams": sum(1 for c in counts if c == expected),
        "expected_per_stream": expected,
        "seconds": elapsed,
        "open_seconds": opened_at - start,
        "events_per_s": sum(counts) / elapsed,
        "rss_before": rss_before,
        "rss_open": rss_open,
        "bytes_per_stream": (rss_open - rss_before) / streams,
        "peak_rss": peak_rss_bytes(),
    }


async def tokens(peer: Peer, spec: dict[str, Any]) -> dict[str, Any]:
    for _ in range(20):
        await peer.token_pair()
    gc.collect()
    pairs = spec["pairs"]
    start = time.perf_counter()
    for _ in range(pairs):
        await peer.token_pair()
    elapsed = time.perf_counter() - start
    return {"requests": 2 * pairs, "seconds": elapsed, "requests_per_s": 2 * pairs / elapsed}


def decoder(spec: dict[str, Any]) -> dict[str, Any]:
    """One event of S MiB fed in 1 KiB chunks to chatsdk.sse.SSEDecoder (and openai's)."""
    import chatsdk.sse

    results: dict[str, Any] = {}
    for mib in spec["sizes_mib"]:
        # The whole event, field names and framing included, is exactly ``mib`` MiB, so
        # the 4 MiB one still fits the decoder's default 4 MiB line limit.
        frame = 'event: message_chunk\ndata: {"content_chunk":"%s"}\n\n'
        payload_size = (mib << 20) - len(frame % "")
        body = (frame % ("x" * payload_size)).encode()
        payload = body[len("event: message_chunk\ndata: ") : -2].decode()
        pieces = [body[i : i + 1024] for i in range(0, len(body), 1024)]
        runs: list[float] = []
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            dec = chatsdk.sse.SSEDecoder()
            events = []
            for piece in pieces:
                events.extend(dec.feed(piece))
            runs.append(time.perf_counter() - start)
            assert len(events) == 1 and len(events[0].data) == len(payload), "decoder lost data"
        results[f"chatsdk_{mib}"] = median(runs)
        if spec.get("openai"):
            from openai._streaming import SSEDecoder as OpenaiDecoder

            runs = []
            for _ in range(spec["repeats"]):
                start = time.perf_counter()
                got = list(OpenaiDecoder().iter_bytes(iter(pieces)))
                runs.append(time.perf_counter() - start)
                assert len(got) == 1 and len(got[0].data) == len(payload)
            results[f"openai_{mib}"] = median(runs)
    return results


def warm_up_scenario(scenario: str) -> str:
    """The same wire shape and way of writing, 200 events."""
    _, shape, _, writes = scenario.split("|")
    return f"shape|{shape}|200|{writes}"


async def shape(peer: Peer, spec: dict[str, Any]) -> dict[str, Any]:
    """One stream of a wire shape of the matrix, read to the end."""
    result = await timed_count(peer, spec["scenario"], warm_up_scenario(spec["scenario"]))
    result["via"] = getattr(peer, "completions_via", "")
    return result


async def fanout(peer: Peer, spec: dict[str, Any]) -> dict[str, Any]:
    """``streams`` streams of one scenario at once, each read to the end."""
    await peer.count(warm_up_scenario(spec["scenario"]))
    gc.collect()

    async def one() -> int:
        count = 0
        async for _ in peer.stream(spec["scenario"]):
            count += 1
        return count

    start = time.perf_counter()
    counts = await asyncio.gather(*(one() for _ in range(spec["streams"])))
    elapsed = time.perf_counter() - start
    return {
        "events": sum(counts),
        "complete_streams": sum(1 for c in counts if c == spec["per_stream"]),
        "seconds": elapsed,
        "events_per_s": sum(counts) / elapsed,
    }


async def run_peer(spec: dict[str, Any]) -> dict[str, Any]:
    kinds = {
        "shape": shape,
        "fanout": fanout,
        "throughput": throughput,
        "latency": latency,
        "concurrency": concurrency,
        "tokens": tokens,
    }
    peer = PEERS[spec["peer"]](spec["base_url"], max_connections=spec.get("max_connections", 100))
    async with peer:
        return await kinds[spec["kind"]](peer, spec)


def main() -> None:
    spec = json.loads(sys.argv[1])
    raise_fd_limit()
    if spec["kind"] == "decoder":
        result = decoder(spec)
    elif spec["kind"] == "decoder-shapes":
        import decoder_shapes

        result = decoder_shapes.measure_spec(spec)
    else:
        result = asyncio.run(run_peer(spec))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
