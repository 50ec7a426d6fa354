"""The ``chatsdk`` console script against a real reference server on loopback.

Most tests call ``main([...])`` in-process; a few run the installed script as a
subprocess (``--help``, ``serve`` stopped with SIGTERM, Ctrl-C during a chat).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatsdk import __version__
from chatsdk.cli import main
from chatsdk.server import ReferenceServer

KEY = "cli-test-secret-key-8f3a2c"
PROJECT = "cli-project"
ORIGIN = "https://docs.example.com"
QUESTION = "How do client tokens work?"
FOLLOW_UP = "Tell me more."
VENV_BIN = Path(sys.executable).parent
SESSION_RE = re.compile(r"^session: (\S+)$", re.MULTILINE)
JWT_RE = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer(api_key=KEY, project=PROJECT).serve_in_thread() as running:
        yield running


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CHATSDK_* setting of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.startswith("CHATSDK_"):
            monkeypatch.delenv(name)


@dataclass
class Result:
    code: int
    out: str
    err: str


class Run:
    """Runs ``main`` in-process and checks what every run must satisfy."""

    def __init__(self, capsys: pytest.CaptureFixture[str], server: ReferenceServer):
        self.capsys = capsys
        self.server = server

    def __call__(self, *argv: str, auth: bool = True) -> Result:
        prefix = ["--base-url", self.server.base_url]
        if auth:
            prefix += ["--api-key", KEY, "--project", PROJECT]
        code = main([*prefix, *argv])
        captured = self.capsys.readouterr()
        result = Result(code, captured.out, captured.err)
        check_no_secret_or_traceback(result)
        return result


def check_no_secret_or_traceback(result: Result) -> None:
    text = result.out + result.err
    assert KEY not in text
    assert "Traceback" not in text
    if result.code != 0:
        assert result.err.count("\n") == 1, result.err
        assert result.err.startswith("chatsdk: error: "), result.err


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], server: ReferenceServer) -> Run:
    return Run(capsys, server)


def session_of(err: str) -> str:
    found = SESSION_RE.findall(err)
    assert found, err
    return str(found[-1])


# -- help and version -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["serve"],
        ["chat"],
        ["token"],
        ["token", "create"],
        ["token", "revoke"],
        ["demo"],
    ],
)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: chatsdk")
    assert " ".join(["chatsdk", *argv]) in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"chatsdk {__version__}"


def test_usage_errors_are_one_line_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["nope"], [], ["token"], ["chat", "--port", "1"], ["serve", "--port", "x"]):
        code = main(argv)
        result = Result(code, *capsys.readouterr())
        assert code == 2, argv
        check_no_secret_or_traceback(result)


# -- chat -------------------------------------------------------------------------------


class Recorder(io.StringIO):
    """A stdout that remembers whether each write was flushed before the next one."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.unflushed = 0

    def write(self, s: str) -> int:
        self.writes.append(s)
        self.unflushed += 1
        return super().write(s)

    def flush(self) -> None:
        self.unflushed = 0
        super().flush()


