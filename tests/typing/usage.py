"""Usage examples that tests/test_public_api.py type-checks with mypy --strict."""

from __future__ import annotations

import chatsdk
from chatsdk.server import Faults, ReferenceServer
from chatsdk.sse import ServerSentEvent, SSEDecoder


async def backend(url: str) -> str:
    async with chatsdk.ChatClient(
        "key", project="demo", base_url=url, timeout=chatsdk.Timeout(idle=30), retries=3
    ) as client:
        tok: chatsdk.ChatSessionToken = await client.tokens.create(
            embed_origin="https://docs.example.com", expires_after=900
        )
        await client.tokens.revoke(tok.client_token)
        stream: chatsdk.ChatStream = client.chat.create(
            integration_id="docs", messages=[chatsdk.Message(role="user", content="q")]
        )
        async for event in stream:
            match event:
                case chatsdk.MessageChunk(content_chunk=text):
                    print(text)
                case chatsdk.RecordsCited(citations=cites):
                    print([c.record.url for c in cites])
                case chatsdk.UnknownEvent(event=name, data=data):
                    print(name, data)
        session_id: str | None = stream.chat_session_id
        assert session_id is not None
        resumes: int = stream.resumes
        replays_dropped: int = stream.replays_dropped
        print(resumes, replays_dropped)
        async with client.chat.continue_(session_id, integration_id="docs", message="more") as s:
            async for piece in s.text_stream:
                print(piece)
            result: chatsdk.ChatResult = await s.final_result()
        again: chatsdk.ChatResult = await client.chat.create(integration_id="d", messages="q")
        return result.message.content + again.text


async def browser(url: str) -> None:
    async def fresh() -> str:
        return "token"

    async with chatsdk.ChatClient(session_token=fresh, project="demo", base_url=url) as client:
        try:
            await client.chat.create(integration_id="docs", messages="q")
        except chatsdk.UnprocessableEntityError as exc:
            print(exc.detail, exc.status, exc.request_id)
        except chatsdk.APIStatusError as exc:
            print(exc.status, exc.body, exc.headers)
        except chatsdk.StreamError as exc:
            print(exc.event, exc.received)


def sync_use(url: str) -> None:
    with chatsdk.SyncChatClient("key", project="demo", base_url=url) as client:
        for event in client.chat.create(integration_id="docs", messages="q"):
            print(event)


async def decoder_and_server() -> None:
    events: list[ServerSentEvent] = SSEDecoder().feed(b"data: x\n\n")
    print(events[0].data, events[0].event, events[0].id, events[0].retry)
    async with ReferenceServer(faults=Faults(drop_after_events=3)) as server:
        print(server.base_url)


async def completions(url: str) -> None:
    async with chatsdk.ChatClient("key", project="demo", base_url=url) as client:
        question = {"role": "user", "content": "How do I retry?"}
        async with client.chat.completions.create(model="m", messages=[question]) as stream:
            async for chunk in stream:
                if isinstance(chunk, chatsdk.ChatCompletionChunk):
                    for choice in chunk.choices:
                        print(choice.delta.content or "")
            first: chatsdk.ChatCompletionResult = await stream
        # A result's message goes back into the conversation as it is.
        history: list[chatsdk.ChatCompletionMessageParam] = [question, first.message]
        history.append({"role": "user", "content": "Tell me more."})
        more = await client.chat.completions.create(model="m", messages=history)
        print(more.text)
        # `async with` keeps the stream's own type (its chat_session_id).
        async with client.chat.create(integration_id="docs", messages="q") as chat:
            print(chat.chat_session_id)
        try:
            await client.chat.completions.create(model="m", messages="q")
        except chatsdk.RateLimitError as exc:
            waits: list[str] = exc.headers.getall("Retry-After", [])
            print(waits)


def sync_completions(url: str) -> None:
    # The sync facade takes the async client's parameters, typed.
    with chatsdk.SyncChatClient("key", project="demo", base_url=url, timeout=5) as client:
        tok: chatsdk.ChatSessionToken = client.tokens.create(embed_origin="https://a.example")
        client.tokens.revoke(tok, timeout=3)
        with client.chat.completions.create(model="m", messages="q", max_tokens=5) as stream:
            result: chatsdk.ChatCompletionResult = stream.final_result()
            print(result.text)
