"""The clients under test, each used the way its documentation shows, yielding typed events.

Every client sends the same request (SPEC §1.4 body, the scenario in ``integration_id``)
and turns every event into a typed value: msgspec structs for chatsdk (its public
``async for`` API), pydantic models (``model_validate_json``, pydantic's fastest path)
for the peers. The raw aiohttp floor reads the bytes and only counts event boundaries.

Imports of each peer happen inside its class, so a worker process loads only the
client it measures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

BODY_TEMPLATE = {
    "chat_session": {"messages": [{"role": "user", "content": "How do I retry?"}]},
    "stream": True,
}
API_KEY = "bench-key"
PROJECT = "bench"
#: Scenarios of the Chat Completions wire start so (see server.py and shapes.py).
COMPLETIONS = "shape|completions|"
MESSAGES = [{"role": "user", "content": "hi"}]


def terminator(scenario: str) -> bytes:
    """The bytes that end an event (a blank line) in a scenario's body."""
    from shapes import terminator as shape_terminator

    return shape_terminator(scenario.split("|")[1]) if scenario.startswith("shape|") else b"\n\n"


def completions_models() -> type[Any]:
    """A pydantic twin of chatsdk.models.ChatCompletionChunk (the fields the bench sends)."""
    from pydantic import BaseModel

    class Delta(BaseModel):
        role: str | None = None
        content: str | None = None

    class Choice(BaseModel):
        index: int
        delta: Delta
        finish_reason: str | None = None

    class ChatCompletionChunk(BaseModel):
        id: str
        object: str
        created: int
        model: str
        choices: list[Choice] = []

    return ChatCompletionChunk


def request_body(scenario: str) -> dict[str, Any]:
    return {"integration_id": scenario, **BODY_TEMPLATE}


def pydantic_models() -> tuple[type[Any], type[Any], type[Any]]:
    """Pydantic twins of chatsdk.models.MessageChunk / RecordsCited, and an unknown event."""
    from pydantic import BaseModel

    class Record(BaseModel):
        type: str
        url: str | None = None
        title: str | None = None
        description: str | None = None
        breadcrumbs: list[str] | None = None

    class Citation(BaseModel):
        record: Record
        number: int | None = None
        hit_url: str | None = None

    class RecordsCited(BaseModel):
        citations: list[Citation] = []

    class MessageChunk(BaseModel):
        content_chunk: str
        chat_session_id: str | None = None
        finish_reason: str | None = None

    class UnknownEvent(BaseModel):
        event: str
        data: str

    return MessageChunk, RecordsCited, UnknownEvent


class Peer:
    """One client library: ``async with peer:`` opens its pool; ``stream()`` yields events."""

    name = ""
    #: The type of the content events, to check that decoding happened.
    chunk_type: type[Any] = object

    def __init__(self, base_url: str, max_connections: int = 100):
        self.base_url = base_url
        self.max_connections = max_connections

    async def __aenter__(self) -> Peer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def stream(self, scenario: str) -> AsyncIterator[Any]:
        raise NotImplementedError

    async def count(self, scenario: str) -> tuple[int, int]:
        """Read a whole stream: (events, content events of the expected typed class)."""
        chunk_type = self.chunk_type
        events = chunks = 0
        async for event in self.stream(scenario):
            events += 1
            if type(event) is chunk_type:
                chunks += 1
        return events, chunks

    def sent_ns(self, event: Any) -> int | None:
        """The server's send time carried by a paced event, or None for other events."""
        if type(event) is self.chunk_type and event.content_chunk:
            return int(event.content_chunk)
        return None

    async def release(self, group: str) -> None:
        """Tell the server to finish the held streams of ``group`` (harness, not measured).

        Done with the standard library, so no peer's process loads another HTTP client.
        """
        import asyncio
        import urllib.request

        def get() -> None:
            with urllib.request.urlopen(f"{self.base_url}/release/{group}") as response:
                response.read()

        await asyncio.to_thread(get)

    async def token_pair(self) -> None:
        """One tokens.create and one tokens.revoke."""
        raise NotImplementedError


