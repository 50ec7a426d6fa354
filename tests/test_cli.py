"""The ``chatsdk`` console script against a real reference server on loopback.

Most tests call ``main([...])`` in-process; a few run the installed script as a
subprocess (``--help``, ``serve`` stopped with SIGTERM, Ctrl-C during a chat).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import io
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from chatsdk import __version__
from chatsdk.cli import main
from chatsdk.server import Faults, ReferenceServer

KEY = "cli-test-secret-key-8f3a2c"
PROJECT = "cli-project"
ORIGIN = "https://docs.example.com"
QUESTION = "How do client tokens work?"
FOLLOW_UP = "Tell me more."
VENV_BIN = Path(sys.executable).parent
SESSION_RE = re.compile(r"^session: (\S+)$", re.MULTILINE)
JWT_RE = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")
SOURCE = "[1] Client tokens and origins - https://chatsdk.dev/docs/client-tokens"


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
    # Chat Completions (the default): the sources are the provideLinks tool call's.
    assert err == f"sources:\n  {SOURCE}\n"


def test_session_continues_the_conversation(run: Run) -> None:
    first = run("chat", "--api", "chat-results", QUESTION)
    assert first.code == 0
    assert f"sources:\n  {SOURCE}\n" in first.err
    session = session_of(first.err)
    second = run("chat", "--api", "chat-results", "--session", session, FOLLOW_UP)
    assert second.code == 0
    assert second.out.startswith("Continuing on Client tokens and origins:")
    assert session_of(second.err) == session
    # Alone, the follow-up has no context to continue from.
    alone = run("chat", "--api", "chat-results", FOLLOW_UP)
    assert alone.code == 0 and not alone.out.startswith("Continuing")
    assert not run("chat", FOLLOW_UP).out.startswith("Continuing")  # on completions too


def test_interactive_mode_reads_questions_until_an_empty_line(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUESTION}\n{FOLLOW_UP}\n\nnot asked\n"))
    result = run("chat", "--api", "chat-results", "--integration-id", "docs")
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
    assert bad_origin.code == 2 and "--origin must be an origin like" in bad_origin.err
    for value in ("7200", "0", "-1"):  # one message, the SDK's range, for every bad value
        bad = run("token", "create", "--origin", ORIGIN, f"--expires-after={value}")
        assert bad.code == 2
        assert f"--expires-after must be between 1 and 3600 seconds, got {value}" in bad.err
    empty_question = run("chat", "  ")
    assert empty_question == Result(2, "", "chatsdk: error: the question is empty\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["chat", "--api", "chat-results", "--session", "", QUESTION], "--session must be a"),
        (
            ["chat", "--api", "chat-results", "--integration-id", "", QUESTION],
            "--integration-id must be a non-empty",
        ),
        (["chat", "--model", "", QUESTION], "--model must be a non-empty string"),
        (["chat", "--origin", "docs.example.com", QUESTION], "error: --origin must be"),
        (["--project", "", "chat", QUESTION], "error: --project must not be empty"),
        (["token", "revoke", ""], "the token to revoke is empty"),
    ],
)
def test_errors_name_the_options_not_the_sdk_parameters(
    run: Run, argv: list[str], message: str
) -> None:
    result = run(*argv)
    assert result.code == 2 and message in result.err, result.err
    sdk_names = ("messages[", "message.content", "chat_session_id", "integration_id")
    assert not any(name in result.err for name in (*sdk_names, "embed_origin", "user_identifier"))
    assert not result.err.startswith(("chatsdk: error: model", "chatsdk: error: project"))
    assert "CHATSDK_" not in result.err  # the user typed an option: no variable is named


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CHATSDK_ORIGIN", "docs.example.com", "error: CHATSDK_ORIGIN must be an origin like"),
        ("CHATSDK_PROJECT", "a\nb", "error: CHATSDK_PROJECT contains a control character"),
        ("CHATSDK_API_KEY", "k\x7fey-123456", "error: CHATSDK_API_KEY contains a control"),
    ],
)
def test_errors_about_variables_name_the_variables(
    server: ReferenceServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    message: str,
) -> None:
    if variable != "CHATSDK_API_KEY":
        monkeypatch.setenv("CHATSDK_API_KEY", KEY)
    monkeypatch.setenv("CHATSDK_PROJECT", PROJECT)
    monkeypatch.setenv(variable, value)
    code = main(["--base-url", server.base_url, "chat", QUESTION])
    result = Result(code, *capsys.readouterr())
    check_no_secret_or_traceback(result)
    assert code == 2 and message in result.err, result.err
    assert result.err.count(variable) == 1 and " --" not in result.err


def test_bad_base_url_is_named_as_the_user_set_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code = main(["--base-url", "ftp://x", "--api-key", KEY, "--project", PROJECT, "chat", "hi"])
    result = Result(code, *capsys.readouterr())
    check_no_secret_or_traceback(result)
    assert code == 2 and result.err == (
        "chatsdk: error: --base-url must be an absolute http:// or https:// URL, got 'ftp://x'\n"
    )

    monkeypatch.setenv("CHATSDK_BASE_URL", "ftp://x")
    code = main(["--api-key", KEY, "--project", PROJECT, "chat", "hi"])
    result = Result(code, *capsys.readouterr())
    check_no_secret_or_traceback(result)
    assert code == 2 and result.err.startswith("chatsdk: error: CHATSDK_BASE_URL must be an")
    assert "--base-url" not in result.err


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


NEED_CREDENTIALS = (
    "chatsdk: error: chat operations need --api-key (server side) or --session-token "
    "(a client token from 'chatsdk token create')\n"
)


def test_missing_settings_are_the_sdks_errors_in_cli_terms(
    server: ReferenceServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.base_url
    token = ["--session-token", "t" * 20]
    cases = [
        # No URL anywhere is the real services (SPEC 1.9), not an error: what is missing
        # is the credentials, found before anything is sent.
        (["chat", QUESTION], NEED_CREDENTIALS),
        (["chat", "--api", "chat-results", QUESTION], NEED_CREDENTIALS),
        (["--base-url", url, "chat", QUESTION], NEED_CREDENTIALS),
        (
            ["--base-url", url, "token", "create", "--origin", ORIGIN],
            "chatsdk: error: token operations need the secret API key and the project: pass "
            "--api-key and --project (or set CHATSDK_API_KEY and CHATSDK_PROJECT)\n",
        ),
        (
            ["--base-url", url, *token, "chat", QUESTION],
            "chatsdk: error: a client token must be sent with its project: pass --project "
            "(or set CHATSDK_PROJECT)\n",
        ),
        (
            ["--base-url", url, "--api-key", KEY, *token, "chat", QUESTION],
            "chatsdk: error: pass either --api-key (server side) or --session-token (a client "
            "token), not both: which one authenticates would be a guess\n",
        ),
    ]
    for argv, message in cases:
        code = main(argv)
        result = Result(code, *capsys.readouterr())
        check_no_secret_or_traceback(result)
        assert (code, result.err) == (2, message), argv

    # A misspelled variable: the SDK's hint comes through.
    monkeypatch.setenv("CHATSDK_APIKEY", KEY)
    code = main(["--base-url", url, "chat", QUESTION])
    result = Result(code, *capsys.readouterr())
    assert code == 2 and "(did you mean CHATSDK_API_KEY for CHATSDK_APIKEY?)" in result.err


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


def run_serve(
    *argv: str, lines: int, stop: signal.Signals, env: dict[str, str] | None = None
) -> tuple[list[str], str, str, int]:
    """Start ``chatsdk serve --port 0 ARGV``, read its first lines, stop it with ``stop``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatsdk", "serve", "--port", "0", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**subprocess_env(), **(env or {})},
    )
    try:
        assert proc.stdout is not None
        first = [proc.stdout.readline() for _ in range(lines)]  # the address last: "ready"
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return first, out, err, proc.returncode


