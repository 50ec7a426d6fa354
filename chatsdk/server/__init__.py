"""The chatsdk reference server: the whole protocol of SPEC §1 on loopback, no network.

It mints and verifies client tokens (HS256 JWTs bound to an origin, revocable),
serves both chat wires (Inkeep's ``chat_results``, with the history kept in SQLite,
and Chat Completions, as Gram and Inkeep v1 serve it) under the real services' paths,
answers from a small bundled document set with citations (Inkeep's ``provideLinks``
tool calls on Chat Completions), supports resumable streams (``Content-Location`` +
``Last-Event-ID``) and ``Idempotency-Key``, and can be told to misbehave through
:class:`Faults`::

    from chatsdk.server import Faults, ReferenceServer

    async with ReferenceServer(api_key="k", project="demo") as server:
        server.faults = Faults(drop_after_events=3, drop_times=1)
        ...  # point a client at server.base_url

For synchronous code use ``with ReferenceServer().serve_in_thread() as server:``.
"""

from chatsdk.server.app import ReferenceServer
from chatsdk.server.faults import Faults

__all__ = ["Faults", "ReferenceServer"]
