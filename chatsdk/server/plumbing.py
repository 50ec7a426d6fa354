"""Request plumbing shared by every route: the server state the handlers work on,
the middleware (request ids, injected failures, body limits, error bodies, CORS),
credentials, idempotency and the open-stream limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from chatsdk._rules import origin_problem
from chatsdk.server.auth import TokenError, TokenExpired, TokenSigner, keys_equal
from chatsdk.server.errors import ApiError, error_response
from chatsdk.server.faults import Faults, FaultState
from chatsdk.server.store import IdempotencyRecord, Store

__all__ = [
    "CHAT_PATH_PREFIXES",
    "Claim",
    "ServerState",
    "authenticate_chat",
    "authenticate_key",
    "idempotency_lookup",
    "last_event_id",
    "make_middleware",
    "preflight",
    "read_body",
    "replayed",
    "request_id",
    "save_outcome",
    "stream_slot",
]

logger = logging.getLogger("chatsdk.server")

# Routes that are not API calls: they never count towards, or fail by, ``fail_first``.
_UNCOUNTED_PATHS: Final = frozenset({"/healthz", "/openapi.json"})
# Where the chat routes of both wires live (SPEC 1.9): they get CORS headers, since
# browsers embedding the chat call them cross-origin with a client token.
CHAT_PATH_PREFIXES: Final = ("/chat_sessions/", "/v0/chat_sessions/", "/chat/", "/v1/chat/")
# Echoed request ids are bounded and printable so they cannot smuggle anything into
# our response headers or a log line.
_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
_IDEMPOTENCY_KEY_MAX: Final = 255
# Last-Event-ID values this server sends are small decimal integers; anything else
# (Unicode digits, thousands of digits) is refused before int() or SQLite sees it.
_EVENT_ID_RE: Final = re.compile(r"[0-9]{1,18}")
# Three base64url segments: a JWT (RFC 7519 compact form) sent as a bearer token.
_JWT_RE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_PURGE_INTERVAL: Final = 60.0

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("chatsdk_request_id")


def request_id() -> str:
    """The id of the request being handled (the caller's own when it sent a valid one)."""
    return _request_id.get()


@dataclass
class ServerState:
    """What the handlers of one server share: settings, store, signer, faults, streams.

    The routes work on this, never on :class:`~chatsdk.server.ReferenceServer` itself.
    """

    api_key: str
    project: str
    result_ttl: float
    max_body_size: int
    max_streams_per_key: int
    fault_state: FaultState
    store_: Store | None = None
    signer_: TokenSigner | None = None
    closing: bool = False
    open_streams: Counter[str] = field(default_factory=Counter)
    stream_tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    last_purge: float = 0.0

    @property
    def store(self) -> Store:
        """The open store (running servers only)."""
        if self.store_ is None:
            raise RuntimeError("the server is not running")
        return self.store_

    @property
    def signer(self) -> TokenSigner:
        """The token signer (running servers only)."""
        if self.signer_ is None:
            raise RuntimeError("the server is not running")
        return self.signer_

    def purge(self) -> None:
        """Drop expired result logs, idempotency records and revocations, at most once
        a minute."""
        now = time.time()
        if now - self.last_purge >= _PURGE_INTERVAL:
            self.last_purge = now
            self.store.purge(now - self.result_ttl, now)


# -- middleware and CORS ---------------------------------------------------------------


def make_middleware(state: ServerState) -> Middleware:
    """Request ids, injected failures, body limits, uniform error bodies and CORS."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        incoming = request.headers.get("X-Request-Id", "")
        rid = incoming if _REQUEST_ID_RE.fullmatch(incoming) else uuid.uuid4().hex
        _request_id.set(rid)
        try:
            if request.path not in _UNCOUNTED_PATHS and request.method != "OPTIONS":
                faults = state.fault_state
                if faults.take_failure():
                    raise _injected_failure(faults.faults)
            length = request.content_length
            if length is not None and length > state.max_body_size:
                raise ApiError(413, f"request body exceeds {state.max_body_size} bytes")
            response = await handler(request)
        except ApiError as exc:
            response = error_response(request, exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
            response = error_response(request, ApiError(exc.status, exc.reason, headers=headers))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("unexpected error handling %s %s", request.method, request.path)
            response = error_response(request, ApiError(500, "internal server error"))
        if not response.prepared:
            response.headers["X-Request-Id"] = rid
            response.headers.update(cors_headers(request))
        return response

    return middleware


def _injected_failure(faults: Faults) -> ApiError:
    retry_after = faults.retry_after
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    message = "injected failure (Faults.fail_first)"
    if faults.fail_status == 402:
        # Gram's answer to a free-tier account out of credits (SPEC 1.8).
        message = f"insufficient_credits: {message}"
    return ApiError(faults.fail_status, message, headers=headers)


def cors_headers(request: web.Request) -> dict[str, str]:
    """CORS answer headers of a chat route; the origin itself is checked against the
    client token, not here."""
    origin = request.headers.get("Origin")
    if origin is None or not request.path.startswith(CHAT_PATH_PREFIXES):
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": "Content-Location, X-Request-Id, Retry-After",
        "Vary": "Origin",
    }


async def preflight(request: web.Request) -> web.StreamResponse:
    """CORS preflight for the chat routes."""
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Allow-Headers": (
                "Authorization, Content-Type, Gram-Chat-Session, Gram-Key, Gram-Project,"
                " Idempotency-Key, Last-Event-ID, X-Request-Id"
            ),
            "Access-Control-Max-Age": "600",
        },
    )


# -- credentials -------------------------------------------------------------------------


def authenticate_key(state: ServerState, request: web.Request) -> None:
    """Token operations: ``Gram-Key`` + ``Gram-Project``, never a client token."""
    key = request.headers.get("Gram-Key")
    if key is None:
        raise ApiError(401, "missing Gram-Key header")
    if not keys_equal(key, state.api_key):
        raise ApiError(401, "invalid API key")
    if "Gram-Chat-Session" in request.headers:
        # A client token must never be able to mint or revoke tokens, even when it
        # travels next to a key: refuse the ambiguous request outright.
        raise ApiError(403, "client tokens cannot create or revoke chat-session tokens")
    _check_project(state, request.headers.get("Gram-Project"))


def _check_project(state: ServerState, project: str | None) -> None:
    if not project:
        raise ApiError(401, "missing Gram-Project header")
    if project != state.project:
        raise ApiError(403, "the credentials are not valid for this project")


def authenticate_chat(state: ServerState, request: web.Request, *, gram_key: bool) -> str:
    """Chat operations (both wires, SPEC 1.1 and 1.8); returns the caller's identity.

    Accepted, first match wins: ``Gram-Chat-Session`` + ``Gram-Project`` (client token);
    ``Authorization: Bearer`` with the API key, or with a client token (the style of
    Gram's RFC deprecating ``Gram-Chat-Session``; ``Gram-Project`` optional, checked when
    sent); and, where ``gram_key`` (the Chat Completions wire, which Gram serves),
    ``Gram-Key`` + ``Gram-Project`` (API key). The chat_results wire is Inkeep's only, and
    Gram's key style was never a chat credential there.
    """
    headers = request.headers
    project = headers.get("Gram-Project")
    token = headers.get("Gram-Chat-Session")
    if token is not None:
        if not project:
            raise ApiError(401, "missing Gram-Project header")
        return _authenticate_client_token(state, request, token)
    authorization = headers.get("Authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer":
            raise ApiError(401, "invalid API key")
        if keys_equal(value, state.api_key):
            if project is not None and project != state.project:
                raise ApiError(403, "the credentials are not valid for this project")
            return "key"
        if _JWT_RE.fullmatch(value):
            return _authenticate_client_token(state, request, value)
        raise ApiError(401, "invalid API key")
    key = headers.get("Gram-Key")
    if key is not None and gram_key:
        if not keys_equal(key, state.api_key):
            raise ApiError(401, "invalid API key")
        _check_project(state, project)
        return "key"
    also = ", 'Gram-Key' with 'Gram-Project'," if gram_key else ""
    raise ApiError(
        401,
        f"missing credentials: send 'Authorization: Bearer <api key or client token>'{also}"
        " or 'Gram-Chat-Session' with 'Gram-Project'",
    )


def _authenticate_client_token(state: ServerState, request: web.Request, token: str) -> str:
    project = request.headers.get("Gram-Project")
    try:
        claims = state.signer.verify(token)
    except TokenExpired:
        raise ApiError(401, "client token expired") from None
    except TokenError:
        raise ApiError(401, "invalid client token") from None
    if claims.project != state.project or (project is not None and project != state.project):
        raise ApiError(403, "the client token is not valid for this project")
    if state.store.is_revoked(claims.jti):
        raise ApiError(401, "client token revoked")
    origin = request.headers.get("Origin")
    # Compared as RFC 6454 compares origins: the host in any case (browsers send it
    # lowercase, and an embed_origin may have been given otherwise).
    if origin is not None and origin.lower() not in {aud.lower() for aud in claims.aud}:
        message = f"Origin {origin} does not match audience claim: {', '.join(claims.aud)}"
        problem = origin_problem(origin)
        if problem is not None:  # e.g. ":443", which a browser never sends
            message += f" (the Origin {problem})"
        raise ApiError(403, message, plain=True)
    return f"token:{claims.jti}"


# -- bodies, headers, idempotency, stream slots ------------------------------------------


async def read_body(state: ServerState, request: web.Request) -> bytes:
    """The request body, or a 413 past the server's limit."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"request body exceeds {state.max_body_size} bytes") from None


def last_event_id(request: web.Request) -> int:
    """``Last-Event-ID`` as a number (0 when absent), or a 400 when it is not one of ours."""
    raw = request.headers.get("Last-Event-ID", "").strip()
    if not raw:
        return 0
    if not _EVENT_ID_RE.fullmatch(raw):
        raise ApiError(400, "Last-Event-ID must be an event id sent by this server")
    return int(raw)


@dataclass(frozen=True)
class Claim:
    """A request that will store the first outcome under its idempotency key."""

    scope: tuple[str, str, str]
    body_hash: str


def idempotency_lookup(
    state: ServerState, request: web.Request, body: bytes
) -> IdempotencyRecord | Claim | None:
    """The stored first outcome for the request's key, else a claim to store one.

    None without a key; a different body under the same key is a 409. Concurrent
    repeats are safe without locks: between this lookup and :func:`save_outcome`
    the handlers never await, so on the one event loop a repeat sees either no
    record (the first has not started) or the finished one.
    """
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 0 < len(key) <= _IDEMPOTENCY_KEY_MAX:
        raise ApiError(400, f"Idempotency-Key must be 1 to {_IDEMPOTENCY_KEY_MAX} characters")
    scope = (state.project, f"{request.method} {request.path}", key)
    body_hash = hashlib.sha256(body).hexdigest()
    record = state.store.idempotency_record(*scope, not_before=time.time() - state.result_ttl)
    if record is None:
        return Claim(scope, body_hash)
    if record.body_hash != body_hash:
        raise ApiError(409, "Idempotency-Key was already used with a different request body")
    return record


def save_outcome(
    state: ServerState,
    claim: Claim | None,
    content_type: str,
    body: bytes = b"",
    result_id: str | None = None,
) -> None:
    """Store a 200 outcome for the claimed key (inside the caller's transaction).

    Only successes are stored: a failed attempt leaves the key free, so its retry
    does the work instead of replaying the failure.
    """
    if claim is not None:
        record = IdempotencyRecord(claim.body_hash, 200, content_type, body, result_id)
        state.store.save_idempotency_record(*claim.scope, record, time.time())


def replayed(record: IdempotencyRecord) -> web.Response:
    """The stored first outcome of a non-streamed call, sent again."""
    return web.Response(status=record.status, body=record.body, content_type=record.content_type)


@contextlib.contextmanager
def stream_slot(state: ServerState, caller: str) -> Iterator[None]:
    """Hold one of the caller's open-stream slots, or answer 429 when none is left."""
    counts = state.open_streams
    if counts[caller] >= state.max_streams_per_key:
        raise ApiError(
            429, "too many open streams for these credentials", headers={"Retry-After": "1"}
        )
    counts[caller] += 1
    try:
        yield
    finally:
        counts[caller] -= 1
        if counts[caller] <= 0:
            del counts[caller]
