"""Load through the real system, shared by ``bench ingest`` and ``parkgate simulate``.

The pieces both need, so each measures the same path a city's gates take:

- :func:`running_stack`: a private Mosquitto on a free port, K collector processes (``parkgate
  collector`` with a generated config; a shared subscription when K > 1) and the database (a
  SQLite file, a temporary PostgreSQL server, or a given URL), all stopped on exit. Or, with
  ``broker=HOST:PORT``, a broker and collector someone else runs.
- :func:`run_publishers`: publisher processes, each playing whole lots' gates (its own outbox
  epoch and consecutive sequence numbers per gate, QoS 1), paced to a schedule or as fast as the
  broker takes them, with progress (sent, stored, rate, backlog) reported every few seconds until
  the database holds every event or stops growing.
- :func:`stored_counts`: what the database holds of this run (its epochs), counted once per
  (epoch, gate, seq), so a repeat shows as ``duplicated`` and a gap as ``lost``.
- :class:`LatencyProbe` (gate-to-screen: the first availability update of the lot that counts an
  event) and :class:`ScreenWatch` (the latest retained content of every guidance screen).

Whole lots go to one publisher, as a lot's gates would send: its events arrive in the order they
happened (one MQTT connection keeps it), and the latency probe reads a lot's updates in that order.
The collector would count them right in any order (the occupancy ledger, cloud/events_store.py).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy import text
from sqlalchemy.engine import Engine
from ulid import ULID

from bench.mqtt_blast import CHUNK, Blaster
from cloud.events_store import open_engine
from parkgate.broker import Mosquitto, die_with_parent, stop_process
from parkgate.demo import write_toml
from parkgate.mqtt import make_client, wait_collectors_online
from parkgate.postgres import Postgres
from parkgate.settings import MqttSettings
from protocol import (
    Action,
    Decision,
    Direction,
    GateEvent,
    LotAvailability,
    PayloadError,
    Reason,
    ScreenContent,
    Topics,
    decode,
    encode,
)

logger = logging.getLogger(__name__)

MAX_UNACKED = 20_000  # QoS 1 messages a publisher has unacknowledged (packet ids are 16 bits)
COLLECTOR_START_S = 120.0  # migrations and a city's lots on a cold database
POLL_S = 0.25  # how often the database is asked how far the run got

#: One event to send: (t, gate index, direction, plate or None, decision code). ``t`` is seconds
#: from the start of the schedule (simulated time in ``parkgate simulate``).
Send = tuple[float, int, int, str | None, int]
ENTRY, EXIT = 0, 1
DIRECTIONS = (Direction.ENTRY, Direction.EXIT)
OPEN_SPACE, OPEN_EXIT, REFUSED_FULL = 0, 1, 2
DECISIONS = (
    Decision(action=Action.OPEN, reason=Reason.SPACE_FREE),
    Decision(action=Action.OPEN, reason=Reason.EXIT),
    Decision(action=Action.DENY, reason=Reason.LOT_FULL),
)


class LoadError(RuntimeError):
    """A part of the system under load did not start or died."""


# -- the system under load ------------------------------------------------------------------------


@dataclass
class Stack:
    """The broker, collectors and database a run talks to."""

    settings: MqttSettings
    db_url: str
    workdir: Path
    collectors: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log: Path | None = None

    def check_alive(self) -> None:
        """Raise LoadError if a collector this stack started has exited."""
        for k, proc in enumerate(self.collectors):
            if proc.poll() is not None:
                raise LoadError(f"collector {k} exited with {proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        if self.log is None or not self.log.exists():
            return "(no collector log)"
        return self.log.read_text(errors="replace")[-chars:]


def parse_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ValueError with the reason otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:1883)")
    return host, int(port)


@contextlib.contextmanager
def running_stack(
    workdir: Path,
    *,
    city: dict[str, Any],
    db: str | None,
    collectors: int = 1,
    name: str = "load",
    broker: str | None = None,
) -> Iterator[Stack]:
    """Start what a run needs in ``workdir`` and stop it all on exit.

    ``city`` holds the collector config's ``lots`` and ``screens``. ``db``: a SQLAlchemy URL,
    ``"postgres"`` for a temporary local PostgreSQL server (durable commits), or None for
    ``workdir/events.sqlite``. ``broker``: HOST:PORT of a broker whose collector already serves
    ``city`` and writes to ``db``; nothing is started then."""
    if broker is not None:
        host, port = parse_host_port(broker)
        if not db or db == "postgres":
            raise ValueError("with a running broker, --db must be the URL its collector writes to")
        yield Stack(MqttSettings(host=host, port=port), db, workdir)
        return
    with contextlib.ExitStack() as stop:
        pg = Postgres().start() if db == "postgres" else None
        if pg:
            stop.callback(pg.stop)
        db_url = pg.url() if pg else db or f"sqlite:///{workdir / 'events.sqlite'}"
        mosquitto = Mosquitto(workdir / "broker").start()
        stop.callback(mosquitto.stop)
        settings = MqttSettings(host=mosquitto.host, port=mosquitto.port)
        log_path = workdir / "collectors.log"
        stack = Stack(settings, db_url, workdir, log=log_path)
        stop.callback(_stop_all, stack.collectors)
        names = [f"{name}{k}" for k in range(collectors)]
        started = datetime.now(UTC)
        with log_path.open("ab") as log:
            for k, collector in enumerate(names):
                cfg: dict[str, Any] = {
                    "name": collector,
                    "database": db_url,
                    "mqtt": {"host": mosquitto.host, "port": mosquitto.port},
                    **city,
                }
                if collectors > 1:
                    cfg["shared_group"] = name
                config = write_toml(workdir / f"collector{k}.toml", cfg)
                stack.collectors.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "parkgate", "collector", "--config", str(config)],
                        stdout=log,
                        stderr=log,
                        env=dict(os.environ, PARKGATE_LOG_LEVEL="WARNING"),
                        preexec_fn=die_with_parent,
                    )
                )
        _wait_online(stack, names, started)
        yield stack


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        stop_process(proc, 30.0)


def _wait_online(stack: Stack, names: list[str], since: datetime) -> None:
    """Until every collector says it is online (it has then migrated, synced the lots and
    subscribed: it publishes its status right after subscribing)."""
    if not wait_collectors_online(
        stack.settings, names, since=since, timeout=COLLECTOR_START_S, alive=stack.check_alive
    ):
        raise LoadError(f"collectors not online within {COLLECTOR_START_S:.0f} s:\n{stack.log_tail()}")


# -- what the database holds ----------------------------------------------------------------------


def epoch_of(run_id: str, gate: int) -> str:
    """The outbox epoch of gate number ``gate`` in run ``run_id``: all a run's epochs share the
    prefix, so its events are found among others in a database that is used again."""
    return f"{run_id}-{gate:x}"


def stored_counts(engine: Engine, run_id: str) -> tuple[int, int]:
    """(rows, distinct (epoch, gate, seq)) the run stored."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT COUNT(*), COUNT(DISTINCT epoch || ':' || gate_id || ':' || seq) FROM events "
                "WHERE epoch LIKE :prefix"
            ),
            {"prefix": f"{run_id}-%"},
        )
        total, distinct = rows.one()
    return int(total), int(distinct)


