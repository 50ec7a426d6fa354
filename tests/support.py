"""What the test files share: the reference server's key and project, fast retries,
token forging, request bodies, and bounded waits that prove things by behaviour."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import jwt

import chatsdk
from chatsdk.server import ReferenceServer

# The reference server's built-in test key and project (what `chatsdk serve` accepts).
KEY = "chatsdk-test-key"
PROJECT = "demo"
ORIGIN = "https://docs.example.com"
QUESTION = "How do I retry a failed request?"
# Tests forge tokens with this secret (expired ones, other projects) instead of sleeping.
SIGNING_SECRET = "test-signing-secret-0123456789abcdef-0123456789"
TOKEN_HEADERS = {"Gram-Key": KEY, "Gram-Project": PROJECT}
BEARER = {"Authorization": f"Bearer {KEY}"}
# Retries that take milliseconds, so that failure paths are cheap to walk.
FAST = chatsdk.RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)


def reference_server(**options: Any) -> ReferenceServer:
    """A reference server with the test key, project and signing secret (override any)."""
    options = {"api_key": KEY, "project": PROJECT, "signing_secret": SIGNING_SECRET, **options}
    return ReferenceServer(**options)


def create_body(
    question: str = "How do I retry?", *, stream: bool = True, **extra: Any
) -> dict[str, Any]:
    """A ``chat_results`` create body (SPEC 1.4) for raw HTTP tests."""
    return {
        "integration_id": "docs",
        "chat_session": {"messages": [{"role": "user", "content": question}]},
        "stream": stream,
        **extra,
    }


def forge(*, secret: str = SIGNING_SECRET, **overrides: Any) -> str:
    """A client token signed like the server's (claims of SPEC 1.2), any claim overridden."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "jti": str(uuid.uuid4()),
        "aud": [ORIGIN],
        "iat": now,
        "exp": now + 600,
        "project": PROJECT,
    }
    claims.update(overrides)
    return jwt.encode(claims, secret, algorithm="HS256")


async def mint(
    http: aiohttp.ClientSession,
    server: ReferenceServer,
    *,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> dict[str, Any]:
    """``POST /rpc/chatSessions.create`` over raw HTTP (``headers``: the server's key and
    project, the test ones by default); the whole answer."""
    body.setdefault("embed_origin", ORIGIN)
    url = f"{server.base_url}/rpc/chatSessions.create"
    async with http.post(url, json=body, headers=headers or TOKEN_HEADERS) as resp:
        assert resp.status == 200, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``check()`` holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"still false after {timeout} s"
        await asyncio.sleep(0.01)


async def pool_is_free(
    client: chatsdk.ChatClient, call: Callable[[], Awaitable[object]], within: float = 2.0
) -> None:
    """Prove by behaviour that ``client``'s pool has a free connection: ``call`` (which
    needs one) completes within ``within`` seconds. Use a client with a small pool."""
    async with asyncio.timeout(within):
        await call()


# -- raw-socket servers (asyncio.start_server) --------------------------------------------


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """A raw request's head and body (by Content-Length)."""
    got = await reader.readuntil(b"\r\n\r\n")
    for line in got.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            got += await reader.readexactly(int(line.split(b":")[1]))
    return got


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed host or a middlebox would."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def play(steps: Sequence[bytes | float | str], writer: asyncio.StreamWriter) -> bool:
    """Write a raw server's script: bytes are written, a float is a pause in seconds,
    ``"reset"`` and ``"close"`` end the connection. True when a step ended it."""
    for step in steps:
        if isinstance(step, bytes):
            writer.write(step)
            await writer.drain()
        elif isinstance(step, float):
            await asyncio.sleep(step)
        elif step == "reset":
            reset(writer)
            return True
        elif step == "close":
            writer.close()
            return True
    return False
