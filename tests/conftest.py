"""Shared fixtures: the anyio backend and a running reference server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chatsdk.server import ReferenceServer
from tests.support import reference_server


@pytest.fixture
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio (aiohttp needs it)."""
    return "asyncio"


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    """A reference server on an ephemeral loopback port, with a known signing secret."""
    async with reference_server() as running:
        yield running
