"""Hardening: bad input refused before anything is sent, secrets never shown, and the
reference server's defences that tests/test_server.py does not already cover.

1. Client-side input: every refusal is a ValidationError raised before a request (a
   recording server proves nothing arrived).
2. Secrets: a full run at DEBUG (every logger, aiohttp's included), with every failure
   the SDK can meet, never shows the API key or a client token in a log record, a repr,
   an exception (chained causes and formatted tracebacks included) or CLI output.
3. Reference server: hostile bodies and headers get a 4xx, never a 5xx; client tokens
   are checked on every route; SQL is only ever parameterised.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import json
import logging
import socket
import time
import traceback
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import chatsdk
from chatsdk.server import Faults, ReferenceServer
from chatsdk.server import store as store_module
from tests.scripted import Reply, ScriptedServer, sse
from tests.support import SIGNING_SECRET, create_body, forge, mint, reference_server
from tests.support import read_request as read_head

pytestmark = pytest.mark.anyio

# Long and distinctive, so that a search for them can only find a leak.
KEY = "hardening-SECRET-api-key-7f3a9c1e5b"
WRONG_KEY = "hardening-WRONG-api-key-0d8e2b6a4c"
PROJECT = "demo"
ORIGIN = "https://docs.example.com"
QUESTION = "How do I retry a failed request?"
FAST = chatsdk.RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.02)
OK_STREAM = sse(("message_chunk", '{"content_chunk":"hi","finish_reason":"stop"}'))

BAD_CHARACTERS = ["\r", "\n", "\r\nX-Injected: 1", "\x00", "\x1b", "\x7f", "\x85", "\u2028"]


@contextlib.asynccontextmanager
async def recorder(reply: Reply | None = None) -> AsyncIterator[ScriptedServer]:
    """A server that records every request; a test asserts it saw none."""
    async with ScriptedServer(
        [reply or Reply(body=OK_STREAM, content_type="text/event-stream")]
    ) as srv:
        yield srv


def client_for(srv: ScriptedServer, **kw: Any) -> chatsdk.ChatClient:
    kw.setdefault("project", PROJECT)
    return chatsdk.ChatClient(base_url=srv.url, retries=0, **kw)


# == 1. client-side input ===============================================================


@pytest.mark.parametrize("bad", BAD_CHARACTERS)
@pytest.mark.parametrize("field", ["api_key", "project", "session_token", "header"])
def test_control_characters_in_credentials_and_headers_are_refused(field: str, bad: str) -> None:
    value = f"value-{bad}-tail"
    kwargs: dict[str, Any] = {"api_key": "k" * 12, "project": PROJECT}
    if field == "header":
        kwargs["headers"] = {"X-Extra": value}
    else:
        kwargs[field] = value
    with pytest.raises(chatsdk.ValidationError) as info:
        chatsdk.ChatClient(base_url="http://127.0.0.1:9", **kwargs)
    assert value not in str(info.value)  # the refused value is never echoed


@pytest.mark.parametrize("name", ["", "X Bad", "X:Bad", "X-Bad\r\n", "Ümlaut", "X(1)"])
def test_invalid_header_names_are_refused(name: str) -> None:
    with pytest.raises(chatsdk.ValidationError, match="header name"):
        chatsdk.ChatClient("k" * 12, headers={name: "v"}, base_url="http://127.0.0.1:9")


@pytest.mark.parametrize(
    "url", ["http://user:pa55w0rd@127.0.0.1:9", "http://user:pa55w0rd@[::1", "http://:pa55w0rd@h"]
)
def test_credentials_in_base_url_are_refused_and_not_echoed(url: str) -> None:
    with pytest.raises(chatsdk.ValidationError) as info:
        chatsdk.ChatClient("k" * 12, base_url=url)
    assert "pa55w0rd" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "127.0.0.1:9",
        "ftp://127.0.0.1",
        "http://",
        "http://:8080",  # no host: aiohttp's InvalidURL at the first call
        "http://[::1",  # urlsplit's ValueError
        "http://127.0.0.1:99999",
        "http://127.0.0.1:0",  # a connect error at the first call
        "http://127.0.0.1:port",
        "http://a..b",  # the resolver's UnicodeError, at connect time
        "http://" + "a" * 64 + ".example",
        "http://exa mple.com",
        "http://127.0.0.1:9/?q=1",
        "http://127.0.0.1:9/#top",
        "http://127.0.0.1:9\r\n",
        5,
    ],
)
def test_invalid_base_urls_are_a_validation_error(url: Any) -> None:
    with pytest.raises(chatsdk.ValidationError, match="base_url"):
        chatsdk.ChatClient("k" * 12, base_url=url)


@pytest.mark.parametrize(
    "origin", ["docs.example.com", "https://docs.example.com/", "https://a.example?", "https://a b"]
)
def test_origin_setting_must_be_an_origin(origin: str) -> None:
    with pytest.raises(chatsdk.ValidationError, match="origin"):
        chatsdk.ChatClient(
            session_token="t" * 12, project=PROJECT, origin=origin, base_url="http://127.0.0.1:9"
        )


async def test_a_token_provider_returning_an_injection_is_refused_before_sending() -> None:
    async def provider() -> str:
        return "header.payload.sig\r\nX-Injected: 1"

    async with recorder() as srv, client_for(srv, session_token=provider) as c:
        with pytest.raises(chatsdk.ValidationError, match="control character") as info:
            await c.chat.create(integration_id="docs", messages=QUESTION)
    assert srv.seen == []
    assert "X-Injected" not in str(info.value)


NON_ORIGINS = [
    "docs.example.com",
    "//docs.example.com",
    "ftp://docs.example.com",
    "https://docs.example.com/",
    "https://docs.example.com/page",
    "https://docs.example.com?",
    "https://docs.example.com?q=1",
    "https://docs.example.com#",
    "https://docs.example.com#top",
    "https://docs.example.com:",
    "https://docs.example.com:99999",
    "https://docs.example.com:port",
    "https://user@docs.example.com",
    "https://user:pw@docs.example.com",
    "https://docs.example.com\r\nX-Injected: 1",
    "https://docs example.com",
    "https://docs.example.com\u2028",
    "https://[zz]",
    "https://",
    "",
    "HTTPS://docs.example.com",
]


@pytest.mark.parametrize("origin", NON_ORIGINS)
async def test_embed_origin_must_be_an_origin_nothing_sent(origin: str) -> None:
    async with recorder() as srv, client_for(srv, api_key=KEY) as c:
        with pytest.raises(chatsdk.ValidationError, match="embed_origin"):
            await c.tokens.create(embed_origin=origin)
    assert srv.seen == []


@pytest.mark.parametrize(
    "origin", ["https://docs.example.com", "http://localhost:8080", "https://[::1]:8443"]
)
async def test_real_origins_are_sent(origin: str) -> None:
    token = {
        "client_token": "a.b.c",
        "embed_origin": origin,
        "expires_after": 60,
        "status": "active",
    }
    async with recorder(Reply(body=json.dumps(token))) as srv, client_for(srv, api_key=KEY) as c:
        await c.tokens.create(embed_origin=origin, expires_after=60)
    assert json.loads(srv.seen[0].body)["embed_origin"] == origin


@pytest.mark.parametrize("expires_after", [0, -1, 3601, 10**9, 1.5, "60", True, None])
async def test_expires_after_is_1_to_3600_nothing_sent(expires_after: Any) -> None:
    async with recorder() as srv, client_for(srv, api_key=KEY) as c:
        with pytest.raises(chatsdk.ValidationError, match="expires_after"):
            await c.tokens.create(embed_origin=ORIGIN, expires_after=expires_after)
    assert srv.seen == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"messages": [chatsdk.Message("system", "x")]}, "role"),
        ({"messages": [chatsdk.Message("", "x")]}, "role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "role"),
        ({"messages": [chatsdk.Message("user", 5)]}, "content"),  # type: ignore[arg-type]
        ({"messages": [chatsdk.Message("user", None)]}, "content"),  # type: ignore[arg-type]
        ({"messages": [{"role": "user", "content": b"x"}]}, "content"),
        ({"messages": [chatsdk.Message("user", "   ")]}, "empty"),
        ({"messages": [chatsdk.Message("user", "q"), chatsdk.Message("assistant", "a")]}, "last"),
        ({"messages": []}, "messages"),
        ({"messages": [1, 2]}, "messages"),
        ({"messages": {"role": "user", "content": "q"}}, "messages"),
        ({"messages": "q", "integration_id": ""}, "integration_id"),
        ({"messages": "q", "integration_id": "  "}, "integration_id"),
        ({"messages": "q", "integration_id": 5}, "integration_id"),
        ({"messages": "q", "tags": "abc"}, "tags"),
        ({"messages": "q", "tags": [1]}, "tags"),
        ({"messages": "q", "guidance": 5}, "guidance"),
    ],
)
async def test_chat_create_arguments_are_validated_nothing_sent(
    kwargs: dict[str, Any], match: str
) -> None:
    kwargs.setdefault("integration_id", "docs")
    async with recorder() as srv, client_for(srv, api_key=KEY) as c:
        with pytest.raises(chatsdk.ValidationError, match=match):
            await c.chat.create(**kwargs)
    assert srv.seen == []


@pytest.mark.parametrize(
    ("session_id", "message", "match"),
    [
        ("", "q", "chat_session_id"),
        ("  ", "q", "chat_session_id"),
        (".", "q", "segment"),  # yarl would resolve these: another endpoint would be hit
        ("..", "q", "segment"),
        ("s", chatsdk.Message("assistant", "a"), "role"),
        ("s", "", "empty"),
        ("s", {"role": "user"}, "content"),
    ],
)
async def test_chat_continue_arguments_are_validated_nothing_sent(
    session_id: str, message: Any, match: str
) -> None:
    async with recorder() as srv, client_for(srv, api_key=KEY) as c:
        with pytest.raises(chatsdk.ValidationError, match=match):
            await c.chat.continue_(session_id, integration_id="docs", message=message)
    assert srv.seen == []


@pytest.mark.parametrize("token", ["", "   ", None, 5, "a.b\r\nX-Injected: 1", "a\x00b"])
async def test_revoke_refuses_bad_tokens_nothing_sent(token: Any) -> None:
    async with recorder(Reply(status=204)) as srv, client_for(srv, api_key=KEY) as c:
        with pytest.raises(chatsdk.ValidationError):
            await c.tokens.revoke(token)
    assert srv.seen == []


@pytest.mark.parametrize(
    "token",
    ["a.b&token=evil", "a.b#frag", "a.b?x=1", "a/b/../c", "a+b=c%20d", "a b", "é.ü.ß", "a;b,c"],
)
async def test_revoke_token_is_url_encoded_never_spliced(token: str) -> None:
    async with recorder(Reply(status=204)) as srv, client_for(srv, api_key=KEY) as c:
        await c.tokens.revoke(token)
    (seen,) = srv.seen
    assert seen.method == "DELETE" and seen.path == "/rpc/chatSessions.revoke"
    assert seen.query == {"token": token}  # one parameter, exactly the token


async def test_token_operations_without_the_key_send_nothing() -> None:
    async with recorder() as srv, client_for(srv, session_token="a.b.c") as c:
        with pytest.raises(chatsdk.ValidationError, match="API key"):
            await c.tokens.create(embed_origin=ORIGIN)
        with pytest.raises(chatsdk.ValidationError, match="API key"):
            await c.tokens.revoke("a.b.c")
    assert srv.seen == []


# == 2. secrets =========================================================================

AIOHTTP_LOGGERS = [
    "aiohttp.client",
    "aiohttp.access",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.internal",
    "chatsdk",
]


class Everything(logging.Handler):
    """Keeps every record, formatted with its traceback and its raw arguments."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(f"{self.format(record)} args={record.args!r}")


