"""The demo story: ``chatsdk demo`` in-process and as ``python -m chatsdk demo``."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chatsdk._demo import run_demo
from chatsdk.cli import main

JWT_RE = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")
SOURCE = "[1] Client tokens and origins - https://chatsdk.dev/docs/client-tokens"
BROWSER_STEP = "[3/6] Browser (https://docs.example.com): stream an answer"
STEPS = {
    "completions": [
        "[1/6] Start the reference server",
        "[2/6] Backend: mint a client token",
        BROWSER_STEP,
        "[4/6] Browser: a follow-up, sent with the conversation so far",
        "[5/6] Backend: revoke the token",
        "[6/6] Browser: ask again with the revoked token",
    ],
    "chat-results": [
        "[1/6] Start the reference server",
        "[2/6] Backend: mint a client token",
        BROWSER_STEP,
        "[4/6] Browser: a follow-up in the same session",
        "[5/6] Backend: revoke the token",
        "[6/6] Browser: ask again with the revoked token",
    ],
}


def check_story(out: str, api: str = "completions") -> None:
    positions = [out.index(step) for step in STEPS[api]]
    assert positions == sorted(positions)
    assert "embed origin https://docs.example.com, expires after 900 s" in out
    assert "   > How do client tokens work?\n   A client token is a short-lived JWT" in out
    assert out.count(SOURCE) == 2  # the first answer's sources and the follow-up's
    if api == "completions":
        assert out.startswith("chatsdk demo: a backend mints a client token, a browser chats")
        assert "Chat Completions" in out.splitlines()[1]
        # No session: the page sends the conversation so far with the follow-up.
        follow_up = "   > Tell me more.\n   (with the 2 earlier messages: the server keeps none)\n"
        assert follow_up + "   Continuing on Client tokens and origins:" in out
        assert "answer confidence: very_confident" in out and "session" not in out
    else:
        assert "chat_results" in out.splitlines()[1]
        assert "   > Tell me more.\n   Continuing on Client tokens and origins:" in out
        assert re.search(r"^   session \S+$", out, re.MULTILINE)
    refused = out[out.index("[6/6]") :]
    assert re.search(r"\n   refused as expected: 401 [^\n]*revoked[^\n]*\n", refused), refused
    assert "Continuing" not in refused
    assert out.rstrip().endswith("Done: the server is stopped.")
    # Neither the API key nor the client token is ever shown.
    assert "chatsdk-test-key" not in out and not JWT_RE.search(out)
    assert max(len(line) for line in out.splitlines()) <= 80


@pytest.mark.parametrize("api", ["completions", "chat-results"])
def test_demo_command_in_process(
    api: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shell's settings must not leak into the demo's own clients.
    monkeypatch.setenv("CHATSDK_API_KEY", "an-exported-key-that-must-not-be-used")
    monkeypatch.setenv("CHATSDK_CHAT_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CHATSDK_ORIGIN", "https://elsewhere.example")
    monkeypatch.setenv("CHATSDK_TIMEOUT", "abc")
    argv = ["demo"] if api == "completions" else ["demo", "--api", api]
    assert main(argv) == 0
    captured = capsys.readouterr()
    check_story(captured.out, api)
    assert captured.err == ""
    assert os.environ["CHATSDK_API_KEY"] == "an-exported-key-that-must-not-be-used"


@pytest.mark.anyio
@pytest.mark.parametrize("api", ["completions", "chat-results"])
async def test_run_demo_with_pacing(api: str) -> None:
    out = io.StringIO()
    await run_demo(out, pace=0.001, api=api)  # type: ignore[arg-type]
    check_story(out.getvalue(), api)


@pytest.mark.anyio
async def test_run_demo_refuses_an_unknown_api() -> None:
    with pytest.raises(ValueError, match="api must be"):
        await run_demo(io.StringIO(), api="chat")  # type: ignore[arg-type]


def test_demo_refuses_an_unknown_api(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--api", "chat"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("chatsdk: error: argument --api: invalid choice") and err.count("\n") == 1


@pytest.mark.parametrize("api", [None, "chat-results"])
def test_the_demo_script(api: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSDK_")}
    argv = ["demo"] if api is None else ["demo", "--api", api]
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "chatsdk"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    check_story(proc.stdout, api or "completions")
    assert proc.stderr == ""


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