def test_chat_streams_the_answer_to_stdout(
    server: ReferenceServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    monkeypatch.setattr(sys, "stdout", recorder)
    code = main(
        ["--base-url", server.base_url, "--api-key", KEY, "--project", PROJECT, "chat", QUESTION]
    )
    err = capsys.readouterr().err
    out = recorder.getvalue()
    check_no_secret_or_traceback(Result(code, out, err))
    assert code == 0
    assert out.startswith("A client token is a short-lived JWT")
    assert out.endswith("\n") and "session" not in out and "sources" not in out
    # Streamed: many pieces, each flushed as it came.
    assert len(recorder.writes) > 10
    assert recorder.unflushed == 0
    source = "[1] Client tokens and origins - https://chatsdk.dev/docs/client-tokens"
    assert f"sources:\n  {source}\n" in err
    session_of(err)


def test_session_continues_the_conversation(run: Run) -> None:
    first = run("chat", QUESTION)
    assert first.code == 0
    session = session_of(first.err)
    second = run("chat", "--session", session, FOLLOW_UP)
    assert second.code == 0
    assert second.out.startswith("Continuing on Client tokens and origins:")
    assert session_of(second.err) == session
    # Alone, the follow-up has no context to continue from.
    assert not run("chat", FOLLOW_UP).out.startswith("Continuing")


def test_interactive_mode_reads_questions_until_an_empty_line(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUESTION}\n{FOLLOW_UP}\n\nnot asked\n"))
    result = run("chat", "--integration-id", "docs")
    assert result.code == 0
    assert result.out.startswith("A client token is a short-lived JWT")
    assert "\nContinuing on Client tokens and origins:" in result.out
    assert "not asked" not in result.out
    sessions = SESSION_RE.findall(result.err)
    assert len(sessions) == 2 and sessions[0] == sessions[1]
    assert "> " not in result.err  # no prompt when stdin is not a terminal


def test_interactive_mode_ends_at_end_of_input(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(QUESTION))  # no final newline
    result = run("chat")
    assert result.code == 0 and result.out.startswith("A client token")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert run("chat") == Result(0, "", "")


def test_settings_come_from_the_environment(
    server: ReferenceServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATSDK_BASE_URL", server.base_url)
    monkeypatch.setenv("CHATSDK_API_KEY", KEY)
    monkeypatch.setenv("CHATSDK_PROJECT", PROJECT)
    code = main(["chat", QUESTION])
    result = Result(code, *capsys.readouterr())
    check_no_secret_or_traceback(result)
    assert code == 0 and result.out.startswith("A client token")


# -- tokens -----------------------------------------------------------------------------


def test_token_create_revoke_and_chat_with_the_token(
    run: Run, server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = run("token", "create", "--origin", ORIGIN, "--expires-after", "600")
    assert created.code == 0
    token = created.out.strip()
    assert JWT_RE.fullmatch(token) and created.out.count("\n") == 1
    assert token not in created.err and "600 s" in created.err

    # A token on the command line wins over an API key exported in the environment.
    monkeypatch.setenv("CHATSDK_API_KEY", "some-other-key")
    with_token = ["--project", PROJECT, "--session-token", token, "--origin", ORIGIN]
    chat = run(*with_token, "chat", QUESTION, auth=False)
    assert chat.code == 0 and chat.out.startswith("A client token")
    assert token not in chat.out + chat.err
    monkeypatch.delenv("CHATSDK_API_KEY")

    # The connection options are also accepted after the command name.
    evil = "https://evil.example"
    wrong_origin = run("chat", *with_token[:4], "--origin", evil, QUESTION, auth=False)
    assert wrong_origin.code == 1 and "403" in wrong_origin.err

    revoked = run("token", "revoke", token)
    assert revoked == Result(0, "", "token revoked\n")
    assert run("token", "revoke", token).code == 0  # twice is fine

    refused = run(*with_token, "chat", QUESTION, auth=False)
    assert refused.code == 1 and "401" in refused.err and "revoked" in refused.err
    assert token not in refused.err


def test_token_create_json(run: Run) -> None:
    result = run("token", "create", "--origin", ORIGIN, "--user", "u-42", "--json")
    assert result.code == 0
    body = json.loads(result.out)
    assert body["embed_origin"] == ORIGIN and body["expires_after"] == 3600
    assert body["user_identifier"] == "u-42" and body["status"]
    assert JWT_RE.fullmatch(body["client_token"])


def test_token_revoke_reads_the_token_from_stdin(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    token = run("token", "create", "--origin", ORIGIN).out.strip()
    monkeypatch.setattr(sys, "stdin", io.StringIO(token + "\n"))
    assert run("token", "revoke", "-").code == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    empty = run("token", "revoke", "-")
    assert empty.code == 2 and "no token on stdin" in empty.err


# -- errors -----------------------------------------------------------------------------


def test_invalid_arguments_exit_2(run: Run) -> None:
    bad_origin = run("token", "create", "--origin", "docs.example.com/path")
    assert bad_origin.code == 2 and "embed_origin" in bad_origin.err
    too_long = run("token", "create", "--origin", ORIGIN, "--expires-after", "7200")
    assert too_long.code == 2 and "expires_after" in too_long.err
    empty_question = run("chat", "  ")
    assert empty_question.code == 2


def test_wrong_api_key_is_refused_without_showing_it(
    server: ReferenceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "wrong-secret-key-1234"
    for argv in (["token", "create", "--origin", ORIGIN], ["chat", QUESTION]):
        code = main(
            ["--base-url", server.base_url, "--api-key", wrong, "--project", PROJECT, *argv]
        )
        result = Result(code, *capsys.readouterr())
        check_no_secret_or_traceback(result)
        assert code == 1 and "401" in result.err and wrong not in result.err


def test_missing_settings_are_usage_errors(
    server: ReferenceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["chat", QUESTION], "--base-url"),
        (["--base-url", server.base_url, "chat", QUESTION], "--api-key"),
        (["--base-url", server.base_url, "token", "create", "--origin", ORIGIN], "--project"),
        (["--base-url", server.base_url, "--session-token", "t", "chat", QUESTION], "--project"),
    ]
    for argv, hint in cases:
        code = main(argv)
        result = Result(code, *capsys.readouterr())
        check_no_secret_or_traceback(result)
        assert code == 2 and hint in result.err, (argv, result.err)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code = main(["--base-url", url, "--api-key", KEY, "--project", PROJECT, "chat", QUESTION])
    result = Result(code, *capsys.readouterr())
    check_no_secret_or_traceback(result)
    assert code == 1 and "cannot connect" in result.err


# -- subprocesses -----------------------------------------------------------------------


def subprocess_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CHATSDK_")}


def test_console_script_and_module_run() -> None:
    script = subprocess.run(
        [str(VENV_BIN / "chatsdk"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env=subprocess_env(),
    )
    assert script.returncode == 0 and script.stdout.startswith("usage: chatsdk")
    module = subprocess.run(
        [sys.executable, "-m", "chatsdk", "token", "create"],
        capture_output=True,
        text=True,
        timeout=30,
        env=subprocess_env(),
    )
    assert module.returncode == 2
    assert module.stderr.startswith("chatsdk: error: ") and module.stderr.count("\n") == 1


def test_serve_prints_its_url_and_stops_cleanly_on_sigterm(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {**subprocess_env(), "CHATSDK_API_KEY": KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatsdk", "serve", "--port", "0", "--project", PROJECT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        found = re.fullmatch(
            r"chatsdk reference server on (http://127\.0\.0\.1:\d+) \(project cli-project, "
            r"API key as configured\)\n",
            banner,
        )
        assert found, banner
        url = found.group(1)
        code = main(["--base-url", url, "--api-key", KEY, "--project", PROJECT, "chat", QUESTION])
        assert code == 0 and capsys.readouterr().out.startswith("A client token")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert KEY not in banner + out + err and "Traceback" not in err


def test_serve_reports_the_default_test_key_and_faults() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatsdk", "serve", "--port", "0", "--fail-first", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        banner += proc.stdout.readline()  # the address comes last: it means "ready"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert banner.startswith("faults: fail_first=1\nchatsdk reference server on http://")
    assert banner.endswith("(project demo, default test API key)\n")
    assert "chatsdk-test-key" not in banner + out + err
    assert proc.returncode == 0, err


def test_ctrl_c_during_interactive_chat_exits_130(server: ReferenceServer) -> None:
    env = {
        **subprocess_env(),
        "CHATSDK_BASE_URL": server.base_url,
        "CHATSDK_API_KEY": KEY,
        "CHATSDK_PROJECT": PROJECT,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatsdk", "chat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(QUESTION + "\n")
        proc.stdin.flush()
        assert proc.stderr.readline().startswith("sources:")  # the answer is done
        proc.send_signal(signal.SIGINT)  # now waiting for the next question
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert out.startswith("A client token") and "Traceback" not in err
