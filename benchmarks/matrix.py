"""The wire-shape matrix: every legal body layout of ``shapes.py``, end to end.

Part of ``make bench`` (``run.py --only shapes,decoder-shapes`` runs it alone;
``--shapes a,b`` picks rows). Each row is one body served by ``server.py`` and read by
chatsdk, by httpx + httpx-sse + pydantic and by the raw aiohttp floor (and, on the Chat
Completions rows, by openai-python's own ``AsyncOpenAI().chat.completions.create(
stream=True)``), each in a fresh worker process, interleaved within each round; the
report quotes medians and headlines the worst row.
"""

from __future__ import annotations

import statistics
import urllib.parse
from collections.abc import Callable
from typing import Any

from shapes import SHAPES, event_body, terminator

MATRIX_PEERS = ["chatsdk", "aiohttp-raw", "httpx-sse"]
COMPLETIONS_PEERS = [*MATRIX_PEERS, "openai"]
LABELS = {
    "chatsdk": "chatsdk",
    "aiohttp-raw": "raw aiohttp floor",
    "httpx-sse": "httpx-sse + pydantic",
    "openai": "openai-python stream",
}


def rows(config: Any) -> list[dict[str, Any]]:
    """Every row: its name, scenario, kind of measurement, peers and expected count."""

    def row(name: str, shape: str, n: int, writes: str) -> dict[str, Any]:
        completions = shape == "completions"
        return {
            "row": name,
            "group": writes,
            "shape": shape,
            "scenario": f"shape|{shape}|{n}|{writes}",
            "kind": "shape",
            "peers": COMPLETIONS_PEERS if completions else MATRIX_PEERS,
            # n chunks, then the final chunk and records_cited ([DONE] is no chunk)
            "events": n + (1 if completions else 2),
        }

    out = [row(shape, shape, config.shape_events, "bulk") for shape in [*SHAPES, "completions"]]
    for shape in ("event,data", "completions"):
        out.append(row(f"{shape}, one event per write", shape, config.token_events, "token"))
    per = config.fanout_per_stream
    streams = config.fanout_streams
    out.append(
        {
            "row": f"{streams:,} concurrent streams, event,data, one event per write",
            "group": "token",
            "shape": "event,data",
            "scenario": f"shape|event,data|{per}|token",
            "kind": "fanout",
            "streams": streams,
            "peers": MATRIX_PEERS,
            "events": (per + 2) * streams,
        }
    )
    if config.shape_rows:
        out = [r for r in out if r["shape"] in config.shape_rows or r["row"] in config.shape_rows]
    return out


def floor_count(row: dict[str, Any]) -> int:
    """What the floor counts: the blank lines of the body (pings have their own)."""
    per = row["scenario"].split("|")[2]
    body = b"".join(event_body(row["shape"], int(per)))
    return body.count(terminator(row["shape"])) * row.get("streams", 1)


def bench_shapes(server: Any, config: Any, results: Any, measure: Callable[..., None]) -> None:
    matrix = rows(config)
    for row in matrix:
        server.prepare(urllib.parse.quote(row["scenario"], safe=""))
        warm = row["scenario"].split("|")
        warm[2] = "200"
        server.prepare(urllib.parse.quote("|".join(warm), safe=""))
    for rnd in range(config.shape_rounds):
        print(f"[shapes] round {rnd + 1}/{config.shape_rounds}", flush=True)
        for row in matrix:
            for peer in row["peers"]:
                expected = floor_count(row) if peer == "aiohttp-raw" else row["events"]
                spec = {
                    "kind": row["kind"],
                    "peer": peer,
                    "base_url": server.base_url,
                    "scenario": row["scenario"],
                }
                if row["kind"] == "fanout":
                    spec["streams"] = row["streams"]
                    spec["per_stream"] = expected // row["streams"]
                    spec["max_connections"] = 0

                def check(result: dict[str, Any], expected: int = expected) -> str | None:
                    if result["events"] != expected:
                        return f"got {result['events']} events, expected {expected}"
                    return None

                measure(results, "shapes", f"{row['row']}@{peer}", spec, check)


def _rate(value: float) -> str:
    if value != value:
        return "-"
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k"


