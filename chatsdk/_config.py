"""Timeout and RetryPolicy value objects, and client settings from arguments or environment."""

from __future__ import annotations

import difflib
import email.utils
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import urlsplit

import msgspec

from ._rules import origin_problem
from .errors import ValidationError
from .sse import DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_LINE_SIZE

__all__ = ["NOT_GIVEN", "NotGiven", "RetryPolicy", "Settings", "Timeout"]

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
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value < math.inf  # nan compares false too
            ):
                raise ValidationError(
                    f"Timeout.{name} must be a positive, finite number or None, got {value!r}"
                )

    @classmethod
    def coerce(cls, value: Timeout | float | None) -> Timeout:
        """A ``Timeout`` from a Timeout, a number of seconds (used for connect, read and
        idle), or None (no limit of any kind, as everywhere in chatsdk)."""
        if value is None:
            return cls(connect=None, read=None, idle=None, total=None)
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
    """When and how long to wait before trying a request again (every delay in seconds).

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
        for name in ("max_retries", "max_resumes"):
            count = getattr(self, name)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValidationError(f"RetryPolicy.{name} must be an int >= 0, got {count!r}")
        if not 0 <= self.jitter <= 1:
            raise ValidationError(
                f"RetryPolicy.jitter must be between 0 and 1, got {self.jitter!r}"
            )
        numbers = (self.initial_delay, self.max_delay, self.multiplier, self.max_retry_after)
        if not all(isinstance(n, int | float) and math.isfinite(n) for n in numbers):
            raise ValidationError("RetryPolicy delays and multiplier must be finite numbers")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValidationError("RetryPolicy delays must be >= 0 and multiplier >= 1")
        if self.max_retry_after < 0:
            raise ValidationError(
                f"RetryPolicy.max_retry_after must be >= 0, got {self.max_retry_after!r}"
            )

    @classmethod
    def coerce(cls, value: RetryPolicy | int | None) -> RetryPolicy:
        """A ``RetryPolicy`` from a RetryPolicy, a number of retries, or None (no retries and
        no resumes, as everywhere in chatsdk)."""
        if value is None:
            return cls(max_retries=0, max_resumes=0)
        if isinstance(value, RetryPolicy):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(f"retries must be a RetryPolicy or an int, got {value!r}")
        return cls(max_retries=value)

    def is_retryable_status(self, status: int) -> bool:
        """Whether a response with this status may be retried: 408, 409, 429 and 5xx
        (not 600 or more, which no server failure is: RFC 9110 §15 stops at 599)."""
        return status in RETRYABLE_STATUSES or 500 <= status < 600

    def backoff(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (0 for the first retry), with jitter."""
        try:
            delay = min(self.max_delay, self.initial_delay * self.multiplier**attempt)
        except OverflowError:  # a policy that retries for ever: the cap long since reached
            delay = self.max_delay
        return delay * (1 - self.jitter * random.random())

    def delay_for(self, attempt: int, asked: float | None) -> float | None:
        """The wait before retry number ``attempt``, in seconds, given the wait the server
        ``asked`` for (see :func:`asked_wait`; None: it asked for none): the backoff, or
        the server's wait when longer; None when the server asks for more than
        ``max_retry_after``."""
        backoff = self.backoff(attempt)
        if asked is None:
            return backoff
        # The server's wait is a floor: found by benchmarks/soak.py, where 503 bursts
        # with "Retry-After: 0" made retries spin until they ran out.
        return max(asked, backoff) if asked <= self.max_retry_after else None


def asked_wait(headers: Mapping[str, str]) -> tuple[float | None, str]:
    """The wait in seconds a response asks for before a retry, and the header that asks:
    ``retry-after-ms`` (milliseconds, OpenAI's and Azure's) when valid, preferred as
    openai-python does, else ``Retry-After`` (RFC 9110 §10.2.3); None when neither is."""
    given_ms = headers.get("retry-after-ms")
    milliseconds = parse_delay(given_ms) if given_ms is not None else None
    if milliseconds is not None:
        return milliseconds / 1000, "retry-after-ms"
    retry_after = headers.get("Retry-After")
    return (parse_retry_after(retry_after) if retry_after is not None else None), "Retry-After"


