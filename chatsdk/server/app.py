"""The reference server: aiohttp routes and middleware, and :class:`ReferenceServer`.

URL layout (SPEC §1):

=======  ===============================================  ==================================
GET      ``/healthz``                                     liveness, plain ``ok``
POST     ``/rpc/chatSessions.create``                     mint a client token (API key)
DELETE   ``/rpc/chatSessions.revoke?token=...``           revoke a client token (API key)
POST     ``/chat_sessions/chat_results``                  first turn of a new session
POST     ``/chat_sessions/{chat_session_id}/chat_results`` next turn of a session
GET      ``/chat_sessions/results/{result_id}/events``    a result's event log (resume)
GET      ``/openapi.json``                                the OpenAPI 3.1 document of these
=======  ===============================================  ==================================

Errors of ``/rpc/`` routes are Goa ``ServiceError`` bodies with a ``goa-error``
header; errors of chat routes are ``{"detail": ...}`` JSON, except the origin
mismatch, which is plain text like the public service's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import os
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Annotated, Any, Final, Literal, Self, TypeVar

import anyio
import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from chatsdk.models import (
    ChatResponse,
    Message,
    RecordsCited,
    ServiceErrorBody,
    ValidationErrorItem,
)
from chatsdk.server.auth import TokenError, TokenExpired, TokenSigner, keys_equal, origin_error
from chatsdk.server.faults import Faults, FaultState
from chatsdk.server.openapi import openapi_json
from chatsdk.server.responder import Answer, split_words
from chatsdk.server.responder import answer as respond
from chatsdk.server.store import IdempotencyRecord, Store, StoredEvent

__all__ = ["ApiError", "ReferenceServer", "create_app"]

logger = logging.getLogger("chatsdk.server")

DEFAULT_API_KEY: Final = "chatsdk-test-key"
DEFAULT_PROJECT: Final = "demo"
# Large enough for any real chat history, small enough that a runaway client cannot
# make the server buffer unbounded memory.
DEFAULT_MAX_BODY_SIZE: Final = 1024 * 1024

# Goa's error names for the statuses the token operations can answer.
_SERVICE_ERROR_NAMES: Final[Mapping[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media",
    422: "invalid",
    429: "rate_limited",
    500: "unexpected",
    502: "gateway_error",
    503: "unavailable",
    504: "gateway_timeout",
}
_TEMPORARY_STATUSES: Final = frozenset({429, 502, 503, 504})

# Routes that are not API calls: they never count towards, or fail by, ``fail_first``.
_UNCOUNTED_PATHS: Final = frozenset({"/healthz", "/openapi.json"})
# Echoed request ids are bounded and printable so they cannot smuggle anything into
# our response headers or a log line.
_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
_IDEMPOTENCY_KEY_MAX: Final = 255
_PURGE_INTERVAL: Final = 60.0

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("chatsdk_request_id")
_json = msgspec.json.Encoder()


class ApiError(Exception):
    """An error answer; the middleware renders it in the format of the route family.

    ``detail`` replaces ``message`` in chat routes' ``{"detail": ...}`` bodies (the 422
    item list); ``plain`` sends ``message`` as a text/plain body instead of JSON.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
        detail: Any = None,
        plain: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.name = name or _SERVICE_ERROR_NAMES.get(status, "error")
        self.headers = dict(headers or {})
        self.detail = detail
        self.plain = plain


# -- request bodies (server-side view: defaults and constraints the wire allows) --------

_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class _TokenCreateBody(msgspec.Struct, frozen=True, kw_only=True):
    embed_origin: str
    expires_after: int = 3600
    user_identifier: str | None = None


class _TokenCreateResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    client_token: str
    embed_origin: str
    expires_after: int
    status: str
    user_identifier: str | None = None


class _MessageIn(msgspec.Struct, frozen=True, kw_only=True):
    role: Literal["user", "assistant"]
    content: str
    records_cited: RecordsCited | None = None

    def to_message(self) -> Message:
        return Message(role=self.role, content=self.content, records_cited=self.records_cited)


