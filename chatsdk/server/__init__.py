"""The chatsdk reference server: the whole protocol of SPEC §1 on loopback, no network.

It mints and verifies client tokens (HS256 JWTs bound to an origin, revocable),
keeps sessions, history and result event logs in SQLite, answers from a small
bundled document set with citations, supports resumable streams
(``Content-Location`` + ``Last-Event-ID``) and ``Idempotency-Key``, and can be told
to misbehave through :class:`Faults`::

    from chatsdk.server import Faults, ReferenceServer

    async with ReferenceServer(api_key="k", project="demo") as server:
        server.faults = Faults(drop_after_events=3, drop_times=1)
        ...  # point a client at server.base_url

For synchronous code use ``with ReferenceServer().serve_in_thread() as server:``.
"""

from chatsdk.server.app import ReferenceServer
from chatsdk.server.faults import Faults

__all__ = ["Faults", "ReferenceServer"]
