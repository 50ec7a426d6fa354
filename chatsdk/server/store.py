"""The reference server's state in SQLite (stdlib ``sqlite3``).

One connection, used only from the server's event loop: every statement is
short and local, so running them inline is simpler and faster than a thread
pool. ``path=None`` keeps everything in memory; a file keeps sessions,
revocations, result logs, idempotency records and the JWT signing secret across
restarts. Statements are always parameterised.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import msgspec

from chatsdk.models import Message, RecordsCited

__all__ = ["IdempotencyRecord", "Store", "StoredEvent"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    integration_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    session_id TEXT NOT NULL REFERENCES sessions(id),
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    records_cited TEXT,
    PRIMARY KEY (session_id, seq)
);
CREATE TABLE IF NOT EXISTS revocations (
    jti TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    session_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS result_events (
    result_id TEXT NOT NULL REFERENCES results(id),
    id INTEGER NOT NULL,
    event TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (result_id, id)
);
CREATE TABLE IF NOT EXISTS idempotency (
    project TEXT NOT NULL,
    route TEXT NOT NULL,
    key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    body BLOB NOT NULL,
    result_id TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (project, route, key)
);
"""

_records_encoder = msgspec.json.Encoder()
_records_decoder = msgspec.json.Decoder(RecordsCited)


class StoredEvent(NamedTuple):
    """One event of a result's log; ``id`` counts 1, 2, 3 … within the result."""

    id: int
    event: str
    data: str


class IdempotencyRecord(NamedTuple):
    """The first outcome of a request made with an ``Idempotency-Key``.

    A streamed outcome keeps its ``result_id`` (the body is replayed from the event
    log); any other outcome keeps its status, content type and body bytes.
    """

    body_hash: str
    status: int
    content_type: str
    body: bytes
    result_id: str | None