def stored_in_order(engine: Engine, run_id: str) -> int:
    """Events stored without a gap before them, over the run's gates: cheap enough to ask often
    (one row per gate, not one per event)."""
    with engine.connect() as conn:
        value = conn.execute(
            text("SELECT COALESCE(SUM(upto), 0) FROM gate_progress WHERE epoch LIKE :prefix"),
            {"prefix": f"{run_id}-%"},
        ).scalar()
    return int(value or 0)


def lot_occupancy(engine: Engine) -> dict[str, tuple[int, int]]:
    """Every lot's (capacity, occupied) as the collector counted it."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, capacity, occupied FROM lots"))
        return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}


# -- publishers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishJob:
    """What one publisher process sends: its gates' events in order."""

    settings: MqttSettings
    slot: int
    gates: Sequence[tuple[str, str]]  # gate index -> (gate_id, lot_id), the whole city's table
    sends: Sequence[Send]
    run_id: str
    speed: float | None = None  # schedule seconds per real second; None: as fast as possible
    day_start: float | None = None  # epoch seconds of t = 0 (ts = day_start + t); None: ts = now
    client_tag: str = "load"


@dataclass
class Tick:
    """Progress of a run, reported every few seconds."""

    elapsed: float
    sent: int
    stored: int
    events_per_s: float
    backlog: int
    clock: float  # schedule time of the newest event sent


@dataclass
class LoadResult:
    seconds: float  # from the first event sent until all were stored (or the store stopped growing)
    publish_seconds: float
    sent: dict[str, tuple[array[float], array[float]]]  # lot -> (event ts, when it was sent)


_SHARED: tuple[Any, Any] | None = None  # per slot: events sent, schedule clock (shared memory)


def _init_publisher(sent: Any, clock: Any) -> None:
    global _SHARED
    _SHARED = (sent, clock)
    die_with_parent()


