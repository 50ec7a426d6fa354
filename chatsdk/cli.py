"""The ``chatsdk`` console script (also ``python -m chatsdk``).

::

    chatsdk serve [--host H] [--port P] [--api-key K] [--project S] [--db PATH] [fault flags]
    chatsdk chat ["question"] [--session ID] [--integration-id ID]
    chatsdk token create --origin URL [--expires-after S] [--user ID] [--json]
    chatsdk token revoke TOKEN|-
    chatsdk demo

Connection settings (``--base-url``, ``--api-key``, ``--project``, ``--session-token``,
``--origin``) default to the ``CHATSDK_*`` environment variables, as for ``ChatClient``.
Errors are one line on stderr, ``chatsdk: error: <message>``, with exit status 2 for
bad usage or arguments, 1 for API and connection errors and 130 for Ctrl-C. Secrets
(the API key, client tokens) are never printed, except the token that
``token create`` exists to hand over.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, NoReturn, TextIO, TypeVar

import msgspec

from . import __version__
from ._client import ChatClient
from .errors import ChatSDKError, ValidationError
from .models import Citation

__all__ = ["build_parser", "main"]

T = TypeVar("T")

PROG = "chatsdk"
DEFAULT_INTEGRATION_ID = "docs"
DEFAULT_PORT = 8080
ENV_PREFIX = "CHATSDK_"


class _UsageError(Exception):
    """Bad command-line usage: reported in one line, exit status 2."""


class _Failure(Exception):
    """A command failed for a reason the CLI itself describes: exit status 1."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised, so ``main`` reports them)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# -- argument parsing ---------------------------------------------------------------------


def _add_connection_options(
    parser: argparse.ArgumentParser, *, top_level: bool, origin: bool = True
) -> None:
    """The client settings; accepted before and after the command name.

    Below the top level they default to SUPPRESS, so that a value given before the
    command is not overwritten by the subcommand's default.
    """
    default = None if top_level else argparse.SUPPRESS
    group = parser.add_argument_group(
        "connection options (default: the CHATSDK_* environment variables)"
    )
    group.add_argument(
        "--base-url", metavar="URL", default=default, help="server URL (CHATSDK_BASE_URL)"
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        default=default,
        help="secret API key (CHATSDK_API_KEY; prefer the variable: arguments are visible "
        "to other local users)",
    )
    group.add_argument(
        "--project", metavar="SLUG", default=default, help="project slug (CHATSDK_PROJECT)"
    )
    group.add_argument(
        "--session-token",
        metavar="TOKEN",
        default=default,
        help="client token to chat with instead of the API key (CHATSDK_SESSION_TOKEN)",
    )
    if origin:
        group.add_argument(
            "--origin",
            metavar="URL",
            default=default,
            help="Origin header sent with chat calls; must match the client token's embed "
            "origin (CHATSDK_ORIGIN)",
        )


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {value}")
    return value