def test_serve_reports_the_default_test_key_and_faults() -> None:
    first, out, err, code = run_serve("--fail-first", "1", lines=2, stop=signal.SIGINT)
    banner = "".join(first)
    assert banner.startswith("faults: fail_first=1\nchatsdk reference server on http://")
    # The built-in test key is public and the user needs it: it is shown (a key of the
    # user's own never is: see test_serve_prints_its_url_and_stops_cleanly_on_sigterm).
    assert banner.endswith("(project demo, API key chatsdk-test-key)\n")
    assert code == 0, err
    assert out == "" and "Traceback" not in err


def test_serve_takes_its_key_and_project_from_the_client_settings() -> None:
    # Resolved by Settings like a client's; the timeout, of no use to a server, is not read.
    env = {"CHATSDK_API_KEY": KEY, "CHATSDK_PROJECT": PROJECT, "CHATSDK_TIMEOUT": "abc"}
    first, _, err, code = run_serve(lines=1, stop=signal.SIGTERM, env=env)
    assert code == 0, err
    assert first[0].endswith(f"(project {PROJECT}, API key as configured)\n")
    assert KEY not in first[0] + err


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
        # The rest of the sources is still being written: let the CLI get back to
        # waiting for the next question, which is what this test is about (a Ctrl-C
        # that lands while the answer's last lines are written is another case).
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # now waiting for the next question
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert out.startswith("A client token") and "Traceback" not in err


