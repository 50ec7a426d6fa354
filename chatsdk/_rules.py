"""Rules both the client and the reference server check, each written once.

Pure functions over plain values (no aiohttp, no msgspec): the client's argument
checks (``_config.check_origin``), the server's request checks (``server/auth.py``)
and the server's OpenAPI document (``server/openapi.py``) all call or quote these,
so the three cannot drift apart. ``tests/test_rules.py`` feeds one table to all three.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

__all__ = [
    "MAX_EXPIRES_AFTER",
    "MIN_EXPIRES_AFTER",
    "ORIGIN_PATTERN",
    "expires_after_problem",
    "origin_problem",
]

# -- web origins (SPEC 1.2: a token's embed_origin, the Origin header it is checked against)

# ``scheme://host[:port]`` exactly as a browser writes an Origin header (RFC 6454 §6.2):
# a lowercase http(s) scheme, an RFC 3986 host (reg-name or bracketed IP literal), and an
# optional port 1..65535 without leading zeros, other than the scheme's default. No
# userinfo, path, query, fragment, empty port ("https://a.example:") or whitespace: an
# origin with any of them could never equal a browser's Origin header (a token minted
# for it would be refused everywhere). This is also the JSON Schema ``pattern`` of
# ``embed_origin`` in the OpenAPI document (ECMA-262 and Python read it the same way).
_PORT: Final = (
    r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
)
_HOST: Final = r"(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])"
# A browser leaves the scheme's default port out (RFC 6454 §6.2): never ":443" on https.
ORIGIN_PATTERN: Final = (
    rf"^(?:https://{_HOST}(?::(?!443$){_PORT})?|http://{_HOST}(?::(?!80$){_PORT})?)$"
)
_ORIGIN_RE: Final = re.compile(ORIGIN_PATTERN)


def origin_problem(value: object) -> str | None:
    """Why ``value`` is not a web origin (``scheme://host[:port]``), or None when it is.

    One thing the pattern cannot say is checked here too: a bracketed host must be a
    real IPv6 address (``[::1]``, not ``[:::]``).

    >>> origin_problem("https://docs.example.com:8443") is None
    True
    >>> origin_problem("https://docs.example.com/")
    'must be an origin (scheme://host[:port]) without path, query, fragment or userinfo'
    """
    if not isinstance(value, str):
        return "must be a string"
    # fullmatch: "$" alone would let a trailing newline through.
    if _ORIGIN_RE.fullmatch(value) is None:
        if not value.startswith(("http://", "https://")):
            return "must use the http or https scheme (lowercase)"
        if value.endswith(":443" if value.startswith("https") else ":80"):
            return "names its scheme's default port, which browsers leave out of Origin: drop it"
        return "must be an origin (scheme://host[:port]) without path, query, fragment or userinfo"
    host = value.split("://", 1)[1]
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1 : host.index("]")])
        except ValueError:
            return "has a bracketed host that is not an IPv6 address"
    return None


# -- token lifetimes (SPEC 1.2: expires_after) -------------------------------------------

#: The shortest and longest lifetime of a client token, in seconds (the public service's
#: range; a longer-lived browser credential would outlive a logout for too long).
MIN_EXPIRES_AFTER: Final = 1
MAX_EXPIRES_AFTER: Final = 3600


def expires_after_problem(value: object) -> str | None:
    """Why ``value`` is not a valid ``expires_after``, or None when it is."""
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer number of seconds"
    if not MIN_EXPIRES_AFTER <= value <= MAX_EXPIRES_AFTER:
        return f"must be between {MIN_EXPIRES_AFTER} and {MAX_EXPIRES_AFTER} seconds"
    return None
