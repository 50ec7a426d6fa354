"""ChatClient against the reference server on loopback: every operation and error class."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import msgspec
import pytest

import chatsdk
from chatsdk.server import Faults, ReferenceServer
from tests.scripted import Reply, ScriptedServer, sse
from tests.support import FAST, KEY, ORIGIN, PROJECT, QUESTION, read_request

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(server: ReferenceServer) -> AsyncIterator[chatsdk.ChatClient]:
    async with chatsdk.ChatClient(
        KEY, project=PROJECT, base_url=server.base_url, retries=FAST
    ) as c:
        yield c


def token_client(server: ReferenceServer, token: str, **kw: object) -> chatsdk.ChatClient:
    return chatsdk.ChatClient(
        session_token=token,
        project=PROJECT,
        base_url=server.base_url,
        retries=FAST,
        **kw,  # type: ignore[arg-type]
    )


# -- tokens ------------------------------------------------------------------------------


async def test_tokens_create_returns_a_jwt_bound_to_the_origin(client: chatsdk.ChatClient) -> None:
    tok = await client.tokens.create(embed_origin=ORIGIN, expires_after=900, user_identifier="u1")
    assert isinstance(tok, chatsdk.ChatSessionToken)
    assert tok.embed_origin == ORIGIN and tok.expires_after == 900
    assert tok.user_identifier == "u1" and tok.status
    claims = jwt.decode(tok.client_token, options={"verify_signature": False})
    assert claims["aud"] == [ORIGIN]
    assert claims["exp"] - claims["iat"] == 900
    assert tok.client_token not in repr(tok) and tok.client_token not in str(tok)


async def test_subclasses_of_str_and_int_are_sent_as_their_values(
    client: chatsdk.ChatClient,
) -> None:
    # numpy.str_, numpy.float64 and the like: a bare TypeError on chat_results and tokens.
    class Text(str):
        def __str__(self) -> str:
            return "<not this>"

    class Whole(int):
        pass

    tok = await client.tokens.create(embed_origin=Text(ORIGIN), expires_after=Whole(120))
    assert (tok.embed_origin, tok.expires_after) == (ORIGIN, 120)
    result = await client.chat.create(integration_id=Text("docs"), messages=Text("How?"))
    assert result.text


async def test_tokens_revoke_is_idempotent(client: chatsdk.ChatClient) -> None:
    tok = await client.tokens.create(embed_origin=ORIGIN)
    await client.tokens.revoke(tok.client_token)
    await client.tokens.revoke(tok)  # a second revoke is not an error


async def test_tokens_need_the_api_key(server: ReferenceServer) -> None:
    async with token_client(server, "x.y.z") as c:
        with pytest.raises(chatsdk.ValidationError, match="API key"):
            await c.tokens.create(embed_origin=ORIGIN)


async def test_wrong_api_key_is_an_authentication_error(server: ReferenceServer) -> None:
    async with chatsdk.ChatClient("wrong-key", project=PROJECT, base_url=server.base_url) as c:
        with pytest.raises(chatsdk.AuthenticationError) as info:
            await c.tokens.create(embed_origin=ORIGIN)
    err = info.value
    assert err.status == 401 and err.name == "unauthorized"
    assert isinstance(err.body, dict) and err.body["fault"] is False
    assert err.request_id and err.headers.get("goa-error") == "unauthorized"
    assert "wrong-key" not in str(err)


async def test_wrong_project_is_permission_denied(server: ReferenceServer) -> None:
    async with chatsdk.ChatClient(KEY, project="other", base_url=server.base_url) as c:
        with pytest.raises(chatsdk.PermissionDeniedError):
            await c.tokens.create(embed_origin=ORIGIN)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"embed_origin": "docs.example.com"}, "origin"),
        ({"embed_origin": "https://docs.example.com/path"}, "origin"),
        ({"embed_origin": ORIGIN, "expires_after": 0}, "expires_after"),
        ({"embed_origin": ORIGIN, "expires_after": 3601}, "expires_after"),
        ({"embed_origin": ORIGIN, "expires_after": True}, "expires_after"),
    ],
)
async def test_tokens_create_validates_before_sending(
    client: chatsdk.ChatClient, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(chatsdk.ValidationError, match=match):
        await client.tokens.create(**kwargs)  # type: ignore[arg-type]


# -- chat --------------------------------------------------------------------------------


async def test_chat_create_streams_chunks_then_citations(client: chatsdk.ChatClient) -> None:
    events = [
        e
        async for e in client.chat.create(
            integration_id="docs", messages=[chatsdk.Message(role="user", content=QUESTION)]
        )
    ]
    chunks = [e for e in events if isinstance(e, chatsdk.MessageChunk)]
    assert len(chunks) > 3
    assert chunks[-1].content_chunk == "" and chunks[-1].finish_reason == "stop"
    assert all(c.chat_session_id == chunks[0].chat_session_id for c in chunks)
    assert isinstance(events[-1], chatsdk.RecordsCited)
    assert events[-1].citations and events[-1].citations[0].record.url
    assert "retr" in "".join(c.content_chunk for c in chunks).lower()


async def test_final_result_text_stream_and_await_agree(client: chatsdk.ChatClient) -> None:
    whole = await client.chat.create(integration_id="docs", messages=QUESTION)
    async with client.chat.create(integration_id="docs", messages=QUESTION) as stream:
        texts = [t async for t in stream.text_stream]
        result = await stream.final_result()
    assert "".join(texts) == result.text == whole.text
    assert result.message.role == "assistant"
    assert result.finish_reason == "stop"
    assert result.citations == whole.citations and result.citations
    assert result.chat_session_id and stream.chat_session_id == result.chat_session_id
    assert result.chat_session_id != whole.chat_session_id  # two create calls, two sessions


async def test_continue_sees_the_history(client: chatsdk.ChatClient) -> None:
    first = await client.chat.create(integration_id="docs", messages=QUESTION)
    assert first.chat_session_id
    follow = await client.chat.continue_(
        first.chat_session_id, integration_id="docs", message="Tell me more."
    )
    assert follow.chat_session_id == first.chat_session_id
    alone = await client.chat.create(integration_id="docs", messages="Tell me more.")
    assert follow.text != alone.text  # the answer depends on the first turn


async def test_non_streaming_answer_is_decoded_by_content_type(client: chatsdk.ChatClient) -> None:
    stream = client.chat.create(integration_id="docs", messages=QUESTION, stream=False)
    events = [e async for e in stream]
    assert isinstance(events[0], chatsdk.MessageChunk) and events[0].content_chunk
    result = await stream.final_result()
    assert result.text == events[0].content_chunk and result.chat_session_id


async def test_continue_unknown_session_is_not_found(client: chatsdk.ChatClient) -> None:
    with pytest.raises(chatsdk.NotFoundError) as info:
        await client.chat.continue_("no-such-session", integration_id="docs", message="hi")
    assert info.value.status == 404


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"integration_id": "", "messages": "q"}, "integration_id"),
        ({"integration_id": "docs", "messages": []}, "messages"),
        ({"integration_id": "docs", "messages": [chatsdk.Message("system", "x")]}, "role"),
        ({"integration_id": "docs", "messages": [chatsdk.Message("assistant", "x")]}, "last"),
        ({"integration_id": "docs", "messages": [{"role": "user"}]}, "content"),
    ],
)
async def test_chat_create_validates_before_sending(
    client: chatsdk.ChatClient, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(chatsdk.ValidationError, match=match):
        client.chat.create(**kwargs)  # type: ignore[arg-type]


# -- client tokens (the browser's path) --------------------------------------------------


async def test_chat_with_a_client_token(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    tok = await client.tokens.create(embed_origin=ORIGIN)
    async with token_client(server, tok.client_token, origin=ORIGIN) as browser:
        first = await browser.chat.create(integration_id="docs", messages=QUESTION)
        assert first.chat_session_id and first.text
        more = await browser.chat.continue_(
            first.chat_session_id, integration_id="docs", message="Tell me more."
        )
        assert more.text
        assert "Tell me more" not in repr(browser) and tok.client_token not in repr(browser)


async def test_revoked_token_is_refused(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    tok = await client.tokens.create(embed_origin=ORIGIN)
    await client.tokens.revoke(tok.client_token)
    async with token_client(server, tok.client_token) as browser:
        with pytest.raises(chatsdk.AuthenticationError) as info:
            await browser.chat.create(integration_id="docs", messages=QUESTION)
    assert info.value.status == 401
    assert tok.client_token not in str(info.value)


async def test_expired_token_is_refused(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    tok = await client.tokens.create(embed_origin=ORIGIN, expires_after=1)
    claims = jwt.decode(tok.client_token, options={"verify_signature": False})
    wait = claims["exp"] - time.time() + 1.05
    if wait > 0:
        await asyncio.sleep(wait)
    async with token_client(server, tok.client_token) as browser:
        with pytest.raises(chatsdk.AuthenticationError):
            await browser.chat.create(integration_id="docs", messages=QUESTION)
    # Revoking it now is the public server's 400 (SPEC 1.3), which README tells a logout
    # it may ignore: the token is dead either way.
    with pytest.raises(chatsdk.BadRequestError, match="invalid token"):
        await client.tokens.revoke(tok.client_token)


async def test_wrong_origin_is_permission_denied(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    tok = await client.tokens.create(embed_origin=ORIGIN)
    async with token_client(server, tok.client_token, origin="https://evil.example.net") as c:
        with pytest.raises(chatsdk.PermissionDeniedError) as info:
            await c.chat.create(integration_id="docs", messages=QUESTION)
    assert "does not match" in str(info.value)
    assert isinstance(info.value.body, str)  # a plain-text error body is kept as text


async def test_a_token_minted_for_an_origin_in_capitals_works_from_the_browser_s_spelling(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    tok = await client.tokens.create(embed_origin="https://Docs.Example.com")
    async with token_client(server, tok.client_token, origin="https://docs.example.com") as c:
        assert (await c.chat.create(integration_id="docs", messages=QUESTION)).text


async def test_a_token_without_an_origin_header_is_not_origin_checked(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    # README: the check applies to requests carrying Origin (every browser's do).
    tok = await client.tokens.create(embed_origin=ORIGIN)
    async with chatsdk.ChatClient(
        session_token=tok.client_token, project=PROJECT, base_url=server.base_url
    ) as server_side:
        result = await server_side.chat.create(integration_id="docs", messages=QUESTION)
    assert result.text


async def test_token_provider_is_called_and_refreshed_on_401(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    minted: list[str] = []

    async def provider() -> chatsdk.ChatSessionToken:
        tok = await client.tokens.create(embed_origin=ORIGIN)
        minted.append(tok.client_token)
        return tok

    async with chatsdk.ChatClient(
        session_token=provider, project=PROJECT, base_url=server.base_url, retries=FAST
    ) as browser:
        await browser.chat.create(integration_id="docs", messages=QUESTION)
        assert len(minted) == 1
        await browser.chat.create(integration_id="docs", messages=QUESTION)
        assert len(minted) == 1  # still fresh: reused
        await client.tokens.revoke(minted[0])
        await browser.chat.create(integration_id="docs", messages=QUESTION)
        assert len(minted) == 2  # refused once, refreshed, retried


async def test_token_provider_gives_up_after_one_refresh(server: ReferenceServer) -> None:
    calls = 0

    async def bad_provider() -> str:
        nonlocal calls
        calls += 1
        return "not.a.token"

    async with chatsdk.ChatClient(
        session_token=bad_provider, project=PROJECT, base_url=server.base_url, retries=FAST
    ) as browser:
        with pytest.raises(chatsdk.AuthenticationError):
            await browser.chat.create(integration_id="docs", messages=QUESTION)
    assert calls == 2


async def test_token_near_expiry_is_refreshed_before_use(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    lifetimes: list[int] = []

    async def provider() -> chatsdk.ChatSessionToken:
        # The first token lives 4 s, less than twice the 30 s margin: it is refreshed
        # halfway through its life (2 s), not at once (every call would fetch one).
        tok = await client.tokens.create(
            embed_origin=ORIGIN, expires_after=4 if not lifetimes else 600
        )
        lifetimes.append(tok.expires_after)
        return tok

    async with chatsdk.ChatClient(
        session_token=provider, project=PROJECT, base_url=server.base_url, retries=FAST
    ) as browser:
        await browser.chat.create(integration_id="docs", messages=QUESTION)
        await browser.chat.create(integration_id="docs", messages=QUESTION)
        assert lifetimes == [4]  # still fresh: used again
        await asyncio.sleep(2.5)
        await browser.chat.create(integration_id="docs", messages=QUESTION)
    assert lifetimes == [4, 600]


# -- settings ----------------------------------------------------------------------------


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSDK_API_KEY", "env-key")
    monkeypatch.setenv("CHATSDK_PROJECT", "env-project")
    monkeypatch.setenv("CHATSDK_BASE_URL", "http://127.0.0.1:9/")
    c = chatsdk.ChatClient()
    assert c.base_url == "http://127.0.0.1:9"
    assert "env-key" not in repr(c) and "env-project" in repr(c)


def test_no_url_means_the_real_services(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BASE_URL", "TOKENS_BASE_URL", "CHAT_BASE_URL", "SERVICE"):
        monkeypatch.delenv("CHATSDK_" + name, raising=False)
    gram = chatsdk.ChatClient("k", project="p").settings
    assert (gram.service, gram.tokens_base_url, gram.completions_base_url) == (
        "gram",
        "https://app.getgram.ai",
        "https://app.getgram.ai",
    )
    inkeep = chatsdk.ChatClient("k").settings
    assert (inkeep.service, inkeep.chat_base_url, inkeep.completions_base_url) == (
        "inkeep",
        "https://api.inkeep.com/v0",
        "https://api.inkeep.com/v1",
    )


@pytest.mark.parametrize("bad", ["key\r\nX-Evil: 1", "key\n", "k\x00y"])
def test_control_characters_in_credentials_are_refused(bad: str) -> None:
    with pytest.raises(chatsdk.ValidationError) as info:
        chatsdk.ChatClient(bad, project="p", base_url="http://127.0.0.1:9")
    assert bad not in str(info.value)
    with pytest.raises(chatsdk.ValidationError):
        chatsdk.ChatClient("k", project=bad, base_url="http://127.0.0.1:9")
    with pytest.raises(chatsdk.ValidationError):
        chatsdk.ChatClient(session_token=bad, project="p", base_url="http://127.0.0.1:9")
    with pytest.raises(chatsdk.ValidationError):
        chatsdk.ChatClient("k", headers={"X-Extra": bad}, base_url="http://127.0.0.1:9")


def test_a_secret_no_utf8_holds_is_refused_without_showing_it() -> None:
    # A CHATSDK_API_KEY with an undecodable byte reads as a lone surrogate: the first
    # call raised a bare UnicodeEncodeError whose .object held the whole key.
    bad = "sk-live-0123456789abcdef\udcff"
    for make in (
        lambda: chatsdk.ChatClient(bad, base_url="http://127.0.0.1:9"),
        lambda: chatsdk.ChatClient(session_token=bad, project="p", base_url="http://127.0.0.1:9"),
        lambda: chatsdk.ChatClient("k", headers={"X-A": bad}, base_url="http://127.0.0.1:9"),
    ):
        with pytest.raises(chatsdk.ValidationError, match="lone surrogate") as info:
            make()
        assert "0123456789" not in repr(info.value.__dict__) + str(info.value)


async def test_text_no_utf8_holds_is_a_validation_error_in_every_call() -> None:
    bad = "q\ud800"
    async with chatsdk.ChatClient("k", project="p", base_url="http://127.0.0.1:9") as client:
        for call in (
            lambda: client.chat.create(integration_id="d", messages=bad),
            lambda: client.chat.continue_(bad, integration_id="d", message="q"),
            lambda: client.chat.completions.create(model="m", messages=bad),
        ):
            with pytest.raises(chatsdk.ValidationError):
                call()
        with pytest.raises(chatsdk.ValidationError):
            await client.tokens.create(embed_origin="https://a.example", user_identifier=bad)
        with pytest.raises(chatsdk.ValidationError):
            await client.tokens.revoke(bad)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"headers": ["X-A: 1"]}, "headers must be a mapping"),
        ({"http_session": "x"}, "http_session must be an aiohttp.ClientSession"),
        ({"trust_env": "no"}, "trust_env must be True or False"),
        ({"retries": chatsdk.RetryPolicy}, "retries must be"),
    ],
)
def test_settings_of_the_wrong_type_are_validation_errors(
    settings: dict[str, Any], named: str
) -> None:
    # They were an AttributeError, accepted then failing at the first call, or read
    # as true ("no").
    with pytest.raises(chatsdk.ValidationError, match=named):
        chatsdk.ChatClient("k", base_url="http://127.0.0.1:9", **settings)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"max_resumes": True}, "max_resumes"),
        ({"max_resumes": 1.5}, "max_resumes"),
        ({"max_retry_after": -1.0}, "max_retry_after"),
    ],
)
def test_retry_policy_checks_every_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(chatsdk.ValidationError, match=named):
        chatsdk.RetryPolicy(**fields)


@pytest.mark.parametrize("session_id", [".", ".."])
async def test_a_dot_session_id_is_refused_at_once(session_id: str) -> None:
    # It was refused only at the first use of the stream.
    async with chatsdk.ChatClient("k", base_url="http://127.0.0.1:9") as client:
        with pytest.raises(chatsdk.ValidationError, match="session's id"):
            client.chat.continue_(session_id, integration_id="d", message="q")


async def test_a_response_format_that_is_not_a_mapping_is_named() -> None:
    async with chatsdk.ChatClient("k", base_url="http://127.0.0.1:9") as client:
        with pytest.raises(chatsdk.ValidationError, match="response_format must be a mapping"):
            client.chat.completions.create(model="m", messages="q", response_format="json_object")  # type: ignore[arg-type]


# -- error mapping and retries (purpose-built server) ------------------------------------

SERVICE_ERROR = msgspec.json.encode(
    {
        "name": "x",
        "id": "abc",
        "message": "nope",
        "temporary": False,
        "timeout": False,
        "fault": False,
    }
)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, chatsdk.BadRequestError),
        (401, chatsdk.AuthenticationError),
        (403, chatsdk.PermissionDeniedError),
        (404, chatsdk.NotFoundError),
        (409, chatsdk.ConflictError),
        (418, chatsdk.APIStatusError),
        (422, chatsdk.UnprocessableEntityError),
        (429, chatsdk.RateLimitError),
        (500, chatsdk.InternalServerError),
        (503, chatsdk.InternalServerError),
    ],
)
async def test_each_status_maps_to_its_error(
    status: int, cls: type[chatsdk.APIStatusError]
) -> None:
    async with (
        ScriptedServer(
            [Reply(status=status, body=SERVICE_ERROR, headers={"X-Request-Id": "req-1"})]
        ) as srv,
        chatsdk.ChatClient(KEY, project=PROJECT, base_url=srv.url, retries=0) as c,
    ):
        with pytest.raises(cls) as info:
            await c.tokens.create(embed_origin=ORIGIN)
    err = info.value
    assert type(err) is cls
    assert err.status == status and err.request_id == "req-1"
    assert err.body["id"] == "abc" and err.id == "abc" and err.name == "x"
    assert "nope" in str(err)


async def test_422_detail_is_exposed() -> None:
    detail = {
        "detail": [{"loc": ["body", "integration_id"], "msg": "field required", "type": "missing"}]
    }
    async with ScriptedServer([Reply(status=422, body=msgspec.json.encode(detail))]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as c:
            with pytest.raises(chatsdk.UnprocessableEntityError) as info:
                await c.chat.create(integration_id="docs", messages="q")
    assert info.value.detail == detail["detail"]
    assert "body.integration_id: field required" in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit"}},
        {"error": "Rate limit reached"},
    ],
    ids=["OpenAI's error object", "an error string"],
)
async def test_an_openai_style_error_body_gives_its_message(body: dict[str, Any]) -> None:
    reply = Reply(status=429, body=msgspec.json.encode(body), headers={"Retry-After": "0"})
    async with ScriptedServer([reply]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as c:
            with pytest.raises(chatsdk.RateLimitError) as info:
                await c.chat.completions.create(model="m", messages="q")
    assert "Rate limit reached" in str(info.value)
    assert info.value.body == body


async def test_a_pooled_connection_the_server_closed_gives_a_readable_error() -> None:
    # An ordinary HTTP/1.1 server that closes each connection after its answer (a
    # keep-alive timeout of ~0): with no retries a call on the stale pooled connection
    # fails; its error says what happened, not an aiohttp class name.
    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    errors = []
    async with server, chatsdk.ChatClient(KEY, base_url=url, retries=0) as c:
        for _ in range(4):
            try:
                assert (await c.chat.completions.create(model="m", messages="q")).text == "ok"
            except chatsdk.APIConnectionError as exc:
                errors.append(str(exc))
    for message in errors:
        assert "the connection failed" in message or "closed the connection" in message, message
        assert not message.endswith("Error"), message


async def test_retries_keep_one_idempotency_key_and_honour_retry_after() -> None:
    ok = sse(
        ("message_chunk", '{"chat_session_id":"s","content_chunk":"hi","finish_reason":"stop"}')
    )
    async with (
        ScriptedServer(
            [
                Reply(status=503, body=b"busy", headers={"Retry-After": "0"}),
                Reply(status=429, body=b"slow down", headers={"Retry-After": "0"}),
                Reply(body=ok, content_type="text/event-stream"),
            ]
        ) as srv,
        chatsdk.ChatClient(KEY, base_url=srv.url, retries=FAST) as c,
    ):
        result = await c.chat.create(integration_id="docs", messages="q")
    assert result.text == "hi"
    keys = {s.headers["Idempotency-Key"] for s in srv.seen}
    assert len(srv.seen) == 3 and len(keys) == 1
    assert srv.seen[0].headers["Authorization"] == f"Bearer {KEY}"


async def test_retry_after_longer_than_the_cap_is_not_waited_for() -> None:
    async with (
        ScriptedServer([Reply(status=429, body=b"", headers={"Retry-After": "3600"})]) as srv,
        chatsdk.ChatClient(KEY, base_url=srv.url, retries=5) as c,
    ):
        with pytest.raises(chatsdk.RateLimitError) as info:
            await c.chat.create(integration_id="docs", messages="q")
    assert len(srv.seen) == 1 and info.value.headers["Retry-After"] == "3600"
    assert "not retried: the server's Retry-After asks for more than max_retry_after" in str(
        info.value
    )


@pytest.mark.parametrize(
    ("headers", "waited"),
    [
        ({"retry-after-ms": "300"}, 0.3),
        ({"retry-after-ms": "300", "Retry-After": "0"}, 0.3),  # the finer one wins
        ({"retry-after-ms": "soon", "Retry-After": "0.3"}, 0.3),  # invalid: Retry-After
    ],
    ids=["ms alone", "ms and seconds", "invalid ms"],
)
async def test_retry_after_ms_is_honoured(headers: dict[str, str], waited: float) -> None:
    ok = sse(
        ("message_chunk", '{"chat_session_id":"s","content_chunk":"hi","finish_reason":"stop"}')
    )
    replies = [
        Reply(status=429, body=b"slow down", headers=headers),
        Reply(body=ok, content_type="text/event-stream"),
    ]
    async with (
        ScriptedServer(replies) as srv,
        chatsdk.ChatClient(KEY, base_url=srv.url, retries=FAST) as c,
    ):
        started = time.monotonic()
        result = await c.chat.create(integration_id="docs", messages="q")
        elapsed = time.monotonic() - started
    assert result.text == "hi"
    assert waited <= elapsed < waited + 1.5
    assert len(srv.seen) == 2


@pytest.mark.parametrize("value", ["120000", "9" * 400])
async def test_retry_after_ms_longer_than_the_cap_is_not_waited_for(value: str) -> None:
    # 400 digits are more than a float holds (inf): still too long, never "at once".
    headers = {"retry-after-ms": value, "Retry-After": "0"}
    async with (
        ScriptedServer([Reply(status=429, body=b"", headers=headers)]) as srv,
        chatsdk.ChatClient(KEY, base_url=srv.url, retries=5) as c,
    ):
        with pytest.raises(chatsdk.RateLimitError) as info:
            await c.chat.create(integration_id="docs", messages="q")
    assert len(srv.seen) == 1
    assert "not retried: the server's retry-after-ms asks for more than max_retry_after" in str(
        info.value
    )


async def test_an_error_s_headers_are_read_in_any_case_and_keep_repeated_values() -> None:
    headers = {"Retry-After": "3600", "X-Request-ID": "req-1"}
    reply = Reply(status=429, body=b"", headers=headers)
    async with (
        ScriptedServer([reply]) as srv,
        chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as c,
    ):
        with pytest.raises(chatsdk.RateLimitError) as info:
            await c.chat.create(integration_id="docs", messages="q")
    got = info.value.headers
    assert got["retry-after"] == got["RETRY-AFTER"] == "3600"
    assert got["x-request-id"] == info.value.request_id == "req-1"


async def test_a_chat_results_json_error_answered_with_200_is_the_server_s_error() -> None:
    body = b'{"error": {"message": "quota exceeded", "type": "x"}}'
    reply = Reply(body=body, headers={"X-Request-Id": "req-9"})
    async with (
        ScriptedServer([reply]) as srv,
        chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as c,
    ):
        with pytest.raises(chatsdk.APIError) as info:
            await c.chat.create(integration_id="docs", messages="q")
    assert type(info.value) is chatsdk.APIError
    assert "answered with an error: quota exceeded" in str(info.value)
    assert info.value.body == {"message": "quota exceeded", "type": "x"}
    assert info.value.request_id == "req-9"


async def test_a_server_quoting_the_start_of_a_long_key_does_not_show_it() -> None:
    long_key = "LONG-SECRET-KEY-" + "k" * 9000
    body = b"Got more than 8190 bytes when reading: b'" + long_key[:300].encode() + b"...'"
    async with (
        ScriptedServer([Reply(status=400, body=body, content_type="text/plain")]) as srv,
        chatsdk.ChatClient(long_key, base_url=srv.url, retries=0) as c,
    ):
        with pytest.raises(chatsdk.BadRequestError) as info:
            await c.chat.create(integration_id="docs", messages="q")
    shown = f"{info.value} {info.value.body!r} {info.value!r}"
    assert long_key[:8] not in shown
    assert "Got more than 8190 bytes" in shown


async def test_a_token_quoted_back_percent_encoded_is_redacted() -> None:
    # The SDK itself encodes the token into the revoke URL; a server quoting that URL
    # gives it back encoded.
    token = "AbCdEf+gh/ij=kl0123456789"
    body = b"bad request for /rpc/chatSessions.revoke?token=AbCdEf%2Bgh%2Fij%3Dkl0123456789"
    reply = Reply(status=400, body=body, content_type="text/plain")
    async with (
        ScriptedServer([reply]) as srv,
        chatsdk.ChatClient(KEY, project=PROJECT, base_url=srv.url, retries=0) as c,
    ):
        with pytest.raises(chatsdk.BadRequestError) as info:
            await c.tokens.revoke(token)
    shown = f"{info.value} {info.value.body!r}"
    assert "AbCdEf" not in shown
    assert "bad request for" in shown


async def test_a_secret_in_a_content_location_never_reaches_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret_path = f"/resume/{KEY}"
    first = Reply(
        body=b'id: 1\nevent: message_chunk\ndata: {"content_chunk": "a"}\n\n'
        b"event: message_chunk\ndata: {",
        content_type="text/event-stream",
        headers={"Content-Location": secret_path},
    )
    async with (
        ScriptedServer([first, Reply(status=404, body=b"gone")]) as srv,
        chatsdk.ChatClient(KEY, base_url=srv.url, retries=FAST) as c,
    ):
        with caplog.at_level("DEBUG", logger="chatsdk"), pytest.raises(chatsdk.ChatSDKError):
            await c.chat.create(integration_id="docs", messages="q")
    assert srv.seen[-1].path == secret_path  # the resume was tried, and logged
    assert caplog.records
    assert KEY not in caplog.text


async def test_non_retryable_status_is_not_retried() -> None:
    async with ScriptedServer([Reply(status=400, body=SERVICE_ERROR)]) as srv:
        async with chatsdk.ChatClient(KEY, project=PROJECT, base_url=srv.url, retries=FAST) as c:
            with pytest.raises(chatsdk.BadRequestError):
                await c.tokens.create(embed_origin=ORIGIN)
    assert len(srv.seen) == 1


async def test_retried_revoke_whose_first_attempt_succeeded_is_not_an_error() -> None:
    # The public server answers 400 "invalid token" for an already revoked token.
    async with (
        ScriptedServer([Reply(status=503, body=b""), Reply(status=400, body=SERVICE_ERROR)]) as srv,
        chatsdk.ChatClient(KEY, project=PROJECT, base_url=srv.url, retries=FAST) as c,
    ):
        await c.tokens.revoke("a.b/c+d=e&f")
    assert srv.seen[0].query == {"token": "a.b/c+d=e&f"}  # encoded, not spliced


async def test_server_reference_faults_retry_then_succeed(
    client: chatsdk.ChatClient, server: ReferenceServer
) -> None:
    server.faults = Faults(fail_first=2, fail_status=503, retry_after="0")
    result = await client.chat.create(integration_id="docs", messages=QUESTION)
    assert result.text
    server.faults = Faults(fail_first=5, fail_status=503, retry_after="0")
    with pytest.raises(chatsdk.InternalServerError):
        await client.chat.create(integration_id="docs", messages=QUESTION)


async def test_unreachable_server_is_a_connection_error() -> None:
    async with ScriptedServer([Reply()]) as srv:
        url = srv.url
    async with chatsdk.ChatClient(KEY, project=PROJECT, base_url=url, retries=FAST) as c:
        with pytest.raises(chatsdk.APIConnectionError) as info:
            await c.tokens.create(embed_origin=ORIGIN)
    assert not isinstance(info.value, chatsdk.APITimeoutError)
    assert "cannot connect" in str(info.value)


def test_explicit_arguments_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSDK_API_KEY", "env-key")
    monkeypatch.setenv("CHATSDK_CHAT_BASE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("CHATSDK_TOKENS_BASE_URL", "http://127.0.0.1:2")
    c = chatsdk.ChatClient(session_token="tok", project="p", base_url="http://127.0.0.1:3")
    settings = c._transport.settings
    assert settings.api_key is None  # the explicit client token is what gets sent
    assert settings.chat_base_url == settings.tokens_base_url == "http://127.0.0.1:3"
    env_only = chatsdk.ChatClient()
    assert env_only._transport.settings.api_key == "env-key"
    assert env_only._transport.settings.chat_base_url == "http://127.0.0.1:1"


async def test_a_local_servers_placeholder_key_is_not_masked_in_its_messages() -> None:
    # Ollama takes any key, and "ollama" is the one its docs use: masking it turned the
    # server's words into "registry.***.ai/library/llama3.2 does not support tools".
    said = {"error": {"message": "registry.ollama.ai/library/llama3.2 does not support tools"}}
    reply = Reply(status=400, body=msgspec.json.encode(said).decode())
    async with ScriptedServer([reply]) as srv:
        async with chatsdk.ChatClient("ollama", base_url=srv.url, retries=0) as client:
            with pytest.raises(chatsdk.BadRequestError) as info:
                await client.chat.completions.create(model="llama3.2", messages="q")
    assert "registry.ollama.ai/library/llama3.2" in str(info.value)


async def test_an_error_body_in_a_one_item_list_gives_its_message() -> None:
    # Gemini's OpenAI-compatible endpoint: the message was "no details".
    said = [{"error": {"code": 429, "message": "Resource has been exhausted", "status": "X"}}]
    reply = Reply(status=400, body=msgspec.json.encode(said).decode())
    async with ScriptedServer([reply]) as srv:
        async with chatsdk.ChatClient("a-key-12345", base_url=srv.url, retries=0) as client:
            with pytest.raises(chatsdk.BadRequestError, match="Resource has been exhausted"):
                await client.chat.completions.create(model="gemini", messages="q")


@pytest.mark.parametrize(
    ("wrapped", "content_type"),
    [
        ("message", "application/json"),
        ("message", "text/plain"),  # a proxy's label: the body is JSON all the same
        ("error.message", "application/json"),
        # A one-item list (as Gemini wraps its errors): the message found the detail in
        # it, but UnprocessableEntityError.detail did not look inside.
        ("[].message", "application/json"),
        ("[]", "application/json"),
    ],
)
async def test_mistrals_422_with_the_detail_inside_its_message_gives_the_detail(
    wrapped: str, content_type: str
) -> None:
    # Mistral nests FastAPI's detail list in "message": the error said "no details".
    item = {"type": "missing", "loc": ["body", "model"], "msg": "Field required", "input": None}
    said: Any = {"detail": [item]}
    for key in reversed(wrapped.split(".")):
        said = [said] if key == "[]" else {"object": "error", key: said, "type": "invalid"}
    reply = Reply(status=422, body=msgspec.json.encode(said), content_type=content_type)
    async with ScriptedServer([reply]) as srv:
        async with chatsdk.ChatClient("a-key-12345", base_url=srv.url, retries=0) as client:
            with pytest.raises(chatsdk.UnprocessableEntityError) as info:
                await client.chat.completions.create(model="mistral", messages="q")
    assert "body.model: Field required" in str(info.value)
    assert info.value.detail == [item]


async def test_a_client_dropped_unclosed_in_its_loop_closes_its_pool_quietly() -> None:
    # A notebook cell run again rebinds `client`: aiohttp printed "Unclosed client
    # session" into the output every time.
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        async with ScriptedServer([Reply(body=sse(("message_chunk", "{}")))]) as srv:
            client = chatsdk.ChatClient(KEY, base_url=srv.url, retries=0)
            with contextlib.suppress(chatsdk.ChatSDKError):
                await client.chat.create(integration_id="d", messages="q")
            with pytest.warns(ResourceWarning, match="unclosed chatsdk.ChatClient"):
                del client
                gc.collect()
            await asyncio.sleep(0.05)
            gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert not [c for c in reported if "Unclosed" in str(c.get("message"))], reported


async def test_a_client_dropped_while_its_stream_is_read_leaves_the_stream_alone() -> None:
    # A task reads a stream when the notebook rebinds `client`: the pool was closed
    # under the reader, who then waited for the read timeout.
    async with ReferenceServer(api_key=KEY, project=PROJECT) as server:
        server.faults = Faults(event_delay=0.02)
        client = chatsdk.ChatClient(KEY, project=PROJECT, base_url=server.base_url)
        stream = client.chat.completions.create(model="m", messages=QUESTION)
        first = await anext(stream)
        del client
        gc.collect()
        with pytest.warns(ResourceWarning, match="unclosed chatsdk.ChatClient"):
            async with asyncio.timeout(10):
                result = await stream  # and its end closes the pool
        assert first is not None and result.text


@pytest.mark.parametrize("case", ["upper", "lower"])
async def test_a_key_echoed_url_encoded_is_masked_in_either_case_of_hex(case: str) -> None:
    # .NET's UrlEncode writes %2b, not %2B: the key came back whole.
    key = "sk-Ab+/=0123456789xyz"
    from urllib.parse import quote

    echoed = quote(key, safe="")
    if case == "lower":
        echoed = re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), echoed)
    reply = Reply(status=401, body=f"invalid api_key={echoed}", content_type="text/plain")
    async with ScriptedServer([reply]) as srv:
        async with chatsdk.ChatClient(key, base_url=srv.url, retries=0) as client:
            with pytest.raises(chatsdk.AuthenticationError) as info:
                await client.chat.completions.create(model="m", messages="q")
    assert echoed not in str(info.value) and "***" in str(info.value)


@pytest.mark.parametrize("where", ["status", "error chunk"])
async def test_a_key_echoed_with_json_escapes_is_masked_whole(where: str) -> None:
    # PHP's json_encode writes "/" as "\/": once parsed, the key's escaped form (longer,
    # masked first) had cut the plain copy short, and its tail showed.
    key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    said = '{"error":{"message":"invalid key ' + key.replace("/", "\\/") + '"}}'
    if where == "status":
        reply = Reply(status=400, body=said)
    else:
        reply = Reply(body=f"data: {said}\n\n", content_type="text/event-stream")
    async with ScriptedServer([reply]) as srv:
        async with chatsdk.ChatClient(key, base_url=srv.url, retries=0) as client:
            with pytest.raises(chatsdk.APIError) as info:
                await client.chat.completions.create(model="m", messages="q")
    shown = f"{info.value} {info.value.body!r}"
    assert "K7MDENG" not in shown and "EXAMPLEKEY" not in shown
    assert "invalid key ***" in str(info.value)


async def test_a_servers_control_characters_are_escaped_in_the_message() -> None:
    # A server's CR LF started a fake log line, and its ESC drove the terminal; U+2028
    # ends a line in some log readers, U+202E reorders the rest of it.
    said = {"error": {"message": "denied\r\nINFO all good\u001b[2J\u2028\u202e!kO"}}
    reply = Reply(status=403, body=msgspec.json.encode(said))
    async with ScriptedServer([reply]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as client:
            with pytest.raises(chatsdk.PermissionDeniedError) as info:
                await client.chat.completions.create(model="m", messages="q")
    assert "denied\\r\\nINFO all good\\x1b[2J\\u2028\\u202e!kO" in str(info.value)
    assert info.value.body == said  # the body itself is as the server sent it


async def test_the_pool_of_a_client_dropped_while_its_stream_was_read_closes_at_its_end() -> None:
    # Left open, aiohttp printed "Unclosed client session" once the transport was
    # collected.
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        async with ReferenceServer(api_key=KEY, project=PROJECT) as server:
            client = chatsdk.ChatClient(KEY, project=PROJECT, base_url=server.base_url)
            await client.chat.completions.create(model="m", messages=QUESTION)  # a pool
            stream = client.chat.completions.create(model="m", messages=QUESTION)
            del client
            gc.collect()
            with pytest.warns(ResourceWarning, match="unclosed chatsdk.ChatClient"):
                async with asyncio.timeout(10):
                    assert (await stream).text
            transport = stream._transport
            await asyncio.sleep(0.05)
            assert transport._session is not None and transport._session.closed
            del stream, transport
            gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert not [c for c in reported if "Unclosed" in str(c.get("message"))], reported