# -- chat --json ------------------------------------------------------------------------


def test_chat_json_prints_each_completion_event_then_the_result(run: Run) -> None:
    result = run("chat", "--json", QUESTION)
    assert result.code == 0 and result.err == ""
    lines = [json.loads(line) for line in result.out.splitlines()]
    *events, last = lines
    assert all(set(e) == {"event", "data"} for e in events)
    names = [e["event"] for e in events]
    assert set(names) == {"chunk", "links", "annotations"}
    assert names.count("links") == names.count("annotations") == 1
    chunks = [e["data"] for e in events if e["event"] == "chunk"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(
        choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"]
    )
    links = next(e["data"]["links"] for e in events if e["event"] == "links")
    assert links[0]["url"] == "https://chatsdk.dev/docs/client-tokens"
    annotations = next(e["data"] for e in events if e["event"] == "annotations")
    assert annotations == {"answer_confidence": "very_confident"}

    final = last["result"]
    assert set(last) == {"result"} and text.startswith("A client token")
    assert final["message"]["role"] == "assistant" and final["message"]["content"] == text
    assert final["model"] == "inkeep-qa-expert" and final["id"] == chunks[0]["id"]
    assert final["links"] == links and final["answer_confidence"] == "very_confident"
    assert final["usage"]["total_tokens"] > 0  # the CLI asks for the usage
    assert "chat_session_id" not in final  # no session on this wire


def test_chat_json_on_chat_results_keeps_its_shape(run: Run) -> None:
    result = run("chat", "--api", "chat-results", "--json", QUESTION)
    assert result.code == 0 and result.err == ""
    lines = [json.loads(line) for line in result.out.splitlines()]
    *events, last = lines
    assert all(set(e) == {"event", "data"} for e in events)
    names = [e["event"] for e in events]
    assert names.count("records_cited") == 1 and names[0] == "message_chunk"
    text = "".join(e["data"]["content_chunk"] for e in events if e["event"] == "message_chunk")
    final = last["result"]
    assert final["message"]["content"] == text and text.startswith("A client token")
    assert final["finish_reason"] == "stop"
    assert final["citations"][0]["record"]["url"].startswith("https://chatsdk.dev/docs/")
    session = final["chat_session_id"]
    assert session and events[0]["data"]["chat_session_id"] == session

    # The session id is there for a script to continue with.
    follow = run("chat", "--api", "chat-results", "--json", "--session", session, FOLLOW_UP)
    again = json.loads(follow.out.splitlines()[-1])["result"]
    assert again["chat_session_id"] == session
    assert again["message"]["content"].startswith("Continuing on Client tokens and origins:")


def test_chat_json_in_interactive_mode_gives_a_result_per_question(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUESTION}\n{FOLLOW_UP}\n"))
    result = run("chat", "--api", "chat-results", "--json")
    assert result.code == 0 and result.err == ""
    results = [json.loads(x)["result"] for x in result.out.splitlines() if '"result"' in x[:12]]
    assert len(results) == 2 and results[0]["chat_session_id"] == results[1]["chat_session_id"]

    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUESTION}\n{FOLLOW_UP}\n"))
    result = run("chat", "--json")
    assert result.code == 0 and result.err == ""
    results = [json.loads(x)["result"] for x in result.out.splitlines() if '"result"' in x[:12]]
    assert len(results) == 2
    assert results[1]["message"]["content"].startswith("Continuing on Client tokens")


