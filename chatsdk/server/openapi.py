"""The reference server's OpenAPI 3.1 document, served at ``GET /openapi.json``.

It describes the wire format of SPEC §1 as this server speaks it: the two token
operations, the two chat operations and the resume ``GET`` of SPEC §1.7, with every
status each one can answer and the body that comes with it. It is built once, as
plain data, and is what ``tests/test_server_fuzz.py`` fuzzes the server against, so
a change to a route without the matching change here fails a test.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = ["OPENAPI", "openapi_json"]

_VERSION: Final = "0.1.0"

# What ``origin_error`` in auth.py accepts, as far as a pattern can say it: scheme,
# "://", an RFC 3986 host (reg-name or IP literal) and an optional numeric port.
_ORIGIN_PATTERN: Final = (
    r"^https?://(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


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


def _service_error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {
            "goa-error": {"description": "The error name.", "schema": {"type": "string"}},
            **_REQUEST_ID_HEADER,
            **_RETRY_AFTER_HEADER,
        },
        "content": _json(_ref("ServiceError")),
    }


def _chat_error(description: str, *, plain_text: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = _json(_ref("ChatError"))
    if plain_text:
        # The origin mismatch is plain text, like the public service's.
        content["text/plain"] = {"schema": {"type": "string"}}
    return {
        "description": description,
        "headers": {**_REQUEST_ID_HEADER, **_RETRY_AFTER_HEADER},
        "content": content,
    }


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


def _event_of(name: str, payload: str) -> dict[str, Any]:
    return {
        "required": ["event"],
        "properties": {
            "event": {"const": name},
            "data": {"contentMediaType": "application/json", "contentSchema": _ref(payload)},
        },
    }


# OpenAPI 3.1 has no itemSchema: the schema of an event-stream media type describes one
# event, as a parsed object (event, data, id, retry).
_EVENT: Final = {
    "description": "One server-sent event: message_chunk events, then one records_cited; "
    "each carries an id for Last-Event-ID.",
    "type": "object",
    "required": ["data", "id"],
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string"},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "retry": {"type": "integer", "minimum": 0},
    },
    "oneOf": [
        _event_of("message_chunk", "MessageChunk"),
        _event_of("records_cited", "RecordsCited"),
    ],
}


def _answer(description: str, *, json_answer: bool) -> dict[str, Any]:
    content: dict[str, Any] = {"text/event-stream": {"schema": _EVENT}}
    if json_answer:
        content.update(_json(_ref("ChatResponse")))
    return {"description": description, "headers": _STREAM_HEADERS, "content": content}


_IDEMPOTENCY_KEY: Final = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "One per logical call, the same across its retries; a repeat gets "
    "the first result.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
_ORIGIN: Final = {
    "name": "Origin",
    "in": "header",
    "required": False,
    "description": "Checked against a client token's embed origin when present.",
    "schema": {"type": "string"},
}
_LAST_EVENT_ID: Final = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "Resume after this event id (an id this server sent); empty: from the start.",
    "schema": {"type": "string", "pattern": "^[0-9]{0,18}$"},
}
_X_REQUEST_ID: Final = {
    "name": "X-Request-Id",
    "in": "header",
    "required": False,
    "description": "Echoed back when it is 1..128 characters of [A-Za-z0-9._:/+=-].",
    "schema": {"type": "string"},
}

_TOKEN_SECURITY: Final[list[dict[str, list[str]]]] = [{"GramKey": [], "GramProject": []}]
_CHAT_SECURITY: Final[list[dict[str, list[str]]]] = [
    {"BearerAuth": []},
    {"GramChatSession": [], "GramProject": []},
]

_SCHEMAS: Final[dict[str, Any]] = {
    "ServiceError": {
        "type": "object",
        "required": ["name", "id", "message", "temporary", "timeout", "fault"],
        "properties": {
            "name": {"type": "string"},
            "id": {"type": "string"},
            "message": {"type": "string"},
            "temporary": {"type": "boolean"},
            "timeout": {"type": "boolean"},
            "fault": {"type": "boolean"},
        },
    },
    "ValidationErrorItem": {
        "type": "object",
        "required": ["loc", "msg", "type"],
        "properties": {
            "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
            "msg": {"type": "string"},
            "type": {"type": "string"},
        },
    },
    "ChatError": {
        "type": "object",
        "required": ["detail"],
        "properties": {
            "detail": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": _ref("ValidationErrorItem")},
                ]
            }
        },
    },
    "CreateChatSessionRequest": {
        "type": "object",
        "required": ["embed_origin"],
        "properties": {
            "embed_origin": {
                "type": "string",
                "pattern": _ORIGIN_PATTERN,
                "description": "The origin (scheme://host[:port]) of the embedding page.",
            },
            "expires_after": {
                "type": "integer",
                "minimum": 1,
                "maximum": 3600,
                "default": 3600,
            },
            "user_identifier": _nullable({"type": "string"}),
        },
    },
    "ChatSessionToken": {
        "type": "object",
        "required": ["client_token", "embed_origin", "expires_after", "status"],
        "properties": {
            "client_token": {"type": "string", "description": "An HS256 JWT."},
            "embed_origin": {"type": "string"},
            "expires_after": {"type": "integer"},
            "status": {"type": "string"},
            "user_identifier": {"type": "string"},
        },
    },
    "Record": {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"type": "string"},
            "url": _nullable({"type": "string"}),
            "title": _nullable({"type": "string"}),
            "description": _nullable({"type": "string"}),
            "breadcrumbs": _nullable({"type": "array", "items": {"type": "string"}}),
        },
    },
    "Citation": {
        "type": "object",
        "required": ["record"],
        "properties": {
            "number": _nullable({"type": "integer"}),
            "record": _ref("Record"),
            "hit_url": _nullable({"type": "string"}),
        },
    },
    "RecordsCited": {
        "type": "object",
        "properties": {"citations": {"type": "array", "items": _ref("Citation")}},
    },
    "Message": {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"enum": ["user", "assistant"]},
            "content": {"type": "string"},
            "records_cited": _nullable(_ref("RecordsCited")),
        },
    },
    "ChatSession": {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": _ref("Message"),
                "description": "The conversation so far; the last message is the user's.",
            },
            "guidance": _nullable({"type": "string"}),
            "context": _nullable({"type": "string"}),
            "tags": _nullable({"type": "array", "items": {"type": "string"}}),
        },
    },
    "CreateChatRequest": {
        "type": "object",
        "required": ["integration_id", "chat_session"],
        "properties": {
            "integration_id": {"type": "string", "minLength": 1},
            "chat_session": _ref("ChatSession"),
            "chat_mode": _nullable({"type": "string"}),
            "stream": _nullable({"type": "boolean"}),
        },
    },
    "ContinueChatRequest": {
        "type": "object",
        "required": ["integration_id", "message"],
        "properties": {
            "integration_id": {"type": "string", "minLength": 1},
            "message": _ref("Message"),
            "stream": _nullable({"type": "boolean"}),
        },
    },
    "MessageChunk": {
        "type": "object",
        "required": ["content_chunk"],
        "properties": {
            "chat_session_id": _nullable({"type": "string"}),
            "content_chunk": {"type": "string"},
            "finish_reason": _nullable({"type": "string"}),
        },
    },
    "ChatResponse": {
        "type": "object",
        "required": ["chat_session_id", "message"],
        "properties": {"chat_session_id": {"type": "string"}, "message": _ref("Message")},
    },
}

OPENAPI: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "chatsdk reference server",
        "version": _VERSION,
        "description": "Client tokens (Gram chatSessions wire format) and streamed chat "
        "answers (Inkeep chat_results wire format), with resumable streams.",
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
        "/chat_sessions/chat_results": {
            "post": {
                "operationId": "createChatResults",
                "summary": "Start a chat session and answer its last message.",
                "security": _CHAT_SECURITY,
                "parameters": [_IDEMPOTENCY_KEY, _ORIGIN, _LAST_EVENT_ID, _X_REQUEST_ID],
                "requestBody": {"required": True, "content": _json(_ref("CreateChatRequest"))},
                "responses": {
                    "200": _answer("The answer, streamed or whole.", json_answer=True),
                    **_CHAT_ERRORS,
                },
            }
        },
        "/chat_sessions/{chat_session_id}/chat_results": {
            "post": {
                "operationId": "continueChatResults",
                "summary": "Answer the next message of a session; the server keeps history.",
                "security": _CHAT_SECURITY,
                "parameters": [
                    {
                        "name": "chat_session_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    _IDEMPOTENCY_KEY,
                    _ORIGIN,
                    _LAST_EVENT_ID,
                    _X_REQUEST_ID,
                ],
                "requestBody": {
                    "required": True,
                    "content": _json(_ref("ContinueChatRequest")),
                },
                "responses": {
                    "200": _answer("The answer, streamed or whole.", json_answer=True),
                    **_CHAT_ERRORS,
                },
            }
        },
        "/chat_sessions/results/{result_id}/events": {
            "get": {
                "operationId": "resumeChatResults",
                "summary": "Replay a result's events after Last-Event-ID (resume).",
                "security": _CHAT_SECURITY,
                "parameters": [
                    {
                        "name": "result_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    _LAST_EVENT_ID,
                    _ORIGIN,
                    _X_REQUEST_ID,
                ],
                "responses": {
                    "200": _answer("The events after Last-Event-ID.", json_answer=False),
                    **_CHAT_ERRORS,
                },
            }
        },
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
