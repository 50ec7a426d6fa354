"""One table per shared rule, fed to every place that checks it (chatsdk/_rules.py).

The origin rule is checked by the client before sending (``_config.check_origin``), by
the reference server when it mints a token (a 422 otherwise), and described by the
OpenAPI document's ``embed_origin`` pattern; all three must agree on every row.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

import chatsdk
from chatsdk import _rules
from chatsdk._config import check_origin
from chatsdk.server import ReferenceServer
from chatsdk.server.openapi import OPENAPI
from tests.test_server import TOKEN_HEADERS

ORIGINS: list[tuple[str, bool]] = [
    ("https://docs.example.com", True),
    ("http://localhost:8080", True),
    ("http://127.0.0.1", True),
    ("https://[::1]:8443", True),
    ("http://[2001:db8::1]", True),
    ("https://a.example:1", True),
    ("https://a.example:65535", True),
    ("https://Docs.Example.com", True),  # hosts are case-insensitive; schemes are lowercase
    ("https://xn--bcher-kva.example", True),
    ("https://a.example:4430", True),
    ("http://a.example:443", True),
    ("https://a.example:80", True),
    ("https://a.example:443", False),  # the default port: browsers leave it out
    ("http://a.example:80", False),
    ("https://[::1]:443", False),
    ("https://a.example:", False),  # empty port: the case the three disagreed on
    ("https://a.example/", False),  # trailing slash
    ("https://a.example/path", False),
    ("https://a.example?", False),
    ("https://a.example?q=1", False),
    ("https://a.example#top", False),
    ("https://user@a.example", False),
    ("https://user:pw@a.example", False),
    ("HTTPS://a.example", False),  # browsers send the scheme lowercase
    ("Https://a.example", False),
    ("https://a.example:0", False),
    ("https://a.example:65536", False),
    ("https://a.example:99999", False),
    ("https://a.example:080", False),  # a browser never writes a leading zero
    ("https://a.example:port", False),
    (" https://a.example", False),
    ("https://a.example ", False),
    ("https://a .example", False),
    ("https://a.example\n", False),
    ("https://a.example\t", False),
    ("https://[::1", False),
    ("https://[::1]x", False),
    ("https://[example.com]", False),
    ("ftp://a.example", False),
    ("a.example", False),
    ("//a.example", False),
    ("https://", False),
    ("https://:443", False),
    ("null", False),  # what sandboxed iframes send
    ("", False),
]
IDS = [repr(origin) for origin, _ in ORIGINS]

pytestmark = pytest.mark.anyio


def pattern_accepts(value: str) -> bool:
    """The OpenAPI pattern as a JSON Schema validator reads it (ECMA-262: unanchored
    search, ``$`` only at the very end)."""
    schema = OPENAPI["components"]["schemas"]["CreateChatSessionRequest"]
    pattern: str = schema["properties"]["embed_origin"]["pattern"]
    assert pattern.endswith("$")
    return re.search(pattern[:-1] + r"\Z", value) is not None


def client_accepts(value: str) -> bool:
    try:
        check_origin("embed_origin", value)
    except chatsdk.ValidationError:
        return False
    return True


@pytest.mark.parametrize(("origin", "valid"), ORIGINS, ids=IDS)
def test_client_and_openapi_pattern_agree_with_the_rule(origin: str, valid: bool) -> None:
    assert (_rules.origin_problem(origin) is None) is valid
    assert client_accepts(origin) is valid
    assert pattern_accepts(origin) is valid


async def test_server_agrees_with_the_rule(server: ReferenceServer) -> None:
    async with aiohttp.ClientSession() as http:
        for origin, valid in ORIGINS:
            async with http.post(
                f"{server.base_url}/rpc/chatSessions.create",
                json={"embed_origin": origin},
                headers=TOKEN_HEADERS,
            ) as resp:
                assert resp.status == (200 if valid else 422), origin
                if not valid:
                    assert "embed_origin" in (await resp.json())["message"]


def test_the_pattern_is_looser_only_on_ipv6_grammar() -> None:
    # A pattern cannot check that a bracketed host is an IPv6 address; the function can.
    for origin in ("https://[:::]", "https://[1:2:3:4:5:6:7:8:9]", "https://[1.2.3]"):
        assert pattern_accepts(origin)
        assert _rules.origin_problem(origin) == "has a bracketed host that is not an IPv6 address"
        assert not client_accepts(origin)


@pytest.mark.parametrize("value", [None, 5, b"https://a.example", ["https://a.example"]])
def test_non_strings_are_not_origins(value: Any) -> None:
    assert _rules.origin_problem(value) == "must be a string"


EXPIRES_AFTER: list[tuple[Any, bool]] = [
    (1, True),
    (900, True),
    (3600, True),
    (0, False),
    (-5, False),
    (3601, False),
    (True, False),
    (60.0, False),
    ("60", False),
]


@pytest.mark.parametrize(("value", "valid"), EXPIRES_AFTER, ids=map(repr, EXPIRES_AFTER))
def test_expires_after_rule(value: Any, valid: bool) -> None:
    assert (_rules.expires_after_problem(value) is None) is valid


def test_expires_after_range_is_one_range_everywhere() -> None:
    schema = OPENAPI["components"]["schemas"]["CreateChatSessionRequest"]
    expires_after = schema["properties"]["expires_after"]
    assert (expires_after["minimum"], expires_after["maximum"]) == (
        _rules.MIN_EXPIRES_AFTER,
        _rules.MAX_EXPIRES_AFTER,
    )
    assert expires_after["default"] == _rules.MAX_EXPIRES_AFTER


async def test_server_expires_after_range(server: ReferenceServer) -> None:
    async with aiohttp.ClientSession() as http:
        for value, valid in EXPIRES_AFTER:
            if not isinstance(value, int) or isinstance(value, bool):
                continue  # wrong types are a 400 (Goa's decoding), not the range rule
            async with http.post(
                f"{server.base_url}/rpc/chatSessions.create",
                json={"embed_origin": "https://a.example", "expires_after": value},
                headers=TOKEN_HEADERS,
            ) as resp:
                assert resp.status == (200 if valid else 422), value
