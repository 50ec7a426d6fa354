"""The Chat Completions client (SPEC 1.8) against scripted bodies on a loopback server.

What is sent (the request JSON field by field, the URL, the auth headers) is checked on
the :class:`ScriptedServer`'s record; what comes back is checked through the typed
chunks, ``text_stream`` and the assembled :class:`chatsdk.ChatCompletionResult`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec
import pytest

import chatsdk
from chatsdk.models import Function, FunctionDefinition
from chatsdk.server import Faults, ReferenceServer
from tests import support
from tests.scripted import Reply, ScriptedServer
from tests.support import KEY as SUPPORT_KEY
from tests.support import PROJECT, reference_server

pytestmark = pytest.mark.anyio

KEY = "completions-test-api-key-1234"
TOKEN = "completions-test-client-token-1234"
SSE = "text/event-stream"
DONE = b"data: [DONE]\n\n"


@pytest.fixture(autouse=True)
def _no_chatsdk_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CHATSDK_"):
            monkeypatch.delenv(name)


def chunk(
    content: str | None = None,
    *,
    role: str | None = None,
    finish: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    **delta_extra: Any,
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    delta.update(delta_extra)
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1718000000,
        "model": "gpt-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def events(*chunks: dict[str, Any] | bytes, done: bool = True) -> bytes:
    """``data: {chunk}`` events (bytes pass through as they are), then ``data: [DONE]``."""
    out = [
        c if isinstance(c, bytes) else b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks
    ]
    return b"".join(out) + (DONE if done else b"")


def tool_fragment(
    index: int | None,
    *,
    id: str | None = None,
    name: str | None = None,
    arguments: str | None = None,
) -> dict[str, Any]:
    fragment: dict[str, Any] = {}
    if index is not None:
        fragment["index"] = index
    if id is not None:
        fragment["id"] = id
        fragment["type"] = "function"
    function: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    fragment["function"] = function
    return fragment


def sse_reply(body: bytes, **kw: Any) -> Reply:
    return Reply(body=body, content_type=kw.pop("content_type", SSE), **kw)


def client_for(url: str, **kw: Any) -> chatsdk.ChatClient:
    kw.setdefault("retries", chatsdk.RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.05))
    kw.setdefault("timeout", chatsdk.Timeout(connect=2, read=2, idle=2, total=10))
    if "session_token" not in kw:
        kw.setdefault("api_key", KEY)
    return chatsdk.ChatClient(base_url=url, **kw)


async def run(
    replies: Sequence[Reply], **create: Any
) -> tuple[chatsdk.CompletionStream, list[Any], chatsdk.ChatCompletionResult, ScriptedServer]:
    """One call against scripted replies: the stream, its events, its result, the server."""
    create.setdefault("model", "gpt-test")
    create.setdefault("messages", "q")
    async with ScriptedServer(replies) as srv:
        async with client_for(srv.url) as client:
            stream = client.chat.completions.create(**create)
            got: list[Any] = []
            async with asyncio.timeout(10):
                async for event in stream:
                    got.append(event)
                result = await stream
    return stream, got, result, srv


def texts(got: Sequence[Any]) -> list[str]:
    return [
        c.delta.content
        for e in got
        if isinstance(e, chatsdk.ChatCompletionChunk)
        for c in e.choices
        if c.delta.content
    ]


def request_json(srv: ScriptedServer, n: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(srv.seen[n].body)
    return body


ANSWER = events(
    chunk(role="assistant", content=""),
    chunk("Hel"),
    chunk("lo"),
    chunk(" world"),
    chunk(finish="stop"),
)


# == the answer =========================================================================


async def test_text_is_assembled_into_the_result_and_an_assistant_message() -> None:
    _, got, result, _ = await run([sse_reply(ANSWER)])
    assert all(isinstance(e, chatsdk.ChatCompletionChunk) for e in got)
    assert len(got) == 5
    assert texts(got) == ["Hel", "lo", " world"]
    assert result.text == "Hello world"
    assert result.message.role == "assistant"
    assert result.message.content == "Hello world"
    assert result.message.tool_calls is None
    assert result.finish_reason == "stop"
    assert result.id == "chatcmpl-1" and result.model == "gpt-test"
    assert result.tool_calls == []


async def test_text_stream_gives_the_text_pieces() -> None:
    async with ScriptedServer([sse_reply(ANSWER)]) as srv:
        async with client_for(srv.url) as client:
            stream = client.chat.completions.create(model="gpt-test", messages="q")
            async with asyncio.timeout(10):
                pieces = [piece async for piece in stream.text_stream]
                result = await stream
    assert pieces == ["Hel", "lo", " world"]
    assert result.text == "Hello world"


async def test_done_ends_the_stream_and_what_follows_is_ignored() -> None:
    body = ANSWER + events(chunk("LATE"), done=False) + b"data: {not json\n\n" + b"\xff\xfe"
    _, got, result, _ = await run([sse_reply(body)])
    assert result.text == "Hello world"
    assert "LATE" not in texts(got)


@pytest.mark.parametrize("done", [b"data:  [DONE] \n\n", b"data:[DONE]\t\n\n"])
async def test_done_with_stray_spaces_ends_the_stream(done: bytes) -> None:
    body = events(chunk("Hel"), chunk("lo", finish="stop"), done=False) + done
    _, got, result, _ = await run([sse_reply(body + b"data: {not json\n\n")])
    assert result.text == "Hello" and len(got) == 2


async def test_done_ends_the_stream_without_waiting_for_the_body_to_end() -> None:
    # The server sends [DONE] and then holds the connection: the call must not wait.
    late = events(chunk("LATE"), done=False)
    reply = Reply(pieces=[ANSWER, late], delay=3.0, content_type=SSE)
    began = time.monotonic()
    _, got, result, _ = await run([reply])
    assert time.monotonic() - began < 2
    assert result.text == "Hello world"
    assert "LATE" not in texts(got)


async def test_a_body_ending_without_done_before_the_finish_is_a_stream_error() -> None:
    body = events(chunk("Hel"), chunk("lo"), done=False)
    async with ScriptedServer([sse_reply(body)]) as srv:
        async with client_for(srv.url) as client:
            stream = client.chat.completions.create(model="gpt-test", messages="q")
            got: list[Any] = []
            with pytest.raises(chatsdk.StreamError):
                async with asyncio.timeout(10):
                    async for event in stream:
                        got.append(event)
            with pytest.raises(chatsdk.StreamError):
                await stream
    assert texts(got) == ["Hel", "lo"]
    assert len(srv.seen) == 1


async def test_a_body_ending_without_done_resumes_from_content_location() -> None:
    location = {"Content-Location": "/chat/completions/results/r1/events"}
    first_body = (
        b"id: 1\n" + events(chunk("Hel"), done=False) + b"id: 2\n" + events(chunk("lo"), done=False)
    )
    rest = b"id: 3\n" + events(chunk(" world", finish="stop"))
    replies = [sse_reply(first_body, headers=location), sse_reply(rest, headers=location)]
    stream, got, result, srv = await run(replies)
    assert result.text == "Hello world"
    assert texts(got) == ["Hel", "lo", " world"]
    assert stream.resumes == 1
    assert [s.method for s in srv.seen] == ["POST", "GET"]
    assert srv.seen[1].path == "/chat/completions/results/r1/events"
    assert srv.seen[1].headers.get("Last-Event-ID") == "2"
    assert srv.seen[1].body == b""


ERROR = {"message": "boom", "type": "x"}


@pytest.mark.parametrize("cut", [False, True], ids=["one piece", "split"])
@pytest.mark.parametrize(
    "error_chunk",
    [{"error": ERROR}, {**chunk(""), "error": ERROR}],
    ids=["error alone", "error beside a choice"],
)
async def test_an_error_chunk_mid_stream_is_an_api_error_after_the_chunks_before_it(
    cut: bool, error_chunk: dict[str, Any]
) -> None:
    before = events(chunk("a"), chunk("b"), done=False)
    error = events(error_chunk, done=False)
    after = events(chunk("c"), chunk(finish="stop"))
    reply = (
        Reply(pieces=[before, error, after], delay=0.05, content_type=SSE)
        if cut
        else sse_reply(before + error + after)
    )
    async with ScriptedServer([reply]) as srv:
        async with client_for(srv.url) as client:
            stream = client.chat.completions.create(model="gpt-test", messages="q")
            got: list[Any] = []
            with pytest.raises(chatsdk.APIError) as info:
                async with asyncio.timeout(10):
                    async for event in stream:
                        got.append(event)
    assert texts(got) == ["a", "b"]
    assert not isinstance(info.value, chatsdk.APIStatusError)
    assert info.value.body == ERROR
    assert "boom" in str(info.value)


@pytest.mark.parametrize(
    "data", [{"error": ERROR}, ERROR], ids=["error wrapped", "bare error object"]
)
async def test_an_error_event_mid_stream_is_an_api_error(data: dict[str, Any]) -> None:
    body = (
        events(chunk("a"), done=False)
        + b"event: error\ndata: "
        + json.dumps(data).encode()
        + b"\n\n"
        + events(chunk("b"), chunk(finish="stop"))
    )
    async with ScriptedServer([sse_reply(body)]) as srv:
        async with client_for(srv.url) as client:
            got: list[Any] = []
            with pytest.raises(chatsdk.APIError) as info:
                async with asyncio.timeout(10):
                    async for event in client.chat.completions.create(model="m", messages="q"):
                        got.append(event)
    assert texts(got) == ["a"]
    assert info.value.body == ERROR
    assert "boom" in str(info.value)


# == tool calls =========================================================================


async def test_interleaved_tool_call_fragments_are_joined_per_index() -> None:
    body = events(
        chunk(role="assistant", tool_calls=[tool_fragment(0, id="call_a", name="get_weather")]),
        chunk(tool_calls=[tool_fragment(1, id="call_b", name="get_time", arguments='{"tz"')]),
        chunk(tool_calls=[tool_fragment(0, arguments='{"city": ')]),
        chunk(tool_calls=[tool_fragment(1, arguments=': "UTC"}')]),
        chunk(tool_calls=[tool_fragment(0, arguments='"Paris", "unit": "C"}')]),
        chunk(finish="tool_calls"),
    )
    _, _, result, _ = await run([sse_reply(body)], tools=[WEATHER_TOOL])
    assert result.finish_reason == "tool_calls"
    calls = result.tool_calls
    assert [c.id for c in calls] == ["call_a", "call_b"]
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert [c.type for c in calls] == ["function", "function"]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris", "unit": "C"}
    assert json.loads(calls[1].function.arguments) == {"tz": "UTC"}
    assert result.message.role == "assistant"
    assert result.message.tool_calls == calls
    assert result.text == ""


GEMINI_SIGNATURE = {"google": {"thought_signature": "c2lnbmF0dXJl"}}


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
async def test_a_calls_extra_content_is_kept_and_sent_back_with_it(stream: bool) -> None:
    # Gemini 3 attaches a thought signature to each call and refuses (400) a next turn
    # whose call lacks it: the field was dropped, so no tool loop could go on.
    signed = {
        **tool_fragment(0, id="call_a", name="get_weather", arguments='{"city": "Paris"}'),
        "extra_content": GEMINI_SIGNATURE,
    }
    plain = tool_fragment(1, id="call_b", name="get_time", arguments="{}")
    if stream:
        reply = sse_reply(
            events(
                chunk(tool_calls=[signed]), chunk(tool_calls=[plain]), chunk(finish="tool_calls")
            )
        )
    else:
        calls = [{k: v for k, v in c.items() if k != "index"} for c in (signed, plain)]
        message = {"role": "assistant", "content": None, "tool_calls": calls}
        reply = Reply(
            body=json.dumps(
                {
                    **COMPLETION,
                    "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                }
            )
        )
    async with ScriptedServer([reply, sse_reply(ANSWER)]) as srv:
        async with client_for(srv.url) as client:
            result = await client.chat.completions.create(model="m", messages="q", stream=stream)
            assert [c.extra_content for c in result.tool_calls] == [GEMINI_SIGNATURE, msgspec.UNSET]
            history: list[Any] = [{"role": "user", "content": "q"}, result.message]
            history += [
                {"role": "tool", "tool_call_id": c.id, "content": "ok"} for c in result.tool_calls
            ]
            await client.chat.completions.create(model="m", messages=history)
    sent = json.loads(srv.seen[1].body)["messages"][1]["tool_calls"]
    assert sent[0]["extra_content"] == GEMINI_SIGNATURE
    assert "extra_content" not in sent[1]  # none given, none sent (not null)
    assert sent[1]["type"] == "function"


async def test_tool_call_fragments_without_index_are_joined() -> None:
    body = events(
        chunk(tool_calls=[tool_fragment(None, id="call_a", name="one", arguments='{"a"')]),
        chunk(tool_calls=[tool_fragment(None, arguments=": 1}")]),
        chunk(tool_calls=[tool_fragment(None, id="call_b", name="two", arguments="{")]),
        chunk(tool_calls=[tool_fragment(None, arguments='"b": 2}')]),
        chunk(finish="tool_calls"),
    )
    _, _, result, _ = await run([sse_reply(body)])
    calls = result.tool_calls
    assert [(c.id, c.function.name) for c in calls] == [("call_a", "one"), ("call_b", "two")]
    assert [json.loads(c.function.arguments) for c in calls] == [{"a": 1}, {"b": 2}]
    assert result.finish_reason == "tool_calls"


@pytest.mark.parametrize("index", [0, None], ids=["every call at index 0", "no index"])
async def test_tool_calls_are_told_apart_by_id_when_the_index_does_not(index: int | None) -> None:
    # Some servers number every call 0 (or give none); a new id is a new call, and a
    # fragment that repeats its call's id stays in that call.
    body = events(
        chunk(tool_calls=[tool_fragment(index, id="call_a", name="one", arguments='{"a"')]),
        chunk(tool_calls=[tool_fragment(index, id="call_a", arguments=": ")]),
        chunk(tool_calls=[tool_fragment(index, id="call_b", name="two", arguments="{")]),
        chunk(tool_calls=[tool_fragment(index, id="call_a", arguments="1}")]),  # a again
        chunk(tool_calls=[tool_fragment(index, id="call_b", arguments='"b": ')]),
        chunk(tool_calls=[tool_fragment(index, arguments="2}")]),  # no id: the last call's
        chunk(finish="tool_calls"),
    )
    _, _, result, _ = await run([sse_reply(body)])
    calls = result.tool_calls
    assert [(c.id, c.function.name) for c in calls] == [("call_a", "one"), ("call_b", "two")]
    assert [json.loads(c.function.arguments) for c in calls] == [{"a": 1}, {"b": 2}]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


# == usage, reasoning, lenient chunks ===================================================


async def test_include_usage_is_sent_and_the_usage_chunk_fills_result_usage() -> None:
    usage_chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1718000000,
        "model": "gpt-test",
        "choices": [],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        "gram_metadata": {"context_window": 128000},
    }
    body = events(chunk("Hi"), chunk(finish="stop"), usage_chunk)
    _, got, result, srv = await run([sse_reply(body)], stream_options={"include_usage": True})
    assert request_json(srv)["stream_options"] == {"include_usage": True}
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (11, 7)
    assert result.usage.total_tokens == 18
    assert result.text == "Hi"
    assert got[-1].choices == []


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_is_kept_apart_from_the_text(field: str) -> None:
    body = events(
        chunk(role="assistant", **{field: "Let me "}),
        chunk(**{field: "think."}),
        chunk("The answer"),
        chunk(" is 4."),
        chunk(finish="stop"),
    )
    async with ScriptedServer([sse_reply(body)]) as srv:
        async with client_for(srv.url) as client:
            stream = client.chat.completions.create(model="m", messages="q")
            async with asyncio.timeout(10):
                pieces = [p async for p in stream.text_stream]
                result = await stream
    assert result.reasoning == "Let me think."
    assert result.text == "The answer is 4."
    assert pieces == ["The answer", " is 4."]


async def test_chunks_in_every_shape_servers_send_are_accepted() -> None:
    body = events(
        {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": []},
        {"id": "x", "choices": [{"delta": {"role": "assistant", "content": "A"}}]},  # no index
        {"id": "x", "created": 1718000000.25, "choices": [{"index": 0, "delta": {"content": "B"}}]},
        {"id": "x", "choices": [{"index": 0}]},  # no delta
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "system_fingerprint": "fp",
            "service_tier": "default",
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": "C", "function_call": None, "audio": {"x": 1}},
                    "logprobs": None,
                    "finish_reason": None,
                    "native_finish_reason": None,
                }
            ],
            "usage": None,
            "provider": "some-router",
        },
        {"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    )
    _, got, result, _ = await run([sse_reply(body)])
    assert len(got) == 6
    assert result.text == "ABC"
    # OpenAI's own fields are kept, as openai-python keeps them.
    assert (got[4].system_fingerprint, got[4].service_tier) == ("fp", "default")
    assert (got[0].system_fingerprint, got[0].service_tier) == (None, None)
    assert (result.system_fingerprint, result.service_tier) == ("fp", "default")
    assert result.finish_reason == "stop"


def _two_choices(
    first: str | None, second: str | None, finish: str | None = None
) -> dict[str, Any]:
    # A chunk of an n=2 request: choice 1 listed before choice 0, as servers may.
    base = chunk()
    base["choices"] = [
        {"index": 1, "delta": {"content": second} if second else {}, "finish_reason": finish},
        {"index": 0, "delta": {"content": first} if first else {}, "finish_reason": finish},
    ]
    return base


MIXED = [
    chunk(role="assistant", content=""),
    chunk("plain "),
    chunk(reasoning_content="mulling "),
    chunk("text "),
    _two_choices("zero ", "one "),
    chunk(tool_calls=[tool_fragment(0, id="call_1", name="lookup", arguments='{"q":')]),
    chunk("more "),
    chunk(tool_calls=[tool_fragment(0, arguments='"x"}')]),
    {**chunk(), "choices": [{"index": 1, "delta": {"content": "ONE "}}]},  # one choice, not 0
    chunk("end"),
    _two_choices(None, "ONE", finish="stop"),
]


@pytest.mark.parametrize("cut", ["one write", "one chunk per write", "two writes"])
async def test_the_result_is_the_same_however_the_chunks_are_batched(cut: str) -> None:
    # The stream folds whatever one read decodes at once: text-only batches one way,
    # others field by field. Which way must not change the result.
    # Usage on a chunk that has a choice too, as some servers send it.
    usage = {**chunk("!"), "usage": {"prompt_tokens": 3, "completion_tokens": 9}}
    body = events(*MIXED, usage)
    each = [piece + b"\n\n" for piece in body.split(b"\n\n") if piece]
    if cut == "one write":
        pieces = [body]
    elif cut == "one chunk per write":
        pieces = each
    else:  # the first two (text alone) in one write, the rest in another
        pieces = [b"".join(each[:2]), b"".join(each[2:])]
    _, got, result, _ = await run([sse_reply(body, pieces=pieces, delay=0.01)])
    assert len(got) == len(MIXED) + 1
    assert result.text == "plain text zero more end!"
    assert result.reasoning == "mulling "
    assert [(c.id, c.function.name, c.function.arguments) for c in result.tool_calls] == [
        ("call_1", "lookup", '{"q":"x"}')
    ]
    assert result.finish_reason == "stop"
    assert result.usage is not None and result.usage.completion_tokens == 9
    assert (result.id, result.model) == ("chatcmpl-1", "gpt-test")


@pytest.mark.parametrize("pace", ["one write", "one event per write"])
async def test_events_with_a_name_are_read_as_chunks_or_yielded_never_dropped(pace: str) -> None:
    # The wire's events have no name: one that has and holds a chunk is read as a chunk,
    # any other is yielded as an UnknownEvent; none vanishes.
    def named(name: str, data: dict[str, Any] | str) -> bytes:
        payload = data if isinstance(data, str) else json.dumps(data)
        return f"event: {name}\ndata: {payload}\n\n".encode()

    body = events(
        chunk("Part one. "),
        named("delta", chunk("Part two. ")),
        named("ping", {}),
        named("ping", "keep-alive"),
        named("completion.chunk", chunk("Part three.")),
        named("metadata", {"usage": {"prompt_tokens": 1, "completion_tokens": 3}, "choices": []}),
        chunk(finish="stop"),
    )
    pieces = [body] if pace == "one write" else [e + b"\n\n" for e in body.split(b"\n\n") if e]
    _, got, result, _ = await run([sse_reply(body, pieces=pieces, delay=0.01)])
    assert result.text == "Part one. Part two. Part three."
    assert result.usage is not None and result.usage.completion_tokens == 3
    unknown = [(e.event, e.data) for e in got if isinstance(e, chatsdk.UnknownEvent)]
    assert unknown == [("ping", "{}"), ("ping", "keep-alive")]
    assert len(got) == 7


async def test_an_error_chunk_under_a_name_is_an_api_error() -> None:
    body = events(
        chunk("a"), b"event: oops\ndata: " + json.dumps({"error": ERROR}).encode() + b"\n\n"
    )
    with pytest.raises(chatsdk.APIError, match="boom"):
        await run([sse_reply(body)])


# == Inkeep's citation tools ============================================================


async def test_inkeep_tools_are_sent_and_their_calls_become_typed_events() -> None:
    links_args = json.dumps(
        {
            "links": [
                {
                    "label": "Retries",
                    "url": "https://docs.example.com/retries",
                    "title": "Retrying",
                    "type": "documentation",
                    "breadcrumbs": ["Guides", "Retries"],
                },
                {"url": "https://example.com/x", "type": "brand_new_record_type"},
            ]
        }
    )
    annotations_args = json.dumps({"aiAnnotations": {"answerConfidence": "very_confident"}})
    body = events(
        chunk("Use ", role="assistant"),
        chunk("retries."),
        chunk(tool_calls=[tool_fragment(0, id="call_l", name="provideLinks", arguments="")]),
        chunk(tool_calls=[tool_fragment(0, arguments=links_args[:17])]),
        chunk(tool_calls=[tool_fragment(1, id="call_n", name="provideAIAnnotations")]),
        chunk(tool_calls=[tool_fragment(0, arguments=links_args[17:60])]),
        chunk(tool_calls=[tool_fragment(1, arguments=annotations_args[:10])]),
        chunk(tool_calls=[tool_fragment(0, arguments=links_args[60:])]),
        chunk(tool_calls=[tool_fragment(1, arguments=annotations_args[10:])]),
        chunk(finish="stop"),
    )
    _, got, result, srv = await run(
        [sse_reply(body)],
        model="inkeep-qa-expert",
        tools=chatsdk.INKEEP_TOOLS,
        tool_choice="auto",
    )
    sent = request_json(srv)
    assert [t["type"] for t in sent["tools"]] == ["function", "function"]
    assert [t["function"]["name"] for t in sent["tools"]] == [
        "provideLinks",
        "provideAIAnnotations",
    ]
    assert all("parameters" in t["function"] for t in sent["tools"])
    assert sent["tool_choice"] == "auto"

    provided = [e for e in got if isinstance(e, chatsdk.ProvidedLinks)]
    annotations = [e for e in got if isinstance(e, chatsdk.AIAnnotations)]
    assert len(provided) == 1 and len(annotations) == 1
    links = provided[0].links
    assert all(isinstance(link, chatsdk.Link) for link in links)
    assert links[0] == chatsdk.Link(
        url="https://docs.example.com/retries",
        label="Retries",
        title="Retrying",
        type="documentation",
        breadcrumbs=["Guides", "Retries"],
    )
    assert links[1].type == "brand_new_record_type"
    assert annotations[0].answer_confidence == "very_confident"
    assert result.links == links
    assert result.answer_confidence == "very_confident"
    assert result.text == "Use retries."


@pytest.mark.parametrize("pace", ["one write", "one chunk per write"])
async def test_inkeep_events_come_right_after_the_finish_and_every_call_counts(pace: str) -> None:
    def links_call(index: int, url: str) -> dict[str, Any]:
        arguments = json.dumps({"links": [{"url": url}]})
        return chunk(
            tool_calls=[
                tool_fragment(index, id=f"c{index}", name="provideLinks", arguments=arguments)
            ]
        )

    usage = {**chunk(), "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    body = events(
        chunk("Hi."),
        links_call(0, "https://x.dev/a"),
        links_call(1, "https://x.dev/b"),
        chunk(finish="stop"),
        usage,
    )
    pieces = [body] if pace == "one write" else [e + b"\n\n" for e in body.split(b"\n\n") if e]
    _, got, result, _ = await run(
        [sse_reply(body, pieces=pieces, delay=0.01)],
        model="inkeep-qa-expert",
        tools=chatsdk.INKEEP_TOOLS,
        tool_choice="auto",
    )
    kinds = [
        type(e).__name__
        if not isinstance(e, chatsdk.ChatCompletionChunk)
        else "usage"
        if e.usage
        else "finish"
        if e.choices[0].finish_reason
        else "chunk"
        for e in got
    ]
    assert kinds == ["chunk"] * 3 + ["finish", "ProvidedLinks", "ProvidedLinks", "usage"]
    urls = [link.url for e in got if isinstance(e, chatsdk.ProvidedLinks) for link in e.links]
    assert urls == ["https://x.dev/a", "https://x.dev/b"]
    assert [link.url for link in result.links] == urls


@pytest.mark.parametrize(
    ("links_args", "annotations_args"),
    [
        ('{"links": [{"url": "https://x.dev/a"}', '{"aiAnnotations": '),  # cut JSON
        ('{"urls": ["https://x.dev/a"]}', '{"answer_confidence": "very_confident"}'),  # shape
        ('{"links": "https://x.dev/a"}', '{"aiAnnotations": {"answerConfidence": 3}}'),  # types
    ],
    ids=["malformed JSON", "another shape", "wrong types"],
)
async def test_inkeep_arguments_that_are_not_the_json_expected_are_logged_and_kept(
    links_args: str, annotations_args: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = events(
        chunk("Hi."),
        chunk(tool_calls=[tool_fragment(0, id="c0", name="provideLinks", arguments=links_args)]),
        chunk(
            tool_calls=[
                tool_fragment(1, id="c1", name="provideAIAnnotations", arguments=annotations_args)
            ]
        ),
        chunk(finish="stop"),
    )
    with caplog.at_level("WARNING", logger="chatsdk"):
        _, got, result, _ = await run(
            [sse_reply(body)], model="inkeep-qa-expert", tools=chatsdk.INKEEP_TOOLS
        )
    assert not [e for e in got if isinstance(e, chatsdk.ProvidedLinks | chatsdk.AIAnnotations)]
    assert result.links == [] and result.answer_confidence is None
    assert [(c.id, c.function.arguments) for c in result.tool_calls] == [
        ("c0", links_args),
        ("c1", annotations_args),
    ]
    warned = [r.getMessage() for r in caplog.records if "tool call's arguments" in r.getMessage()]
    assert len(warned) == 2
    assert result.text == "Hi."


# == stream=False, and bodies decoded by what they are ==================================

COMPLETION = {
    "id": "chatcmpl-9",
    "object": "chat.completion",
    "created": 1718000000,
    "model": "gpt-test",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Whole answer.",
                "tool_calls": [
                    {
                        "id": "call_w",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


@pytest.mark.parametrize("content_type", ["application/json", SSE])
async def test_a_whole_json_answer_is_read_whatever_its_label(content_type: str) -> None:
    reply = Reply(body=json.dumps(COMPLETION), content_type=content_type)
    _, _, result, srv = await run([reply], stream=False)
    assert request_json(srv)["stream"] is False
    assert result.text == "Whole answer."
    assert result.finish_reason == "stop"
    assert result.id == "chatcmpl-9"
    assert result.usage is not None and result.usage.total_tokens == 5
    assert [(c.id, c.function.name) for c in result.tool_calls] == [("call_w", "get_weather")]
    assert json.loads(result.tool_calls[0].function.arguments) == {"city": "Oslo"}


@pytest.mark.parametrize("stream", [False, True], ids=["no-stream", "stream"])
async def test_a_whole_json_error_answer_with_status_200_is_an_api_error(stream: bool) -> None:
    reply = Reply(body=json.dumps({"error": ERROR}))
    async with ScriptedServer([reply]) as srv:
        async with client_for(srv.url) as client:
            with pytest.raises(chatsdk.APIError) as info:
                async with asyncio.timeout(10):
                    await client.chat.completions.create(model="m", messages="q", stream=stream)
    assert info.value.body == ERROR
    assert "boom" in str(info.value)


async def test_an_event_stream_labelled_json_is_read_as_a_stream() -> None:
    _, got, result, _ = await run([Reply(body=ANSWER, content_type="application/json")])
    assert result.text == "Hello world"
    assert texts(got) == ["Hel", "lo", " world"]


async def test_a_whole_json_answer_to_a_streaming_request_is_read() -> None:
    _, _, result, srv = await run([Reply(body=json.dumps(COMPLETION))])
    assert request_json(srv)["stream"] is True
    assert result.text == "Whole answer."


# == the request ========================================================================


def no_nulls(value: Any, where: str = "$") -> None:
    if value is None:
        raise AssertionError(f"null sent at {where}")
    if isinstance(value, dict):
        for k, v in value.items():
            no_nulls(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            no_nulls(v, f"{where}[{i}]")


async def test_the_request_json_follows_the_spec_field_by_field() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        chatsdk.ChatCompletionMessage(
            role="assistant",
            content=None,
            tool_calls=[
                chatsdk.ChatCompletionMessageToolCall(
                    id="call_w",
                    function=Function(name="get_weather", arguments='{"city": "Oslo"}'),
                )
            ],
        ),
        {"role": "tool", "content": '{"temp": 3}', "tool_call_id": "call_w"},
    ]
    _, _, _, srv = await run(
        [sse_reply(ANSWER)],
        model="gpt-test",
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        temperature=0.5,
        max_tokens=64,
        response_format={"type": "text"},
        extra_body={"user": "u-1", "top_p": 0.9, "metadata": {"k": "v"}},
    )
    seen = srv.seen[0]
    assert seen.method == "POST"
    assert seen.headers.get("Content-Type", "").startswith("application/json")
    sent = request_json(srv)
    no_nulls(sent)
    assert sent == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_w",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "content": '{"temp": 3}', "tool_call_id": "call_w"},
        ],
        "stream": True,
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "temperature": 0.5,
        "max_tokens": 64,
        "response_format": {"type": "text"},
        "user": "u-1",
        "top_p": 0.9,
        "metadata": {"k": "v"},
    }


async def test_a_minimal_request_sends_no_optional_field() -> None:
    _, _, _, srv = await run([sse_reply(ANSWER)], model="gpt-test", messages="Hi?")
    assert request_json(srv) == {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "Hi?"}],
        "stream": True,
    }


def _deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def _cycle() -> dict[str, Any]:
    value: dict[str, Any] = {"role": "user", "content": "x"}
    value["self"] = value
    return value


BAD_ARGUMENTS: dict[str, dict[str, Any]] = {
    "empty model": {"model": ""},
    "blank model": {"model": "  "},
    "role wizard (mapping)": {"messages": [{"role": "wizard", "content": "x"}]},
    "role wizard (struct)": {
        "messages": [chatsdk.ChatCompletionMessage(role="wizard", content="x")]  # type: ignore[arg-type]
    },
    "tool message without tool_call_id": {"messages": [{"role": "tool", "content": "42"}]},
    "temperature 3": {"temperature": 3},
    "temperature -0.1": {"temperature": -0.1},
    "no messages": {"messages": []},
    # Content parts, and values JSON has no form for, anywhere they may be given.
    "no parts": {"messages": [{"role": "user", "content": []}]},
    "a part not a mapping": {"messages": [{"role": "user", "content": ["text"]}]},
    "a part without type": {"messages": [{"role": "user", "content": [{"text": "no type"}]}]},
    "not JSON in a message": {"messages": [{"role": "user", "content": "x", "extra": object()}]},
    "a lone surrogate": {"messages": "hi \ud800"},
    "nested 10,000 deep": {"messages": [{"role": "user", "content": "x", "deep": _deep(10_000)}]},
    "a message holding itself": {"messages": [_cycle()]},
    "not JSON in response_format": {"response_format": {"x": object()}},
    "deep tool_choice": {"tool_choice": _deep(10_000)},
    "deep extra_body": {"extra_body": {"x": _deep(10_000)}},
    "tools [None]": {"tools": [None]},
    "tools a string": {"tools": "f"},
    "tools a mapping": {"tools": {"type": "function"}},
    # JSON has no NaN nor infinity: msgspec sent null in their place, silently.
    "NaN in extra_body": {"extra_body": {"top_p": float("nan")}},
    "infinity in a message": {"messages": [{"role": "user", "content": "x", "w": float("inf")}]},
    "NaN in a set": {"extra_body": {"s": {float("nan")}}},
    "a Decimal NaN": {"extra_body": {"top_p": Decimal("NaN")}},
    "NaN in a tool": {
        "tools": [{"type": "function", "function": {"name": "f", "x": [float("-inf")]}}]
    },
}


async def test_options_and_numbers_are_sent_as_given() -> None:
    # stream_options' other keys (vLLM's continuous_usage_stats) were dropped, and a
    # subclass of float (numpy.float64) refused as "not JSON-serialisable".
    class Float(float):
        pass

    class Text(str):
        pass

    options = {"include_usage": True, "continuous_usage_stats": True}
    _, _, _, srv = await run(
        [sse_reply(ANSWER)],
        stream_options=options,
        extra_body={"top_p": Float(0.5), "user": Text("u1"), "min_p": Decimal("0.05")},
    )
    sent = json.loads(srv.seen[0].body)
    assert sent["stream_options"] == options
    assert (sent["top_p"], sent["user"]) == (0.5, "u1")
    assert sent["min_p"] == 0.05  # a number, not msgspec's default string "0.05"


@pytest.mark.parametrize("value", [math.nan, Decimal("-Infinity")], ids=["float", "Decimal"])
def test_a_non_finite_number_is_refused_naming_where_it_is(value: Any) -> None:
    client = chatsdk.ChatClient(KEY, base_url="http://127.0.0.1:9")
    with pytest.raises(chatsdk.ValidationError, match=r"NaN.* at messages\[0\]\.meta\.w"):
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x", "meta": {"w": value}}]
        )


@pytest.mark.parametrize("name", list(BAD_ARGUMENTS))
async def test_bad_arguments_are_refused_before_anything_is_sent(name: str) -> None:
    arguments = {"model": "gpt-test", "messages": "q", **BAD_ARGUMENTS[name]}
    async with ScriptedServer([sse_reply(ANSWER)]) as srv:
        async with client_for(srv.url) as client:
            with pytest.raises(chatsdk.ValidationError):
                async with asyncio.timeout(5):
                    await client.chat.completions.create(**arguments)
    assert srv.seen == []


# == auth, URL, idempotency =============================================================

AUTH_CASES: dict[str, tuple[dict[str, Any], dict[str, str], tuple[str, ...]]] = {
    # name: (client arguments, headers expected, headers that must be absent)
    "api key (Inkeep)": (
        {"api_key": KEY},
        {"Authorization": f"Bearer {KEY}"},
        ("Gram-Key", "Gram-Chat-Session"),
    ),
    "api key (Gram)": (
        {"api_key": KEY, "service": "gram", "project": "p"},
        {"Gram-Key": KEY, "Gram-Project": "p"},
        ("Authorization", "Gram-Chat-Session"),
    ),
    "client token": (
        {"session_token": TOKEN, "project": "p"},
        {"Gram-Chat-Session": TOKEN, "Gram-Project": "p"},
        ("Authorization", "Gram-Key"),
    ),
    "client token as bearer": (
        {"session_token": TOKEN, "project": "p", "token_auth": "bearer"},
        {"Authorization": f"Bearer {TOKEN}"},
        ("Gram-Chat-Session", "Gram-Key"),
    ),
}


@pytest.mark.parametrize("name", list(AUTH_CASES))
async def test_auth_headers_url_and_idempotency_key(name: str) -> None:
    arguments, expected, absent = AUTH_CASES[name]
    async with ScriptedServer([sse_reply(ANSWER)]) as srv:
        async with chatsdk.ChatClient(base_url=srv.url + "/v1", retries=0, **arguments) as client:
            async with asyncio.timeout(10):
                result = await client.chat.completions.create(model="gpt-test", messages="q")
    assert result.text == "Hello world"
    seen = srv.seen[0]
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    for header, value in expected.items():
        assert seen.headers.get(header) == value, header
    for header in absent:
        assert header not in seen.headers, header
    uuid.UUID(seen.headers["Idempotency-Key"])


async def test_each_call_has_its_own_idempotency_key_and_retries_keep_it() -> None:
    busy = Reply(status=503, body="busy", content_type="text/plain")
    async with ScriptedServer([busy, sse_reply(ANSWER), sse_reply(ANSWER)]) as srv:
        async with client_for(srv.url) as client:
            async with asyncio.timeout(10):
                await client.chat.completions.create(model="gpt-test", messages="q")
                await client.chat.completions.create(model="gpt-test", messages="q")
    keys = [s.headers["Idempotency-Key"] for s in srv.seen]
    assert len(keys) == 3
    assert keys[0] == keys[1] != keys[2]


# -- against the reference server: the same core, resume and faults ----------------------


@pytest.fixture
async def reference() -> AsyncIterator[ReferenceServer]:
    async with reference_server() as srv:
        yield srv


def ref_client(server: ReferenceServer, **settings: Any) -> chatsdk.ChatClient:
    return chatsdk.ChatClient(SUPPORT_KEY, project=PROJECT, base_url=server.base_url, **settings)


async def test_a_reference_completion_streams_text_links_and_usage(
    reference: ReferenceServer,
) -> None:
    async with ref_client(reference) as client:
        stream = client.chat.completions.create(
            model="inkeep-qa-expert",
            messages=[
                {"role": "system", "content": "Answer from the docs."},
                {"role": "user", "content": "How do I retry?"},
            ],
            tools=chatsdk.INKEEP_TOOLS,
            tool_choice="auto",
            stream_options={"include_usage": True},
        )
        kinds = {type(event).__name__ async for event in stream}
        result = await stream
    assert kinds == {"ChatCompletionChunk", "ProvidedLinks", "AIAnnotations"}
    assert result.text and result.finish_reason == "tool_calls"
    assert result.links and all(link.url for link in result.links)
    assert result.answer_confidence and result.usage and result.usage.total_tokens > 0
    assert [call.function.name for call in result.tool_calls] == [
        "provideLinks",
        "provideAIAnnotations",
    ]


async def test_a_dropped_completion_resumes_with_every_chunk_once(
    reference: ReferenceServer,
) -> None:
    async with ref_client(reference, retries=support.FAST) as client:
        whole = await client.chat.completions.create(model="m", messages="How do I retry?")
        reference.faults = Faults(drop_after_events=3, drop_times=2)
        stream = client.chat.completions.create(model="m", messages="How do I retry?")
        result = await stream
    assert stream.resumes == 2 and stream.replays_dropped == 0
    assert result.text == whole.text and result.finish_reason == whole.finish_reason


@pytest.mark.parametrize(
    ("faults", "error"),
    [
        (Faults(no_done=True), chatsdk.StreamError),
        (Faults(no_done=True, no_content_location=True), chatsdk.StreamError),
        (Faults(error_chunk_after=2), chatsdk.APIError),
        (Faults(malformed_after=2), chatsdk.StreamError),
        (Faults(drop_after_events=2, no_content_location=True), chatsdk.APIConnectionError),
        (Faults(fail_first=5, fail_status=402), chatsdk.APIStatusError),
    ],
    ids=["no [DONE]", "no [DONE], not resumable", "error chunk", "malformed", "drop", "402"],
)
async def test_a_misbehaving_reference_server_gives_a_typed_error(
    reference: ReferenceServer, faults: Faults, error: type[Exception]
) -> None:
    reference.faults = faults
    got = []
    async with ref_client(reference, retries=support.FAST) as client:
        with pytest.raises(error):
            async with asyncio.timeout(10):
                async for event in client.chat.completions.create(model="m", messages="Hi"):
                    got.append(event)
    if faults.error_chunk_after or faults.malformed_after:
        assert len(got) == 2  # the chunks before the bad one were delivered


def test_the_sync_client_streams_a_completion(reference_thread: ReferenceServer) -> None:
    with chatsdk.SyncChatClient(
        SUPPORT_KEY, project=PROJECT, base_url=reference_thread.base_url
    ) as client:
        stream = client.chat.completions.create(model="m", messages="How do I retry?")
        pieces = list(stream.text_stream)
        result = stream.final_result()
    assert pieces and "".join(pieces) == result.text


@pytest.fixture
def reference_thread() -> Iterator[ReferenceServer]:
    with reference_server().serve_in_thread() as running:
        yield running


async def test_a_json_object_without_choices_is_not_an_answer() -> None:
    reply = Reply(body=b'{"unexpected": true}', content_type="application/json")
    async with ScriptedServer([reply]) as srv:
        async with chatsdk.ChatClient(KEY, base_url=srv.url, retries=0) as client:
            with pytest.raises(chatsdk.APIResponseValidationError, match="unexpected"):
                await client.chat.completions.create(model="m", messages="q", stream=False)


async def test_a_resume_with_nothing_new_and_no_end_marker_fails_at_once(
    reference: ReferenceServer,
) -> None:
    # The log ends without [DONE]: one resume shows there is no more; no five retries.
    reference.faults = Faults(no_done=True)
    started = time.monotonic()
    async with ref_client(reference) as client:
        stream = client.chat.completions.create(model="m", messages="Hi")
        with pytest.raises(chatsdk.StreamError, match="resumed it with nothing after"):
            await stream
    assert stream.resumes == 1 and time.monotonic() - started < 2


# == what other OpenAI-compatible servers send, and what callers pass =================


@pytest.mark.parametrize(
    "nulls",
    [
        {"model": None},
        {"id": None},
        {"created": None, "object": None},
        {"usage": {"prompt_tokens": 3, "completion_tokens": None, "total_tokens": None}},
    ],
    ids=["model", "id", "created and object", "usage counts"],
)
@pytest.mark.parametrize("pace", ["one write", "a write per event"])
async def test_a_null_in_a_field_with_a_default_does_not_lose_the_answer(
    nulls: dict[str, Any], pace: str
) -> None:
    # Servers send these; openai-python takes them. The field reads as its default.
    pieces = [
        events(chunk("Hel"), done=False),
        events({**chunk("lo", finish="stop"), **nulls}, done=False),
        DONE,
    ]
    reply = (
        sse_reply(b"".join(pieces))
        if pace == "one write"
        else Reply(pieces=pieces, delay=0.02, content_type=SSE)
    )
    _, got, result, _ = await run([reply])
    assert result.text == "Hello"
    assert result.finish_reason == "stop"
    assert texts(got) == ["Hel", "lo"]
    if "usage" in nulls:
        assert result.usage == chatsdk.CompletionUsage(3, 0, 0)


async def test_a_long_stream_with_a_null_in_every_chunk_is_read_whole() -> None:
    words = [f"w{n} " for n in range(3000)]
    body = events(*[{**chunk(word), "model": None} for word in words], chunk(finish="stop"))
    pieces = [body[i : i + 7000] for i in range(0, len(body), 7000)]
    _, got, result, _ = await run([Reply(pieces=pieces, content_type=SSE)])
    assert result.text == "".join(words)
    assert texts(got) == words


async def test_a_null_where_no_default_fits_is_still_a_stream_error() -> None:
    body = events(chunk("a"), {"choices": [None]})
    with pytest.raises(chatsdk.StreamError):
        await run([sse_reply(body)])


@pytest.mark.parametrize("ending", [b"data: [DONE]\n", b"data: [DONE]", b"data: [DONE]\r"])
async def test_done_without_its_blank_line_at_the_end_of_the_body_ends_the_answer(
    ending: bytes,
) -> None:
    # WHATWG drops an event the body ends inside; the marker alone cuts nothing short.
    body = events(chunk("Hel"), chunk("lo", finish="stop"), done=False) + ending
    _, _, result, srv = await run([sse_reply(body)])
    assert result.text == "Hello"
    assert len(srv.seen) == 1


@pytest.mark.parametrize(
    "ending",
    [
        b"data: [DON",
        b'data: {"choices":[]}\n',
        b"data: [DONE]\ndata: x\n",
    ],
    ids=["cut marker", "chunk", "marker and more data"],
)
async def test_any_other_event_the_body_ends_inside_is_a_stream_error(ending: bytes) -> None:
    body = events(chunk("Hel"), chunk("lo", finish="stop"), done=False) + ending
    with pytest.raises(chatsdk.StreamError, match="ended in the middle of an event"):
        await run([sse_reply(body)])


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_a_refusal_is_kept_in_the_result(stream: bool) -> None:
    if stream:
        body = events(
            chunk(role="assistant", refusal=""),
            chunk(refusal="I can't "),
            chunk(refusal="help with that."),
            chunk(finish="stop"),
        )
        reply = sse_reply(body)
    else:
        whole = {
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": None, "refusal": "No."},
                    "finish_reason": "stop",
                }
            ],
        }
        reply = Reply(body=json.dumps(whole).encode(), content_type="application/json")
    _, _, result, _ = await run([reply], stream=stream)
    assert result.message.refusal == ("I can't help with that." if stream else "No.")
    assert result.text == ""


async def test_a_refusal_beside_text_in_one_chunk_is_kept_too() -> None:
    body = events(chunk("a"), chunk("b", refusal="r"), chunk(finish="stop"))
    _, _, result, _ = await run([sse_reply(body)])
    assert (result.text, result.message.refusal) == ("ab", "r")


@pytest.mark.parametrize("how", ["error chunk", "error event", "whole answer"])
async def test_an_error_the_server_reports_in_a_200_answer_carries_its_request_id(how: str) -> None:
    headers = {"X-Request-Id": "req_mid_123"}
    if how == "whole answer":
        reply = Reply(
            body=json.dumps({"error": ERROR}).encode(),
            content_type="application/json",
            headers=headers,
        )
    else:
        error = (
            events({"error": ERROR}, done=False)
            if how == "error chunk"
            else b"event: error\ndata: " + json.dumps(ERROR).encode() + b"\n\n"
        )
        reply = sse_reply(events(chunk("a"), done=False) + error + DONE, headers=headers)
    with pytest.raises(chatsdk.APIError) as info:
        await run([reply])
    assert info.value.request_id == "req_mid_123"
    assert info.value.headers["X-Request-Id"] == info.value.headers["x-request-id"] == "req_mid_123"
    assert "req_mid_123" in str(info.value)
    assert info.value.body == ERROR


async def test_mappings_are_sent_as_given_with_fields_chatsdk_has_no_name_for() -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
            "cache_control": {"type": "ephemeral"},
        },
        {"role": "assistant", "content": "An A.", "reasoning_content": "never sent back"},
        {"role": "user", "content": "And?"},
    ]
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {}, "strict": True}},
        {"type": "web_search_preview"},
        chatsdk.ChatCompletionTool(function=FunctionDefinition(name="g")),
    ]
    _, _, _, srv = await run([sse_reply(ANSWER)], messages=messages, tools=tools)
    sent = request_json(srv)
    assert sent["messages"][:2] == messages[:2]
    assert sent["messages"][2] == {"role": "assistant", "content": "An A."}
    assert sent["tools"] == [tools[0], tools[1], {"type": "function", "function": {"name": "g"}}]


class _Mapping(Mapping[str, Any]):
    """A mapping that is not a dict."""

    def __init__(self, **items: Any) -> None:
        self._items = items

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


async def test_any_mapping_is_sent_as_a_json_object() -> None:
    part = _Mapping(type="text", text="What is this?")
    tool = _Mapping(type="function", function=_Mapping(name="f", parameters=_Mapping()))
    _, _, _, srv = await run(
        [sse_reply(ANSWER)],
        messages=[_Mapping(role="user", content=[part])],
        tools=[tool],
        tool_choice=_Mapping(type="function", function=_Mapping(name="f")),
        extra_body={"metadata": _Mapping(user="u1")},
    )
    sent = request_json(srv)
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}]}
    ]
    assert sent["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert sent["metadata"] == {"user": "u1"}


async def test_an_assistant_refusal_may_be_sent_back_without_content() -> None:
    refusal = {"role": "assistant", "content": None, "refusal": "No."}
    messages = [{"role": "user", "content": "q"}, refusal, {"role": "user", "content": "Why?"}]
    _, _, _, srv = await run([sse_reply(ANSWER)], messages=messages)
    assert request_json(srv)["messages"][1] == refusal


async def test_the_reference_server_takes_content_parts_developer_messages_and_other_tools(
    reference: ReferenceServer,
) -> None:
    async with ref_client(reference) as client:
        result = await client.chat.completions.create(
            model="inkeep-qa-expert",
            messages=[
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "How do I retry?"}]},
            ],
            tools=[{"type": "web_search_preview"}],
        )
    async with ref_client(reference) as client:
        plain = await client.chat.completions.create(
            model="inkeep-qa-expert", messages="How do I retry?"
        )
    assert result.text == plain.text != ""


def test_a_base_url_query_is_never_shown_in_the_error() -> None:
    with pytest.raises(chatsdk.ValidationError) as info:
        chatsdk.ChatClient(KEY, base_url="https://example.com/v1?api-version=1&api-key=SECRET-1")
    assert "SECRET-1" not in str(info.value)
    assert "api-version" not in str(info.value)
    assert "https://example.com/v1" in str(info.value)


# == other servers' variants (an outside check of vendor wires) ==========================


async def test_a_whole_answer_keeps_openais_fingerprint_and_tier() -> None:
    whole = {**COMPLETION, "system_fingerprint": "fp_1", "service_tier": "flex"}
    _, got, result, _ = await run([Reply(body=json.dumps(whole))], stream=False)
    assert (got[0].system_fingerprint, got[0].service_tier) == ("fp_1", "flex")
    assert (result.system_fingerprint, result.service_tier) == ("fp_1", "flex")


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
async def test_a_whole_answers_reasoning_is_kept_under_either_name(field: str) -> None:
    # Ollama, OpenRouter, Groq and newer vLLM say message.reasoning; it was dropped.
    whole = {
        **COMPLETION,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "42", field: "Six times seven."},
            }
        ],
    }
    _, _, result, _ = await run([Reply(body=json.dumps(whole))], stream=False)
    assert (result.text, result.reasoning) == ("42", "Six times seven.")


MAGISTRAL_PARTS = [
    {"type": "thinking", "thinking": [{"type": "text", "text": "The user greets me."}]},
    {"type": "text", "text": "Hello!"},
]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
async def test_content_as_a_list_of_parts_is_read_as_text_and_reasoning(stream: bool) -> None:
    # Mistral's Magistral: the answer was a StreamError (or, whole, a validation error).
    if stream:
        body = events(
            chunk(role="assistant", content=""),
            {**chunk(), "choices": [{"index": 0, "delta": {"content": MAGISTRAL_PARTS}}]},
            chunk(finish="stop"),
        )
        reply = sse_reply(body)
    else:
        reply = Reply(
            body=json.dumps(
                {
                    **COMPLETION,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": MAGISTRAL_PARTS},
                            "finish_reason": "stop",
                        }
                    ],
                }
            )
        )
    _, _, result, _ = await run([reply], stream=stream)
    assert (result.text, result.reasoning) == ("Hello!", "The user greets me.")


async def test_a_choice_streamed_as_a_message_without_a_delta_keeps_its_text() -> None:
    # Some servers stream each choice as "message"; read as a choice without a delta,
    # the whole answer was an empty string, and no error said so.
    def as_message(c: dict[str, Any]) -> dict[str, Any]:
        (choice,) = c["choices"]
        return {
            **c,
            "choices": [
                {
                    "index": 0,
                    "message": choice["delta"],
                    **{k: v for k, v in choice.items() if k not in ("delta", "index")},
                }
            ],
        }

    body = events(
        *map(as_message, [chunk("Hel", role="assistant"), chunk("lo"), chunk(finish="stop")])
    )
    _, got, result, _ = await run([sse_reply(body)])
    assert result.text == "Hello"
    assert result.finish_reason == "stop"
    assert texts(got) == ["Hel", "lo"]


async def test_a_message_beside_the_delta_is_not_read_as_text() -> None:
    # Perplexity sends both: the delta is the new text, the message all the text so far.
    def with_message(c: dict[str, Any], so_far: str) -> dict[str, Any]:
        (choice,) = c["choices"]
        return {**c, "choices": [{**choice, "message": {"role": "assistant", "content": so_far}}]}

    body = events(
        with_message(chunk("Hel"), "Hel"),
        with_message(chunk("lo"), "Hello"),
        with_message(chunk(finish="stop"), "Hello"),
    )
    _, got, result, _ = await run([sse_reply(body)])
    assert result.text == "Hello"
    assert texts(got) == ["Hel", "lo"]


@pytest.mark.parametrize(
    "ending", ["nothing", "nothing, not even a line end", "[DONE]", "a drop", "a drop, resumable"]
)
async def test_an_error_line_ending_the_body_is_the_servers_api_error(ending: str) -> None:
    # llama.cpp's server ends a failed answer with `error: {...}` (no data), then `data:
    # [DONE]` (older builds' OpenAI routes), nothing, or a dropped connection: that was a
    # whole answer cut short, a StreamError saying only "incomplete", or a resume.
    failure = {"code": 500, "message": "the context size was exceeded", "type": "server_error"}
    body = events(chunk("Hi"), done=False) + b"error: " + json.dumps(failure).encode() + b"\n\n"
    if ending == "[DONE]":
        body += DONE
    elif ending == "nothing, not even a line end":
        body = body[:-2]
    drop = ending.startswith("a drop")
    headers = {"Content-Location": "/resume/1"} if ending.endswith("resumable") else {}
    reply = sse_reply(body, pieces=[body] if drop else None, abort=drop, headers=headers)
    async with ScriptedServer([reply, sse_reply(events(chunk(finish="stop")))]) as srv:
        async with client_for(srv.url) as client:
            stream = client.chat.completions.create(model="m", messages="q")
            got = []
            with pytest.raises(chatsdk.APIError) as info:
                async for event in stream:
                    got.append(event)
            with pytest.raises(chatsdk.APIError):
                await stream
    assert type(info.value) is chatsdk.APIError
    assert "the context size was exceeded" in str(info.value)
    assert info.value.body == failure
    assert texts(got) == ["Hi"]
    assert len(srv.seen) == 1


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
async def test_an_error_object_with_a_detail_list_says_what_the_detail_says(stream: bool) -> None:
    # One reading of an error body everywhere: in a stream, or a whole answer that is
    # one, Mistral's shape said only "the server reported an error".
    item = {"type": "missing", "loc": ["body", "messages"], "msg": "Field required"}
    said = {"object": "error", "message": {"detail": [item]}}
    reply = sse_reply(events(chunk("a"), said)) if stream else Reply(body=json.dumps(said))
    with pytest.raises(chatsdk.APIError, match=r"body\.messages: Field required"):
        await run([reply], stream=stream)


async def test_an_error_line_then_silence_is_the_servers_error_not_a_timeout() -> None:
    failure = {"message": "the model crashed"}
    body = events(chunk("Hi"), done=False) + b"error: " + json.dumps(failure).encode() + b"\n\n"
    reply = sse_reply(body, pieces=[body, b""], delay=5)  # then nothing for 5 s
    async with ScriptedServer([reply]) as srv:
        timeout = chatsdk.Timeout(connect=2, read=0.5, idle=0.5, total=10)
        async with client_for(srv.url, timeout=timeout) as client:
            with pytest.raises(chatsdk.APIError, match="the model crashed") as info:
                await client.chat.completions.create(model="m", messages="q")
    assert not isinstance(info.value, chatsdk.APITimeoutError)


async def test_an_error_in_a_one_item_list_mid_stream_is_the_servers_error() -> None:
    # Gemini's endpoint wraps its error object in a list: that was a StreamError.
    said = [{"error": {"code": 429, "message": "Resource has been exhausted"}}]
    body = events(chunk("a"), b"data: " + json.dumps(said).encode() + b"\n\n")
    with pytest.raises(chatsdk.APIError, match="Resource has been exhausted"):
        await run([sse_reply(body)])


@pytest.mark.parametrize("done", [True, False], ids=["[DONE]", "end"])
async def test_an_error_line_echoing_the_key_never_shows_it(done: bool) -> None:
    said = {"message": f"bad key {KEY}"}
    body = events(chunk("Hi"), b"error: " + json.dumps(said).encode() + b"\n\n", done=done)
    with pytest.raises(chatsdk.APIError) as info:
        await run([sse_reply(body)])
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value.body)


async def test_an_error_line_in_an_answer_that_ends_whole_is_no_error() -> None:
    body = events(chunk("Hi"), b"error: a note\n\n", chunk(finish="stop"))
    _, _, result, _ = await run([sse_reply(body)])
    assert result.text == "Hi"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
async def test_loosely_typed_tool_calls_are_read(stream: bool) -> None:
    # TGI before 3 sends delta.tool_calls as one object; Cloudflare Workers AI sends
    # function.arguments as the JSON object itself, not its text.
    call = {
        "index": 0,
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
    }
    if stream:
        reply = sse_reply(
            events(
                chunk(role="assistant", tool_calls=call),  # type: ignore[arg-type]
                chunk(finish="tool_calls"),
            )
        )
    else:
        reply = Reply(
            body=json.dumps(
                {
                    **COMPLETION,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                            "finish_reason": "tool_calls",
                        }
                    ],
                }
            )
        )
    _, _, result, _ = await run([reply], stream=stream)
    assert [(c.function.name, json.loads(c.function.arguments)) for c in result.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]


@pytest.mark.parametrize("call_id", [None, ""], ids=["no-id", "empty-id"])
async def test_whole_calls_without_index_or_id_stay_apart(call_id: str | None) -> None:
    # Two calls, each whole in a chunk of its own, with neither index nor id: they were
    # merged into one call, under the second name, arguments run together.
    def whole(name: str, arguments: str) -> dict[str, Any]:
        fragment = tool_fragment(None, name=name, arguments=arguments)
        if call_id is not None:
            fragment["id"] = call_id
        return chunk(tool_calls=[fragment])

    body = events(
        whole("get_weather", '{"location":"Paris"}'),
        whole("get_time", '{"tz":"CET"}'),
        chunk(finish="tool_calls"),
    )
    _, _, result, _ = await run([sse_reply(body)])
    assert [(c.function.name, c.function.arguments) for c in result.tool_calls] == [
        ("get_weather", '{"location":"Paris"}'),
        ("get_time", '{"tz":"CET"}'),
    ]


async def test_fragments_repeating_their_name_without_index_or_id_are_one_call() -> None:
    # Some servers repeat the name on every fragment: that is not a new call.
    body = events(
        *[
            chunk(tool_calls=[tool_fragment(None, name="f", arguments=part)])
            for part in ["", '{"a":', " 1", "}"]
        ],
        chunk(finish="tool_calls"),
    )
    _, _, result, _ = await run([sse_reply(body)])
    assert [(c.function.name, c.function.arguments) for c in result.tool_calls] == [
        ("f", '{"a": 1}')
    ]


UNWRAPPED = {"object": "error", "message": "out of KV cache blocks", "type": "X", "code": 500}


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
async def test_an_error_object_not_wrapped_in_error_is_an_api_error(stream: bool) -> None:
    # vLLM's and FastChat's ErrorResponse, then [DONE]: was an empty chunk, and a
    # silently shorter answer.
    body = events(chunk("The capital is"), UNWRAPPED) if stream else json.dumps(UNWRAPPED)
    reply = sse_reply(body) if stream else Reply(body=body)  # type: ignore[arg-type]
    async with ScriptedServer([reply]) as srv:
        async with client_for(srv.url) as client:
            with pytest.raises(chatsdk.APIError, match="out of KV cache blocks") as info:
                async with asyncio.timeout(10):
                    await client.chat.completions.create(model="m", messages="q", stream=stream)
    assert info.value.body == UNWRAPPED


async def test_a_body_ending_cleanly_after_the_finish_without_done_is_whole() -> None:
    # ik_llama.cpp, mistral.rs before 0.4, text-generation-webui: the finish_reason
    # chunk, then the body ends. SPEC 1.8's incomplete answer is one cut mid-answer.
    body = events(chunk("Hel"), chunk("lo", finish="stop"), done=False)
    stream, got, result, srv = await run([sse_reply(body)])
    assert (result.text, result.finish_reason) == ("Hello", "stop")
    assert texts(got) == ["Hel", "lo"] and len(srv.seen) == 1 and stream.resumes == 0


USAGE_CHUNK = {
    "id": "x",
    "choices": [],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
}


@pytest.mark.parametrize("with_usage", [False, True])
async def test_the_usage_chunk_asked_for_must_come_before_a_body_without_done_ends(
    with_usage: bool,
) -> None:
    # With include_usage the answer ends with its usage chunk: a body ending before it
    # is cut short, one ending after it is whole.
    tail = [USAGE_CHUNK] if with_usage else []
    body = events(chunk("Hi", finish="stop"), *tail, done=False)
    async with ScriptedServer([sse_reply(body)]) as srv:
        async with client_for(srv.url) as client:
            stream = client.chat.completions.create(
                model="m", messages="q", stream_options={"include_usage": True}
            )
            async with asyncio.timeout(10):
                if not with_usage:
                    with pytest.raises(chatsdk.StreamError, match="finishes the answer"):
                        await stream
                    return
                result = await stream
    assert result.usage is not None and result.usage.total_tokens == 3


async def test_a_body_without_done_ending_while_another_choice_is_under_way_is_cut() -> None:
    both = _two_choices("A", "B")
    done_first = {**both, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    body = events(both, done_first, done=False)
    async with ScriptedServer([sse_reply(body)]) as srv:
        async with client_for(srv.url) as client:
            with pytest.raises(chatsdk.StreamError):
                async with asyncio.timeout(10):
                    await client.chat.completions.create(model="m", messages="q")


async def test_usage_details_are_kept() -> None:
    # What was cached and what the reasoning took: OpenAI's, vLLM's and others' details.
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 6},
        "completion_tokens_details": {"reasoning_tokens": 3, "accepted_prediction_tokens": 0},
    }
    body = events(chunk("Hi", finish="stop"), {**USAGE_CHUNK, "usage": usage})
    _, _, result, _ = await run([sse_reply(body)], stream_options={"include_usage": True})
    assert result.usage is not None
    assert result.usage.prompt_tokens_details == chatsdk.PromptTokensDetails(cached_tokens=6)
    details = result.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens == 3


async def test_a_body_without_done_that_goes_on_after_the_finish_is_not_taken_as_whole() -> None:
    # Tool calls after the finish_reason chunk (some servers send them so), then a clean
    # end mid-arguments: accepted, its arguments cut and its sources gone with a log line.
    cut = chunk(tool_calls=[tool_fragment(0, id="c1", name="provideLinks", arguments='{"li')])
    body = events(chunk("Answer.", finish="stop"), cut, done=False)
    async with ScriptedServer([sse_reply(body)]) as srv:
        async with client_for(srv.url) as client:
            with pytest.raises(chatsdk.StreamError, match="incomplete"):
                async with asyncio.timeout(10):
                    await client.chat.completions.create(model="m", messages="q")


@pytest.mark.parametrize(
    "call",
    [
        {"type": "function", "function": {"name": "lookup", "arguments": '{"q": "retry"}'}},
        {"id": None, "function": {"name": "lookup", "arguments": '{"q": "retry"}'}},
        {"function": {"name": "lookup", "arguments": {"q": "retry"}}},
    ],
    ids=["no id", "null id", "no id, arguments an object"],
)
async def test_a_whole_answers_tool_call_without_an_id_is_read(call: dict[str, Any]) -> None:
    # Streamed it was accepted; whole, it was an APIResponseValidationError.
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    whole = {
        **COMPLETION,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
    }
    _, _, result, _ = await run([Reply(body=json.dumps(whole))], stream=False)
    assert [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in result.tool_calls
    ] == [("", "lookup", {"q": "retry"})]


@pytest.mark.parametrize("tail", ["", "\n", "  "], ids=["empty", "newline", "spaces"])
async def test_a_trailing_fragment_repeating_the_name_is_not_another_call(tail: str) -> None:
    whole = tool_fragment(None, name="lookup", arguments='{"q": "retry"}')
    again = tool_fragment(None, name="lookup", arguments=tail)
    body = events(chunk(tool_calls=[whole]), chunk(tool_calls=[again]), chunk(finish="tool_calls"))
    _, _, result, _ = await run([sse_reply(body)])
    assert [c.function.name for c in result.tool_calls] == ["lookup"]
    assert json.loads(result.tool_calls[0].function.arguments) == {"q": "retry"}


async def test_whole_calls_at_one_index_without_ids_stay_apart() -> None:
    # Every call numbered 0, no ids: they were merged as ('', 'g', '{}{}').
    body = events(
        chunk(tool_calls=[tool_fragment(0, name="f", arguments="{}")]),
        chunk(tool_calls=[tool_fragment(0, name="g", arguments='{"a": 1}')]),
        chunk(finish="tool_calls"),
    )
    _, _, result, _ = await run([sse_reply(body)])
    assert [(c.function.name, c.function.arguments) for c in result.tool_calls] == [
        ("f", "{}"),
        ("g", '{"a": 1}'),
    ]


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ([{"type": "output_text", "text": "A"}, {"text": "B"}], "AB"),
        ({"type": "text", "text": "C"}, "C"),
    ],
    ids=["output_text and no type", "one part, not a list"],
)
async def test_content_parts_of_other_shapes_keep_their_text(content: Any, text: str) -> None:
    body = events(
        {**chunk(), "choices": [{"index": 0, "delta": {"content": content}}]}, chunk(finish="stop")
    )
    _, _, result, _ = await run([sse_reply(body)])
    assert result.text == text


async def test_an_empty_tool_calls_object_makes_no_call_and_float_counts_are_read() -> None:
    odd = {**chunk("Hi"), "choices": [{"index": 0, "delta": {"content": "Hi", "tool_calls": {}}}]}
    usage = {**USAGE_CHUNK["usage"], "prompt_tokens_details": {"cached_tokens": 2.0}}  # type: ignore[dict-item]
    body = events(odd, chunk(finish="stop"), {**USAGE_CHUNK, "usage": usage})
    _, _, result, _ = await run([sse_reply(body)], stream_options={"include_usage": True})
    assert result.text == "Hi" and result.tool_calls == []
    assert result.usage is not None and result.usage.prompt_tokens_details is not None
    assert result.usage.prompt_tokens_details.cached_tokens == 2


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
async def test_logprobs_asked_for_are_kept_on_the_choices(stream: bool) -> None:
    logprobs = {
        "content": [{"token": "Hi", "logprob": -0.01, "bytes": [72, 105], "top_logprobs": []}]
    }
    if stream:
        first = {
            **chunk("Hi"),
            "choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": logprobs}],
        }
        reply = sse_reply(events(first, chunk(finish="stop")))
    else:
        reply = Reply(
            body=json.dumps(
                {
                    **COMPLETION,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "Hi"},
                            "logprobs": logprobs,
                        }
                    ],
                }
            )
        )
    _, got, _, _ = await run([reply], stream=stream, extra_body={"logprobs": True})
    assert got[0].choices[0].logprobs == logprobs


async def test_a_call_whose_fragments_carry_ids_of_their_own_is_one_call() -> None:
    # Poolside's API (and mlx-openai-server before its fix) gives each fragment of one
    # call a new id at the same index: it was split into a call with no arguments and
    # one with no name.
    body = events(
        chunk(tool_calls=[tool_fragment(0, id="call_A", name="get_weather", arguments="")]),
        chunk(tool_calls=[tool_fragment(0, id="call_B", arguments='{"city":')]),
        chunk(tool_calls=[tool_fragment(0, id="call_B", arguments='"Paris"}')]),
        chunk(finish="tool_calls"),
    )
    _, _, result, _ = await run([sse_reply(body)])
    assert [(c.id, c.function.name, c.function.arguments) for c in result.tool_calls] == [
        ("call_A", "get_weather", '{"city":"Paris"}')
    ]


async def test_a_refusal_after_the_finish_needs_done() -> None:
    body = events(chunk("", finish="stop"), chunk(refusal="I can"), done=False)
    async with ScriptedServer([sse_reply(body)]) as srv:
        async with client_for(srv.url) as client:
            with pytest.raises(chatsdk.StreamError):
                async with asyncio.timeout(10):
                    await client.chat.completions.create(model="m", messages="q")


@pytest.mark.parametrize("stream", [True, False])
async def test_the_answers_response_headers_and_request_id_are_on_the_stream(stream: bool) -> None:
    # Rate-limit headers and the request id of a successful answer (OpenAI's
    # x-ratelimit-*, x-request-id) were only on errors.
    headers = {
        "X-Request-Id": "req_123",
        "x-ratelimit-remaining-tokens": "9000",
        "X-Echo": f"Bearer {KEY}",  # a proxy echoing the request's Authorization
    }
    if stream:
        reply = sse_reply(
            events(chunk("hi", role="assistant"), chunk(finish="stop")), headers=headers
        )
    else:
        reply = Reply(body=json.dumps(COMPLETION).encode(), headers=headers)
    async with ScriptedServer([reply]) as srv:
        async with client_for(srv.url) as client:
            answer = client.chat.completions.create(model="m", messages="q", stream=stream)
            assert answer.headers is None and answer.request_id is None  # not sent yet
            async for _ in answer:
                break
            assert answer.headers is not None
            assert answer.request_id == "req_123"
            assert answer.headers["X-RATELIMIT-REMAINING-TOKENS"] == "9000"
            assert KEY not in repr(answer.headers) and answer.headers["x-echo"] == "Bearer ***"
            await answer.aclose()


def test_the_sync_stream_has_the_response_headers_too() -> None:
    reply = sse_reply(events(chunk("hi"), chunk(finish="stop")), headers={"X-Request-Id": "r9"})

    async def serve() -> None:
        async with ScriptedServer([reply]) as srv:
            await asyncio.to_thread(use, srv.url)

    def use(url: str) -> None:
        with chatsdk.SyncChatClient(KEY, base_url=url, retries=0) as client:
            with client.chat.completions.create(model="m", messages="q") as answer:
                assert "".join(answer.text_stream) == "hi"
                assert answer.request_id == "r9" and answer.headers is not None

    asyncio.run(serve())


@pytest.mark.parametrize("provider", ["sync", "async"])
async def test_a_providers_token_is_masked_in_what_the_stream_shows(provider: str) -> None:
    # The stream took the secrets to mask when it was made, before the provider gave its
    # token: headers and a mid-stream error echoing that token showed it.
    token = "tok-SECRET-abcdefghijklmnop"

    async def fetch_async() -> str:
        return token

    fetch: Any = (lambda: token) if provider == "sync" else fetch_async
    said = {"error": {"message": f"quota for {token} exceeded"}}
    body = events(chunk("hi"), b"data: " + json.dumps(said).encode() + b"\n\n", done=False)
    reply = sse_reply(body, headers={"X-Echo": f"Bearer {token}", "X-Request-Id": f"r-{token}"})
    async with ScriptedServer([reply]) as srv:
        async with client_for(srv.url, session_token=fetch, project="p") as client:
            answer = client.chat.completions.create(model="m", messages="q")
            with pytest.raises(chatsdk.APIError) as info:
                async for _ in answer:
                    pass
    shown = f"{answer.headers!r} {answer.request_id} {info.value} {info.value.body!r}"
    assert token not in shown and token[:12] not in shown, shown
    assert answer.request_id == "r-***"
