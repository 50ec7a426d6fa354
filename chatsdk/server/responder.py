"""Deterministic answers with citations, from a small bundled document set.

No model and no network: retrieval is lowercase word overlap (stopwords removed,
a crude suffix stemmer, title words weighted higher, ties broken by document
order), and the answer is made of whole sentences of the best one or two
documents. The history matters: sentences already given in the session are not
repeated, and a follow-up without a strong match of its own ("tell me more")
continues the document its earlier turns were about. The same history always
gives the same answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from chatsdk.models import Citation, Message, Record, RecordsCited

__all__ = ["DOCUMENTS", "NO_MATCH", "Answer", "Document", "answer", "split_words"]


@dataclass(frozen=True)
class Document:
    """One bundled documentation page."""

    slug: str
    title: str
    description: str
    breadcrumbs: tuple[str, ...]
    sentences: tuple[str, ...]

    @property
    def url(self) -> str:
        """Where the page would live on the documentation site."""
        return f"https://chatsdk.dev/docs/{self.slug}"


@dataclass(frozen=True)
class Answer:
    """An answer text and the documents it draws on, in citation order."""

    text: str
    documents: tuple[Document, ...]

    @property
    def records_cited(self) -> RecordsCited:
        """The ``records_cited`` payload: the documents used, numbered from 1."""
        return RecordsCited(
            citations=[
                Citation(
                    number=n,
                    record=Record(
                        type="documentation",
                        url=doc.url,
                        title=doc.title,
                        description=doc.description,
                        breadcrumbs=list(doc.breadcrumbs),
                    ),
                    hit_url=doc.url,
                )
                for n, doc in enumerate(self.documents, start=1)
            ]
        )


DOCUMENTS: Final[tuple[Document, ...]] = (
    Document(
        slug="client-tokens",
        title="Client tokens and origins",
        description="Mint short-lived chat-session tokens bound to the origin of your page.",
        breadcrumbs=("Docs", "Authentication"),
        sentences=(
            "A client token is a short-lived JWT that lets a browser, bot or notebook chat"
            " without holding the secret API key.",
            "Your backend mints one with client.tokens.create(embed_origin=...,"
            " expires_after=...) using the API key and the project slug.",
            "The token is bound to its embed origin: when a request carries an Origin header,"
            " it must equal the origin the token was minted for.",
            "A token lives at most 3600 seconds and cannot be refreshed, so mint a new one"
            " shortly before the old one expires.",
            "Call client.tokens.revoke(token) on logout; revoking a token twice is not an error.",
        ),
    ),
    Document(
        slug="streaming",
        title="Streaming answers with async for",
        description="Iterate over chat events while the answer is being generated.",
        breadcrumbs=("Docs", "Chat"),
        sentences=(
            "client.chat.create(...) returns a stream object at once, and the request is sent"
            " when you start iterating with async for.",
            "Each MessageChunk carries a piece of the answer in content_chunk, and a"
            " RecordsCited event lists the sources after the last chunk.",
            "Use the stream as an async context manager to read text_stream, then call"
            " final_result() for the whole answer with its citations.",
            "Leaving the loop early with break, an exception or cancellation releases the"
            " connection.",
            "client.chat.continue_(chat_session_id, ...) streams the next turn of an existing"
            " session, and the server remembers the earlier turns.",
        ),
    ),
    Document(
        slug="retries",
        title="Retries and backoff",
        description="Which failures the client retries, and how long it waits in between.",
        breadcrumbs=("Docs", "Reliability"),
        sentences=(
            "Retries cover connection failures, rate limits and temporary server errors, with"
            " exponential backoff and jitter between attempts.",
            "Configure them with chatsdk.RetryPolicy(max_retries=...) on the ChatClient, or"
            " override the policy for a single call.",
            "When the server sends a Retry-After header, the client waits at least that long"
            " before the next attempt.",
            "Every POST carries an Idempotency-Key that stays the same across its retries, so a"
            " retried call never creates a second session.",
            "Statuses such as 400, 401, 403 and 422 are never retried, because repeating the"
            " same request cannot fix them.",
        ),
    ),
    Document(
        slug="timeouts",
        title="Timeouts: connect, read, idle and total",
        description="Bound how long a call may wait at each stage.",
        breadcrumbs=("Docs", "Reliability"),
        sentences=(
            "chatsdk.Timeout has four limits: connect, read, idle and total.",
            "The connect timeout bounds opening a connection, and the read timeout bounds"
            " waiting for response headers or a non-streaming body.",
            "The idle timeout is the longest gap allowed between two events of a stream;"
            " comments and keep-alive pings do not reset it.",
            "The total timeout caps the whole call including its retries, and None means no"
            " overall limit.",
            "An expired timeout raises APITimeoutError, a subclass of APIConnectionError.",
        ),
    ),
    Document(
        slug="resuming-streams",
        title="Resuming dropped streams with Last-Event-ID",
        description="How an interrupted answer continues without losing or repeating events.",
        breadcrumbs=("Docs", "Chat", "Reliability"),
        sentences=(
            "The reference server gives every event an id and answers a streaming request with"
            " a Content-Location header naming the result's event log.",
            "When the connection drops mid-stream, the client sends a GET to that path with"
            " Last-Event-ID set to the last id it saw.",
            "The server then replays only the events after that id, so your loop sees every"
            " event exactly once.",
            "A response without Content-Location cannot be resumed, and a drop then raises a"
            " StreamError.",
        ),
    ),
    Document(
        slug="errors",
        title="Errors and the exception hierarchy",
        description="What chatsdk raises, and what each error carries.",
        breadcrumbs=("Docs", "Reference"),
        sentences=(
            "Every exception chatsdk raises derives from chatsdk.ChatSDKError.",
            "APIStatusError covers error statuses and carries the status, body, headers and the"
            " request_id taken from X-Request-Id.",
            "Its subclasses name the common cases: AuthenticationError for 401,"
            " PermissionDeniedError for 403, NotFoundError for 404, RateLimitError for 429 and"
            " InternalServerError for 5xx.",
            "UnprocessableEntityError exposes the server's validation detail, while"
            " ValidationError reports bad arguments before anything is sent.",
            "StreamError means the server sent a malformed or interrupted event stream.",
        ),
    ),
    Document(
        slug="testing",
        title="Testing with the reference server",
        description="Run your tests against a real local server with injectable faults.",
        breadcrumbs=("Docs", "Testing"),
        sentences=(
            "chatsdk.server.ReferenceServer serves every operation on loopback, so tests need"
            " no network and no mocks.",
            "Use it as an async context manager and point the client's base_url at"
            " server.base_url.",
            "For synchronous tests, server.serve_in_thread() runs it on a background thread.",
            "Set server.faults = Faults(drop_after_events=3) or Faults(fail_first=2) to make"
            " the next requests fail in a precise, repeatable way.",
            "Answers are deterministic and cite bundled documents, so assertions stay stable.",
        ),
    ),
    Document(
        slug="console-script",
        title="The chatsdk console script",
        description="Serve, chat and manage tokens from the command line.",
        breadcrumbs=("Docs", "Tools"),
        sentences=(
            "Installing chatsdk adds a chatsdk command, also available as python -m chatsdk.",
            'chatsdk serve starts the reference server, and chatsdk chat "question" streams an'
            " answer to standard output.",
            "chatsdk token create --origin URL mints a client token, and chatsdk token revoke"
            " TOKEN revokes it.",
            "Settings come from the same CHATSDK_ environment variables as the client, such as"
            " CHATSDK_API_KEY and CHATSDK_BASE_URL.",
            "chatsdk demo starts a server in-process and walks through the whole story.",
        ),
    ),
)

#: The fixed answer when no document matches (sent with an empty records_cited).
NO_MATCH: Final = (
    "I could not find anything about that in the chatsdk documentation. Try asking about"
    " client tokens, streaming, retries, timeouts, resuming streams, errors, testing or the"
    " console script."
)

# Words that say nothing about the topic, including the conversational ones of
# follow-ups ("tell me more about that"), so a follow-up has no terms of its own.
_STOPWORD_TEXT: Final = """
    a about again all also an and any are as at be been being but by can could did do does
    doing else explain for from further get go got had has have hello hi how i if in into is
    it its just know like may me might more my need no not now of ok okay on or our please
    say see should so some tell than thank thanks that the their them then there these they
    this those to too us want was way we were what when where which while who why will with
    would yes you your continue elaborate detail details