# -- --timeout ----------------------------------------------------------------------------


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(
    ("argv", "where"),
    [
        (["chat", QUESTION], "option"),
        (["chat", QUESTION], "environment"),
        (["token", "create", "--origin", ORIGIN], "option"),
        (["token", "revoke", "some-client-token"], "environment"),
    ],
    ids=["chat-option", "chat-environment", "token create", "token revoke"],
)
def test_timeout_bounds_every_command_that_talks_to_a_server(
    argv: list[str], where: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with silent_server() as url:
        if where == "option":
            argv = [*argv, "--timeout", "0.3"]
        else:
            monkeypatch.setenv("CHATSDK_TIMEOUT", "0.3")
        started = time.monotonic()
        code = main(["--base-url", url, "--api-key", KEY, "--project", PROJECT, *argv])
        elapsed = time.monotonic() - started
    result = Result(code, *capsys.readouterr())
    check_no_secret_or_traceback(result)
    assert code == 1 and "0.3 s" in result.err, result.err
    assert elapsed < 10  # retried twice by default, each attempt cut at 0.3 s


@pytest.mark.parametrize("value", ["abc", "0", "-1", "inf", "nan", ""])
def test_a_bad_timeout_option_is_a_clear_usage_error(run: Run, value: str) -> None:
    result = run("chat", "--timeout", value, QUESTION)
    assert result.code == 2
    assert result.err.startswith("chatsdk: error: --timeout: expected a number of seconds > 0")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "CHATSDK_TIMEOUT must be a number of seconds, got 'abc'"),
        ("0", "CHATSDK_TIMEOUT must be a positive number of seconds, got 0.0"),
        ("-1", "CHATSDK_TIMEOUT must be a positive number of seconds, got -1.0"),
        ("inf", "CHATSDK_TIMEOUT must be a positive number of seconds, got inf"),
        ("nan", "CHATSDK_TIMEOUT must be a positive number of seconds, got nan"),
    ],
)
@pytest.mark.parametrize("command", [["token", "create", "--origin", ORIGIN], ["chat", QUESTION]])
def test_a_bad_timeout_variable_is_the_sdks_error_once(
    run: Run, monkeypatch: pytest.MonkeyPatch, value: str, message: str, command: list[str]
) -> None:
    """The CLI reads no variable itself: Settings.resolve reports it, once, in its words."""
    monkeypatch.setenv("CHATSDK_TIMEOUT", value)
    from_env = run(*command, "--timeout", "5")  # the option wins: the variable is not read
    assert from_env.code == 0, from_env.err
    from_env = run(*command)
    assert from_env.code == 2
    assert from_env.err.startswith(f"chatsdk: error: {message}"), from_env.err
    assert from_env.err.count("TIMEOUT") == 1 and "--timeout" not in from_env.err


