"""A pytest plugin: a reference server and a client for your tests, with faults on demand.

Installing chatsdk registers it (the ``pytest11`` entry point ``chatsdk``), so a project's
tests can use, with no conftest.py:

- ``chat_server``: a :class:`chatsdk.server.ReferenceServer` running on a free loopback
  port for one test (on a thread of its own, so sync and async tests alike can use it);
  ``.base_url``, ``.api_key`` and ``.project`` say how to reach it, and assigning
  ``.faults`` changes its behaviour mid-test.
- ``chat_client``: a :class:`chatsdk.ChatClient` holding that server's API key, closed
  after the test. It is an async fixture, run by anyio's pytest plugin (installed with
  chatsdk): mark the test ``@pytest.mark.anyio``.
- ``@pytest.mark.chat_faults(**fields)``: the server of this test starts with
  ``Faults(**fields)``, e.g. ``@pytest.mark.chat_faults(drop_after_events=3, drop_times=1)``.

No server starts until one of its fixtures is requested; loading the plugin imports the
``chatsdk`` package (this module's parent), and with it aiohttp and msgspec (``-p
no:chatsdk`` turns it off). ``import chatsdk`` does not import it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from chatsdk import ChatClient
    from chatsdk.server import Faults, ReferenceServer

__all__ = ["chat_client", "chat_server"]

MARKER = "chat_faults"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**fields): start this test's chat_server with "
        "chatsdk.server.Faults(**fields), e.g. drop_after_events=3",
    )


def _faults_of(request: pytest.FixtureRequest) -> Faults | None:
    """The ``Faults`` the test's ``chat_faults`` marker asks for (the closest one wins)."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        return None
    import msgspec

    from chatsdk.server import Faults

    names = {field.name for field in msgspec.structs.fields(Faults)}
    unknown = sorted(set(marker.kwargs) - names)
    if marker.args or unknown:
        pytest.fail(
            f"@pytest.mark.{MARKER} takes Faults fields as keywords; "
            + (f"unknown: {', '.join(unknown)}; " if unknown else "no positional arguments; ")
            + f"known: {', '.join(sorted(names))}",
            pytrace=False,
        )
    try:
        return msgspec.convert(dict(marker.kwargs), Faults)
    except msgspec.ValidationError as exc:
        pytest.fail(f"@pytest.mark.{MARKER}: {exc}", pytrace=False)


@pytest.fixture
def chat_server(request: pytest.FixtureRequest) -> Iterator[ReferenceServer]:
    """A reference server on a free loopback port for this test (its own thread and loop).

    Its API key is ``chat_server.api_key`` and its project ``chat_server.project``;
    ``@pytest.mark.chat_faults(...)`` sets its faults from the start, and assigning
    ``chat_server.faults = Faults(...)`` changes them at any point of the test.
    """
    from chatsdk.server import ReferenceServer

    with ReferenceServer(faults=_faults_of(request)).serve_in_thread() as server:
        yield server


@pytest.fixture
async def chat_client(
    chat_server: ReferenceServer, anyio_backend: Any
) -> AsyncIterator[ChatClient]:
    """A ChatClient of ``chat_server`` with its API key and project, closed after the test.

    It retries like the default policy but without long waits, so fault tests stay fast.
    """
    backend = anyio_backend if isinstance(anyio_backend, str) else anyio_backend[0]
    if backend != "asyncio":
        pytest.skip(f"chatsdk runs on asyncio (aiohttp), not {backend}")
    import chatsdk

    async with chatsdk.ChatClient(
        api_key=chat_server.api_key,
        project=chat_server.project,
        base_url=chat_server.base_url,
        retries=chatsdk.RetryPolicy(max_retries=2, initial_delay=0.01),
    ) as client:
        yield client