@contextlib.contextmanager
def debug_logging() -> Iterator[Everything]:
    handler = Everything()
    loggers = [logging.getLogger(), *map(logging.getLogger, AIOHTTP_LOGGERS)]
    levels = [lg.level for lg in loggers]
    root = logging.getLogger()
    root.addHandler(handler)
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def exception_texts(exc: BaseException) -> list[str]:
    """Everything an exception can show: str, repr, the formatted chain, every cause."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(vars(current))]
        current = current.__cause__ or current.__context__
    return texts


class Evidence:
    """Everything shown during a run; ``check`` searches it for the secrets."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.errors: list[type[BaseException]] = []

    def show(self, *objects: object) -> None:
        for obj in objects:
            self.texts += [repr(obj), str(obj)]

    async def expect(
        self, kind: type[BaseException], call: Callable[[], Awaitable[object]]
    ) -> None:
        with pytest.raises(kind) as info:
            await call()
        self.errors.append(type(info.value))
        self.texts += exception_texts(info.value)

    def check(self, secrets: list[str], *more: str) -> None:
        everything = [*self.texts, *more]
        for secret in secrets:
            leaks = [t for t in everything if secret in t]
            assert not leaks, f"a secret shows in: {leaks[0][:2000]}"


async def drain(stream: chatsdk.ChatStream) -> chatsdk.ChatResult:
    async with stream:
        return await stream.final_result()