def test_an_empty_timeout_variable_counts_as_unset(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATSDK_TIMEOUT", "")
    assert run("chat", QUESTION).code == 0


def test_a_generous_timeout_lets_the_answer_through(run: Run) -> None:
    result = run("chat", "--timeout", "30", QUESTION)
    assert result.code == 0 and result.out.startswith("A client token")


# -- waiting for the first event ----------------------------------------------------------


WAITING = "waiting for the first event..."


@pytest.fixture(scope="module")
def slow_server() -> Iterator[ReferenceServer]:
    """Its first answer is a 503 with Retry-After: 1, so the first event is a second away."""
    with ReferenceServer(api_key=KEY, project=PROJECT).serve_in_thread() as running:
        yield running


def chat_env(server: ReferenceServer) -> dict[str, str]:
    return {
        **subprocess_env(),
        "CHATSDK_BASE_URL": server.base_url,
        "CHATSDK_API_KEY": KEY,
        "CHATSDK_PROJECT": PROJECT,
    }


@pytest.mark.parametrize("api", ["completions", "chat-results"])
def test_a_terminal_shows_it_is_waiting_until_text_arrives(
    slow_server: ReferenceServer, api: str
) -> None:
    slow_server.faults = Faults(fail_first=1, retry_after="1")
    env = chat_env(slow_server)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatsdk", "chat", "--api", api, QUESTION],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 4096)
                except OSError:  # EIO: the other side is closed
                    break
                if not data:
                    break
                screen += data
            elif proc.poll() is not None:
                break
        proc.wait(timeout=10)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = screen.decode()
    assert proc.returncode == 0, text
    assert text.startswith("\r" + WAITING), text
    assert f"\r{WAITING} 1 s" in text  # it counts the seconds
    wiped = text.index("\r\x1b[K")
    assert wiped < text.index("A client token") and text.count(WAITING) == text[:wiped].count(
        WAITING
    )
    assert "Traceback" not in text and KEY not in text


def test_a_pipe_gets_no_waiting_notice(slow_server: ReferenceServer) -> None:
    slow_server.faults = Faults(fail_first=1, retry_after="1")
    env = chat_env(slow_server)
    done = subprocess.run(
        [sys.executable, "-m", "chatsdk", "chat", QUESTION],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("A client token")
    assert WAITING not in done.stderr and "\x1b" not in done.stdout + done.stderr
    assert done.stderr.startswith("sources:")


# -- serve: fault flags and the options of each command -------------------------------------


def fault_argv() -> tuple[list[str], dict[str, object]]:
    """A flag for every field of Faults, with a value of its type, and the expected fields."""
    argv: list[str] = []
    expected: dict[str, object] = {}
    for field in msgspec.structs.fields(Faults):
        flag = "--" + field.name.replace("_", "-")
        kinds = set(getattr(field.type, "__args__", (field.type,))) - {type(None)}
        if kinds == {bool}:
            argv.append(flag)
            expected[field.name] = True
        elif field.name == "fail_status":
            argv += [flag, "429"]
            expected[field.name] = 429
        elif kinds == {int}:
            argv += [flag, "7"]
            expected[field.name] = 7
        elif kinds <= {int, float}:
            argv += [flag, "0.5"]
            expected[field.name] = 0.5
        else:
            argv += [flag, "2"]
            expected[field.name] = "2"
    return argv, expected


def test_every_fault_is_a_serve_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    help_text = capsys.readouterr().out
    for field in msgspec.structs.fields(Faults):
        assert "--" + field.name.replace("_", "-") in help_text, field.name
    assert "--drop-after N" in help_text  # the older spelling still works
    assert "``" not in help_text and "drop_after_events" not in help_text


def test_serve_builds_faults_from_the_flags() -> None:
    argv, expected = fault_argv()
    first, _, err, code = run_serve(*argv, lines=2, stop=signal.SIGTERM)
    assert code == 0, err
    given = dict(item.split("=", 1) for item in first[0].removeprefix("faults: ").split(", "))
    assert {k: v.strip() for k, v in given.items()} == {k: str(v) for k, v in expected.items()}


def test_a_bad_fault_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--drop-times", "x"], ["--fail-status", "200"], ["--event-delay", "-1"]):
        code = main(["serve", "--port", "0", *argv])
        result = Result(code, *capsys.readouterr())
        check_no_secret_or_traceback(result)
        assert code == 2 and argv[0] in result.err, result.err


CONNECTION = {"--base-url", "--api-key", "--project", "--session-token", "--origin", "--timeout"}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["chat"],
            {"--api", "--model", "--session", "--integration-id", "--json", *CONNECTION},
        ),
        (
            ["token", "create"],
            {"--origin", "--expires-after", "--user", "--json", "--base-url", "--api-key"}
            | {"--project", "--timeout"},
        ),
        (["token", "revoke"], {"--base-url", "--api-key", "--project", "--timeout"}),
        (["demo"], {"--api"}),
        (
            ["serve"],
            {"--host", "--port", "--api-key", "--project", "--db", "--drop-after"}
            | {"--" + f.name.replace("_", "-") for f in msgspec.structs.fields(Faults)},
        ),
    ],
)
def test_each_command_help_lists_only_the_options_it_uses(
    argv: list[str], expected: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--help"]) == 0
    help_text = capsys.readouterr().out
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", help_text)) - {"--help"}
    assert options == expected


def test_an_option_the_command_does_not_use_is_refused(
    server: ReferenceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, option in [
        (["--origin", ORIGIN, "token", "revoke", "t" * 20], "--origin"),
        (["--session-token", "t" * 20, "token", "create", "--origin", ORIGIN], "--session-token"),
        (["--base-url", server.base_url, "demo"], "--base-url"),
        (["--timeout", "3", "serve"], "--timeout"),
    ]:
        code = main(argv)
        result = Result(code, *capsys.readouterr())
        check_no_secret_or_traceback(result)
        assert code == 2 and f"does not use {option}" in result.err, result.err


# -- which API: a recording proxy in front of the reference server --------------------------


@dataclass
class Seen:
    method: str
    path: str
    body: Any


@contextlib.contextmanager
def recording_proxy(upstream: str) -> Iterator[tuple[str, list[Seen]]]:
    """A loopback server that records each request (method, path, JSON body) and passes
    it on to ``upstream``, streaming the answer back; yields its URL and the record."""
    seen: list[Seen] = []
    hop_by_hop = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.append(Seen(request.method, request.path, json.loads(body) if body else None))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop_by_hop}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method, upstream + request.path_qs, data=body, headers=headers
            ) as answer,
        ):
            response = web.StreamResponse(
                status=answer.status,
                headers={k: v for k, v in answer.headers.items() if k.lower() not in hop_by_hop},
            )
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> web.AppRunner:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}", seen
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def proxy(server: ReferenceServer) -> Iterator[tuple[str, list[Seen]]]:
    with recording_proxy(server.base_url) as recorded:
        yield recorded


