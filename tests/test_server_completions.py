"""The reference server's Chat Completions wire (SPEC 1.8, 1.9), spoken in raw HTTP.

Stream shape field by field, ``[DONE]``, ids, ``Content-Location`` and resume, usage,
Inkeep's tool calls in fragments, the whole answer, every credential style accepted and
refused, 422 details, idempotency, every fault, and the paths of the real services.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from chatsdk.models import ChatCompletion, ChatCompletionChunk, ProvidedLinks
from chatsdk.server import Faults, ReferenceServer
from tests.test_server import (
    BEARER,
    KEY,
    ORIGIN,
    PROJECT,
    create_body,
    forge,
    mint,
    parse_sse,
    read_until_cut,
)

pytestmark = pytest.mark.anyio

QUESTION = "How do I retry?"
GRAM_KEY = {"Gram-Key": KEY, "Gram-Project": PROJECT}
INKEEP_TOOLS = [
    {"type": "function", "function": {"name": "provideLinks", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "provideAIAnnotations"}},
]
CHUNK_FIELDS = {"id", "object", "created", "model", "choices"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def body_of(question: str = QUESTION, *, stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model": "inkeep-qa-expert",
        "messages": [
            {"role": "system", "content": "Answer from the docs."},
            {"role": "user", "content": question},
        ],
        "stream": stream,
        **extra,
    }


async def complete(
    http: aiohttp.ClientSession,
    server: ReferenceServer,
    body: Any,
    *,
    headers: dict[str, str] | None = None,
    path: str = "/chat/completions",
) -> tuple[aiohttp.ClientResponse, Any]:
    """POST a completion; the response and its body: events, JSON or text."""
    async with http.post(server.base_url + path, json=body, headers=headers or BEARER) as resp:
        if resp.content_type == "text/event-stream":
            return resp, parse_sse(await resp.read())
        if resp.content_type == "application/json":
            return resp, await resp.json()
        return resp, await resp.text()


async def raw_stream(
    http: aiohttp.ClientSession, server: ReferenceServer, body: Any = None
) -> tuple[aiohttp.ClientResponse, bytes, bool]:
    """POST a streamed completion; the response, its body bytes and whether it was cut."""
    url = server.base_url + "/chat/completions"
    async with http.post(url, json=body or body_of(), headers=BEARER) as resp:
        data, cut = await read_until_cut(resp)
    return resp, data, cut


def chunks(events: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The JSON chunks of a stream (everything but ``[DONE]``)."""
    return [json.loads(e["data"]) for e in events if e["data"] != "[DONE]"]


def text_of(events: list[dict[str, str]]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks(events) if c["choices"]
    )


