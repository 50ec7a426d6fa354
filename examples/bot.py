"""A bot that answers many questions at once over one ChatClient.

Every question gets a task of its own in an anyio task group, so the answers stream
concurrently over one connection pool. Each answer has a time budget
(``anyio.move_on_after``): one that runs over is cancelled, which closes its connection
at once, and the bot says so while the other answers carry on. A failed answer (an
error status, a dropped connection) is reported for that question alone.

Run it::

    python examples/bot.py                    # against a reference server of its own
    CHATSDK_BASE_URL=... CHATSDK_API_KEY=... python examples/bot.py "How do I retry?"

Its own reference server is slowed down (``Faults(event_delay=...)``, as a model
generating text would be) so that the longest answer overruns its budget.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

import anyio

import chatsdk

__all__ = ["ANSWER_TIMEOUT", "MODEL", "QUESTIONS", "Reply", "answer", "answer_all", "main"]

MODEL = "inkeep-qa-expert"
QUESTIONS: tuple[str, ...] = (
    "How do I test my code?",
    "What does the console script do?",
    "How do I catch errors?",
    "How do streaming and resuming work?",
)
#: Seconds one answer may take, from sending the question to the last piece of text.
ANSWER_TIMEOUT = 10.0


@dataclass(frozen=True)
class Reply:
    """What the bot answered to one question."""

    question: str
    text: str
    """The answer; for a cancelled or failed answer, the part that had arrived."""
    cancelled: bool = False
    """The answer overran its time budget and was cancelled."""
    error: str | None = None
    """Why the answer failed, if it did."""
    sources: list[str] = field(default_factory=list)
    """The titles of the documents the answer cites."""


async def answer(client: chatsdk.ChatClient, question: str, timeout: float) -> Reply:
    """Stream the answer to ``question``, giving up after ``timeout`` seconds."""
    pieces: list[str] = []
    try:
        with anyio.move_on_after(timeout) as budget:
            # INKEEP_TOOLS: the answer's sources come back typed, as result.links.
            async with client.chat.completions.create(
                model=MODEL, messages=question, tools=chatsdk.INKEEP_TOOLS, tool_choice="auto"
            ) as stream:
                async for text in stream.text_stream:
                    pieces.append(text)
                result = await stream.final_result()
    except chatsdk.ChatSDKError as exc:
        return Reply(question, "".join(pieces), error=str(exc))
    if budget.cancelled_caught:
        # Leaving the `async with` by cancellation has already closed the connection.
        return Reply(question, "".join(pieces), cancelled=True)
    sources = [link.title or link.label or link.url for link in result.links]
    return Reply(question, result.text, sources=sources)


async def answer_all(
    client: chatsdk.ChatClient,
    questions: Sequence[str],
    *,
    answer_timeout: float = ANSWER_TIMEOUT,
    out: TextIO | None = None,
) -> list[Reply]:
    """Answer every question concurrently; print each reply as soon as it is complete."""
    replies: list[Reply | None] = [None] * len(questions)
    limit = answer_timeout

    async def one(index: int, question: str) -> None:
        reply = await answer(client, question, limit)
        replies[index] = reply
        show(reply, out or sys.stdout)

    async with anyio.create_task_group() as tasks:
        for index, question in enumerate(questions):
            tasks.start_soon(one, index, question)
    return [reply for reply in replies if reply is not None]


def show(reply: Reply, out: TextIO) -> None:
    """Print one reply in one piece, so concurrent replies never interleave."""
    lines = [f"Q: {reply.question}"]
    if reply.cancelled:
        lines.append(f"A: (no complete answer in time; cancelled after {len(reply.text)} chars)")
    elif reply.error is not None:
        lines.append(f"A: (failed: {reply.error})")
    else:
        lines.append(f"A: {reply.text}")
        lines.extend(f"   [{n}] {title}" for n, title in enumerate(reply.sources, start=1))
    print("\n".join(lines) + "\n", file=out, flush=True)


async def main(
    base_url: str,
    api_key: str,
    project: str,
    *,
    questions: Sequence[str] = QUESTIONS,
    answer_timeout: float = ANSWER_TIMEOUT,
    out: TextIO | None = None,
) -> list[Reply]:
    """Answer ``questions`` over one client against the chat server at ``base_url``."""
    async with chatsdk.ChatClient(api_key=api_key, project=project, base_url=base_url) as client:
        return await answer_all(client, questions, answer_timeout=answer_timeout, out=out)


async def _with_own_server(questions: Sequence[str], answer_timeout: float) -> list[Reply]:
    from chatsdk.server import Faults, ReferenceServer

    # About 40 ms a word, as a model generating text might: the longest answer overruns.
    async with ReferenceServer(faults=Faults(event_delay=0.04)) as server:
        print(f"(a reference server of our own at {server.base_url})\n", flush=True)
        return await main(
            server.base_url,
            server.api_key,
            server.project,
            questions=questions,
            answer_timeout=answer_timeout,
        )


def _cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Answer questions concurrently.")
    parser.add_argument("questions", nargs="*", help=f"default: {len(QUESTIONS)} sample questions")
    parser.add_argument("--answer-timeout", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args(argv)
    questions = args.questions or QUESTIONS
    base_url = os.environ.get("CHATSDK_BASE_URL")
    if base_url is None:
        timeout = 2.5 if args.answer_timeout is None else args.answer_timeout
        replies = anyio.run(_with_own_server, questions, timeout)
    else:
        api_key = os.environ.get("CHATSDK_API_KEY")
        if not api_key:
            print("bot: set CHATSDK_API_KEY", file=sys.stderr)
            return 2
        project = os.environ.get("CHATSDK_PROJECT", "demo")
        timeout = ANSWER_TIMEOUT if args.answer_timeout is None else args.answer_timeout
        replies = anyio.run(
            lambda: main(base_url, api_key, project, questions=questions, answer_timeout=timeout)
        )
    return 1 if any(reply.error for reply in replies) else 0


if __name__ == "__main__":
    sys.exit(_cli())