def chatsdk_script(
    url: str, *argv: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed console script, with the connection settings in the environment."""
    return subprocess.run(
        [str(VENV_BIN / "chatsdk"), *argv],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **subprocess_env(),
            "CHATSDK_BASE_URL": url,
            "CHATSDK_API_KEY": KEY,
            "CHATSDK_PROJECT": PROJECT,
            **(env or {}),
        },
    )


def test_the_script_speaks_chat_completions_by_default(
    proxy: tuple[str, list[Seen]],
) -> None:
    url, seen = proxy
    done = chatsdk_script(url, "chat", QUESTION)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("A client token is a short-lived JWT")
    assert done.stderr == f"sources:\n  {SOURCE}\n"
    assert [(s.method, s.path) for s in seen] == [("POST", "/chat/completions")]
    body = seen[0].body
    assert body["model"] == "inkeep-qa-expert" and body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": QUESTION}]
    assert [t["function"]["name"] for t in body["tools"]] == [
        "provideLinks",
        "provideAIAnnotations",
    ]
    assert body["tool_choice"] == "auto" and body["stream_options"] == {"include_usage": True}

    seen.clear()
    done = chatsdk_script(url, "chat", "--model", "inkeep-rag", QUESTION)
    assert done.returncode == 0, done.stderr
    assert seen[0].body["model"] == "inkeep-rag"


def test_the_script_still_speaks_chat_results_when_asked(proxy: tuple[str, list[Seen]]) -> None:
    url, seen = proxy
    done = chatsdk_script(url, "chat", "--api", "chat-results", "--integration-id", "x", QUESTION)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("A client token is a short-lived JWT")
    assert f"sources:\n  {SOURCE}\n" in done.stderr and session_of(done.stderr)
    assert [(s.method, s.path) for s in seen] == [("POST", "/chat_sessions/chat_results")]
    assert seen[0].body["integration_id"] == "x"


def test_interactive_completions_send_the_whole_conversation(
    proxy: tuple[str, list[Seen]],
) -> None:
    url, seen = proxy
    done = chatsdk_script(url, "chat", stdin=f"{QUESTION}\n{FOLLOW_UP}\n")
    assert done.returncode == 0, done.stderr
    first_answer, second_answer = done.stdout.splitlines()
    assert first_answer.startswith("A client token is a short-lived JWT")
    # The server keeps no history on this wire: the follow-up made sense only because
    # the second request carried the first question and answer.
    assert second_answer.startswith("Continuing on Client tokens and origins:")
    assert done.stderr.count("sources:") == 2 and "session" not in done.stderr
    assert [s.path for s in seen] == ["/chat/completions"] * 2
    first, second = (s.body["messages"] for s in seen)
    assert first == [{"role": "user", "content": QUESTION}]
    assert second[0] == first[0] and second[2] == {"role": "user", "content": FOLLOW_UP}
    assistant = second[1]
    assert assistant["role"] == "assistant" and assistant["content"] == first_answer
    # result.message: Inkeep's citation tool calls were read into the sources and are
    # not sent back (a server would want a tool answer for each one).
    assert "tool_calls" not in assistant
    assert len(second) == 3


def test_the_script_json_lines_parse_and_end_with_the_result(
    proxy: tuple[str, list[Seen]],
) -> None:
    url, seen = proxy
    done = chatsdk_script(url, "chat", "--json", QUESTION)
    assert done.returncode == 0 and done.stderr == ""
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(set(line) == {"event", "data"} for line in lines[:-1])
    assert lines[0]["event"] == "chunk" and set(lines[-1]) == {"result"}
    assert lines[-1]["result"]["message"]["content"].startswith("A client token")
    assert [s.path for s in seen] == ["/chat/completions"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--session", "s-1"], "'chatsdk chat --api completions' does not use --session"),
        (["--integration-id", "docs"], "'chatsdk chat --api completions' does not use"),
        (
            ["--api", "completions", "--session", "s-1"],
            "does not use --session (it is for --api chat-results)",
        ),
        (
            ["--api", "chat-results", "--model", "inkeep-rag"],
            "'chatsdk chat --api chat-results' does not use --model (it is for --api completions)",
        ),
        (["--api", "chat"], "argument --api: invalid choice: 'chat'"),
    ],
)
def test_an_option_the_chosen_api_does_not_use_is_refused(
    proxy: tuple[str, list[Seen]], argv: list[str], message: str
) -> None:
    url, seen = proxy
    done = chatsdk_script(url, "chat", *argv, QUESTION)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("chatsdk: error: ") and done.stderr.count("\n") == 1
    assert message in done.stderr, done.stderr
    assert seen == []  # refused before anything is sent


def test_the_script_reads_no_variable_itself(proxy: tuple[str, list[Seen]]) -> None:
    """A bad CHATSDK_TIMEOUT is reported once, in the SDK's words; none is re-read."""
    url, seen = proxy
    done = chatsdk_script(url, "chat", QUESTION, env={"CHATSDK_TIMEOUT": "abc"})
    assert done.returncode == 2 and seen == []
    assert done.stderr == (
        "chatsdk: error: CHATSDK_TIMEOUT must be a number of seconds, got 'abc'\n"
    )
    # The option is passed on as given, and the variable is then not read at all.
    done = chatsdk_script(url, "chat", "--timeout", "20", QUESTION, env={"CHATSDK_TIMEOUT": "abc"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("A client token")


@contextlib.contextmanager
def answering_400(
    body: bytes, status: int = 400, content_type: str = "text/plain"
) -> Iterator[str]:
    """A loopback server answering every request ``status`` (400) with ``body``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_s_error_text_cannot_drive_the_terminal_nor_show_a_cut_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    long_key = "LONG-SECRET-KEY-" + "k" * 9000
    # A server quoting the request's first bytes, cut short, and terminal escapes.
    body = ("bad: \x1b[31mRED\x1b[0m \x07 \u202eevil quoted: " + long_key[:300]).encode()
    with answering_400(body) as url:
        code = main(["--base-url", url, "--api-key", long_key, "chat", "--json", "hi"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "\x1b" not in err and "\x07" not in err
    assert "\\x1b[31mRED" in err  # shown, not obeyed
    assert "\u202e" not in err and "\\u202eevil" in err  # nor may it reorder the line
    assert long_key[:8] not in err


NON_ASCII_ANSWER = (
    b'data: {"choices":[{"index":0,"delta":{"content":"h\xc3\xa9llo \xe2\x9c\x93"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_an_answer_the_terminal_cannot_encode_is_written_escaped(as_json: bool) -> None:
    # PYTHONIOENCODING=ascii (or a Latin-1 terminal): an UnicodeEncodeError lost the answer.
    with answering_400(NON_ASCII_ANSWER, 200, "text/event-stream") as url:
        argv = ["chat", *(["--json"] if as_json else []), "hi"]
        done = chatsdk_script(url, *argv, env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0, done.stderr
    if as_json:
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        assert lines[0]["data"]["choices"][0]["delta"]["content"] == "h\u00e9llo \u2713"
        assert done.stdout.isascii()
    else:
        assert done.stdout == "h\\xe9llo \\u2713\n"


def test_a_reader_going_away_is_sigpipes_status_and_no_noise() -> None:
    # `chatsdk chat ... | head`: exit 1, the status of an API error, broke pipefail scripts.
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"word "}}]}\n\n'
    body = chunk * 20_000 + NON_ASCII_ANSWER
    with answering_400(body, 200, "text/event-stream") as url:
        done = subprocess.run(
            [
                "bash",
                "-c",
                f"{VENV_BIN / 'chatsdk'} chat --json hi | head -c 10; exit ${{PIPESTATUS[0]}}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**subprocess_env(), "CHATSDK_BASE_URL": url, "CHATSDK_API_KEY": KEY},
        )
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""


def test_closed_standard_streams_are_no_crash() -> None:
    # `<&-`, `>&-`, `2>&-`: an AttributeError on None, exit 1 after the answer.
    with answering_400(NON_ASCII_ANSWER, 200, "text/event-stream") as url:
        for redirect in ("<&- >&-", "2>&-", "<&-"):
            done = subprocess.run(
                ["bash", "-c", f"{VENV_BIN / 'chatsdk'} chat hi {redirect}"],
                capture_output=True,
                text=True,
                timeout=60,
                env={**subprocess_env(), "CHATSDK_BASE_URL": url, "CHATSDK_API_KEY": KEY},
            )
            assert done.returncode == 0, (redirect, done.stderr)
            assert "error" not in done.stderr


def test_sources_from_a_server_are_shown_not_obeyed_by_the_terminal() -> None:
    from chatsdk.cli import _Output

    out, err = io.StringIO(), io.StringIO()
    _Output(out, err, as_json=False).end(
        ["  [1] T\x1b]0;pwned\x07\u202eX - https://e.example/"], session="sid\x1b]0;x\x07\r\n"
    )
    assert "\\x1b]0;x\\x07\\r\\n" in err.getvalue()  # the session id too
    assert "\x1b" not in err.getvalue() and "\u202e" not in err.getvalue()
    assert "\\x1b]0;pwned\\x07\\u202eX - https://e.example/" in err.getvalue()
