"""Telemetry: occupancy, flows, gate health and pipeline latency written to a time-series database.

Points are InfluxDB line protocol with millisecond timestamps taken from the data (the event's
time, the heartbeat's time, the batch's time), written with influxdb-client's synchronous write
API to ``{url}/api/v2/write``, which VictoriaMetrics and InfluxDB 2.x/3.x both accept. Resending a
point after an outage therefore lands at its original time, and VictoriaMetrics run with
``-dedup.minScrapeInterval=1ms`` keeps one sample where a point was written twice.

Durability: influxdb-client's own batching writer gives up on a batch after ``max_retry_time``
(180 s by default) and drops it, so it is not used. Every point goes to a local spool first (a
SQLite file, WAL, ``synchronous=FULL``); a sender thread writes the oldest spooled batches in
requests of at most ``batch_size`` points, at least every ``flush_interval_s``, and deletes them only
after the TSDB answered 2xx. When the TSDB is unreachable or answers 5xx, 429 or 401/403/404 (a
fixable setup), it retries with doubling back-off up to ``max_backoff_s``, forever. A new
:class:`Telemetry` on the same spool (a restarted collector) sends what the spool holds.

Bounds: the spool holds at most ``max_spool_mb`` of line protocol. A batch that would exceed it
drops the oldest batches first: the newest telemetry is kept, every dropped point is counted in
``dropped_points`` (kept in the spool file, so it survives restarts) and logged as
``ALARM telemetry spool full``. A batch the TSDB refuses as malformed (400, 413, 422) cannot succeed
on retry; it is dropped, counted in ``rejected_points`` and logged as ``ALARM``, so it does not
block the points after it.

Metric names as VictoriaMetrics/Prometheus see them are ``{measurement}_{field}`` (see
:data:`METRICS`); the tags become labels.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from cloud.config import TelemetryConfig
from cloud.events_store import LotState
from parkgate.settings import ConfigError
from protocol import GateEvent, GateStatus
from protocol.messages import utc_now

logger = logging.getLogger(__name__)

METRICS: dict[str, str] = {
    "parkgate_lot_capacity": "spaces in the lot; labels lot",
    "parkgate_lot_occupied": "vehicles in the lot after a batch; labels lot",
    "parkgate_lot_free": "free spaces after a batch; labels lot",
    "parkgate_flow_vehicles": "vehicles at a gate at the event's time; labels lot, gate, direction, action",
    "parkgate_pipeline_events": "new events stored in one collector batch; labels collector",
    "parkgate_pipeline_latency_p50_seconds": "median of (stored - event time) in the batch; labels collector",
    "parkgate_pipeline_latency_p99_seconds": "99th percentile of the same; labels collector",
    "parkgate_pipeline_latency_max_seconds": "largest of the same; labels collector",
    "parkgate_gate_online": "1 online (heartbeat), 0 offline (last will or clean stop); labels lot, gate",
    "parkgate_gate_backlog": "events in the gate's outbox not yet confirmed stored; labels lot, gate",
    "parkgate_gate_backlog_age_seconds": "age of the oldest of them; labels lot, gate",
    "parkgate_gate_dropped": "events the gate dropped because its outbox was full; labels lot, gate",
    "parkgate_gate_camera_ok": "1 camera delivering or idle, 0 down; labels lot, gate",
    "parkgate_gate_fps": "camera frames per second; labels lot, gate",
    "parkgate_gate_cpu_temp_celsius": "the node's CPU temperature; labels lot, gate",
    "parkgate_gate_disk_free_mb": "free disk on the node; labels lot, gate",
}

REFUSED_STATUSES = frozenset({400, 413, 422})  # malformed or too large: retrying cannot help
MIN_BACKOFF_S = 0.5
# influxdb-client annotates its precision constants as str; write() expects exactly those strings
PRECISION = cast(WritePrecision, WritePrecision.MS)
VACUUM_PAGES = 2048  # free pages (4 KiB) an emptied spool gives back to the file system
OUTAGE_LOG_EVERY_S = 60.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    points INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def epoch_ms(ts: datetime) -> int:
    """Milliseconds since the epoch, exactly (no float rounding)."""
    return (ts - _EPOCH) // _MS


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(math.ceil(q * len(sorted_values)), 1)
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class TelemetryStats:
    spooled_batches: int
    spooled_points: int
    spool_bytes: int
    sent_points: int  # by this process
    dropped_points: int  # ever, because the spool was full (an alarm)
    rejected_points: int  # ever, refused by the TSDB as malformed (an alarm)
    unspooled_points: int  # by this process, because the spool could not be written (an alarm)
    failing_since: float | None  # time.time() of the first failed write of the current outage
    last_error: str | None


class Spool:
    """Line-protocol batches not yet accepted by the TSDB, oldest first, in one SQLite file.
    Thread-safe; one process writes a spool at a time."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect on a new file
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(points), 0), COALESCE(SUM(bytes), 0) FROM batches"
        )
        self.batches, self.points, self.bytes = row.fetchone()

    def add(self, lines: Sequence[str]) -> int:
        """Store one batch (one transaction). Returns the points dropped to stay within the bound."""
        body = "\n".join(lines)
        size = len(body.encode())
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                dropped = self._make_room(size)
                self._db.execute(
                    "INSERT INTO batches (points, bytes, body) VALUES (?, ?, ?)", (len(lines), size, body)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self.batches += 1
            self.points += len(lines)
            self.bytes += size
            return dropped

    def _make_room(self, size: int) -> int:
        """Inside a transaction: delete the oldest batches until ``size`` more bytes fit."""
        dropped = 0
        while self.bytes + size > self.max_bytes and self.batches:
            rid, points, nbytes = self._db.execute(
                "SELECT id, points, bytes FROM batches ORDER BY id LIMIT 1"
            ).fetchone()
            self._db.execute("DELETE FROM batches WHERE id = ?", (rid,))
            self.batches -= 1
            self.points -= points
            self.bytes -= nbytes
            dropped += points
        if dropped:
            self._count("dropped_points", dropped)
        return dropped

    def oldest(self, max_points: int) -> tuple[list[int], int, str]:
        """The oldest batches holding at most ``max_points`` points (always at least one batch):
        their ids, their point count and the request body."""
        with self._lock:
            rows = self._db.execute("SELECT id, points, body FROM batches ORDER BY id LIMIT 10000").fetchall()
        ids: list[int] = []
        bodies: list[str] = []
        total = 0
        for rid, points, body in rows:
            if ids and total + points > max_points:
                break
            ids.append(rid)
            bodies.append(body)
            total += points
        return ids, total, "\n".join(bodies)

    def delete(self, ids: Sequence[int], *, rejected: bool = False) -> None:
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            points, nbytes, count = self._db.execute(
                "SELECT COALESCE(SUM(points), 0), COALESCE(SUM(bytes), 0), COUNT(*) FROM batches "
                f"WHERE id IN ({marks})",
                tuple(ids),
            ).fetchone()
            self._db.execute(f"DELETE FROM batches WHERE id IN ({marks})", tuple(ids))
            if rejected:
                self._count("rejected_points", points)
            self._db.execute("COMMIT")
            self.batches -= count
            self.points -= points
            self.bytes -= nbytes
            if not self.batches and self._db.execute("PRAGMA freelist_count").fetchone()[0] > VACUUM_PAGES:
                self._db.execute("PRAGMA incremental_vacuum")  # give the space of an outage back

    def _count(self, name: str, n: int) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, n),
        )

    def counter(self, name: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Telemetry:
    """Records telemetry into the spool and sends it from a background thread.

    ``record_batch`` and ``record_gate_status`` may be called before ``start``; what they record
    waits in the spool. Typical use::

        telemetry = Telemetry(cfg.telemetry, source=cfg.name)
        telemetry.start()
        telemetry.record_batch(result.stored, result.lots, now)
        telemetry.close()
    """

    def __init__(self, cfg: TelemetryConfig, *, source: str = "collector") -> None:
        self.cfg = cfg
        self.source = source
        self.spool = Spool(cfg.spool, int(cfg.max_spool_mb * 1024 * 1024))
        self.sent_points = 0
        self.unspooled_points = 0  # could not be written to the spool (disk full or broken): an alarm
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self._next_outage_log = 0.0
        self._pending: list[str] = []  # gate status lines not yet in the spool
        self._lock = threading.Lock()
        self._last_batch_ms = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
        self._client = InfluxDBClient(
            url=cfg.url, token=_token(cfg), org=cfg.org, timeout=int(cfg.timeout_s * 1000)
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        if self.spool.points:
            logger.info("telemetry spool %s holds %d points to send", cfg.spool, self.spool.points)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Telemetry:
        self._thread.start()
        return self

    def __enter__(self) -> Telemetry:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def flush(self, timeout: float | None = None) -> bool:
        """Spool what is pending and have the sender write everything now. Waits until the spool is
        empty or ``timeout`` passed; True when everything recorded so far has been accepted."""
        self._spool_pending()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._progress:
            while self.spool.points and self._thread.is_alive():
                self._wake.set()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._progress.wait(remaining if remaining is not None else 1.0)
        return self.spool.points == 0

    def close(self, timeout: float = 5.0) -> None:
        """Try to send what is spooled for up to ``timeout`` seconds, then stop. Whatever the TSDB
        has not accepted stays in the spool for the next start."""
        if self._thread.is_alive():
            self.flush(timeout)
            self._stop.set()
            self._wake.set()
            self._thread.join()
        else:
            self._spool_pending()
        if self.spool.points:
            logger.warning(
                "telemetry: %d points stay in %s for the next start", self.spool.points, self.cfg.spool
            )
        self._write_api.close()
        self._client.close()
        self.spool.close()

    def healthy(self) -> bool:
        """The sender thread is alive (for the service watchdog)."""
        return self._thread.is_alive()

    def stats(self) -> TelemetryStats:
        return TelemetryStats(
            spooled_batches=self.spool.batches,
            spooled_points=self.spool.points,
            spool_bytes=self.spool.bytes,
            sent_points=self.sent_points,
            dropped_points=self.spool.counter("dropped_points"),
            rejected_points=self.spool.counter("rejected_points"),
            unspooled_points=self.unspooled_points,
            failing_since=self.failing_since,
            last_error=self.last_error,
        )

    # -- recording (the collector's writer thread) ---------------------------------------------
    def record_batch(
        self,
        stored_events: Sequence[GateEvent],
        changed_lots: Mapping[str, LotState] | Iterable[LotState],
        now: datetime | None = None,
    ) -> int:
        """One collector batch: each changed lot's capacity, occupied and free at the batch's time;
        vehicles per lot, gate, direction and action at each event's time; the pipeline latency
        (``now`` - event time) of the new events as p50/p99/max. Goes to the spool (one
        transaction) with any gate statuses recorded since the last batch. Returns the points."""
        now = now or utc_now()
        lots = list(changed_lots.values() if isinstance(changed_lots, Mapping) else changed_lots)
        with self._lock:
            ts = self._last_batch_ms = max(epoch_ms(now), self._last_batch_ms + 1)
            lines, self._pending = self._pending, []
        lines += [_lot_line(lot, ts) for lot in lots]
        flows = Counter(
            (ev.lot_id, ev.gate_id, str(ev.direction), str(ev.decision.action), epoch_ms(ev.ts))
            for ev in stored_events
        )
        lines += [_flow_line(key, n) for key, n in flows.items()]
        if stored_events:
            latencies = sorted((now - ev.ts).total_seconds() for ev in stored_events)
            lines.append(_pipeline_line(self.source, latencies, ts))
        self._spool(lines)
        return len(lines)

    def record_gate_status(self, status: GateStatus, now: datetime | None = None) -> None:
        """A gate's heartbeat ("online", at its own time) or its "offline" (last will or clean
        stop). A last will carries the time the gate connected, so "offline" is stamped with the
        later of that and ``now`` (when it was received). Spooled with the next batch, or within
        ``flush_interval_s``."""
        ts = status.ts
        if status.state == "offline":
            ts = max(ts, now or utc_now())
        with self._lock:
            self._pending.append(_status_line(status, epoch_ms(ts)))

    def _spool_pending(self) -> None:
        with self._lock:
            lines, self._pending = self._pending, []
        self._spool(lines)

    def _spool(self, lines: list[str]) -> None:
        """Never raises: telemetry must not stop the collector from storing events."""
        if not lines:
            return
        try:
            dropped = self.spool.add(lines)
        except sqlite3.Error:
            self.unspooled_points += len(lines)
            logger.exception(
                "ALARM telemetry: cannot write %d points to the spool %s", len(lines), self.cfg.spool
            )
            return
        if dropped:
            logger.error(
                "ALARM telemetry spool full (%.0f MB): dropped the %d oldest points (%d ever)",
                self.cfg.max_spool_mb, dropped, self.spool.counter("dropped_points"),
            )  # fmt: skip
        if self.failing_since is None and self.spool.points >= self.cfg.batch_size:
            self._wake.set()  # a full request's worth is waiting: send before the interval ends

    # -- sending (the telemetry thread) --------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._spool_pending()
            try:
                sent = self._send_all()
            except sqlite3.Error:  # the spool itself failed (disk): keep the thread, try again later
                logger.exception("telemetry: cannot read or update the spool %s", self.cfg.spool)
                sent = False
            if sent:
                backoff = 0.0
                wait = self.cfg.flush_interval_s
            else:
                backoff = min(max(backoff * 2, MIN_BACKOFF_S), self.cfg.max_backoff_s)
                wait = backoff
            with self._progress:
                self._progress.notify_all()
            self._wake.wait(wait)  # flush() and close() cut the wait short
            self._wake.clear()

    def _send_all(self) -> bool:
        """Write the spool, oldest first, until it is empty (True) or a write fails (False)."""
        while self.spool.points and not self._stop.is_set():
            ids, points, body = self.spool.oldest(self.cfg.batch_size)
            try:
                self._write_api.write(
                    bucket=self.cfg.bucket, org=self.cfg.org, record=body, write_precision=PRECISION
                )
            except ApiException as err:
                if err.status in REFUSED_STATUSES:
                    self.spool.delete(ids, rejected=True)
                    logger.error(
                        "ALARM telemetry: TSDB refused %d points (HTTP %s %s); dropped them",
                        points, err.status, (err.body or err.reason or "")[:200],
                    )  # fmt: skip
                    continue
                self._failed(f"HTTP {err.status} {err.reason}")
                return False
            except Exception as err:  # connection refused, reset, timeout: the TSDB is away
                self._failed(f"{type(err).__name__}: {err}")
                return False
            self.spool.delete(ids)
            self.sent_points += points
            self._recovered()
        return True

    def _failed(self, error: str) -> None:
        now = time.time()
        if self.failing_since is None:
            self.failing_since = now
            self._next_outage_log = now + OUTAGE_LOG_EVERY_S
            logger.warning(
                "telemetry: cannot write to %s (%s); keeping points in the spool", self.cfg.url, error
            )
        elif now >= self._next_outage_log:
            self._next_outage_log = now + OUTAGE_LOG_EVERY_S
            logger.warning(
                "telemetry: %s unreachable for %.0f s, %d points spooled (%s)",
                self.cfg.url, now - self.failing_since, self.spool.points, error,
            )  # fmt: skip
        self.last_error = error

    def _recovered(self) -> None:
        if self.failing_since is not None:
            logger.info(
                "telemetry: %s reachable again after %.0f s", self.cfg.url, time.time() - self.failing_since
            )
            self.failing_since = None


def _token(cfg: TelemetryConfig) -> str:
    """The API token from the environment; "" (no Authorization header) without ``token_env``."""
    if not cfg.token_env:
        return ""
    value = os.environ.get(cfg.token_env)
    if value is None:
        raise ConfigError("environment", [f"telemetry.token_env: variable {cfg.token_env} is not set"])
    return value


def _lot_line(lot: LotState, ts: int) -> str:
    point = Point("parkgate_lot").tag("lot", lot.id)
    point.field("capacity", lot.capacity).field("occupied", lot.occupied).field("free", lot.free)
    return str(point.time(ts, PRECISION).to_line_protocol())


def _flow_line(key: tuple[str, str, str, str, int], vehicles: int) -> str:
    lot_id, gate_id, direction, action, ts = key
    point = Point("parkgate_flow").tag("lot", lot_id).tag("gate", gate_id)
    point.tag("direction", direction).tag("action", action).field("vehicles", vehicles)
    return str(point.time(ts, PRECISION).to_line_protocol())


def _pipeline_line(source: str, latencies: Sequence[float], ts: int) -> str:
    point = Point("parkgate_pipeline").tag("collector", source).field("events", len(latencies))
    point.field("latency_p50_seconds", float(percentile(latencies, 0.50)))
    point.field("latency_p99_seconds", float(percentile(latencies, 0.99)))
    point.field("latency_max_seconds", float(latencies[-1]))
    return str(point.time(ts, PRECISION).to_line_protocol())


def _status_line(status: GateStatus, ts: int) -> str:
    point = Point("parkgate_gate").tag("lot", status.lot_id).tag("gate", status.gate_id)
    point.field("online", 1 if status.state == "online" else 0)
    if status.state == "online":
        optional: dict[str, int | float | None] = {
            "backlog": status.backlog,
            "backlog_age_seconds": None if status.backlog_age_s is None else float(status.backlog_age_s),
            "dropped": status.dropped,
            "camera_ok": None if status.camera is None else int(status.camera != "down"),
            "fps": None if status.fps is None else float(status.fps),
            "cpu_temp_celsius": None if status.cpu_temp_c is None else float(status.cpu_temp_c),
            "disk_free_mb": None if status.disk_free_mb is None else float(status.disk_free_mb),
        }
        for name, value in optional.items():
            if value is not None:
                point.field(name, value)
    return str(point.time(ts, PRECISION).to_line_protocol())