"""
_STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())

# Title words weigh more: a question naming a page's subject should land on that page
# rather than on one that merely mentions the word.
_TITLE_WEIGHT: Final = 3
_BODY_WEIGHT: Final = 1
# A score this high means the question has a topic of its own; below it a follow-up
# leans on the earlier turns.
_STRONG: Final = 2
_SENTENCES_ONE_DOC: Final = 3
_SENTENCES_TWO_DOCS: Final = 2

_WORD_RE: Final = re.compile(r"[a-z0-9]+")
_CHUNK_RE: Final = re.compile(r"\S+\s*")


def split_words(text: str) -> list[str]:
    """Word-sized chunks of ``text``, each word with the whitespace that follows it."""
    return _CHUNK_RE.findall(text)


def _stem(word: str) -> str:
    # Just enough stemming that "retries"/"retry" and "timeouts"/"timeout" meet.
    if len(word) <= 3:
        return word
    if word.endswith(("ies", "ied")):
        return word[:-3] + "y"
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            word = word[: -len(suffix)]
            if len(word) > 2 and word[-1] == word[-2] and word[-1] not in "ls":
                word = word[:-1]
            break
    else:
        if word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def _terms(text: str) -> set[str]:
    return {_stem(w) for w in _WORD_RE.findall(text.lower()) if w not in _STOPWORDS}


@dataclass(frozen=True)
class _Indexed:
    doc: Document
    title_terms: frozenset[str]
    body_terms: frozenset[str]


_INDEX: Final = tuple(
    _Indexed(
        doc=doc,
        title_terms=frozenset(_terms(doc.title)),
        body_terms=frozenset(_terms(" ".join((doc.description, *doc.breadcrumbs, *doc.sentences)))),
    )
    for doc in DOCUMENTS
)


def _rank(text: str) -> list[tuple[int, Document]]:
    """Documents with a positive score, best first, ties in document order."""
    terms = _terms(text)
    scored = []
    for position, entry in enumerate(_INDEX):
        score = sum(
            _TITLE_WEIGHT * (t in entry.title_terms) + _BODY_WEIGHT * (t in entry.body_terms)
            for t in terms
        )
        if score > 0:
            scored.append((-score, position, entry.doc))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [(-neg, doc) for neg, _, doc in scored]


def _pick_documents(question: str, earlier_questions: Sequence[str]) -> list[Document]:
    ranked = _rank(question)
    if ranked and ranked[0][0] >= _STRONG:
        best_score, best = ranked[0]
        picked = [best]
        # A second page only when it is nearly as relevant as the first.
        if len(ranked) > 1 and ranked[1][0] >= _STRONG and 2 * ranked[1][0] >= best_score:
            picked.append(ranked[1][1])
        return picked
    # No topic of its own: the most recent earlier question that had one sets the context.
    for earlier in reversed(earlier_questions):
        context = _rank(earlier)
        if context:
            return [context[0][1]]
    return [ranked[0][1]] if ranked else []


def answer(history: Sequence[Message]) -> Answer:
    """The answer to the last message of ``history``, given everything said before it."""
    questions = [m.content for m in history if m.role == "user"]
    if not questions:
        return Answer(NO_MATCH, ())
    said = [m.content for m in history[:-1] if m.role == "assistant"]
    documents = _pick_documents(questions[-1], questions[:-1])
    if not documents:
        return Answer(NO_MATCH, ())

    per_doc = _SENTENCES_ONE_DOC if len(documents) == 1 else _SENTENCES_TWO_DOCS
    parts: list[str] = []
    for doc in documents:
        given = [s for s in doc.sentences if any(s in text for text in said)]
        fresh = [s for s in doc.sentences if s not in given][:per_doc]
        if not fresh:
            parts.append(
                f"I have already shared everything the {doc.title} page says."
                f" You may also want to read {_neighbour(doc).title}."
            )
            continue
        if given:
            fresh[0] = f"Continuing on {doc.title}: {fresh[0]}"
        parts.extend(fresh)
        if given and len(given) + len(fresh) == len(doc.sentences) and len(fresh) < 2:
            parts.append(f"That is everything the {doc.title} page covers.")
    return Answer(" ".join(parts), tuple(documents))


def _neighbour(doc: Document) -> Document:
    return DOCUMENTS[(DOCUMENTS.index(doc) + 1) % len(DOCUMENTS)]