def _per_round(results: Any, row: dict[str, Any], peer: str, metric: str) -> float:
    # chatsdk's rate over the peer's, round by round (each pair measured back to back,
    # so a burst of load on the shared machine mostly hits both), then the median.
    runs = results.runs.get("shapes", {})
    ours = [r.get(metric, float("nan")) for r in runs.get(f"{row['row']}@chatsdk", [])]
    theirs = [r.get(metric, float("nan")) for r in runs.get(f"{row['row']}@{peer}", [])]
    ratios = [a / b for a, b in zip(ours, theirs, strict=False) if b == b and b > 0]
    return statistics.median(ratios) if ratios else float("nan")


def figures(results: Any, config: Any) -> list[dict[str, Any]]:
    """Per row: median events/s of each peer, and chatsdk's ratios, worst row first."""
    out = []
    for row in rows(config):
        rates = {
            p: results.med("shapes", f"{row['row']}@{p}", "events_per_s") for p in row["peers"]
        }
        runs = results.runs.get("shapes", {}).get(f"{row['row']}@chatsdk", [])
        out.append(
            {
                **row,
                "rates": rates,
                "vs_httpx": _per_round(results, row, "httpx-sse", "events_per_s"),
                "of_floor": _per_round(results, row, "aiohttp-raw", "events_per_s"),
                "of_floor_cpu": _per_round(results, row, "aiohttp-raw", "events_per_cpu_s"),
                "vs_openai": (
                    _per_round(results, row, "openai", "events_per_s")
                    if "openai" in rates
                    else None
                ),
                "runs": len(runs),
                "via": next((r.get("via") for r in runs if r.get("via")), ""),
            }
        )
    # The worst row: the lowest share of the floor (bulk and per-token rows alike).
    out.sort(key=lambda f: f["of_floor"] if f["of_floor"] == f["of_floor"] else -1)
    return out


def headline(results: Any, config: Any) -> str:
    """One line on the worst row, for the top of RESULTS.md."""
    figs = [f for f in figures(results, config) if f["runs"]]
    if not figs:
        return ""
    w = figs[0]
    bulk = [f for f in figs if f["group"] == "bulk"]
    worst_httpx = min(bulk, key=lambda f: f["vs_httpx"]) if bulk else None
    text = (
        f"**Headline — the worst row of the wire-shape matrix (§0): {w['row']}**, chatsdk at "
        f"{w['of_floor']:.2f}x the raw aiohttp floor and {w['vs_httpx']:.2f}x "
        "httpx-sse + pydantic"
    )
    if worst_httpx is not None and worst_httpx is not w:
        text += (
            f"; the lowest ratio to httpx-sse + pydantic is {worst_httpx['vs_httpx']:.2f}x "
            f"({worst_httpx['row']})"
        )
    return text + "."


def targets(results: Any, config: Any) -> list[tuple[str, bool, str]]:
    out = []
    bulk = [f for f in figures(results, config) if f["group"] == "bulk"]
    if bulk:
        low = min(bulk, key=lambda f: f["vs_httpx"])
        out.append(
            (
                "every bulk row ≥ 4x httpx-sse + pydantic (the floor of the target)",
                low["vs_httpx"] >= 4,
                f"lowest {low['vs_httpx']:.2f}x ({low['row']})",
            )
        )
    for f in figures(results, config):
        if f["group"] == "bulk":
            out.append(
                (
                    f"{f['row']}: ≥ 6x httpx-sse + pydantic (4x floor) and ≥ 0.3x raw floor",
                    f["vs_httpx"] >= 6 and f["of_floor"] >= 0.3,
                    f"{f['vs_httpx']:.2f}x httpx-sse, {f['of_floor']:.2f}x floor",
                )
            )
        else:
            out.append(
                (
                    f"{f['row']}: ≥ 0.8x raw floor",
                    f["of_floor"] >= 0.8,
                    f"{f['of_floor']:.2f}x floor, {f['vs_httpx']:.2f}x httpx-sse",
                )
            )
        if f["vs_openai"] is not None:
            out.append(
                (
                    f"{f['row']}: ≥ 5x openai-python's stream",
                    f["vs_openai"] >= 5,
                    f"{f['vs_openai']:.2f}x",
                )
            )
    return out


