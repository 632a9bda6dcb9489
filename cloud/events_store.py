"""The event store (SQLAlchemy 2): every event kept once by its id, and occupancy per lot.

An event and the occupancy change it causes are written in one transaction, so a crash never
counts an event without storing it, nor the reverse; a second delivery of an event is detected
by its primary key and changes nothing.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy import insert as insert_into
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from cloud.config import LotConfig
from protocol import Action, Direction, GateEvent

logger = logging.getLogger(__name__)


class Base(DeclarativeBase):
    pass


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (Index("events_gate_epoch_seq", "gate_id", "epoch", "seq"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(40))
    seq: Mapped[int] = mapped_column(Integer)
    gate_id: Mapped[str] = mapped_column(String(64))
    lot_id: Mapped[str] = mapped_column(String(64), index=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    direction: Mapped[str] = mapped_column(String(8))
    plate: Mapped[str | None] = mapped_column(String(16), index=True)
    confidence: Mapped[float] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LotRow(Base):
    __tablename__ = "lots"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    capacity: Mapped[int] = mapped_column(Integer)
    occupied: Mapped[int] = mapped_column(Integer, default=0)
    last_event_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SnapshotRow(Base):
    """The plate crop a gate sent with an event (JPEG)."""

    __tablename__ = "snapshots"

    event_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)


class GateProgressRow(Base):
    """Per gate: the outbox epoch seen last and the contiguous run of its events stored."""

    __tablename__ = "gate_progress"

    gate_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(40))
    upto: Mapped[int] = mapped_column(Integer, default=0)  # every seq <= upto is stored
    max_seq: Mapped[int] = mapped_column(Integer, default=0)
    unrecoverable: Mapped[int] = mapped_column(Integer, default=0)  # events the gate no longer holds


_LOTS = cast(Table, LotRow.__table__)
_PROGRESS = cast(Table, GateProgressRow.__table__)


@dataclass(frozen=True)
class Progress:
    gate_id: str
    epoch: str
    upto: int
    max_seq: int

    @property
    def gap(self) -> bool:
        return self.max_seq > self.upto


@dataclass(frozen=True)
class LotState:
    id: str
    name: str
    capacity: int
    occupied: int
    last_event_ts: datetime | None

    @property
    def free(self) -> int:
        return max(self.capacity - self.occupied, 0)


@dataclass(frozen=True)
class BatchResult:
    """What storing a batch did."""

    stored: list[GateEvent]  # the events that were new
    lots: dict[str, LotState]  # lots they changed, after the change
    progress: dict[str, Progress]  # every gate in the batch: its contiguous run after it


def _seqs_per_gate(events: Sequence[GateEvent]) -> list[tuple[str, str, list[int]]]:
    """(gate, epoch, sorted seqs) per gate and epoch, sorted so that concurrent collectors lock
    gate rows in the same order."""
    seqs: dict[tuple[str, str], set[int]] = {}
    for ev in events:
        seqs.setdefault((ev.gate_id, ev.epoch), set()).add(ev.seq)
    return sorted((gate, epoch, sorted(values)) for (gate, epoch), values in seqs.items())


@dataclass
class _Run:
    """A gate's progress row while a batch works on it (read and written with Core statements)."""

    gate_id: str
    epoch: str
    upto: int = 0
    max_seq: int = 0
    unrecoverable: int = 0
    new: bool = False  # not in the table yet


def _save_runs(s: Session, runs: list[_Run]) -> None:
    """Write the gates' progress back: one executemany UPDATE, one INSERT for new gates."""
    t = _PROGRESS
    old = [r for r in runs if not r.new]
    if old:
        s.execute(
            update(t)
            .where(t.c.gate_id == bindparam("gate"))
            .values(
                epoch=bindparam("e"),
                upto=bindparam("u"),
                max_seq=bindparam("m"),
                unrecoverable=bindparam("x"),
            ),
            [
                {"gate": r.gate_id, "e": r.epoch, "u": r.upto, "m": r.max_seq, "x": r.unrecoverable}
                for r in old
            ],
        )
    new = [r for r in runs if r.new]
    if new:
        s.execute(
            insert_into(t),
            [
                {
                    "gate_id": r.gate_id,
                    "epoch": r.epoch,
                    "upto": r.upto,
                    "max_seq": r.max_seq,
                    "unrecoverable": r.unrecoverable,
                }
                for r in new
            ],
        )
        for r in new:
            r.new = False


