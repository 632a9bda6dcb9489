"""Occupancy history per lot, and the free-space forecast for drivers made from it.

Samples. The collector writes each lot's occupied/free at most once per ``history_interval_min``
slot of the clock (10:00, 10:05, ... for 5 minutes), stamped with the slot's start, all lots in
one bulk insert per tick. The key is (lot, slot), inserted with ON CONFLICT DO NOTHING, so a
restart or a second collector never writes a slot twice. A lot whose data is stale is not
sampled: a count nobody confirms would teach the forecast the wrong habits.

Forecast of free spaces ``h`` minutes ahead (30 and 60 for the API), from how the lot's occupancy
usually changes from this time of day to ``h`` later:

1. ``weekly``: the same time on the same weekday of the past ``weeks`` weeks (default 4). The
   mean change of occupancy from then to then + h, added to the current occupancy, clamped to
   0..capacity. Needs ``min_weekly`` (2) weeks with both values.
2. ``daily``: the same, over the same time of the past ``days`` days (default 14), any weekday.
   Needs ``min_daily`` (3) days.
3. ``none``: no change, the current count.

A change, not a level, is averaged: the lot's level today may differ from last week's (an event,
a closed floor), but the rise of a morning peak repeats. A value between samples is interpolated
when they are at most ``max_gap`` apart. Changes are of *occupied* spaces (free = capacity -
occupied), so a changed capacity does not read as cars arriving. Each forecast says which method
it used and from how many samples; ``bench/forecast.py`` measures it against "no change".
"""

from __future__ import annotations

import bisect
import logging
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import DateTime, Integer, String, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from cloud.config import LotConfig
from cloud.events_store import Base, LotState

logger = logging.getLogger(__name__)

Method = Literal["weekly", "daily", "none"]
HORIZONS_MIN = (30, 60)
WEEK = timedelta(days=7)
DAY = timedelta(days=1)


# -- table (on the event store's Base; made by cloud/migrations, revision 0004) -------------------------
class OccupancySampleRow(Base):
    """A lot's count at the start of one sampling slot."""

    __tablename__ = "occupancy_samples"

    lot_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    occupied: Mapped[int] = mapped_column(Integer)
    free: Mapped[int] = mapped_column(Integer)
    capacity: Mapped[int] = mapped_column(Integer)


