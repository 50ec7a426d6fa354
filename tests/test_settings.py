"""Settings from arguments and environment, proxies, and retries a user can see."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

import chatsdk
from tests.scripted import Reply, ScriptedServer
from tests.support import read_request

pytestmark = pytest.mark.anyio

KEY = "sk-settings-test-key-0123"
COMPLETION = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"via proxy"},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def forward_proxy() -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback HTTP proxy that answers every request itself; it records request lines."""
    lines: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        lines.append(request.split(b"\r\n", 1)[0].decode())
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(COMPLETION) + COMPLETION
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", lines
    finally:
        server.close()
        await server.wait_closed()


async def ask(client: chatsdk.ChatClient) -> str:
    return (await client.chat.completions.create(model="m", messages="hi")).text


async def test_https_proxy_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    async with forward_proxy() as (proxy, lines):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        async with chatsdk.ChatClient(KEY, base_url="http://chat.example.invalid") as client:
            assert await ask(client) == "via proxy"
    assert lines == ["POST http://chat.example.invalid/chat/completions HTTP/1.1"]


async def test_a_proxy_variable_without_a_scheme_is_an_http_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "host:port", as requests and httpx read it; aiohttp refused it obscurely.
    async with forward_proxy() as (proxy, lines):
        monkeypatch.setenv("HTTP_PROXY", proxy.removeprefix("http://"))
        async with chatsdk.ChatClient(KEY, base_url="http://chat.example.invalid") as client:
            assert await ask(client) == "via proxy"
    assert len(lines) == 1


async def test_a_socks_proxy_variable_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # aiohttp spoke HTTP to it as if it were an HTTP proxy; going around it instead would
    # send the traffic where the user said it must not go.
    monkeypatch.setenv("HTTP_PROXY", "socks5://user:PROXY-SECRET@127.0.0.1:1080")
    async with chatsdk.ChatClient(KEY, base_url="http://chat.example.invalid") as client:
        with pytest.raises(chatsdk.ValidationError, match="socks5 proxy") as info:
            await ask(client)
    assert "PROXY-SECRET" not in str(info.value)


async def test_all_proxy_is_the_proxy_for_every_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    # curl's and requests' fallback: it was ignored, so the traffic went direct.
    async with forward_proxy() as (proxy, lines):
        monkeypatch.setenv("ALL_PROXY", proxy)
        async with chatsdk.ChatClient(KEY, base_url="http://chat.example.invalid") as client:
            assert await ask(client) == "via proxy"
    assert len(lines) == 1


@pytest.mark.parametrize("no_proxy", ["127.0.0.0/8", "10.0.0.0/8, 127.0.0.1/32"])
async def test_no_proxy_takes_address_ranges_and_bare_ipv6(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str
) -> None:
    # As curl and requests read NO_PROXY; urllib alone sent these hosts through the proxy.
    reply = Reply(body=COMPLETION, content_type="text/event-stream")
    async with forward_proxy() as (proxy, lines), ScriptedServer([reply]) as direct:
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("NO_PROXY", no_proxy)
        async with chatsdk.ChatClient(KEY, base_url=direct.url) as client:
            assert await ask(client) == "via proxy"
    assert lines == [] and len(direct.seen) == 1


@pytest.mark.parametrize(
    ("netloc", "no_proxy", "bypassed"),
    [
        ("[::1]:8080", "::1", True),
        ("[::1]:8080", "[::1]", True),
        ("[2001:db8::5]", "2001:db8::/32", True),
        ("[2001:db9::5]", "2001:db8::/32", False),
        ("10.1.2.3:443", "10.0.0.0/8", True),
        ("11.1.2.3", "10.0.0.0/8, nonsense/x", False),
    ],
)
def test_no_proxy_address_rules(netloc: str, no_proxy: str, bypassed: bool) -> None:
    from chatsdk._transport import _no_proxy_for

    assert _no_proxy_for(netloc, no_proxy) is bypassed


@pytest.mark.parametrize(
    "value",
    [
        "http://user:PROXY-SECRET@[::1",
        "http://user:PROXY-SECRET@127.0.0.1:99999",
        # No host: an InvalidURL connection error (as an APIConnectionError).
        ":",
        "http://:8080",
        "http://user:PROXY-SECRET@:8080",
    ],
)
async def test_a_malformed_proxy_variable_is_a_validation_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # A bare ValueError from urlsplit, or an InvalidURL connection error that was retried.
    monkeypatch.setenv("HTTP_PROXY", value)
    async with chatsdk.ChatClient(KEY, base_url="http://chat.example.invalid") as client:
        with pytest.raises(chatsdk.ValidationError, match="HTTP_PROXY") as info:
            await ask(client)
    assert "PROXY-SECRET" not in str(info.value)


