"""chatsdk's ReferenceServer in a process of its own, for the token-operations benchmark.

Prints its port on the first line of stdout and serves until stdin closes. Uses the
same API key and project as the benchmark clients; state is kept in memory.
"""

from __future__ import annotations

import asyncio
import sys

from common import raise_fd_limit
from peers import API_KEY, PROJECT


async def main() -> None:
    from chatsdk.server import ReferenceServer

    raise_fd_limit()
    async with ReferenceServer(api_key=API_KEY, project=PROJECT, port=0) as server:
        print(server.base_url.rsplit(":", 1)[1].rstrip("/"), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