class _ChatSessionIn(msgspec.Struct, frozen=True, kw_only=True):
    messages: Annotated[list[_MessageIn], msgspec.Meta(min_length=1)]
    guidance: str | None = None
    context: str | None = None
    tags: list[str] | None = None


class _ChatCreateBody(msgspec.Struct, frozen=True, kw_only=True):
    integration_id: _NonEmpty
    chat_session: _ChatSessionIn
    chat_mode: str | None = None
    stream: bool | None = False


class _ChatContinueBody(msgspec.Struct, frozen=True, kw_only=True):
    integration_id: _NonEmpty
    message: _MessageIn
    stream: bool | None = False


class _ChunkData(msgspec.Struct, frozen=True):
    # Field order as the public service sends it; null finish_reason is sent, not omitted.
    chat_session_id: str
    content_chunk: str
    finish_reason: str | None


_token_body_decoder = msgspec.json.Decoder(_TokenCreateBody)
_create_body_decoder = msgspec.json.Decoder(_ChatCreateBody)
_continue_body_decoder = msgspec.json.Decoder(_ChatContinueBody)


# -- 422 detail from msgspec errors --------------------------------------------------

_AT_RE: Final = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_PATH_PART_RE: Final = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[([^\]]*)\]")
_MISSING_RE: Final = re.compile(r"^Object missing required field `([^`]+)`$")
_EXPECTED_RE: Final = re.compile(r"^Expected `([^`]+)`")
# pydantic's type names, which FastAPI services (the public chat API) put in "type".
_TYPE_NAMES: Final[Mapping[str, str]] = {
    "str": "string_type",
    "int": "int_type",
    "float": "float_type",
    "bool": "bool_type",
    "array": "list_type",
    "object": "model_attributes_type",
}


def _validation_item(exc: msgspec.ValidationError) -> ValidationErrorItem:
    """A 422 detail item from msgspec's ``message - at `$.a.b[0].c``` text."""
    match = _AT_RE.match(str(exc))
    assert match is not None  # the pattern matches any string
    msg, path = match.group("msg"), match.group("path") or "$"
    loc: list[str | int] = ["body"]
    for name, index, key in _PATH_PART_RE.findall(path[1:]):
        loc.append(name if name else int(index) if index else key)
    if missing := _MISSING_RE.match(msg):
        loc.append(missing.group(1))
        return ValidationErrorItem(loc=loc, msg="Field required", type="missing")
    if msg.startswith("Invalid enum value"):
        return ValidationErrorItem(loc=loc, msg=msg, type="literal_error")
    kind = "value_error"
    if expected := _EXPECTED_RE.match(msg):
        base = expected.group(1).split(" | ")[0]
        if "of length >=" in msg:
            kind = "string_too_short" if base == "str" else "too_short"
        else:
            kind = _TYPE_NAMES.get(base, "value_error")
    return ValidationErrorItem(loc=loc, msg=msg, type=kind)


_T = TypeVar("_T")
_TOO_DEEP: Final = "Invalid JSON: nested too deeply"
_NOT_UTF8: Final = "Invalid JSON: a string is not valid UTF-8"
# Last-Event-ID values this server sends are small decimal integers; anything else
# (Unicode digits, thousands of digits) is refused before int() or SQLite sees it.
_EVENT_ID_RE: Final = re.compile(r"[0-9]{1,18}")


def _decode_chat_body(decoder: msgspec.json.Decoder[_T], body: bytes) -> _T:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        item = _validation_item(exc)
    except msgspec.DecodeError as exc:
        item = ValidationErrorItem(loc=["body"], msg=f"Invalid JSON: {exc}", type="json_invalid")
    except (RecursionError, UnicodeDecodeError) as exc:
        # msgspec raises these outside its DecodeError family: for absurdly deep nesting
        # (even in an ignored unknown field) and for a string that is not UTF-8.
        msg = _TOO_DEEP if isinstance(exc, RecursionError) else _NOT_UTF8
        item = ValidationErrorItem(loc=["body"], msg=msg, type="json_invalid")
    raise ApiError(422, item.msg, detail=[item])


