"""The demo story: ``chatsdk demo`` in-process and as ``python -m chatsdk demo``."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from chatsdk._demo import run_demo
from chatsdk.cli import main

JWT_RE = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")
STEPS = [
    "[1/6] Start the reference server",
    "[2/6] Backend: mint a client token",
    "[3/6] Browser (https://docs.example.com): stream an answer",
    "[4/6] Browser: a follow-up in the same session",
    "[5/6] Backend: revoke the token",
    "[6/6] Browser: ask again with the revoked token",
]


def check_story(out: str) -> None:
    positions = [out.index(step) for step in STEPS]
    assert positions == sorted(positions)
    assert "embed origin https://docs.example.com, expires after 900 s" in out
    assert "   > How do client tokens work?\n   A client token is a short-lived JWT" in out
    assert "[1] Client tokens and origins - https://chatsdk.dev/docs/client-tokens" in out
    assert "   > Tell me more.\n   Continuing on Client tokens and origins:" in out
    assert "refused as expected: 401 " in out
    assert out.rstrip().endswith("Done: the server is stopped.")
    # Neither the API key nor the client token is ever shown.
    assert "chatsdk-test-key" not in out and not JWT_RE.search(out)
    assert max(len(line) for line in out.splitlines()) <= 80


def test_demo_command_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shell's settings must not leak into the demo's own clients.
    monkeypatch.setenv("CHATSDK_API_KEY", "an-exported-key-that-must-not-be-used")
    monkeypatch.setenv("CHATSDK_CHAT_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CHATSDK_ORIGIN", "https://elsewhere.example")
    assert main(["demo"]) == 0
    captured = capsys.readouterr()
    check_story(captured.out)
    assert captured.err == ""
    assert os.environ["CHATSDK_API_KEY"] == "an-exported-key-that-must-not-be-used"


@pytest.mark.anyio
async def test_run_demo_with_pacing() -> None:
    out = io.StringIO()
    await run_demo(out, pace=0.001)
    check_story(out.getvalue())


def test_python_m_chatsdk_demo() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSDK_")}
    proc = subprocess.run(
        [sys.executable, "-m", "chatsdk", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    check_story(proc.stdout)
    assert "Traceback" not in proc.stderr