@dataclass(frozen=True)
class Sample:
    ts: datetime
    occupied: int


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def slot_start(now: datetime, minutes: int) -> datetime:
    """Start of the ``minutes``-long slot of the clock (UTC epoch multiples) that holds ``now``."""
    step = minutes * 60
    return datetime.fromtimestamp(int(now.timestamp()) // step * step, UTC)


class HistorySampler:
    """Decides which lots are due a sample and writes them, one bulk insert per call."""

    def __init__(self, engine: Engine, lots: Iterable[LotConfig]) -> None:
        self.engine = engine
        self.intervals = {lot.id: lot.history_interval_min for lot in lots}
        self._last: dict[str, datetime] | None = None  # newest slot done per lot (read once)

    def _last_slots(self) -> dict[str, datetime]:
        if self._last is None:
            query = select(OccupancySampleRow.lot_id, func.max(OccupancySampleRow.ts)).group_by(
                OccupancySampleRow.lot_id
            )
            with Session(self.engine) as s:
                self._last = {lot_id: _aware(ts) for lot_id, ts in s.execute(query)}
        return self._last

    def due(self, now: datetime) -> list[str]:
        """Lots whose current slot has no sample yet."""
        last = self._last_slots()
        return [
            lot_id
            for lot_id, minutes in self.intervals.items()
            if last.get(lot_id) is None or last[lot_id] < slot_start(now, minutes)
        ]

    def record(self, lots: Mapping[str, LotState], stale: Callable[[str], bool], now: datetime) -> int:
        """Sample the due lots among ``lots`` that are not stale; returns how many were written. A
        stale lot's slot is passed over (not sampled, not asked again until the next slot)."""
        due = [
            (lot_id, slot_start(now, self.intervals[lot_id])) for lot_id in self.due(now) if lot_id in lots
        ]
        rows = [
            {
                "lot_id": lot_id,
                "ts": slot,
                "occupied": lots[lot_id].occupied,
                "free": lots[lot_id].free,
                "capacity": lots[lot_id].capacity,
            }
            for lot_id, slot in due
            if not stale(lot_id)
        ]
        if rows:
            insert = sqlite_insert if self.engine.dialect.name == "sqlite" else pg_insert
            with Session(self.engine) as s, s.begin():
                s.execute(insert(OccupancySampleRow).on_conflict_do_nothing(), rows)
        last = self._last_slots()
        for lot_id, slot in due:
            last[lot_id] = slot
        return len(rows)


def write_samples(engine: Engine, lot_id: str, samples: Iterable[tuple[datetime, int, int]]) -> int:
    """Bulk-write (ts, occupied, capacity) samples of one lot as they are (tools, tests, imports)."""
    rows = [
        {"lot_id": lot_id, "ts": ts, "occupied": occ, "free": max(cap - occ, 0), "capacity": cap}
        for ts, occ, cap in samples
    ]
    if rows:
        insert = sqlite_insert if engine.dialect.name == "sqlite" else pg_insert
        with Session(engine) as s, s.begin():
            s.execute(insert(OccupancySampleRow).on_conflict_do_nothing(), rows)
    return len(rows)


def load_samples(engine: Engine, lot_id: str, since: datetime, until: datetime) -> list[Sample]:
    """The lot's samples in [since, until], oldest first."""
    query = (
        select(OccupancySampleRow.ts, OccupancySampleRow.occupied)
        .where(
            OccupancySampleRow.lot_id == lot_id,
            OccupancySampleRow.ts >= since,
            OccupancySampleRow.ts <= until,
        )
        .order_by(OccupancySampleRow.ts)
    )
    with Session(engine) as s:
        return [Sample(_aware(ts), occ) for ts, occ in s.execute(query)]


# -- the forecast ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Forecast:
    minutes: int
    free: int
    occupied: int
    method: Method
    samples: int  # past days or weeks whose change was averaged (0 for "none")
    change: float  # mean change of occupied spaces applied


class Series:
    """Samples of one lot, sorted, read at any time by linear interpolation."""

    def __init__(self, samples: Sequence[Sample], max_gap: timedelta = timedelta(minutes=20)) -> None:
        ordered = sorted(samples, key=lambda x: x.ts)
        self.times = [x.ts.timestamp() for x in ordered]
        self.values = [x.occupied for x in ordered]
        self.max_gap = max_gap.total_seconds()

    def at(self, when: datetime) -> float | None:
        """Occupancy at ``when``: a sample there, or between two at most ``max_gap`` apart."""
        t = when.timestamp()
        i = bisect.bisect_left(self.times, t)
        if i < len(self.times) and self.times[i] == t:
            return float(self.values[i])
        if i == 0 or i == len(self.times):
            return None
        t0, t1 = self.times[i - 1], self.times[i]
        if t1 - t0 > self.max_gap:
            return None
        v0, v1 = self.values[i - 1], self.values[i]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    def changes(self, now: datetime, horizon: timedelta, step: timedelta, count: int) -> list[float]:
        """Change from ``now - k*step`` to ``now - k*step + horizon``, k = 1..count, where known."""
        out = []
        for k in range(1, count + 1):
            start = self.at(now - k * step)
            end = self.at(now - k * step + horizon)
            if start is not None and end is not None:
                out.append(end - start)
        return out


def forecast(
    series: Series,
    now: datetime,
    occupied: int,
    capacity: int,
    minutes: int,
    *,
    weeks: int = 4,
    days: int = 14,
    min_weekly: int = 2,
    min_daily: int = 3,
    methods: Sequence[Method] = ("weekly", "daily"),
) -> Forecast:
    """Free spaces ``minutes`` after ``now`` (see the module docstring); ``methods`` limits which
    profiles are tried, in order (the benchmark compares them)."""
    horizon = timedelta(minutes=minutes)
    for method in methods:
        if method == "weekly":
            changes, needed = series.changes(now, horizon, WEEK, weeks), min_weekly
        elif method == "daily":
            changes, needed = series.changes(now, horizon, DAY, days), min_daily
        else:
            continue
        if len(changes) >= needed:
            change = statistics.fmean(changes)
            ahead = min(max(round(occupied + change), 0), capacity)
            return Forecast(minutes, capacity - ahead, ahead, method, len(changes), round(change, 2))
    held = min(max(occupied, 0), capacity)
    return Forecast(minutes, capacity - held, held, "none", 0, 0.0)


def forecast_lot(
    engine: Engine,
    lot_id: str,
    now: datetime,
    occupied: int,
    capacity: int,
    horizons: Sequence[int] = HORIZONS_MIN,
    *,
    weeks: int = 4,
    days: int = 14,
) -> list[Forecast]:
    """Forecasts for each horizon from the lot's stored history (one query)."""
    reach = max(weeks * WEEK, days * DAY)
    samples = load_samples(engine, lot_id, now - reach - timedelta(hours=1), now)
    series = Series(samples)
    return [
        forecast(series, now, occupied, capacity, minutes, weeks=weeks, days=days) for minutes in horizons
    ]