def publish(job: PublishJob) -> tuple[dict[str, tuple[array[float], array[float]]], float]:
    """One publisher: send ``job.sends`` (QoS 1), paced by ``job.speed``; returns per lot the
    events' times and when each was sent, and how long sending took.

    Each event is its own QoS 1 PUBLISH on its gate's topic, written by bench/mqtt_blast.py a
    chunk at a time (up to CHUNK events that are due), so that on a machine shared with the
    broker and the collectors the load generator takes little of the CPU it measures."""
    topics = Topics(job.settings.topic_root)
    blaster = Blaster(
        job.settings.host, job.settings.port, f"{job.client_tag}-gates-{job.slot}-{os.getpid()}",
        window=MAX_UNACKED,
    )  # fmt: skip
    sent_count, clock = _SHARED if _SHARED else ([0] * (job.slot + 1), [0.0] * (job.slot + 1))
    rng = random.Random(job.slot)
    seqs: dict[int, int] = defaultdict(int)
    sent: dict[str, tuple[array[float], array[float]]] = {}
    started = time.monotonic()
    chunk: list[tuple[str, bytes]] = []
    total = len(job.sends)
    for n, (t, gate, direction, plate, decision) in enumerate(job.sends, start=1):
        if job.speed:
            delay = started + t / job.speed - time.monotonic()
            if delay > 0.002:
                if chunk:  # what is due goes out before the wait
                    blaster.submit(chunk)
                    chunk = []
                time.sleep(delay)
        gate_id, lot_id = job.gates[gate]
        seqs[gate] += 1
        now = time.time()
        ts = job.day_start + t if job.day_start is not None else now
        ev = GateEvent(
            id=str(ULID()), epoch=epoch_of(job.run_id, gate), seq=seqs[gate],
            ts=datetime.fromtimestamp(ts, UTC), lot_id=lot_id, gate_id=gate_id,
            direction=DIRECTIONS[direction], plate=plate,
            confidence=round(rng.uniform(0.82, 0.995), 3) if plate else 0.0, decision=DECISIONS[decision],
        )  # fmt: skip
        chunk.append((topics.gate_events(gate_id), encode(ev)))
        if len(chunk) >= CHUNK or n == total:
            blaster.submit(chunk)
            chunk = []
        times = sent.get(lot_id)
        if times is None:
            times = sent[lot_id] = (array("d"), array("d"))
        times[0].append(ts)
        times[1].append(now)
        if n % 200 == 0:
            sent_count[job.slot], clock[job.slot] = n, t
    blaster.drain()
    sent_count[job.slot] = len(job.sends)
    if job.sends:
        clock[job.slot] = job.sends[-1][0]
    seconds = time.monotonic() - started
    blaster.close()
    return sent, seconds


def run_publishers(
    jobs: Sequence[PublishJob],
    stack: Stack,
    *,
    events: int,
    run_id: str,
    report: Callable[[Tick], None],
    interval: float = 5.0,
    stall_s: float = 60.0,
) -> LoadResult:
    """Run one process per job; every ``interval`` s ``report`` a Tick. Returns once the database
    holds every event of the run, or when it has not grown for ``stall_s`` after sending ended."""
    ctx = multiprocessing.get_context("spawn")  # the parent runs MQTT threads: no fork
    sent_count = ctx.RawArray("q", len(jobs))
    clock = ctx.RawArray("d", len(jobs))
    engine = open_engine(stack.db_url)
    pool = ProcessPoolExecutor(
        len(jobs), mp_context=ctx, initializer=_init_publisher, initargs=(sent_count, clock)
    )
    try:
        futures = [pool.submit(publish, job) for job in jobs]
        watch = _Watch(time.monotonic(), interval)
        while not watch.over:
            if watch.sending_ended is None:
                finished, _pending = wait(futures, timeout=POLL_S, return_when=FIRST_EXCEPTION)
                for future in finished:
                    if future.exception() is not None:
                        raise LoadError(f"a publisher failed: {future.exception()!r}")
                if len(finished) == len(futures):
                    watch.sending_ended = time.monotonic()
            else:
                time.sleep(POLL_S)
            stack.check_alive()
            watch.update(stored_in_order(engine, run_id), events, stall_s)
            if watch.due():
                total = sum(sent_count)
                report(watch.tick(total, max(clock, default=0.0)))
        parts = [f.result() for f in futures]
    except BaseException:
        for proc in list(getattr(pool, "_processes", {}).values()):  # no waiting for them to finish
            proc.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        engine.dispose()
    if watch.stalled:
        logger.warning("the store has not grown for %.0f s; counting what is there", stall_s)
    sent: dict[str, tuple[array[float], array[float]]] = {}
    for part, _seconds in parts:
        for lot, (ts, at) in part.items():
            mine = sent.setdefault(lot, (array("d"), array("d")))
            mine[0].extend(ts)
            mine[1].extend(at)
    return LoadResult(watch.seconds, max((s for _p, s in parts), default=0.0), sent)


