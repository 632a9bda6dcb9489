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
    and_,
    any_,
    bindparam,
    case,
    create_engine,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy import insert as insert_into
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from cloud.config import LotConfig
from protocol import Action, Direction, GateEvent

logger = logging.getLogger(__name__)


class Base(DeclarativeBase):
    pass


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("events_gate_epoch_seq", "gate_id", "epoch", "seq"),
        Index("events_lot_ts", "lot_id", "ts"),  # a lot's events in time order (the occupancy ledger)
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(40))
    seq: Mapped[int] = mapped_column(Integer)
    gate_id: Mapped[str] = mapped_column(String(64))
    lot_id: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    direction: Mapped[str] = mapped_column(String(8))
    plate: Mapped[str | None] = mapped_column(String(16), index=True)
    confidence: Mapped[float] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # the lot's count after this event, counting its events in (ts, id) order: where a late event
    # is counted from (EventStore._fold). None: not counted (unknown lot, before the lot's anchor)
    occupied_after: Mapped[int | None] = mapped_column(Integer, nullable=True)


class LotRow(Base):
    __tablename__ = "lots"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    capacity: Mapped[int] = mapped_column(Integer)
    occupied: Mapped[int] = mapped_column(Integer, default=0)
    # the newest event counted, by (ts, id)
    last_event_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_event_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # the last re-base (recalibration, reconciliation, sensors): the count was set to
    # anchor_occupied after the event key (anchor_ts, anchor_event_id); events before it no longer count
    anchor_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    anchor_event_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    anchor_occupied: Mapped[int | None] = mapped_column(Integer, nullable=True)


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
_EVENTS = cast(Table, EventRow.__table__)


def _key(ev: GateEvent) -> tuple[datetime, str]:
    """Events count in this order: by time, then id (unique, so the order is total)."""
    return ev.ts, ev.id


def _stored_key(ts: datetime | None, event_id: str | None) -> tuple[datetime, str] | None:
    """A key kept in a lot's row (its newest event, its anchor); None when there is none."""
    return (_aware(ts), event_id or "") if ts else None


@dataclass
class _Lot:
    """A lot's row while a batch counts into it (read and written with Core statements)."""

    COLUMNS = ("id", "name", "capacity", "occupied", "last_event_ts", "last_event_id",
               "anchor_ts", "anchor_event_id", "anchor_occupied")  # fmt: skip

    id: str
    name: str
    capacity: int
    occupied: int
    last: tuple[datetime, str] | None  # the newest event counted
    anchor: tuple[datetime, str] | None  # events up to this one do not count (the last re-base)
    anchor_occupied: int | None

    @classmethod
    def of(cls, r: Any) -> _Lot:
        last, anchor = (
            _stored_key(r.last_event_ts, r.last_event_id),
            _stored_key(r.anchor_ts, r.anchor_event_id),
        )
        return cls(r.id, r.name, r.capacity, r.occupied, last, anchor, r.anchor_occupied)

    def step(self, n: int, direction: str, action: str) -> int:
        """The count after an event: an entry or exit that opened the barrier moves it, clamped."""
        if action != OPEN_ACTION:
            return n
        return min(max(n + (1 if direction == ENTRY else -1), 0), self.capacity)

    def state(self) -> LotState:
        return LotState(self.id, self.name, self.capacity, self.occupied, self.last[0] if self.last else None)


OPEN_ACTION, ENTRY = Action.OPEN.value, Direction.ENTRY.value


