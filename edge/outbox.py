"""The durable outbox: every event is committed to SQLite before it is published.

Life of an event, all in one table:

1. ``append``: committed (WAL, ``synchronous=FULL``) with the next sequence number of this outbox's
   ``epoch``, handed out in the same transaction, so sequence numbers never repeat or go back;
2. published with QoS 1; when the broker's PUBACK arrives it is ``mark_sent``;
3. it leaves only when the collector confirms it stored every event up to it (``confirm``). A
   sent event that stays unconfirmed (the broker crashed before passing it on) is ``requeue``-d and
   published again; the collector stores by event id, so a repeat never counts twice.

Bound (documented policy): at most ``max_events`` events are kept. Beyond that the oldest are
dropped, counted in ``dropped`` and logged as an error: an alarm, never a silent loss. The
collector sees the hole through the gate's heartbeat (``outbox_first_seq``) and records it.
Rows always form one contiguous run of sequence numbers (only the oldest ever leave), so counts
come from MIN/MAX of the primary key, not a table scan.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ulid import ULID

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
"""
DEFAULT_MAX_EVENTS = 1_000_000


@dataclass(frozen=True)
class Pending:
    seq: int
    id: str
    topic: str
    payload: bytes
    created: float


class Outbox:
    """SQLite queue of events waiting for the collector's confirmation. Thread-safe."""

    def __init__(self, path: str | Path, *, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_events = max_events
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        with contextlib.suppress(sqlite3.OperationalError):  # an outbox made before sent_at existed
            self._db.execute("ALTER TABLE outbox ADD COLUMN sent_at REAL")
        self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?)", (str(ULID()),))
        self.epoch = str(self._meta("epoch"))

    def _meta(self, key: str, default: object = None) -> object:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    # -- writing -------------------------------------------------------------------------------
    def append(self, build: Callable[[int], tuple[str, str, bytes]]) -> int:
        """Take the next sequence number, build (id, topic, payload) with it and store it durably.

        Returns the sequence number. ``build`` runs inside the transaction: if it raises, nothing
        is stored and the number is not used.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = int(self._meta("seq", 0)) + 1  # type: ignore[call-overload]
                event_id, topic, payload = build(seq)
                self._db.execute(
                    "INSERT INTO outbox (seq, id, topic, payload, created) VALUES (?, ?, ?, ?, ?)",
                    (seq, event_id, topic, payload, time.time()),
                )
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seq', ?)", (seq,))
                self._enforce_bound(seq)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return seq

    def _enforce_bound(self, last: int) -> None:
        first = self._db.execute("SELECT MIN(seq) FROM outbox").fetchone()[0]
        excess = last - first + 1 - self.max_events
        if excess > 0:
            self._db.execute("DELETE FROM outbox WHERE seq < ?", (first + excess,))
            dropped = int(self._meta("dropped", 0)) + excess  # type: ignore[call-overload]
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('dropped', ?)", (dropped,))
            logger.error(
                "ALARM outbox full (%d events): dropped the oldest %d, %d dropped in all",
                self.max_events,
                excess,
                dropped,
            )

    def mark_sent(self, seq: int) -> None:
        """The broker acknowledged this event (PUBACK)."""
        with self._lock:
            self._db.execute("UPDATE outbox SET sent_at = ? WHERE seq = ?", (time.time(), seq))

    def confirm(self, upto: int) -> int:
        """The collector stored every event up to ``upto``: drop them. Returns how many left."""
        with self._lock:
            return self._db.execute("DELETE FROM outbox WHERE seq <= ?", (upto,)).rowcount

    def requeue(self, older_than_s: float, limit: int) -> int:
        """Mark the oldest sent-but-unconfirmed events (sent over ``older_than_s`` ago) unsent again."""
        with self._lock:
            return self._db.execute(
                "UPDATE outbox SET sent_at = NULL WHERE seq IN "
                "(SELECT seq FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ? ORDER BY seq LIMIT ?)",
                (time.time() - older_than_s, limit),
            ).rowcount

    # -- reading -------------------------------------------------------------------------------
    def unsent(
        self,
        limit: int = 100,
        *,
        exclude: set[int] | frozenset[int] = frozenset(),
        since: float | None = None,
    ) -> list[Pending]:
        """Events not yet acknowledged by the broker, in sequence order, skipping ``exclude``;
        with ``since``, only those created at or after that time (live traffic)."""
        where = "sent_at IS NULL" + (" AND created >= ?" if since is not None else "")
        args: tuple[object, ...] = (since,) if since is not None else ()
        with self._lock:
            rows = self._db.execute(
                f"SELECT seq, id, topic, payload, created FROM outbox WHERE {where} ORDER BY seq LIMIT ?",
                (*args, limit + len(exclude)),
            ).fetchall()
        return [Pending(*r) for r in rows if r[0] not in exclude][:limit]

    def backlog(self) -> tuple[int, float | None]:
        """(events not yet confirmed, age in seconds of the oldest, or None)."""
        with self._lock:
            first, last = self._db.execute("SELECT MIN(seq), MAX(seq) FROM outbox").fetchone()
            if first is None:
                return 0, None
            oldest = self._db.execute("SELECT created FROM outbox WHERE seq = ?", (first,)).fetchone()[0]
        return last - first + 1, max(time.time() - oldest, 0.0)

    def first_seq(self) -> int | None:
        with self._lock:
            first: int | None = self._db.execute("SELECT MIN(seq) FROM outbox").fetchone()[0]
        return first

    def last_seq(self) -> int:
        with self._lock:
            return int(self._meta("seq", 0))  # type: ignore[call-overload]

    @property
    def dropped(self) -> int:
        with self._lock:
            return int(self._meta("dropped", 0))  # type: ignore[call-overload]

    def close(self) -> None:
        with self._lock:
            self._db.close()
