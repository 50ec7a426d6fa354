"""The ``chatsdk`` console script (also ``python -m chatsdk``).

::

    chatsdk serve [--host H] [--port P] [--api-key K] [--project S] [--db PATH] [fault flags]
    chatsdk chat ["question"] [--model NAME] [--json] [--timeout S]
    chatsdk chat --api chat-results ["question"] [--session ID] [--integration-id ID] [--json]
    chatsdk token create --origin URL [--expires-after S] [--user ID] [--json] [--timeout S]
    chatsdk token revoke TOKEN|- [--timeout S]
    chatsdk demo [--api completions|chat-results]

``chat`` speaks Chat Completions (SPEC 1.8) unless ``--api chat-results`` asks for the
deprecated chat_results wire. Connection options (``--base-url``, ``--api-key``,
``--project``, ``--session-token``, ``--origin``, ``--timeout``) are passed to
``ChatClient`` only when given: the rest is left to ``Settings.resolve`` (``_config.py``),
the one place that reads the ``CHATSDK_*`` variables (with no URL anywhere, the real
services of SPEC 1.9 are used). Each command accepts only the options it uses. The fault
flags of ``serve`` are generated from the fields of :class:`chatsdk.server.Faults`. Errors
are one line on stderr, ``chatsdk: error: <message>``, with exit status 2 for bad usage or
arguments, 1 for API and connection errors and 130 for Ctrl-C. Secrets (the API key,
client tokens) are never printed, except the token that ``token create`` exists to hand
over and the built-in test key that ``serve`` accepts when given no key of its own.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import inspect
import itertools
import json
import os
import re
import signal
import sqlite3
import sys
import textwrap
import typing
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, NoReturn, TextIO, TypeVar

import msgspec

from . import __version__
from ._client import ChatClient
from ._config import Settings, Timeout
from ._streaming import EventStream
from ._transport import MIN_SECRET_LENGTH, redact
from .completions import INKEEP_TOOLS
from .errors import ChatSDKError, ValidationError, escaped
from .models import (
    AIAnnotations,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatEvent,
    Citation,
    CompletionEvent,
    Link,
    MessageChunk,
    ProvidedLinks,
    RecordsCited,
    UnknownEvent,
)

__all__ = ["build_parser", "main"]

T = TypeVar("T")

PROG = "chatsdk"
DEFAULT_INTEGRATION_ID = "docs"
DEFAULT_MODEL = "inkeep-qa-expert"
# The chat APIs, the default first: Chat Completions (SPEC 1.8), chat_results (1.4/1.5).
APIS = ("completions", "chat-results")
# The options of one API only, refused with the other.
_API_OPTIONS = {"completions": ("model",), "chat-results": ("session", "integration_id")}
DEFAULT_PORT = 8080
_DEFAULT_TIMEOUT = Timeout()


class _UsageError(Exception):
    """Bad command-line usage: reported in one line, exit status 2."""


class _Failure(Exception):
    """A command failed for a reason the CLI itself describes: exit status 1."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised, so ``main`` reports them).

    Options costly to define (they import the server) can be deferred: they are added
    when this parser is first used, so other commands do not pay for them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def defer(self, add_options: Callable[[argparse.ArgumentParser], None]) -> None:
        self._deferred.append(add_options)

    def _complete(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        self._complete()
        return super().parse_known_args(*args, **kwargs)

    def format_usage(self) -> str:
        self._complete()
        return super().format_usage()

    def format_help(self) -> str:
        self._complete()
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# -- argument parsing ---------------------------------------------------------------------


# The connection options, by attribute name; each command lists those it uses.
CONNECTION_OPTIONS = ("base_url", "api_key", "project", "session_token", "origin", "timeout")
_USES: dict[str, tuple[str, ...]] = {
    "serve": ("api_key", "project"),
    "chat": CONNECTION_OPTIONS,
    "token create": ("base_url", "api_key", "project", "timeout"),
    "token revoke": ("base_url", "api_key", "project", "timeout"),
    "demo": (),
}


def _add_connection_options(
    parser: argparse.ArgumentParser, *, top_level: bool, uses: Sequence[str] = CONNECTION_OPTIONS
) -> None:
    """The client settings ``uses`` names; accepted before and after the command name.

    Below the top level they default to SUPPRESS, so that a value given before the
    command is not overwritten by the subcommand's default.
    """
    default = None if top_level else argparse.SUPPRESS
    group = parser.add_argument_group(
        "connection options (default: the CHATSDK_* environment variables)"
    )
    helps = {
        "base_url": (
            "URL",
            "server URL (CHATSDK_BASE_URL; default: the real services, Gram or Inkeep)",
        ),
        "api_key": (
            "KEY",
            "secret API key (CHATSDK_API_KEY; prefer the variable: arguments are visible "
            "to other local users)",
        ),
        "project": ("SLUG", "project slug (CHATSDK_PROJECT)"),
        "session_token": (
            "TOKEN",
            "client token to chat with instead of the API key (CHATSDK_SESSION_TOKEN)",
        ),
        "origin": (
            "URL",
            "Origin header sent with chat calls; must match the client token's embed "
            "origin (CHATSDK_ORIGIN)",
        ),
        "timeout": (
            "SECONDS",
            "give up when connecting, a read, or the wait for an answer or its next event takes "
            f"longer (CHATSDK_TIMEOUT; default: {_DEFAULT_TIMEOUT.connect:g} s to connect, "
            f"{_DEFAULT_TIMEOUT.read:g} s per read, {_DEFAULT_TIMEOUT.idle:g} s between events)",
        ),
    }
    for name in uses:
        metavar, text = helps[name]
        group.add_argument(
            "--" + name.replace("_", "-"), metavar=metavar, default=default, help=text
        )


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _non_negative_int(text: str) -> int:
    value = _whole_number(text)
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


def _seconds(text: str) -> float:
    """A timeout: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"expected a number of seconds > 0, like 30 or 2.5, got {text!r}")
    return value


# -- fault flags, generated from the fields of chatsdk.server.Faults ------------------------

# Older, shorter spellings kept working next to the generated ``--field-name`` flags.
_FAULT_ALIASES = {"drop_after_events": ("--drop-after",)}
# Values a field's type alone does not rule out.
_FAULT_CHECKS: dict[str, tuple[Callable[[str], Any], str]] = {
    "fail_status": (_error_status, "CODE"),
}


def _fault_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_docs(cls: type) -> dict[str, str]:
    """The first sentence of each field's docstring (the string below its annotation)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):  # no source (a frozen build): no help texts
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            text = " ".join(after.value.value.split())
            first = re.split(r"(?<=\.)\s", text, maxsplit=1)[0]
            docs[node.target.id] = first
    return docs


def _fault_help(text: str, names: Sequence[str]) -> str:
    """A field's doc in the command line's terms: ``drop_times`` -> --drop-times."""

    def term(match: re.Match[str]) -> str:
        word = match.group(1)
        return _fault_flag(word) if word in names else word

    text = re.sub(r"``([^`]+)``", term, text).replace("\\", "").rstrip(".")
    if text[1:2].islower():
        text = text[0].lower() + text[1:]
    return text.replace("%", "%%")  # argparse formats help texts with %


def _add_fault_options(serve: argparse.ArgumentParser) -> None:
    """One flag per field of ``Faults``, so that a new fault is a new flag by itself."""
    from .server import Faults

    group = serve.add_argument_group(
        "faults (make the server misbehave, for testing clients; see docs/testing.md)"
    )
    fields = msgspec.structs.fields(Faults)
    names = [field.name for field in fields]
    docs = _field_docs(Faults)
    for field in fields:
        flags = [_fault_flag(field.name), *_FAULT_ALIASES.get(field.name, ())]
        help_text = _fault_help(docs.get(field.name, field.name.replace("_", " ")), names)
        default = field.default
        kinds = set(typing.get_args(field.type)) - {type(None)} or {field.type}
        if default not in (None, False, msgspec.NODEFAULT):
            help_text += f" (default: {default})"
        common: dict[str, Any] = {"dest": "fault_" + field.name, "default": None}
        if kinds == {bool}:
            if default is True:
                group.add_argument(
                    *flags, action=argparse.BooleanOptionalAction, help=help_text, **common
                )
            else:
                group.add_argument(*flags, action="store_true", help=help_text, **common)
            continue
        convert: Callable[[str], Any]
        if field.name in _FAULT_CHECKS:
            convert, metavar = _FAULT_CHECKS[field.name]
        elif kinds == {int}:
            convert, metavar = _non_negative_int, "N"
        elif kinds <= {int, float}:
            convert, metavar = _non_negative_float, "SECONDS"
        else:  # str, or a type added later: msgspec checks it when Faults is built
            convert, metavar = str, "VALUE"
        group.add_argument(*flags, type=convert, metavar=metavar, help=help_text, **common)


def _faults_given(args: argparse.Namespace) -> dict[str, Any]:
    """The ``Faults`` fields set on the command line, by field name."""
    prefix = "fault_"
    return {
        name[len(prefix) :]: value
        for name, value in vars(args).items()
        if name.startswith(prefix) and value is not None
    }


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
    assert isinstance(serve, _Parser)
    serve.defer(_add_fault_options)  # imports the server: only when serve is used

    chat = commands.add_parser(
        "chat",
        help="ask a question; the answer streams to stdout",
        description="Ask a question and stream the answer to stdout; its sources (and, on "
        "chat-results, the session id) go to stderr. Without a question, read questions "
        "from stdin, one per line, as one conversation, until end of input or an empty "
        "line. The default API is Chat Completions, where the server keeps no history: the "
        "conversation so far is sent with each question.",
    )
    chat.add_argument("question", nargs="?", help="the question (omit for interactive mode)")
    chat.add_argument(
        "--api",
        choices=APIS,
        default=APIS[0],
        help="the chat API: completions (Chat Completions, the current API of both services) "
        "or chat-results (deprecated by Inkeep; the server keeps the session) "
        "(default: %(default)s)",
    )
    chat.add_argument(
        "--model", metavar="NAME", help=f"model to ask (completions; default: {DEFAULT_MODEL})"
    )
    chat.add_argument("--session", metavar="ID", help="continue this chat session (chat-results)")
    chat.add_argument(
        "--integration-id",
        metavar="ID",
        help="integration id sent with each question (chat-results; default: "
        f"{DEFAULT_INTEGRATION_ID})",
    )
    chat.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object per line: each event as {"event": NAME, "data": ...}, '
        'then the whole answer as {"result": ...}; no sources or session line on stderr',
    )
    _add_connection_options(chat, top_level=False, uses=_USES["chat"])

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
        type=_whole_number,  # its range is the SDK's rule (1..3600), said in its words
        default=3600,
        help="lifetime in seconds, 1..3600 (default: %(default)s)",
    )
    create.add_argument("--user", metavar="ID", help="user identifier to bind to the token")
    create.add_argument("--json", action="store_true", help="print the whole JSON answer")
    _add_connection_options(create, top_level=False, uses=_USES["token create"])
    revoke = token_commands.add_parser(
        "revoke",
        help="revoke a client token",
        description="Revoke a client token. Revoking one twice is not an error.",
    )
    revoke.add_argument("token", metavar="TOKEN", help="the token, or - to read it from stdin")
    _add_connection_options(revoke, top_level=False, uses=_USES["token revoke"])

    demo = commands.add_parser(
        "demo",
        help="walk through the whole story against an in-process server",
        description="Start a reference server in-process, mint a client token, stream an "
        "answer and a follow-up with it, revoke it and show the next call refused.",
    )
    demo.add_argument(
        "--api",
        choices=APIS,
        default=APIS[0],
        help="the chat API the page uses (default: %(default)s)",
    )
    return parser


