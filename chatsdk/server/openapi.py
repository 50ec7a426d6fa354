"""The reference server's OpenAPI 3.1 document, served at ``GET /openapi.json``.

It describes the wire format of SPEC §1 as this server speaks it: the token operations,
both chat wires under every path the real services use (SPEC 1.9) and the resume
``GET`` of SPEC 1.7, with every status each one can answer and the body that comes with
it. The body schemas are generated from the msgspec Structs the routes decode and the
client reads (``msgspec.json.schema_components``), so a field changed in a Struct
changes here too; only the event streams, headers and security are written out. It is
what ``tests/test_server_fuzz.py`` fuzzes the server against.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from chatsdk.models import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatResponse,
    ChatSessionToken,
    MessageChunk,
    RecordsCited,
    ServiceErrorBody,
)
from chatsdk.server.chat_results import ContinueChatBody, CreateChatBody
from chatsdk.server.completions import ChatCompletionBody
from chatsdk.server.errors import ChatError
from chatsdk.server.streaming import result_path
from chatsdk.server.tokens import CreateChatSessionRequest

__all__ = ["OPENAPI", "openapi_json"]

_VERSION: Final = "0.2.0"
_REF: Final = "#/components/schemas/{name}"

_, _SCHEMAS = msgspec.json.schema_components(
    [
        CreateChatSessionRequest,
        ChatSessionToken,
        ServiceErrorBody,
        CreateChatBody,
        ContinueChatBody,
        ChatResponse,
        MessageChunk,
        RecordsCited,
        ChatError,
        ChatCompletionBody,
        ChatCompletion,
        ChatCompletionChunk,
    ],
    ref_template=_REF,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


_REQUEST_ID_HEADER: Final = {
    "X-Request-Id": {
        "description": "The request id: the caller's own when it sent a valid one.",
        "schema": {"type": "string"},
    }
}
_RETRY_AFTER_HEADER: Final = {
    "Retry-After": {
        "description": "Seconds to wait before trying again (429, 503).",
        "schema": {"type": "string"},
    }
}


def _error(description: str, content: dict[str, Any], **headers: Any) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {**headers, **_REQUEST_ID_HEADER, **_RETRY_AFTER_HEADER},
        "content": content,
    }


def _service_error(description: str) -> dict[str, Any]:
    goa = {"description": "The error name.", "schema": {"type": "string"}}
    return _error(description, _json(_ref("ServiceErrorBody")), **{"goa-error": goa})


def _chat_error(description: str, *, plain_text: bool = False) -> dict[str, Any]:
    content = _json(_ref("ChatError"))
    if plain_text:
        # The origin mismatch is plain text, like the public service's.
        content["text/plain"] = {"schema": {"type": "string"}}
    return _error(description, content)


_TOKEN_ERRORS: Final = {
    "400": _service_error("Malformed request or token (bad_request)."),
    "401": _service_error("Missing or invalid API key (unauthorized)."),
    "403": _service_error("Wrong project, or a client token was sent (forbidden)."),
    "404": _service_error("No such route (not_found)."),
    "405": _service_error("Method not allowed."),
    "409": _service_error("Idempotency-Key reused with another body (conflict)."),
    "413": _service_error("Request body too large (request_too_large)."),
    "415": _service_error("Content-Type is not application/json (unsupported_media)."),
    "422": _service_error("A field is out of range or not an origin (invalid)."),
    "429": _service_error("Too many requests (rate_limited)."),
    "500": _service_error("Unexpected server error (unexpected)."),
    "503": _service_error("Unavailable, e.g. shutting down (unavailable)."),
}

_CHAT_ERRORS: Final = {
    "400": _chat_error("Malformed header (Idempotency-Key, Last-Event-ID)."),
    "401": _chat_error("Missing, invalid, expired or revoked credentials."),
    "402": _chat_error("Out of credits (insufficient_credits; only as an injected fault)."),
    "403": _chat_error("Wrong project, or Origin not the token's embed origin.", plain_text=True),
    "404": _chat_error("Unknown chat session or result."),
    "405": _chat_error("Method not allowed."),
    "409": _chat_error("Idempotency-Key reused with another body."),
    "413": _chat_error("Request body too large."),
    "422": _chat_error("The body did not validate; detail lists what was wrong."),
    "429": _chat_error("Too many open streams for these credentials."),
    "500": _chat_error("Unexpected server error."),
    "503": _chat_error("Unavailable, e.g. shutting down."),
}

_STREAM_HEADERS: Final = {
    "Content-Location": {
        "description": "Path of the result's event log, for resuming (SPEC §1.7).",
        "schema": {"type": "string"},
    },
    **_REQUEST_ID_HEADER,
}


def _event_of(name: str, payload: dict[str, Any], **data: Any) -> dict[str, Any]:
    # A parsed event without an ``event:`` field is named "message" (the SSE default).
    data.update(contentMediaType="application/json", contentSchema=payload)
    return {"required": ["event"], "properties": {"event": {"const": name}, "data": data}}


def _event(description: str, *variants: dict[str, Any]) -> dict[str, Any]:
    # OpenAPI 3.1 has no itemSchema: the schema of an event-stream media type describes
    # one event, as a parsed object (event, data, id, retry).
    return {
        "description": description,
        "type": "object",
        "required": ["data", "id"],
        "properties": {
            "event": {"type": "string"},
            "data": {"type": "string"},
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "retry": {"type": "integer", "minimum": 0},
        },
        "oneOf": list(variants),
    }


_CHAT_RESULTS_EVENT: Final = _event(
    "One server-sent event: message_chunk events, then one records_cited; each carries an "
    "id for Last-Event-ID.",
    _event_of("message_chunk", _ref("MessageChunk")),
    _event_of("records_cited", _ref("RecordsCited")),
)
_COMPLETION_EVENT: Final = _event(
    "One server-sent event without an event name: a chat.completion.chunk (the last one, "
    "with stream_options.include_usage, has empty choices and the usage), then [DONE]; "
    "each carries an id for Last-Event-ID.",
    _event_of("message", _ref("ChatCompletionChunk"), pattern="^[{]"),
    {"properties": {"event": {"const": "message"}, "data": {"const": "[DONE]"}}},
)


def _answer(description: str, events: dict[str, Any], whole: str | None) -> dict[str, Any]:
    content: dict[str, Any] = {"text/event-stream": {"schema": events}}
    if whole is not None:
        content.update(_json(_ref(whole)))
    return {"description": description, "headers": _STREAM_HEADERS, "content": content}


def _header(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


def _path_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_IDEMPOTENCY_KEY: Final = _header(
    "Idempotency-Key",
    "One per logical call, the same across its retries; a repeat gets the first result.",
    minLength=1,
    maxLength=255,
)
_ORIGIN: Final = _header("Origin", "Checked against a client token's embed origin when present.")
_LAST_EVENT_ID: Final = _header(
    "Last-Event-ID",
    "Resume after this event id (an id this server sent); empty: from the start.",
    pattern="^[0-9]{0,18}$",
)
_X_REQUEST_ID: Final = _header(
    "X-Request-Id", "Echoed back when it is 1..128 characters of [A-Za-z0-9._:/+=-]."
)
_CHAT_HEADERS: Final = [_IDEMPOTENCY_KEY, _ORIGIN, _LAST_EVENT_ID, _X_REQUEST_ID]

_TOKEN_SECURITY: Final[list[dict[str, list[str]]]] = [{"GramKey": [], "GramProject": []}]
# The API key or a client token as a bearer token; a client token with Gram-Project;
# the API key Gram's way.
_CHAT_SECURITY: Final[list[dict[str, list[str]]]] = [
    {"BearerAuth": []},
    {"GramChatSession": [], "GramProject": []},
    {"GramKey": [], "GramProject": []},
]


def _chat_post(
    operation_id: str, summary: str, body: str, answer: dict[str, Any], *path_parameters: str
) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "security": _CHAT_SECURITY,
            "parameters": [*map(_path_parameter, path_parameters), *_CHAT_HEADERS],
            "requestBody": {"required": True, "content": _json(_ref(body))},
            "responses": {"200": answer, **_CHAT_ERRORS},
        }
    }


def _chat_paths() -> dict[str, Any]:
    """Both chat wires under each prefix the real services use (SPEC 1.9)."""
    paths: dict[str, Any] = {}
    chat_answer = _answer("The answer, streamed or whole.", _CHAT_RESULTS_EVENT, "ChatResponse")
    for prefix, suffix in (("", ""), ("/v0", "V0")):
        paths[f"{prefix}/chat_sessions/chat_results"] = _chat_post(
            f"createChatResults{suffix}",
            "Start a chat session and answer its last message.",
            "CreateChatBody",
            chat_answer,
        )
        paths[f"{prefix}/chat_sessions/{{chat_session_id}}/chat_results"] = _chat_post(
            f"continueChatResults{suffix}",
            "Answer the next message of a session; the server keeps history.",
            "ContinueChatBody",
            chat_answer,
            "chat_session_id",
        )
    completion = _answer(
        "The answer, streamed (stream: true) or whole.", _COMPLETION_EVENT, "ChatCompletion"
    )
    for prefix, suffix in (("", ""), ("/v1", "V1")):
        paths[f"{prefix}/chat/completions"] = _chat_post(
            f"createChatCompletion{suffix}",
            "Answer a whole conversation in the Chat Completions format (no history kept).",
            "ChatCompletionBody",
            completion,
        )
    paths[result_path("{result_id}")] = {
        "get": {
            "operationId": "resumeChatResults",
            "summary": "Replay a result's events after Last-Event-ID (resume, both wires).",
            "security": _CHAT_SECURITY,
            "parameters": [_path_parameter("result_id"), _LAST_EVENT_ID, _ORIGIN, _X_REQUEST_ID],
            "responses": {
                "200": _answer(
                    "The events after Last-Event-ID.",
                    {"anyOf": [_CHAT_RESULTS_EVENT, _COMPLETION_EVENT]},
                    None,
                ),
                **_CHAT_ERRORS,
            },
        }
    }
    return paths


OPENAPI: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "chatsdk reference server",
        "version": _VERSION,
        "description": "Client tokens (Gram chatSessions wire format), streamed chat answers "
        "(Inkeep chat_results wire format) and Chat Completions (Gram, Inkeep v1), with "
        "resumable streams.",
    },
    "paths": {
        "/rpc/chatSessions.create": {
            "post": {
                "operationId": "createChatSession",
                "summary": "Mint a client token bound to an embed origin.",
                "security": _TOKEN_SECURITY,
                "parameters": [_IDEMPOTENCY_KEY, _X_REQUEST_ID],
                "requestBody": {
                    "required": True,
                    "content": _json(_ref("CreateChatSessionRequest")),
                },
                "responses": {
                    "200": {
                        "description": "The new token.",
                        "headers": _REQUEST_ID_HEADER,
                        "content": _json(_ref("ChatSessionToken")),
                    },
                    **_TOKEN_ERRORS,
                },
            }
        },
        "/rpc/chatSessions.revoke": {
            "delete": {
                "operationId": "revokeChatSession",
                "summary": "Revoke a client token (revoking twice is not an error).",
                "security": _TOKEN_SECURITY,
                "parameters": [
                    {
                        "name": "token",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    _X_REQUEST_ID,
                ],
                "responses": {
                    "204": {"description": "Revoked.", "headers": _REQUEST_ID_HEADER},
                    **_TOKEN_ERRORS,
                },
            }
        },
        **_chat_paths(),
    },
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {
            "GramKey": {"type": "apiKey", "in": "header", "name": "Gram-Key"},
            "GramProject": {"type": "apiKey", "in": "header", "name": "Gram-Project"},
            "GramChatSession": {"type": "apiKey", "in": "header", "name": "Gram-Chat-Session"},
            "BearerAuth": {"type": "http", "scheme": "bearer"},
        },
    },
}

_ENCODED: Final = msgspec.json.encode(OPENAPI)


def openapi_json() -> bytes:
    """The document as JSON bytes (encoded once)."""
    return _ENCODED
