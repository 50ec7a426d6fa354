"""chatsdk benchmark suite: ``make bench`` runs this (``.venv/bin/python benchmarks/run.py``).

One invocation starts one purpose-built aiohttp server process on 127.0.0.1
(``server.py``) and measures every client against it. Each measurement runs in a
fresh worker process (``worker.py``); clients are interleaved within each round
(A B C ... A B C ...) and the tables report medians over rounds, as ratios to
chatsdk. Results go to ``benchmarks/RESULTS.md`` and ``benchmarks/results.png``.

    python benchmarks/run.py            # the full suite (about 10 minutes on 2 cores)
    python benchmarks/run.py --quick    # a smoke run: small sizes, 1 round (< 1 minute)
    python benchmarks/run.py --rounds 7 --only throughput,imports
    python benchmarks/run.py --only shapes,decoder-shapes --shapes CRLF,pings

``shapes`` is the wire-shape matrix (``matrix.py``: every legal body layout of
``shapes.py`` against httpx-sse + pydantic, the raw floor and, on the Chat Completions
rows, openai-python); ``decoder-shapes`` the sans-IO decoder alone on the same bodies
(``decoder_shapes.py``, also runnable by itself).
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import matrix  # noqa: E402
from common import median  # noqa: E402

PYTHON = sys.executable
#: The environment of every measured process: PYTHONPATH gains the frozen copy of
#: chatsdk made at start (see freeze_chatsdk), so all rounds measure one version.
CHILD_ENV: dict[str, str] = dict(os.environ)
# Where `python -c` runs: its sys.path starts with the working directory, ahead of
# PYTHONPATH, so from the repository it would import the live chatsdk, not the copy.
CHILD_CWD: str | None = None
STREAM_PEERS = ["chatsdk", "aiohttp-raw", "httpx-sse", "openai-sse", "aiohttp-sse-client"]
PEER_LABELS = {
    "chatsdk": "chatsdk (msgspec)",
    "aiohttp-raw": "aiohttp raw bytes (floor)",
    "httpx-sse": "httpx + httpx-sse + pydantic",
    "openai-sse": "openai SSEDecoder + httpx2 + pydantic",
    "aiohttp-sse-client": "aiohttp-sse-client + pydantic",
}
CONCURRENCY_PEERS = ["chatsdk", "aiohttp-raw", "httpx-sse"]
TOKEN_PEERS = ["chatsdk", "aiohttp-raw", "httpx-sse"]
REFERENCE_TOKEN_PEERS = ["chatsdk", "httpx-sse"]
TOKEN_LABELS = {
    "chatsdk": "chatsdk tokens.create/revoke",
    "aiohttp-raw": "aiohttp, bodies not decoded (floor)",
    "httpx-sse": "httpx + pydantic",
}
IMPORTS = {
    "chatsdk": "import chatsdk",
    "aiohttp, msgspec (floor)": "import aiohttp, msgspec",
    "openai": "import openai",
    "httpx, httpx_sse, pydantic": "import httpx, httpx_sse, pydantic",
}
VERSIONED = [
    "chatsdk",
    "aiohttp",
    "msgspec",
    "httpx",
    "httpx-sse",
    "httpx2",
    "pydantic",
    "pydantic-core",
    "openai",
    "aiohttp-sse-client",
    "matplotlib",
]


@dataclass
class Config:
    rounds: int
    events: int  # benchmark 1
    paced_events: int  # benchmark 2
    paced_interval_us: int
    concurrency: list[int]  # benchmark 3
    concurrency_events: int  # total events per concurrency run
    token_pairs: int  # benchmark 4
    reference_token_pairs: int
    large_events: int  # benchmark 5b
    large_size: int
    decoder_sizes_mib: list[int]  # benchmark 5a
    import_runs: int  # benchmark 6
    quick: bool = False
    shape_events: int = 100_000  # benchmark 0 (the wire-shape matrix, matrix.py)
    token_events: int = 20_000
    fanout_streams: int = 1000
    fanout_per_stream: int = 20
    shape_rows: list[str] = field(default_factory=list)
    shape_rounds: int = 7  # the matrix's rows are short: more rounds, steadier medians
    decoder_shape_events: int = 20_000

    @classmethod
    def for_args(cls, args: argparse.Namespace) -> Config:
        if args.quick:
            config = cls(
                rounds=1,
                events=10_000,
                paced_events=200,
                paced_interval_us=1000,
                concurrency=[1, 100, 1000],
                concurrency_events=10_000,
                token_pairs=200,
                reference_token_pairs=50,
                large_events=500,
                large_size=10 * 1024,
                decoder_sizes_mib=[1, 2, 4],
                import_runs=5,
                quick=True,
            )
        else:
            config = cls(
                rounds=5,
                events=100_000,
                paced_events=1000,
                paced_interval_us=1000,
                concurrency=[1, 100, 1000],
                concurrency_events=100_000,
                token_pairs=1000,
                reference_token_pairs=200,
                large_events=10_000,
                large_size=10 * 1024,
                decoder_sizes_mib=[1, 2, 4],
                import_runs=11,
            )
        if args.quick:
            config.shape_events, config.token_events = 10_000, 2_000
            config.fanout_streams, config.decoder_shape_events = 100, 2_000
        # Rows are named by their field order ("id,event,data"): with such names, list
        # rows with ";" (a trailing one for a single row).
        rows = args.shapes or ""
        config.shape_rows = [r for r in rows.split(";" if ";" in rows else ",") if r]
        if args.quick:
            config.shape_rounds = 1
        if args.rounds is not None:
            config.rounds = config.shape_rounds = args.rounds
        config.import_runs = max(config.import_runs, 5)
        return config


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, bench: str, key: str, result: dict[str, Any]) -> None:
        self.runs.setdefault(bench, {}).setdefault(key, []).append(result)

    def med(self, bench: str, key: str, metric: str) -> float:
        values = [r[metric] for r in self.runs.get(bench, {}).get(key, []) if metric in r]
        return median(values)


# -- processes ----------------------------------------------------------------------------


class Server:
    """A server script in its own process; it prints its port and exits when stdin closes."""

    def __init__(self, script: str = "server.py") -> None:
        self.process = subprocess.Popen(
            [PYTHON, str(HERE / script)],
            env=CHILD_ENV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError(f"{script} did not start (see its stderr above)")
        port = int(line)
        self.base_url = f"http://127.0.0.1:{port}"

    def prepare(self, scenario: str) -> None:
        with urllib.request.urlopen(f"{self.base_url}/prepare/{scenario}") as response:
            response.read()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_worker(spec: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    completed = subprocess.run(
        [PYTHON, str(HERE / "worker.py"), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=HERE,
        env=CHILD_ENV,
    )
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"worker {spec['kind']}/{spec.get('peer')} failed: {tail[0]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def measure(
    results: Results, bench: str, key: str, spec: dict[str, Any], check: Callable[..., str | None]
) -> None:
    try:
        result = run_worker(spec)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        results.errors.append(f"{bench} / {key}: {exc}")
        print(f"  {key}: ERROR {exc}", flush=True)
        return
    problem = check(result)
    if problem:
        results.errors.append(f"{bench} / {key}: {problem}")
        result["invalid"] = problem
    results.add(bench, key, result)
    shown = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in result.items()}
    print(f"  {key}: {shown}", flush=True)


def expect_events(expected: int) -> Callable[[dict[str, Any]], str | None]:
    def check(result: dict[str, Any]) -> str | None:
        if result["events"] != expected or result["chunks"] != expected - 1:
            return (
                f"got {result['events']} events ({result['chunks']} typed chunks), "
                f"expected {expected}"
            )
        return None

    return check


# -- the benchmarks -----------------------------------------------------------------------


def bench_throughput(server: Server, config: Config, results: Results) -> None:
    scenario = f"small-{config.events}"
    server.prepare(scenario)
    server.prepare("small-1000")
    for rnd in range(config.rounds):
        print(f"[1 throughput] round {rnd + 1}/{config.rounds}", flush=True)
        for peer in STREAM_PEERS:
            spec = {
                "kind": "throughput",
                "peer": peer,
                "base_url": server.base_url,
                "scenario": scenario,
            }
            measure(results, "throughput", peer, spec, expect_events(config.events + 2))


def bench_latency(server: Server, config: Config, results: Results) -> None:
    scenario = f"paced-{config.paced_events}-{config.paced_interval_us}"
    server.prepare("small-100")

    def check(result: dict[str, Any]) -> str | None:
        if result["events"] != config.paced_events + 2:
            return f"got {result['events']} events, expected {config.paced_events + 2}"
        return None

    for rnd in range(config.rounds):
        print(f"[2 latency] round {rnd + 1}/{config.rounds}", flush=True)
        for peer in STREAM_PEERS:
            spec = {"kind": "latency", "peer": peer, "base_url": server.base_url}
            measure(results, "latency", peer, {**spec, "scenario": scenario}, check)


def bench_concurrency(server: Server, config: Config, results: Results) -> None:
    server.prepare("small-10")
    for n in config.concurrency:
        server.prepare(f"small-{max(config.concurrency_events // n, 5)}")
    # Every round interleaves the clients at each N. At least 3 rounds, at most 3:
    # httpx needs tens of seconds for 1,000 streams, so more would blow the budget.
    rounds = 3 if config.rounds >= 3 else config.rounds
    for rnd in range(rounds):
        print(f"[3 concurrency] round {rnd + 1}/{rounds}", flush=True)
        for n in config.concurrency:
            per_stream = max(config.concurrency_events // n, 5)

            def check(result: dict[str, Any], n: int = n) -> str | None:
                if result["complete_streams"] != n:
                    return f"only {result['complete_streams']}/{n} streams got every event"
                return None

            for peer in CONCURRENCY_PEERS:
                if peer == "httpx-sse" and n > 100 and config.quick:
                    continue  # tens of seconds: too slow for a smoke run
                spec = {
                    "kind": "concurrency",
                    "peer": peer,
                    "base_url": server.base_url,
                    "streams": n,
                    "per_stream": per_stream,
                    "head": 5,
                    # No pool limit: every stream gets its own connection at once.
                    "max_connections": 0,
                }
                measure(results, "concurrency", f"{peer}@{n}", spec, check)


def bench_tokens(server: Server, config: Config, results: Results) -> None:
    reference: Server | None = None
    if not config.quick:  # a smoke run keeps to the fixed-body server
        try:
            reference = Server("refserver.py")
        except RuntimeError as exc:
            results.errors.append(f"tokens / ReferenceServer: {exc}; only the fixed server ran")
    try:
        for rnd in range(config.rounds):
            print(f"[4 tokens] round {rnd + 1}/{config.rounds}", flush=True)
            for peer in TOKEN_PEERS:
                spec = {
                    "kind": "tokens",
                    "peer": peer,
                    "base_url": server.base_url,
                    "pairs": config.token_pairs,
                }
                measure(results, "tokens", peer, spec, lambda r: None)
            if reference is None:
                continue
            # The floor sends a made-up token, which the reference server rightly refuses.
            for peer in REFERENCE_TOKEN_PEERS:
                spec = {
                    "kind": "tokens",
                    "peer": peer,
                    "base_url": reference.base_url,
                    "pairs": config.reference_token_pairs,
                }
                measure(results, "tokens-reference", peer, spec, lambda r: None)
    finally:
        if reference is not None:
            reference.close()


def bench_large(server: Server, config: Config, results: Results) -> None:
    scenario = f"large-{config.large_events}-{config.large_size}"
    server.prepare(scenario)
    for rnd in range(config.rounds):
        print(f"[5 large] round {rnd + 1}/{config.rounds}", flush=True)
        spec = {
            "kind": "decoder",
            "sizes_mib": config.decoder_sizes_mib,
            "repeats": 5,
            "openai": True,
        }
        measure(results, "decoder", "decoder", spec, lambda r: None)
        for peer in STREAM_PEERS:
            spec = {
                "kind": "throughput",
                "peer": peer,
                "base_url": server.base_url,
                "scenario": scenario,
            }
            measure(results, "large", peer, spec, expect_events(config.large_events + 2))


def bench_decoder_shapes(config: Config, results: Results) -> None:
    # One worker runs all rounds itself, interleaving the shapes (decoder_shapes.py).
    print("[0b decoder shapes]", flush=True)
    spec = {
        "kind": "decoder-shapes",
        "events": config.decoder_shape_events,
        "repeats": max(config.rounds, 3),
    }
    measure(results, "decoder-shapes", "table", spec, lambda result: None)


def bench_imports(config: Config, results: Results) -> None:
    """Fresh interpreters, interleaved; time of ``python -c 'import X'`` minus ``-c pass``."""
    statements = {"(interpreter only)": "pass", **IMPORTS}
    for name, stmt in statements.items():  # warm the bytecode caches once
        if not config.quick or name == "chatsdk":
            subprocess.run(
                [PYTHON, "-c", stmt], check=True, capture_output=True, env=CHILD_ENV, cwd=CHILD_CWD
            )
    print(f"[6 imports] {config.import_runs} interleaved runs", flush=True)
    order = list(statements.items())
    for run in range(config.import_runs):
        # Each round starts one further along, so no statement always follows the same one.
        shift = run % len(order)
        for name, stmt in order[shift:] + order[:shift]:
            start = time.perf_counter()
            subprocess.run(
                [PYTHON, "-c", stmt], check=True, capture_output=True, env=CHILD_ENV, cwd=CHILD_CWD
            )
            results.add("imports", name, {"seconds": time.perf_counter() - start})
    base = results.med("imports", "(interpreter only)", "seconds")
    for name in IMPORTS:
        print(f"  {name}: {1000 * (results.med('imports', name, 'seconds') - base):.1f} ms")


BENCHMARKS = [
    "shapes",
    "decoder-shapes",
    "throughput",
    "latency",
    "concurrency",
    "tokens",
    "large",
    "imports",
]


# -- reporting ----------------------------------------------------------------------------


def source_digest(package: Path) -> str:
    """A digest of a chatsdk package's client modules (``chatsdk/*.py``)."""
    digest = hashlib.sha256()
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def live_package() -> Path:
    import chatsdk

    return Path(chatsdk.__file__).parent