# -- settings -------------------------------------------------------------------------------


def _secrets(args: argparse.Namespace) -> list[str]:
    """Every secret this run knows of, so that error messages can be scrubbed of them:
    those given on the command line, and those the client's settings resolved."""
    found = [
        getattr(args, "api_key", None),
        getattr(args, "session_token", None),
        getattr(args, "revoked_token", None),
        *getattr(args, "resolved_secrets", ()),
    ]
    return [s for s in found if s]


def _redact(text: str, secrets: Sequence[str]) -> str:
    # The SDK keeps credentials out of its messages; this is the second line of defence
    # for text the CLI did not write itself (a server may echo what it was sent, or the
    # start of it).
    return redact(text, [secret for secret in secrets if len(secret) >= MIN_SECRET_LENGTH])


def _check_options_used(args: argparse.Namespace, command: str) -> None:
    """Refuse an option given to a command (or a chat API) that does not use it."""
    for name in CONNECTION_OPTIONS:
        if name not in _USES[command] and getattr(args, name, None) is not None:
            raise _UsageError(f"'{PROG} {command}' does not use --{name.replace('_', '-')}")
    if command == "chat":
        for api, names in _API_OPTIONS.items():
            for name in names:
                if api != args.api and getattr(args, name) is not None:
                    raise _UsageError(
                        f"'{PROG} chat --api {args.api}' does not use "
                        f"--{name.replace('_', '-')} (it is for --api {api})"
                    )


