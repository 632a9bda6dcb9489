"""Visits and honest occupancy: entries and exits paired by plate, overstay alerts, and a count that
is checked against the pairing, re-based by operators and by bay sensors, every change audited.

Visits. An admitted entry with a plate opens a visit of that plate in that lot; an admitted exit
closes the plate's most recent open visit that began before it (dwell = exit - entry). An exit with
nothing to close is an *orphan exit*: a visit with no entry (the entry's plate was unread or
misread, or the car came in before the records began). Arrival order does not matter: an entry
that arrives after its exit (a gate's backlog drained late) fills the orphan exit of its plate that
follows it within ``stale_visit_h``. A plate entering again while its visit is open proves that
the earlier exit was missed: the earlier visit is closed as ``presumed_exited`` (``re_entered``).
Refused events form no visits; admitted events without a plate are counted per lot and hour, not
paired.

Visits are written inside the event store's transaction (a hook of ``EventStore.record_batch``),
not after it: an event, the occupancy it moves and the visit it opens or closes commit together,
so a redelivered event (refused by its id) pairs nothing twice, and no check ever reads a counter
that already has a batch while the visits do not yet. Per batch the hook runs a fixed number of
statements: one SELECT of the candidate visits of the batch's plates, one bulk INSERT, one
executemany UPDATE and one executemany upsert of the hourly flows.

Stale visits. An open visit older than its lot's ``stale_visit_h`` is closed by the sweep as
``presumed_exited`` (``stale``): presumed, not seen. If its exit turns up later it closes the visit
like any exit. Overstay: an open visit older than the lot's ``max_stay_h`` raises one alert (once
per visit); the alert is resolved when the visit closes. A lot's open alerts are published
retained on ``lots/{id}/alerts``.

The count. A lot's live count is the gates' counter (``EventStore``: +1 per admitted entry, -1 per
admitted exit, clamped to 0..capacity). Nothing changes it silently: every re-base is a row of the
occupancy audit (lot, before, after, cause, actor, reason, time). The causes:

- ``recalibrate``: an operator counted the lot (:meth:`Visits.recalibrate`, ``parkgate lots
  recalibrate``). 0..capacity; anything else is refused with the lot's capacity in the message.
- ``sensor``: the lot's ``occupancy_source`` is ``sensors``; a bay-sensor report re-bases the count
  to the sensors' count (scaled up to the capacity when they watch only part of the lot, and the
  reason says so) when the two differ by more than ``drift_tolerance``. Reports older than the last
  one applied are ignored.
- ``reconcile`` (opt-in per lot, ``reconcile = true``): the count is re-based to the pairing's
  estimate when they differ by more than ``drift_tolerance``.
- ``correction``: never a cause of its own; a corrected plate re-pairs visits, and the lot is then
  checked like a ``reconcile``.

The estimate, and what it assumes. Over the last W = ``stale_visit_h`` hours::

    E = K + B
    K = open visits that are not stale (plate read going in, no exit seen)
    B = entries without a plate, less the exits nothing claims (exits without a plate and orphan
        exits), each such exit cancelling the nearest earlier unclaimed entry, known or not

B may be negative (an unread exit of a car whose visit is still open). Exits are matched over 2W so
that one near the window's start still finds its entry. Which unread exit belongs to which entry
is unknowable; nearest-earlier matching assumes stays are mostly short, and the error it leaves is
of the order of (unmatched events per hour x typical stay). A vehicle that really stays longer than
W is wrongly presumed gone. Hence a lot is re-based only when ``|counter - E| > drift_tolerance``,
only once its visits have been tracked for 2W (cars parked before tracking began would otherwise
be counted out), not within W after an operator's recalibration (a count beats an estimate), never
when its source is ``sensors``, and only where it was switched on: leave it off (the default) where
stays beyond ``stale_visit_h`` are common (airport, residents) or plates are read poorly.

After any change the collector re-publishes the lots it changed; a change made elsewhere (CLI,
dashboard) asks every collector to do so with :func:`request_refresh` (``collectors/refresh``).
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import (
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from cloud.config import CollectorConfig, LotConfig
from cloud.events_store import Base, EventRow, EventStore, LotRow, LotState, rebase, write_session
from parkgate.settings import ConfigError, MqttSettings
from protocol import Action, Direction, GateEvent, Topics, encode
from protocol.messages import CollectorRefresh, LotAlerts, OverstayNotice, Plate, SpaceSensorReport, utc_now

logger = logging.getLogger(__name__)

SYSTEM = "system"  # the actor of automatic adjustments
OPEN, CLOSED, PRESUMED, ORPHAN = "open", "closed", "presumed_exited", "orphan_exit"
RECONCILE_EVERY_S = 300.0  # the sweep runs every few seconds; the estimate is worth computing less often
ALERTS_SHOWN = 1000  # overstays listed in one retained message (the oldest first); `total` counts all


# -- errors ------------------------------------------------------------------------------------------
class VisitsError(Exception):
    """Base of this module's errors."""


class UnknownLot(VisitsError, LookupError):
    def __init__(self, lot_id: str) -> None:
        self.lot_id = lot_id
        super().__init__(f"no lot {lot_id!r} in the database (is it in the collector's [[lots]]?)")


class OccupancyOutOfRange(VisitsError, ValueError):
    def __init__(self, lot_id: str, occupied: int, capacity: int) -> None:
        self.lot_id, self.occupied, self.capacity = lot_id, occupied, capacity
        super().__init__(
            f"lot {lot_id} has {capacity} spaces: occupied must be 0..{capacity}, not {occupied}"
        )


class EventNotFound(VisitsError, LookupError):
    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        super().__init__(f"no event {event_id!r}")


class InvalidPlate(VisitsError, ValueError):
    def __init__(self, text: str, why: str) -> None:
        self.text = text
        super().__init__(f"{text!r} is not a plate: {why}")