def _error_status(text: str) -> int:
    value = _non_negative_int(text)
    if not 400 <= value <= 599:
        raise argparse.ArgumentTypeError(f"expected an HTTP error status 400..599, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``chatsdk`` command."""
    parser = _Parser(
        prog=PROG,
        description="Chat with a chat-session service, manage client tokens, or run the "
        "reference server.",
        epilog="Run 'chatsdk COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _add_connection_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the reference server until Ctrl-C",
        description="Run the reference server (for demos and tests) until Ctrl-C or "
        "SIGTERM. The API key and project default to CHATSDK_API_KEY and CHATSDK_PROJECT, "
        "then to the test key and 'demo'.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    serve.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help="port to bind; 0 picks a free one (default: %(default)s)",
    )
    serve.add_argument(
        "--api-key", metavar="KEY", default=argparse.SUPPRESS, help="the API key to accept"
    )
    serve.add_argument(
        "--project", metavar="SLUG", default=argparse.SUPPRESS, help="the project slug"
    )
    serve.add_argument(
        "--db",
        metavar="PATH",
        default=None,
        help="SQLite file keeping sessions and revocations across restarts (default: memory)",
    )
    faults = serve.add_argument_group("faults (make the server misbehave, for testing clients)")
    faults.add_argument(
        "--drop-after",
        metavar="N",
        type=_non_negative_int,
        help="cut each stream's connection after N events (resumable)",
    )
    faults.add_argument(
        "--drop-times",
        metavar="N",
        type=_non_negative_int,
        help="with --drop-after: only cut the first N responses",
    )
    faults.add_argument(
        "--event-delay",
        metavar="S",
        type=_non_negative_float,
        help="sleep S seconds between two events of a stream",
    )
    faults.add_argument(
        "--fail-first",
        metavar="N",
        type=_non_negative_int,
        help="answer the first N API requests with --fail-status",
    )
    faults.add_argument(
        "--fail-status",
        metavar="CODE",
        type=_error_status,
        help="status for --fail-first (default: 503)",
    )
    faults.add_argument(
        "--retry-after",
        metavar="S",
        help="Retry-After value sent with --fail-first answers (seconds or an HTTP date)",
    )
    faults.add_argument(
        "--pings-only",
        action="store_true",
        default=None,
        help="answer streams with keep-alive pings and no events",
    )
    faults.add_argument(
        "--malformed-after",
        metavar="N",
        type=_non_negative_int,
        help="send a malformed event after N events",
    )

    chat = commands.add_parser(
        "chat",
        help="ask a question; the answer streams to stdout",
        description="Ask a question and stream the answer to stdout; the sources and the "
        "session id go to stderr. Without a question, read questions from stdin, one per "
        "line, in one session, until end of input or an empty line.",
    )
    chat.add_argument("question", nargs="?", help="the question (omit for interactive mode)")
    chat.add_argument("--session", metavar="ID", help="continue this chat session")
    chat.add_argument(
        "--integration-id",
        metavar="ID",
        default=DEFAULT_INTEGRATION_ID,
        help="integration id sent with each question (default: %(default)s)",
    )
    _add_connection_options(chat, top_level=False)

    token = commands.add_parser(
        "token",
        help="create or revoke client tokens",
        description="Create or revoke client tokens (needs the API key and the project).",
    )
    token_commands = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = token_commands.add_parser(
        "create",
        help="mint a client token and print it",
        description="Mint a client token bound to an embed origin and print it on stdout "
        "(the whole JSON answer with --json).",
    )
    create.add_argument(
        "--origin",
        dest="embed_origin",
        metavar="URL",
        required=True,
        help="embed origin of the page that will use the token, e.g. https://docs.example.com",
    )
    create.add_argument(
        "--expires-after",
        metavar="S",
        type=_non_negative_int,
        default=3600,
        help="lifetime in seconds, 1..3600 (default: %(default)s)",
    )
    create.add_argument("--user", metavar="ID", help="user identifier to bind to the token")
    create.add_argument("--json", action="store_true", help="print the whole JSON answer")
    _add_connection_options(create, top_level=False, origin=False)
    revoke = token_commands.add_parser(
        "revoke",
        help="revoke a client token",
        description="Revoke a client token. Revoking one twice is not an error.",
    )
    revoke.add_argument("token", metavar="TOKEN", help="the token, or - to read it from stdin")
    _add_connection_options(revoke, top_level=False)

    commands.add_parser(
        "demo",
        help="walk through the whole story against an in-process server",
        description="Start a reference server in-process, mint a client token, stream two "
        "answers with it, revoke it and show the next call refused.",
    )
    return parser


# -- settings -------------------------------------------------------------------------------


def _setting(value: str | None, name: str) -> str | None:
    """An option's value, else its ``CHATSDK_`` variable (empty counts as unset)."""
    if value:
        return value
    return os.environ.get(ENV_PREFIX + name) or None


def _secrets(args: argparse.Namespace) -> list[str]:
    """Every secret this run knows of, so that error messages can be scrubbed of them."""
    found = [
        getattr(args, "api_key", None),
        getattr(args, "session_token", None),
        os.environ.get(ENV_PREFIX + "API_KEY"),
        os.environ.get(ENV_PREFIX + "SESSION_TOKEN"),
        getattr(args, "revoked_token", None),
    ]
    return [s for s in found if s]


# Shorter "secrets" are not worth scrubbing: no real key or token is that short, and
# replacing every "t" of a message would make it unreadable.
MIN_SECRET_LENGTH = 6


def _redact(text: str, secrets: Sequence[str]) -> str:
    # The SDK keeps credentials out of its messages; this is the second line of defence
    # for text the CLI did not write itself (a server may echo what it was sent).
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, "***")
    return text


def _check_base_url(args: argparse.Namespace) -> None:
    base = _setting(args.base_url, "BASE_URL")
    if base is None and not (_setting(None, "TOKENS_BASE_URL") and _setting(None, "CHAT_BASE_URL")):
        raise _UsageError(
            "no server URL: pass --base-url or set CHATSDK_BASE_URL "
            "(run 'chatsdk serve' for a local reference server)"
        )


