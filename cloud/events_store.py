"""The event store (SQLAlchemy 2): every event kept once by its id, and occupancy per lot.

An event and the occupancy change it causes are written in one transaction, so a crash never
counts an event without storing it, nor the reverse; a second delivery of an event is detected
by its primary key and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, Float, Integer, String, create_engine, event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from cloud.config import LotConfig
from protocol import Action, Direction, GateEvent

logger = logging.getLogger(__name__)


class Base(DeclarativeBase):
    pass


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    gate_id: Mapped[str] = mapped_column(String(64), index=True)
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
    cur.close()


def open_engine(url: str) -> Engine:
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class EventStore:
    def __init__(self, url: str) -> None:
        self.engine = open_engine(url)
        Base.metadata.create_all(self.engine)

    def sync_lots(self, lots: Iterable[LotConfig]) -> None:
        """Create configured lots, update their names and capacities; keep their occupancy."""
        with Session(self.engine) as s, s.begin():
            for lot in lots:
                row = s.get(LotRow, lot.id)
                if row is None:
                    s.add(LotRow(id=lot.id, name=lot.name, capacity=lot.capacity, occupied=0))
                else:
                    row.name, row.capacity = lot.name, lot.capacity
                    row.occupied = min(row.occupied, lot.capacity)

    def record(self, ev: GateEvent) -> tuple[bool, LotState | None]:
        """Store ``ev`` once. Returns (stored, lot after the change); stored is False for a repeat."""
        with Session(self.engine) as s:
            try:
                with s.begin():
                    s.add(_row(ev))
                    s.flush()  # the primary key decides: a repeat fails here
                    lot = s.get(LotRow, ev.lot_id, with_for_update=True)
                    if lot is not None and ev.decision.action is Action.OPEN:
                        step = 1 if ev.direction is Direction.ENTRY else -1
                        lot.occupied = min(max(lot.occupied + step, 0), lot.capacity)
                    if lot is not None and (lot.last_event_ts is None or _aware(lot.last_event_ts) < ev.ts):
                        lot.last_event_ts = ev.ts
                    state = _state(lot) if lot is not None else None
            except IntegrityError:
                return False, None
        if state is None:
            logger.warning("event %s is for unknown lot %s: stored, not counted", ev.id, ev.lot_id)
        return True, state

    def lots(self) -> list[LotState]:
        with Session(self.engine) as s:
            return [_state(r) for r in s.scalars(select(LotRow).order_by(LotRow.id))]

    def lot(self, lot_id: str) -> LotState | None:
        with Session(self.engine) as s:
            row = s.get(LotRow, lot_id)
            return _state(row) if row else None

    def count_events(self, event_id: str | None = None) -> int:
        with Session(self.engine) as s:
            q = select(func.count()).select_from(EventRow)
            if event_id is not None:
                q = q.where(EventRow.id == event_id)
            return int(s.scalar(q) or 0)

    def close(self) -> None:
        self.engine.dispose()


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _row(ev: GateEvent) -> EventRow:
    return EventRow(
        id=ev.id,
        seq=ev.seq,
        gate_id=ev.gate_id,
        lot_id=ev.lot_id,
        ts=ev.ts,
        direction=ev.direction.value,
        plate=ev.plate,
        confidence=ev.confidence,
        action=ev.decision.action.value,
        reason=ev.decision.reason.value,
        received_at=datetime.now(UTC),
    )