def section(results: Any, config: Any, decoder_table: str | None) -> str:
    figs = figures(results, config)
    if not figs or all(f["runs"] == 0 for f in figs):
        return ""
    worst = figs[0]
    lines = ["## 0. Wire-shape matrix (headline: the worst row)\n"]
    lines.append(
        f"**Worst row: {worst['row']}** — chatsdk {_rate(worst['rates']['chatsdk'])} events/s, "
        f"{worst['of_floor']:.2f}x the raw aiohttp floor, {worst['vs_httpx']:.2f}x "
        "httpx-sse + pydantic"
        + (f", {worst['vs_openai']:.2f}x openai-python" if worst["vs_openai"] else "")
        + ". Rows are ordered worst first (by chatsdk's share of the floor).\n"
    )
    lines.append(
        f"Bulk rows: one stream of {config.shape_events:,} `message_chunk` events (+ final "
        "chunk + `records_cited`; on the completions row + the `finish_reason` chunk and "
        "`data: [DONE]`), written in 64 KiB slices. Per-token rows: "
        f"{config.token_events:,} events, each its own `write()` (a server flushing per "
        f"token); the concurrent row: {config.fanout_streams:,} streams of "
        f"{config.fanout_per_stream} events each, written per token, all at once in one "
        "process. Every client types every event (msgspec for chatsdk, pydantic for the "
        "peers; openai-python its own models) and counts them; the floor counts blank "
        "lines (pings included). Events/s: median over "
        f"{config.shape_rounds} interleaved round(s). Ratios: chatsdk ÷ peer in each round (the "
        "two measured back to back), then the median over rounds, which a burst of load "
        "on this shared machine disturbs less than a ratio of medians; *of floor (CPU)* is "
        "the same with events per CPU-second of each client process (bulk rows only: per "
        "token, the server's writing paces both).\n"
    )
    header = [
        "row",
        "chatsdk ev/s",
        "floor ev/s",
        "httpx-sse ev/s",
        "openai ev/s",
        "of floor",
        "of floor (CPU)",
        "vs httpx-sse",
        "vs openai",
        "runs",
    ]
    table = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for f in figs:
        r = f["rates"]
        table.append(
            "| "
            + " | ".join(
                [
                    f["row"],
                    _rate(r["chatsdk"]),
                    _rate(r["aiohttp-raw"]),
                    _rate(r["httpx-sse"]),
                    _rate(r["openai"]) if "openai" in r else "",
                    f"{f['of_floor']:.2f}",
                    f"{f['of_floor_cpu']:.2f}" if f["group"] == "bulk" else "",
                    f"{f['vs_httpx']:.2f}x",
                    f"{f['vs_openai']:.2f}x" if f["vs_openai"] is not None else "",
                    str(f["runs"]),
                ]
            )
            + " |"
        )
    lines.append("\n".join(table) + "\n")
    lines.append(
        "How each body is made (`benchmarks/shapes.py`, shared by server and decoder bench):\n"
    )
    for name, (_, how) in SHAPES.items():
        lines.append(f"- **{name}**: {how}.")
    lines.append(
        "- **completions**: the Chat Completions wire, data-only events "
        '`data: {"id":"c1","object":"chat.completion.chunk",...,"delta":'
        '{"content":"tok"},...}`, then a `finish_reason: "stop"` chunk and '
        "`data: [DONE]`, served at `POST /chat/completions` (and `/v1/...` for openai-python)."
    )
    via = next((f["via"] for f in figs if f["via"]), "")
    if via:
        lines.append(
            f"- chatsdk read the completions rows through **{via}**"
            + (
                " (this tree has no `client.chat.completions` yet: the row measures chatsdk's "
                "decoder and its `ChatCompletionChunk` type over aiohttp, and picks up the "
                "client API by itself once it exists)."
                if "SSEDecoder" in via
                else "."
            )
        )
    lines.append("")
    if decoder_table:
        lines.append("### Decoder alone, per shape (sans-IO, CPU per event)\n")
        lines.append(
            "`benchmarks/decoder_shapes.py` (runnable alone): each body above, no network "
            "and no JSON, fed to `SSEDecoder` in 64 KiB chunks (`feed_runs`, as the stream "
            "layer reads, and `feed`) and one event per chunk; nanoseconds of CPU per event, "
            "median of interleaved repeats, worst first. To set another version beside it: "
            "`git show REV:chatsdk/sse.py > /tmp/sse_rev.py; python benchmarks/decoder_shapes.py "
            "--compare /tmp/sse_rev.py`.\n"
        )
        lines.append(decoder_table + "\n")
    return "\n".join(lines)