@contextlib.asynccontextmanager
async def raw_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A server answering with bytes written by hand; yields its base URL."""
    writers: list[asyncio.StreamWriter] = []

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
        await asyncio.sleep(0)


async def garbage_status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(b"SPAM EGGS\r\n\r\n")
    await writer.drain()


async def echo_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # A hostile server answering 400 with the whole request (key, token and all) in its
    # body, in a header and in its reason phrase.
    head = await read_head(reader)
    text = head.decode("latin-1")
    request_line = text.split("\r\n", 1)[0].replace("\r", " ")
    body = json.dumps({"message": text, "detail": text, "echo": [text]}).encode()
    writer.write(
        f"HTTP/1.1 400 {request_line}\r\nContent-Type: application/json\r\n"
        f"X-Echo: {request_line}\r\nX-Request-Id: {request_line[-60:]}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
        + body
    )
    await writer.drain()


def unused_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def test_no_secret_in_any_log_repr_exception_or_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    evidence = Evidence()
    secrets = [KEY, WRONG_KEY]
    with debug_logging() as logs, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with ReferenceServer(api_key=KEY, project=PROJECT) as server:
            url = server.base_url
            async with chatsdk.ChatClient(KEY, project=PROJECT, base_url=url, retries=FAST) as c:
                evidence.show(c, c._transport.settings, c._transport)
                # -- the happy path: tokens, chat with the key and with a token --------
                tok = await c.tokens.create(
                    embed_origin=ORIGIN, expires_after=600, user_identifier="u1"
                )
                revoked = await c.tokens.create(embed_origin=ORIGIN)
                secrets += [tok.client_token, revoked.client_token]
                evidence.show(tok, revoked)
                stream = c.chat.create(integration_id="docs", messages=QUESTION)
                evidence.show(stream)
                first = await drain(stream)
                assert first.chat_session_id
                evidence.show(stream, first)
                evidence.show(
                    await c.chat.continue_(
                        first.chat_session_id, integration_id="docs", message="And more?"
                    )
                )
                await c.tokens.revoke(revoked)
                await c.tokens.revoke(revoked.client_token)  # twice: not an error

                async with chatsdk.ChatClient(
                    session_token=tok.client_token,
                    project=PROJECT,
                    base_url=url,
                    origin=ORIGIN,
                    retries=FAST,
                ) as browser:
                    evidence.show(browser, browser._transport.settings)
                    answer = await browser.chat.create(integration_id="docs", messages=QUESTION)
                    assert answer.chat_session_id
                    evidence.show(
                        answer,
                        await browser.chat.continue_(
                            answer.chat_session_id, integration_id="docs", message="Tell me more."
                        ),
                    )
                    # -- failures ----------------------------------------------------------
                    server.faults = Faults(malformed_after=2)
                    await evidence.expect(
                        chatsdk.StreamError,
                        lambda: browser.chat.create(integration_id="docs", messages=QUESTION),
                    )
                    await evidence.expect(
                        chatsdk.StreamError,
                        lambda: c.chat.create(integration_id="docs", messages=QUESTION),
                    )
                    server.faults = Faults(fail_first=100, fail_status=503, retry_after="0")
                    await evidence.expect(
                        chatsdk.InternalServerError,
                        lambda: browser.chat.create(integration_id="docs", messages=QUESTION),
                    )
                    await evidence.expect(
                        chatsdk.InternalServerError, lambda: c.tokens.create(embed_origin=ORIGIN)
                    )
                    await evidence.expect(chatsdk.InternalServerError, lambda: c.tokens.revoke(tok))
                    server.faults = Faults(drop_after_events=2, no_content_location=True)
                    await evidence.expect(
                        chatsdk.APIConnectionError,
                        lambda: browser.chat.create(integration_id="docs", messages=QUESTION),
                    )
                    server.faults = Faults()

                async with chatsdk.ChatClient(
                    session_token=revoked.client_token, project=PROJECT, base_url=url, retries=FAST
                ) as gone:
                    await evidence.expect(
                        chatsdk.AuthenticationError,
                        lambda: gone.chat.create(integration_id="docs", messages=QUESTION),
                    )
                async with chatsdk.ChatClient(
                    session_token=tok.client_token,
                    project=PROJECT,
                    base_url=url,
                    origin="https://evil.example.net",
                    retries=FAST,
                ) as elsewhere:
                    await evidence.expect(
                        chatsdk.PermissionDeniedError,
                        lambda: elsewhere.chat.create(integration_id="docs", messages=QUESTION),
                    )
                async with chatsdk.ChatClient(
                    WRONG_KEY, project=PROJECT, base_url=url, retries=FAST
                ) as wrong:
                    await evidence.expect(
                        chatsdk.AuthenticationError,
                        lambda: wrong.tokens.create(embed_origin=ORIGIN),
                    )
                    await evidence.expect(
                        chatsdk.AuthenticationError, lambda: wrong.tokens.revoke(tok)
                    )
                    await evidence.expect(
                        chatsdk.AuthenticationError,
                        lambda: wrong.chat.create(integration_id="docs", messages=QUESTION),
                    )

        dead = unused_port_url()
        async with chatsdk.ChatClient(KEY, project=PROJECT, base_url=dead, retries=FAST) as c:
            await evidence.expect(
                chatsdk.APIConnectionError, lambda: c.tokens.create(embed_origin=ORIGIN)
            )
            await evidence.expect(chatsdk.APIConnectionError, lambda: c.tokens.revoke(tok))
            await evidence.expect(
                chatsdk.APIConnectionError,
                lambda: c.chat.create(integration_id="docs", messages=QUESTION),
            )
        async with chatsdk.ChatClient(
            session_token=tok.client_token, project=PROJECT, base_url=dead, retries=FAST
        ) as c:
            await evidence.expect(
                chatsdk.APIConnectionError,
                lambda: c.chat.create(integration_id="docs", messages=QUESTION),
            )

        # aiohttp's own exception for a garbage status line shows the URL (the token is in
        # a revoke's query) in its str and the request headers (the key) in its repr.
        async with raw_server(garbage_status) as bad:
            async with chatsdk.ChatClient(KEY, project=PROJECT, base_url=bad, retries=FAST) as c:
                await evidence.expect(chatsdk.APIConnectionError, lambda: c.tokens.revoke(tok))
                await evidence.expect(
                    chatsdk.APIConnectionError, lambda: c.tokens.create(embed_origin=ORIGIN)
                )
            async with chatsdk.ChatClient(
                session_token=tok.client_token, project=PROJECT, base_url=bad
            ) as c:
                await evidence.expect(
                    chatsdk.APIConnectionError,
                    lambda: c.chat.create(integration_id="docs", messages=QUESTION),
                )
        # A server echoing the request (headers and query) in its error is scrubbed too.
        async with raw_server(echo_request) as echo:
            async with chatsdk.ChatClient(KEY, project=PROJECT, base_url=echo, retries=0) as c:
                await evidence.expect(chatsdk.BadRequestError, lambda: c.tokens.revoke(tok))
                await evidence.expect(
                    chatsdk.BadRequestError, lambda: c.tokens.create(embed_origin=ORIGIN)
                )
                await evidence.expect(
                    chatsdk.BadRequestError,
                    lambda: c.chat.create(integration_id="docs", messages=QUESTION),
                )
            async with chatsdk.ChatClient(
                session_token=tok.client_token, project=PROJECT, base_url=echo, retries=0
            ) as c:
                await evidence.expect(
                    chatsdk.BadRequestError,
                    lambda: c.chat.create(integration_id="docs", messages=QUESTION),
                )

    out, err = capsys.readouterr()
    assert logs.texts  # DEBUG logging was on: the run did log
    assert len(evidence.errors) == 22
    evidence.check(secrets, *logs.texts, out, err, *(str(w.message) for w in caught))


async def test_an_echoed_secret_is_masked_but_the_message_kept() -> None:
    async with raw_server(echo_request) as echo:
        async with chatsdk.ChatClient(KEY, project=PROJECT, base_url=echo, retries=0) as c:
            with pytest.raises(chatsdk.BadRequestError) as info:
                await c.tokens.revoke("a-secret-token-to-revoke")
    err = info.value
    assert "DELETE /rpc/chatSessions.revoke?token=***" in str(err)
    assert "Gram-Key: ***" in err.body["message"] and "Gram-Project: demo" in err.body["message"]
    assert err.headers["X-Echo"].endswith("token=*** HTTP/1.1")


def test_cli_output_never_shows_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    from chatsdk.cli import main

    shown: list[str] = []
    with (
        debug_logging() as logs,
        ReferenceServer(api_key=KEY, project=PROJECT).serve_in_thread() as server,
    ):
        base = ["--base-url", server.base_url, "--project", PROJECT]
        with_key = [*base, "--api-key", KEY]

        def run(args: list[str], status: int) -> tuple[str, str]:
            assert main(args) == status, capsys.readouterr()
            out, err = capsys.readouterr()
            shown.append(err)
            return out, err

        token, _ = run([*with_key, "token", "create", "--origin", ORIGIN], 0)
        token = token.strip()
        assert token.count(".") == 2  # printing it is what `token create` is for
        out, _ = run([*with_key, "token", "create", "--origin", ORIGIN, "--json"], 0)
        other = json.loads(out)["client_token"]
        shown.append(out.replace(other, ""))
        shown += run([*with_key, "chat", QUESTION], 0)
        with_token = [*base, "--session-token", token, "--origin", ORIGIN]
        shown += run([*with_token, "chat", QUESTION], 0)
        shown += run([*with_token, "--origin", "https://evil.example.net", "chat", QUESTION], 1)
        server.faults = Faults(malformed_after=1)
        shown += run([*with_token, "chat", QUESTION], 1)
        server.faults = Faults(fail_first=10, fail_status=503, retry_after="0")
        shown += run([*with_key, "token", "revoke", token], 1)
        server.faults = Faults()
        shown += run([*with_key, "token", "revoke", token], 0)
        shown += run([*with_token, "chat", QUESTION], 1)  # revoked
        shown += run([*base, "--api-key", WRONG_KEY, "token", "revoke", other], 1)
        shown += run([*base, "--api-key", WRONG_KEY, "chat", QUESTION], 1)
        dead = ["--base-url", unused_port_url(), "--project", PROJECT]
        shown += run([*dead, "--api-key", KEY, "token", "revoke", other], 1)
        shown += run([*dead, "--session-token", other, "chat", QUESTION], 1)
        shown += run([*with_key, "token", "revoke", "bad\r\ntoken-value"], 2)
    for secret in (KEY, WRONG_KEY, token, other):
        leaks = [t for t in [*shown, *logs.texts] if secret in t]
        assert not leaks, leaks[0]


# == 3. reference server hardening ======================================================

TOKEN_HEADERS = {"Gram-Key": KEY, "Gram-Project": PROJECT}
BEARER = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    async with reference_server(api_key=KEY) as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def mint_token(http: aiohttp.ClientSession, server: ReferenceServer) -> str:
    token: str = (await mint(http, server, headers=TOKEN_HEADERS))["client_token"]
    return token


async def streamed_result_path(http: aiohttp.ClientSession, server: ReferenceServer) -> str:
    async with http.post(
        f"{server.base_url}/chat_sessions/chat_results",
        json=create_body(QUESTION),
        headers=BEARER,
    ) as resp:
        assert resp.status == 200
        await resp.read()
        return resp.headers["Content-Location"]


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("path", "headers", "body", "status"),
    [
        (
            "/rpc/chatSessions.create",
            TOKEN_HEADERS,
            b'{"embed_origin": "https://a.example", "x": ' + DEEP + b"}",
            400,
        ),
        ("/rpc/chatSessions.create", TOKEN_HEADERS, b'{"embed_origin": "https://a.\xff\xfe"}', 400),
        ("/rpc/chatSessions.create", TOKEN_HEADERS, b'{"embed_origin": "\\ud800"}', 400),
        (
            "/rpc/chatSessions.create",
            TOKEN_HEADERS,
            b'{"embed_origin": "https://a.example", "expires_after": 1e999}',
            400,
        ),
        (
            "/rpc/chatSessions.create",
            TOKEN_HEADERS,
            b'{"embed_origin": "https://a.example", "expires_after": 99999999999999999999999}',
            422,
        ),
        ("/rpc/chatSessions.create", TOKEN_HEADERS, b"", 400),
        ("/rpc/chatSessions.create", TOKEN_HEADERS, b"\x00" * 100, 400),
        (
            "/chat_sessions/chat_results",
            BEARER,
            b'{"integration_id": "d", "x": ' + DEEP + b"}",
            422,
        ),
        ("/chat_sessions/chat_results", BEARER, DEEP, 422),
        ("/chat_sessions/chat_results", BEARER, b'{"integration_id": "\xff"}', 422),
        ("/chat_sessions/chat_results", BEARER, b"", 422),
        ("/chat_sessions/s/chat_results", BEARER, b'{"message": ' + DEEP + b"}", 422),
    ],
    ids=[
        "token-deep-nesting",
        "token-invalid-utf8",
        "token-lone-surrogate",
        "token-huge-float",
        "token-huge-int",
        "token-empty",
        "token-nul-bytes",
        "chat-deep-nesting-unknown-field",
        "chat-deep-nesting-top-level",
        "chat-invalid-utf8",
        "chat-empty",
        "continue-deep-nesting",
    ],
)
async def test_hostile_bodies_are_4xx_with_a_json_error(
    server: ReferenceServer,
    http: aiohttp.ClientSession,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
) -> None:
    async with http.post(
        server.base_url + path, data=body, headers={**headers, "Content-Type": "application/json"}
    ) as resp:
        assert resp.status == status, await resp.text()
        assert resp.content_type == "application/json"
        payload = await resp.json()
    assert "message" in payload or "detail" in payload


@pytest.mark.parametrize(
    "value", ["²", "٣", "-1", "1.5", "0x10", "9" * 5000, "99999999999999999999"]
)
async def test_malformed_last_event_id_is_400_on_every_route(
    server: ReferenceServer, http: aiohttp.ClientSession, value: str
) -> None:
    path = await streamed_result_path(http, server)
    headers = {**BEARER, "Last-Event-ID": value}
    async with http.get(server.base_url + path, headers=headers) as resp:
        assert resp.status == 400, await resp.text()
    url = f"{server.base_url}/chat_sessions/chat_results"
    async with http.post(url, json=create_body(QUESTION), headers=headers) as resp:
        assert resp.status == 400


async def test_resume_checks_the_client_token_like_every_chat_call(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    path = await streamed_result_path(http, server)
    url = server.base_url + path
    token = await mint_token(http, server)
    as_token = {"Gram-Chat-Session": token, "Gram-Project": PROJECT}
    async with http.get(url, headers=as_token) as resp:
        assert resp.status == 200
    cases = [
        ({**as_token, "Origin": "https://evil.example.net"}, 403),
        ({**as_token, "Origin": "null"}, 403),  # sandboxed iframes send "null"
        ({**as_token, "Gram-Project": "other"}, 403),
        ({"Gram-Chat-Session": forge(project="other"), "Gram-Project": PROJECT}, 403),
        ({"Gram-Chat-Session": forge(exp=int(time.time()) - 5), "Gram-Project": PROJECT}, 401),
        ({"Gram-Chat-Session": token[:-3] + "AAA", "Gram-Project": PROJECT}, 401),
        ({"Gram-Key": KEY, "Gram-Project": PROJECT}, 401),  # the token API's credentials
    ]
    for headers, status in cases:
        async with http.get(url, headers=headers) as resp:
            assert resp.status == status, headers
    async with http.delete(
        f"{server.base_url}/rpc/chatSessions.revoke", params={"token": token}, headers=TOKEN_HEADERS
    ) as resp:
        assert resp.status == 204
    async with http.get(url, headers=as_token) as resp:
        assert resp.status == 401 and "revoked" in (await resp.json())["detail"]


async def test_a_client_token_alone_can_never_revoke(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    token = await mint_token(http, server)
    revoke = f"{server.base_url}/rpc/chatSessions.revoke"
    for headers in (
        {"Gram-Chat-Session": token, "Gram-Project": PROJECT},
        {"Authorization": f"Bearer {token}", "Gram-Project": PROJECT},
        {"Gram-Key": token, "Gram-Project": PROJECT},
    ):
        async with http.delete(revoke, params={"token": token}, headers=headers) as resp:
            assert resp.status == 401, headers
    async with http.post(
        f"{server.base_url}/chat_sessions/chat_results",
        json=create_body(QUESTION, stream=False),
        headers={"Gram-Chat-Session": token, "Gram-Project": PROJECT},
    ) as resp:
        assert resp.status == 200  # the token itself still works: nothing revoked it


async def test_stream_limit_applies_to_client_tokens_and_resumes_and_frees_on_disconnect(
    http: aiohttp.ClientSession,
) -> None:
    async with ReferenceServer(
        api_key=KEY, project=PROJECT, max_streams_per_key=2, faults=Faults(event_delay=0.02)
    ) as server:
        token = await mint_token(http, server)
        as_token = {"Gram-Chat-Session": token, "Gram-Project": PROJECT}
        url = f"{server.base_url}/chat_sessions/chat_results"
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(
                http.post(url, json=create_body(QUESTION), headers=as_token)
            )
            await first.content.readuntil(b"\n\n")
            resume = server.base_url + first.headers["Content-Location"]
            second = await stack.enter_async_context(http.get(resume, headers=as_token))
            assert second.status == 200
            await second.content.readuntil(b"\n\n")
            async with http.post(url, json=create_body(QUESTION), headers=as_token) as third:
                assert third.status == 429 and third.headers["Retry-After"]
            async with http.post(url, json=create_body(QUESTION), headers=BEARER) as keyed:
                assert keyed.status == 200  # another credential has its own slots
                keyed.close()
            # Leaving mid-stream (the connection closed, no body read) frees the slot.
            first.close()
            second.close()
        for _ in range(100):
            if not server._open_streams:
                break
            await asyncio.sleep(0.02)
        assert not server._open_streams
        async with http.post(url, json=create_body(QUESTION), headers=as_token) as again:
            assert again.status == 200


async def test_oversized_headers_and_urls_are_refused_not_crashed(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    url = f"{server.base_url}/chat_sessions/chat_results"
    async with http.post(
        url,
        json=create_body(QUESTION, stream=False),
        headers={**BEARER, "Idempotency-Key": "k" * 256},
    ) as resp:
        assert resp.status == 400
    async with http.post(
        url, json=create_body(QUESTION, stream=False), headers={**BEARER, "X-Big": "x" * 20_000}
    ) as resp:
        assert 400 <= resp.status < 500
    async with http.delete(
        f"{server.base_url}/rpc/chatSessions.revoke",
        params={"token": "t" * 20_000},
        headers=TOKEN_HEADERS,
    ) as resp:
        assert 400 <= resp.status < 500
    async with http.get(f"{server.base_url}/healthz") as resp:
        assert resp.status == 200  # still serving


def sql_calls(tree: ast.AST) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"execute", "executemany", "executescript"}
        ):
            yield node


def test_sql_is_only_ever_parameterised() -> None:
    """Every statement the store runs is a literal string (or a module constant); values
    only ever travel as parameters, so nothing from a request can change a statement."""
    paths = [Path(store_module.__file__), *Path(store_module.__file__).parent.glob("*.py")]
    constants: dict[str, str] = {}
    calls = 0
    for path in sorted(set(paths)):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        constants[target.id] = node.value.value
        for call in sql_calls(tree):
            calls += 1
            statement = call.args[0]
            where = f"{path.name}:{call.lineno}"
            if isinstance(statement, ast.Name):
                assert statement.id in constants, f"{where}: SQL from a variable"
                continue
            assert isinstance(statement, ast.Constant) and isinstance(statement.value, str), (
                f"{where}: SQL built at run time (f-string, %, + or format)"
            )
            placeholders = statement.value.count("?")
            if placeholders:
                assert len(call.args) == 2, f"{where}: placeholders without parameters"
    assert calls >= 15  # the store really was inspected


def test_store_statements_keep_hostile_values_as_data(tmp_path: Path) -> None:
    store = store_module.Store(tmp_path / "s.db")
    store.open()
    try:
        hostile = "x'); DROP TABLE sessions; --"
        with store.transaction():
            store.create_session(hostile, PROJECT, hostile, 0.0)
        assert store.session_exists(hostile, PROJECT)
        assert not store.session_exists("x' OR '1'='1", PROJECT)
        store.revoke(hostile, PROJECT, 2**31, 0.0)
        assert store.is_revoked(hostile) and not store.is_revoked("' OR 1=1 --")
    finally:
        store.close()


async def test_a_busy_server_answers_every_hostile_request_without_a_5xx(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    """A burst of many hostile requests at once: each gets a 4xx, none a 5xx."""
    base = server.base_url
    requests: list[tuple[str, str, dict[str, str], bytes]] = [
        ("POST", "/chat_sessions/chat_results", BEARER, DEEP),
        (
            "POST",
            "/chat_sessions/chat_results",
            {"Gram-Chat-Session": "x" * 4000, "Gram-Project": PROJECT},
            b"{}",
        ),
        ("POST", "/rpc/chatSessions.create", TOKEN_HEADERS, b"{" * 1000),
        ("DELETE", "/rpc/chatSessions.revoke?token=%00%ff", TOKEN_HEADERS, b""),
        ("GET", "/chat_sessions/results/%00/events", BEARER, b""),
        ("POST", "/chat_sessions/%2e%2e/chat_results", BEARER, b"{}"),
        ("PUT", "/rpc/chatSessions.create", TOKEN_HEADERS, b"{}"),
    ]

    async def one(method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        async with http.request(method, base + path, data=body, headers=headers) as resp:
            await resp.read()
            return resp.status

    statuses = await asyncio.gather(*(one(*r) for r in requests * 10))
    assert all(400 <= s < 500 for s in statuses), statuses


def test_reprs_of_the_server_side_show_no_secret() -> None:
    server = ReferenceServer(api_key=KEY, signing_secret=SIGNING_SECRET)
    from chatsdk.server.auth import TokenSigner

    signer = TokenSigner(SIGNING_SECRET, PROJECT)
    for text in (repr(server), str(server), repr(signer), str(signer)):
        assert KEY not in text and SIGNING_SECRET not in text


def test_settings_repr_masks_every_secret() -> None:
    client = chatsdk.ChatClient(
        KEY,
        project=PROJECT,
        base_url="http://127.0.0.1:9",
        headers={"X-Custom-Auth": "custom-secret-value"},
    )
    browser = chatsdk.ChatClient(
        session_token="a-client-token-xyz", project=PROJECT, base_url="http://127.0.0.1:9"
    )
    text = "".join(repr(x) + str(x) for x in (client, client.settings, browser, browser.settings))
    for secret in (KEY, "a-client-token-xyz", "custom-secret-value"):
        assert secret not in text
    buffer = io.StringIO()
    print(client, file=buffer)
    assert KEY not in buffer.getvalue()


def test_rich_repr_of_a_token_masks_it() -> None:
    token = chatsdk.ChatSessionToken(
        client_token="a-client-token-xyz", embed_origin=ORIGIN, expires_after=60, status="active"
    )
    assert "a-client-token-xyz" not in repr(list(token.__rich_repr__()))


@pytest.mark.parametrize(
    "proxy", ["http://u:pa55w0rd@p:3128?x=1", "http://u:pa55w0rd@p:3128/#f", "HTTP://u:pa55w0rd@p?"]
)
@pytest.mark.parametrize("where", ["argument", "CHATSDK_PROXY"])
def test_a_proxy_with_a_query_is_refused_without_its_password(
    monkeypatch: pytest.MonkeyPatch, proxy: str, where: str
) -> None:
    # The query check quoted the URL, userinfo and all.
    kwargs: dict[str, Any] = {"proxy": proxy} if where == "argument" else {}
    if where == "CHATSDK_PROXY":
        monkeypatch.setenv("CHATSDK_PROXY", proxy)
    with pytest.raises(chatsdk.ValidationError, match="query or fragment") as info:
        chatsdk.ChatClient("k" * 12, base_url="http://127.0.0.1:9", **kwargs)
    assert "pa55w0rd" not in str(info.value)