def _client(args: argparse.Namespace) -> ChatClient:
    """A ChatClient given only the connection options set on the command line.

    The others are left out, so that ``Settings.resolve`` applies the ``CHATSDK_*``
    variables and the defaults, and reports what is missing or wrong in its words
    (put in the CLI's by ``_in_cli_terms``).
    """
    given: dict[str, Any] = {
        name: getattr(args, name, None)
        for name in ("api_key", "project", "session_token", "base_url", "origin")
    }
    options = {name: value for name, value in given.items() if value is not None}
    if getattr(args, "timeout", None) is not None:
        try:
            options["timeout"] = _seconds(args.timeout)
        except ValueError as exc:
            raise _UsageError(f"--timeout: {exc}") from None
    client = ChatClient(**options)
    settings = client.settings
    args.resolved_secrets = [settings.api_key, settings.session_token]
    return client


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


class _Waiting:
    """Shows "waiting for the first event..." on a terminal's stderr until an event comes.

    It counts the seconds, and is wiped (carriage return, erase line) before the first
    output; on anything but a terminal it shows nothing.
    """

    MESSAGE = "waiting for the first event..."

    def __init__(self, err: TextIO) -> None:
        self._err = err
        self._task: asyncio.Task[None] | None = None
        try:
            self._enabled = err.isatty()
        except (AttributeError, ValueError):
            self._enabled = False

    def start(self) -> None:
        if self._enabled:
            self._task = asyncio.get_running_loop().create_task(self._show())

    async def _show(self) -> None:
        seconds = 0
        while True:
            shown = self.MESSAGE + (f" {seconds} s" if seconds else "")
            self._err.write("\r" + shown)
            self._err.flush()
            await asyncio.sleep(1)
            seconds += 1

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
            self._err.write("\r\x1b[K")  # back to the line's start, erase it
            self._err.flush()


