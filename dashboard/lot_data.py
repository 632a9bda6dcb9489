"""What the operator pages for lots, gates and vehicles read, and how they judge it.

From the collector's database (read only; the collector owns the schema):

- **Occupancy over time**: ``occupancy_samples`` (cloud/history.py: one sample per lot and slot of
  ``history_interval_min``, none while the lot's data is stale). :func:`occupancy_series` puts
  them into fixed buckets aligned to the clock — the mean of the samples in each, or None where
  there were none, so a chart shows a gap where the lot was silent instead of drawing a line
  across it.
- **Entries and exits per hour**: counted from the ``events`` table itself (admitted entries,
  admitted exits, and refused vehicles apart). Not from cloud/visits.py's ``visit_flows``: those
  hold what the plate pairing still needs (entries with no exit seen yet, unread and orphan
  events), which is not the number of cars that came and went.
- **Recent vehicles** (newest first) and their **plate crops** (``snapshots``).

From the live state: **gate health**, each heartbeat judged against the warning limits below, and
the overview's **trend** sparklines (the last hours of history, read at most once a minute per
lot whoever asks).
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from cloud.events_store import EventRow, LotRow, SnapshotRow
from cloud.history import OccupancySampleRow
from dashboard.live import FeedEvent
from protocol import GateStatus

# Gate warnings (the gate health page highlights them; README "Operators and languages").
HEARTBEAT_LATE_S = 90.0  # three missed heartbeats at the edge's default heartbeat_s of 30 s
BACKLOG_AGE_S = 60.0  # the oldest event not yet confirmed stored is older than this
DISK_LOW_MB = 500.0  # the outbox and snapshots (snapshots.max_mb = 500 by default) need room
CPU_HOT_C = 80.0  # a Raspberry Pi starts throttling at 80-85 °C
BARRIER_FAULTS = ("FAULT", "EMERGENCY_OPEN")
WARNINGS = (
    "offline", "heartbeat_late", "backlog_old", "camera_down", "disk_low", "hot", "barrier_fault", "dropped",
)  # fmt: skip

TREND_SPAN = timedelta(hours=6)
TREND_STEP = timedelta(minutes=15)
TREND_TTL_S = 60.0
DEFAULT_INTERVAL_MIN = 5  # cloud.config.LotConfig.history_interval_min's default
IN_CHUNK = 500  # ids per IN (...) list


def _aware(ts: datetime) -> datetime:
    """SQLite hands datetimes back naive; every stored time is UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _floor(ts: datetime, step: timedelta) -> datetime:
    seconds = step.total_seconds()
    return datetime.fromtimestamp(math.floor(ts.timestamp() / seconds) * seconds, UTC)


# -- occupancy over time -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bucket:
    """One stretch of a lot's occupancy history: the mean of its samples, or None without any."""

    ts: datetime  # start
    occupied: float | None
    free: float | None
    capacity: int | None
    samples: int

    @property
    def pct(self) -> float | None:
        if self.occupied is None or not self.capacity:
            return None
        return min(max(100.0 * self.occupied / self.capacity, 0.0), 100.0)

    def to_json(self) -> dict[str, Any]:
        pct = self.pct
        return {
            "ts": self.ts.isoformat(), "occupied": self.occupied, "free": self.free, "capacity": self.capacity,
            "pct": None if pct is None else round(pct, 1), "samples": self.samples,
        }  # fmt: skip


def bucket_starts(now: datetime, span: timedelta, step: timedelta) -> list[datetime]:
    """The starts of the ``span / step`` buckets that end with the one holding ``now``."""
    count = max(1, round(span / step))
    last = _floor(now, step)
    return [last - (count - 1 - i) * step for i in range(count)]