def rebase(row: LotRow, occupied: int, now: datetime) -> None:
    """Set a lot's count by hand or by a reconciliation: it holds from now and after every event
    counted so far, so an event from before it that arrives late does not count again."""
    last = _stored_key(row.last_event_ts, row.last_event_id)
    anchor = max(last, (now, "")) if last else (now, "")
    row.occupied = occupied
    row.anchor_ts, row.anchor_event_id, row.anchor_occupied = anchor[0], anchor[1], occupied


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
        """Create configured lots, update their names and capacities; keep their occupancy (within
        a smaller capacity). Safe when several collectors start together on one database: a lot
        another one created meanwhile is left to the update."""
        rows = [{"id": lot.id, "name": lot.name, "capacity": lot.capacity, "occupied": 0} for lot in lots]
        if not rows:
            return
        insert_fn = sqlite_insert if self.engine.dialect.name == "sqlite" else pg_insert
        t = _LOTS
        capacity = bindparam("b_capacity", type_=Integer)
        with write_session(self.engine) as s:
            s.execute(insert_fn(t).on_conflict_do_nothing(), rows)
            s.execute(
                update(t)
                .where(t.c.id == bindparam("b_id"))
                .values(
                    name=bindparam("b_name"),
                    capacity=capacity,
                    occupied=case((t.c.occupied > capacity, capacity), else_=t.c.occupied),
                ),
                [{"b_id": r["id"], "b_name": r["name"], "b_capacity": r["capacity"]} for r in rows],
            )

    def record(self, ev: GateEvent) -> Recorded:
        """Store one event (see :meth:`record_batch`)."""
        batch = self.record_batch([ev])
        return Recorded(bool(batch.stored), batch.lots.get(ev.lot_id), batch.progress.get(ev.gate_id))

    def record_batch(self, events: Sequence[GateEvent]) -> BatchResult:
        """Store a batch of events in one transaction: each once by id (repeats, also within the
        batch, change nothing), occupancy counted in (ts, id) order with clamps whatever order
        they arrive in (:meth:`_fold`), and each gate's contiguous run advanced. Returns what was
        new, the lots it changed and every gate's progress."""
        fresh: dict[str, GateEvent] = {}
        for ev in events:
            fresh.setdefault(ev.id, ev)
        with write_session(self.engine) as s:
            lots = self._lock_lots(s, {ev.lot_id for ev in fresh.values()})
            stored = self._new(s, list(fresh.values()))
            after = self._fold(s, lots, stored)
            self._insert(s, stored, after)
            crops = [{"event_id": ev.id, "jpeg": _jpeg(ev.crop_jpeg)} for ev in stored if ev.crop_jpeg]
            if crops:
                s.execute(insert_into(SnapshotRow), crops)
            for hook in self._batch_hooks:
                hook(s, stored)
            progress: dict[str, Progress] = {}
            per_gate = _seqs_per_gate(events)
            rows = self._progress_rows(s, sorted({gate for gate, _e, _s in per_gate}))
            for gate_id, epoch, seqs in per_gate:
                row = rows.setdefault(gate_id, _Run(gate_id, epoch, new=True))
                progress[gate_id] = self._advance(s, row, epoch, seqs)
            _save_runs(s, list(rows.values()))
        changed = {lot_id: lots[lot_id].state() for lot_id in {ev.lot_id for ev in stored} if lot_id in lots}
        for ev in stored:
            if ev.lot_id not in lots:
                logger.warning("event %s is for unknown lot %s: stored, not counted", ev.id, ev.lot_id)
        return BatchResult(stored, changed, progress)

    @staticmethod
    def _lock_lots(s: Session, lot_ids: set[str]) -> dict[str, _Lot]:
        """The lots' rows, read and locked (PostgreSQL: in id order, as every writer takes them;
        SQLite: the transaction holds the database's write lock already) before anything of theirs
        is read, so two collectors count one lot one after the other."""
        if not lot_ids:
            return {}
        t = _LOTS
        query = (
            select(*(t.c[name] for name in _Lot.COLUMNS)).where(t.c.id.in_(sorted(lot_ids))).order_by(t.c.id)
        )
        return {r.id: _Lot.of(r) for r in s.execute(query.with_for_update())}

    def _new(self, s: Session, events: list[GateEvent]) -> list[GateEvent]:
        """The events not stored before (one indexed lookup of their ids)."""
        if not events:
            return []
        ids = [ev.id for ev in events]
        conn = s.connection()
        if conn.dialect.name == "sqlite":
            marks = ",".join("?" * len(ids))
            found = conn.exec_driver_sql(f"SELECT id FROM events WHERE id IN ({marks})", tuple(ids)).scalars()
        elif conn.dialect.name == "postgresql":  # one array parameter, not one per id
            found = conn.execute(_pg_existing_ids(), {"ids": ids}).scalars()
        else:
            found = conn.execute(select(EventRow.id).where(EventRow.id.in_(ids))).scalars()
        existing = set(found)
        return [ev for ev in events if ev.id not in existing]

    def _insert(self, s: Session, events: list[GateEvent], after: dict[str, int]) -> None:
        """INSERT the new events with the count after each.

        SQLite: one DBAPI ``executemany`` with the column types' own conversions (the ORM's bulk
        insert converted every row in Python at several times SQLite's own work). PostgreSQL: one
        array per column (``INSERT ... SELECT FROM unnest(...)``): a multi-row VALUES statement has
        a placeholder per value, and psycopg parsed a statement that long in Python on every batch.
        ON CONFLICT DO NOTHING without a conflict target fits the plain table (primary key ``id``)
        and the day-partitioned one (``(id, ts)``, deploy/postgres/).

        An event another writer stored between :meth:`_new` and here (one of a lot this batch
        does not lock) makes the row count come short: the batch fails and is retried, and the
        retry sees it as stored."""
        if not events:
            return
        conn = s.connection()
        if conn.dialect.name == "sqlite":
            convert = _sqlite_converters(self.engine.dialect)
            rows = [
                tuple(f(v) if f else v for f, v in zip(convert, _row(ev, after.get(ev.id)), strict=True))
                for ev in events
            ]
            written = conn.exec_driver_sql(_SQLITE_INSERT, rows).rowcount
        else:
            values = [_row(ev, after.get(ev.id)) for ev in events]
            arrays = {name: [v[k] for v in values] for k, name in enumerate(_EVENT_COLUMNS)}
            if conn.dialect.name == "postgresql":
                written = len(conn.execute(_pg_insert_arrays(), arrays).scalars().all())
            else:
                written = conn.execute(
                    insert_into(EventRow), [dict(zip(_EVENT_COLUMNS, v, strict=True)) for v in values]
                ).rowcount
        if written != len(events):
            raise RuntimeError(f"{len(events) - written} events were stored by another writer meanwhile")

    def _fold(self, s: Session, lots: dict[str, _Lot], stored: list[GateEvent]) -> dict[str, int]:
        """Count the new events into their lots' occupancy, in (ts, id) order, each entry or exit
        that opened the barrier clamped to 0..capacity; returns each new event's count after it.

        Clamps make the count depend on order: a lot at capacity that sees an exit and then an
        entry is full again, in the other order it has one space. Events of one lot arrive out of
        order when a gate's backlog drains late, or when several collectors each store part of the
        stream. So each counted event keeps the count after it (``occupied_after``): new events
        newer than everything counted extend the count directly (the usual case, no query); an
        older one is counted from the count after the event before it, and the lot's events after
        it are counted again, their ``occupied_after`` corrected. Events at or before the lot's
        anchor (its last re-base) do not count: the re-based count already holds them."""
        per_lot: dict[str, list[GateEvent]] = {}
        for ev in stored:
            if ev.lot_id in lots:
                per_lot.setdefault(ev.lot_id, []).append(ev)
        after: dict[str, int] = {}
        corrected: list[dict[str, object]] = []
        for lot_id, events in per_lot.items():
            lot = lots[lot_id]
            events.sort(key=_key)
            if lot.anchor is not None:
                anchor = lot.anchor
                events = [ev for ev in events if _key(ev) > anchor]
                if not events:
                    continue
            first = _key(events[0])
            if lot.last is None or first > lot.last:  # in order: no query
                n = lot.occupied
                for ev in events:
                    n = lot.step(n, ev.direction.value, ev.decision.action.value)
                    after[ev.id] = n
            else:
                n = self._count_before(s, lot, first)
                merged: list[tuple[tuple[datetime, str], str, str, GateEvent | None, Any]]
                merged = [(_key(ev), ev.direction.value, ev.decision.action.value, ev, None) for ev in events]
                merged += [
                    ((_aware(r.ts), r.id), r.direction, r.action, None, r)
                    for r in self._counted_after(s, lot_id, first)
                ]
                merged.sort(key=lambda item: item[0])
                for _at, direction, action, new, row in merged:
                    n = lot.step(n, direction, action)
                    if new is not None:
                        after[new.id] = n
                    elif row.occupied_after != n:
                        corrected.append({"b_id": row.id, "b_ts": row.ts, "n": n})
                logger.debug("lot %s: %d late events counted again from %s", lot_id, len(merged), first[0])
            lot.occupied = n
            last = _key(events[-1])
            if lot.last is None or last > lot.last:
                lot.last = last
        if corrected:
            s.execute(
                update(_EVENTS)
                .where(_EVENTS.c.id == bindparam("b_id"), _EVENTS.c.ts == bindparam("b_ts"))
                .values(occupied_after=bindparam("n")),
                corrected,
            )
        touched = [lots[lot_id] for lot_id in per_lot]
        if touched:
            t = _LOTS
            s.execute(
                update(t)
                .where(t.c.id == bindparam("lot"))
                .values(
                    occupied=bindparam("n"), last_event_ts=bindparam("at"), last_event_id=bindparam("eid")
                ),
                [
                    {
                        "lot": lot.id,
                        "n": lot.occupied,
                        "at": lot.last[0] if lot.last else None,
                        "eid": lot.last[1] if lot.last else None,
                    }
                    for lot in touched
                ],
            )
        return after

    @staticmethod
    def _count_before(s: Session, lot: _Lot, key: tuple[datetime, str]) -> int:
        """The lot's count just before the event ``key``: after the latest counted event before
        it, else as re-based at the anchor, else 0 (the count a lot starts from)."""
        t = _EVENTS
        ts, event_id = key
        query = (
            select(t.c.occupied_after)
            .where(
                t.c.lot_id == lot.id,
                t.c.occupied_after.is_not(None),
                or_(t.c.ts < ts, and_(t.c.ts == ts, t.c.id < event_id)),
            )
            .order_by(t.c.ts.desc(), t.c.id.desc())
            .limit(1)
        )
        if lot.anchor is not None:
            a_ts, a_id = lot.anchor
            query = query.where(or_(t.c.ts > a_ts, and_(t.c.ts == a_ts, t.c.id > a_id)))
        found = s.execute(query).scalar()
        if found is not None:
            return int(found)
        return lot.anchor_occupied if lot.anchor is not None and lot.anchor_occupied is not None else 0

    @staticmethod
    def _counted_after(s: Session, lot_id: str, key: tuple[datetime, str]) -> list[Any]:
        """The lot's stored events after ``key``, in (ts, id) order."""
        t = _EVENTS
        ts, event_id = key
        query = (
            select(t.c.id, t.c.ts, t.c.direction, t.c.action, t.c.occupied_after)
            .where(t.c.lot_id == lot_id, or_(t.c.ts > ts, and_(t.c.ts == ts, t.c.id > event_id)))
            .order_by(t.c.ts, t.c.id)
        )
        return list(s.execute(query))

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
def _pg_existing_ids() -> Any:
    """SELECT id FROM events WHERE id = ANY(:ids), the ids as one array parameter."""
    return select(EventRow.id).where(EventRow.id == any_(bindparam("ids", type_=ARRAY(String(40)))))


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


def _row(
    ev: GateEvent, occupied_after: int | None, received_at: datetime | None = None
) -> tuple[object, ...]:
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
        occupied_after,
    )


_SQLITE_INSERT = "INSERT OR IGNORE INTO events ({}) VALUES ({})".format(
    ", ".join(_EVENT_COLUMNS), ", ".join("?" * len(_EVENT_COLUMNS))
)


@functools.cache
def _sqlite_converters(dialect: Any) -> tuple[Any, ...]:
    """Each event column's bind conversion on SQLite (datetimes to its text form), or None."""
    return tuple(c.type.dialect_impl(dialect).bind_processor(dialect) for c in EventRow.__table__.columns)