def _link_lines(links: Sequence[Link]) -> list[str]:
    """The sources of a Chat Completions answer (Inkeep's ``provideLinks``)."""
    lines = []
    for number, link in enumerate(links, start=1):
        title = link.title or link.label or link.url
        lines.append(f"  [{number}] {title}" + (f" - {link.url}" if link.url != title else ""))
    return lines


_EVENT_NAMES: dict[type, str] = {
    MessageChunk: "message_chunk",
    RecordsCited: "records_cited",
    ChatCompletionChunk: "chunk",
    ProvidedLinks: "links",
    AIAnnotations: "annotations",
}


def _event_json(event: ChatEvent | CompletionEvent) -> dict[str, Any]:
    """``{"event": NAME, "data": ...}``: the event's name and its payload."""
    if isinstance(event, UnknownEvent):
        try:
            data: Any = json.loads(event.data)
        except ValueError:
            data = event.data
        return {"event": event.event, "data": data}
    return {"event": _EVENT_NAMES[type(event)], "data": event}


class _Output:
    """Where a chat goes: the answer's text on stdout as it streams and its sources on
    stderr, or (``--json``) one JSON object per line on stdout."""

    def __init__(self, out: TextIO, err: TextIO, *, as_json: bool) -> None:
        self.out, self.err, self.json = out, err, as_json
        self._at_line_start = True

    def text(self, text: str) -> None:
        if text and not self.json:
            self.out.write(text)
            self.out.flush()
            self._at_line_start = text.endswith("\n")

    def line(self, value: Any) -> None:
        """One JSON object on a line of its own (``--json`` only); ASCII, its other
        characters as ``\\u`` escapes, where stdout's encoding is not UTF-8."""
        if self.json:
            line = msgspec.json.encode(value).decode()
            if not _utf8(self.out):
                line = json.dumps(json.loads(line), separators=(",", ":"))
            self.out.write(line + "\n")
            self.out.flush()

    def end(self, sources: Sequence[str], session: str | None = None) -> None:
        """The answer is whole: end its line; list its sources (and session) on stderr."""
        if self.json:
            return
        if not self._at_line_start:
            self.out.write("\n")
            self.out.flush()
            self._at_line_start = True
        if sources:
            # The server's titles and URLs, on the user's terminal: shown, not obeyed.
            self.err.write("sources:\n" + "".join(escaped(line) + "\n" for line in sources))
        if session:
            self.err.write(f"session: {escaped(session)}\n")
        self.err.flush()