def occupancy_series(
    engine: Engine, lot_id: str, now: datetime, span: timedelta, step: timedelta
) -> list[Bucket]:
    """The lot's occupancy in buckets of ``step`` over the ``span`` up to ``now`` (see the module)."""
    starts = bucket_starts(now, span, step)
    query = (
        select(
            OccupancySampleRow.ts, OccupancySampleRow.occupied, OccupancySampleRow.free,
            OccupancySampleRow.capacity,
        )
        .where(
            OccupancySampleRow.lot_id == lot_id,
            OccupancySampleRow.ts >= starts[0],
            OccupancySampleRow.ts < starts[-1] + step,
        )
        .order_by(OccupancySampleRow.ts)
    )  # fmt: skip
    with Session(engine) as s:
        rows = [(_aware(ts), occ, free, cap) for ts, occ, free, cap in s.execute(query)]
    return _buckets(starts, step, rows)


def _buckets(
    starts: Sequence[datetime], step: timedelta, rows: Iterable[tuple[datetime, int, int, int]]
) -> list[Bucket]:
    first, seconds = starts[0].timestamp(), step.total_seconds()
    sums: list[list[int]] = [[0, 0, 0, 0] for _ in starts]  # samples, occupied, free, last capacity
    for ts, occupied, free, capacity in rows:
        i = int((ts.timestamp() - first) // seconds)
        if 0 <= i < len(starts):
            acc = sums[i]
            acc[0] += 1
            acc[1] += occupied
            acc[2] += free
            acc[3] = capacity
    return [
        Bucket(start, round(occ / n, 1), round(free / n, 1), cap, n)
        if n
        else Bucket(start, None, None, None, 0)
        for start, (n, occ, free, cap) in zip(starts, sums, strict=True)
    ]


# -- entries and exits per hour ------------------------------------------------------------------------
@dataclass(frozen=True)
class FlowHour:
    hour: datetime  # start
    entries: int  # admitted entries
    exits: int  # admitted exits
    refused: int  # vehicles refused, either way

    def to_json(self) -> dict[str, Any]:
        return {
            "hour": self.hour.isoformat(),
            "entries": self.entries,
            "exits": self.exits,
            "refused": self.refused,
        }


def hourly_flows(engine: Engine, lot_id: str, now: datetime, hours: int = 24) -> list[FlowHour]:
    """Vehicles per clock hour over the last ``hours`` (the current hour last), from the events."""
    step = timedelta(hours=1)
    starts = bucket_starts(now, hours * step, step)
    query = select(EventRow.ts, EventRow.direction, EventRow.action).where(
        EventRow.lot_id == lot_id, EventRow.ts >= starts[0], EventRow.ts < starts[-1] + step
    )
    counts = [[0, 0, 0] for _ in starts]
    first = starts[0].timestamp()
    with Session(engine) as s:
        for ts, direction, action in s.execute(query):
            i = int((_aware(ts).timestamp() - first) // 3600)
            if not 0 <= i < len(starts):
                continue
            if action != "open":
                counts[i][2] += 1
            elif direction == "entry":
                counts[i][0] += 1
            else:
                counts[i][1] += 1
    return [FlowHour(start, *c) for start, c in zip(starts, counts, strict=True)]


# -- recent vehicles and their crops ---------------------------------------------------------------------
def stored_events(engine: Engine, lots: frozenset[str] | None, limit: int) -> list[FeedEvent]:
    """The newest ``limit`` stored events of ``lots`` (None: every lot), newest first."""
    if lots is not None and not lots:
        return []
    query = select(EventRow, SnapshotRow.event_id).outerjoin(SnapshotRow, SnapshotRow.event_id == EventRow.id)
    if lots is not None:
        query = query.where(EventRow.lot_id.in_(sorted(lots)))
    query = query.order_by(EventRow.ts.desc(), EventRow.id.desc()).limit(limit)
    with Session(engine) as s:
        return [_feed_event(row, crop is not None) for row, crop in s.execute(query)]


def _feed_event(r: EventRow, has_crop: bool) -> FeedEvent:
    """A stored event as the live feed shows it (``seq`` 0: it did not arrive through this dashboard)."""
    return FeedEvent(
        0, r.id, _aware(r.ts), r.lot_id, r.gate_id, r.direction, r.plate, r.confidence, r.action, r.reason,
        has_crop,
    )  # fmt: skip


def merge_events(limit: int, *sources: Iterable[FeedEvent]) -> list[FeedEvent]:
    """The newest ``limit`` of several lists of events, each event once (by id), newest first.
    Where both have it, the live feed's copy wins (it knows its arrival order)."""
    seen: dict[str, FeedEvent] = {}
    for source in sources:
        for event in source:
            kept = seen.get(event.id)
            if kept is None or event.seq > kept.seq:
                seen[event.id] = event
    return heapq.nlargest(limit, seen.values(), key=lambda e: (e.ts, e.seq, e.id))


def stored_crop(engine: Engine, event_id: str) -> tuple[str, bytes] | None:
    """(lot id, JPEG) of a stored event's plate crop; None if the event or its crop is unknown."""
    query = select(EventRow.lot_id, SnapshotRow.jpeg).join(SnapshotRow, SnapshotRow.event_id == EventRow.id)
    with Session(engine) as s:
        row = s.execute(query.where(EventRow.id == event_id)).first()
    return (row[0], bytes(row[1])) if row else None


def stored_lots(engine: Engine, ids: Iterable[str] | None = None) -> dict[str, tuple[str, int]]:
    """Lots the collector has (id -> (name, capacity)): every one, or those of ``ids``."""
    out: dict[str, tuple[str, int]] = {}
    with Session(engine) as s:
        if ids is None:
            for lot_id, name, capacity in s.execute(select(LotRow.id, LotRow.name, LotRow.capacity)):
                out[lot_id] = (name, capacity)
            return out
        wanted = sorted(set(ids))
        for i in range(0, len(wanted), IN_CHUNK):
            query = select(LotRow.id, LotRow.name, LotRow.capacity).where(
                LotRow.id.in_(wanted[i : i + IN_CHUNK])
            )
            for lot_id, name, capacity in s.execute(query):
                out[lot_id] = (name, capacity)
    return out


# -- gate health ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateHealth:
    status: GateStatus
    age_s: float  # since its last heartbeat (or its last will)
    warnings: tuple[str, ...]  # of WARNINGS, in that order

    @property
    def online(self) -> bool:
        return self.status.state == "online"

    def to_json(self) -> dict[str, Any]:
        return {
            **self.status.model_dump(mode="json"), "heartbeat_age_s": round(self.age_s, 1),
            "warnings": list(self.warnings),
        }  # fmt: skip


def gate_warnings(status: GateStatus, age_s: float) -> tuple[str, ...]:
    """What is wrong with a gate, judged from its last heartbeat ``age_s`` seconds old."""
    if status.state == "offline":
        return ("offline",)
    found = {
        "heartbeat_late": age_s > HEARTBEAT_LATE_S,
        "backlog_old": (status.backlog_age_s or 0.0) > BACKLOG_AGE_S,
        "camera_down": status.camera == "down",
        "disk_low": status.disk_free_mb is not None and status.disk_free_mb < DISK_LOW_MB,
        "hot": status.cpu_temp_c is not None and status.cpu_temp_c >= CPU_HOT_C,
        "barrier_fault": (status.barrier or "").upper() in BARRIER_FAULTS,
        "dropped": bool(status.dropped),
    }
    return tuple(name for name in WARNINGS if found.get(name))


def gate_health(gates: Iterable[GateStatus], keep: Callable[[str], bool], now: datetime) -> list[GateHealth]:
    """The gates whose lot passes ``keep``, judged at ``now``: those with warnings first, then by
    lot and gate."""
    found = []
    for status in gates:
        if keep(status.lot_id):
            age = max((now - status.ts).total_seconds(), 0.0)
            found.append(GateHealth(status, age, gate_warnings(status, age)))
    return sorted(found, key=lambda g: (not g.warnings, g.status.lot_id, g.status.gate_id))


WARNING_LIMITS = {
    "heartbeat_late_s": HEARTBEAT_LATE_S, "backlog_age_s": BACKLOG_AGE_S, "disk_low_mb": DISK_LOW_MB,
    "cpu_hot_c": CPU_HOT_C,
}  # fmt: skip


# -- trend sparklines -----------------------------------------------------------------------------------
SPARK_W, SPARK_H = 120.0, 28.0


@dataclass(frozen=True)
class Trend:
    """A lot's occupancy (percent) over the last hours, and its sparkline as SVG coordinates."""

    pct: tuple[float | None, ...]
    lines: tuple[str, ...]  # polyline ``points`` per unbroken stretch of two or more buckets
    dots: tuple[tuple[float, float], ...]  # buckets with no neighbour: drawn as dots

    @property
    def first(self) -> float | None:
        return next((p for p in self.pct if p is not None), None)

    @property
    def last(self) -> float | None:
        return next((p for p in reversed(self.pct) if p is not None), None)

    @property
    def empty(self) -> bool:
        return all(p is None for p in self.pct)


def sparkline(pct: Sequence[float | None]) -> Trend:
    """SVG coordinates (a ``SPARK_W`` x ``SPARK_H`` box, 0 % at the bottom) of a percent series;
    a gap (None) breaks the line."""
    n = len(pct)
    dx = SPARK_W / (n - 1) if n > 1 else 0.0
    lines: list[str] = []
    dots: list[tuple[float, float]] = []
    run: list[tuple[float, float]] = []
    for i, value in enumerate([*pct, None]):
        if value is not None:
            run.append((round(i * dx, 1), round(SPARK_H - 2 - (SPARK_H - 4) * value / 100, 1)))
            continue
        if len(run) == 1:
            dots.append(run[0])
        elif run:
            lines.append(" ".join(f"{x:g},{y:g}" for x, y in run))
        run = []
    return Trend(tuple(pct), tuple(lines), tuple(dots))


class Trends:
    """The overview's sparklines: each lot's history of the last :data:`TREND_SPAN`, read from the
    database at most once per :data:`TREND_TTL_S` per lot (samples come every few minutes), in one
    query for all the lots that are due."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[float, Trend]] = {}

    def get(self, lot_ids: Iterable[str], now: datetime) -> dict[str, Trend]:
        wanted = sorted(set(lot_ids))
        clock = time.monotonic()
        with self._lock:
            due = [x for x in wanted if x not in self._kept or self._kept[x][0] <= clock]
        if due:
            made = self._read(due, now)
            with self._lock:
                for lot_id, trend in made.items():
                    self._kept[lot_id] = (clock + TREND_TTL_S, trend)
        with self._lock:
            return {x: self._kept[x][1] for x in wanted if x in self._kept}

    def _read(self, lot_ids: list[str], now: datetime) -> dict[str, Trend]:
        starts = bucket_starts(now, TREND_SPAN, TREND_STEP)
        rows: dict[str, list[tuple[datetime, int, int, int]]] = {lot_id: [] for lot_id in lot_ids}
        t = OccupancySampleRow
        with Session(self.engine) as s:
            for i in range(0, len(lot_ids), IN_CHUNK):
                query = select(t.lot_id, t.ts, t.occupied, t.free, t.capacity).where(
                    t.lot_id.in_(lot_ids[i : i + IN_CHUNK]), t.ts >= starts[0], t.ts < starts[-1] + TREND_STEP
                )
                for lot_id, ts, occupied, free, capacity in s.execute(query):
                    rows[lot_id].append((_aware(ts), occupied, free, capacity))
        return {
            lot_id: sparkline([b.pct for b in _buckets(starts, TREND_STEP, found)])
            for lot_id, found in rows.items()
        }
