"""The demo story behind ``chatsdk demo`` (and ``make demo``).

A reference server starts in-process; a backend holding the API key mints a client
token for the embedding page's origin; a "browser" streams two answers with that token
(the second one a follow-up that only makes sense after the first); the backend revokes
the token, and the browser's next call is refused.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

from ._client import ChatClient
from .errors import APIStatusError, AuthenticationError
from .models import Citation, MessageChunk

__all__ = ["run_demo"]

EMBED_ORIGIN = "https://docs.example.com"
INTEGRATION_ID = "docs"
FIRST_QUESTION = "How do client tokens work?"
# No topic of its own: the server answers it from the session's earlier turns.
FOLLOW_UP = "Tell me more."
TOKEN_LIFETIME = 900
STEPS = 6
WIDTH = 78
INDENT = "   "

_WORDS = re.compile(r"(\S*)(\s*)")


class _Wrapped:
    """Writes text as it arrives, indented and wrapped at word boundaries."""

    def __init__(self, out: TextIO, indent: str = INDENT, width: int = WIDTH):
        self._out = out
        self._indent = indent
        self._width = width
        self._column = 0
        # Spaces after the last word, written only once the next word fits on the line.
        self._space = ""

    def write(self, text: str) -> None:
        for word, space in _WORDS.findall(text):
            if not word:
                self._space += space
            elif self._column == 0:
                self._out.write(self._indent + word)
                self._column = len(self._indent) + len(word)
            elif self._column + len(self._space) + len(word) > self._width:
                self._out.write("\n" + self._indent + word)
                self._column = len(self._indent) + len(word)
            else:
                self._out.write(self._space + word)
                self._column += len(self._space) + len(word)
            if word:
                self._space = space
            if "\n" in self._space:
                self.end()
        self._out.flush()

    def end(self) -> None:
        """Finish the current line."""
        if self._column:
            self._out.write("\n")
        self._column = 0
        self._space = ""
        self._out.flush()


def _reason(exc: APIStatusError) -> str:
    """The server's own words from an error body (JSON ``message``/``detail`` or text)."""
    body = exc.body
    if isinstance(body, dict):
        for key in ("message", "detail"):
            if isinstance(body.get(key), str):
                return str(body[key])
    if isinstance(body, str) and body.strip() and len(body) < 200:
        return body.strip()
    return str(exc)


async def run_demo(out: TextIO | None = None, *, pace: float = 0.0) -> None:
    """Walk through the whole story against an in-process reference server.

    ``pace`` is a pause between two streamed events, in seconds, so that a person
    watching can see the answer arrive. Raises a ``chatsdk`` error if a step fails.
    """
    from .server import Faults, ReferenceServer

    out = sys.stdout if out is None else out
    step = 0

    def say(text: str = "") -> None:
        out.write(text + "\n")
        out.flush()

    def heading(text: str) -> None:
        nonlocal step
        step += 1
        say(f"\n[{step}/{STEPS}] {text}")

    def show_sources(citations: list[Citation]) -> None:
        if citations:
            say(f"{INDENT}sources:")
        for index, citation in enumerate(citations, start=1):
            number = citation.number if citation.number is not None else index
            title = citation.record.title or citation.record.type
            say(f"{INDENT}  [{number}] {title} - {citation.record.url or citation.hit_url}")

    say("chatsdk demo: a backend mints a client token, a browser chats with it, the")
    say("backend revokes it.")

    heading("Start the reference server (in this process)")
    faults = Faults(event_delay=pace) if pace > 0 else None
    async with ReferenceServer(faults=faults) as server:
        base_url = server.base_url
        project = server.project
        say(f"{INDENT}serving on {base_url} (project {project})")

        # Explicit arguments beat CHATSDK_* variables (Settings.resolve), so the shell's
        # settings cannot redirect the demo or replace its client token.
        backend = ChatClient(server.api_key, project=project, base_url=base_url)
        async with backend:
            heading("Backend: mint a client token with the secret API key")
            token = await backend.tokens.create(
                embed_origin=EMBED_ORIGIN, expires_after=TOKEN_LIFETIME
            )
            say(f"{INDENT}embed origin {token.embed_origin}, expires after {token.expires_after} s")
            say(f"{INDENT}(the token goes to the page; the API key never leaves the backend)")

            browser = ChatClient(
                session_token=token.client_token,
                project=project,
                base_url=base_url,
                origin=EMBED_ORIGIN,
            )
            async with browser:
                heading(f"Browser ({EMBED_ORIGIN}): stream an answer with the token")
                say(f"{INDENT}> {FIRST_QUESTION}")
                wrapped = _Wrapped(out)
                async with browser.chat.create(
                    integration_id=INTEGRATION_ID, messages=FIRST_QUESTION
                ) as stream:
                    async for event in stream:
                        if isinstance(event, MessageChunk):
                            wrapped.write(event.content_chunk)
                    first = await stream.final_result()
                wrapped.end()
                show_sources(first.citations)
                session_id = first.chat_session_id
                if session_id is None:  # pragma: no cover - the reference server names it
                    raise RuntimeError("the server did not name the chat session")
                say(f"{INDENT}session {session_id}")

                heading("Browser: a follow-up in the same session (the server keeps history)")
                say(f"{INDENT}> {FOLLOW_UP}")
                async with browser.chat.continue_(
                    session_id, integration_id=INTEGRATION_ID, message=FOLLOW_UP
                ) as stream:
                    async for text in stream.text_stream:
                        wrapped.write(text)
                    second = await stream.final_result()
                wrapped.end()
                show_sources(second.citations)

                heading("Backend: revoke the token (the user logged out)")
                await backend.tokens.revoke(token.client_token)
                say(f"{INDENT}revoked")

                heading("Browser: ask again with the revoked token")
                say(f"{INDENT}> {FOLLOW_UP}")
                try:
                    await browser.chat.continue_(
                        session_id, integration_id=INTEGRATION_ID, message=FOLLOW_UP
                    )
                except AuthenticationError as exc:
                    say(f"{INDENT}refused as expected: {exc.status} {_reason(exc)}")
                else:
                    raise RuntimeError("the revoked token was accepted")
    say("\nDone: the server is stopped.")
