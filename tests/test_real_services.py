"""What each operation sends to the real services (SPEC 1.9), checked without the network.

The client is given no URL, as a user of Gram or Inkeep would; an aiohttp resolver sends
every host name to a loopback TLS server (its certificate, made by trustme, names the real
hosts), which records the method, host, path and headers of each request and answers in
the wire's format.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

import chatsdk

pytestmark = pytest.mark.anyio

KEY = "sk-real-service-key-0123456789"
PROJECT = "acme"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"

CHUNK = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
CHAT_RESULTS = b'event: message_chunk\ndata: {"content_chunk":"hi","finish_reason":"stop"}\n\n'
TOKEN_ANSWER = (
    b'{"client_token":"' + TOKEN.encode() + b'","embed_origin":"https://docs.acme.com",'
    b'"expires_after":900,"status":"active"}'
)


@dataclass
class Seen:
    method: str
    host: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeInternet:
    """A TLS server on loopback standing in for every host, and a resolver pointing at it."""

    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    client_ssl: ssl.SSLContext | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.host, request.path_qs, dict(request.headers)))
        if request.path.endswith("chatSessions.create"):
            return web.Response(body=TOKEN_ANSWER, content_type="application/json")
        if request.path.endswith("chatSessions.revoke"):
            return web.Response(status=204)
        body = CHUNK if request.path.endswith("/chat/completions") else CHAT_RESULTS
        return web.Response(body=body, content_type="text/event-stream")

    def session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=_Loopback(self.port), ssl=self.client_ssl)
        )


class _Loopback(AbstractResolver):
    def __init__(self, port: int):
        self.port = port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=self.port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        pass


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def internet() -> AsyncIterator[FakeInternet]:
    ca = trustme.CA()
    cert = ca.issue_cert("app.getgram.ai", "api.inkeep.com")
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ssl)
    client_ssl = ssl.create_default_context()
    ca.configure_trust(client_ssl)
    fake = FakeInternet(client_ssl=client_ssl)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
    await site.start()
    fake.port = runner.addresses[0][1]
    yield fake
    await runner.cleanup()


@pytest.fixture(autouse=True)
def no_chatsdk_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CHATSDK_"):
            monkeypatch.delenv(name)


def auth(seen: Seen) -> dict[str, str]:
    names = ("Authorization", "Gram-Key", "Gram-Project", "Gram-Chat-Session")
    return {name: seen.headers[name] for name in names if name in seen.headers}


async def run(internet: FakeInternet, **settings: Any) -> None:
    async with internet.session() as http, chatsdk.ChatClient(**settings, http_session=http) as c:
        if "project" in settings and "session_token" not in settings:
            token = await c.tokens.create(embed_origin="https://docs.acme.com")
            await c.tokens.revoke(token)
        await c.chat.completions.create(model="m", messages="hi")
        if "session_token" not in settings:
            await c.chat.create(integration_id="docs", messages="hi")


async def test_a_gram_key_user_reaches_gram_with_gram_headers(internet: FakeInternet) -> None:
    await run(internet, api_key=KEY, project=PROJECT)
    gram = {"Gram-Key": KEY, "Gram-Project": PROJECT}
    assert [(s.method, s.host, s.path.split("?")[0], auth(s)) for s in internet.seen] == [
        ("POST", "app.getgram.ai", "/rpc/chatSessions.create", gram),
        ("DELETE", "app.getgram.ai", "/rpc/chatSessions.revoke", gram),
        ("POST", "app.getgram.ai", "/chat/completions", gram),
        # chat_results is Inkeep's alone (deprecated there): its v0 path, the key as Bearer.
        (
            "POST",
            "api.inkeep.com",
            "/v0/chat_sessions/chat_results",
            {"Authorization": f"Bearer {KEY}"},
        ),
    ]


async def test_an_inkeep_key_user_reaches_inkeep_with_a_bearer_key(internet: FakeInternet) -> None:
    await run(internet, api_key=KEY)
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert [(s.method, s.host, s.path, auth(s)) for s in internet.seen] == [
        ("POST", "api.inkeep.com", "/v1/chat/completions", bearer),
        ("POST", "api.inkeep.com", "/v0/chat_sessions/chat_results", bearer),
    ]


@pytest.mark.parametrize(
    ("token_auth", "expected"),
    [
        ("gram-chat-session", {"Gram-Chat-Session": TOKEN, "Gram-Project": PROJECT}),
        ("bearer", {"Authorization": f"Bearer {TOKEN}", "Gram-Project": PROJECT}),
    ],
)
async def test_a_page_with_a_client_token_reaches_gram(
    internet: FakeInternet, token_auth: str, expected: dict[str, str]
) -> None:
    await run(internet, session_token=TOKEN, project=PROJECT, token_auth=token_auth)
    assert [(s.method, s.host, s.path, auth(s)) for s in internet.seen] == [
        ("POST", "app.getgram.ai", "/chat/completions", expected),
    ]


async def test_only_a_chat_base_url_is_enough_for_a_page(internet: FakeInternet) -> None:
    # A page that only chats names its chat server; nothing else is needed.
    await run(
        internet,
        session_token=TOKEN,
        project=PROJECT,
        chat_base_url="https://app.getgram.ai/self-hosted",
    )
    assert [s.path for s in internet.seen] == ["/self-hosted/chat/completions"]