@dataclass(frozen=True)
class Recorded:
    """What storing one event did."""

    stored: bool  # False: a repeat of an event already stored
    lot: LotState | None  # the lot after the change (None for a repeat or an unknown lot)
    progress: Progress | None  # the gate's contiguous run after it


def _state(row: LotRow) -> LotState:
    ts = (
        row.last_event_ts.replace(tzinfo=UTC)
        if row.last_event_ts and not row.last_event_ts.tzinfo
        else row.last_event_ts
    )
    return LotState(row.id, row.name, row.capacity, row.occupied, ts)


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA cache_size=-65536")
    cur.close()


@contextlib.contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session in a transaction that writes, committed at the end (rolled back on error).

    On SQLite the transaction takes the database's write lock at its start (``BEGIN IMMEDIATE``):
    a deferred one reads, then fails with "database is locked" when another writer (a second
    collector, the dashboard) committed in between; this way the second writer waits its turn
    (``busy_timeout``) instead. Other databases lock rows as they go."""
    with Session(engine) as s, s.begin():
        if engine.dialect.name == "sqlite":
            s.connection().exec_driver_sql("BEGIN IMMEDIATE")
        yield s


def _no_autocheckpoint(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.close()


def open_engine(url: str, *, background_checkpoints: bool = False) -> Engine:
    """An engine; on SQLite with WAL, durable commits and a busy timeout. ``background_checkpoints``:
    commits never copy the WAL into the database themselves (SQLite does so in whichever commit
    crosses 1,000 pages, a stall of tens of milliseconds in the middle of the stream); the owner
    calls :meth:`EventStore.checkpoint` from a thread of its own instead."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        if background_checkpoints:
            event.listen(engine, "connect", _no_autocheckpoint)
    return engine


# Work done inside a batch's transaction with the events that were new (EventStore.add_batch_hook).
BatchHook = Callable[[Session, list[GateEvent]], None]


