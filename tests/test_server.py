"""The reference server over loopback, spoken to with plain aiohttp (no chatsdk client).

Covers the wire format of every route (SPEC §1), credentials, validation, idempotency,
resumable streams, every fault of ``Faults``, history-dependent answers, persistence and
``serve_in_thread``.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import jwt
import pytest

import chatsdk
from chatsdk.server import Faults, ReferenceServer
from chatsdk.server.responder import NO_MATCH
from tests.support import (
    BEARER,
    KEY,
    ORIGIN,
    PROJECT,
    SIGNING_SECRET,
    TOKEN_HEADERS,
    create_body,
    forge,
    mint,
)

pytestmark = pytest.mark.anyio

QUESTION = "How do I retry?"
SERVICE_ERROR_FIELDS = {"name", "id", "message", "temporary", "timeout", "fault"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# -- helpers ---------------------------------------------------------------------------


def parse_sse(raw: bytes) -> list[dict[str, str]]:
    """A minimal event-stream parser for well-formed server output (LF line ends)."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        events.append(fields)
    return events


def continue_body(question: str, *, stream: bool = True) -> dict[str, Any]:
    return {
        "integration_id": "docs",
        "message": {"role": "user", "content": question},
        "stream": stream,
    }


async def read_until_cut(resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """The body bytes received and whether the body ended prematurely."""
    data = b""
    try:
        async for chunk in resp.content.iter_any():
            data += chunk
    except aiohttp.ClientPayloadError:
        return data, True
    return data, False


def client_token_headers(token: str, **extra: str) -> dict[str, str]:
    return {"Gram-Chat-Session": token, "Gram-Project": PROJECT, **extra}


async def chat(
    http: aiohttp.ClientSession,
    server: ReferenceServer,
    body: dict[str, Any],
    *,
    session_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    path = "/chat_sessions/chat_results"
    if session_id is not None:
        path = f"/chat_sessions/{session_id}/chat_results"
    async with http.post(server.base_url + path, json=body, headers=headers or BEARER) as resp:
        if resp.content_type == "text/event-stream":
            return resp.status, parse_sse(await resp.read())
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


def answer_text(events: list[dict[str, str]]) -> str:
    return "".join(
        json.loads(e["data"])["content_chunk"] for e in events if e["event"] == "message_chunk"
    )


def session_count(server: ReferenceServer) -> int:
    row = server.store.db.execute("SELECT COUNT(*) FROM sessions").fetchone()
    return int(row[0])


def assert_service_error(resp: aiohttp.ClientResponse, body: Any, status: int, name: str) -> None:
    assert resp.status == status
    assert resp.headers["goa-error"] == name
    assert set(body) == SERVICE_ERROR_FIELDS
    assert body["name"] == name
    assert isinstance(body["id"], str) and body["id"]
    assert body["fault"] is (status == 500)
    assert isinstance(body["temporary"], bool) and isinstance(body["timeout"], bool)


# -- basics ----------------------------------------------------------------------------


async def test_healthz_and_request_ids(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    assert server.base_url.startswith("http://127.0.0.1:")
    assert not server.base_url.endswith(":0")
    async with http.get(server.base_url + "/healthz") as resp:
        assert resp.status == 200 and await resp.text() == "ok"
        first = resp.headers["X-Request-Id"]
    async with http.get(server.base_url + "/healthz") as resp:
        assert resp.headers["X-Request-Id"] != first
    async with http.get(server.base_url + "/healthz", headers={"X-Request-Id": "abc-123"}) as resp:
        assert resp.headers["X-Request-Id"] == "abc-123"
    # Errors and streams carry one too.
    async with http.post(server.base_url + "/chat_sessions/chat_results", json={}) as resp:
        assert resp.status == 401 and resp.headers["X-Request-Id"]
    async with http.post(
        server.base_url + "/chat_sessions/chat_results",
        json=create_body(),
        headers={**BEARER, "X-Request-Id": "req-7"},
    ) as resp:
        assert resp.headers["X-Request-Id"] == "req-7"
        await resp.read()


async def test_unknown_routes_use_each_family_s_error_format(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(server.base_url + "/rpc/chatSessions.nope") as resp:
        assert_service_error(resp, await resp.json(), 404, "not_found")
    async with http.get(server.base_url + "/chat_sessions/chat_results") as resp:
        assert resp.status == 405 and "detail" in await resp.json()
        assert "POST" in resp.headers["Allow"]


async def test_base_url_needs_a_running_server() -> None:
    server = ReferenceServer()
    with pytest.raises(RuntimeError):
        _ = server.base_url
    assert KEY not in repr(server)
    with pytest.raises(ValueError, match="signing_secret"):
        ReferenceServer(signing_secret="short")


# -- tokens.create ---------------------------------------------------------------------


async def test_create_token_wire_format(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{server.base_url}/rpc/chatSessions.create",
        json={"embed_origin": ORIGIN, "expires_after": 900, "user_identifier": "user-1"},
        headers=TOKEN_HEADERS,
    ) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert set(body) == {
        "client_token",
        "embed_origin",
        "expires_after",
        "status",
        "user_identifier",
    }
    assert body["embed_origin"] == ORIGIN
    assert body["expires_after"] == 900
    assert body["status"] == "active"
    assert body["user_identifier"] == "user-1"
    assert jwt.get_unverified_header(body["client_token"])["alg"] == "HS256"
    claims = jwt.decode(body["client_token"], SIGNING_SECRET, algorithms=["HS256"], audience=ORIGIN)
    assert set(claims) == {"jti", "aud", "iat", "exp", "project", "sub"}
    assert claims["aud"] == [ORIGIN]
    assert claims["exp"] - claims["iat"] == 900
    assert claims["project"] == PROJECT
    assert claims["sub"] == "user-1"
    assert str(uuid.UUID(claims["jti"])) == claims["jti"]


async def test_create_token_defaults(server: ReferenceServer, http: aiohttp.ClientSession) -> None:
    body = await mint(http, server)
    assert body["expires_after"] == 3600
    assert "user_identifier" not in body
    claims = jwt.decode(body["client_token"], options={"verify_signature": False})
    assert "sub" not in claims
    assert claims["exp"] - claims["iat"] == 3600
    # Every token is new: a fresh jti each time.
    again = await mint(http, server)
    other = jwt.decode(again["client_token"], options={"verify_signature": False})
    assert other["jti"] != claims["jti"]


@pytest.mark.parametrize(
    ("headers", "status", "name"),
    [
        ({}, 401, "unauthorized"),
        ({"Gram-Project": PROJECT}, 401, "unauthorized"),
        ({"Gram-Key": "wrong", "Gram-Project": PROJECT}, 401, "unauthorized"),
        ({"Gram-Key": KEY}, 401, "unauthorized"),
        ({"Gram-Key": KEY, "Gram-Project": "other"}, 403, "forbidden"),
        ({"Authorization": f"Bearer {KEY}", "Gram-Project": PROJECT}, 401, "unauthorized"),
    ],
)
async def test_create_token_credentials(
    server: ReferenceServer,
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    status: int,
    name: str,
) -> None:
    async with http.post(
        f"{server.base_url}/rpc/chatSessions.create", json={"embed_origin": ORIGIN}, headers=headers
    ) as resp:
        assert_service_error(resp, await resp.json(), status, name)


async def test_a_client_token_never_mints(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    token = (await mint(http, server))["client_token"]
    url = f"{server.base_url}/rpc/chatSessions.create"
    async with http.post(
        url, json={"embed_origin": ORIGIN}, headers=client_token_headers(token)
    ) as resp:
        assert_service_error(resp, await resp.json(), 401, "unauthorized")
    # Even next to the key, a request carrying a client token is refused.
    both = {**TOKEN_HEADERS, "Gram-Chat-Session": token}
    async with http.post(url, json={"embed_origin": ORIGIN}, headers=both) as resp:
        assert_service_error(resp, await resp.json(), 403, "forbidden")
    revoke = f"{server.base_url}/rpc/chatSessions.revoke"
    async with http.delete(revoke, params={"token": token}, headers=both) as resp:
        assert resp.status == 403


@pytest.mark.parametrize(
    "origin",
    [
        "docs.example.com",
        "ftp://docs.example.com",
        "https://docs.example.com/",
        "https://docs.example.com/page",
        "https://docs.example.com?q=1",
        "https://docs.example.com#top",
        "https://user:pw@docs.example.com",
        "https://docs.example.com:notaport",
        "https://",
        "",
    ],
)
async def test_create_token_rejects_non_origins(
    server: ReferenceServer, http: aiohttp.ClientSession, origin: str
) -> None:
    async with http.post(
        f"{server.base_url}/rpc/chatSessions.create",
        json={"embed_origin": origin},
        headers=TOKEN_HEADERS,
    ) as resp:
        assert_service_error(resp, await resp.json(), 422, "invalid")


async def test_create_token_accepts_origins_with_ports(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    body = await mint(http, server, embed_origin="http://localhost:8080")
    assert body["embed_origin"] == "http://localhost:8080"


@pytest.mark.parametrize("expires_after", [0, -5, 3601])
async def test_create_token_expires_after_range(
    server: ReferenceServer, http: aiohttp.ClientSession, expires_after: int
) -> None:
    async with http.post(
        f"{server.base_url}/rpc/chatSessions.create",
        json={"embed_origin": ORIGIN, "expires_after": expires_after},
        headers=TOKEN_HEADERS,
    ) as resp:
        assert_service_error(resp, await resp.json(), 422, "invalid")


@pytest.mark.parametrize(
    ("data", "content_type", "status", "name"),
    [
        (b"{not json", "application/json", 400, "bad_request"),
        (b'{"expires_after": 60}', "application/json", 400, "bad_request"),
        (b'{"embed_origin": 5}', "application/json", 400, "bad_request"),
        (
            b'{"embed_origin": "https://a.example", "expires_after": "60"}',
            "application/json",
            400,
            "bad_request",
        ),
        (b'{"embed_origin": "https://a.example"}', "text/plain", 415, "unsupported_media"),
    ],
)
async def test_create_token_bad_bodies(
    server: ReferenceServer,
    http: aiohttp.ClientSession,
    data: bytes,
    content_type: str,
    status: int,
    name: str,
) -> None:
    async with http.post(
        f"{server.base_url}/rpc/chatSessions.create",
        data=data,
        headers={**TOKEN_HEADERS, "Content-Type": content_type},
    ) as resp:
        assert_service_error(resp, await resp.json(), status, name)


# -- tokens.revoke and client-token checks ---------------------------------------------


async def test_revoke_is_idempotent_and_refuses_the_token(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    token = (await mint(http, server))["client_token"]
    status, _ = await chat(
        http, server, create_body(stream=False), headers=client_token_headers(token)
    )
    assert status == 200
    url = f"{server.base_url}/rpc/chatSessions.revoke"
    for _ in range(2):
        async with http.delete(url, params={"token": token}, headers=TOKEN_HEADERS) as resp:
            assert resp.status == 204
            assert await resp.read() == b""
    status, body = await chat(
        http, server, create_body(stream=False), headers=client_token_headers(token)
    )
    assert status == 401
    assert "revoked" in body["detail"]


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        "a.b.c",
        jwt.encode(
            {"jti": "x", "aud": [ORIGIN], "iat": 0, "exp": 2**31},
            "another-secret-that-is-long-enough!!",
            algorithm="HS256",
        ),
        forge(exp=int(time.time()) - 60),
        forge(project="other"),
    ],
    ids=["garbage", "three-parts", "forged", "expired", "other-project"],
)
async def test_revoke_invalid_token(
    server: ReferenceServer, http: aiohttp.ClientSession, token: str
) -> None:
    async with http.delete(
        f"{server.base_url}/rpc/chatSessions.revoke", params={"token": token}, headers=TOKEN_HEADERS
    ) as resp:
        body = await resp.json()
        assert_service_error(resp, body, 400, "bad_request")
        assert body["message"] == "invalid token"


async def test_revoke_needs_the_key(server: ReferenceServer, http: aiohttp.ClientSession) -> None:
    token = (await mint(http, server))["client_token"]
    url = f"{server.base_url}/rpc/chatSessions.revoke"
    async with http.delete(url, params={"token": token}) as resp:
        assert_service_error(resp, await resp.json(), 401, "unauthorized")
    async with http.delete(
        url, params={"token": token}, headers={**TOKEN_HEADERS, "Gram-Project": "x"}
    ) as resp:
        assert_service_error(resp, await resp.json(), 403, "forbidden")
    async with http.delete(url, headers=TOKEN_HEADERS) as resp:
        assert_service_error(resp, await resp.json(), 400, "bad_request")


async def test_client_token_chats_with_or_without_origin(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    token = (await mint(http, server))["client_token"]
    for extra in ({}, {"Origin": ORIGIN}):
        status, events = await chat(
            http, server, create_body(), headers=client_token_headers(token, **extra)
        )
        assert status == 200 and events[-1]["event"] == "records_cited"


async def test_client_token_as_a_bearer_token(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    # The style of Gram's RFC deprecating Gram-Chat-Session: the same JWT, the same rules.
    token = (await mint(http, server))["client_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    for extra in ({}, {"Origin": ORIGIN}, {"Gram-Project": PROJECT}):
        status, events = await chat(http, server, create_body(), headers={**bearer, **extra})
        assert status == 200 and events[-1]["event"] == "records_cited"
    status, _ = await chat(http, server, create_body(), headers={**bearer, "Gram-Project": "x"})
    assert status == 403
    status, text = await chat(
        http, server, create_body(), headers={**bearer, "Origin": "https://evil.example.net"}
    )
    assert status == 403 and text.startswith("Origin https://evil.example.net does not match")


async def test_wrong_origin_is_a_plain_text_403(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    token = (await mint(http, server))["client_token"]
    async with http.post(
        f"{server.base_url}/chat_sessions/chat_results",
        json=create_body(),
        headers=client_token_headers(token, Origin="https://evil.example.net"),
    ) as resp:
        assert resp.status == 403
        assert resp.content_type == "text/plain"
        assert await resp.text() == (
            f"Origin https://evil.example.net does not match audience claim: {ORIGIN}"
        )


async def test_an_origin_with_its_default_port_gets_a_403_that_says_so(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    # A browser never sends ":443"; a hand-made client that does is told why it differs.
    token = (await mint(http, server))["client_token"]
    status, text = await chat(
        http, server, create_body(), headers=client_token_headers(token, Origin=f"{ORIGIN}:443")
    )
    assert status == 403
    assert text == (
        f"Origin {ORIGIN}:443 does not match audience claim: {ORIGIN} (the Origin names its "
        "scheme's default port, which browsers leave out of Origin: drop it)"
    )


@pytest.mark.parametrize(
    ("token", "status"),
    [
        (
            jwt.encode(
                {"jti": "x", "aud": [ORIGIN], "iat": 0, "exp": 2**31, "project": PROJECT},
                None,
                algorithm="none",
            ),
            401,
        ),
        (
            jwt.encode(
                {"jti": "x", "aud": [ORIGIN], "iat": 0, "exp": 2**31, "project": PROJECT},
                "forged-secret-forged-secret-forged!!",
                algorithm="HS256",
            ),
            401,
        ),
        (
            jwt.encode(
                {"jti": "x", "aud": [ORIGIN], "iat": 0, "exp": 2**31, "project": PROJECT},
                SIGNING_SECRET * 2,
                algorithm="HS512",
            ),
            401,
        ),
        (forge(exp=int(time.time()) - 5), 401),
        (forge(project="other"), 403),
        (forge(jti=None), 401),
        ("garbage", 401),
    ],
    ids=["alg-none", "forged", "hs512", "expired", "other-project", "no-jti", "garbage"],
)
async def test_bad_client_tokens(
    server: ReferenceServer, http: aiohttp.ClientSession, token: str, status: int
) -> None:
    got, body = await chat(
        http, server, create_body(stream=False), headers=client_token_headers(token)
    )
    assert got == status
    assert isinstance(body["detail"], str)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Basic {KEY}"}, 401),
        ({"Authorization": f"Bearer {KEY}", "Gram-Project": "other"}, 403),
        # Gram's API-key style is a chat credential on Gram's wire (Chat Completions),
        # never on Inkeep's chat_results (tests/test_server_completions.py).
        ({"Gram-Key": KEY, "Gram-Project": PROJECT}, 401),
    ],
)
async def test_chat_credentials(
    server: ReferenceServer, http: aiohttp.ClientSession, headers: dict[str, str], status: int
) -> None:
    got, body = await chat(http, server, create_body(stream=False), headers=headers or {"X": "y"})
    assert got == status and isinstance(body["detail"], str)


async def test_client_token_needs_the_matching_project_header(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    token = (await mint(http, server))["client_token"]
    got, _ = await chat(
        http, server, create_body(stream=False), headers={"Gram-Chat-Session": token}
    )
    assert got == 401
    got, _ = await chat(
        http,
        server,
        create_body(stream=False),
        headers={"Gram-Chat-Session": token, "Gram-Project": "x"},
    )
    assert got == 403


async def test_expired_minted_token(http: aiohttp.ClientSession) -> None:
    # A genuinely minted token, expired by waiting: iat/exp are whole seconds.
    async with ReferenceServer() as server:
        token = (await mint(http, server, expires_after=1))["client_token"]
        claims = jwt.decode(token, options={"verify_signature": False})
        await anyio.sleep(max(0.0, claims["exp"] - time.time()) + 0.05)
        got, body = await chat(
            http, server, create_body(stream=False), headers=client_token_headers(token)
        )
        assert got == 401 and "expired" in body["detail"]


# -- chat: validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        (
            {"chat_session": {"messages": [{"role": "user", "content": "x"}]}},
            ["body", "integration_id"],
            "missing",
        ),
        (
            {
                "integration_id": "",
                "chat_session": {"messages": [{"role": "user", "content": "x"}]},
            },
            ["body", "integration_id"],
            "string_too_short",
        ),
        (
            {"integration_id": 5, "chat_session": {"messages": [{"role": "user", "content": "x"}]}},
            ["body", "integration_id"],
            "string_type",
        ),
        (
            {"integration_id": "d", "chat_session": {"messages": []}},
            ["body", "chat_session", "messages"],
            "too_short",
        ),
        (
            {
                "integration_id": "d",
                "chat_session": {"messages": [{"role": "system", "content": "x"}]},
            },
            ["body", "chat_session", "messages", 0, "role"],
            "literal_error",
        ),
        (
            {
                "integration_id": "d",
                "chat_session": {"messages": [{"role": "user", "content": "x"}, {"role": "user"}]},
            },
            ["body", "chat_session", "messages", 1, "content"],
            "missing",
        ),
        (
            {
                "integration_id": "d",
                "chat_session": {"messages": [{"role": "user", "content": "x"}]},
                "stream": "yes",
            },
            ["body", "stream"],
            "bool_type",
        ),
        (
            {"integration_id": "d", "chat_session": "hi"},
            ["body", "chat_session"],
            "model_attributes_type",
        ),
        (
            {
                "integration_id": "d",
                "chat_session": {
                    "messages": [
                        {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a"},
                    ]
                },
            },
            ["body", "chat_session", "messages", 1, "role"],
            "value_error",
        ),
        ([], ["body"], "model_attributes_type"),
    ],
)
async def test_create_validation_detail(
    server: ReferenceServer, http: aiohttp.ClientSession, body: Any, loc: list[Any], kind: str
) -> None:
    status, got = await chat(http, server, body)
    assert status == 422
    assert len(got["detail"]) == 1
    item = got["detail"][0]
    assert set(item) == {"loc", "msg", "type"}
    assert item["loc"] == loc
    assert item["type"] == kind
    assert item["msg"]


async def test_non_json_chat_body_is_422(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{server.base_url}/chat_sessions/chat_results", data=b"{nope", headers=BEARER
    ) as resp:
        assert resp.status == 422
        item = (await resp.json())["detail"][0]
    assert item["loc"] == ["body"] and item["type"] == "json_invalid"


async def test_continue_validation_and_unknown_session(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    status, got = await chat(
        http,
        server,
        {"integration_id": "d", "message": {"role": "assistant", "content": "x"}},
        session_id="abc",
    )
    assert status == 422 and got["detail"][0]["loc"] == ["body", "message", "role"]
    status, got = await chat(http, server, {"integration_id": "d"}, session_id="abc")
    assert status == 422 and got["detail"][0]["loc"] == ["body", "message"]
    status, got = await chat(http, server, continue_body("more"), session_id="no-such-session")
    assert status == 404 and "detail" in got


# -- chat: answers -----------------------------------------------------------------------


async def test_stream_wire_format(server: ReferenceServer, http: aiohttp.ClientSession) -> None:
    async with http.post(
        f"{server.base_url}/chat_sessions/chat_results", json=create_body(), headers=BEARER
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert resp.headers["Cache-Control"] == "no-cache"
        location = resp.headers["Content-Location"]
        raw = await resp.read()
    assert location.startswith("/chat_sessions/results/") and location.endswith("/events")
    # Byte-exact framing of the first event.
    first = raw.split(b"\n\n", 1)[0].decode()
    lines = first.split("\n")
    assert lines[0] == "id: 1" and lines[1] == "event: message_chunk"
    data = json.loads(lines[2].removeprefix("data: "))
    assert list(data) == ["chat_session_id", "content_chunk", "finish_reason"]
    assert data["content_chunk"] == "Retries " and data["finish_reason"] is None

    events = parse_sse(raw)
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    *chunks, final, cited = events
    session_ids = set()
    for event in chunks:
        assert event["event"] == "message_chunk"
        payload = json.loads(event["data"])
        session_ids.add(payload["chat_session_id"])
        assert payload["finish_reason"] is None
        # One word, with the whitespace after it.
        assert payload["content_chunk"].strip() and " " not in payload["content_chunk"].strip()
    assert json.loads(final["data"]) == {
        "chat_session_id": session_ids.pop(),
        "content_chunk": "",
        "finish_reason": "stop",
    }
    assert not session_ids
    assert cited["event"] == "records_cited"
    citations = json.loads(cited["data"])["citations"]
    assert citations == [
        {
            "number": 1,
            "record": {
                "type": "documentation",
                "url": "https://chatsdk.dev/docs/retries",
                "title": "Retries and backoff",
                "description": citations[0]["record"]["description"],
                "breadcrumbs": ["Docs", "Reliability"],
            },
            "hit_url": "https://chatsdk.dev/docs/retries",
        }
    ]
    assert answer_text(events).startswith("Retries cover connection failures")


async def test_non_stream_wire_format_and_determinism(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    body = create_body(stream=False)
    del body["stream"]  # absent means false
    status, got = await chat(http, server, body)
    assert status == 200
    assert set(got) == {"chat_session_id", "message"}
    message = got["message"]
    assert set(message) == {"role", "content", "records_cited"}
    assert message["role"] == "assistant"
    assert message["records_cited"]["citations"][0]["record"]["title"] == "Retries and backoff"
    # The same history gives the same answer, streamed or not.
    _, events = await chat(http, server, create_body())
    assert answer_text(events) == message["content"]
    assert json.loads(events[-1]["data"]) == message["records_cited"]
    assert json.loads(events[0]["data"])["chat_session_id"] != got["chat_session_id"]


async def test_no_match_answer_has_no_citations(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    _, events = await chat(http, server, create_body("hello there"))
    assert answer_text(events) == NO_MATCH
    assert events[-2]["event"] == "message_chunk"
    assert json.loads(events[-2]["data"])["finish_reason"] == "stop"
    assert events[-1]["event"] == "records_cited"
    assert json.loads(events[-1]["data"]) == {"citations": []}


async def test_follow_up_depends_on_history(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    _, first = await chat(http, server, create_body(QUESTION, stream=False))
    session_id = first["chat_session_id"]
    _, follow = await chat(
        http, server, continue_body("tell me more", stream=False), session_id=session_id
    )
    text = follow["message"]["content"]
    assert text.startswith("Continuing on Retries and backoff: ")
    assert follow["chat_session_id"] == session_id
    # None of the first answer's sentences is repeated.
    first_sentences = first["message"]["content"].split(". ")
    assert not any(s.rstrip(".") in text for s in first_sentences)
    assert (
        follow["message"]["records_cited"]["citations"][0]["record"]["title"]
        == "Retries and backoff"
    )

    # The same follow-up in a session about timeouts continues that topic instead.
    _, other = await chat(http, server, create_body("What is the idle timeout?", stream=False))
    _, other_follow = await chat(
        http,
        server,
        continue_body("tell me more", stream=False),
        session_id=other["chat_session_id"],
    )
    assert other_follow["message"]["content"].startswith("Continuing on Timeouts")
    # Without history the same words have nothing to go on.
    _, alone = await chat(http, server, create_body("tell me more", stream=False))
    assert alone["message"]["content"] == NO_MATCH

    # A history sent with create counts as well, and streamed continues store the turn too.
    history = create_body(stream=False)
    history["chat_session"]["messages"] = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": first["message"]["content"]},
        {"role": "user", "content": "and what about that?"},
    ]
    _, replayed = await chat(http, server, history)
    assert replayed["message"]["content"] == text
    _, events = await chat(http, server, continue_body("more please"), session_id=session_id)
    rows = server.store.history(session_id)
    assert [m.role for m in rows] == ["user", "assistant"] * 3
    assert rows[-1].content == answer_text(events)


async def test_two_documents_are_cited_when_both_match(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    _, got = await chat(
        http, server, create_body("How do retries and timeouts work together?", stream=False)
    )
    citations = got["message"]["records_cited"]["citations"]
    assert [c["number"] for c in citations] == [1, 2]
    assert {c["record"]["title"] for c in citations} == {
        "Retries and backoff",
        "Timeouts: connect, read, idle and total",
    }


# -- resume ------------------------------------------------------------------------------


async def test_resume_with_last_event_id(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{server.base_url}/chat_sessions/chat_results", json=create_body(), headers=BEARER
    ) as resp:
        location = resp.headers["Content-Location"]
        events = parse_sse(await resp.read())
    url = server.base_url + location
    async with http.get(url, headers={**BEARER, "Last-Event-ID": "5"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert resp.headers["Content-Location"] == location
        assert parse_sse(await resp.read()) == events[5:]
    async with http.get(url, headers=BEARER) as resp:
        assert parse_sse(await resp.read()) == events
    async with http.get(url, headers={**BEARER, "Last-Event-ID": str(len(events))}) as resp:
        assert resp.status == 200 and await resp.read() == b""
    async with http.get(url, headers={**BEARER, "Last-Event-ID": "abc"}) as resp:
        assert resp.status == 400
    async with http.get(url) as resp:
        assert resp.status == 401
    token = (await mint(http, server))["client_token"]
    async with http.get(
        url, headers=client_token_headers(token, **{"Last-Event-ID": "50"})
    ) as resp:
        assert parse_sse(await resp.read()) == events[50:]
    async with http.get(
        server.base_url + "/chat_sessions/results/nope/events", headers=BEARER
    ) as resp:
        assert resp.status == 404


async def test_results_expire(http: aiohttp.ClientSession) -> None:
    async with ReferenceServer(result_ttl=0.2) as server:
        async with http.post(
            f"{server.base_url}/chat_sessions/chat_results", json=create_body(), headers=BEARER
        ) as resp:
            location = resp.headers["Content-Location"]
            await resp.read()
        async with http.get(server.base_url + location, headers=BEARER) as resp:
            assert resp.status == 200
            await resp.read()
        await anyio.sleep(0.3)
        async with http.get(server.base_url + location, headers=BEARER) as resp:
            assert resp.status == 404


# -- idempotency ---------------------------------------------------------------------------


async def test_idempotent_token_create(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    url = f"{server.base_url}/rpc/chatSessions.create"
    headers = {**TOKEN_HEADERS, "Idempotency-Key": str(uuid.uuid4())}
    bodies = []
    for _ in range(2):
        async with http.post(url, json={"embed_origin": ORIGIN}, headers=headers) as resp:
            assert resp.status == 200
            bodies.append(await resp.json())
    assert bodies[0] == bodies[1]
    async with http.post(
        url, json={"embed_origin": "https://other.example"}, headers=headers
    ) as resp:
        assert_service_error(resp, await resp.json(), 409, "conflict")
    # Another key is another call.
    headers["Idempotency-Key"] = str(uuid.uuid4())
    async with http.post(url, json={"embed_origin": ORIGIN}, headers=headers) as resp:
        assert (await resp.json())["client_token"] != bodies[0]["client_token"]


async def test_idempotent_stream_replays_the_first_result(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    headers = {**BEARER, "Idempotency-Key": str(uuid.uuid4())}
    url = f"{server.base_url}/chat_sessions/chat_results"
    async with http.post(url, json=create_body(), headers=headers) as resp:
        location = resp.headers["Content-Location"]
        events = parse_sse(await resp.read())
    async with http.post(url, json=create_body(), headers=headers) as resp:
        assert resp.headers["Content-Location"] == location
        assert parse_sse(await resp.read()) == events
    async with http.post(
        url, json=create_body(), headers={**headers, "Last-Event-ID": "10"}
    ) as resp:
        assert parse_sse(await resp.read()) == events[10:]
    assert session_count(server) == 1
    async with http.post(url, json=create_body("Other question?"), headers=headers) as resp:
        assert resp.status == 409 and "detail" in await resp.json()
    assert session_count(server) == 1


async def test_idempotent_continue_adds_one_turn(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    _, first = await chat(http, server, create_body(stream=False))
    session_id = first["chat_session_id"]
    headers = {**BEARER, "Idempotency-Key": str(uuid.uuid4())}
    answers = [
        await chat(
            http,
            server,
            continue_body("tell me more", stream=False),
            session_id=session_id,
            headers=headers,
        )
        for _ in range(3)
    ]
    assert answers[0] == answers[1] == answers[2]
    assert len(server.store.history(session_id)) == 4
    # The key is scoped to the route: the same key on create is a different call.
    status, _ = await chat(http, server, create_body(stream=False), headers=headers)
    assert status == 200


async def test_concurrent_repeats_create_one_session(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    headers = {**BEARER, "Idempotency-Key": str(uuid.uuid4())}
    results = await asyncio.gather(
        *(chat(http, server, create_body(stream=False), headers=headers) for _ in range(5))
    )
    assert all(r == results[0] for r in results)
    assert session_count(server) == 1


async def test_failed_attempt_leaves_the_key_free(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    headers = {**BEARER, "Idempotency-Key": str(uuid.uuid4())}
    server.faults = Faults(fail_first=1)
    status, _ = await chat(http, server, create_body(stream=False), headers=headers)
    assert status == 503
    status, got = await chat(http, server, create_body(stream=False), headers=headers)
    assert status == 200 and got["chat_session_id"]


# -- limits --------------------------------------------------------------------------------


async def test_body_too_large(http: aiohttp.ClientSession) -> None:
    async with ReferenceServer(max_body_size=200) as server:
        big = {"embed_origin": ORIGIN, "user_identifier": "u" * 300}
        async with http.post(
            f"{server.base_url}/rpc/chatSessions.create", json=big, headers=TOKEN_HEADERS
        ) as resp:
            assert_service_error(resp, await resp.json(), 413, "request_too_large")
        async with http.post(
            f"{server.base_url}/chat_sessions/chat_results",
            json=create_body("x" * 300),
            headers=BEARER,
        ) as resp:
            assert resp.status == 413 and "detail" in await resp.json()

        async def chunks() -> AsyncIterator[bytes]:
            # No Content-Length: the limit is enforced while reading.
            for _ in range(5):
                yield b" " * 100
            yield json.dumps(create_body()).encode()

        async with http.post(
            f"{server.base_url}/chat_sessions/chat_results", data=chunks(), headers=BEARER
        ) as resp:
            assert resp.status == 413
        # A body within the limit still works.
        status, _ = await chat(http, server, create_body("retry?", stream=False))
        assert status == 200


async def test_too_many_open_streams(http: aiohttp.ClientSession) -> None:
    async with ReferenceServer(max_streams_per_key=1, faults=Faults(event_delay=0.01)) as server:
        url = f"{server.base_url}/chat_sessions/chat_results"
        async with http.post(url, json=create_body(), headers=BEARER) as open_stream:
            await open_stream.content.readuntil(b"\n\n")
            async with http.post(url, json=create_body(), headers=BEARER) as resp:
                assert resp.status == 429
                assert resp.headers["Retry-After"] == "1"
            # Non-streaming calls are not limited.
            status, _ = await chat(http, server, create_body(stream=False))
            assert status == 200
            await open_stream.read()
        server.faults = Faults()
        status, _ = await chat(http, server, create_body())
        assert status == 200


# -- faults --------------------------------------------------------------------------------


async def test_drop_after_events_and_resume(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    _, full = await chat(http, server, create_body())
    server.faults = Faults(drop_after_events=20)
    url = f"{server.base_url}/chat_sessions/chat_results"
    async with http.post(url, json=create_body(), headers=BEARER) as resp:
        location = resp.headers["Content-Location"]
        data, cut = await read_until_cut(resp)
    assert cut
    received = parse_sse(data)
    assert len(received) == 20
    # Every response counts from its own start, so resuming repeatedly finishes.
    rounds = 0
    while cut:
        rounds += 1
        headers = {**BEARER, "Last-Event-ID": received[-1]["id"]}
        async with http.get(server.base_url + location, headers=headers) as resp:
            data, cut = await read_until_cut(resp)
        received += parse_sse(data)
    assert rounds == 2  # 52 events: 20 + 20 + 12
    assert [e["id"] for e in received] == [e["id"] for e in full]
    assert answer_text(received) == answer_text(full)


async def test_drop_times_limits_the_drops(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    server.faults = Faults(drop_after_events=0, drop_times=1)
    url = f"{server.base_url}/chat_sessions/chat_results"
    async with http.post(url, json=create_body(), headers=BEARER) as resp:
        assert resp.status == 200
        data, cut = await read_until_cut(resp)
        location = resp.headers["Content-Location"]
    assert cut and data == b""
    async with http.get(server.base_url + location, headers=BEARER) as resp:
        data, cut = await read_until_cut(resp)
    assert not cut and parse_sse(data)[-1]["event"] == "records_cited"


async def test_fail_first(server: ReferenceServer, http: aiohttp.ClientSession) -> None:
    server.faults = Faults(fail_first=2, fail_status=503, retry_after="2")
    url = f"{server.base_url}/rpc/chatSessions.create"
    for _ in range(2):
        async with http.post(url, json={"embed_origin": ORIGIN}, headers=TOKEN_HEADERS) as resp:
            assert_service_error(resp, await resp.json(), 503, "unavailable")
            assert resp.headers["Retry-After"] == "2"
    # /healthz is not an API request: it neither fails nor counts.
    server.faults = Faults(fail_first=1, fail_status=429)
    async with http.get(server.base_url + "/healthz") as resp:
        assert resp.status == 200
    status, body = await chat(http, server, create_body(stream=False))
    assert status == 429 and "detail" in body
    status, _ = await chat(http, server, create_body(stream=False))
    assert status == 200
    # Assigning faults again resets the counters.
    server.faults = Faults(fail_first=1, fail_status=500)
    async with http.post(url, json={"embed_origin": ORIGIN}, headers=TOKEN_HEADERS) as resp:
        body = await resp.json()
        assert_service_error(resp, body, 500, "unexpected")
        assert "Retry-After" not in resp.headers
    await mint(http, server)


async def test_event_delay_paces_the_stream(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    server.faults = Faults(event_delay=0.005)
    started = time.monotonic()
    _, events = await chat(http, server, create_body())
    # A lower bound only: pacing must happen, how fast the machine is does not matter.
    assert time.monotonic() - started >= 0.005 * (len(events) - 1)


async def test_pings_only_and_prompt_close(http: aiohttp.ClientSession) -> None:
    server = ReferenceServer(faults=Faults(pings_only=True, ping_interval=0.01, retry_ms=250))
    await server.start()
    try:
        async with http.post(
            f"{server.base_url}/chat_sessions/chat_results", json=create_body(), headers=BEARER
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/event-stream"
            assert await resp.content.readuntil(b"\n\n") == b"retry: 250\n\n"
            for _ in range(3):
                assert await resp.content.readuntil(b"\n\n") == b": ping\n\n"
            # Closing with the stream still open must not wait for it.
            with anyio.fail_after(3):
                await server.close()
            data, cut = await read_until_cut(resp)
            assert cut and set(data.split(b"\n\n")) <= {b": ping", b""}
    finally:
        await server.close()


async def test_client_leaving_ends_a_pinging_stream(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    server.faults = Faults(pings_only=True, ping_interval=0.01)
    async with http.post(
        f"{server.base_url}/chat_sessions/chat_results", json=create_body(), headers=BEARER
    ) as resp:
        await resp.content.readuntil(b"\n\n")
        resp.close()
    for _ in range(300):
        if not server._open_streams:
            break
        await anyio.sleep(0.01)
    else:
        pytest.fail("the stream kept running after its client left")


async def test_close_with_paced_stream_is_prompt(http: aiohttp.ClientSession) -> None:
    server = ReferenceServer(faults=Faults(event_delay=10))
    await server.start()
    async with http.post(
        f"{server.base_url}/chat_sessions/chat_results", json=create_body(), headers=BEARER
    ) as resp:
        await resp.content.readuntil(b"\n\n")
        with anyio.fail_after(3):
            await server.close()
        _, cut = await read_until_cut(resp)
        assert cut


async def test_malformed_after(server: ReferenceServer, http: aiohttp.ClientSession) -> None:
    server.faults = Faults(malformed_after=2)
    async with http.post(
        f"{server.base_url}/chat_sessions/chat_results", json=create_body(), headers=BEARER
    ) as resp:
        data, cut = await read_until_cut(resp)
    assert not cut
    blocks = data.split(b"\n\n")
    assert blocks[2] == b"event: message_chunk\ndata: {not json"
    assert blocks[3:] == [b""]
    assert [e["id"] for e in parse_sse(b"\n\n".join(blocks[:2]) + b"\n\n")] == ["1", "2"]


async def test_content_type_location_and_retry_faults(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    server.faults = Faults(wrong_content_type=True, no_content_location=True, retry_ms=1500)
    async with http.post(
        f"{server.base_url}/chat_sessions/chat_results", json=create_body(), headers=BEARER
    ) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        assert "Content-Location" not in resp.headers
        data = await resp.read()
    assert data.startswith(b"retry: 1500\n\nid: 1\nevent: message_chunk\n")
    server.faults = Faults()
    async with http.post(
        f"{server.base_url}/chat_sessions/chat_results", json=create_body(), headers=BEARER
    ) as resp:
        assert resp.content_type == "text/event-stream" and "Content-Location" in resp.headers
        assert (await resp.read()).startswith(b"id: 1\n")


async def test_faults_apply_to_resume_gets(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{server.base_url}/chat_sessions/chat_results", json=create_body(), headers=BEARER
    ) as resp:
        location = resp.headers["Content-Location"]
        await resp.read()
    server.faults = Faults(drop_after_events=3)
    async with http.get(server.base_url + location, headers=BEARER) as resp:
        data, cut = await read_until_cut(resp)
    assert cut and [e["id"] for e in parse_sse(data)] == ["1", "2", "3"]


# -- persistence, threads, CORS ------------------------------------------------------------


async def test_db_file_survives_a_restart(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    db = tmp_path / "chatsdk.db"
    async with ReferenceServer(db=db) as server:
        token = (await mint(http, server))["client_token"]
        revoked = (await mint(http, server))["client_token"]
        async with http.delete(
            f"{server.base_url}/rpc/chatSessions.revoke",
            params={"token": revoked},
            headers=TOKEN_HEADERS,
        ) as resp:
            assert resp.status == 204
        _, first = await chat(
            http, server, create_body(stream=False), headers=client_token_headers(token)
        )
        session_id = first["chat_session_id"]
    async with ReferenceServer(db=db) as server:
        # Same signing secret (read back from the db), same sessions, same revocations.
        status, follow = await chat(
            http,
            server,
            continue_body("tell me more", stream=False),
            session_id=session_id,
            headers=client_token_headers(token),
        )
        assert status == 200
        assert follow["message"]["content"].startswith("Continuing on Retries and backoff")
        status, _ = await chat(
            http, server, create_body(stream=False), headers=client_token_headers(revoked)
        )
        assert status == 401


def test_serve_in_thread() -> None:
    server = ReferenceServer()
    with server.serve_in_thread() as running:
        assert running is server
        with urllib.request.urlopen(server.base_url + "/healthz", timeout=5) as resp:
            assert resp.read() == b"ok"
        request = urllib.request.Request(
            server.base_url + "/chat_sessions/chat_results",
            data=json.dumps(create_body(stream=False)).encode(),
            headers={**BEARER, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert json.load(resp)["message"]["role"] == "assistant"
        # Faults set from this thread apply on the server's loop.
        server.faults = Faults(fail_first=1, fail_status=502)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 502
        info.value.close()
    with pytest.raises(RuntimeError):
        _ = server.base_url


def test_serve_in_thread_reports_start_errors() -> None:
    with ReferenceServer().serve_in_thread() as first:
        port = int(first.base_url.rsplit(":", 1)[1])
        with pytest.raises(OSError), ReferenceServer(port=port).serve_in_thread():
            pass


async def test_serve_forever_until_cancelled(http: aiohttp.ClientSession) -> None:
    server = ReferenceServer()
    await server.start()
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve_forever)
        async with http.get(server.base_url + "/healthz") as resp:
            assert resp.status == 200
        tg.cancel_scope.cancel()
    with pytest.raises(RuntimeError):
        _ = server.base_url


async def test_cors_for_browsers(server: ReferenceServer, http: aiohttp.ClientSession) -> None:
    async with http.options(
        f"{server.base_url}/chat_sessions/chat_results",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    ) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "Gram-Chat-Session" in resp.headers["Access-Control-Allow-Headers"]
    token = (await mint(http, server))["client_token"]
    async with http.post(
        f"{server.base_url}/chat_sessions/chat_results",
        json=create_body(),
        headers=client_token_headers(token, Origin=ORIGIN),
    ) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "Content-Location" in resp.headers["Access-Control-Expose-Headers"]
        await resp.read()


async def test_closing_is_prompt_while_a_client_has_sent_half_its_body() -> None:
    async with ReferenceServer() as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"model": "m"'
        )
        await writer.drain()
        await asyncio.sleep(0.2)  # the handler now waits for the rest of the body
        started = time.monotonic()
    assert time.monotonic() - started < 2.5
    writer.close()


@pytest.mark.parametrize(
    "fault",
    [
        {"retry_after": 5},  # failed inside the handler: the client saw a dropped connection
        {"event_delay": float("nan")},  # hung the stream
        {"event_delay": -1.0},
        {"drop_after_events": -1},
        {"fail_first": True},
        {"no_done": "yes"},
        {"fail_status": 42},
        {"ping_interval": 0},
    ],
)
def test_a_fault_set_wrong_is_refused_where_it_is_set(fault: dict[str, Any]) -> None:
    name = next(iter(fault))
    with pytest.raises(chatsdk.ValidationError, match=f"Faults.{name}"):
        Faults(**fault)