async def test_no_proxy_and_trust_env_false_go_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    reply = Reply(body=COMPLETION, content_type="text/event-stream")
    async with forward_proxy() as (proxy, lines), ScriptedServer([reply]) as direct:
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with chatsdk.ChatClient(KEY, base_url=direct.url) as client:
            assert await ask(client) == "via proxy"
        monkeypatch.delenv("NO_PROXY")
        async with chatsdk.ChatClient(KEY, base_url=direct.url, trust_env=False) as client:
            assert await ask(client) == "via proxy"
    assert lines == [] and len(direct.seen) == 2


async def test_an_explicit_proxy_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    async with forward_proxy() as (proxy, lines):
        async with chatsdk.ChatClient(
            KEY, base_url="http://chat.example.invalid", proxy=proxy, trust_env=False
        ) as client:
            assert await ask(client) == "via proxy"
        monkeypatch.setenv("CHATSDK_PROXY", proxy)
        async with chatsdk.ChatClient(KEY, base_url="http://chat.example.invalid") as client:
            assert await ask(client) == "via proxy"
    assert len(lines) == 2


async def test_a_misspelled_variable_gets_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CHATSDK_API_KEY", "CHATSDK_SESSION_TOKEN", "CHATSDK_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHATSDK_APIKEY", KEY)
    async with chatsdk.ChatClient(base_url="http://127.0.0.1:9") as client:
        with pytest.raises(
            chatsdk.ValidationError, match="did you mean CHATSDK_API_KEY for CHATSDK_APIKEY"
        ):
            await client.chat.completions.create(model="m", messages="hi")
    assert KEY not in str(client.settings)


@pytest.mark.parametrize(
    ("argument", "variable", "named"),
    [
        ({"base_url": "ftp://x"}, {}, "base_url"),
        ({}, {"CHATSDK_BASE_URL": "ftp://x"}, "CHATSDK_BASE_URL"),
        ({}, {"CHATSDK_CHAT_BASE_URL": "http://a b"}, "CHATSDK_CHAT_BASE_URL"),
        ({"chat_base_url": "http://x/?q"}, {}, "chat_base_url"),
        ({}, {"CHATSDK_ORIGIN": "https://a.example/path"}, "CHATSDK_ORIGIN"),
        ({}, {"CHATSDK_TIMEOUT": "soon"}, "CHATSDK_TIMEOUT"),
        ({}, {"CHATSDK_SERVICE": "openai"}, "CHATSDK_SERVICE"),
        # Empty, a URL variable would have sent the key to the real services.
        ({}, {"CHATSDK_BASE_URL": ""}, "CHATSDK_BASE_URL is set but empty"),
        ({}, {"CHATSDK_CHAT_BASE_URL": ""}, "CHATSDK_CHAT_BASE_URL is set but empty"),
    ],
)
def test_a_bad_setting_is_named_as_the_user_set_it(
    monkeypatch: pytest.MonkeyPatch,
    argument: dict[str, str],
    variable: dict[str, str],
    named: str,
) -> None:
    for name, value in variable.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(chatsdk.ValidationError, match=named):
        chatsdk.ChatClient(KEY, **argument)  # type: ignore[arg-type]


def test_timeout_and_retries_none_mean_none_and_left_out_means_the_clients() -> None:
    client = chatsdk.ChatClient(KEY, base_url="http://127.0.0.1:9", timeout=5, retries=4)
    assert client.settings.timeout == chatsdk.Timeout(connect=5, read=5, idle=5)
    transport = client._transport
    assert transport.per_call(chatsdk.NOT_GIVEN, chatsdk.NOT_GIVEN) == (
        client.settings.timeout,
        client.settings.retries,
    )
    timeout, retries = transport.per_call(None, None)
    assert timeout == chatsdk.Timeout(connect=None, read=None, idle=None, total=None)
    assert retries.max_retries == 0
    unlimited = chatsdk.ChatClient(KEY, base_url="http://127.0.0.1:9", timeout=None)
    assert unlimited.settings.timeout.idle is None


async def test_retries_are_visible(caplog: pytest.LogCaptureFixture) -> None:
    busy = Reply(status=503, body=b'{"detail": "busy"}', headers={"Retry-After": "0"})
    fast = chatsdk.RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.02)
    async with ScriptedServer([busy]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=fast) as client:
            with caplog.at_level(logging.INFO, logger="chatsdk"):
                with pytest.raises(chatsdk.InternalServerError) as info:
                    await client.chat.completions.create(model="m", messages="hi")
    assert info.value.attempts == 3 and info.value.elapsed > 0
    assert "gave up after 3 attempts over" in str(info.value)
    retries = [r for r in caplog.records if r.levelno == logging.INFO and "retry" in r.message]
    assert [r.message.split("; ")[1].split(" in ")[0] for r in retries] == [
        "retry 1 of 2",
        "retry 2 of 2",
    ]
    assert KEY not in caplog.text
