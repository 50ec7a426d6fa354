"""The demo story behind ``chatsdk demo`` (and ``make demo``).

A reference server starts in-process; a backend holding the API key mints a client
token for the embedding page's origin; a "browser" streams two answers with that token
(the second one a follow-up that only makes sense after the first); the backend revokes
the token, and the browser's next call is refused.

The browser speaks Chat Completions (SPEC 1.8), the current API of both services, where
the page keeps the conversation and sends it whole with each question; with
``api="chat-results"`` it speaks the deprecated chat_results wire, where the server keeps
the session.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Literal, TextIO

from ._client import ChatClient
from ._config import Timeout
from .completions import INKEEP_TOOLS
from .errors import APIStatusError, AuthenticationError
from .models import ChatCompletionMessage, Citation, Link, MessageChunk

__all__ = ["run_demo"]

EMBED_ORIGIN = "https://docs.example.com"
INTEGRATION_ID = "docs"
FIRST_QUESTION = "How do client tokens work?"
# No topic of its own: the server answers it from the session's earlier turns.
FOLLOW_UP = "Tell me more."
TOKEN_LIFETIME = 900
MODEL = "inkeep-qa-expert"
STEPS = 6
# Given explicitly, like every setting of the demo's clients: CHATSDK_TIMEOUT is the
# shell's, not the demo's.
TIMEOUT = Timeout()
WIDTH = 78
INDENT = "   "

_WORDS = re.compile(r"(\S*)(\s*)")
_Say = Callable[[str], None]


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


class _CompletionsPage:
    """The page on Chat Completions: it keeps the conversation and sends it whole."""

    follow_up = "Browser: a follow-up, sent with the conversation so far"

    def __init__(self, browser: ChatClient, say: _Say, wrapped: _Wrapped) -> None:
        self.browser, self.say, self.wrapped = browser, say, wrapped
        self.history: list[ChatCompletionMessage] = []

    async def ask(self, question: str) -> None:
        messages = [*self.history, ChatCompletionMessage(role="user", content=question)]
        if self.history:
            self.say(
                f"{INDENT}(with the {len(self.history)} earlier messages: the server keeps none)"
            )
        stream = self.browser.chat.completions.create(
            model=MODEL, messages=messages, tools=INKEEP_TOOLS, tool_choice="auto"
        )
        async with stream:
            async for text in stream.text_stream:
                self.wrapped.write(text)
            result = await stream.final_result()
        self.wrapped.end()
        self.history = [*messages, result.message]
        _show_links(self.say, result.links)
        if result.answer_confidence:
            self.say(f"{INDENT}answer confidence: {result.answer_confidence}")


class _ChatResultsPage:
    """The page on the chat_results wire: the server keeps the session and its history."""

    follow_up = "Browser: a follow-up in the same session (the server keeps history)"

    def __init__(self, browser: ChatClient, say: _Say, wrapped: _Wrapped) -> None:
        self.browser, self.say, self.wrapped = browser, say, wrapped
        self.session_id: str | None = None

    async def ask(self, question: str) -> None:
        if self.session_id is None:
            stream = self.browser.chat.create(integration_id=INTEGRATION_ID, messages=question)
        else:
            stream = self.browser.chat.continue_(
                self.session_id, integration_id=INTEGRATION_ID, message=question
            )
        async with stream:
            async for event in stream:
                if isinstance(event, MessageChunk):
                    self.wrapped.write(event.content_chunk)
            result = await stream.final_result()
        self.wrapped.end()
        _show_citations(self.say, result.citations)
        if self.session_id is None:
            if result.chat_session_id is None:  # pragma: no cover - the server names it
                raise RuntimeError("the server did not name the chat session")
            self.session_id = result.chat_session_id
            self.say(f"{INDENT}session {self.session_id}")


def _show_links(say: _Say, links: list[Link]) -> None:
    if links:
        say(f"{INDENT}sources:")
    for number, link in enumerate(links, start=1):
        say(f"{INDENT}  [{number}] {link.title or link.label or link.url} - {link.url}")


def _show_citations(say: _Say, citations: list[Citation]) -> None:
    if citations:
        say(f"{INDENT}sources:")
    for index, citation in enumerate(citations, start=1):
        number = citation.number if citation.number is not None else index
        title = citation.record.title or citation.record.type
        say(f"{INDENT}  [{number}] {title} - {citation.record.url or citation.hit_url}")


async def run_demo(
    out: TextIO | None = None,
    *,
    pace: float = 0.0,
    api: Literal["completions", "chat-results"] = "completions",
) -> None:
    """Walk through the whole story against an in-process reference server.

    ``pace`` is a pause between two streamed events, in seconds, so that a person
    watching can see the answer arrive; ``api`` is the chat API the page speaks.
    Raises a ``chatsdk`` error if a step fails.
    """
    from .server import Faults, ReferenceServer

    if api not in ("completions", "chat-results"):
        raise ValueError(f"api must be 'completions' or 'chat-results', got {api!r}")
    out = sys.stdout if out is None else out
    step = 0

    def say(text: str = "") -> None:
        out.write(text + "\n")
        out.flush()

    def heading(text: str) -> None:
        nonlocal step
        step += 1
        say(f"\n[{step}/{STEPS}] {text}")

    wire = "Chat Completions" if api == "completions" else "the chat_results API"
    say("chatsdk demo: a backend mints a client token, a browser chats with it on")
    say(f"{wire}, the backend revokes it.")

    heading("Start the reference server (in this process)")
    faults = Faults(event_delay=pace) if pace > 0 else None
    async with ReferenceServer(faults=faults) as server:
        base_url = server.base_url
        project = server.project
        say(f"{INDENT}serving on {base_url} (project {project})")

        # Explicit arguments beat CHATSDK_* variables (Settings.resolve), so the shell's
        # settings cannot redirect the demo or replace its client token.
        backend = ChatClient(server.api_key, project=project, base_url=base_url, timeout=TIMEOUT)
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
                timeout=TIMEOUT,
            )
            wrapped = _Wrapped(out)
            page = (_CompletionsPage if api == "completions" else _ChatResultsPage)(
                browser, say, wrapped
            )
            async with browser:
                heading(f"Browser ({EMBED_ORIGIN}): stream an answer with the token")
                say(f"{INDENT}> {FIRST_QUESTION}")
                await page.ask(FIRST_QUESTION)

                heading(page.follow_up)
                say(f"{INDENT}> {FOLLOW_UP}")
                await page.ask(FOLLOW_UP)

                heading("Backend: revoke the token (the user logged out)")
                await backend.tokens.revoke(token.client_token)
                say(f"{INDENT}revoked")

                heading("Browser: ask again with the revoked token")
                say(f"{INDENT}> {FOLLOW_UP}")
                try:
                    await page.ask(FOLLOW_UP)
                except AuthenticationError as exc:
                    say(f"{INDENT}refused as expected: {exc.status} {_reason(exc)}")
                else:
                    raise RuntimeError("the revoked token was accepted")
    say("\nDone: the server is stopped.")