class Store:
    """Sessions, messages, revocations, result logs and idempotency records."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._path = ":memory:" if path is None else os.fspath(path)
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        """Connect and create the schema (idempotent)."""
        if self._db is not None:
            return
        db = sqlite3.connect(self._path)
        db.executescript(_SCHEMA)
        db.commit()
        self._db = db

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection."""
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Commit everything done inside on success, roll it all back on error."""
        with self.db:
            yield

    # -- signing secret -------------------------------------------------------------

    def signing_secret(self, make: Callable[[], str]) -> str:
        """The persisted JWT secret, created with ``make()`` on first use."""
        row = self.db.execute(
            "SELECT value FROM meta WHERE key = ?", ("signing_secret",)
        ).fetchone()
        if row is not None:
            return str(row[0])
        secret = make()
        with self.db:
            self.db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)", ("signing_secret", secret)
            )
        return secret

    # -- sessions and history -------------------------------------------------------

    def create_session(
        self, session_id: str, project: str, integration_id: str, now: float
    ) -> None:
        """Record a new chat session (inside the caller's transaction)."""
        self.db.execute(
            "INSERT INTO sessions (id, project, integration_id, created_at) VALUES (?, ?, ?, ?)",
            (session_id, project, integration_id, now),
        )

    def session_exists(self, session_id: str, project: str) -> bool:
        """Whether the session exists in ``project``."""
        row = self.db.execute(
            "SELECT 1 FROM sessions WHERE id = ? AND project = ?", (session_id, project)
        ).fetchone()
        return row is not None

    def append_messages(self, session_id: str, messages: Sequence[Message]) -> None:
        """Append messages to a session's history (inside the caller's transaction)."""
        row = self.db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE session_id = ?", (session_id,)
        ).fetchone()
        seq = int(row[0])
        for message in messages:
            seq += 1
            cited = (
                None
                if message.records_cited is None
                else _records_encoder.encode(message.records_cited).decode()
            )
            self.db.execute(
                "INSERT INTO messages (session_id, seq, role, content, records_cited)"
                " VALUES (?, ?, ?, ?, ?)",
                (session_id, seq, message.role, message.content, cited),
            )

    def history(self, session_id: str) -> list[Message]:
        """All messages of a session, oldest first."""
        rows = self.db.execute(
            "SELECT role, content, records_cited FROM messages WHERE session_id = ? ORDER BY seq",
            (session_id,),
        ).fetchall()
        return [
            Message(
                role=role,
                content=content,
                records_cited=None if cited is None else _records_decoder.decode(cited),
            )
            for role, content, cited in rows
        ]

    # -- revocations ------------------------------------------------------------------

    def revoke(self, jti: str, project: str, expires_at: int, now: float) -> None:
        """Record a revoked token id; revoking twice is harmless."""
        with self.db:
            self.db.execute(
                "INSERT OR IGNORE INTO revocations (jti, project, expires_at, revoked_at)"
                " VALUES (?, ?, ?, ?)",
                (jti, project, expires_at, now),
            )

    def is_revoked(self, jti: str) -> bool:
        """Whether the token id was revoked."""
        row = self.db.execute("SELECT 1 FROM revocations WHERE jti = ?", (jti,)).fetchone()
        return row is not None

    # -- result event logs ----------------------------------------------------------

    def save_result(
        self,
        result_id: str,
        project: str,
        session_id: str,
        events: Sequence[tuple[str, str]],
        now: float,
    ) -> None:
        """Store a result's whole event log, numbered from 1 (inside a transaction).

        ``session_id`` is what the log answers: a chat session (chat_results) or, on the
        Chat Completions wire, which keeps no sessions, the completion id.
        """
        self.db.execute(
            "INSERT INTO results (id, project, session_id, created_at) VALUES (?, ?, ?, ?)",
            (result_id, project, session_id, now),
        )
        self.db.executemany(
            "INSERT INTO result_events (result_id, id, event, data) VALUES (?, ?, ?, ?)",
            [(result_id, n, name, data) for n, (name, data) in enumerate(events, start=1)],
        )

    def result_exists(self, result_id: str, project: str, not_before: float) -> bool:
        """Whether the result exists in ``project`` and was created at or after ``not_before``."""
        row = self.db.execute(
            "SELECT 1 FROM results WHERE id = ? AND project = ? AND created_at >= ?",
            (result_id, project, not_before),
        ).fetchone()
        return row is not None

    def result_events(self, result_id: str, after: int = 0) -> list[StoredEvent]:
        """The events of a result whose id is greater than ``after``, in order."""
        rows = self.db.execute(
            "SELECT id, event, data FROM result_events WHERE result_id = ? AND id > ? ORDER BY id",
            (result_id, after),
        ).fetchall()
        return [StoredEvent(int(n), str(name), str(data)) for n, name, data in rows]

    # -- idempotency ------------------------------------------------------------------

    def idempotency_record(
        self, project: str, route: str, key: str, not_before: float
    ) -> IdempotencyRecord | None:
        """The first outcome stored under the key, unless older than ``not_before``."""
        row = self.db.execute(
            "SELECT body_hash, status, content_type, body, result_id FROM idempotency"
            " WHERE project = ? AND route = ? AND key = ? AND created_at >= ?",
            (project, route, key, not_before),
        ).fetchone()
        if row is None:
            return None
        body_hash, status, content_type, body, result_id = row
        return IdempotencyRecord(
            str(body_hash), int(status), str(content_type), bytes(body), result_id
        )

    def save_idempotency_record(
        self, project: str, route: str, key: str, record: IdempotencyRecord, now: float
    ) -> None:
        """Store (or, after expiry, replace) the outcome for a key (inside a transaction)."""
        self.db.execute(
            "INSERT OR REPLACE INTO idempotency"
            " (project, route, key, body_hash, status, content_type, body, result_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (project, route, key, *record, now),
        )

    # -- housekeeping -----------------------------------------------------------------

    def purge(self, older_than: float, now: float) -> None:
        """Drop result logs and idempotency records created before ``older_than``,
        and revocations of tokens that have expired anyway."""
        with self.db:
            self.db.execute(
                "DELETE FROM result_events WHERE result_id IN"
                " (SELECT id FROM results WHERE created_at < ?)",
                (older_than,),
            )
            self.db.execute("DELETE FROM results WHERE created_at < ?", (older_than,))
            self.db.execute("DELETE FROM idempotency WHERE created_at < ?", (older_than,))
            # An expired token fails verification before revocation is looked at.
            self.db.execute("DELETE FROM revocations WHERE expires_at < ?", (int(now) - 1,))