# -- tables (on the event store's Base; made by cloud/migrations, revision 0003) --------------------
class VisitRow(Base):
    """One stay of one plate in one lot: entry and exit, or only one of them."""

    __tablename__ = "visits"
    __table_args__ = (
        Index("visits_plate", "plate", "lot_id"),  # pairing (plates in lots) and plate search alike
        Index("visits_lot", "lot_id", "ts"),
        Index("visits_status", "status", "entry_ts"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lot_id: Mapped[str] = mapped_column(String(64))
    plate: Mapped[str] = mapped_column(String(16))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # entry, or the exit of an orphan
    entry_event_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    entry_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    exit_event_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    exit_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # open | closed | presumed_exited | orphan_exit
    note: Mapped[str | None] = mapped_column(String(16), nullable=True)  # stale, re_entered, late_exit, ...
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class FlowRow(Base):
    """Per lot and hour (of the entry, or of the exit): what the estimate is made of."""

    __tablename__ = "visit_flows"

    lot_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # epoch hours
    known_in: Mapped[int] = mapped_column(Integer, default=0)  # entries with a plate, no exit seen
    unread_in: Mapped[int] = mapped_column(Integer, default=0)  # admitted entries without a plate
    unread_out: Mapped[int] = mapped_column(Integer, default=0)  # admitted exits without a plate
    orphan_out: Mapped[int] = mapped_column(Integer, default=0)  # exits with a plate nothing claims


class TrackingRow(Base):
    """Per lot: since when its visits are tracked, its last recalibration, its last sensor report."""

    __tablename__ = "visit_lots"

    lot_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recalibrated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    sensor_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AdjustmentRow(Base):
    """The occupancy audit: every re-base of a lot's count."""

    __tablename__ = "occupancy_audit"
    __table_args__ = (Index("occupancy_audit_lot", "lot_id", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lot_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[int] = mapped_column(Integer)
    after: Mapped[int] = mapped_column(Integer)
    cause: Mapped[str] = mapped_column(String(16))  # reconcile | recalibrate | sensor
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(400))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OverstayRow(Base):
    __tablename__ = "overstay_alerts"
    __table_args__ = (
        Index("overstay_alerts_lot", "lot_id", "status"),
        Index("overstay_alerts_visit", "entry_event_id", unique=True),  # one alert per visit
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lot_id: Mapped[str] = mapped_column(String(64))
    plate: Mapped[str] = mapped_column(String(16))
    entry_event_id: Mapped[str] = mapped_column(String(40))
    entry_ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    max_stay_h: Mapped[float] = mapped_column(Float)
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(10))  # open | resolved
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class CorrectionRow(Base):
    """A misread corrected: the event's plate before and after, who and why."""

    __tablename__ = "plate_corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(40), index=True)
    lot_id: Mapped[str] = mapped_column(String(64))
    old_plate: Mapped[str | None] = mapped_column(String(16), nullable=True)
    new_plate: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(400))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# -- what callers get back -------------------------------------------------------------------------
@dataclass(frozen=True)
class Visit:
    id: int
    lot_id: str
    plate: str
    entry_event_id: str | None
    entry_ts: datetime | None
    exit_event_id: str | None
    exit_ts: datetime | None
    status: str  # open | closed | presumed_exited | orphan_exit
    note: str | None  # why it ended as it did: stale, re_entered, late_entry, late_exit
    closed_at: datetime | None

    @property
    def dwell(self) -> timedelta | None:
        """Exit less entry, when both were seen."""
        return self.exit_ts - self.entry_ts if self.entry_ts and self.exit_ts else None


@dataclass(frozen=True)
class Adjustment:
    id: int
    lot_id: str
    before: int
    after: int
    cause: str  # reconcile | recalibrate | sensor
    actor: str
    reason: str
    ts: datetime


@dataclass(frozen=True)
class OverstayAlert:
    id: int
    lot_id: str
    plate: str
    entry_event_id: str
    entry_ts: datetime
    max_stay_h: float
    raised_at: datetime
    status: str  # open | resolved
    resolved_at: datetime | None


@dataclass(frozen=True)
class Correction:
    id: int
    event_id: str
    lot_id: str
    old_plate: str | None
    new_plate: str
    actor: str
    reason: str
    ts: datetime
    adjustment: Adjustment | None  # the re-base the new pairing led to, if any
    lot: LotState | None  # the lot afterwards (to re-publish)


@dataclass(frozen=True)
class Estimate:
    """The pairing's estimate of a lot's occupancy (see the module's docstring)."""

    lot_id: str
    value: int  # E, clamped to 0..capacity
    open_visits: int  # K
    unread_in: int  # in the window
    unread_out: int
    orphan_out: int

    @property
    def balance(self) -> int:
        """B = E - K: unread entries less the exits nothing claims, after matching."""
        return self.value - self.open_visits


@dataclass
class SweepResult:
    """What one sweep did: lots re-based (to re-publish) and the alert lists that changed."""

    lots: dict[str, LotState] = field(default_factory=dict)
    alerts: list[LotAlerts] = field(default_factory=list)
    stale: int = 0
    raised: list[OverstayAlert] = field(default_factory=list)
    resolved: int = 0
    adjustments: list[Adjustment] = field(default_factory=list)


def _aware(ts: datetime) -> datetime:
    """SQLite hands datetimes back naive; every stored time is UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _maybe(ts: datetime | None) -> datetime | None:
    return _aware(ts) if ts is not None else None


def _sqlite_time(value: str | None) -> datetime | None:
    """A time as SQLite holds it (UTC text, no offset), read with its offset in one C call."""
    return None if value is None else datetime.fromisoformat(value + "+00:00")


def _sqlite_text(value: datetime | None) -> str | None:
    """A UTC time as SQLAlchemy writes it on SQLite ("2026-03-10 08:00:00.000000"), in one C call.
    Every time handled here is UTC already (events are validated so, the clock and reads too)."""
    return None if value is None else value.isoformat(" ", "microseconds")[:26]


def _same(value: datetime | None) -> datetime | None:
    return value


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


def _hour(ts: datetime) -> int:
    return math.floor(ts.timestamp() / 3600)


def _text(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if not value or len(value) > limit:
        raise ValueError(f"{what} must be 1..{limit} characters")
    return value


_PLATE = TypeAdapter(Plate)
_SEPARATORS = re.compile(r"[\s·•.\-_]")


def normalise_plate(text: str) -> str:
    """Plate text as stored (upper case, no separators); InvalidPlate if it cannot be one."""
    plate = _SEPARATORS.sub("", text).upper()
    try:
        return _PLATE.validate_python(plate)
    except ValidationError:
        raise InvalidPlate(
            text, "use 2-12 capital letters, digits and CJK characters without separators (e.g. 鄂A12345)"
        ) from None


def _insert(engine: Engine) -> Any:
    return sqlite_insert if engine.dialect.name == "sqlite" else pg_insert


def _visit(row: Any) -> Visit:
    return Visit(
        row.id, row.lot_id, row.plate, row.entry_event_id, _maybe(row.entry_ts), row.exit_event_id,
        _maybe(row.exit_ts), row.status, row.note, _maybe(row.closed_at),
    )  # fmt: skip


def _adjustment(row: AdjustmentRow) -> Adjustment:
    return Adjustment(
        row.id, row.lot_id, row.before, row.after, row.cause, row.actor, row.reason, _aware(row.ts)
    )


def _alert(row: OverstayRow) -> OverstayAlert:
    return OverstayAlert(
        row.id, row.lot_id, row.plate, row.entry_event_id, _aware(row.entry_ts), row.max_stay_h,
        _aware(row.raised_at), row.status, _maybe(row.resolved_at),
    )  # fmt: skip


def _correction(row: CorrectionRow) -> Correction:
    return Correction(
        row.id, row.event_id, row.lot_id, row.old_plate, row.new_plate, row.actor, row.reason, _aware(row.ts),
        None, None,
    )  # fmt: skip


def _lot_state(row: LotRow) -> LotState:
    return LotState(row.id, row.name, row.capacity, row.occupied, _maybe(row.last_event_ts))


# -- pairing (pure, in memory) -------------------------------------------------------------------------
_VISITS = cast(Table, VisitRow.__table__)
_VISIT_COLUMNS = ("id", "lot_id", "plate", "ts", "entry_event_id", "entry_ts", "exit_event_id", "exit_ts",
                  "status", "note", "closed_at")  # fmt: skip
_MUTABLE = _VISIT_COLUMNS[3:]
_FLOWS = ("known_in", "unread_in", "unread_out", "orphan_out")


class _Seen(NamedTuple):
    """What pairing reads of an admitted event with a plate."""

    id: str
    lot_id: str
    plate: str
    ts: datetime
    entry: bool

    @classmethod
    def of(cls, ev: GateEvent) -> _Seen:
        return cls(ev.id, ev.lot_id, ev.plate or "", ev.ts, ev.direction is Direction.ENTRY)


@dataclass(eq=False)
class _V:
    """A visit being paired: loaded from the table (``id`` set) or made now."""

    lot_id: str
    plate: str
    ts: datetime
    entry_event_id: str | None = None
    entry_ts: datetime | None = None
    exit_event_id: str | None = None
    exit_ts: datetime | None = None
    status: str = OPEN
    note: str | None = None
    closed_at: datetime | None = None
    id: int | None = None
    was: tuple[tuple[int, str], ...] = ()  # its flow contribution as loaded
    dirty: bool = False

    def flows(self) -> tuple[tuple[int, str], ...]:
        """(hour, flow) this visit adds 1 to. An entry without a seen exit counts in ``known_in``
        while open, and when presumed exited for being stale (so that a late unread exit still
        finds it when matching); a re-entered one is gone. An orphan exit counts in ``orphan_out``."""
        if self.status == OPEN or (self.status == PRESUMED and self.note == "stale"):
            assert self.entry_ts is not None
            return ((_hour(self.entry_ts), "known_in"),)
        if self.status == ORPHAN:
            assert self.exit_ts is not None
            return ((_hour(self.exit_ts), "orphan_out"),)
        return ()

    def row(self, when: Callable[[datetime | None], object]) -> tuple[object, ...]:
        """The values of ``_MUTABLE``, in that order, the times through ``when``."""
        return (when(self.ts), self.entry_event_id, when(self.entry_ts), self.exit_event_id, when(self.exit_ts),
                self.status, self.note, when(self.closed_at))  # fmt: skip


class _Flows:
    """Deltas of the hourly flows, written as one executemany upsert."""

    def __init__(self) -> None:
        self.delta: dict[tuple[str, int], dict[str, int]] = defaultdict(lambda: dict.fromkeys(_FLOWS, 0))

    def add(self, lot_id: str, hour: int, flow: str, n: int) -> None:
        self.delta[lot_id, hour][flow] += n

    def visit(self, v: _V) -> None:
        for hour, flow in v.was:
            self.add(v.lot_id, hour, flow, -1)
        for hour, flow in v.flows():
            self.add(v.lot_id, hour, flow, 1)

    def write(self, s: Session, engine: Engine) -> None:
        rows = [
            {"lot_id": lot_id, "hour": hour, **counts}
            for (lot_id, hour), counts in sorted(self.delta.items())
            if any(counts.values())
        ]
        if not rows:
            return
        table = FlowRow.__table__
        stmt = _insert(engine)(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["lot_id", "hour"],
            set_={name: table.c[name] + stmt.excluded[name] for name in _FLOWS},
        )
        s.execute(stmt, rows)


class _Book:
    """The candidate visits of some (lot, plate) pairs and the events applied to them, in memory."""

    def __init__(self, stale_h: Callable[[str], float]) -> None:
        self.stale_h = stale_h
        self.by_key: dict[tuple[str, str], list[_V]] = defaultdict(list)
        self.new: list[_V] = []

    def load(self, rows: Iterable[tuple[Any, ...]], when: Callable[[Any], datetime | None] = _maybe) -> None:
        """Rows of ``_VISIT_COLUMNS``; ``when`` reads their times."""
        for id_, lot_id, plate, ts, entry_id, entry_ts, exit_id, exit_ts, status, note, closed_at in rows:
            v = _V(
                lot_id=lot_id, plate=plate, ts=when(ts) or ts, entry_event_id=entry_id, entry_ts=when(entry_ts),
                exit_event_id=exit_id, exit_ts=when(exit_ts), status=status, note=note, closed_at=when(closed_at),
                id=id_,
            )  # fmt: skip
            v.was = v.flows()
            self.by_key[lot_id, plate].append(v)

    def apply(self, ev: _Seen) -> None:
        visits = self.by_key[ev.lot_id, ev.plate]
        if ev.entry:
            self._entry(ev, visits)
        else:
            self._exit(ev, visits)

    def _entry(self, ev: _Seen, visits: list[_V]) -> None:
        later: datetime | None = None
        for v in visits:
            if v.status != OPEN or v.entry_ts is None:
                continue
            if v.entry_ts <= ev.ts:  # entering again: that visit's exit was missed (or is still on its way)
                v.status, v.note, v.closed_at, v.dirty = PRESUMED, "re_entered", ev.ts, True
            elif later is None or v.entry_ts < later:
                later = v.entry_ts
        reach = ev.ts + timedelta(hours=self.stale_h(ev.lot_id))
        orphans = [v for v in visits if v.status == ORPHAN and v.exit_ts and ev.ts <= v.exit_ts <= reach]
        if orphans:  # the exit came first (a backlog drained late): this is its entry
            v = min(orphans, key=lambda o: o.exit_ts or o.ts)
            v.entry_event_id, v.entry_ts, v.ts = ev.id, ev.ts, ev.ts
            v.status, v.note, v.closed_at, v.dirty = CLOSED, "late_entry", v.exit_ts, True
            return
        new = _V(lot_id=ev.lot_id, plate=ev.plate, ts=ev.ts, entry_event_id=ev.id, entry_ts=ev.ts)
        if later is not None:  # an entry older than an open visit's: it left unseen before that one came
            new.status, new.note, new.closed_at = PRESUMED, "re_entered", later
        visits.append(new)
        self.new.append(new)

    def _exit(self, ev: _Seen, visits: list[_V]) -> None:
        def began_before(v: _V) -> bool:
            return v.entry_ts is not None and v.exit_event_id is None and v.entry_ts <= ev.ts

        opened = [v for v in visits if v.status == OPEN and began_before(v)]
        presumed = [
            v
            for v in visits
            if v.status == PRESUMED
            and began_before(v)
            and (v.note == "stale" or (v.closed_at is not None and ev.ts <= v.closed_at))
        ]
        candidates = opened or presumed
        if candidates:
            v = max(candidates, key=lambda c: c.entry_ts or c.ts)
            v.note = "late_exit" if v.status == PRESUMED else None
            v.exit_event_id, v.exit_ts, v.status, v.closed_at, v.dirty = ev.id, ev.ts, CLOSED, ev.ts, True
            return
        orphan = _V(
            lot_id=ev.lot_id,
            plate=ev.plate,
            ts=ev.ts,
            exit_event_id=ev.id,
            exit_ts=ev.ts,
            status=ORPHAN,
        )
        visits.append(orphan)
        self.new.append(orphan)

    def presume_stale(self, now: datetime) -> None:
        """Close open visits older than their lot's ``stale_visit_h`` (as the sweep does)."""
        for visits in self.by_key.values():
            for v in visits:
                if (
                    v.status == OPEN
                    and v.entry_ts
                    and v.entry_ts < now - timedelta(hours=self.stale_h(v.lot_id))
                ):
                    v.status, v.note, v.closed_at, v.dirty = PRESUMED, "stale", now, True

    def write(self, s: Session, flows: _Flows) -> None:
        """One bulk INSERT of the new visits, one executemany UPDATE of the changed ones."""
        when = _sqlite_text if s.connection().dialect.name == "sqlite" else _same
        if self.new:
            _executemany(s, "insert", [(v.lot_id, v.plate, *v.row(when)) for v in self.new])
        changed = [v for visits in self.by_key.values() for v in visits if v.dirty and v.id is not None]
        if changed:
            _executemany(s, "update", [(*v.row(when), v.id) for v in changed])
        for v in self.new:
            flows.visit(v)
        for v in changed:
            flows.visit(v)


_COLUMNS = {"insert": ("lot_id", "plate", *_MUTABLE), "update": (*_MUTABLE, "id")}
_SQL = {
    "insert": "INSERT INTO visits ({}) VALUES ({})".format(
        ", ".join(_COLUMNS["insert"]), ", ".join("?" * len(_COLUMNS["insert"]))
    ),
    "update": "UPDATE visits SET {} WHERE id = ?".format(", ".join(f"{name} = ?" for name in _MUTABLE)),
}


def _executemany(s: Session, what: str, rows: list[tuple[object, ...]]) -> None:
    """INSERT or UPDATE many visits in one statement. On SQLite straight through the DB-API, the
    times already text (``_sqlite_text``): SQLAlchemy's per-row parameter handling cost several times
    SQLite's own work."""
    names = _COLUMNS[what]
    conn = s.connection()
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(_SQL[what], rows)
    elif what == "insert":
        s.execute(_VISITS.insert(), [dict(zip(names, row, strict=True)) for row in rows])
    else:
        stmt = update(_VISITS).where(_VISITS.c.id == bindparam("b_id"))
        stmt = stmt.values({name: bindparam(f"b_{name}") for name in _MUTABLE})
        s.execute(
            stmt, [{f"b_{name}": value for name, value in zip(names, row, strict=True)} for row in rows]
        )


def estimate_from_flows(
    lot_id: str, capacity: int, buckets: dict[int, dict[str, int]], now: datetime, window_h: float
) -> Estimate:
    """The pairing's estimate E = K + B from a lot's hourly flows over 2W (module docstring): each
    exit nothing claims cancels the nearest earlier unclaimed entry, same hour first."""
    start = _hour(now - timedelta(hours=window_h))
    stack: list[list[int]] = []  # [hour, unclaimed entries]
    for hour in sorted(buckets):
        b = buckets[hour]
        entries = max(b["known_in"], 0) + max(b["unread_in"], 0)
        if entries:
            stack.append([hour, entries])
        out = max(b["unread_out"], 0) + max(b["orphan_out"], 0)
        while out and stack:
            take = min(out, stack[-1][1])
            stack[-1][1] -= take
            out -= take
            if not stack[-1][1]:
                stack.pop()
    inside = sum(n for hour, n in stack if hour > start)
    window = [b for hour, b in buckets.items() if hour > start]
    return Estimate(
        lot_id,
        min(inside, capacity),
        sum(max(b["known_in"], 0) for b in window),
        sum(max(b["unread_in"], 0) for b in window),
        sum(max(b["unread_out"], 0) for b in window),
        sum(max(b["orphan_out"], 0) for b in window),
    )


# -- the service -------------------------------------------------------------------------------------
class Visits:
    """Visits, overstay alerts, the occupancy audit, sensors and plate corrections of the configured
    lots. Made on an :class:`EventStore`, it pairs every batch the store records inside the store's
    transaction (``EventStore.add_batch_hook``). ``clock`` gives the time of sweeps, adjustments and
    the start of tracking (tests pass a scripted one)."""

    def __init__(
        self, store: EventStore, cfg: CollectorConfig, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.store = store
        self.engine = store.engine
        self.cfg = cfg
        self.clock = clock
        self.lots: dict[str, LotConfig] = {lot.id: lot for lot in cfg.lots}
        self._next_reconcile = 0.0  # clock seconds
        if cfg.lots:
            rows = [{"lot_id": lot.id, "since": clock().astimezone(UTC)} for lot in cfg.lots]
            with write_session(self.engine) as s:
                s.execute(_insert(self.engine)(TrackingRow).on_conflict_do_nothing(), rows)
        store.add_batch_hook(self._on_batch)

    def _stale_h(self, lot_id: str) -> float:
        lot = self.lots.get(lot_id)
        return lot.stale_visit_h if lot else 72.0

    # -- the hot path (inside EventStore.record_batch) -----------------------------------------------
    def _on_batch(self, s: Session, stored: Sequence[GateEvent]) -> None:
        events = sorted(
            (ev for ev in stored if ev.decision.action is Action.OPEN and ev.lot_id in self.lots),
            key=lambda ev: (ev.ts, ev.id),
        )
        if not events:
            return
        flows = _Flows()
        known = []
        for ev in events:
            if ev.plate is None:
                flow = "unread_in" if ev.direction is Direction.ENTRY else "unread_out"
                flows.add(ev.lot_id, _hour(ev.ts), flow, 1)
            else:
                known.append(ev)
        if known:
            book = _Book(self._stale_h)
            self._load_candidates(s, known, book)
            for ev in known:
                book.apply(_Seen.of(ev))
            book.write(s, flows)
        flows.write(s, self.engine)

    def _load_candidates(self, s: Session, events: list[GateEvent], book: _Book) -> None:
        """One SELECT: the visits of the events' plates in their lots that an entry or exit may
        still pair with (open ones; presumed-exited and orphan exits of the last 2W). On SQLite
        through the DB-API, its times parsed directly (SQLAlchemy's row handling cost more)."""
        lots = sorted({ev.lot_id for ev in events})
        plates = sorted({ev.plate for ev in events if ev.plate})
        reach = 2 * max(self._stale_h(lot) for lot in lots)
        cutoff = min(ev.ts for ev in events) - timedelta(hours=reach)
        conn = s.connection()
        if conn.dialect.name == "sqlite":
            sql = (
                # by plate: left to itself the planner took the status index for the OR and read
                # every open visit of the city on each batch. "+lot_id": not through the index
                # either, which probed it once per (lot, plate) of the two lists, 40,000 times
                # for a batch of 400 events from 100 lots; a plate's visits are few
                f"SELECT {', '.join(_VISIT_COLUMNS)} FROM visits INDEXED BY visits_plate "
                f"WHERE +lot_id IN ({_marks(lots)}) "
                f"AND plate IN ({_marks(plates)}) AND (status = ? OR (status IN (?, ?) AND ts > ?))"
            )
            params = (*lots, *plates, OPEN, PRESUMED, ORPHAN, _sqlite_text(cutoff))
            book.load(conn.exec_driver_sql(sql, params).all(), _sqlite_time)
            return
        t = _VISITS
        query = select(*(t.c[name] for name in _VISIT_COLUMNS)).where(
            t.c.lot_id.in_(lots),
            t.c.plate.in_(plates),
            or_(t.c.status == OPEN, and_(t.c.status.in_([PRESUMED, ORPHAN]), t.c.ts > cutoff)),
        )
        book.load(s.execute(query).all())

    # -- reading ---------------------------------------------------------------------------------
    def visits(
        self,
        plate: str | None = None,
        *,
        lot_id: str | None = None,
        since: datetime | None = None,
        status: Iterable[str] | None = None,
        limit: int = 100,
    ) -> list[Visit]:
        """Visits newest first (by entry, or exit for an orphan), optionally of one plate (its
        text as stored: see :func:`normalise_plate`), one lot, begun at or after ``since``."""
        query = select(VisitRow)
        if plate is not None:
            query = query.where(VisitRow.plate == plate)
        if lot_id is not None:
            query = query.where(VisitRow.lot_id == lot_id)
        if since is not None:
            query = query.where(VisitRow.ts >= since.astimezone(UTC))
        if status is not None:
            query = query.where(VisitRow.status.in_(list(status)))
        query = query.order_by(VisitRow.ts.desc(), VisitRow.id.desc()).limit(max(1, min(limit, 10_000)))
        with Session(self.engine) as s:
            return [_visit(r) for r in s.scalars(query)]

    def unread(self, lot_id: str) -> dict[str, int]:
        """Admitted events without a plate in a lot, over the hours still kept (2W): entries and exits."""
        with Session(self.engine) as s:
            row = s.execute(
                select(func.coalesce(func.sum(FlowRow.unread_in), 0), func.coalesce(func.sum(FlowRow.unread_out), 0))
                .where(FlowRow.lot_id == lot_id)
            ).one()  # fmt: skip
        return {"entries": int(row[0]), "exits": int(row[1])}

    def adjustments(self, lot_id: str | None = None, *, limit: int = 100) -> list[Adjustment]:
        """The occupancy audit, newest first."""
        query = select(AdjustmentRow)
        if lot_id is not None:
            query = query.where(AdjustmentRow.lot_id == lot_id)
        query = query.order_by(AdjustmentRow.id.desc()).limit(max(1, min(limit, 10_000)))
        with Session(self.engine) as s:
            return [_adjustment(r) for r in s.scalars(query)]

    def alerts(
        self, lot_id: str | None = None, *, status: Iterable[str] | None = None
    ) -> list[OverstayAlert]:
        """Overstay alerts, oldest first."""
        query = select(OverstayRow)
        if lot_id is not None:
            query = query.where(OverstayRow.lot_id == lot_id)
        if status is not None:
            query = query.where(OverstayRow.status.in_(list(status)))
        with Session(self.engine) as s:
            return [_alert(r) for r in s.scalars(query.order_by(OverstayRow.id))]

    def corrections(self, event_id: str | None = None) -> list[Correction]:
        """Plate corrections, oldest first."""
        query = select(CorrectionRow)
        if event_id is not None:
            query = query.where(CorrectionRow.event_id == event_id)
        with Session(self.engine) as s:
            return [_correction(r) for r in s.scalars(query.order_by(CorrectionRow.id))]

    def estimate(self, lot_id: str, *, now: datetime | None = None) -> Estimate:
        """The pairing's estimate of a lot's occupancy now (nothing is changed)."""
        lot = self._lot_cfg(lot_id)
        now = (now or self.clock()).astimezone(UTC)
        with Session(self.engine) as s:
            capacity = s.scalar(select(LotRow.capacity).where(LotRow.id == lot_id))
            if capacity is None:
                raise UnknownLot(lot_id)
            buckets = self._buckets(s, [lot_id], now)
        return estimate_from_flows(lot_id, capacity, buckets.get(lot_id, {}), now, lot.stale_visit_h)

    # -- operators ---------------------------------------------------------------------------------
    def recalibrate(
        self, lot_id: str, occupied: int, actor: str, reason: str, *, at: datetime | None = None
    ) -> tuple[Adjustment, LotState]:
        """Set a lot's count to what an operator counted (0..capacity), audited. Automatic
        reconciliation then leaves the lot alone for its ``stale_visit_h``."""
        actor, reason = _text(actor, "actor", 64), _text(reason, "reason", 400)
        if isinstance(occupied, bool) or not isinstance(occupied, int):
            raise TypeError(f"occupied must be a whole number, not {occupied!r}")
        now = (at or self.clock()).astimezone(UTC)
        with write_session(self.engine) as s:
            row = self._lock_lots(s, [lot_id]).get(lot_id)
            if row is None:
                raise UnknownLot(lot_id)
            if not 0 <= occupied <= row.capacity:
                raise OccupancyOutOfRange(lot_id, occupied, row.capacity)
            adjustment = self._adjust(s, row, occupied, "recalibrate", actor, reason, now)
            s.execute(
                _insert(self.engine)(TrackingRow)
                .values(lot_id=lot_id, since=now, recalibrated_at=now)
                .on_conflict_do_update(index_elements=["lot_id"], set_={"recalibrated_at": now})
            )
            state = _lot_state(row)
        logger.warning(
            "lot %s recalibrated by %s: %d -> %d (%s)", lot_id, actor, adjustment.before, occupied, reason
        )
        return adjustment, state

    def correct_plate(
        self, event_id: str, new_plate: str, actor: str, reason: str, *, at: datetime | None = None
    ) -> Correction:
        """Correct a misread: the event's plate becomes ``new_plate`` (the original is kept in the
        corrections), the visits of the old and the new plate in its lot are paired again from
        their events, and the lot is checked as a reconcile would (if it reconciles). The event's
        lot must be one of this configuration's (build it with the collector's config): UnknownLot
        otherwise, before anything changes."""
        actor, reason = _text(actor, "actor", 64), _text(reason, "reason", 400)
        plate = normalise_plate(new_plate)
        now = (at or self.clock()).astimezone(UTC)
        with write_session(self.engine) as s:
            ev = s.execute(
                select(EventRow.lot_id, EventRow.plate, EventRow.ts, EventRow.direction, EventRow.action)
                .where(EventRow.id == event_id)
            ).first()  # fmt: skip
            if ev is None:
                raise EventNotFound(event_id)
            if ev.plate == plate:
                raise InvalidPlate(new_plate, f"event {event_id} already reads {plate}")
            if ev.lot_id not in self.lots:
                raise UnknownLot(ev.lot_id)
            lots = self._lock_lots(s, [ev.lot_id])
            s.execute(update(EventRow).where(EventRow.id == event_id).values(plate=plate))
            row = CorrectionRow(
                event_id=event_id, lot_id=ev.lot_id, old_plate=ev.plate, new_plate=plate, actor=actor,
                reason=reason, ts=now,
            )  # fmt: skip
            s.add(row)
            s.flush()
            adjustment = None
            if ev.action == Action.OPEN.value:
                self._repair(s, ev.lot_id, {p for p in (ev.plate, plate) if p}, now)
                if ev.plate is None:  # it was counted as unread
                    flows = _Flows()
                    flow = "unread_in" if ev.direction == Direction.ENTRY.value else "unread_out"
                    flows.add(ev.lot_id, _hour(_aware(ev.ts)), flow, -1)
                    flows.write(s, self.engine)
                s.execute(
                    update(OverstayRow).where(OverstayRow.entry_event_id == event_id).values(plate=plate)
                )
                lot_row = lots.get(ev.lot_id)
                if lot_row is not None:
                    found = self._reconcile(
                        s, [lot_row], now, why=f"after plate correction of event {event_id}"
                    )
                    adjustment = found[0] if found else None
            lot = _lot_state(lots[ev.lot_id]) if ev.lot_id in lots else None
            correction = Correction(
                row.id, event_id, ev.lot_id, ev.plate, plate, actor, reason, now, adjustment, lot
            )
        logger.warning(
            "event %s plate corrected by %s: %s -> %s (%s)", event_id, actor, ev.plate, plate, reason
        )
        return correction

    def _repair(self, s: Session, lot_id: str, plates: set[str], now: datetime) -> None:
        """Pair the plates' visits in the lot again from their admitted events, in time order."""
        t = _VISITS
        where = and_(t.c.lot_id == lot_id, t.c.plate.in_(sorted(plates)))
        old = _Book(self._stale_h)
        old.load(s.execute(select(*(t.c[name] for name in _VISIT_COLUMNS)).where(where)).all())
        flows = _Flows()
        for visits in old.by_key.values():
            for v in visits:
                for hour, flow in v.was:
                    flows.add(lot_id, hour, flow, -1)
        s.execute(delete(VisitRow).where(where))
        rows = s.execute(
            select(EventRow)
            .where(EventRow.lot_id == lot_id, EventRow.plate.in_(sorted(plates)), EventRow.action == Action.OPEN.value)
            .order_by(EventRow.ts, EventRow.id)
        ).scalars()  # fmt: skip
        book = _Book(self._stale_h)
        for r in rows:
            book.apply(
                _Seen(r.id, r.lot_id, r.plate or "", _aware(r.ts), r.direction == Direction.ENTRY.value)
            )
        book.presume_stale(now)
        book.write(s, flows)
        flows.write(s, self.engine)

    # -- sensors ---------------------------------------------------------------------------------
    def on_sensor_reports(self, reports: Sequence[SpaceSensorReport]) -> dict[str, LotState]:
        """Re-base lots whose occupancy source is ``sensors`` to their bay sensors' count (audited,
        cause ``sensor``) when it differs by more than ``drift_tolerance``. Reports for other lots,
        and reports older than the last one applied, change nothing. Returns the lots re-based."""
        wanted = [
            r for r in reports if (lot := self.lots.get(r.lot_id)) and lot.occupancy_source == "sensors"
        ]
        if not wanted:
            return {}
        newest: dict[str, SpaceSensorReport] = {}
        for r in wanted:
            if r.lot_id not in newest or newest[r.lot_id].ts < r.ts:
                newest[r.lot_id] = r
        now = self.clock().astimezone(UTC)
        changed: dict[str, LotState] = {}
        with write_session(self.engine) as s:
            rows = self._lock_lots(s, list(newest))
            tracking = {
                t.lot_id: t
                for t in s.scalars(select(TrackingRow).where(TrackingRow.lot_id.in_(list(newest))))
            }
            for lot_id, report in sorted(newest.items()):
                row, track = rows.get(lot_id), tracking.get(lot_id)
                if row is None:
                    continue
                if track is None:
                    track = TrackingRow(lot_id=lot_id, since=now)
                    s.add(track)
                elif track.sensor_ts is not None and report.ts <= _aware(track.sensor_ts):
                    continue  # older than (or the same as) the report applied last
                track.sensor_ts = report.ts
                target, how = _sensor_count(report, row.capacity)
                tolerance = self.lots[lot_id].drift_tolerance
                if abs(row.occupied - target) > tolerance:
                    reason = f"{how}; the counter said {row.occupied} (tolerance {tolerance})"
                    self._adjust(s, row, target, "sensor", SYSTEM, reason, now)
                    changed[lot_id] = _lot_state(row)
        return changed

    # -- the sweep (collector's periodic loop) -----------------------------------------------------
    def sweep(self, *, now: datetime | None = None, reconcile: bool | None = None) -> SweepResult:
        """Close stale visits as presumed exited, raise and resolve overstay alerts, drop flows
        older than 2W, and (every ``RECONCILE_EVERY_S``, or when ``reconcile`` is True) re-base
        the lots that reconcile and have drifted. One transaction."""
        now = (now or self.clock()).astimezone(UTC)
        if reconcile is None:
            reconcile = now.timestamp() >= self._next_reconcile
        out = SweepResult()
        if not self.lots:
            return out
        with write_session(self.engine) as s:
            horizon = max(2 * lot.stale_visit_h for lot in self.lots.values())
            s.execute(delete(FlowRow).where(FlowRow.hour < _hour(now - timedelta(hours=horizon)) - 1))
            out.stale = self._presume_stale(s, now)
            alert_lots = self._raise_overstays(s, now, out) | self._resolve_overstays(s, now, out)
            if reconcile:
                self._next_reconcile = now.timestamp() + RECONCILE_EVERY_S
                lots = sorted(
                    lot.id for lot in self.lots.values() if lot.reconcile and lot.occupancy_source == "gates"
                )
                rows = self._lock_lots(s, lots) if lots else {}
                out.adjustments = self._reconcile(s, [rows[k] for k in sorted(rows)], now)
                out.lots = {a.lot_id: _lot_state(rows[a.lot_id]) for a in out.adjustments}
            if alert_lots:
                out.alerts = self._alert_lists(s, sorted(alert_lots), now)
        if out.stale:
            logger.info("%d visits closed as presumed exited (older than stale_visit_h)", out.stale)
        return out

    def _presume_stale(self, s: Session, now: datetime) -> int:
        by_window: dict[float, list[str]] = defaultdict(list)
        for lot in self.lots.values():
            by_window[lot.stale_visit_h].append(lot.id)
        count = 0
        for hours, lot_ids in sorted(by_window.items()):
            result = s.execute(
                update(VisitRow)
                .where(
                    VisitRow.status == OPEN,
                    VisitRow.entry_ts < now - timedelta(hours=hours),
                    VisitRow.lot_id.in_(sorted(lot_ids)),
                )
                .values(status=PRESUMED, note="stale", closed_at=now)
            )
            count += int(getattr(result, "rowcount", 0) or 0)
        return count

    def _raise_overstays(self, s: Session, now: datetime, out: SweepResult) -> set[str]:
        limits = {lot.id: lot.max_stay_h for lot in self.lots.values() if lot.max_stay_h is not None}
        if not limits:
            return set()
        v, a = VisitRow, OverstayRow
        found = s.execute(
            select(v.lot_id, v.plate, v.entry_event_id, v.entry_ts)
            .outerjoin(a, a.entry_event_id == v.entry_event_id)
            .where(
                v.status == OPEN,
                v.lot_id.in_(sorted(limits)),
                v.entry_ts < now - timedelta(hours=min(limits.values())),
                a.id.is_(None),
            )
        ).all()
        rows = [
            {"lot_id": r.lot_id, "plate": r.plate, "entry_event_id": r.entry_event_id,
             "entry_ts": _aware(r.entry_ts), "max_stay_h": limits[r.lot_id], "raised_at": now,
             "status": "open", "resolved_at": None}
            for r in found
            if r.entry_event_id and _aware(r.entry_ts) < now - timedelta(hours=limits[r.lot_id])
        ]  # fmt: skip
        if not rows:
            return set()
        # ON CONFLICT DO NOTHING: a second collector sweeping at the same moment raises nothing twice
        stmt = (
            _insert(self.engine)(OverstayRow).on_conflict_do_nothing().returning(OverstayRow.entry_event_id)
        )
        new_ids = sorted(set(s.execute(stmt, rows).scalars().all()))
        if not new_ids:
            return set()
        raised = [
            _alert(r) for r in s.scalars(select(OverstayRow).where(OverstayRow.entry_event_id.in_(new_ids)))
        ]
        for alert in raised:
            logger.warning(
                "overstay: %s in lot %s since %s (max %g h)",
                alert.plate, alert.lot_id, alert.entry_ts.isoformat(timespec="seconds"), alert.max_stay_h,
            )  # fmt: skip
        out.raised += raised
        return {alert.lot_id for alert in raised}

    def _resolve_overstays(self, s: Session, now: datetime, out: SweepResult) -> set[str]:
        """Open alerts whose visit is no longer open (exit seen, presumed exited, re-paired)."""
        a, v = OverstayRow, VisitRow
        still_open = exists().where(
            v.lot_id == a.lot_id, v.plate == a.plate, v.entry_event_id == a.entry_event_id, v.status == OPEN
        )
        done = s.execute(select(a.id, a.lot_id).where(a.status == "open", ~still_open)).all()
        if not done:
            return set()
        s.execute(update(a).where(a.id.in_([r.id for r in done])).values(status="resolved", resolved_at=now))
        out.resolved += len(done)
        return {r.lot_id for r in done}

    def _alert_lists(self, s: Session, lot_ids: list[str], now: datetime) -> list[LotAlerts]:
        rows = s.scalars(
            select(OverstayRow)
            .where(OverstayRow.lot_id.in_(lot_ids), OverstayRow.status == "open")
            .order_by(OverstayRow.entry_ts, OverstayRow.id)
        ).all()
        per_lot: dict[str, list[OverstayRow]] = {lot_id: [] for lot_id in lot_ids}
        for row in rows:
            per_lot[row.lot_id].append(row)
        return [
            LotAlerts(
                lot_id=lot_id,
                ts=now,
                overstays=[
                    OverstayNotice(plate=r.plate, since=_aware(r.entry_ts), raised_at=_aware(r.raised_at))
                    for r in alerts[:ALERTS_SHOWN]
                ],
                total=len(alerts),
            )
            for lot_id, alerts in per_lot.items()
        ]

    def alert_lists(self, lot_ids: Iterable[str] | None = None) -> list[LotAlerts]:
        """The retained overstay lists of lots with ``max_stay_h`` (or of ``lot_ids``), e.g. on connect."""
        ids = (
            sorted(lot_ids)
            if lot_ids is not None
            else sorted(lot.id for lot in self.lots.values() if lot.max_stay_h is not None)
        )
        if not ids:
            return []
        with Session(self.engine) as s:
            return self._alert_lists(s, ids, self.clock().astimezone(UTC))

    # -- reconciliation ----------------------------------------------------------------------------
    def _buckets(self, s: Session, lot_ids: list[str], now: datetime) -> dict[str, dict[int, dict[str, int]]]:
        horizon = max(2 * self._stale_h(lot_id) for lot_id in lot_ids)
        rows = s.execute(
            select(FlowRow).where(
                FlowRow.lot_id.in_(lot_ids), FlowRow.hour >= _hour(now - timedelta(hours=horizon))
            )
        ).scalars()
        out: dict[str, dict[int, dict[str, int]]] = defaultdict(dict)
        for r in rows:
            if r.hour >= _hour(now - timedelta(hours=2 * self._stale_h(r.lot_id))):
                out[r.lot_id][r.hour] = {name: getattr(r, name) for name in _FLOWS}
        return out

    def _reconcile(self, s: Session, rows: list[LotRow], now: datetime, why: str = "") -> list[Adjustment]:
        """Re-base the given (locked) lots that may reconcile and have drifted (module docstring)."""
        eligible = []
        tracking = {
            t.lot_id: t
            for t in s.scalars(select(TrackingRow).where(TrackingRow.lot_id.in_([r.id for r in rows])))
        }
        for row in rows:
            lot, track = self.lots.get(row.id), tracking.get(row.id)
            if lot is None or track is None or not lot.reconcile or lot.occupancy_source != "gates":
                continue
            window = timedelta(hours=lot.stale_visit_h)
            if _aware(track.since) > now - 2 * window:
                continue  # not tracked long enough: cars parked before would be counted out
            if track.recalibrated_at is not None and _aware(track.recalibrated_at) > now - window:
                continue  # an operator's count is newer than the estimate's window
            eligible.append(row)
        if not eligible:
            return []
        buckets = self._buckets(s, [r.id for r in eligible], now)
        out = []
        for row in eligible:
            lot = self.lots[row.id]
            e = estimate_from_flows(row.id, row.capacity, buckets.get(row.id, {}), now, lot.stale_visit_h)
            if abs(row.occupied - e.value) <= lot.drift_tolerance:
                continue
            reason = (
                f"plate pairing over the last {lot.stale_visit_h:g} h: {e.open_visits} open visits "
                f"{e.balance:+d} unread and unclaimed ({e.unread_in} entries and {e.unread_out} exits without "
                f"a plate, {e.orphan_out} orphan exits; nearest earlier entry first) = {e.value}; the counter "
                f"said {row.occupied} (off by {row.occupied - e.value:+d}, tolerance {lot.drift_tolerance})"
            )
            if why:
                reason = f"{why}: {reason}"
            out.append(self._adjust(s, row, e.value, "reconcile", SYSTEM, reason, now))
            logger.warning("lot %s re-based %d -> %d: %s", row.id, out[-1].before, e.value, reason)
        return out

    # -- shared ----------------------------------------------------------------------------------
    def _lot_cfg(self, lot_id: str) -> LotConfig:
        try:
            return self.lots[lot_id]
        except KeyError:
            raise UnknownLot(lot_id) from None

    @staticmethod
    def _lock_lots(s: Session, lot_ids: Sequence[str]) -> dict[str, LotRow]:
        """The lots' rows, locked for this transaction (PostgreSQL: row locks in id order, as the
        store takes them; SQLite: ``write_session`` holds the database's write lock already)."""
        ids = sorted(set(lot_ids))
        if not ids:
            return {}
        query = select(LotRow).where(LotRow.id.in_(ids)).order_by(LotRow.id).with_for_update()
        return {row.id: row for row in s.scalars(query)}

    @staticmethod
    def _adjust(
        s: Session, row: LotRow, after: int, cause: str, actor: str, reason: str, now: datetime
    ) -> Adjustment:
        audit = AdjustmentRow(
            lot_id=row.id,
            before=row.occupied,
            after=after,
            cause=cause,
            actor=actor,
            reason=reason[:400],
            ts=now,
        )
        rebase(row, after, now)
        s.add(audit)
        s.flush()
        return _adjustment(audit)


def _sensor_count(report: SpaceSensorReport, capacity: int) -> tuple[int, str]:
    """The lot's count from a sensor report, and how it was made (for the audit)."""
    if report.total_sensed >= capacity:
        count = min(report.occupied, capacity)
        return count, f"bay sensors: {report.occupied} of {report.total_sensed} occupied"
    scaled = min(round(report.occupied * capacity / report.total_sensed), capacity)
    return scaled, (
        f"bay sensors: {report.occupied} of {report.total_sensed} sensed spaces occupied, "
        f"scaled to the lot's {capacity} spaces: {scaled}"
    )


# -- refresh requests (for tools that change the database outside the collector) ---------------------
def request_refresh(
    settings: MqttSettings,
    lot_ids: Iterable[str] = (),
    screen_ids: Iterable[str] = (),
    *,
    timeout: float = 5.0,
) -> bool:
    """Ask every collector (``collectors/refresh``, QoS 1, not retained) to re-publish these lots
    and screens from the database. True once the broker has the request; False if it could not be
    reached within ``timeout`` (the collectors' periodic re-publish catches up within ``republish_s``)."""
    from parkgate.mqtt import make_client

    message = CollectorRefresh(lot_ids=sorted(set(lot_ids)), screen_ids=sorted(set(screen_ids)), ts=utc_now())
    try:
        client = make_client(settings, f"refresh-{uuid.uuid4().hex[:12]}")
        client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    except (OSError, ConfigError) as err:  # no broker, or its password variable is not set
        logger.warning(
            "could not reach the broker at %s:%d to ask for a refresh: %s", settings.host, settings.port, err
        )
        return False
    client.loop_start()
    try:
        info = client.publish(Topics(settings.topic_root).collectors_refresh(), encode(message), qos=1)
        info.wait_for_publish(timeout)
        return info.is_published()
    except (RuntimeError, ValueError) as err:
        logger.warning("refresh request not confirmed by the broker: %s", err)
        return False
    finally:
        client.disconnect()
        client.loop_stop()