def _client(args: argparse.Namespace, *, token_ops: bool) -> ChatClient:
    """A ChatClient from the connection options, after checking what the command needs."""
    _check_base_url(args)
    api_key = _setting(args.api_key, "API_KEY")
    project = _setting(args.project, "PROJECT")
    if token_ops:
        if api_key is None or project is None:
            raise _UsageError(
                "token commands need the secret API key and the project: pass --api-key and "
                "--project, or set CHATSDK_API_KEY and CHATSDK_PROJECT"
            )
        return ChatClient(args.api_key, project=args.project, base_url=args.base_url)
    explicit_token = bool(args.session_token) and not args.api_key
    if api_key is None or explicit_token:
        if _setting(args.session_token, "SESSION_TOKEN") is None:
            raise _UsageError(
                "chat needs credentials: --api-key (or CHATSDK_API_KEY), or a client token "
                "with --session-token and --project (or CHATSDK_SESSION_TOKEN and "
                "CHATSDK_PROJECT)"
            )
        if project is None:
            raise _UsageError(
                "a client token is sent with its project: pass --project or set CHATSDK_PROJECT"
            )
    # A token given on the command line beats an exported API key: ChatClient reads
    # CHATSDK_API_KEY only when no client token was passed.
    return ChatClient(
        args.api_key,
        project=args.project,
        session_token=args.session_token,
        base_url=args.base_url,
        origin=args.origin,
    )


# -- commands -------------------------------------------------------------------------------


def _run(
    runner: asyncio.Runner, client: ChatClient, work: Callable[[], Coroutine[Any, Any, T]]
) -> T:
    """Run ``work()`` with ``client``, closing the client after."""
    try:
        return runner.run(work())
    finally:
        runner.run(client.aclose())


def _source_lines(citations: Sequence[Citation]) -> list[str]:
    lines = []
    for index, citation in enumerate(citations, start=1):
        record = citation.record
        number = citation.number if citation.number is not None else index
        title = record.title or record.url or record.type
        url = record.url or citation.hit_url
        lines.append(f"  [{number}] {title}" + (f" - {url}" if url and url != title else ""))
    return lines


async def _ask(
    client: ChatClient,
    question: str,
    session: str | None,
    integration_id: str,
    out: TextIO,
    err: TextIO,
) -> str | None:
    """Stream one answer to ``out``; sources and the session id to ``err``."""
    if session is None:
        stream = client.chat.create(integration_id=integration_id, messages=question)
    else:
        stream = client.chat.continue_(session, integration_id=integration_id, message=question)
    at_line_start = True
    async with stream:
        async for text in stream.text_stream:
            out.write(text)
            out.flush()
            at_line_start = text.endswith("\n")
        result = await stream.final_result()
    if not at_line_start:
        out.write("\n")
        out.flush()
    if result.citations:
        err.write("sources:\n" + "".join(line + "\n" for line in _source_lines(result.citations)))
    session = result.chat_session_id or session
    if session:
        err.write(f"session: {session}\n")
    err.flush()
    return session


def _cmd_chat(args: argparse.Namespace, runner: asyncio.Runner) -> int:
    out, err = sys.stdout, sys.stderr
    question: str | None = args.question
    client = _client(args, token_ops=False)
    try:
        if question is not None:
            runner.run(_ask(client, question, args.session, args.integration_id, out, err))
            return 0
        stdin = sys.stdin
        interactive = stdin.isatty()
        session: str | None = args.session
        while True:
            if interactive:
                err.write("> ")
                err.flush()
            line = stdin.readline()
            if not line:  # end of input
                if interactive:
                    err.write("\n")
                break
            line = line.strip()
            if not line:
                break
            session = runner.run(_ask(client, line, session, args.integration_id, out, err))
            if interactive:
                err.write("\n")
        return 0
    finally:
        runner.run(client.aclose())


def _cmd_token_create(args: argparse.Namespace, runner: asyncio.Runner) -> int:
    client = _client(args, token_ops=True)
    token = _run(
        runner,
        client,
        lambda: client.tokens.create(
            embed_origin=args.embed_origin,
            expires_after=args.expires_after,
            user_identifier=args.user,
        ),
    )
    if args.json:
        fields = {k: v for k, v in msgspec.structs.asdict(token).items() if v is not None}
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(fields), indent=2).decode())
        sys.stdout.write("\n")
    else:
        sys.stdout.write(token.client_token + "\n")
        sys.stderr.write(
            f"client token for {token.embed_origin}, expires after {token.expires_after} s\n"
        )
    return 0