_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_delay(value: str) -> float | None:
    """A number of ASCII digits (RFC 9110 §10.2.3's delta-seconds), a fraction taken too
    (some servers send one); nothing else float() would read ("1_0", "+1", other
    scripts' digits, "inf"): None."""
    value = value.strip()
    return float(value) if _DELAY_SECONDS.fullmatch(value) else None


def parse_retry_after(value: str) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP-date)."""
    seconds = parse_delay(value)
    if seconds is not None:
        return seconds
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


def check_header_value(name: str, value: str) -> str:
    """``value`` if it is safe to send as a header value; the error never echoes it."""
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise ValidationError(f"{name} must not be empty")
    if _CONTROL.search(value):
        raise ValidationError(f"{name} contains a control character (CR, LF or similar)")
    if _SURROGATE.search(value):
        raise ValidationError(f"{name} {_UNSENDABLE}")
    return value


# A lone surrogate: what undecodable bytes become in a str (os.environ, surrogateescape);
# no UTF-8 holds it, and the encoder's error would carry the whole value.
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSENDABLE = (
    "holds a character that cannot be sent as UTF-8 (a lone surrogate, such as undecodable "
    "bytes read into a str)"
)


def json_value(value: Any) -> Any:
    """msgspec's hook for a value it does not encode itself: a subclass of ``str``,
    ``int`` or ``float`` (``numpy.float64``, say) is sent as the value it holds (its own
    ``__str__`` aside, as ``json.dumps`` does); anything else is a :class:`ValidationError`."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, int):
        return int.__int__(value)
    raise ValidationError(f"a value of type {type(value).__name__} is not JSON-serialisable")


# One encoder per enc_hook: a Decimal is sent as the number it is (msgspec's default is
# a string, which a server checking types refuses for temperature or top_p).
_ENCODERS: dict[Callable[[Any], Any], msgspec.json.Encoder] = {}


def json_body(value: object, enc_hook: Callable[[Any], Any] = json_value) -> bytes:
    """``value`` encoded as a JSON request body (``enc_hook``: msgspec's, for other types;
    a ``Decimal`` as a number).

    Raises :class:`ValidationError` for text no UTF-8 holds (a lone surrogate), without
    echoing it, for a value JSON has no form for, and for a NaN or an infinity (float or
    Decimal) anywhere in it, naming where: JSON has no such numbers (RFC 8259 §6)."""
    encoder = _ENCODERS.get(enc_hook)
    if encoder is None:
        encoder = _ENCODERS[enc_hook] = msgspec.json.Encoder(
            enc_hook=enc_hook, decimal_format="number"
        )
    try:
        body = encoder.encode(value)
    except UnicodeEncodeError:
        raise ValidationError(f"the request {_UNSENDABLE}") from None
    except ValueError:  # a Decimal NaN or infinity, which no number format holds
        if (where := _non_finite_at(value)) is None:
            raise
        raise _not_a_number(where) from None
    if b"null" in body and (where := _non_finite_at(value)) is not None:
        raise _not_a_number(where)  # a float's: msgspec writes null
    return body


def _not_a_number(where: str) -> ValidationError:
    return ValidationError(
        f"the request holds a number JSON cannot carry (NaN or an infinity) at "
        f"{where[:120]}: it cannot be sent as a number"
    )


def _non_finite_at(value: object) -> str | None:
    # The path to a float NaN or infinity in value (already encoded: no cycle), or None.
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, float | Decimal):
            if not (math.isfinite(item) if isinstance(item, float) else item.is_finite()):
                return path or "its top level"
        elif isinstance(item, Mapping):
            stack += [(f"{path}.{key}" if path else str(key), v) for key, v in item.items()]
        elif isinstance(item, list | tuple | set | frozenset):  # a set: a JSON array
            stack += [(f"{path}[{i}]", v) for i, v in enumerate(item)]
        elif isinstance(item, msgspec.Struct):
            fields = item.__struct_fields__
            stack += [(f"{path}.{f}" if path else f, getattr(item, f)) for f in fields]
    return None