# -- idempotency ------------------------------------------------------------------


@dataclass(frozen=True)
class _Claim:
    """A request that will store the first outcome under its idempotency key."""

    scope: tuple[str, str, str]
    body_hash: str


def _fresh_id() -> str:
    return uuid.uuid4().hex


class ReferenceServer:
    """The chatsdk reference server: every operation of SPEC §1 on loopback, no network.

    ::

        async with ReferenceServer() as server:
            client = ChatClient(api_key=server.api_key, project=server.project,
                                base_url=server.base_url)

    ``db=None`` keeps state in memory; a path keeps sessions, revocations, result logs
    and the signing secret across restarts. Set :attr:`faults` between calls to make
    the following requests misbehave.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        project: str = DEFAULT_PROJECT,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        db: str | os.PathLike[str] | None = None,
        faults: Faults | None = None,
        signing_secret: str | None = None,
        result_ttl: float = 600.0,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        max_streams_per_key: int = 1000,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        if not project:
            raise ValueError("project must not be empty")
        if signing_secret is not None:
            TokenSigner(signing_secret, project)  # fail now, not at start(), on a weak secret
        self.api_key = api_key
        self.project = project
        self.host = host
        self.port = port
        self.db = db
        self.result_ttl = result_ttl
        self.max_body_size = max_body_size
        self.max_streams_per_key = max_streams_per_key
        self._signing_secret = signing_secret
        self._fault_state = FaultState(faults if faults is not None else Faults())
        self._runner: web.AppRunner | None = None
        self._store: Store | None = None
        self._signer: TokenSigner | None = None
        self._base_url: str | None = None
        self._closing = False
        self._stream_tasks: set[asyncio.Task[Any]] = set()
        self._open_streams: Counter[str] = Counter()
        self._last_purge = 0.0

    def __repr__(self) -> str:
        # No api_key here: reprs end up in logs and test reports.
        where = self._base_url or "not started"
        return f"ReferenceServer(project={self.project!r}, {where})"

    # -- public surface ---------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """The misbehaviour in force. Assigning a new value resets every fault counter."""
        return self._fault_state.faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self._fault_state = FaultState(value)

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server (the real port when ``port=0``)."""
        if self._base_url is None:
            raise RuntimeError("the server is not running; use 'async with' or start()")
        return self._base_url

    async def start(self) -> None:
        """Open the store, bind the socket and start serving."""
        if self._runner is not None:
            raise RuntimeError("the server is already running")
        self._closing = False
        store = Store(self.db)
        store.open()
        try:
            secret = self._signing_secret or store.signing_secret(lambda: secrets.token_urlsafe(48))
            self._signer = TokenSigner(secret, self.project)
            self._store = store
            self._purge()
            runner = web.AppRunner(
                create_app(self),
                access_log=None,
                # A backstop only: close() cancels open streams itself, so the remaining
                # handlers are short ones that finish well within this.
                shutdown_timeout=5.0,
            )
            await runner.setup()
            try:
                site = web.TCPSite(runner, self.host, self.port)
                await site.start()
            except BaseException:
                await runner.cleanup()
                raise
        except BaseException:
            store.close()
            self._store = None
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{shown}:{port}"

    async def close(self) -> None:
        """Stop serving: cut open streams, finish short requests, close the store.

        Shielded from cancellation: a close interrupted half-way would leak the socket
        and the store, and every step here is bounded.
        """
        with anyio.CancelScope(shield=True):
            await self._close()

    async def _close(self) -> None:
        runner = self._runner
        if runner is None:
            return
        self._closing = True
        # Stop accepting connections first, so no new stream starts while the open ones
        # are being cancelled.
        for site in list(runner.sites):
            await site.stop()
        tasks = [t for t in self._stream_tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await runner.cleanup()
        self._runner = None
        self._base_url = None
        if self._store is not None:
            self._store.close()
            self._store = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        """Serve until cancelled (Ctrl-C under ``asyncio.run``), then close.

        Starts the server if needed; call :meth:`start` first to learn ``base_url``.
        """
        if self._runner is None:
            await self.start()
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            await self.close()

    @contextlib.contextmanager
    def serve_in_thread(self) -> Iterator[Self]:
        """Run the server on its own event loop in a background thread.

        For synchronous code (the sync client, browsers, plain tests)::

            with ReferenceServer().serve_in_thread() as server:
                requests.get(server.base_url + "/healthz")
        """
        ready = threading.Event()
        loop_box: list[asyncio.AbstractEventLoop] = []
        stop_box: list[asyncio.Event] = []
        errors: list[BaseException] = []

        async def main() -> None:
            stop = asyncio.Event()
            loop_box.append(asyncio.get_running_loop())
            stop_box.append(stop)
            try:
                await self.start()
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            try:
                await stop.wait()
            finally:
                await self.close()

        thread = threading.Thread(
            target=asyncio.run, args=(main(),), name="chatsdk-reference-server", daemon=True
        )
        thread.start()
        ready.wait()
        if errors:
            thread.join()
            raise errors[0]
        try:
            yield self
        finally:
            loop_box[0].call_soon_threadsafe(stop_box[0].set)
            thread.join()

    # -- internals used by the routes -------------------------------------------------

    @property
    def store(self) -> Store:
        """The open store (running servers only)."""
        if self._store is None:
            raise RuntimeError("the server is not running")
        return self._store

    @property
    def signer(self) -> TokenSigner:
        """The token signer (running servers only)."""
        if self._signer is None:
            raise RuntimeError("the server is not running")
        return self._signer

    def _purge(self) -> None:
        now = time.time()
        if now - self._last_purge >= _PURGE_INTERVAL:
            self._last_purge = now
            self.store.purge(now - self.result_ttl, now)


# -- the application -----------------------------------------------------------------


def create_app(server: ReferenceServer) -> web.Application:
    """The aiohttp application serving ``server``'s routes."""
    routes = _Routes(server)
    app = web.Application(middlewares=[routes.middleware], client_max_size=server.max_body_size)
    app.router.add_get("/healthz", routes.healthz)
    app.router.add_post("/rpc/chatSessions.create", routes.create_token)
    app.router.add_delete("/rpc/chatSessions.revoke", routes.revoke_token)
    app.router.add_post("/chat_sessions/chat_results", routes.chat_create)
    app.router.add_post("/chat_sessions/{chat_session_id}/chat_results", routes.chat_continue)
    app.router.add_get("/chat_sessions/results/{result_id}/events", routes.result_events)
    app.router.add_route("OPTIONS", "/chat_sessions/{tail:.*}", routes.preflight)
    # Documentation routes; their paths are in _UNCOUNTED_PATHS (not API calls).
    app.router.add_get("/openapi.json", routes.openapi)
    return app


def _replayed(record: IdempotencyRecord) -> web.Response:
    return web.Response(status=record.status, body=record.body, content_type=record.content_type)


def _result_path(result_id: str) -> str:
    return f"/chat_sessions/results/{result_id}/events"


def _frame(event: StoredEvent) -> bytes:
    return f"id: {event.id}\nevent: {event.event}\ndata: {event.data}\n\n".encode()


class _Routes:
    """The handlers and middleware of one server."""

    def __init__(self, server: ReferenceServer) -> None:
        self.server = server

    # -- middleware -----------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Request ids, injected failures, body limits and uniform error bodies."""
        incoming = request.headers.get("X-Request-Id", "")
        request_id = incoming if _REQUEST_ID_RE.fullmatch(incoming) else _fresh_id()
        _request_id.set(request_id)
        try:
            if request.path not in _UNCOUNTED_PATHS and request.method != "OPTIONS":
                state = self.server._fault_state
                if state.take_failure():
                    raise self._injected_failure(state.faults)
            length = request.content_length
            if length is not None and length > self.server.max_body_size:
                raise ApiError(413, f"request body exceeds {self.server.max_body_size} bytes")
            response = await handler(request)
        except ApiError as exc:
            response = self._error_response(request, exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
            response = self._error_response(
                request, ApiError(exc.status, exc.reason, headers=headers)
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("unexpected error handling %s %s", request.method, request.path)
            response = self._error_response(request, ApiError(500, "internal server error"))
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
            response.headers.update(self._cors_headers(request))
        return response

    def _injected_failure(self, faults: Faults) -> ApiError:
        headers = {} if faults.retry_after is None else {"Retry-After": faults.retry_after}
        return ApiError(faults.fail_status, "injected failure (Faults.fail_first)", headers=headers)

    def _error_response(self, request: web.Request, exc: ApiError) -> web.Response:
        headers = dict(exc.headers)
        if exc.plain:
            return web.Response(status=exc.status, text=exc.message, headers=headers)
        if request.path.startswith("/rpc/"):
            body = ServiceErrorBody(
                name=exc.name,
                id=secrets.token_urlsafe(6),
                message=exc.message,
                temporary=exc.status in _TEMPORARY_STATUSES,
                timeout=exc.status == 504,
                fault=exc.status == 500,
            )
            headers["goa-error"] = exc.name
            payload = _json.encode(body)
        else:
            detail = exc.message if exc.detail is None else exc.detail
            payload = _json.encode({"detail": detail})
        return web.Response(
            status=exc.status, body=payload, content_type="application/json", headers=headers
        )

    def _cors_headers(self, request: web.Request) -> dict[str, str]:
        # Browsers embedding the chat call the chat routes cross-origin with a client
        # token; the origin itself is checked against the token, not here.
        origin = request.headers.get("Origin")
        if origin is None or not request.path.startswith("/chat_sessions/"):
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": "Content-Location, X-Request-Id, Retry-After",
            "Vary": "Origin",
        }

    # -- credentials ----------------------------------------------------------------

    def _authenticate_key(self, request: web.Request) -> None:
        """Token operations: ``Gram-Key`` + ``Gram-Project``, never a client token."""
        key = request.headers.get("Gram-Key")
        if key is None:
            raise ApiError(401, "missing Gram-Key header")
        if not keys_equal(key, self.server.api_key):
            raise ApiError(401, "invalid API key")
        if "Gram-Chat-Session" in request.headers:
            # A client token must never be able to mint or revoke tokens, even when it
            # travels next to a key: refuse the ambiguous request outright.
            raise ApiError(403, "client tokens cannot create or revoke chat-session tokens")
        self._check_project(request.headers.get("Gram-Project"))

    def _check_project(self, project: str | None) -> None:
        if not project:
            raise ApiError(401, "missing Gram-Project header")
        if project != self.server.project:
            raise ApiError(403, "the credentials are not valid for this project")

    def _authenticate_chat(self, request: web.Request) -> str:
        """Chat operations: an API key or a client token. Returns the caller's identity."""
        token = request.headers.get("Gram-Chat-Session")
        if token is not None:
            return self._authenticate_client_token(request, token)
        authorization = request.headers.get("Authorization")
        if authorization is None:
            raise ApiError(
                401,
                "missing credentials: send 'Authorization: Bearer <api key>' or"
                " 'Gram-Chat-Session' with 'Gram-Project'",
            )
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not keys_equal(value.strip(), self.server.api_key):
            raise ApiError(401, "invalid API key")
        project = request.headers.get("Gram-Project")
        if project is not None and project != self.server.project:
            raise ApiError(403, "the credentials are not valid for this project")
        return "key"

    def _authenticate_client_token(self, request: web.Request, token: str) -> str:
        project = request.headers.get("Gram-Project")
        if not project:
            raise ApiError(401, "missing Gram-Project header")
        try:
            claims = self.server.signer.verify(token)
        except TokenExpired:
            raise ApiError(401, "client token expired") from None
        except TokenError:
            raise ApiError(401, "invalid client token") from None
        if claims.project != self.server.project or project != self.server.project:
            raise ApiError(403, "the client token is not valid for this project")
        if self.server.store.is_revoked(claims.jti):
            raise ApiError(401, "client token revoked")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in claims.aud:
            raise ApiError(
                403,
                f"Origin {origin} does not match audience claim: {', '.join(claims.aud)}",
                plain=True,
            )
        return f"token:{claims.jti}"

    # -- bodies and idempotency -------------------------------------------------------

    async def _read_body(self, request: web.Request) -> bytes:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, f"request body exceeds {self.server.max_body_size} bytes") from None

    def _idempotency_lookup(
        self, request: web.Request, body: bytes
    ) -> IdempotencyRecord | _Claim | None:
        """The stored first outcome for the request's key, else a claim to store one.

        None without a key; a different body under the same key is a 409. Concurrent
        repeats are safe without locks: between this lookup and :meth:`_save_outcome`
        the handlers never await, so on the one event loop a repeat sees either no
        record (the first has not started) or the finished one.
        """
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return None
        if not 0 < len(key) <= _IDEMPOTENCY_KEY_MAX:
            raise ApiError(400, f"Idempotency-Key must be 1 to {_IDEMPOTENCY_KEY_MAX} characters")
        scope = (self.server.project, f"{request.method} {request.path}", key)
        body_hash = hashlib.sha256(body).hexdigest()
        record = self.server.store.idempotency_record(
            *scope, not_before=time.time() - self.server.result_ttl
        )
        if record is None:
            return _Claim(scope, body_hash)
        if record.body_hash != body_hash:
            raise ApiError(409, "Idempotency-Key was already used with a different request body")
        return record

    def _save_outcome(
        self,
        claim: _Claim | None,
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
            self.server.store.save_idempotency_record(*claim.scope, record, time.time())

    # -- routes ------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        """``GET /healthz``: liveness."""
        return web.Response(text="ok")

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        """``GET /openapi.json``: the OpenAPI 3.1 document of the routes."""
        return web.Response(body=openapi_json(), content_type="application/json")

    async def preflight(self, request: web.Request) -> web.StreamResponse:
        """CORS preflight for the chat routes."""
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": (
                    "Authorization, Content-Type, Gram-Chat-Session, Gram-Project,"
                    " Idempotency-Key, Last-Event-ID, X-Request-Id"
                ),
                "Access-Control-Max-Age": "600",
            },
        )

    async def create_token(self, request: web.Request) -> web.StreamResponse:
        """``POST /rpc/chatSessions.create``: mint a client token."""
        self._authenticate_key(request)
        if request.content_type != "application/json":
            raise ApiError(415, "Content-Type must be application/json")
        body = await self._read_body(request)
        try:
            params = _token_body_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise ApiError(400, f"invalid request body: {exc}") from None
        except (RecursionError, UnicodeDecodeError) as exc:
            # Outside msgspec's DecodeError family: absurd nesting, a string not UTF-8.
            msg = _TOO_DEEP if isinstance(exc, RecursionError) else _NOT_UTF8
            raise ApiError(400, f"invalid request body: {msg}") from None
        if not 1 <= params.expires_after <= 3600:
            raise ApiError(422, "expires_after must be between 1 and 3600 seconds")
        if problem := origin_error(params.embed_origin):
            raise ApiError(422, problem)

        outcome = self._idempotency_lookup(request, body)
        if isinstance(outcome, IdempotencyRecord):
            return _replayed(outcome)
        token, _ = self.server.signer.mint(
            params.embed_origin, params.expires_after, params.user_identifier
        )
        payload = _json.encode(
            _TokenCreateResponse(
                client_token=token,
                embed_origin=params.embed_origin,
                expires_after=params.expires_after,
                status="active",
                user_identifier=params.user_identifier,
            )
        )
        with self.server.store.transaction():
            self._save_outcome(outcome, "application/json", payload)
        return web.Response(body=payload, content_type="application/json")

    async def revoke_token(self, request: web.Request) -> web.StreamResponse:
        """``DELETE /rpc/chatSessions.revoke?token=...``: revoke a client token (idempotent)."""
        self._authenticate_key(request)
        token = request.query.get("token")
        if not token:
            raise ApiError(400, "missing token query parameter")
        try:
            claims = self.server.signer.verify(token)
        except TokenError:
            raise ApiError(400, "invalid token") from None
        if claims.project != self.server.project:
            raise ApiError(400, "invalid token")
        self.server.store.revoke(claims.jti, claims.project, claims.exp, time.time())
        return web.Response(status=204)

    async def chat_create(self, request: web.Request) -> web.StreamResponse:
        """``POST /chat_sessions/chat_results``: start a session and answer its last message."""
        caller = self._authenticate_chat(request)
        body = await self._read_body(request)
        params = _decode_chat_body(_create_body_decoder, body)
        messages = params.chat_session.messages
        if messages[-1].role != "user":
            loc: list[str | int] = ["body", "chat_session", "messages", len(messages) - 1, "role"]
            item = ValidationErrorItem(
                loc=loc, msg="the last message must be a user message", type="value_error"
            )
            raise ApiError(422, item.msg, detail=[item])
        return await self._chat_turn(
            request,
            caller,
            body,
            session_id=None,
            integration_id=params.integration_id,
            new_messages=[m.to_message() for m in messages],
            stream=bool(params.stream),
        )

    async def chat_continue(self, request: web.Request) -> web.StreamResponse:
        """``POST /chat_sessions/{chat_session_id}/chat_results``: answer the next turn."""
        caller = self._authenticate_chat(request)
        body = await self._read_body(request)
        params = _decode_chat_body(_continue_body_decoder, body)
        if params.message.role != "user":
            item = ValidationErrorItem(
                loc=["body", "message", "role"],
                msg="the message must be a user message",
                type="value_error",
            )
            raise ApiError(422, item.msg, detail=[item])
        return await self._chat_turn(
            request,
            caller,
            body,
            session_id=request.match_info["chat_session_id"],
            integration_id=params.integration_id,
            new_messages=[params.message.to_message()],
            stream=bool(params.stream),
        )

    async def result_events(self, request: web.Request) -> web.StreamResponse:
        """``GET /chat_sessions/results/{result_id}/events``: replay after ``Last-Event-ID``."""
        caller = self._authenticate_chat(request)
        result_id = request.match_info["result_id"]
        after = self._last_event_id(request)
        not_before = time.time() - self.server.result_ttl
        if not self.server.store.result_exists(result_id, self.server.project, not_before):
            raise ApiError(404, "no such result (unknown or expired)")
        with self._stream_slot(caller):
            return await self._send_stream(request, result_id, after)

    # -- chat turn and streaming -----------------------------------------------------

    async def _chat_turn(
        self,
        request: web.Request,
        caller: str,
        body: bytes,
        *,
        session_id: str | None,
        integration_id: str,
        new_messages: list[Message],
        stream: bool,
    ) -> web.StreamResponse:
        store = self.server.store
        after = self._last_event_id(request)  # refused when malformed, used by replays
        with self._stream_slot(caller) if stream else contextlib.nullcontext():
            outcome = self._idempotency_lookup(request, body)
            if isinstance(outcome, IdempotencyRecord):
                if outcome.result_id is None:
                    return _replayed(outcome)
                # A repeat of a streamed call replays the first call's event log, from
                # the start or after the Last-Event-ID the retry carries.
                return await self._send_stream(request, outcome.result_id, after)
            if session_id is not None and not store.session_exists(session_id, self.server.project):
                raise ApiError(404, f"chat session {session_id} not found")
            history = [] if session_id is None else store.history(session_id)
            answer = respond([*history, *new_messages])
            reply = Message(
                role="assistant", content=answer.text, records_cited=answer.records_cited
            )
            now = time.time()
            result_id = secrets.token_urlsafe(12)
            payload = b""
            # The turn, its result log and the idempotency record commit together: a
            # crash can never leave a turn that a retry would then repeat.
            with store.transaction():
                if session_id is None:
                    session_id = str(uuid.uuid4())
                    store.create_session(session_id, self.server.project, integration_id, now)
                store.append_messages(session_id, [*new_messages, reply])
                if stream:
                    events = _answer_events(session_id, answer)
                    store.save_result(result_id, self.server.project, session_id, events, now)
                    self._save_outcome(outcome, "text/event-stream", result_id=result_id)
                else:
                    payload = _json.encode(ChatResponse(chat_session_id=session_id, message=reply))
                    self._save_outcome(outcome, "application/json", payload)
            self.server._purge()
            if stream:
                return await self._send_stream(request, result_id, 0)
            return web.Response(body=payload, content_type="application/json")

    @contextlib.contextmanager
    def _stream_slot(self, caller: str) -> Iterator[None]:
        """Hold one of the caller's open-stream slots, or answer 429 when none is left."""
        counts = self.server._open_streams
        if counts[caller] >= self.server.max_streams_per_key:
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

    @staticmethod
    def _last_event_id(request: web.Request) -> int:
        raw = request.headers.get("Last-Event-ID", "").strip()
        if not raw:
            return 0
        if not _EVENT_ID_RE.fullmatch(raw):
            raise ApiError(400, "Last-Event-ID must be an event id sent by this server")
        return int(raw)

    async def _send_stream(
        self, request: web.Request, result_id: str, after: int
    ) -> web.StreamResponse:
        """Stream a result's stored events after ``after``, applying the faults in force."""
        if self.server._closing:
            raise ApiError(503, "the server is shutting down", headers={"Retry-After": "1"})
        events = self.server.store.result_events(result_id, after)
        state = self.server._fault_state  # one scenario per response, even if swapped
        faults = state.faults
        response = web.StreamResponse(status=200)
        response.content_type = "text/plain" if faults.wrong_content_type else "text/event-stream"
        response.headers["Cache-Control"] = "no-cache"
        if not faults.no_content_location:
            response.headers["Content-Location"] = _result_path(result_id)
        response.headers["X-Request-Id"] = _request_id.get()
        response.headers.update(self._cors_headers(request))

        task = asyncio.current_task()
        assert task is not None
        self.server._stream_tasks.add(task)
        try:
            await response.prepare(request)
            if faults.retry_ms is not None:
                await response.write(f"retry: {faults.retry_ms}\n\n".encode())
            if faults.pings_only:
                while True:
                    await response.write(b": ping\n\n")
                    await asyncio.sleep(faults.ping_interval)
            if faults.drop_after_events == 0 and state.take_drop():
                _cut(request)
                return response
            for sent, event in enumerate(events):
                if faults.malformed_after is not None and sent == faults.malformed_after:
                    break
                if sent and faults.event_delay:
                    await asyncio.sleep(faults.event_delay)
                await response.write(_frame(event))
                if sent + 1 == faults.drop_after_events and state.take_drop():
                    _cut(request)
                    return response
            if faults.malformed_after is not None and faults.malformed_after <= len(events):
                await response.write(b"event: message_chunk\ndata: {not json\n\n")
            await response.write_eof()
        except ConnectionError:
            pass  # the client left; nobody is listening for the rest
        finally:
            self.server._stream_tasks.discard(task)
        return response


def _cut(request: web.Request) -> None:
    """Drop the connection mid-body, as a crashed proxy or server would.

    ``close()`` (not ``abort()``) so the events already written reach the client
    first; the chunked body is never terminated, which the client sees as an
    interrupted stream.
    """
    transport = request.transport
    if transport is not None:
        transport.close()


_chunk_encoder = msgspec.json.Encoder()


def _answer_events(session_id: str, answer: Answer) -> list[tuple[str, str]]:
    """The event log of an answer: word chunks, the final chunk, then the citations."""
    events = [
        ("message_chunk", _chunk_encoder.encode(_ChunkData(session_id, word, None)).decode())
        for word in split_words(answer.text)
    ]
    events.append(
        ("message_chunk", _chunk_encoder.encode(_ChunkData(session_id, "", "stop")).decode())
    )
    events.append(("records_cited", _chunk_encoder.encode(answer.records_cited).decode()))
    return events