@dataclass
class _Watch:
    """How far a run got: when sending ended, when the store last grew, whether it is over."""

    started: float
    interval: float
    sending_ended: float | None = None
    stored: int = 0
    growing_at: float = 0.0
    now: float = 0.0
    complete: bool = False
    stalled: bool = False
    _reported: tuple[float, int] = (0.0, 0)

    def __post_init__(self) -> None:
        self.growing_at = self.now = self.started
        self._reported = (self.started, 0)

    @property
    def over(self) -> bool:
        return self.complete or self.stalled

    @property
    def seconds(self) -> float:
        """From the start until every event was stored, or until the store last grew."""
        return (self.growing_at if self.stalled else self.now) - self.started

    def update(self, stored: int, events: int, stall_s: float) -> None:
        self.now = time.monotonic()
        if stored > self.stored:
            self.stored, self.growing_at = stored, self.now
        if self.sending_ended is not None:
            self.complete = self.stored >= events
            self.stalled = not self.complete and self.now - max(self.growing_at, self.sending_ended) > stall_s

    def due(self) -> bool:
        return self.over or self.now - self._reported[0] >= self.interval

    def tick(self, sent: int, clock: float) -> Tick:
        at, stored = self._reported
        self._reported = (self.now, self.stored)
        rate = (self.stored - stored) / max(self.now - at, 1e-9)
        return Tick(self.now - self.started, sent, self.stored, rate, sent - self.stored, clock)


# -- what the screens and drivers see -------------------------------------------------------------


class _Subscriber:
    """A client subscribed to ``topic`` from start to :meth:`stop`, its messages to ``_on_message``."""

    def __init__(self, settings: MqttSettings, name: str, topic: str) -> None:
        self.client = make_client(settings, f"load-{name}-{os.getpid()}")
        self.client.on_connect = lambda c, *_a: c.subscribe(topic, qos=0)
        self.client.on_message = self._on_message
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class LatencyProbe(_Subscriber):
    """Receives every lot's availability updates and remembers when each arrived."""

    def __init__(self, settings: MqttSettings) -> None:
        self.updates: dict[str, list[tuple[float, float]]] = defaultdict(
            list
        )  # lot -> [(last_event_ts, arrival)]
        super().__init__(settings, "probe", Topics(settings.topic_root).all_lot_availability())

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        arrival = time.time()
        with contextlib.suppress(PayloadError):
            lot = decode(LotAvailability, msg.payload)
            if lot.last_event_ts is not None:
                self.updates[lot.lot_id].append((lot.last_event_ts.timestamp(), arrival))

    def latencies(self, sent: dict[str, tuple[array[float], array[float]]]) -> list[float]:
        """Per event: ms from when it was sent to the first update of its lot that counts it
        (an update whose newest event is at or after the event's time)."""
        out = []
        for lot_id, (times, sent_at) in sent.items():
            updates = sorted(self.updates.get(lot_id, []))
            keys = [u[0] for u in updates]
            # arrival of the first update counting the event: the earliest arrival among updates with ts >= t
            earliest_after = [0.0] * len(updates)
            best = float("inf")
            for i in range(len(updates) - 1, -1, -1):
                best = min(best, updates[i][1])
                earliest_after[i] = best
            for t, at in zip(times, sent_at, strict=True):
                i = bisect.bisect_left(keys, t - 1e-6)
                if i < len(updates):
                    out.append((earliest_after[i] - at) * 1000)
        return out


class ScreenWatch(_Subscriber):
    """The latest retained content of every guidance screen, as a sign would show it."""

    def __init__(self, settings: MqttSettings) -> None:
        self.latest: dict[str, dict[str, int]] = {}  # screen -> lot -> free
        self.states: dict[str, str] = {}  # screen -> its state (ok, full, stale, ...)
        self.updates = 0
        self._lock = threading.Lock()
        super().__init__(settings, "screens", Topics(settings.topic_root).all_screens())

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with contextlib.suppress(PayloadError):
            screen = decode(ScreenContent, msg.payload)
            with self._lock:
                self.latest[screen.screen_id] = {row.lot_id: row.free for row in screen.rows}
                self.states[screen.screen_id] = str(screen.state or "ok")
                self.updates += 1

    def differing(self, screens: dict[str, list[str]], free: dict[str, int]) -> list[str]:
        """Screens (id -> lots shown) missing, or showing a count other than ``free`` (lot -> free)."""
        with self._lock:
            return [
                sid
                for sid, lots in screens.items()
                if self.latest.get(sid) != {lot: free.get(lot, -1) for lot in lots}
            ]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return round(sorted_values[min(int(q * len(sorted_values)), len(sorted_values) - 1)], 1)


def new_run_id() -> str:
    return str(ULID())


def json_line(data: dict[str, Any]) -> None:
    print(json.dumps(data, ensure_ascii=False), flush=True)