async def _streamed(stream: EventStream[Any, T], on_event: Callable[[Any], None], err: TextIO) -> T:
    """Read ``stream`` through, each event to ``on_event``; its result. A terminal shows
    that it is waiting until the first event arrives."""
    waiting = _Waiting(err)
    waiting.start()
    try:
        async with stream:
            async for event in stream:
                waiting.stop()
                on_event(event)
            return await stream.final_result()
    finally:
        waiting.stop()


class _ChatResultsConversation:
    """``--api chat-results``: the server keeps the session; the CLI keeps its id."""

    def __init__(self, args: argparse.Namespace, output: _Output) -> None:
        self.output = output
        self.session: str | None = args.session
        given = args.integration_id
        self.integration_id: str = DEFAULT_INTEGRATION_ID if given is None else given

    def _event(self, event: ChatEvent) -> None:
        self.output.line(_event_json(event))
        if type(event) is MessageChunk:
            self.output.text(event.content_chunk)

    async def ask(self, client: ChatClient, question: str) -> None:
        if self.session is None:
            stream = client.chat.create(integration_id=self.integration_id, messages=question)
        else:
            stream = client.chat.continue_(
                self.session, integration_id=self.integration_id, message=question
            )
        result = await _streamed(stream, self._event, self.output.err)
        self.session = result.chat_session_id or self.session
        body = msgspec.to_builtins(result)
        body["chat_session_id"] = self.session
        self.output.line({"result": body})
        self.output.end(_source_lines(result.citations), self.session)


class _CompletionsConversation:
    """Chat Completions: the server keeps no history, so the CLI keeps the conversation
    and sends it whole with each question (Inkeep's tools offered, for the sources)."""

    def __init__(self, args: argparse.Namespace, output: _Output) -> None:
        self.output = output
        self.model: str = DEFAULT_MODEL if args.model is None else args.model
        self.history: list[ChatCompletionMessage] = []

    def _event(self, event: CompletionEvent) -> None:
        self.output.line(_event_json(event))
        if type(event) is ChatCompletionChunk:
            for choice in event.choices:
                if not choice.index and choice.delta.content:
                    self.output.text(choice.delta.content)

    async def ask(self, client: ChatClient, question: str) -> None:
        messages = [*self.history, ChatCompletionMessage(role="user", content=question)]
        stream = client.chat.completions.create(
            model=self.model,
            messages=messages,
            tools=INKEEP_TOOLS,
            tool_choice="auto",
            stream_options={"include_usage": True},
        )
        result = await _streamed(stream, self._event, self.output.err)
        self.history = [*messages, result.message]
        self.output.line({"result": result})
        self.output.end(_link_lines(result.links))


