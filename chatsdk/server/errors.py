"""Error answers of the reference server: :class:`ApiError` and how each route family
renders it, and the 422 ``detail`` items built from msgspec's validation errors.

``/rpc/`` routes answer Goa ``ServiceError`` bodies with a ``goa-error`` header (SPEC
1.6); chat routes (both wires) answer ``{"detail": ...}``, except the origin mismatch,
which is plain text like the public service's.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Final, TypeVar

import msgspec
from aiohttp import web

from chatsdk.models import ServiceErrorBody, ValidationErrorItem

__all__ = ["ApiError", "ChatError", "decode_body", "error_response", "invalid", "json_encoder"]

json_encoder: Final = msgspec.json.Encoder()

# Goa's error names for the statuses the token operations can answer.
_SERVICE_ERROR_NAMES: Final[Mapping[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    402: "insufficient_credits",
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


class ChatError(msgspec.Struct, frozen=True):
    """A chat route's error body: a message, or the 422 list of what was wrong."""

    detail: str | list[ValidationErrorItem]


class ApiError(Exception):
    """An error answer; :func:`error_response` renders it in the route family's format.

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
        detail: list[ValidationErrorItem] | None = None,
        plain: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.name = name or _SERVICE_ERROR_NAMES.get(status, "error")
        self.headers = dict(headers or {})
        self.detail = detail
        self.plain = plain


def invalid(loc: list[str | int], msg: str, kind: str = "value_error") -> ApiError:
    """A chat route's 422 with one detail item."""
    return ApiError(422, msg, detail=[ValidationErrorItem(loc=loc, msg=msg, type=kind)])


def error_response(request: web.Request, exc: ApiError) -> web.Response:
    """``exc`` as the body format of the request's route family."""
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
        payload = json_encoder.encode(body)
    else:
        payload = json_encoder.encode(ChatError(exc.message if exc.detail is None else exc.detail))
    return web.Response(
        status=exc.status, body=payload, content_type="application/json", headers=headers
    )


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
TOO_DEEP: Final = "Invalid JSON: nested too deeply"
NOT_UTF8: Final = "Invalid JSON: a string is not valid UTF-8"


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
        elif "` >= " in msg or "` <= " in msg:
            kind = "greater_than_equal" if "` >= " in msg else "less_than_equal"
        else:
            kind = _TYPE_NAMES.get(base, "value_error")
    return ValidationErrorItem(loc=loc, msg=msg, type=kind)


_T = TypeVar("_T")


def decode_body(decoder: msgspec.json.Decoder[_T], body: bytes) -> _T:
    """A chat route's request body, or a 422 whose detail says what was wrong."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        item = _validation_item(exc)
    except msgspec.DecodeError as exc:
        item = ValidationErrorItem(loc=["body"], msg=f"Invalid JSON: {exc}", type="json_invalid")
    except (RecursionError, UnicodeDecodeError) as exc:
        # msgspec raises these outside its DecodeError family: for absurdly deep nesting
        # (even in an ignored unknown field) and for a string that is not UTF-8.
        msg = TOO_DEEP if isinstance(exc, RecursionError) else NOT_UTF8
        item = ValidationErrorItem(loc=["body"], msg=msg, type="json_invalid")
    raise ApiError(422, item.msg, detail=[item])
