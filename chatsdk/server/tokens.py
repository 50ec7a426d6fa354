"""Routes of the token operations (SPEC 1.2, 1.3; Gram ``chatSessions``):
``POST /rpc/chatSessions.create`` and ``DELETE /rpc/chatSessions.revoke``."""

from __future__ import annotations

import time
from typing import Annotated

import msgspec
from aiohttp import web

from chatsdk._rules import (
    MAX_EXPIRES_AFTER,
    MIN_EXPIRES_AFTER,
    ORIGIN_PATTERN,
    expires_after_problem,
    origin_problem,
)
from chatsdk.models import ChatSessionToken
from chatsdk.server.auth import TokenError
from chatsdk.server.errors import NOT_UTF8, TOO_DEEP, ApiError
from chatsdk.server.plumbing import (
    ServerState,
    authenticate_key,
    idempotency_lookup,
    read_body,
    replayed,
    save_outcome,
)
from chatsdk.server.store import IdempotencyRecord

__all__ = ["CreateChatSessionRequest", "create_token", "revoke_token"]


class CreateChatSessionRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``POST /rpc/chatSessions.create`` as the server reads it (a default for
    ``expires_after``). The range and the origin rule are checked after decoding (a
    422, while a wrong type is a 400, as Goa answers), so they are schema-only here."""

    embed_origin: Annotated[
        str,
        msgspec.Meta(
            description="The origin (scheme://host[:port]) of the embedding page.",
            extra_json_schema={"pattern": ORIGIN_PATTERN},
        ),
    ]
    expires_after: Annotated[
        int,
        msgspec.Meta(
            extra_json_schema={"minimum": MIN_EXPIRES_AFTER, "maximum": MAX_EXPIRES_AFTER}
        ),
    ] = MAX_EXPIRES_AFTER
    user_identifier: str | None = None


_decoder = msgspec.json.Decoder(CreateChatSessionRequest)
_token_encoder = msgspec.json.Encoder()


async def create_token(state: ServerState, request: web.Request) -> web.StreamResponse:
    """``POST /rpc/chatSessions.create``: mint a client token."""
    authenticate_key(state, request)
    if request.content_type != "application/json":
        raise ApiError(415, "Content-Type must be application/json")
    body = await read_body(state, request)
    try:
        params = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"invalid request body: {exc}") from None
    except (RecursionError, UnicodeDecodeError) as exc:
        # Outside msgspec's DecodeError family: absurd nesting, a string not UTF-8.
        msg = TOO_DEEP if isinstance(exc, RecursionError) else NOT_UTF8
        raise ApiError(400, f"invalid request body: {msg}") from None
    if problem := expires_after_problem(params.expires_after):
        raise ApiError(422, f"expires_after {problem}")
    if problem := origin_problem(params.embed_origin):
        raise ApiError(422, f"embed_origin {problem}")

    claim = idempotency_lookup(state, request, body)
    if isinstance(claim, IdempotencyRecord):
        return replayed(claim)
    token, _ = state.signer.mint(params.embed_origin, params.expires_after, params.user_identifier)
    answer = msgspec.to_builtins(
        ChatSessionToken(
            client_token=token,
            embed_origin=params.embed_origin,
            expires_after=params.expires_after,
            status="active",
            user_identifier=params.user_identifier,
        )
    )
    if params.user_identifier is None:
        del answer["user_identifier"]  # absent, not null, as the public service answers
    payload = _token_encoder.encode(answer)
    with state.store.transaction():
        save_outcome(state, claim, "application/json", payload)
    return web.Response(body=payload, content_type="application/json")


async def revoke_token(state: ServerState, request: web.Request) -> web.StreamResponse:
    """``DELETE /rpc/chatSessions.revoke?token=...``: revoke a client token (idempotent)."""
    authenticate_key(state, request)
    token = request.query.get("token")
    if not token:
        raise ApiError(400, "missing token query parameter")
    try:
        claims = state.signer.verify(token)
    except TokenError:
        raise ApiError(400, "invalid token") from None
    if claims.project != state.project:
        raise ApiError(400, "invalid token")
    state.store.revoke(claims.jti, claims.project, claims.exp, time.time())
    return web.Response(status=204)