class Chatsdk(Peer):
    name = "chatsdk"

    async def __aenter__(self) -> Chatsdk:
        import chatsdk

        self.chunk_type = chatsdk.MessageChunk
        self.client = chatsdk.ChatClient(
            API_KEY,
            project=PROJECT,
            base_url=self.base_url,
            max_connections=self.max_connections,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        session = getattr(self, "session", None)
        if session is not None:
            await session.close()

    def stream(self, scenario: str) -> AsyncIterator[Any]:
        if scenario.startswith(COMPLETIONS):
            return self.completions(scenario)
        # The public API itself: no wrapper between the caller and ChatStream.
        return self.client.chat.create(integration_id=scenario, messages="How do I retry?")

    #: How the completions row reads chatsdk (reported with the results).
    completions_via = ""

    def completions(self, scenario: str) -> AsyncIterator[Any]:
        chat = self.client.chat
        if hasattr(chat, "completions"):
            self.completions_via = "client.chat.completions.create"
            return chat.completions.create(model=scenario, messages=MESSAGES)  # type: ignore[no-any-return]
        self.completions_via = "SSEDecoder.feed_runs + msgspec over aiohttp"
        return self._completions_by_hand(scenario)

    async def _completions_by_hand(self, scenario: str) -> AsyncIterator[Any]:
        # Until chatsdk has client.chat.completions: its decoder and its chunk type over
        # aiohttp, as the stream layer will read them.
        import aiohttp
        import msgspec

        from chatsdk.models import ChatCompletionChunk
        from chatsdk.sse import SSEDecoder

        decode = msgspec.json.Decoder(ChatCompletionChunk).decode
        session = getattr(self, "session", None)
        if session is None:
            limit = self.max_connections
            session = self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=limit)
            )
        body = {"model": scenario, "messages": MESSAGES, "stream": True}
        headers = {"Authorization": f"Bearer {API_KEY}", "Accept": "text/event-stream"}
        async with session.post(
            f"{self.base_url}/chat/completions", json=body, headers=headers
        ) as response:
            response.raise_for_status()
            decoder = SSEDecoder()
            async for chunk in response.content.iter_any():
                for _, datas in decoder.feed_runs(chunk):
                    for data in datas:
                        if data == "[DONE]":
                            return
                        yield decode(data)
            decoder.end()
            raise RuntimeError("the stream ended without [DONE]")

    async def token_pair(self) -> None:
        token = await self.client.tokens.create(embed_origin="https://a.example")
        await self.client.tokens.revoke(token.client_token)


class AiohttpRaw(Peer):
    """The floor: aiohttp reading the body, counting event boundaries, parsing nothing."""

    name = "aiohttp-raw"
    chunk_type = bytes

    async def __aenter__(self) -> AiohttpRaw:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    def _post(self, scenario: str) -> Any:
        headers = {"Authorization": f"Bearer {API_KEY}", "Accept": "text/event-stream"}
        if scenario.startswith(COMPLETIONS):
            body = {"model": scenario, "messages": MESSAGES, "stream": True}
            return self.session.post(
                f"{self.base_url}/chat/completions", json=body, headers=headers
            )
        return self.session.post(
            f"{self.base_url}/chat_sessions/chat_results",
            json=request_body(scenario),
            headers=headers,
        )

    async def count(self, scenario: str) -> tuple[int, int]:
        # Bytes only: count the blank lines that end events (LF LF, or CR CR, or CRLF
        # CRLF, as the body has them), including one cut between two chunks.
        term = terminator(scenario)
        keep = len(term) - 1
        events = 0
        async with self._post(scenario) as response:
            response.raise_for_status()
            last = b""
            async for chunk in response.content.iter_any():
                events += chunk.count(term)
                if last:
                    events += (last + chunk[:keep]).count(term)
                last = chunk[-keep:]
        return events, events - 1

    async def stream(self, scenario: str) -> AsyncIterator[Any]:
        # For the latency and concurrency runs: each event's raw bytes, split, not parsed.
        async with self._post(scenario) as response:
            response.raise_for_status()
            buffer = b""
            async for chunk in response.content.iter_any():
                *events, buffer = (buffer + chunk).split(b"\n\n")
                for event in events:
                    yield event

    def sent_ns(self, event: Any) -> int | None:
        start = event.find(b'"content_chunk":"')
        if start < 0 or b"event: message_chunk" not in event:
            return None
        end = event.find(b'"', start + 17)
        return int(event[start + 17 : end]) if end > start + 17 else None

    async def token_pair(self) -> None:
        # The floor for token calls: the same two requests, bodies read, not decoded.
        headers = {"Gram-Key": API_KEY, "Gram-Project": PROJECT}
        async with self.session.post(
            f"{self.base_url}/rpc/chatSessions.create",
            json={"embed_origin": "https://a.example", "expires_after": 3600},
            headers=headers,
        ) as response:
            response.raise_for_status()
            await response.read()
        async with self.session.delete(
            f"{self.base_url}/rpc/chatSessions.revoke",
            params={"token": "eyJ.eyJ.sig"},
            headers=headers,
        ) as response:
            response.raise_for_status()
            await response.read()