class EventStore:
    def __init__(self, url: str, *, migrate: bool = True, background_checkpoints: bool = False) -> None:
        """``migrate``: bring the schema to the newest revision first (Alembic, cloud/migrations;
        safe when several collectors start together). False: use the database as it is, its schema
        kept by ``alembic upgrade head`` at deployment (a database user without DDL rights)."""
        self.engine = open_engine(url, background_checkpoints=background_checkpoints)
        self._checkpoints = background_checkpoints and self.engine.dialect.name == "sqlite"
        if migrate:
            from cloud.migrations import upgrade

            upgrade(self.engine)
        self._batch_hooks: list[BatchHook] = []

    def add_batch_hook(self, hook: BatchHook) -> None:
        """Run ``hook(session, new_events)`` inside every batch's transaction, after occupancy is
        counted: what it writes commits or fails with the events (cloud/visits.py pairs visits so)."""
        self._batch_hooks.append(hook)

    def sync_lots(self, lots: Iterable[LotConfig]) -> None:
        """Create configured lots, update their names and capacities; keep their occupancy."""
        with write_session(self.engine) as s:
            for lot in lots:
                row = s.get(LotRow, lot.id)
                if row is None:
                    s.add(LotRow(id=lot.id, name=lot.name, capacity=lot.capacity, occupied=0))
                else:
                    row.name, row.capacity = lot.name, lot.capacity
                    row.occupied = min(row.occupied, lot.capacity)

    def record(self, ev: GateEvent) -> Recorded:
        """Store one event (see :meth:`record_batch`)."""
        batch = self.record_batch([ev])
        return Recorded(bool(batch.stored), batch.lots.get(ev.lot_id), batch.progress.get(ev.gate_id))

    def record_batch(self, events: Sequence[GateEvent]) -> BatchResult:
        """Store a batch of events in one transaction: each once by id (repeats, also within the
        batch, change nothing), occupancy counted in order with clamps, and each gate's contiguous
        run advanced. Returns what was new, the lots it changed and every gate's progress."""
        fresh: dict[str, GateEvent] = {}
        for ev in events:
            fresh.setdefault(ev.id, ev)
        with write_session(self.engine) as s:
            inserted = self._insert_new(s, list(fresh.values()))
            stored = [ev for ev in fresh.values() if ev.id in inserted]
            crops = [{"event_id": ev.id, "jpeg": _jpeg(ev.crop_jpeg)} for ev in stored if ev.crop_jpeg]
            if crops:
                s.execute(insert_into(SnapshotRow), crops)
            lots = self._count(s, stored)
            for hook in self._batch_hooks:
                hook(s, stored)
            progress: dict[str, Progress] = {}
            per_gate = _seqs_per_gate(events)
            rows = self._progress_rows(s, sorted({gate for gate, _e, _s in per_gate}))
            for gate_id, epoch, seqs in per_gate:
                row = rows.setdefault(gate_id, _Run(gate_id, epoch, new=True))
                progress[gate_id] = self._advance(s, row, epoch, seqs)
            _save_runs(s, list(rows.values()))
        for ev in stored:
            if ev.lot_id not in lots:
                logger.warning("event %s is for unknown lot %s: stored, not counted", ev.id, ev.lot_id)
        return BatchResult(stored, lots, progress)

    def _insert_new(self, s: Session, events: list[GateEvent]) -> set[str]:
        """INSERT ... ON CONFLICT DO NOTHING RETURNING id: the ids that were not stored before.

        No conflict target, so the same statement fits the plain table (primary key ``id``) and
        the day-partitioned one on PostgreSQL (primary key ``(id, ts)``, deploy/postgres/).

        On PostgreSQL the rows go as one array per column (``INSERT ... SELECT FROM unnest(...)``):
        a multi-row VALUES statement has a placeholder per value, and psycopg parses a statement
        that long in Python on every batch, which took five times the database's own work."""
        if not events:
            return set()
        if self.engine.dialect.name == "postgresql":
            values = [_values(ev) for ev in events]
            arrays = {name: [v[name] for v in values] for name in _EVENT_COLUMNS}
            return set(s.connection().execute(_pg_insert_arrays(), arrays).scalars().all())
        if self.engine.dialect.name == "sqlite":
            return self._sqlite_insert_new(s, events)
        stmt = pg_insert(EventRow).on_conflict_do_nothing().returning(EventRow.id)
        rows = s.execute(stmt, [_values(ev) for ev in events]).scalars().all()
        return set(rows)

    def _sqlite_insert_new(self, s: Session, events: list[GateEvent]) -> set[str]:
        """SQLite: the ids already stored (one indexed lookup), then the others in one DBAPI
        ``executemany`` with the column types' own conversions: the ORM's bulk insert with RETURNING
        built and converted every row in Python at several times the cost of SQLite's own work.

        A concurrent writer (a second collector on the same file) that stored one of these ids
        between the lookup and the insert makes the row count come short: the batch fails and is
        retried, and the retry sees those ids as stored."""
        conn = s.connection()
        ids = [ev.id for ev in events]
        marks = ",".join("?" * len(ids))
        existing = set(
            conn.exec_driver_sql(f"SELECT id FROM events WHERE id IN ({marks})", tuple(ids)).scalars()
        )
        new = [ev for ev in events if ev.id not in existing]
        if new:
            convert = _sqlite_converters(self.engine.dialect)
            rows = [tuple(f(v) if f else v for f, v in zip(convert, _row(ev), strict=True)) for ev in new]
            written = conn.exec_driver_sql(_SQLITE_INSERT, rows).rowcount
            if written != len(rows):
                raise RuntimeError(f"{len(rows) - written} events were stored by another writer meanwhile")
        return {ev.id for ev in new}

    def _count(self, s: Session, stored: list[GateEvent]) -> dict[str, LotState]:
        """Apply the new events to their lots' occupancy, one by one in time order (clamped to
        0..capacity): the lots' rows read (and locked) in one query, written in one executemany."""
        lot_ids = sorted({ev.lot_id for ev in stored})
        if not lot_ids:
            return {}
        t = _LOTS
        query = select(t.c.id, t.c.name, t.c.capacity, t.c.occupied, t.c.last_event_ts).where(
            t.c.id.in_(lot_ids)
        )
        lots = {
            r.id: [r.occupied, _aware(r.last_event_ts) if r.last_event_ts else None, r]
            for r in s.execute(query.with_for_update())
        }
        for ev in sorted(stored, key=lambda e: e.ts):
            lot = lots.get(ev.lot_id)
            if lot is None:
                continue
            if ev.decision.action is Action.OPEN:
                step = 1 if ev.direction is Direction.ENTRY else -1
                lot[0] = min(max(lot[0] + step, 0), lot[2].capacity)
            if lot[1] is None or lot[1] < ev.ts:
                lot[1] = ev.ts
        if lots:
            s.execute(
                update(t)
                .where(t.c.id == bindparam("lot"))
                .values(occupied=bindparam("n"), last_event_ts=bindparam("at")),
                [{"lot": lot_id, "n": n, "at": at} for lot_id, (n, at, _r) in lots.items()],
            )
        return {lot_id: LotState(lot_id, r.name, r.capacity, n, at) for lot_id, (n, at, r) in lots.items()}

    @staticmethod
    def _progress_rows(s: Session, gate_ids: list[str]) -> dict[str, _Run]:
        """The gates' progress rows, read and locked in one query (in id order)."""
        if not gate_ids:
            return {}
        t = _PROGRESS
        query = select(t).where(t.c.gate_id.in_(gate_ids)).order_by(t.c.gate_id).with_for_update()
        return {
            r.gate_id: _Run(r.gate_id, r.epoch, r.upto, r.max_seq, r.unrecoverable) for r in s.execute(query)
        }

    def _advance(self, s: Session, row: _Run, epoch: str, seqs: list[int], floor: int = 0) -> Progress:
        """Move the gate's ``upto`` over every stored contiguous sequence number (gap detection).

        ``seqs`` (sorted) were just stored. The usual case, in order with no hole before, needs no
        query: they simply extend the run. Otherwise the stored numbers after ``upto`` are read.
        The caller writes ``row`` back (:func:`_save_runs`)."""
        gate_id = row.gate_id
        if row.epoch != epoch:
            logger.warning("gate %s has a new outbox (epoch %s after %s)", gate_id, epoch, row.epoch)
            row.epoch, row.upto, row.max_seq = epoch, 0, 0
        if (
            seqs
            and row.max_seq == row.upto
            and seqs[0] == row.upto + 1
            and seqs[-1] - seqs[0] + 1 == len(seqs)
        ):
            row.upto = row.max_seq = seqs[-1]
            return Progress(gate_id, epoch, row.upto, row.max_seq)
        row.max_seq = max(row.max_seq, seqs[-1] if seqs else 0)
        if floor > row.upto + 1:  # the gate no longer holds these: record the hole, move past it
            stored_between = s.scalars(
                select(func.count()).where(
                    EventRow.gate_id == gate_id,
                    EventRow.epoch == epoch,
                    EventRow.seq > row.upto,
                    EventRow.seq < floor,
                )
            ).one()
            row.unrecoverable += floor - 1 - row.upto - stored_between
            row.upto = floor - 1
            row.max_seq = max(row.max_seq, row.upto)
        while row.upto < row.max_seq:
            following = s.scalars(
                select(EventRow.seq)
                .where(EventRow.gate_id == gate_id, EventRow.epoch == epoch, EventRow.seq > row.upto)
                .order_by(EventRow.seq)
                .limit(1000)
            ).all()
            run = 0
            for n, value in enumerate(following, start=1):
                if value != row.upto + n:
                    break
                run = n
            row.upto += run
            if run < 1000:
                break
        return Progress(gate_id, epoch, row.upto, row.max_seq)

    def note_first_seq(self, gate_id: str, epoch: str, first_seq: int) -> tuple[Progress, int]:
        """The gate says its outbox starts at ``first_seq``: anything before it that is not stored
        will never come. Returns the progress and how many events were given up for lost now."""
        with write_session(self.engine) as s:
            row = self._progress_rows(s, [gate_id]).get(gate_id) or _Run(gate_id, epoch, new=True)
            before = row.unrecoverable if row.epoch == epoch else 0
            progress = self._advance(s, row, epoch, [], floor=first_seq)
            _save_runs(s, [row])
        return progress, row.unrecoverable - before

    def progress(self, gate_id: str) -> Progress | None:
        with Session(self.engine) as s:
            row = s.get(GateProgressRow, gate_id)
            return Progress(row.gate_id, row.epoch, row.upto, row.max_seq) if row else None

    def all_progress(self) -> list[Progress]:
        with Session(self.engine) as s:
            rows = s.scalars(select(GateProgressRow)).all()
            return [Progress(r.gate_id, r.epoch, r.upto, r.max_seq) for r in rows]

    def lots(self, ids: Iterable[str] | None = None) -> list[LotState]:
        """Every lot, or only those in ``ids``, by id."""
        query = select(LotRow).order_by(LotRow.id)
        if ids is not None:
            query = query.where(LotRow.id.in_(sorted(set(ids))))
        with Session(self.engine) as s:
            return [_state(r) for r in s.scalars(query)]

    def lot(self, lot_id: str) -> LotState | None:
        with Session(self.engine) as s:
            row = s.get(LotRow, lot_id)
            return _state(row) if row else None

    def snapshot(self, event_id: str) -> bytes | None:
        """The plate crop sent with an event, JPEG bytes, or None."""
        with Session(self.engine) as s:
            row = s.get(SnapshotRow, event_id)
            return row.jpeg if row else None

    def count_events(self, event_id: str | None = None) -> int:
        with Session(self.engine) as s:
            q = select(func.count()).select_from(EventRow)
            if event_id is not None:
                q = q.where(EventRow.id == event_id)
            return int(s.scalar(q) or 0)

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database without blocking writers (SQLite, with
        ``background_checkpoints``; nothing otherwise)."""
        if self._checkpoints:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        self.engine.dispose()


_EVENT_COLUMNS = [c.name for c in EventRow.__table__.columns]


@functools.cache
def _pg_insert_arrays() -> Any:
    """INSERT INTO events SELECT * FROM unnest(:id, :epoch, ...) ON CONFLICT DO NOTHING RETURNING id,
    one array parameter per column."""
    arrays = [bindparam(c.name, type_=ARRAY(c.type)) for c in EventRow.__table__.columns]
    rows = func.unnest(*arrays).table_valued(*_EVENT_COLUMNS).render_derived(name="new")
    query = select(*(rows.c[name] for name in _EVENT_COLUMNS))
    insert = pg_insert(EventRow).from_select(_EVENT_COLUMNS, query)
    return insert.on_conflict_do_nothing().returning(EventRow.id)


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _jpeg(b64: str) -> bytes:
    try:
        return base64.b64decode(b64, validate=True)
    except ValueError:
        return b""


def _row(ev: GateEvent, received_at: datetime | None = None) -> tuple[object, ...]:
    """An event's column values, in ``_EVENT_COLUMNS`` order."""
    return (
        ev.id,
        ev.epoch,
        ev.seq,
        ev.gate_id,
        ev.lot_id,
        ev.ts,
        ev.direction.value,
        ev.plate,
        ev.confidence,
        ev.decision.action.value,
        ev.decision.reason.value,
        received_at or datetime.now(UTC),
    )


def _values(ev: GateEvent) -> dict[str, object]:
    return dict(zip(_EVENT_COLUMNS, _row(ev), strict=True))


_SQLITE_INSERT = "INSERT OR IGNORE INTO events ({}) VALUES ({})".format(
    ", ".join(_EVENT_COLUMNS), ", ".join("?" * len(_EVENT_COLUMNS))
)


@functools.cache
def _sqlite_converters(dialect: Any) -> tuple[Any, ...]:
    """Each event column's bind conversion on SQLite (datetimes to its text form), or None."""
    return tuple(c.type.dialect_impl(dialect).bind_processor(dialect) for c in EventRow.__table__.columns)