def _cmd_chat(args: argparse.Namespace, runner: asyncio.Runner) -> int:
    err = sys.stderr
    output = _Output(sys.stdout, err, as_json=args.json)
    conversation: _ChatResultsConversation | _CompletionsConversation
    if args.api == "chat-results":
        conversation = _ChatResultsConversation(args, output)
    else:
        conversation = _CompletionsConversation(args, output)
    question: str | None = args.question
    if question is not None and not question.strip():
        raise _UsageError("the question is empty")
    client = _client(args)
    try:
        if question is not None:
            runner.run(conversation.ask(client, question))
            return 0
        stdin = sys.stdin
        interactive = stdin.isatty()
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
            runner.run(conversation.ask(client, line))
            if interactive:
                err.write("\n")
        return 0
    finally:
        runner.run(client.aclose())


def _cmd_token_create(args: argparse.Namespace, runner: asyncio.Runner) -> int:
    client = _client(args)
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
    client = _client(args)
    _run(runner, client, lambda: client.tokens.revoke(token))
    sys.stderr.write("token revoked\n")
    return 0


def _cmd_serve(args: argparse.Namespace, runner: asyncio.Runner) -> int:
    from .server import Faults, ReferenceServer
    from .server.app import DEFAULT_API_KEY, DEFAULT_PROJECT

    # Resolved like a client's settings, so that one set of CHATSDK_* variables serves
    # both (the server makes no calls: no timeout is read).
    settings = Settings.resolve(api_key=args.api_key, project=args.project, timeout=None)
    args.resolved_secrets = [settings.api_key]
    configured_key = settings.api_key
    api_key = configured_key or DEFAULT_API_KEY
    project = settings.project or DEFAULT_PROJECT
    given = _faults_given(args)
    try:
        faults = msgspec.convert(given, Faults) if given else None
    except msgspec.ValidationError as exc:
        # "Expected `int`, got `str` - at `$.name`": name the flag, not the field.
        where = re.search(r"at `\$\.(\w+)`", str(exc))
        flag = _fault_flag(where.group(1)) if where else "a fault flag"
        raise _UsageError(f"{flag}: {str(exc).split(' - at ')[0]}") from None
    server = ReferenceServer(
        api_key=api_key,
        project=project,
        host=args.host,
        port=args.port,
        db=args.db,
        faults=faults,
    )
    # The built-in test key is public (it is in the docs), and a first-time user needs
    # it to connect; a key the user chose is a secret and is never printed.
    key_note = "API key as configured" if configured_key else f"API key {DEFAULT_API_KEY}"

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

    pace = 0.02 if sys.stdout.isatty() else 0.0
    runner.run(run_demo(sys.stdout, pace=pace, api=args.api))
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace, asyncio.Runner], int]] = {
    "serve": _cmd_serve,
    "chat": _cmd_chat,
    "token create": _cmd_token_create,
    "token revoke": _cmd_token_revoke,
    "demo": _cmd_demo,
}


# -- entry point ----------------------------------------------------------------------------


# The SDK names its parameters; the user typed options or set variables. Each parameter
# the CLI passes on: its option, and the variable Settings.resolve reads it from when the
# option is not given and still names it by the parameter (the URL, the origin and the
# timeout it names as CHATSDK_* itself, when they came from there).
_OPTIONS: dict[str, tuple[str, str | None]] = {
    "api_key": ("--api-key", "CHATSDK_API_KEY"),
    "session_token": ("--session-token", "CHATSDK_SESSION_TOKEN"),
    "project": ("--project", "CHATSDK_PROJECT"),
    "base_url": ("--base-url", None),
    "origin": ("--origin", None),
    "timeout": ("--timeout", "CHATSDK_TIMEOUT"),
    "model": ("--model", None),
    "embed_origin": ("--origin", None),
    "user_identifier": ("--user", None),
    "integration_id": ("--integration-id", None),
    "chat_session_id": ("--session", None),
}
# The start of a message about the CLI's own inputs, renamed (first match wins).
_SUBJECTS: list[tuple[str, str]] = [
    (r"(?:messages\[\d+\]|message)\.content must not be empty", "the question is empty"),
    (r"(?:messages\[\d+\]|message)\.content", "the question"),
    (r"token must be a non-empty client token string", "the token to revoke is empty"),
    (r"expires_after must be", "--expires-after must be"),
    (r"token(?= must| contains)", "the token"),
]
# SDK-only wording, in the CLI's words.
_PHRASES: list[tuple[str, str]] = [
    (r", or a callable returning one\)", ")"),
    (r"\btokens\.create\b", f"'{PROG} token create'"),
    (r"positive number or None", "positive number of seconds"),
]