def freeze_chatsdk(into: Path) -> Path:
    """Copy the chatsdk package into ``into`` and make every measured process import it.

    Other engineers edit the working tree while benchmarks run; measuring a copy taken
    once keeps every round of one invocation on the same code.
    """
    frozen = into / "chatsdk"
    shutil.copytree(live_package(), frozen, ignore=shutil.ignore_patterns("__pycache__"))
    # Bytecode caches, as pip leaves for every installed peer: without them each import
    # of chatsdk would compile it (PYTHONDONTWRITEBYTECODE is set on some machines).
    compileall.compile_dir(frozen, quiet=1)
    paths = [str(into), *filter(None, [os.environ.get("PYTHONPATH")])]
    CHILD_ENV["PYTHONPATH"] = os.pathsep.join(paths)
    global CHILD_CWD
    CHILD_CWD = str(into)
    return frozen


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions,
        "loadavg_start": os.getloadavg(),
    }


def fmt_rate(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def ratio(ours: float, theirs: float) -> str:
    if ours != ours or theirs != theirs or theirs == 0:
        return "n/a"
    return f"{ours / theirs:.2f}x"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def n_runs(results: Results, bench: str, key: str) -> int:
    return len(results.runs.get(bench, {}).get(key, []))


def report(results: Results, config: Config, args: argparse.Namespace, elapsed: float) -> str:
    m = results.machine
    out: list[str] = []
    add = out.append
    command = "make bench" if not args.quick else "python benchmarks/run.py --quick"
    if args.rounds is not None or args.only:
        command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    add("# chatsdk benchmark results\n")
    add(
        f"Produced by `{command}` (`.venv/bin/python benchmarks/run.py`) in {elapsed:.0f} s, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
        + (" **Quick smoke run: small sizes, one round; not for quoting.**" if args.quick else "")
        + "\n"
    )
    top = matrix.headline(results, config)
    if top:
        add(top + "\n")
    add("## Machine and method\n")
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    add(
        f"- {m['nproc']} cores ({m['cpu'] or 'unknown CPU'}), {m['implementation']} "
        f"{m['python']}, {m['platform']}.\n"
        f"- Packages: {versions}.\n"
        "- chatsdk as measured: the working tree's `chatsdk/` copied once at the start, "
        "its bytecode compiled (as pip leaves it for every peer), and put first on "
        "`PYTHONPATH` of every measured process (the import timings run in its "
        "directory), so all rounds run the "
        f"same code (client modules digest `{m['chatsdk_digest']}`, sha256 of "
        "`chatsdk/*.py`)"
        + (
            "."
            if m["chatsdk_digest_live_end"] == m["chatsdk_digest"]
            else f"; the working tree changed during the run (now `{m['chatsdk_digest_live_end']}`)"
            ", which this run does not reflect."
        )
        + "\n"
        f"- Load average at start {m['loadavg_start'][0]:.2f}, at end "
        f"{m['loadavg_end'][0]:.2f}. **The machine is shared and noisy** (other engineers run "
        "test suites on it): every comparison is interleaved (A B C … A B C) and reported "
        f"as the median over {config.rounds} round(s), so that a burst of noise hits all "
        "clients alike; ratios from one run are the numbers to read, not absolute rates.\n"
        "- One purpose-built aiohttp server process (`benchmarks/server.py`) on 127.0.0.1 "
        "serves every measurement of the run. Bodies are generated before measuring: "
        "`message_chunk` events shaped exactly like SPEC §1.4 "
        '(`event: message_chunk\\ndata: {"chat_session_id":"<uuid>",'
        '"content_chunk":"word ","finish_reason":null}`), then the final chunk '
        '(`finish_reason: "stop"`) and one `records_cited` with three citations, sent '
        "chunked in 64 KiB writes.\n"
        "- Each measurement runs in a fresh worker process (`benchmarks/worker.py`), which "
        "first reads a small warm-up stream on the same connection pool. Every client "
        "decodes every event into a typed value (msgspec structs through chatsdk's public "
        "`async for` API; pydantic models via `model_validate_json`, pydantic's fastest "
        "path, for the peers) and counts them; counts are checked against what the "
        "server sent. The floor reads the bytes with aiohttp and only counts blank lines.\n"
        "- Ratios are chatsdk ÷ peer for rates (higher is better for chatsdk) and "
        "peer ÷ chatsdk for times and memory.\n"
    )

    # 0. the wire-shape matrix, worst row first
    decoder_runs = results.runs.get("decoder-shapes", {}).get("table", [])
    decoder_table = None
    if decoder_runs:
        import decoder_shapes

        last = decoder_runs[-1]
        budget = last.get(decoder_shapes.BUDGET_KEY)
        table_data = {
            k: v
            for k, v in last.items()
            if isinstance(v, dict) and k != decoder_shapes.BUDGET_KEY
        }
        decoder_table = decoder_shapes.markdown(table_data)
        if budget:
            # The floor's CPU per event on the completions row: aiohttp and the socket,
            # which chatsdk pays as well, beside the stages only chatsdk runs.
            floor_cpu = results.med("shapes", "completions@aiohttp-raw", "events_per_cpu_s")
            floor_ns = 1e9 / floor_cpu if floor_cpu and floor_cpu == floor_cpu else None
            decoder_table += (
                "\n\n### Completions: where an event's CPU goes (sans-IO)\n\n"
                "`benchmarks/decoder_shapes.py --budget`: the completions body fed through the "
                "stream's own stages with no network, one stage added at a time (the SSE "
                "decoder; msgspec typing each chunk as `ChatCompletionChunk`; the fold into "
                "the result; `async for` handing each event out of an async generator), CPU "
                "ns per event, median and least of interleaved rounds.\n\n"
                + decoder_shapes.budget_markdown(budget, floor_ns)
            )
    shape_section = matrix.section(results, config, decoder_table)
    if shape_section:
        add(shape_section)

    # 1. throughput
    add("## 1. Stream throughput\n")
    add(
        f"{config.events:,} `message_chunk` events (+ final chunk + `records_cited`) in one "
        "stream, read to the end. Events per second, median over rounds.\n"
    )
    ours = results.med("throughput", "chatsdk", "events_per_s")
    ours_cpu = results.med("throughput", "chatsdk", "events_per_cpu_s")
    rows = []
    for peer in STREAM_PEERS:
        eps = results.med("throughput", peer, "events_per_s")
        cpu = results.med("throughput", peer, "events_per_cpu_s")
        rows.append(
            [
                PEER_LABELS[peer],
                fmt_rate(eps),
                ratio(ours, eps),
                fmt_rate(cpu),
                ratio(ours_cpu, cpu),
                f"{results.med('throughput', peer, 'peak_rss') / 2**20:.0f}",
                str(n_runs(results, "throughput", peer)),
            ]
        )
    add(
        table(
            [
                "client",
                "events/s (wall)",
                "chatsdk ÷ client",
                "events per client CPU-s",
                "chatsdk ÷ client (CPU)",
                "peak RSS MiB",
                "runs",
            ],
            rows,
        )
        + "\n"
    )
    add(
        "Wall-clock events/s is the headline (and what the targets use). Events per "
        "CPU-second of the client process is given beside it because it is less "
        "disturbed by other load on a shared machine.\n"
    )

    # 2. latency
    add("## 2. Time to first event and per-event latency (paced stream)\n")
    add(
        f"{config.paced_events:,} events, one written every {config.paced_interval_us} µs, "
        "each on its own; every `content_chunk` carries the server's `time.monotonic_ns()` "
        "at send (CLOCK_MONOTONIC, shared by the processes of one machine). Latency = "
        "arrival of the decoded event at the caller - send. Time to first event: from "
        "calling the API (connection already pooled by the warm-up) to the first decoded "
        "event. Medians over rounds of each run's median / p99.\n"
    )
    rows = []
    for peer in STREAM_PEERS:
        rows.append(
            [
                PEER_LABELS[peer],
                f"{results.med('latency', peer, 'ttfe_us'):.0f}",
                f"{results.med('latency', peer, 'p50_us'):.0f}",
                f"{results.med('latency', peer, 'p99_us'):.0f}",
                ratio(
                    results.med("latency", peer, "p50_us"),
                    results.med("latency", "chatsdk", "p50_us"),
                ),
            ]
        )
    add(
        table(
            ["client", "first event µs", "latency p50 µs", "latency p99 µs", "p50 ÷ chatsdk"],
            rows,
        )
        + "\n"
    )

    # 3. concurrency
    add("## 3. Concurrent streams in one process\n")
    add(
        f"N streams at once in one process and one client (pool limit off: "
        "`ChatClient(max_connections=0)`, `httpx.Limits(max_connections=None)`), "
        f"{config.concurrency_events:,} events in all (each stream "
        f"{config.concurrency_events:,}/N). The server sends each stream's first 5 events "
        "and holds it; once every stream has read its first event, RSS is sampled "
        "(streams open mid-body), then the server releases them. events/s = all events ÷ "
        "wall time from the first request to the last event (connection set-up "
        "included); memory per open stream = (RSS with N open - RSS before) / N. The fd "
        "limit is raised to the hard limit in the workers and the server. Here the raw "
        "aiohttp row splits each event's bytes out (no parsing) so it can count them per "
        "stream.\n"
    )
    rows = []
    for n in config.concurrency:
        for peer in CONCURRENCY_PEERS:
            key = f"{peer}@{n}"
            runs = results.runs.get("concurrency", {}).get(key, [])
            if not runs and config.quick and peer == "httpx-sse":
                rows.append([str(n), PEER_LABELS[peer], "skipped in --quick", *[""] * 5])
                continue
            complete = min((r["complete_streams"] for r in runs), default=0)
            rows.append(
                [
                    str(n),
                    PEER_LABELS[peer],
                    fmt_rate(results.med("concurrency", key, "events_per_s")),
                    ratio(
                        results.med("concurrency", f"chatsdk@{n}", "events_per_s"),
                        results.med("concurrency", key, "events_per_s"),
                    ),
                    f"{results.med('concurrency', key, 'open_seconds'):.2f}",
                    f"{results.med('concurrency', key, 'peak_rss') / 2**20:.0f}",
                    (
                        f"{results.med('concurrency', key, 'bytes_per_stream') / 1024:.1f}"
                        if n > 1
                        else "-"
                    ),
                    f"{complete}/{n} ({len(runs)} runs)",
                ]
            )
    add(
        table(
            [
                "N",
                "client",
                "events/s",
                "chatsdk ÷ client",
                "all open after s",
                "peak RSS MiB",
                "KiB per open stream",
                "streams complete (worst run)",
            ],
            rows,
        )
        + "\n"
    )

    # 4. tokens
    add("## 4. Token operations\n")
    add(
        f"Sequential `tokens.create` + `tokens.revoke` pairs over the keep-alive pool (one "
        "connection), after 20 warm-up pairs; requests per second. Each client checks the "
        "status and decodes the token into its typed model (msgspec struct / pydantic "
        "model). Two servers, each in its own process:\n\n"
        f"- **fixed**: the purpose-built benchmark server answering "
        "`POST /rpc/chatSessions.create` with a fixed 200 JSON token and "
        "`DELETE /rpc/chatSessions.revoke` with 204, so the client's cost shows "
        f"({config.token_pairs:,} pairs);\n"
        "- **reference**: chatsdk's `ReferenceServer` (`benchmarks/refserver.py`; JWT "
        "signing, SQLite, idempotency records), where the server's own cost dominates "
        f"({config.reference_token_pairs:,} pairs). The raw floor is left out there: it "
        "sends a made-up token, which that server refuses.\n"
    )
    rows = []
    for bench, name, peers in (
        ("tokens", "fixed", TOKEN_PEERS),
        ("tokens-reference", "reference", REFERENCE_TOKEN_PEERS),
    ):
        ours = results.med(bench, "chatsdk", "requests_per_s")
        for peer in peers:
            rps = results.med(bench, peer, "requests_per_s")
            rows.append([name, TOKEN_LABELS[peer], fmt_rate(rps), ratio(ours, rps)])
    add(table(["server", "client", "requests/s", "chatsdk ÷ client"], rows) + "\n")

    # 5. large events
    add("## 5. Large events\n")
    add(
        "**5a.** One event of 1, 2 and 4 MiB (framing included) fed to "
        "`chatsdk.sse.SSEDecoder` (default limits) in 1 KiB chunks, in a worker process; "
        "median of 5 repeats per round, then median over rounds. The OpenAI SDK's "
        "`SSEDecoder.iter_bytes` over the same chunks for comparison. Time per MiB "
        "staying flat shows the decoder is linear.\n"
    )
    rows = []
    for mib in config.decoder_sizes_mib:
        ours_s = results.med("decoder", "decoder", f"chatsdk_{mib}")
        theirs = results.med("decoder", "decoder", f"openai_{mib}")
        rows.append(
            [
                f"{mib} MiB",
                f"{1000 * ours_s:.1f}",
                f"{1000 * ours_s / mib:.1f}",
                f"{1000 * theirs:.1f}",
                ratio(theirs, ours_s),
            ]
        )
    add(
        table(
            [
                "event size",
                "chatsdk ms",
                "chatsdk ms per MiB",
                "openai decoder ms",
                "openai ÷ chatsdk",
            ],
            rows,
        )
        + "\n"
    )
    size_kib = config.large_size // 1024
    add(
        f"**5b.** {config.large_events:,} events with a {size_kib} KiB `content_chunk` "
        f"each (~{config.large_events * config.large_size / 2**20:.0f} MiB) through each "
        "client's stream API. chatsdk's peak RSS includes the answer's text (the "
        "`content_chunk` values, the size of the body's data), which a `ChatStream` keeps so "
        "that `final_result()` can still return the whole answer after its events were "
        "iterated; the peers' loops keep nothing. The events themselves are not kept.\n"
    )
    ours = results.med("large", "chatsdk", "events_per_s")
    rows = []
    for peer in STREAM_PEERS:
        eps = results.med("large", peer, "events_per_s")
        rows.append(
            [
                PEER_LABELS[peer],
                fmt_rate(eps),
                f"{eps * config.large_size / 2**20:.0f}",
                ratio(ours, eps),
                f"{results.med('large', peer, 'peak_rss') / 2**20:.0f}",
            ]
        )
    add(table(["client", "events/s", "MiB/s", "chatsdk ÷ client", "peak RSS MiB"], rows) + "\n")

    # 6. imports
    add("## 6. Import time\n")
    base = results.med("imports", "(interpreter only)", "seconds")
    add(
        f'`python -c "import X"` in a fresh interpreter minus `python -c pass` '
        f"({1000 * base:.0f} ms), {config.import_runs} interleaved runs each, medians "
        "(bytecode caches warm).\n"
    )
    floor = results.med("imports", "aiohttp, msgspec (floor)", "seconds") - base
    rows = []
    for name in IMPORTS:
        t = results.med("imports", name, "seconds") - base
        rows.append([f"`{IMPORTS[name]}`", f"{1000 * t:.1f}", ratio(t, floor)])
    add(table(["statement", "ms", "÷ aiohttp, msgspec"], rows) + "\n")

    # targets
    add("## Targets\n")
    add(targets_text(results, config) + "\n")
    if results.errors:
        add("## Errors and invalid runs\n")
        add("\n".join(f"- {e}" for e in results.errors) + "\n")
    add("## Chart\n")
    add("![benchmark results](results.png)\n")
    return "\n".join(out)


def targets(results: Results, config: Config) -> list[tuple[str, bool, str]]:
    t = results.med
    ours = t("throughput", "chatsdk", "events_per_s")
    out = matrix.targets(results, config) if "shapes" in results.runs else []
    for peer, label, want in (
        ("httpx-sse", "throughput ≥ 5x httpx-sse + pydantic", 5.0),
        ("openai-sse", "throughput ≥ 8x the OpenAI decoder stack", 8.0),
        ("aiohttp-raw", "throughput ≥ 0.3x the raw aiohttp byte-read floor", 0.3),
    ):
        got = ours / t("throughput", peer, "events_per_s")
        out.append((label, got >= want, f"{got:.2f}x"))
    big = max(config.concurrency)
    runs = results.runs.get("concurrency", {}).get(f"chatsdk@{big}", [])
    ok = bool(runs) and all(r["complete_streams"] == big for r in runs)
    out.append(
        (
            f"{big:,} concurrent streams complete with every event delivered",
            ok,
            f"{len(runs)} run(s), "
            + ", ".join(f"{r['complete_streams']}/{big} streams" for r in runs),
        )
    )
    one = t("decoder", "decoder", "chatsdk_1")
    out.append(("1 MiB event in 1 KiB chunks well under 0.1 s", one < 0.05, f"{1000 * one:.1f} ms"))
    base = t("imports", "(interpreter only)", "seconds")
    ours_import = t("imports", "chatsdk", "seconds") - base
    floor = t("imports", "aiohttp, msgspec (floor)", "seconds") - base
    out.append(
        (
            "`import chatsdk` ≤ 1.2x `import aiohttp, msgspec`",
            ours_import <= 1.2 * floor,
            f"{ours_import / floor:.2f}x ({1000 * ours_import:.0f} ms vs {1000 * floor:.0f} ms)",
        )
    )
    return out


def targets_text(results: Results, config: Config) -> str:
    lines = [
        'Each from this one run (medians over its rounds). "Well under 0.1 s" is taken '
        "as under half of it.\n"
    ]
    for label, ok, got in targets(results, config):
        if "nan" in got or got.startswith("0 run"):
            lines.append(f"- **NOT RUN** — {label}")
        else:
            lines.append(f"- **{'PASS' if ok else 'FAIL'}** — {label}: {got}")
    return "\n".join(lines)


def chart(results: Results, config: Config, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "chatsdk": "#2b7bba",
        "aiohttp-raw": "#9e9e9e",
        "httpx-sse": "#e6862e",
        "openai-sse": "#3a9e5d",
        "aiohttp-sse-client": "#b05fb0",
    }
    short = {
        "chatsdk": "chatsdk",
        "aiohttp-raw": "aiohttp\nraw floor",
        "httpx-sse": "httpx-sse\n+pydantic",
        "openai-sse": "openai dec.\n+pydantic",
        "aiohttp-sse-client": "aiohttp-sse-\nclient",
    }
    fig, axes = plt.subplots(2, 3, figsize=(16, 9.5))
    t = results.med

    def bars(ax: Any, peers: Sequence[str], values: Sequence[float], fmt: str) -> None:
        xs = range(len(peers))
        drawn = ax.bar(xs, values, color=[colors[p] for p in peers])
        ax.set_xticks(list(xs), [short[p] for p in peers], fontsize=8)
        for rect, value in zip(drawn, values, strict=True):
            if value == value:
                ax.annotate(
                    fmt.format(value),
                    (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )

    ax = axes[0][0]
    values = [t("throughput", p, "events_per_s") / 1e3 for p in STREAM_PEERS]
    bars(ax, STREAM_PEERS, values, "{:.0f}k")
    ax.set_title(f"1. Throughput, {config.events:,} small events (k events/s)")

    ax = axes[0][1]
    peers = STREAM_PEERS
    width = 0.38
    p50 = [t("latency", p, "p50_us") for p in peers]
    p99 = [t("latency", p, "p99_us") for p in peers]
    xs = list(range(len(peers)))
    ax.bar([x - width / 2 for x in xs], p50, width, label="p50", color=[colors[p] for p in peers])
    ax.bar(
        [x + width / 2 for x in xs],
        p99,
        width,
        label="p99",
        color=[colors[p] for p in peers],
        alpha=0.45,
    )
    ax.set_xticks(xs, [short[p] for p in peers], fontsize=8)
    ax.set_title("2. Per-event latency, paced 1 ms (µs; solid p50, light p99)")

    ax = axes[0][2]
    for peer in CONCURRENCY_PEERS:
        ns = config.concurrency
        ax.plot(
            ns,
            [t("concurrency", f"{peer}@{n}", "events_per_s") / 1e3 for n in ns],
            marker="o",
            color=colors[peer],
            label=short[peer].replace("\n", " "),
        )
    if any(line.get_ydata().max() > 0 for line in ax.get_lines()):  # NaN when not run
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("simultaneous streams")
    ax.set_title("3. Concurrency: total k events/s (log-log)")
    ax.legend(fontsize=8)

    ax = axes[1][0]
    big = [n for n in config.concurrency if n > 1]
    width = 0.8 / len(CONCURRENCY_PEERS)
    for i, peer in enumerate(CONCURRENCY_PEERS):
        ax.bar(
            [j + i * width for j in range(len(big))],
            [t("concurrency", f"{peer}@{n}", "bytes_per_stream") / 1024 for n in big],
            width,
            color=colors[peer],
            label=short[peer].replace("\n", " "),
        )
    ax.set_xticks([j + width for j in range(len(big))], [f"{n} streams" for n in big])
    ax.set_title("3. Memory per open stream (KiB of RSS)")
    ax.legend(fontsize=8)

    ax = axes[1][1]
    values = [t("large", p, "events_per_s") * config.large_size / 2**20 for p in STREAM_PEERS]
    bars(ax, STREAM_PEERS, values, "{:.0f}")
    ax.set_title(f"5. Large events: {config.large_size // 1024} KiB each (MiB/s)")

    ax = axes[1][2]
    base = t("imports", "(interpreter only)", "seconds")
    names = list(IMPORTS)
    values = [1000 * (t("imports", n, "seconds") - base) for n in names]
    drawn = ax.barh(range(len(names)), values, color="#2b7bba")
    ax.set_yticks(range(len(names)), [n.replace(", pydantic", ",\npydantic") for n in names])
    for rect, value in zip(drawn, values, strict=True):
        ax.annotate(
            f"{value:.0f} ms",
            (rect.get_width(), rect.get_y() + rect.get_height() / 2),
            va="center",
            fontsize=8,
        )
    ax.invert_yaxis()
    ax.set_title("6. Import time (ms over a bare interpreter)")

    fig.suptitle(
        f"chatsdk benchmarks — {results.machine['nproc']} cores, Python "
        f"{results.machine['python']}, medians of {config.rounds} interleaved round(s)"
        + (" — QUICK SMOKE RUN" if config.events < 100_000 else ""),
        fontsize=13,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (< 1 min)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per benchmark")
    parser.add_argument(
        "--only", help="comma-separated subset of: " + ", ".join(BENCHMARKS), default=""
    )
    parser.add_argument(
        "--shapes",
        default="",
        help="rows of the shape matrix, comma-separated ('CRLF,pings'), or separated by ';' "
        "when a name has commas ('id,event,data;CRLF', 'id,event,data;'); default all",
    )
    parser.add_argument(
        "--output", type=Path, default=HERE, help="where RESULTS.md and results.png go"
    )
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be >= 1")
    only = [b for b in args.only.split(",") if b]
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    config = Config.for_args(args)
    results = Results(machine=machine_info())
    started = time.perf_counter()
    from common import raise_fd_limit

    raise_fd_limit()
    snapshot = Path(tempfile.mkdtemp(prefix="chatsdk-bench-"))
    results.machine["chatsdk_digest"] = source_digest(freeze_chatsdk(snapshot))
    server = Server()
    try:
        print(f"benchmark server at {server.base_url}; {config.rounds} round(s)", flush=True)
        steps: dict[str, Callable[[], None]] = {
            "shapes": lambda: matrix.bench_shapes(server, config, results, measure),
            "decoder-shapes": lambda: bench_decoder_shapes(config, results),
            "throughput": lambda: bench_throughput(server, config, results),
            "latency": lambda: bench_latency(server, config, results),
            "concurrency": lambda: bench_concurrency(server, config, results),
            "tokens": lambda: bench_tokens(server, config, results),
            "large": lambda: bench_large(server, config, results),
            "imports": lambda: bench_imports(config, results),
        }
        for name in BENCHMARKS:
            if not only or name in only:
                began = time.perf_counter()
                steps[name]()
                print(f"  ({name}: {time.perf_counter() - began:.0f} s)", flush=True)
    finally:
        server.close()
        shutil.rmtree(snapshot, ignore_errors=True)
    results.machine["loadavg_end"] = os.getloadavg()
    results.machine["chatsdk_digest_live_end"] = source_digest(live_package())
    elapsed = time.perf_counter() - started
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "RESULTS.md").write_text(report(results, config, args, elapsed))
    (args.output / "results.json").write_text(
        json.dumps({"machine": results.machine, "runs": results.runs}, indent=1)
    )
    chart(results, config, args.output / "results.png")
    print()
    print(targets_text(results, config))
    print(f"\nwrote {args.output / 'RESULTS.md'} and {args.output / 'results.png'}")
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
