"""Seeded fuzzing of the event-stream path: hostile byte streams, for as long as asked.

Each example is a stream built from adversarial pieces (random bytes, huge lines,
endless data lines, NUL, lone CR, invalid UTF-8, BOMs, valid events with invalid JSON
payloads, unknown events, odd retry and id fields), cut into random chunks. Every
example goes through ``chatsdk.sse.SSEDecoder`` (both parsing paths, small limits);
every ``--stream-every``-th one is also served over HTTP as ``text/event-stream`` to a
``ChatClient`` stream. Allowed outcomes: a clean finish, ``StreamError``,
``APIResponseValidationError`` (a body that opens with ``{`` is a JSON answer, SPEC 1.6), or
(for the stream) ``APIConnectionError``; anything else, or a call still running after 10 s, is a
failure, printed with the seed and example number that reproduce it::

    python benchmarks/fuzz.py --seconds 60 --seed 1
    python benchmarks/fuzz.py --seed 1 --only 4711      # replay one example, verbosely

Exit status 0 when no example failed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

import chatsdk
from chatsdk.sse import SSEDecoder

LIMIT = 2048  # small limits: oversized lines and events are cheap to reach
KEY = "fuzz-benchmark-api-key-0123"

_EVENTS = [
    b"event: message_chunk\n"
    b'data: {"chat_session_id":"s","content_chunk":"hi","finish_reason":null}\n\n',
    b"event: message_chunk\n"
    b'data: {"chat_session_id":"s","content_chunk":"","finish_reason":"stop"}\n\n',
    b"event: records_cited\n"
    b'data: {"citations":[{"number":1,"record":{"type":"documentation"}}]}\n\n',
    b"data: plain\n\n",
    b"id: 7\ndata: x\n\n",
]
_ODD = [
    b"\x00",
    b"id: 1\x002\n\n",
    b"event: message_chunk\x00\ndata: {}\n\n",
    b"\r",
    b"data: a\rdata: b\r\r",
    b"\r\n\r\n",
    b"\xff\xfe",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b": ping\n",
    b"retry: 99999999999999999999999999\n",
    b"retry: -1\n",
    b"event: message_chunk\ndata: {not json\n\n",
    b'event: message_chunk\ndata: {"content_chunk": 5}\n\n',
    b'event: message_chunk\ndata: ["content_chunk"]\n\n',
    b"event: message_chunk\ndata: \n\n",
    b"event: message_chunk\ndata: null\n\n",
    b'event: records_cited\ndata: {"citations": 1}\n\n',
    b'event: records_cited\ndata: {"citations": [{"record": {}}]}\n\n',
    b"event: brand_new\ndata: {}\n\n",
    b"event: \ndata: x\n\n",
    b"event\ndata\n\n",
]


def _json_text(rng: random.Random) -> bytes:
    alphabet = 'ab é\u2028\U0001f600\\"\x00\x1f'
    text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
    return json.dumps(text).encode()


def _deep_json(rng: random.Random) -> bytes:
    # Never closed, so that it fits the line limit: msgspec recurses before it notices.
    depth = rng.randrange(900, LIMIT - 40)
    return b'event: message_chunk\ndata: {"content_chunk":"a","x":' + b"[" * depth + b"\n\n"


PIECES: list[Callable[[random.Random], bytes]] = [
    lambda rng: rng.randbytes(rng.randrange(65)),
    lambda rng: rng.choice(_EVENTS),
    lambda rng: b'event: message_chunk\ndata: {"content_chunk":' + _json_text(rng) + b"}\n\n",
    lambda rng: b"data: " + b"x" * rng.randrange(1, 3 * LIMIT),
    lambda rng: b"data: abcdef\n" * rng.randrange(1, 400),
    lambda rng: rng.choice(_ODD),
]


def example(seed: int, index: int, *, deep_json: bool = False) -> list[bytes]:
    """Example ``index`` of run ``seed``: an adversarial stream cut into chunks."""
    rng = random.Random(seed * 1_000_003 + index)
    pieces = PIECES + ([_deep_json] if deep_json else [])
    data = b"".join(rng.choice(pieces)(rng) for _ in range(rng.randrange(13)))
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(9)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def check_decoder(chunks: Sequence[bytes]) -> None:
    """Raises AssertionError (or anything unexpected) when the decoder misbehaves."""
    for fast_path in (True, False):
        decoder = SSEDecoder(max_line_size=LIMIT, max_event_size=LIMIT, fast_path=fast_path)
        try:
            for chunk in chunks:
                for event in decoder.feed(chunk):
                    assert len(event.data) <= LIMIT, "an event larger than the limit"
                    assert "\x00" not in event.id, "an id with NUL"
        except chatsdk.StreamError as exc:
            assert len(str(exc)) < 2000, "an unbounded error message"


class Bodies:
    """One HTTP server for the whole run; each example's body is served under its own path."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        chunks = self.bodies.get(request.match_info["example"], [])
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for chunk in chunks:
                await response.write(chunk)
            await response.write_eof()
        except ConnectionError:
            pass  # the client gave up on the stream, as it should on bad input
        return response

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{example}/chat_sessions/chat_results", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def check_stream(bodies: Bodies, name: str, chunks: list[bytes]) -> str:
    """The outcome of serving ``chunks`` to a ChatClient stream; raises when not allowed."""
    bodies.bodies[name] = chunks
    try:
        async with chatsdk.ChatClient(
            KEY,
            base_url=f"{bodies.url}/{name}",
            retries=0,
            max_event_size=LIMIT,
            timeout=chatsdk.Timeout(connect=5, read=5, idle=5, total=9),
        ) as client:
            try:
                async with asyncio.timeout(10):
                    async for _ in client.chat.create(integration_id="docs", messages="q"):
                        pass
            except (
                chatsdk.StreamError,
                chatsdk.APIConnectionError,
                chatsdk.APIResponseValidationError,
            ) as exc:
                return type(exc).__name__
            return "finished"
    finally:
        del bodies.bodies[name]


