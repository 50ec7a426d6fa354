"""The chatsdk exception hierarchy.

Every error the SDK raises derives from :class:`ChatSDKError`::

    ChatSDKError
    ├── ValidationError            bad arguments, caught before anything is sent
    ├── APIConnectionError         the server could not be reached or the connection broke
    │   └── APITimeoutError        a connect/read/idle/total timeout expired
    ├── StreamError                the server sent a malformed or interrupted event stream
    └── APIStatusError             the server answered with a 4xx/5xx status
        ├── BadRequestError            400
        ├── AuthenticationError        401
        ├── PermissionDeniedError      403
        ├── NotFoundError              404
        ├── ConflictError              409
        ├── UnprocessableEntityError   422 (``.detail``)
        ├── RateLimitError             429
        └── InternalServerError        5xx

The split mirrors h11's: :class:`ValidationError` is the caller's mistake,
:class:`StreamError` and :class:`APIStatusError` are the peer's answer.
Lower-level errors (aiohttp, msgspec) are converted at one boundary, in
``_transport`` and ``_streaming``, and chained with ``raise ... from exc``.
No message built here ever contains a credential.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ChatSDKError",
    "ConflictError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "StreamError",
    "UnprocessableEntityError",
    "ValidationError",
    "status_error_class",
]

# How much of a server's payload an error keeps: enough to debug, never a whole body.
EXCERPT_LIMIT = 512


def excerpt(data: bytes | str | None, limit: int = EXCERPT_LIMIT) -> str:
    """A bounded, printable excerpt of what a server sent."""
    if data is None:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if len(text) > limit:
        return text[:limit] + f"... [{len(text) - limit} more characters]"
    return text


class ChatSDKError(Exception):
    """Base class of every error raised by chatsdk."""


class ValidationError(ChatSDKError, ValueError):
    """An argument was rejected before any request was sent."""


class APIConnectionError(ChatSDKError):
    """The request could not reach the server, or the connection broke."""


class APITimeoutError(APIConnectionError):
    """A connect, read, idle or total timeout expired."""


class StreamError(ChatSDKError):
    """The server sent a malformed, oversized or interrupted event stream.

    ``event`` names the SSE event being read (if known) and ``received`` is a
    bounded excerpt of what arrived.
    """

    def __init__(
        self, message: str, *, event: str | None = None, received: bytes | str | None = None
    ):
        self.event = event
        self.received = excerpt(received)
        detail = message
        if event is not None:
            detail += f" (event {event!r})"
        if self.received:
            detail += f"; received: {self.received!r}"
        super().__init__(detail)


class APIStatusError(ChatSDKError):
    """The server answered with an error status.

    ``status`` is the HTTP status, ``body`` the parsed JSON body (or the text
    when it was not JSON), ``request_id`` the server's ``X-Request-Id`` and
    ``headers`` the response headers. For token operations the ServiceError
    fields (``name``, ``id``, ``temporary``, ``timeout``, ``fault``) are set
    when the server sent them.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: Any = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        self.status = status
        self.body = body
        self.request_id = request_id
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        service = body if isinstance(body, dict) else {}
        self.name: str | None = _str_or_none(service.get("name"))
        self.id: str | None = _str_or_none(service.get("id"))
        self.temporary: bool | None = _bool_or_none(service.get("temporary"))
        self.timeout: bool | None = _bool_or_none(service.get("timeout"))
        self.fault: bool | None = _bool_or_none(service.get("fault"))
        text = f"{status} {message}"
        if request_id:
            text += f" (request id {request_id})"
        super().__init__(text)


class BadRequestError(APIStatusError):
    """400: the server rejected the request."""


class AuthenticationError(APIStatusError):
    """401: missing, invalid, expired or revoked credentials."""


class PermissionDeniedError(APIStatusError):
    """403: valid credentials, not allowed (e.g. a token used from the wrong origin)."""


class NotFoundError(APIStatusError):
    """404: no such resource (e.g. an unknown chat session)."""


class ConflictError(APIStatusError):
    """409: the request conflicts with the server's state."""


class UnprocessableEntityError(APIStatusError):
    """422: the body did not validate; ``detail`` lists what was wrong."""

    @property
    def detail(self) -> list[Any]:
        """The server's ``detail`` list (``loc``, ``msg``, ``type`` items), or ``[]``."""
        if isinstance(self.body, dict) and isinstance(self.body.get("detail"), list):
            return list(self.body["detail"])
        return []


class RateLimitError(APIStatusError):
    """429: too many requests; ``headers`` may carry ``Retry-After``."""


class InternalServerError(APIStatusError):
    """5xx: the server failed."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status: int) -> type[APIStatusError]:
    """The most specific :class:`APIStatusError` subclass for an HTTP status."""
    if status >= 500:
        return InternalServerError
    return _BY_STATUS.get(status, APIStatusError)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _bool_or_none(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None
