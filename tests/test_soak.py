"""A short soak: benchmarks/soak.py with 200 concurrent streams for a few seconds.

The server runs in its own process and cycles through every fault phase (drops after
some events, drops right after the headers, 503 and 429 bursts with Retry-After); every
stream must complete with exactly the expected events: none lost, none duplicated, in
order. The full run (1,000 streams, 60 s) and its figures are in docs/RELIABILITY.md.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def load_soak() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"
    spec = importlib.util.spec_from_file_location("chatsdk_benchmarks_soak", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


soak = load_soak()


def test_expected_events_match_what_the_server_sends() -> None:
    keys = soak.expected_events(soak.QUESTIONS[0])
    assert keys[-2] == ("chunk", "", "stop") and keys[-1][0] == "cited"
    assert len(keys) > 10


async def test_200_streams_with_drops_and_bursts_lose_and_duplicate_nothing() -> None:
    result = await soak.run(streams=200, seconds=7.5, seed=7, event_delay=0.02, phase_seconds=1.2)
    print(soak.summary(result))
    assert result["ok"], soak.summary(result)
    assert result["events_lost"] == 0 and result["events_duplicated"] == 0
    assert result["streams_failed"] == 0 and result["streams_unfinished"] == 0
    assert result["streams_completed"] >= 200
    assert result["max_in_flight"] == 200
    # The faults really happened, and every drop was resumed by the client.
    assert set(result["phases"]) == {name for name, _ in soak.fault_phases(200)}
    assert result["server_drops"] > 50 and result["injected_failures"] > 50
    assert result["resumes"] == result["server_drops"]