async def run(
    *, seconds: float, seed: int, stream_every: int, deep_json: bool, only: int | None
) -> dict[str, Any]:
    bodies = Bodies()
    await bodies.start()
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    decoder_examples = stream_examples = 0
    began = time.monotonic()
    index = 0 if only is None else only
    try:
        while True:
            if only is None and time.monotonic() - began >= seconds:
                break
            chunks = example(seed, index, deep_json=deep_json)
            try:
                check_decoder(chunks)
                decoder_examples += 1
                if only is not None or index % stream_every == 0:
                    outcomes[await check_stream(bodies, str(index), chunks)] += 1
                    stream_examples += 1
            except Exception as exc:  # every unexpected outcome is reported, not raised
                failures.append(f"--seed {seed} --only {index}: {type(exc).__name__}: {exc}"[:300])
                if only is not None:
                    traceback.print_exc()
            if only is not None:
                print(f"example {index}: {sum(map(len, chunks))} bytes in {len(chunks)} chunks")
                print(repr(b"".join(chunks))[:2000])
                break
            index += 1
    finally:
        await bodies.stop()
    elapsed = time.monotonic() - began
    return {
        "seed": seed,
        "seconds": round(elapsed, 1),
        "decoder_examples": decoder_examples,
        "stream_examples": stream_examples,
        "decoder_examples_per_second": round(decoder_examples / elapsed),
        "stream_outcomes": dict(outcomes),
        "failures": failures,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz")
    parser.add_argument("--seed", type=int, default=1, help="the run's seed")
    parser.add_argument(
        "--stream-every", type=int, default=5, help="also stream every Nth example over HTTP"
    )
    parser.add_argument(
        "--deep-json",
        action="store_true",
        help="include deeply nested JSON payloads (a known failure, see docs/RELIABILITY.md)",
    )
    parser.add_argument("--only", type=int, help="replay this one example and show it")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    result = asyncio.run(
        run(
            seconds=args.seconds,
            seed=args.seed,
            stream_every=args.stream_every,
            deep_json=args.deep_json,
            only=args.only,
        )
    )
    print(
        f"fuzz: seed {result['seed']}, {result['seconds']} s: {result['decoder_examples']} "
        f"decoder examples ({result['decoder_examples_per_second']}/s, both parsing paths), "
        f"{result['stream_examples']} over HTTP ({result['stream_outcomes']}), "
        f"{len(result['failures'])} failures"
    )
    for failure in result["failures"][:20]:
        print("  FAIL", failure)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