def _in_cli_terms(message: str, args: argparse.Namespace) -> str:
    """A ValidationError's message with the SDK's parameter names replaced by what the
    user typed: the option if it was given, else the variable it came from.

    ``pass api_key=...`` (advice) becomes ``pass --api-key``; the variables a message
    names already (``CHATSDK_BASE_URL must be ...``) are kept.
    """

    def option(name: str) -> str:
        flag, variable = _OPTIONS[name]
        return variable if variable and getattr(args, name, None) is None else flag

    for pattern, term in _SUBJECTS:
        found = re.match(pattern + r"\b", message)
        if found:
            message = term + message[found.end() :]
            break
    else:
        found = re.match(r"(\w+)(?:\.\w+)?\b", message)  # "api_key ...", "Timeout.idle ..."
        name = found and found.group(1).lower()
        if found and name in _OPTIONS:
            message = option(name) + message[found.end() :]
    names = "|".join(_OPTIONS)
    message = re.sub(rf"\b({names})=\.\.\.", lambda m: _OPTIONS[m.group(1)][0], message)
    # Names with an underscore are never ordinary words: replaced anywhere.
    spelled = "|".join(name for name in _OPTIONS if "_" in name)
    message = re.sub(rf"(?<![\w.])({spelled})\b", lambda m: option(m.group(1)), message)
    for pattern, replacement in _PHRASES:
        message = re.sub(pattern, replacement, message)
    return message


def _fail(message: str, secrets: Sequence[str]) -> None:
    line = " ".join(_redact(message, secrets).split())  # one line, whatever the message
    sys.stderr.write(f"{PROG}: error: {escaped(line)}\n")
    sys.stderr.flush()


def _utf8(stream: TextIO) -> bool:
    return (getattr(stream, "encoding", None) or "").lower().replace("-", "") in ("utf8", "")


def _standard_streams() -> None:
    """Standard streams a shell closed (``<&-``, ``>&-``) read as empty and written to
    nowhere; text a terminal's encoding cannot hold (``PYTHONIOENCODING=ascii``, a
    Latin-1 terminal) written as escapes (``\\xe9``), not an error that loses the answer."""
    if sys.stdin is None:
        sys.stdin = open(os.devnull)  # noqa: SIM115 - for the process's life
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115
        elif not _utf8(stream) and hasattr(stream, "reconfigure"):
            with contextlib.suppress(OSError, ValueError):
                stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``chatsdk`` command with ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    _standard_streams()
    parser = build_parser()
    args = argparse.Namespace()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit_:  # --help and --version
            code = exit_.code
            return code if isinstance(code, int) else 0
        name = args.command + (f" {args.token_command}" if args.command == "token" else "")
        _check_options_used(args, name)
        with asyncio.Runner() as runner:
            return _COMMANDS[name](args, runner)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except _UsageError as exc:
        _fail(str(exc), _secrets(args))
        return 2
    except ValidationError as exc:
        _fail(_in_cli_terms(str(exc), args), _secrets(args))
        return 2
    except (ChatSDKError, _Failure) as exc:
        _fail(str(exc), _secrets(args))
        return 1
    except BrokenPipeError:
        # The reader went away (`chatsdk chat ... | head`): stop quietly, and keep Python
        # from complaining again when it flushes stdout at exit. The status is a process
        # stopped by SIGPIPE's (128 + 13), as `yes | head` leaves: no API error happened.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE (13); a literal: Windows has no signal.SIGPIPE
    except OSError as exc:
        _fail(str(exc) or type(exc).__name__, _secrets(args))
        return 1
    except Exception as exc:  # a console script never shows a traceback
        _fail(f"unexpected {type(exc).__name__}: {exc}", _secrets(args))
        return 1
