"""Routes of the chat_results wire (SPEC 1.4, 1.5; Inkeep v0, deprecated):
``POST /chat_sessions/chat_results`` and ``POST /chat_sessions/{id}/chat_results``.

The server keeps the history of each session: an answer sees every earlier turn.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated

import msgspec
from aiohttp import web

from chatsdk.models import ChatResponse, Message
from chatsdk.server.errors import ApiError, decode_body, invalid, json_encoder
from chatsdk.server.plumbing import ServerState, authenticate_chat, read_body
from chatsdk.server.responder import Answer, split_words
from chatsdk.server.responder import answer as respond
from chatsdk.server.streaming import Event, answer_once

__all__ = [
    "ChatSessionIn",
    "ContinueChatBody",
    "CreateChatBody",
    "chat_continue",
    "chat_create",
]

_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


# Server-side views of the request bodies of models.py: the same messages, plus the
# constraints and defaults the wire allows (a missing ``stream`` is false).
class ChatSessionIn(msgspec.Struct, frozen=True, kw_only=True):
    """The ``chat_session`` of a create request: at least one message."""

    messages: Annotated[
        list[Message],
        msgspec.Meta(
            min_length=1, description="The conversation so far; the last message is the user's."
        ),
    ]
    guidance: str | None = None
    context: str | None = None
    tags: list[str] | None = None


class CreateChatBody(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``POST /chat_sessions/chat_results``."""

    integration_id: _NonEmpty
    chat_session: ChatSessionIn
    chat_mode: str | None = None
    stream: bool | None = False


class ContinueChatBody(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``POST /chat_sessions/{chat_session_id}/chat_results``."""

    integration_id: _NonEmpty
    message: Message
    stream: bool | None = False


class _ChunkData(msgspec.Struct, frozen=True):
    # Field order as the public service sends it; null finish_reason is sent, not omitted.
    chat_session_id: str
    content_chunk: str
    finish_reason: str | None


_create_decoder = msgspec.json.Decoder(CreateChatBody)
_continue_decoder = msgspec.json.Decoder(ContinueChatBody)


async def chat_create(state: ServerState, request: web.Request) -> web.StreamResponse:
    """``POST /chat_sessions/chat_results``: start a session and answer its last message."""
    caller = authenticate_chat(state, request, gram_key=False)
    body = await read_body(state, request)
    params = decode_body(_create_decoder, body)
    messages = params.chat_session.messages
    if messages[-1].role != "user":
        loc: list[str | int] = ["body", "chat_session", "messages", len(messages) - 1, "role"]
        raise invalid(loc, "the last message must be a user message")
    return await _turn(
        state, request, caller, body, None, params.integration_id, messages, params.stream
    )


async def chat_continue(state: ServerState, request: web.Request) -> web.StreamResponse:
    """``POST /chat_sessions/{chat_session_id}/chat_results``: answer the next turn."""
    caller = authenticate_chat(state, request, gram_key=False)
    body = await read_body(state, request)
    params = decode_body(_continue_decoder, body)
    if params.message.role != "user":
        raise invalid(["body", "message", "role"], "the message must be a user message")
    session_id = request.match_info["chat_session_id"]
    return await _turn(
        state,
        request,
        caller,
        body,
        session_id,
        params.integration_id,
        [params.message],
        params.stream,
    )


async def _turn(
    state: ServerState,
    request: web.Request,
    caller: str,
    body: bytes,
    session_id: str | None,
    integration_id: str,
    new_messages: list[Message],
    stream: bool | None,
) -> web.StreamResponse:
    store = state.store

    def produce() -> tuple[str, list[Event] | bytes]:
        nonlocal session_id
        if session_id is not None and not store.session_exists(session_id, state.project):
            raise ApiError(404, f"chat session {session_id} not found")
        history = [] if session_id is None else store.history(session_id)
        answer = respond([*history, *new_messages])
        reply = Message(role="assistant", content=answer.text, records_cited=answer.records_cited)
        if session_id is None:
            session_id = str(uuid.uuid4())
            store.create_session(session_id, state.project, integration_id, time.time())
        store.append_messages(session_id, [*new_messages, reply])
        if stream:
            return session_id, _answer_events(session_id, answer)
        return session_id, json_encoder.encode(
            ChatResponse(chat_session_id=session_id, message=reply)
        )

    return await answer_once(state, request, caller, body, stream=bool(stream), produce=produce)


def _answer_events(session_id: str, answer: Answer) -> list[Event]:
    """The event log of an answer: word chunks, the final chunk, then the citations."""
    events = [
        ("message_chunk", json_encoder.encode(_ChunkData(session_id, word, None)).decode())
        for word in split_words(answer.text)
    ]
    events.append(
        ("message_chunk", json_encoder.encode(_ChunkData(session_id, "", "stop")).decode())
    )
    events.append(("records_cited", json_encoder.encode(answer.records_cited).decode()))
    return events
