"""A web backend for the chat, with aiohttp: the server side of the embed story.

It holds the secret API key and never lets it leave the process. It

- serves the embed page (``examples/embed/``) at ``GET /`` and ``GET /embed.js``;
- mints a client token bound to its page's origin: ``POST /token`` answers
  ``{"client_token", "expires_after", "project", "chat_base_url"}``, everything the page
  needs to stream answers straight from the chat server;
- revokes a token on logout: ``POST /logout`` with ``{"client_token": ...}``, answers 204;
- relays a streamed chat completion to its own clients as server-sent events:
  ``GET /ask?q=...`` (one question) or ``POST /ask`` with ``{"messages": [...]}`` (a
  conversation: the caller keeps it, as the Chat Completions API has the caller do)
  answers ``text/event-stream`` with one ``text`` event per piece of the answer, then one
  ``done`` event (JSON: ``message``, the assistant's turn to append to the conversation,
  ``finish_reason`` and ``links``), or an ``error`` event if the chat server fails
  half-way (an error chunk, a cut stream).

One ``ChatClient`` (one connection pool) serves every request: it is opened when the app
starts and closed at cleanup (``app.cleanup_ctx``).

Run it::

    python examples/backend_aiohttp.py            # starts a reference server of its own
    CHATSDK_BASE_URL=... CHATSDK_API_KEY=... python examples/backend_aiohttp.py --port 8000

then open the URL it prints. The page must be loaded from exactly that origin (the
tokens are bound to it): ``http://localhost:8000`` is another origin than
``http://127.0.0.1:8000``, and the chat server refuses it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

import chatsdk

__all__ = ["CHAT_CLIENT", "EMBED_DIR", "MODEL", "TOKEN_LIFETIME", "make_app", "main"]

EMBED_DIR = Path(__file__).resolve().parent / "embed"
MODEL = "inkeep-qa-expert"
# Short-lived on purpose: a leaked token is worth little, and the page mints a new one
# when its token is within 30 s of expiring.
TOKEN_LIFETIME = 600
# Bound a question, and a conversation, before they cost an upstream call.
MAX_QUESTION_CHARS = 2000
MAX_MESSAGES = 50

#: Where the app keeps its one shared ChatClient (``app[CHAT_CLIENT]``).
CHAT_CLIENT = web.AppKey("chat_client", chatsdk.ChatClient)

# SSE line ends: a text piece containing any of them is sent as several ``data:`` lines,
# which an SSE parser joins back with "\n".
_LINE_END = re.compile(r"\r\n|\r|\n")


def make_app(chat_base_url: str, api_key: str, project: str, page_origin: str) -> web.Application:
    """The backend app; ``page_origin`` is the origin its page is served from.

    ``chat_base_url`` is where the chat server is, for this backend and for the page.
    """
    parts = urlsplit(page_origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
        raise ValueError(f"page_origin must look like 'https://host[:port]', got {page_origin!r}")
    chat_base_url = chat_base_url.rstrip("/")

    async def chat_client(app: web.Application) -> AsyncIterator[None]:
        async with chatsdk.ChatClient(
            api_key=api_key, project=project, base_url=chat_base_url
        ) as client:
            app[CHAT_CLIENT] = client
            yield

    async def page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(EMBED_DIR / "index.html")

    async def script(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            EMBED_DIR / "embed.js", headers={"Content-Type": "text/javascript; charset=utf-8"}
        )

    async def token(request: web.Request) -> web.StreamResponse:
        # A real backend authenticates its user here (a session cookie) before minting.
        try:
            tok = await request.app[CHAT_CLIENT].tokens.create(
                embed_origin=page_origin, expires_after=TOKEN_LIFETIME
            )
        except chatsdk.ChatSDKError as exc:
            return _error(502, f"could not mint a client token: {exc}")
        return web.json_response(
            {
                "client_token": tok.client_token,
                "expires_after": tok.expires_after,
                "project": project,
                "chat_base_url": chat_base_url,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def logout(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 'send JSON: {"client_token": "..."}')
        client_token = body.get("client_token") if isinstance(body, dict) else None
        if not isinstance(client_token, str) or not client_token:
            return _error(400, 'send JSON: {"client_token": "..."}')
        try:
            await request.app[CHAT_CLIENT].tokens.revoke(client_token)
        except chatsdk.BadRequestError:
            return _error(400, "not a valid client token")
        except chatsdk.ChatSDKError as exc:
            return _error(502, f"could not revoke the token: {exc}")
        return web.Response(status=204)

    async def ask(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                return _error(400, 'send JSON: {"messages": [{"role": "user", "content": "..."}]}')
            messages = _conversation(body.get("messages") if isinstance(body, dict) else None)
        else:
            question = request.query.get("q", "").strip()
            messages = _conversation([{"role": "user", "content": question}] if question else None)
        if isinstance(messages, str):
            return _error(400, messages)
        stream = request.app[CHAT_CLIENT].chat.completions.create(
            model=MODEL, messages=messages, tools=chatsdk.INKEEP_TOOLS, tool_choice="auto"
        )
        try:
            # Entering sends the request, so a refusal is still an ordinary HTTP error;
            # leaving, however it happens, releases the upstream connection.
            async with stream:
                return await _relay(request, stream)
        except chatsdk.ChatSDKError as exc:
            return _error(502, f"the chat server failed: {exc}")

    app = web.Application()
    app.cleanup_ctx.append(chat_client)
    app.router.add_get("/", page)
    app.router.add_get("/embed.js", script)
    app.router.add_post("/token", token)
    app.router.add_post("/logout", logout)
    app.router.add_get("/ask", ask)
    app.router.add_post("/ask", ask)
    return app


def _conversation(messages: object) -> list[dict[str, str]] | str:
    """The conversation our client sent, checked; or why it is refused.

    Only ``user`` and ``assistant`` turns are relayed: the page must not be able to slip
    its own ``system`` instructions to the model.
    """
    if not isinstance(messages, list) or not messages:
        return 'missing question: GET /ask?q=... or POST /ask with {"messages": [...]}'
    if len(messages) > MAX_MESSAGES:
        return f"the conversation has more than {MAX_MESSAGES} messages"
    checked = []
    for message in messages:
        if not isinstance(message, dict):
            return 'each message must be {"role": ..., "content": ...}'
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant") or not isinstance(content, str):
            return "each message needs a role (user or assistant) and a content string"
        if len(content) > MAX_QUESTION_CHARS:
            return f"a message is longer than {MAX_QUESTION_CHARS} characters"
        checked.append({"role": role, "content": content})
    if checked[-1]["role"] != "user" or not checked[-1]["content"].strip():
        return "the conversation must end with the user's question"
    return checked


async def _relay(request: web.Request, stream: chatsdk.CompletionStream) -> web.StreamResponse:
    """Send an open chat completion stream to our own client as server-sent events."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        try:
            async for text in stream.text_stream:
                await response.write(_sse("text", text))
            result = await stream.final_result()
            done = {
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": result.finish_reason,
                "links": [{"title": link.title, "url": link.url} for link in result.links],
            }
            last = _sse("done", json.dumps(done))
        except chatsdk.ChatSDKError as exc:
            # Too late for an error status: tell our client in the stream itself.
            last = _sse("error", json.dumps({"message": str(exc)}))
        await response.write(last)
        await response.write_eof()
    except ConnectionResetError:
        pass  # our client left (before or after the upstream failed): nobody is listening
    return response


