"""The chatsdk exception hierarchy.

Every error the SDK raises derives from :class:`ChatSDKError`; each line says where
it comes from::

    ChatSDKError
    ├── ValidationError            the caller's arguments or settings, refused before
    │                              anything is sent (or a client used outside its loop)
    ├── APIConnectionError         no answer: connect failed, or the connection broke
    │   │                          before the response headers or mid-body (any wire)
    │   └── APITimeoutError        a connect, read, idle or total timeout expired
    ├── StreamError                the bytes of an event stream are malformed, oversized,
    │                              or end mid-answer with no way to resume; also a
    │                              stream read after it was closed
    └── APIError                   the server answered and said, or showed, it failed
        ├── APIResponseValidationError  a 2xx answer that is not what the API returns
        │                               (an HTML page, JSON of another shape)
        ├── APIStatusError         a 4xx/5xx status (SPEC 1.6)
        │   ├── BadRequestError            400
        │   ├── AuthenticationError        401
        │   ├── PermissionDeniedError      403
        │   ├── NotFoundError              404
        │   ├── ConflictError              409
        │   ├── UnprocessableEntityError   422 (``.detail``)
        │   ├── RateLimitError             429
        │   └── InternalServerError        5xx
        └── (APIError itself)      an ``{"error": {...}}`` chunk in a Chat Completions
                                   stream (SPEC 1.8): the server failing mid-answer

The split mirrors h11's: :class:`ValidationError` is the caller's mistake,
:class:`StreamError` and :class:`APIError` are the peer's answer. Lower-level errors
(aiohttp, msgspec, the standard library) are converted at one boundary,
``_transport.mapped_errors``, and chained with ``raise ... from exc`` only when the
cause cannot show a secret.
No message built here ever contains a credential.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Mapping
from typing import Any, Final

from multidict import CIMultiDict

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
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
    """A bounded excerpt of what a server sent: at most ``limit`` characters of it."""
    if data is None:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if len(text) > limit:
        return text[:limit] + f"... [{len(text) - limit} more characters]"
    return text


# Characters a terminal or a log reader obeys rather than shows: controls (CR and LF
# start a fake log line, ESC drives a terminal), formats (U+202E reorders a line), the
# Unicode line and paragraph separators, and lone surrogates (bytes that were not UTF-8,
# which a terminal's surrogateescape would write out raw).
_UNSHOWN: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def escaped(text: str) -> str:
    """``text`` with the characters a terminal or a log would obey written as Python
    escapes (``\\r``, ``\\x1b``, ``\\u202e``): Unicode categories Cc (tab aside), Cf, Zl,
    Zp and Cs. For a server's text shown to a person: quoted in an error message, or printed
    by the CLI."""
    if text.isprintable():  # the usual case: nothing to escape
        return text
    return "".join(
        repr(char)[1:-1] if char != "\t" and unicodedata.category(char) in _UNSHOWN else char
        for char in text
    )


def error_layers(body: Any) -> Iterator[dict[str, Any]]:
    """The objects of an error body where its fields are looked for, outermost first,
    three at most: the body (or the one item of a one-item list, as Gemini's OpenAI
    endpoint answers ``[{"error": {...}}]``), then its ``message`` if that is an object
    (Mistral's 422 ``{"message": {"detail": [...]}}``), else its ``error`` if that is
    one (OpenAI's ``{"error": {"message": ...}}``), and so on."""
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    for _ in range(3):
        if not isinstance(body, dict):
            return
        yield body
        message = body.get("message")
        body = message if isinstance(message, dict) else body.get("error")


def printable(data: bytes | str | None, limit: int = EXCERPT_LIMIT) -> str:
    """:func:`excerpt`, :func:`escaped`: for a server's text quoted in an error message."""
    return escaped(excerpt(data, limit))


class ChatSDKError(Exception):
    """Base class of every error raised by chatsdk.

    Every chatsdk error pickles and copies with its message and attributes (as a
    ``ProcessPoolExecutor`` hands a worker's exception back), though most take
    keyword-only arguments."""

    def __reduce__(self) -> tuple[Any, ...]:
        # The default calls the class with ``args`` alone, which a required keyword
        # (``status``) refuses and a formatted message would be formatted twice by.
        return (_restored, (type(self), self.args, self.__dict__))


class ValidationError(ChatSDKError, ValueError):
    """An argument was rejected before any request was sent."""


class APIConnectionError(ChatSDKError):
    """The request could not reach the server, or the connection broke."""

    # True when trying again would meet the same failure (a certificate that does not
    # verify, an answer HTTP cannot parse): such a failure is not retried.
    _final = False
    # True when the connection closed (or was reset) before any answer came.
    _unanswered = False


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


class APIError(ChatSDKError):
    """The server answered, and the answer says (or shows) that the call failed.

    ``body`` is what the server sent about it (parsed JSON when it was JSON, else text),
    ``request_id`` its ``X-Request-Id`` and ``headers`` the response headers. Raised as
    such for an ``{"error": {...}}`` chunk in a Chat Completions stream (SPEC 1.8), with
    ``body`` the error object (``message``, ``type``, ``code``...); see the subclasses.
    """

    def __init__(
        self,
        message: str,
        *,
        body: Any = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        self.body = body
        self.request_id = request_id
        # Case-insensitive, every value of a repeated header kept (``getall``).
        self.headers: CIMultiDict[str] = CIMultiDict(headers if headers is not None else {})
        if request_id:
            message += f" (request id {request_id})"
        super().__init__(message)


class APIResponseValidationError(APIError):
    """A successful status whose body is not what the API answers (SPEC 1.6).

    An HTML page from a proxy, a JSON answer of another shape, bytes that are not
    UTF-8. ``status`` and ``url`` (without its query) say which answer; ``body`` is a
    bounded excerpt of it (withheld when it may hold a secret, as a token's answer).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        url: str,
        body: str | None = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        self.status = status
        self.url = url
        text = f"{message} ({status} from {url})"
        if body:
            text += f"; received: {body!r}"
        super().__init__(text, body=body, request_id=request_id, headers=headers)


class APIStatusError(APIError):
    """The server answered with an error status.

    ``status`` is the HTTP status, ``body`` the parsed JSON body (or the text
    when it was not JSON), ``request_id`` the server's ``X-Request-Id`` and
    ``headers`` the response headers. For token operations the ServiceError
    fields (``name``, ``id``, ``temporary``, ``timeout``, ``fault``) are set
    when the server sent them. ``attempts`` is how many requests were made
    (retries included) and ``elapsed`` the seconds they took.
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
        self.attempts = 1
        self.elapsed = 0.0
        service = body if isinstance(body, dict) else {}
        self.name: str | None = _str_or_none(service.get("name"))
        self.id: str | None = _str_or_none(service.get("id"))
        self.temporary: bool | None = _bool_or_none(service.get("temporary"))
        self.timeout: bool | None = _bool_or_none(service.get("timeout"))
        self.fault: bool | None = _bool_or_none(service.get("fault"))
        super().__init__(f"{status} {message}", body=body, request_id=request_id, headers=headers)


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
        """The server's ``detail`` list (``loc``, ``msg``, ``type`` items), or ``[]``:
        the first of :func:`error_layers` that has one (Mistral's ``{"message": {"detail":
        [...]}}``)."""
        for layer in error_layers(self.body):
            if isinstance(layer.get("detail"), list):
                return list(layer["detail"])
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
    """The most specific :class:`APIStatusError` subclass for an HTTP status (a status
    outside 100-599, which RFC 9110 §15 does not define, is a plain ``APIStatusError``)."""
    if 500 <= status < 600:
        return InternalServerError
    return _BY_STATUS.get(status, APIStatusError)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _bool_or_none(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _restored(cls: type[ChatSDKError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error
