"""Timeout and RetryPolicy value objects, and client settings from arguments or environment."""

from __future__ import annotations

import email.utils
import os
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import ValidationError

__all__ = ["RetryPolicy", "Settings", "Timeout"]

ENV_PREFIX = "CHATSDK_"


@dataclass(frozen=True, slots=True)
class Timeout:
    """How long each phase of a call may take, in seconds (``None``: no limit).

    - ``connect``: establishing a connection (TCP and TLS).
    - ``read``: the longest wait for any bytes on a socket read (keep-alive pings count).
    - ``idle``: the longest gap between two *parsed events* of a stream; comments and
      pings do not reset it, so a server that only pings cannot hold a stream forever.
      It also bounds the wait for a response's headers and for a whole JSON answer, so
      a server dripping bytes (each one resetting ``read``) cannot hold a call either.
    - ``total``: the whole call, retries and resumes included.

    The defaults never kill a healthy long stream: there is no total limit, and a
    stream only has to deliver an event every five minutes.

    >>> Timeout(connect=5, idle=30)
    Timeout(connect=5, read=60.0, idle=30, total=None)
    """

    connect: float | None = 10.0
    read: float | None = 60.0
    idle: float | None = 300.0
    total: float | None = None

    def __post_init__(self) -> None:
        for name in ("connect", "read", "idle", "total"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise ValidationError(
                    f"Timeout.{name} must be a positive number or None, got {value!r}"
                )

    @classmethod
    def coerce(cls, value: Timeout | float | None) -> Timeout:
        """A ``Timeout`` from a Timeout, a number (used for connect, read and idle), or None."""
        if value is None:
            return cls()
        if isinstance(value, Timeout):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(
                f"timeout must be a Timeout or a number of seconds, got {value!r}"
            )
        return cls(connect=value, read=value, idle=value)


# Statuses worth another attempt: the server says it is busy, timed out, or failed
# transiently. 409 is included because the public token API answers it for a
# concurrent write that succeeds on retry.
RETRYABLE_STATUSES = frozenset({408, 409, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before trying a request again.

    Retries happen for connection errors and statuses 408, 409, 429 and 5xx, only
    before the first byte of a response body. The wait grows as
    ``initial_delay * multiplier ** attempt`` up to ``max_delay``, minus up to
    ``jitter`` of itself at random. A ``Retry-After`` header longer than that wait
    replaces it (when no longer than ``max_retry_after``); a shorter one, ``0`` included,
    does not shorten it, so that a burst of ``Retry-After: 0`` answers cannot use up
    every retry within milliseconds. ``max_resumes`` bounds consecutive
    reconnects of a dropped stream that bring no new event.

    >>> RetryPolicy(max_retries=0).max_retries  # never retry
    0
    """

    max_retries: int = 2
    initial_delay: float = 0.5
    # Eight seconds keeps a retried call within what an interactive user waits for.
    max_delay: float = 8.0
    multiplier: float = 2.0
    jitter: float = 0.25
    # A server asking for a longer pause than a minute is better reported than obeyed.
    max_retry_after: float = 60.0
    max_resumes: int = 5

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise ValidationError(
                f"RetryPolicy.max_retries must be an int >= 0, got {self.max_retries!r}"
            )
        if not 0 <= self.jitter <= 1:
            raise ValidationError(
                f"RetryPolicy.jitter must be between 0 and 1, got {self.jitter!r}"
            )
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValidationError("RetryPolicy delays must be >= 0 and multiplier >= 1")
        if self.max_resumes < 0:
            raise ValidationError(f"RetryPolicy.max_resumes must be >= 0, got {self.max_resumes!r}")

    @classmethod
    def coerce(cls, value: RetryPolicy | int | None) -> RetryPolicy:
        """A ``RetryPolicy`` from a RetryPolicy, a number of retries, or None (the default)."""
        if value is None:
            return cls()
        if isinstance(value, RetryPolicy):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(f"retries must be a RetryPolicy or an int, got {value!r}")
        return cls(max_retries=value)

    def is_retryable_status(self, status: int) -> bool:
        """Whether a response with this status may be retried."""
        return status in RETRYABLE_STATUSES or status >= 500

    def backoff(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (0 for the first retry), with jitter."""
        delay = min(self.max_delay, self.initial_delay * self.multiplier**attempt)
        return delay * (1 - self.jitter * random.random())

    def delay_for(self, attempt: int, retry_after: str | None) -> float | None:
        """The wait before the next attempt, or None when ``Retry-After`` asks for too long."""
        backoff = self.backoff(attempt)
        if retry_after is not None:
            seconds = parse_retry_after(retry_after)
            if seconds is not None:
                # The server's wait is a floor: found by benchmarks/soak.py, where 503
                # bursts with "Retry-After: 0" made retries spin until they ran out.
                return max(seconds, backoff) if seconds <= self.max_retry_after else None
        return backoff


def parse_retry_after(value: str) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP-date)."""
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        return max(0.0, float(value))  # lenient: some servers send fractions
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# Header values may not contain CR, LF or other control characters (header injection);
# tab is allowed by RFC 9110 but never appears in a key or token. C1 controls (NEL
# among them) and the Unicode line and paragraph separators are refused too: some
# proxies, log viewers and str.splitlines() treat them as line breaks.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# RFC 9110 §5.1: a field name is a token.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 3986 host (reg-name or IP literal) and optional port: what an origin's part after
# "scheme://" may be. No userinfo, no empty port, no whitespace, nothing after it.
_ORIGIN_AUTHORITY = re.compile(
    r"(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)


def check_header_value(name: str, value: str) -> str:
    """``value`` if it is safe to send as a header value; the error never echoes it."""
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise ValidationError(f"{name} must not be empty")
    if _CONTROL.search(value):
        raise ValidationError(f"{name} contains a control character (CR, LF or similar)")
    return value


def check_base_url(name: str, url: str) -> str:
    """``url`` without a trailing slash, if it is an absolute http(s) URL."""
    if not isinstance(url, str):
        raise ValidationError(f"{name} must be a string URL, got {type(url).__name__}")
    try:
        parts = urlsplit(url)  # ValueError: a malformed IPv6 literal
        parts.port  # noqa: B018 - ValueError: a non-numeric or out-of-range port
        # UnicodeError (a ValueError): a host no resolver can encode, such as "a..b" or
        # a label over 63 characters; it would otherwise surface untyped at connect time.
        (parts.hostname or "").encode("idna")
    except ValueError:
        valid = False
    else:
        valid = not any(ch.isspace() for ch in url)
    if not valid:
        shown = "" if "@" in url else f": {url!r}"  # never echo what may be a password
        raise ValidationError(f"{name} is not a valid URL{shown}")
    if "@" in parts.netloc:
        # Never echoed: the part before "@" is a password more often than not. Every
        # error message carries the URL, so credentials in it would leak everywhere.
        raise ValidationError(
            f"{name} must not contain credentials (user:password@); pass api_key=... instead"
        )
    if parts.scheme not in ("http", "https") or not parts.netloc or _CONTROL.search(url):
        raise ValidationError(f"{name} must be an absolute http:// or https:// URL, got {url!r}")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValidationError(f"{name} must not have a query or fragment, got {url!r}")
    return url.rstrip("/")


@dataclass(frozen=True, slots=True)
class Settings:
    """Client settings resolved once: explicit arguments first, then ``CHATSDK_*`` variables.

    Secrets are held here and never shown: ``repr`` masks them.
    """

    api_key: str | None
    project: str | None
    session_token: str | None
    tokens_base_url: str
    chat_base_url: str
    origin: str | None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"Settings(api_key={_mask(self.api_key)}, project={self.project!r}, "
            f"session_token={_mask(self.session_token)}, tokens_base_url={self.tokens_base_url!r}, "
            f"chat_base_url={self.chat_base_url!r}, origin={self.origin!r})"
        )

    @classmethod
    def resolve(
        cls,
        *,
        api_key: str | None,
        project: str | None,
        session_token: str | None,
        base_url: str | None,
        tokens_base_url: str | None,
        chat_base_url: str | None,
        origin: str | None,
        headers: Mapping[str, str] | None,
        token_provider: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Read each unset argument from the environment and validate all of them.

        Explicit arguments always beat the environment: a ``session_token`` argument
        (or provider) means no API key is taken from ``CHATSDK_API_KEY``, and a
        ``base_url`` argument beats the per-API URL variables.
        """
        env = os.environ if environ is None else environ

        def pick(value: str | None, name: str) -> str | None:
            if value is not None:
                return value
            found = env.get(ENV_PREFIX + name)
            return found if found else None

        token_given = session_token is not None or token_provider
        if api_key is None and not token_given:
            api_key = pick(None, "API_KEY")
        project = pick(project, "PROJECT")
        if api_key is None and not token_given:
            session_token = pick(None, "SESSION_TOKEN")

        def url(explicit: str | None, name: str) -> str | None:
            return explicit or base_url or pick(None, name) or pick(None, "BASE_URL")

        tokens_url = url(tokens_base_url, "TOKENS_BASE_URL")
        chat_url = url(chat_base_url, "CHAT_BASE_URL")
        origin = pick(origin, "ORIGIN")
        if tokens_url is None or chat_url is None:
            raise ValidationError(
                "no server URL: pass base_url=... or set CHATSDK_BASE_URL "
                "(per API: tokens_base_url / chat_base_url)"
            )
        if api_key is not None:
            check_header_value("api_key", api_key)
        if session_token is not None:
            check_header_value("session_token", session_token)
        if project is not None:
            check_header_value("project", project)
        if origin is not None:
            check_origin("origin", origin)
        extra: dict[str, str] = {}
        for key, value in (headers or {}).items():
            if not isinstance(key, str) or not _HEADER_NAME.fullmatch(key):
                raise ValidationError(f"invalid header name {key!r}")
            extra[key] = check_header_value(f"header {key}", value)
        return cls(
            api_key=api_key,
            project=project,
            session_token=session_token,
            tokens_base_url=check_base_url("tokens base_url", tokens_url),
            chat_base_url=check_base_url("chat base_url", chat_url),
            origin=origin,
            headers=extra,
        )


def check_origin(name: str, origin: str) -> str:
    """``origin`` if it is ``scheme://host[:port]`` with no path, query or fragment."""
    if not isinstance(origin, str):
        raise ValidationError(f"{name} must be a string like 'https://docs.example.com'")
    # One rule for client, server and OpenAPI document: chatsdk/_rules.py.
    from ._rules import origin_problem

    valid = origin_problem(origin) is None
    if not valid:
        raise ValidationError(
            f"{name} must be an origin like 'https://docs.example.com' (scheme://host[:port], "
            f"no path), got {origin!r}"
        )
    return origin


def _mask(secret: str | None) -> str:
    return "None" if secret is None else "'***'"