class HttpxSse(Peer):
    name = "httpx-sse"

    async def __aenter__(self) -> HttpxSse:
        import httpx
        from httpx_sse import aconnect_sse

        self.chunk_type, self.cited_type, self.unknown_type = pydantic_models()
        self.aconnect_sse = aconnect_sse
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            limits=httpx.Limits(
                max_connections=self.max_connections or None,
                max_keepalive_connections=self.max_connections or None,
            ),
            timeout=httpx.Timeout(60.0),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def stream(self, scenario: str) -> AsyncIterator[Any]:
        if scenario.startswith(COMPLETIONS):
            model = completions_models()
            async with self.aconnect_sse(
                self.client,
                "POST",
                "/chat/completions",
                json={"model": scenario, "messages": MESSAGES, "stream": True},
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as source:
                source.response.raise_for_status()
                async for sse in source.aiter_sse():
                    if sse.data == "[DONE]":
                        return
                    yield model.model_validate_json(sse.data)
            return
        chunk, cited, unknown = self.chunk_type, self.cited_type, self.unknown_type
        async with self.aconnect_sse(
            self.client,
            "POST",
            "/chat_sessions/chat_results",
            json=request_body(scenario),
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                if sse.event == "message_chunk":
                    yield chunk.model_validate_json(sse.data)
                elif sse.event == "records_cited":
                    yield cited.model_validate_json(sse.data)
                else:
                    yield unknown(event=sse.event, data=sse.data)

    async def token_pair(self) -> None:
        headers = {"Gram-Key": API_KEY, "Gram-Project": PROJECT}
        response = await self.client.post(
            "/rpc/chatSessions.create",
            json={"embed_origin": "https://a.example", "expires_after": 3600},
            headers=headers,
        )
        response.raise_for_status()
        token = self.token_type.model_validate_json(response.content)
        response = await self.client.delete(
            "/rpc/chatSessions.revoke", params={"token": token.client_token}, headers=headers
        )
        response.raise_for_status()

    @property
    def token_type(self) -> type[Any]:
        model = getattr(self, "_token_type", None)
        if model is None:
            from pydantic import BaseModel

            class ChatSessionToken(BaseModel):
                client_token: str
                embed_origin: str
                expires_after: int
                status: str
                user_identifier: str | None = None

            model = self._token_type = ChatSessionToken
        return model


class OpenaiSse(Peer):
    """The OpenAI SDK's own SSE decoder over the HTTP client that SDK ships with.

    openai >= 3 is built on ``httpx2`` (older releases on ``httpx``); the decoder is
    ``openai._streaming.SSEDecoder.aiter_bytes``, the same call ``AsyncStream`` makes.
    """

    name = "openai-sse"

    async def __aenter__(self) -> OpenaiSse:
        from openai._streaming import SSEDecoder

        try:
            import httpx2 as http
        except ImportError:  # openai < 3
            import httpx as http  # type: ignore[no-redef]
        self.decoder_type = SSEDecoder
        self.chunk_type, self.cited_type, self.unknown_type = pydantic_models()
        self.client = http.AsyncClient(
            base_url=self.base_url,
            limits=http.Limits(
                max_connections=self.max_connections or None,
                max_keepalive_connections=self.max_connections or None,
            ),
            timeout=http.Timeout(60.0),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def stream(self, scenario: str) -> AsyncIterator[Any]:
        chunk, cited, unknown = self.chunk_type, self.cited_type, self.unknown_type
        async with self.client.stream(
            "POST",
            "/chat_sessions/chat_results",
            json=request_body(scenario),
            headers={"Authorization": f"Bearer {API_KEY}", "Accept": "text/event-stream"},
        ) as response:
            response.raise_for_status()
            async for sse in self.decoder_type().aiter_bytes(response.aiter_bytes()):
                if sse.event == "message_chunk":
                    yield chunk.model_validate_json(sse.data)
                elif sse.event == "records_cited":
                    yield cited.model_validate_json(sse.data)
                else:
                    yield unknown(event=sse.event or "message", data=sse.data)


class OpenaiClient(Peer):
    """openai-python's own call: ``AsyncOpenAI().chat.completions.create(stream=True)``."""

    name = "openai"

    async def __aenter__(self) -> OpenaiClient:
        from openai import AsyncOpenAI

        self.client = AsyncOpenAI(api_key=API_KEY, base_url=f"{self.base_url}/v1", max_retries=0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def stream(self, scenario: str) -> AsyncIterator[Any]:
        stream = await self.client.chat.completions.create(
            model=scenario,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        async for chunk in stream:
            yield chunk


class AiohttpSseClient(Peer):
    name = "aiohttp-sse-client"

    async def __aenter__(self) -> AiohttpSseClient:
        import aiohttp
        from aiohttp_sse_client.client import EventSource

        self.event_source = EventSource
        self.chunk_type, self.cited_type, self.unknown_type = pydantic_models()
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def stream(self, scenario: str) -> AsyncIterator[Any]:
        chunk, cited, unknown = self.chunk_type, self.cited_type, self.unknown_type
        async with self.event_source(
            f"{self.base_url}/chat_sessions/chat_results",
            option={"method": "POST"},
            session=self.session,
            json=request_body(scenario),
            headers={"Authorization": f"Bearer {API_KEY}"},
            max_connect_retry=0,
        ) as source:
            async for sse in source:
                if sse.type == "message_chunk":
                    yield chunk.model_validate_json(sse.data)
                elif sse.type == "records_cited":
                    yield cited.model_validate_json(sse.data)
                    # EventSource reconnects when a body ends (browser semantics); the
                    # last event of our streams is records_cited, so stop here.
                    return
                else:
                    yield unknown(event=sse.type or "message", data=sse.data)


PEERS: dict[str, type[Peer]] = {
    cls.name: cls
    for cls in (Chatsdk, AiohttpRaw, HttpxSse, OpenaiSse, OpenaiClient, AiohttpSseClient)
}