def joined_tool_calls(events: list[dict[str, str]]) -> dict[int, dict[str, Any]]:
    """Tool-call fragments joined per index, as a client must."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks(events):
        for choice in chunk["choices"]:
            for fragment in choice["delta"].get("tool_calls", []):
                call = calls.setdefault(fragment["index"], {"arguments": "", "fragments": 0})
                call["fragments"] += 1
                for key in ("id", "type"):
                    if key in fragment:
                        assert key not in call, "only the first fragment names the call"
                        call[key] = fragment[key]
                if "name" in fragment["function"]:
                    call["name"] = fragment["function"]["name"]
                call["arguments"] += fragment["function"].get("arguments", "")
    return calls


# -- the stream, field by field -------------------------------------------------------------


async def test_stream_wire_format(server: ReferenceServer, http: aiohttp.ClientSession) -> None:
    resp, events = await complete(http, server, body_of())
    assert resp.status == 200
    assert resp.content_type == "text/event-stream"
    assert resp.headers["Content-Location"].startswith("/chat_sessions/results/")
    # data-only events with consecutive ids, [DONE] last.
    assert all(set(e) == {"id", "data"} for e in events)
    assert [e["id"] for e in events] == [str(n) for n in range(1, len(events) + 1)]
    assert events[-1]["data"] == "[DONE]"
    parsed = chunks(events)
    assert len(parsed) == len(events) - 1
    first, *middle, last = parsed
    for chunk in parsed:
        assert set(chunk) == CHUNK_FIELDS  # no usage key without include_usage
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["id"] == first["id"] and chunk["id"].startswith("chatcmpl-")
        assert isinstance(chunk["created"], int) and abs(chunk["created"] - time.time()) < 60
        assert chunk["model"] == "inkeep-qa-expert"
        [choice] = chunk["choices"]
        assert set(choice) == {"index", "delta", "finish_reason"} and choice["index"] == 0
    assert first["choices"][0] == {
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "finish_reason": None,
    }
    assert middle and all(set(c["choices"][0]["delta"]) == {"content"} for c in middle)
    assert all(c["choices"][0]["finish_reason"] is None for c in middle)
    assert last["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert text_of(events).startswith("Retries cover connection failures")
    # The client's typed models read every chunk.
    for chunk in parsed:
        msgspec.convert(chunk, ChatCompletionChunk)


async def test_whole_answer_matches_the_stream(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    _, events = await complete(http, server, body_of())
    resp, whole = await complete(http, server, body_of(stream=False))
    assert resp.status == 200 and resp.content_type == "application/json"
    assert "Content-Location" not in resp.headers
    assert set(whole) == {"id", "object", "created", "model", "choices", "usage"}
    assert whole["object"] == "chat.completion" and whole["id"].startswith("chatcmpl-")
    assert isinstance(whole["created"], int) and whole["model"] == "inkeep-qa-expert"
    assert whole["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": text_of(events)},
            "finish_reason": "stop",
        }
    ]
    usage = whole["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    typed = msgspec.convert(whole, ChatCompletion)
    assert typed.choices[0].message.content == text_of(events)


async def test_answers_are_deterministic_and_read_the_whole_conversation(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    _, one = await complete(http, server, body_of(stream=False))
    _, two = await complete(http, server, body_of(stream=False))
    assert one["id"] == two["id"]
    assert one["choices"] == two["choices"]
    # No server-side history: the caller sends the earlier turns, and they count.
    follow = body_of("tell me more", stream=False)
    follow["messages"][1:1] = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": one["choices"][0]["message"]["content"]},
    ]
    _, more = await complete(http, server, follow)
    assert more["choices"][0]["message"]["content"].startswith("Continuing on Retries and backoff")
    # Tool messages and tool calls in the history are accepted (and carry no question).
    follow["messages"] += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "content": "done", "tool_call_id": "c1"},
    ]
    resp, again = await complete(http, server, follow)
    assert resp.status == 200
    assert again["choices"][0]["message"]["content"] == more["choices"][0]["message"]["content"]


async def test_usage_with_include_usage(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    body = body_of(stream_options={"include_usage": True})
    _, events = await complete(http, server, body)
    assert events[-1]["data"] == "[DONE]"
    *answer, usage_chunk = chunks(events)
    assert usage_chunk["choices"] == []
    assert usage_chunk["id"] == answer[0]["id"]
    usage = usage_chunk["usage"]
    assert set(usage) == {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
    }
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    # Deterministic counts: words of the prompt, and of the answer.
    assert usage["prompt_tokens"] == len(["Answer ", "from ", "the ", "docs."]) + len(
        ["How ", "do ", "I ", "retry?"]
    )
    assert usage["completion_tokens"] == len(text_of(events).split())
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert all(chunk["usage"] is None for chunk in answer)  # as OpenAI sends them
    _, whole = await complete(http, server, body_of(stream=False))
    assert whole["usage"] == usage


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    _, events = await complete(http, server, body_of(max_tokens=3, tools=INKEEP_TOOLS))
    assert len(text_of(events).split()) == 3
    assert chunks(events)[-1]["choices"][0]["finish_reason"] == "length"
    assert not joined_tool_calls(events)


async def test_unknown_fields_and_options_are_accepted(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    body = body_of(
        stream=False,
        temperature=0.2,
        response_format={"type": "text"},
        user="u-1",
        n=1,
        gram_metadata={"anything": [1, 2]},
    )
    resp, whole = await complete(http, server, body)
    assert resp.status == 200 and whole["choices"][0]["finish_reason"] == "stop"
    # A missing "stream" is false (OpenAI's default).
    del body["stream"]
    resp, whole = await complete(http, server, body)
    assert resp.status == 200 and whole["object"] == "chat.completion"


# -- Inkeep's tools: provideLinks and provideAIAnnotations ----------------------------------


async def test_inkeep_tool_calls_stream_in_fragments(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    _, events = await complete(http, server, body_of(tools=INKEEP_TOOLS, tool_choice="auto"))
    parsed = chunks(events)
    deltas = [c["choices"][0]["delta"] for c in parsed[:-1]]
    kinds = ["tool" if "tool_calls" in delta else "text" for delta in deltas]
    # Text first, then the tool calls; never both in one chunk.
    assert kinds == sorted(kinds, key=["text", "tool"].index) and "tool" in kinds
    assert all(
        set(d) == {"tool_calls"} for d, kind in zip(deltas, kinds, strict=True) if kind == "tool"
    )
    assert parsed[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    calls = joined_tool_calls(events)
    assert sorted(calls) == [0, 1]
    links_call, annotations_call = calls[0], calls[1]
    for call in calls.values():
        assert call["type"] == "function" and call["id"].startswith("call_")
        assert call["fragments"] >= 2  # clients must join them
    assert links_call["name"] == "provideLinks"
    assert annotations_call["name"] == "provideAIAnnotations"
    links = msgspec.json.decode(links_call["arguments"], type=ProvidedLinks).links
    assert [link.url for link in links] == ["https://chatsdk.dev/docs/retries"]
    [link] = links
    assert link.type == "documentation" and link.title == "Retries and backoff"
    assert link.label == "Retries and backoff"
    assert link.breadcrumbs == ["Docs", "Reliability"]
    assert set(json.loads(links_call["arguments"])["links"][0]) == {
        "label",
        "url",
        "title",
        "type",
        "breadcrumbs",
    }
    annotations = json.loads(annotations_call["arguments"])
    assert annotations == {"aiAnnotations": {"answerConfidence": "very_confident"}}


async def test_inkeep_tool_calls_whole(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    _, events = await complete(http, server, body_of(tools=INKEEP_TOOLS))
    _, whole = await complete(http, server, body_of(stream=False, tools=INKEEP_TOOLS))
    [choice] = whole["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == text_of(events)
    streamed = joined_tool_calls(events)
    # The same calls (ids are per request, like the completion's).
    assert [
        (c["type"], c["function"]["name"], c["function"]["arguments"])
        for c in choice["message"]["tool_calls"]
    ] == [(c["type"], c["name"], c["arguments"]) for c in streamed.values()]
    assert all(c["id"].startswith("call_") for c in choice["message"]["tool_calls"])


async def test_tool_choice_and_other_tools(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    # Two documents cited: two links, a lower confidence.
    question = "How do client tokens and retries work?"
    _, whole = await complete(http, server, body_of(question, stream=False, tools=INKEEP_TOOLS))
    calls = whole["choices"][0]["message"]["tool_calls"]
    assert len(json.loads(calls[0]["function"]["arguments"])["links"]) == 2
    assert json.loads(calls[1]["function"]["arguments"]) == {
        "aiAnnotations": {"answerConfidence": "somewhat_confident"}
    }
    # No documents: no links, and the annotation says so.
    _, whole = await complete(http, server, body_of("xyzzy", stream=False, tools=INKEEP_TOOLS))
    calls = whole["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["provideAIAnnotations"]
    assert "no_sources" in calls[0]["function"]["arguments"]
    # tool_choice "none" and a named choice.
    _, whole = await complete(
        http, server, body_of(stream=False, tools=INKEEP_TOOLS, tool_choice="none")
    )
    assert "tool_calls" not in whole["choices"][0]["message"]
    assert whole["choices"][0]["finish_reason"] == "stop"
    named = {"type": "function", "function": {"name": "provideAIAnnotations"}}
    _, whole = await complete(
        http, server, body_of(stream=False, tools=INKEEP_TOOLS, tool_choice=named)
    )
    calls = whole["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["provideAIAnnotations"]
    # Tools the responder does not know are never called.
    other = [{"type": "function", "function": {"name": "get_weather"}}]
    _, whole = await complete(http, server, body_of(stream=False, tools=other))
    assert whole["choices"][0]["finish_reason"] == "stop"


# -- resume and idempotency ------------------------------------------------------------------


async def test_resume_with_last_event_id(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    body = body_of(tools=INKEEP_TOOLS, stream_options={"include_usage": True})
    resp, full = await complete(http, server, body)
    location = resp.headers["Content-Location"]
    for after in (0, 1, 7, len(full) - 1, len(full)):
        headers = {**BEARER, "Last-Event-ID": str(after)} if after else BEARER
        async with http.get(server.base_url + location, headers=headers) as got:
            assert got.status == 200 and got.content_type == "text/event-stream"
            assert got.headers["Content-Location"] == location
            rest = parse_sse(await got.read())
        assert rest == full[after:]  # the events after the id, [DONE] included, once each
    # Every chat credential resumes, Gram's key style included on this wire.
    token = (await mint(http, server))["client_token"]
    for headers in (
        GRAM_KEY,
        {"Gram-Chat-Session": token, "Gram-Project": PROJECT},
        {"Authorization": f"Bearer {token}"},
    ):
        async with http.get(server.base_url + location, headers=headers) as got:
            assert got.status == 200
            assert parse_sse(await got.read()) == full
    async with http.get(server.base_url + location, headers={"Gram-Key": KEY}) as got:
        assert got.status == 401


async def test_drop_and_resume_gives_every_event_once(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    _, full = await complete(http, server, body_of(tools=INKEEP_TOOLS))
    server.faults = Faults(drop_after_events=10)
    resp, data, cut = await raw_stream(http, server, body_of(tools=INKEEP_TOOLS))
    location = resp.headers["Content-Location"]
    assert cut
    received = parse_sse(data)
    assert len(received) == 10
    while cut:
        headers = {**BEARER, "Last-Event-ID": received[-1]["id"]}
        async with http.get(server.base_url + location, headers=headers) as resp:
            data, cut = await read_until_cut(resp)
        received += parse_sse(data)
    assert [e["id"] for e in received] == [e["id"] for e in full]
    assert received[-1]["data"] == "[DONE]"
    assert text_of(received) == text_of(full)
    assert joined_tool_calls(received) == joined_tool_calls(full)


async def test_idempotency_key_replays_the_first_outcome(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    streamed = {**BEARER, "Idempotency-Key": "k-stream"}
    resp, first = await complete(http, server, body_of(), headers=streamed)
    location = resp.headers["Content-Location"]
    whole = {**BEARER, "Idempotency-Key": "k-whole"}
    _, first_whole = await complete(http, server, body_of(stream=False), headers=whole)
    await anyio.sleep(1.01)  # a new answer would have another "created"
    resp, again = await complete(http, server, body_of(), headers=streamed)
    assert resp.headers["Content-Location"] == location
    assert again == first
    # A retry after a drop carries the Last-Event-ID it saw: the rest, once.
    _, rest = await complete(http, server, body_of(), headers={**streamed, "Last-Event-ID": "5"})
    assert rest == first[5:]
    _, whole_again = await complete(http, server, body_of(stream=False), headers=whole)
    assert whole_again == first_whole
    resp, body = await complete(http, server, body_of("other", stream=False), headers=whole)
    assert resp.status == 409 and isinstance(body["detail"], str)


# -- credentials -------------------------------------------------------------------------------


async def test_every_credential_style_is_accepted(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    token = (await mint(http, server))["client_token"]
    styles = [
        BEARER,  # Inkeep: the API key as a bearer token
        GRAM_KEY,  # Gram: the API key
        {"Gram-Chat-Session": token, "Gram-Project": PROJECT},  # Gram: a client token
        {"Gram-Chat-Session": token, "Gram-Project": PROJECT, "Origin": ORIGIN},
        {"Authorization": f"Bearer {token}"},  # Gram's RFC: the client token as a bearer
        {"Authorization": f"bearer {token}", "Gram-Project": PROJECT, "Origin": ORIGIN},
    ]
    for headers in styles:
        for stream in (True, False):
            resp, body = await complete(http, server, body_of(stream=stream), headers=headers)
            assert resp.status == 200, (headers.keys(), body)


async def test_refused_credentials(server: ReferenceServer, http: aiohttp.ClientSession) -> None:
    token = (await mint(http, server))["client_token"]
    revoked = (await mint(http, server))["client_token"]
    async with http.delete(
        f"{server.base_url}/rpc/chatSessions.revoke", params={"token": revoked}, headers=GRAM_KEY
    ) as resp:
        assert resp.status == 204
    expired = forge(exp=int(time.time()) - 5)
    other_project = forge(project="other")
    cases: list[tuple[dict[str, str], int]] = [
        ({"X-Nothing": "1"}, 401),
        ({"Authorization": "Bearer wrong-key"}, 401),
        ({"Authorization": f"Basic {KEY}"}, 401),
        ({"Authorization": f"Bearer {KEY}", "Gram-Project": "other"}, 403),
        ({"Gram-Key": KEY}, 401),
        ({"Gram-Key": "wrong", "Gram-Project": PROJECT}, 401),
        ({"Gram-Key": KEY, "Gram-Project": "other"}, 403),
        ({"Gram-Chat-Session": token}, 401),
        ({"Gram-Chat-Session": token, "Gram-Project": "other"}, 403),
        ({"Gram-Chat-Session": revoked, "Gram-Project": PROJECT}, 401),
        ({"Authorization": f"Bearer {revoked}"}, 401),
        ({"Gram-Chat-Session": expired, "Gram-Project": PROJECT}, 401),
        ({"Authorization": f"Bearer {expired}"}, 401),
        ({"Gram-Chat-Session": other_project, "Gram-Project": PROJECT}, 403),
        ({"Authorization": f"Bearer {other_project}"}, 403),
        ({"Authorization": f"Bearer {token}", "Gram-Project": "other"}, 403),
        ({"Authorization": f"Bearer {token[:-3]}AAA"}, 401),
    ]
    for headers, status in cases:
        resp, body = await complete(http, server, body_of(), headers=headers)
        assert resp.status == status, headers
        assert isinstance(body["detail"], str)
        assert token not in body["detail"] and KEY not in body["detail"]
    # A wrong Origin is a plain-text 403 naming both origins, in either token style.
    for headers in (
        {"Gram-Chat-Session": token, "Gram-Project": PROJECT},
        {"Authorization": f"Bearer {token}"},
    ):
        resp, text = await complete(
            http, server, body_of(), headers={**headers, "Origin": "https://evil.example.net"}
        )
        assert resp.status == 403 and resp.content_type == "text/plain"
        assert text == f"Origin https://evil.example.net does not match audience claim: {ORIGIN}"


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "loc", "kind"),
    [
        ({"model": None}, ["body", "model"], "missing"),
        ({"model": ""}, ["body", "model"], "string_too_short"),
        ({"messages": None}, ["body", "messages"], "missing"),
        ({"messages": []}, ["body", "messages"], "too_short"),
        (
            {"messages": [{"role": "robot", "content": "x"}]},
            ["body", "messages", 0, "role"],
            "literal_error",
        ),
        ({"messages": [{"content": "x"}]}, ["body", "messages", 0, "role"], "missing"),
        (
            {"messages": [{"role": "user", "content": 5}]},
            ["body", "messages", 0, "content"],
            "string_type",
        ),
        ({"messages": [{"role": "system", "content": "x"}]}, ["body", "messages"], "value_error"),
        ({"stream": "yes"}, ["body", "stream"], "bool_type"),
        (
            {"stream_options": {"include_usage": 1}},
            ["body", "stream_options", "include_usage"],
            "bool_type",
        ),
        ({"temperature": 3}, ["body", "temperature"], "less_than_equal"),
        ({"max_tokens": 0}, ["body", "max_tokens"], "greater_than_equal"),
        ({"tools": [{"type": "function"}]}, ["body", "tools", 0, "function"], "missing"),
        ({"tool_choice": "sometimes"}, ["body", "tool_choice"], "literal_error"),
    ],
)
async def test_validation_detail(
    server: ReferenceServer,
    http: aiohttp.ClientSession,
    change: dict[str, Any],
    loc: list[Any],
    kind: str,
) -> None:
    body = body_of()
    for name, value in change.items():
        if value is None:
            del body[name]
        else:
            body[name] = value
    resp, answer = await complete(http, server, body)
    assert resp.status == 422, answer
    [item] = answer["detail"]
    assert set(item) == {"loc", "msg", "type"}
    assert (item["loc"], item["type"]) == (loc, kind), item


async def test_non_json_body_is_422(server: ReferenceServer, http: aiohttp.ClientSession) -> None:
    async with http.post(
        server.base_url + "/v1/chat/completions",
        data=b"{not json",
        headers={**BEARER, "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 422
        assert (await resp.json())["detail"][0]["type"] == "json_invalid"


# -- faults ---------------------------------------------------------------------------------------


async def test_fail_first_with_status_and_retry_after(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    server.faults = Faults(fail_first=1, fail_status=503, retry_after="2")
    resp, body = await complete(http, server, body_of())
    assert resp.status == 503 and resp.headers["Retry-After"] == "2"
    assert isinstance(body["detail"], str)
    resp, _ = await complete(http, server, body_of())
    assert resp.status == 200
    # Gram's free tier out of credits.
    server.faults = Faults(fail_first=1, fail_status=402)
    resp, body = await complete(http, server, body_of(), headers=GRAM_KEY)
    assert resp.status == 402 and body["detail"].startswith("insufficient_credits")


async def test_event_delay_paces_the_stream(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    server.faults = Faults(event_delay=0.005)
    started = time.monotonic()
    _, events = await complete(http, server, body_of())
    assert time.monotonic() - started >= 0.005 * (len(events) - 1)
    assert events[-1]["data"] == "[DONE]"


async def test_pings_only(server: ReferenceServer, http: aiohttp.ClientSession) -> None:
    server.faults = Faults(pings_only=True, ping_interval=0.01, retry_ms=250)
    async with http.post(
        server.base_url + "/chat/completions", json=body_of(), headers=BEARER
    ) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        assert await resp.content.readuntil(b"\n\n") == b"retry: 250\n\n"
        for _ in range(3):
            assert await resp.content.readuntil(b"\n\n") == b": ping\n\n"


async def test_malformed_after(server: ReferenceServer, http: aiohttp.ClientSession) -> None:
    server.faults = Faults(malformed_after=2)
    _, data, cut = await raw_stream(http, server)
    assert not cut
    blocks = data.split(b"\n\n")
    assert [e["id"] for e in parse_sse(b"\n\n".join(blocks[:2]) + b"\n\n")] == ["1", "2"]
    assert blocks[2:] == [b"data: {not json", b""]


async def test_error_chunk_after(server: ReferenceServer, http: aiohttp.ClientSession) -> None:
    server.faults = Faults(error_chunk_after=3)
    _, data, cut = await raw_stream(http, server)
    assert not cut
    events = parse_sse(data)
    assert [e.get("id") for e in events] == ["1", "2", "3", None]
    assert set(events[-1]) == {"data"}
    error = json.loads(events[-1]["data"])["error"]
    assert set(error) == {"message", "type", "code"}
    assert msgspec.convert(json.loads(events[-1]["data"]), ChatCompletionChunk).error == error
    # On chat_results, the same failure is an event the client does not know.
    async with http.post(
        server.base_url + "/chat_sessions/chat_results", json=create_body(), headers=BEARER
    ) as resp:
        events = parse_sse(await resp.read())
    assert events[-1]["event"] == "error" and "error" in json.loads(events[-1]["data"])
    assert len(events) == 4


async def test_no_done(server: ReferenceServer, http: aiohttp.ClientSession) -> None:
    _, full = await complete(http, server, body_of())
    server.faults = Faults(no_done=True)
    resp, data, cut = await raw_stream(http, server)
    location = resp.headers["Content-Location"]
    assert not cut  # a clean end, before the chunk that finishes the answer
    assert parse_sse(data) == full[:-2]
    assert '"finish_reason":"stop"' in full[-2]["data"]
    # The log still has it: a resume with the fault gone gets the rest.
    server.faults = Faults()
    headers = {**BEARER, "Last-Event-ID": full[-3]["id"]}
    async with http.get(server.base_url + location, headers=headers) as resp:
        assert parse_sse(await resp.read()) == full[-2:]


async def test_content_type_location_and_retry_faults(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    server.faults = Faults(wrong_content_type=True, no_content_location=True, retry_ms=1500)
    resp, data, _ = await raw_stream(http, server)
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert "Content-Location" not in resp.headers
    assert data.startswith(b"retry: 1500\n\nid: 1\ndata: {")
    assert data.endswith(b"data: [DONE]\n\n")


async def test_drop_after_zero_and_drop_times(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    server.faults = Faults(drop_after_events=0, drop_times=1)
    resp, data, cut = await raw_stream(http, server)
    location = resp.headers["Content-Location"]
    assert cut and data == b""
    async with http.get(server.base_url + location, headers=BEARER) as resp:
        data, cut = await read_until_cut(resp)
    assert not cut and parse_sse(data)[-1]["data"] == "[DONE]"


# -- the real services' paths, CORS ------------------------------------------------------------


async def test_every_path_of_the_real_services(
    server: ReferenceServer, http: aiohttp.ClientSession
) -> None:
    _, gram = await complete(http, server, body_of(stream=False), path="/chat/completions")
    _, inkeep = await complete(http, server, body_of(stream=False), path="/v1/chat/completions")
    assert gram["choices"] == inkeep["choices"]
    resp, events = await complete(http, server, body_of(), path="/v1/chat/completions")
    assert resp.status == 200 and events[-1]["data"] == "[DONE]"
    # Inkeep v0: chat_results under /v0, the session continued there too.
    async with http.post(
        server.base_url + "/v0/chat_sessions/chat_results",
        json=create_body(stream=False),
        headers=BEARER,
    ) as resp:
        assert resp.status == 200
        session_id = (await resp.json())["chat_session_id"]
    async with http.post(
        f"{server.base_url}/v0/chat_sessions/{session_id}/chat_results",
        json={"integration_id": "docs", "message": {"role": "user", "content": "more"}},
        headers=BEARER,
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["message"]["content"].startswith("Continuing on")
    async with http.post(
        server.base_url + "/v0/chat_sessions/chat_results", json=create_body(), headers=BEARER
    ) as resp:
        location = resp.headers["Content-Location"]
        await resp.read()
    assert location.startswith("/chat_sessions/results/")  # one resume route for every path
    async with http.get(server.base_url + location, headers=BEARER) as resp:
        assert resp.status == 200


async def test_cors_for_browsers(server: ReferenceServer, http: aiohttp.ClientSession) -> None:
    for path in ("/chat/completions", "/v1/chat/completions"):
        async with http.options(
            server.base_url + path,
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        ) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
            allowed = resp.headers["Access-Control-Allow-Headers"]
            assert "Gram-Chat-Session" in allowed and "Authorization" in allowed
    token = (await mint(http, server))["client_token"]
    headers = {"Gram-Chat-Session": token, "Gram-Project": PROJECT, "Origin": ORIGIN}
    resp, _ = await complete(http, server, body_of(), headers=headers)
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Content-Location" in resp.headers["Access-Control-Expose-Headers"]
