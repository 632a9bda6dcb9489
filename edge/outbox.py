"""The durable outbox: every event is committed to SQLite before it is published.

An event leaves the outbox only when the broker has acknowledged it (PUBACK), so a crash, a
power cut or a broker restart never loses one; replay after a restart is in sequence order.
The gate's sequence number lives in the same database and is handed out in the same
transaction that stores the event, so it is monotonic across restarts.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Pending:
    seq: int
    id: str
    topic: str
    payload: bytes
    created: float


class Outbox:
    """SQLite (WAL, synchronous=FULL) queue of events waiting for the broker's acknowledgement."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def append(self, build: Callable[[int], tuple[str, str, bytes]]) -> int:
        """Take the next sequence number, build (id, topic, payload) with it and store it durably.

        Returns the sequence number. ``build`` runs inside the transaction: if it raises,
        nothing is stored and the number is not used.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
                seq = (row[0] if row else 0) + 1
                event_id, topic, payload = build(seq)
                self._db.execute(
                    "INSERT INTO outbox (seq, id, topic, payload, created) VALUES (?, ?, ?, ?, ?)",
                    (seq, event_id, topic, payload, time.time()),
                )
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seq', ?)", (seq,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return seq

    def pending(self, limit: int = 100, exclude: set[int] | frozenset[int] = frozenset()) -> list[Pending]:
        """The oldest events not yet acknowledged, in sequence order, skipping ``exclude``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, id, topic, payload, created FROM outbox ORDER BY seq LIMIT ?",
                (limit + len(exclude),),
            ).fetchall()
        return [Pending(*r) for r in rows if r[0] not in exclude][:limit]

    def remove(self, seq: int) -> None:
        """Drop an acknowledged event."""
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def backlog(self) -> tuple[int, float | None]:
        """(number of events waiting, age in seconds of the oldest, or None)."""
        with self._lock:
            count, oldest = self._db.execute("SELECT COUNT(*), MIN(created) FROM outbox").fetchone()
        return count, (time.time() - oldest) if oldest is not None else None

    def last_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        return row[0] if row else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()