def check_base_url(name: str, url: str, *, credentials: bool = False) -> str:
    """``url`` without a trailing slash, if it is an absolute http(s) URL.

    ``name`` is the setting as the user set it (an argument or a ``CHATSDK_*`` variable);
    ``credentials`` allows ``user:password@`` (a proxy's), never echoed.
    """
    if not isinstance(url, str):
        raise ValidationError(f"{name} must be a string URL, got {type(url).__name__}")
    try:
        parts = urlsplit(url)  # ValueError: a malformed IPv6 literal
        port = parts.port  # ValueError: a non-numeric or out-of-range port
        # UnicodeError (a ValueError): a host no resolver can encode, such as "a..b" or
        # a label over 63 characters; it would otherwise surface untyped at connect time.
        (parts.hostname or "").encode("idna")
    except ValueError:
        valid = False
    else:
        valid = port != 0 and not any(ch.isspace() for ch in url)  # none listens on 0
    if not valid:
        shown = "" if "@" in url else f": {url!r}"  # never echo what may be a password
        raise ValidationError(f"{name} is not a valid URL{shown}")
    if "@" in parts.netloc and not credentials:
        # Never echoed: the part before "@" is a password more often than not. Every
        # error message carries the URL, so credentials in it would leak everywhere.
        raise ValidationError(
            f"{name} must not contain credentials (user:password@); pass api_key=... instead"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname or _CONTROL.search(url):
        shown = "" if "@" in url else f", got {url!r}"
        raise ValidationError(f"{name} must be an absolute http:// or https:// URL{shown}")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        # Not shown: a query may hold a key (Azure's ``api-key=``), userinfo a password.
        shown = "" if "@" in url else f", got {without_query(url)!r} followed by one"
        raise ValidationError(f"{name} must not have a query or fragment{shown}")
    return url.rstrip("/")


class NotGiven:
    """The type of :data:`NOT_GIVEN`: an argument left out, as apart from ``None``."""

    _instance: NotGiven | None = None

    def __new__(cls) -> NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


#: A per-call argument left out: the client's setting applies. ``None`` means "no limit"
#: for ``timeout`` and "no retries" for ``retries``, everywhere.
NOT_GIVEN: Final = NotGiven()

#: The real services (SPEC 1.9); used when no URL is given.
GRAM_URL: Final = "https://app.getgram.ai"
INKEEP_URL: Final = "https://api.inkeep.com"

Service: TypeAlias = Literal["gram", "inkeep"]
#: How a client token is sent: Gram's ``Gram-Chat-Session`` header (SPEC 1.1), or as
#: ``Authorization: Bearer`` (the style Gram's deprecation RFC moves to, SPEC 1.8).
TokenAuth: TypeAlias = Literal["gram-chat-session", "bearer"]

# Every CHATSDK_* variable read; another name with that prefix is probably a misspelling.
ENV_NAMES: Final = (
    "API_KEY",
    "PROJECT",
    "SESSION_TOKEN",
    "BASE_URL",
    "TOKENS_BASE_URL",
    "CHAT_BASE_URL",
    "ORIGIN",
    "SERVICE",
    "TIMEOUT",
    "PROXY",
)


def _positive_int(name: str, value: object, *, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        bound = ">= 0 (0: no limit)" if zero else "> 0"
        raise ValidationError(f"{name} must be an int {bound}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """Every client option, resolved once: explicit arguments, then ``CHATSDK_*`` variables,
    then the defaults (the real services of SPEC 1.9). Frozen; ``repr`` masks the secrets.

    The client, the sync client and the CLI all build one with :meth:`resolve`.
    """

    api_key: str | None
    project: str | None
    session_token: str | None
    token_provider: Callable[[], Any] | None
    service: Service
    tokens_base_url: str
    chat_base_url: str
    completions_base_url: str
    origin: str | None
    headers: Mapping[str, str]
    timeout: Timeout
    retries: RetryPolicy
    max_connections: int
    max_event_size: int
    max_line_size: int
    token_auth: TokenAuth
    proxy: str | None
    trust_env: bool
    env_hint: str = ""  # names a misspelled CHATSDK_* variable, for missing-setting errors

    def __repr__(self) -> str:
        return (
            f"Settings(api_key={_mask(self.api_key)}, project={self.project!r}, "
            f"session_token={_mask(self.session_token)}, service={self.service!r}, "
            f"tokens_base_url={self.tokens_base_url!r}, chat_base_url={self.chat_base_url!r}, "
            f"completions_base_url={self.completions_base_url!r}, origin={self.origin!r})"
        )

    @classmethod
    def resolve(
        cls,
        *,
        api_key: str | None = None,
        project: str | None = None,
        session_token: str | Callable[[], Any] | None = None,
        service: str | None = None,
        base_url: str | None = None,
        tokens_base_url: str | None = None,
        chat_base_url: str | None = None,
        origin: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Timeout | float | NotGiven | None = NOT_GIVEN,
        retries: RetryPolicy | int | NotGiven | None = NOT_GIVEN,
        max_connections: int = 100,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        token_auth: str = "gram-chat-session",
        proxy: str | None = None,
        trust_env: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Read each unset argument from the environment and validate all of them.

        Rules: an explicit argument beats its variable; an API key and a client token
        together (both given, or both from the environment) are refused, since which one
        authenticates would otherwise be a guess (an explicit one beats the other's
        variable); ``base_url`` beats the per-API URL variables; with no URL at all, the
        real services are used (SPEC 1.9). ``service`` (``"gram"`` or ``"inkeep"``,
        default: Gram when a project or a client token is given, else Inkeep) picks the
        default addresses and the API-key header of Chat Completions.

        Raises :class:`ValidationError` naming the setting (argument or variable) that
        is wrong, with a hint for a misspelled ``CHATSDK_*`` variable.
        """
        env = os.environ if environ is None else environ
        hint = _misspelled_variables(env)
        if hint:  # said at once: a misspelled URL variable would send the key elsewhere
            logging.getLogger("chatsdk").warning("unknown CHATSDK_* variable%s", hint)

        def pick(value: Any, name: str) -> tuple[Any, str]:
            """(value, what the user set): the argument, else the variable."""
            if value is not None:
                return value, name.lower()
            found = env.get(ENV_PREFIX + name)
            if found == "" and name.endswith("URL"):
                # Read as unset, it would send the calls (and the key) to the real
                # services: a test setup's empty variable must not do that quietly.
                raise ValidationError(
                    f"{ENV_PREFIX + name} is set but empty: give a URL, or unset it to use "
                    "the default addresses"
                )
            return (found, ENV_PREFIX + name) if found else (None, name.lower())

        key_given = api_key is not None
        token_given = session_token is not None
        if key_given and token_given:
            raise ValidationError(
                "pass either api_key (server side) or session_token (a client token), not "
                "both: which one authenticates would be a guess"
            )
        if not key_given and not token_given:
            api_key, _ = pick(None, "API_KEY")
            session_token, _ = pick(None, "SESSION_TOKEN")
            if api_key is not None and session_token is not None:
                raise ValidationError(
                    "both CHATSDK_API_KEY and CHATSDK_SESSION_TOKEN are set: unset one, or "
                    "pass api_key=... or session_token=... to choose"
                )
        provider = session_token if callable(session_token) else None
        static_token = session_token if isinstance(session_token, str) else None
        if session_token is not None and provider is None and static_token is None:
            raise ValidationError(
                "session_token must be a client token string or a callable returning one, "
                f"got {type(session_token).__name__}"
            )
        project, _ = pick(project, "PROJECT")
        origin, origin_from = pick(origin, "ORIGIN")
        service, service_from = pick(service, "SERVICE")
        if service is None:
            service = "gram" if project is not None or session_token is not None else "inkeep"
        if service not in ("gram", "inkeep"):
            raise ValidationError(f"{service_from} must be 'gram' or 'inkeep', got {service!r}")
        if token_auth not in ("gram-chat-session", "bearer"):
            raise ValidationError(
                f"token_auth must be 'gram-chat-session' or 'bearer', got {token_auth!r}"
            )

        base, base_from = pick(base_url, "BASE_URL")
        if base_url is not None:  # an explicit base_url beats the per-API variables
            tokens_url, tokens_from = tokens_base_url, "tokens_base_url"
            chat_url, chat_from = chat_base_url, "chat_base_url"
        else:
            tokens_url, tokens_from = pick(tokens_base_url, "TOKENS_BASE_URL")
            chat_url, chat_from = pick(chat_base_url, "CHAT_BASE_URL")
        if base is not None:
            base = check_base_url(base_from, base)
        tokens = check_base_url(tokens_from, tokens_url) if tokens_url else base or GRAM_URL
        if chat_url:
            chat = completions = check_base_url(chat_from, chat_url)
        elif base is not None:
            chat = completions = base
        else:
            chat = INKEEP_URL + "/v0"
            completions = GRAM_URL if service == "gram" else INKEEP_URL + "/v1"

        if isinstance(timeout, NotGiven):
            found, _ = pick(None, "TIMEOUT")
            timeout = Timeout() if found is None else _seconds_variable("CHATSDK_TIMEOUT", found)
        if isinstance(retries, NotGiven):
            retries = RetryPolicy()
        proxy, proxy_from = pick(proxy, "PROXY")
        try:
            if api_key is not None:
                check_header_value("api_key", api_key)
            if static_token is not None:
                check_header_value("session_token", static_token)
            if project is not None:
                check_header_value("project", project)
            if origin is not None:
                check_origin(origin_from, origin)
            if proxy is not None:
                proxy = check_base_url(proxy_from, proxy, credentials=True)
        except ValidationError as exc:
            raise ValidationError(f"{exc}{hint}") from None
        if headers is not None and not isinstance(headers, Mapping):
            raise ValidationError(
                f"headers must be a mapping of header names to values, got {type(headers).__name__}"
            )
        if not isinstance(trust_env, bool):
            raise ValidationError(f"trust_env must be True or False, got {trust_env!r}")
        extra: dict[str, str] = {}
        for name, value in (headers or {}).items():
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                raise ValidationError(f"invalid header name {name!r}")
            extra[name] = check_header_value(f"header {name}", value)
        return cls(
            api_key=api_key,
            project=project,
            session_token=static_token,
            token_provider=provider,
            service=service,  # type: ignore[arg-type]  # checked above
            tokens_base_url=tokens,
            chat_base_url=chat,
            completions_base_url=completions,
            origin=origin,
            headers=extra,
            timeout=Timeout.coerce(timeout),
            retries=RetryPolicy.coerce(retries),
            max_connections=_positive_int("max_connections", max_connections, zero=True),
            max_event_size=_positive_int("max_event_size", max_event_size),
            max_line_size=_positive_int("max_line_size", max_line_size),
            token_auth=token_auth,  # type: ignore[arg-type]  # checked above
            proxy=proxy,
            trust_env=trust_env,
            env_hint=hint,
        )


def _seconds_variable(name: str, text: str) -> float:
    """A variable's positive, finite number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        raise ValidationError(f"{name} must be a number of seconds, got {text!r}") from None
    if not 0 < seconds < math.inf:
        raise ValidationError(f"{name} must be a positive number of seconds, got {seconds!r}")
    return seconds


def _misspelled_variables(env: Mapping[str, str]) -> str:
    """`` (did you mean CHATSDK_API_KEY for CHATSDK_APIKEY?)`` or ``""``."""
    known = [ENV_PREFIX + name for name in ENV_NAMES]
    hints = []
    for name in env:
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
            if close:
                hints.append(f"{close[0]} for {name}")
    return f" (did you mean {', '.join(sorted(hints))}?)" if hints else ""


def without_query(url: str) -> str:
    """``url`` without its query and fragment (which may hold a key: never shown)."""
    return url.split("?", 1)[0].split("#", 1)[0]


def check_origin(name: str, origin: str) -> str:
    """``origin`` if it is ``scheme://host[:port]`` with no path, query or fragment."""
    if not isinstance(origin, str):
        raise ValidationError(f"{name} must be a string like 'https://docs.example.com'")
    # One rule for client, server and OpenAPI document: chatsdk/_rules.py.
    problem = origin_problem(origin)
    if problem is not None:
        raise ValidationError(
            f"{name} must be an origin like 'https://docs.example.com' (scheme://host[:port], "
            f"no path): {origin!r} {problem}"
        )
    return origin


def _mask(secret: str | None) -> str:
    return "None" if secret is None else "'***'"