def _cmd_token_revoke(args: argparse.Namespace, runner: asyncio.Runner) -> int:
    token: str = args.token
    if token == "-":
        token = sys.stdin.read().strip()
        if not token:
            raise _UsageError("no token on stdin")
    args.revoked_token = token  # scrubbed from any error message
    client = _client(args, token_ops=True)
    _run(runner, client, lambda: client.tokens.revoke(token))
    sys.stderr.write("token revoked\n")
    return 0


def _cmd_serve(args: argparse.Namespace, runner: asyncio.Runner) -> int:
    from .server import Faults, ReferenceServer
    from .server.app import DEFAULT_API_KEY, DEFAULT_PROJECT

    # Read like a client's settings, so that one set of CHATSDK_* variables serves both.
    api_key = _setting(args.api_key, "API_KEY") or DEFAULT_API_KEY
    project = _setting(args.project, "PROJECT") or DEFAULT_PROJECT
    fault_fields = {
        "drop_after_events": args.drop_after,
        "drop_times": args.drop_times,
        "event_delay": args.event_delay,
        "fail_first": args.fail_first,
        "fail_status": args.fail_status,
        "retry_after": args.retry_after,
        "pings_only": args.pings_only,
        "malformed_after": args.malformed_after,
    }
    given = {k: v for k, v in fault_fields.items() if v is not None}
    faults = Faults(**given) if given else None
    server = ReferenceServer(
        api_key=api_key,
        project=project,
        host=args.host,
        port=args.port,
        db=args.db,
        faults=faults,
    )
    key_note = "default test API key" if api_key == DEFAULT_API_KEY else "API key as configured"

    async def serve() -> None:
        with _stop_signals() as stop:
            try:
                await server.start()
            except sqlite3.Error as exc:
                raise _Failure(f"cannot open the database {args.db}: {exc}") from exc
            except OSError as exc:
                where = f"{args.host}:{args.port}"
                raise _Failure(f"cannot listen on {where}: {exc.strerror or exc}") from exc
            try:
                if args.host not in ("127.0.0.1", "localhost", "::1"):
                    print(
                        f"{PROG}: warning: listening on {args.host}: the reference server is "
                        "for demos and tests",
                        file=sys.stderr,
                        flush=True,
                    )
                if given:
                    print(f"faults: {', '.join(f'{k}={v}' for k, v in given.items())}")
                print(
                    f"chatsdk reference server on {server.base_url} "
                    f"(project {project}, {key_note})",
                    flush=True,
                )
                await stop.wait()
            finally:
                await server.close()

    runner.run(serve())
    return 0


@contextlib.contextmanager
def _stop_signals() -> Iterator[asyncio.Event]:
    """An event that SIGINT or SIGTERM sets, for as long as the block runs.

    Installed before the server announces itself, so that a signal sent as soon as the
    address is printed stops it cleanly. Where loop signal handlers are unavailable
    (not the main thread, Windows), Ctrl-C still ends the command, as a cancellation.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append(sig)
    try:
        yield stop
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _cmd_demo(args: argparse.Namespace, runner: asyncio.Runner) -> int:
    from ._demo import run_demo

    runner.run(run_demo(sys.stdout, pace=0.02 if sys.stdout.isatty() else 0.0))
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace, asyncio.Runner], int]] = {
    "serve": _cmd_serve,
    "chat": _cmd_chat,
    "token create": _cmd_token_create,
    "token revoke": _cmd_token_revoke,
    "demo": _cmd_demo,
}


# -- entry point ----------------------------------------------------------------------------


def _fail(message: str, secrets: Sequence[str]) -> None:
    line = " ".join(_redact(message, secrets).split())  # one line, whatever the message
    sys.stderr.write(f"{PROG}: error: {line}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``chatsdk`` command with ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    parser = build_parser()
    args = argparse.Namespace()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit_:  # --help and --version
            code = exit_.code
            return code if isinstance(code, int) else 0
        name = args.command + (f" {args.token_command}" if args.command == "token" else "")
        with asyncio.Runner() as runner:
            return _COMMANDS[name](args, runner)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except _UsageError as exc:
        _fail(str(exc), _secrets(args))
        return 2
    except ValidationError as exc:
        _fail(str(exc), _secrets(args))
        return 2
    except (ChatSDKError, _Failure) as exc:
        _fail(str(exc), _secrets(args))
        return 1
    except BrokenPipeError:
        # The reader went away (`chatsdk chat ... | head`): stop quietly, and keep Python
        # from complaining again when it flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        _fail(str(exc) or type(exc).__name__, _secrets(args))
        return 1
    except Exception as exc:  # a console script never shows a traceback
        _fail(f"unexpected {type(exc).__name__}: {exc}", _secrets(args))
        return 1