def _sse(event: str, data: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in _LINE_END.split(data))
    return f"event: {event}\n{lines}\n".encode()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def serve(
    host: str, port: int, chat_base_url: str | None, api_key: str | None, project: str
) -> None:
    """Serve the backend until cancelled; with no ``chat_base_url``, start a reference server."""
    async with contextlib.AsyncExitStack() as stack:
        if chat_base_url is None:
            from chatsdk.server import ReferenceServer

            reference = (
                ReferenceServer(api_key=api_key, project=project)
                if api_key
                else ReferenceServer(project=project)
            )
            await stack.enter_async_context(reference)
            chat_base_url, api_key = reference.base_url, reference.api_key
            print(f"Started a reference server at {chat_base_url}", flush=True)
        if not api_key:
            raise SystemExit("backend_aiohttp: set CHATSDK_API_KEY (or pass --api-key)")
        # Bind first, so the page origin names the real port even with --port 0.
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        shown = f"[{host}]" if ":" in host else host
        page_origin = f"http://{shown}:{sock.getsockname()[1]}"
        runner = web.AppRunner(make_app(chat_base_url, api_key, project, page_origin))
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.SockSite(runner, sock).start()
        print(f"Open {page_origin}/ in a browser (Ctrl-C stops)", flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--chat-url",
        default=os.environ.get("CHATSDK_BASE_URL"),
        help="the chat server (CHATSDK_BASE_URL); none: start a reference server",
    )
    parser.add_argument("--api-key", default=os.environ.get("CHATSDK_API_KEY"))
    parser.add_argument("--project", default=os.environ.get("CHATSDK_PROJECT", "demo"))
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.host, args.port, args.chat_url, args.api_key, args.project))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"backend_aiohttp: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
