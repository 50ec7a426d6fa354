"""Shared fixtures: the anyio backend and a running reference server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chatsdk.server import ReferenceServer

# Tests forge tokens with this secret (expired ones, other projects) instead of sleeping.
SIGNING_SECRET = "test-signing-secret-0123456789abcdef-0123456789"


@pytest.fixture
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio (aiohttp needs it)."""
    return "asyncio"


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    """A reference server on an ephemeral loopback port, with a known signing secret."""
    async with ReferenceServer(signing_secret=SIGNING_SECRET) as running:
        yield running
