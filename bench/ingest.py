"""``parkgate bench ingest``: events through the real broker into the collector(s) and database.

A publisher plays many gates (each with its own epoch and consecutive sequence numbers) and
sends ``--events`` events with QoS 1, at ``--rate`` events/s or as fast as the broker takes them;
``--collectors K`` collector processes split the stream (MQTT 5 shared subscription) and write to
``--db`` (a SQLAlchemy URL; a fresh SQLite file by default). A subscriber times gate-to-screen
latency: for each event, the arrival of the first availability update of its lot that counts it
(``last_event_ts`` at or after the event's time). Prints progress on stderr and one JSON line:

    {"events", "stored", "lost", "duplicated", "seconds", "events_per_s",
     "gate_to_screen_p50_ms", "gate_to_screen_p99_ms", ...}
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict, deque
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy import create_engine, text
from ulid import ULID

from parkgate.broker import Mosquitto, die_with_parent
from parkgate.demo import write_toml
from parkgate.mqtt import make_client
from parkgate.postgres import Postgres
from parkgate.settings import MqttSettings
from protocol import Action, Decision, Direction, GateEvent, LotAvailability, Reason, Topics, decode, encode

logger = logging.getLogger(__name__)

MAX_UNACKED = 20_000  # QoS 1 messages the publisher has waiting for their PUBACK


class LatencyProbe:
    """Receives every lot's availability updates and remembers when each arrived."""

    def __init__(self, settings: MqttSettings) -> None:
        self.updates: dict[str, list[tuple[float, float]]] = defaultdict(
            list
        )  # lot -> [(last_event_ts, arrival)]
        self.client = make_client(settings, f"bench-probe-{os.getpid()}")
        topics = Topics(settings.topic_root)
        self.client.on_connect = lambda c, *_a: c.subscribe(topics.all_lot_availability(), qos=0)
        self.client.on_message = self._on_message
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        arrival = time.time()
        lot = decode(LotAvailability, msg.payload)
        if lot.last_event_ts is not None:
            self.updates[lot.lot_id].append((lot.last_event_ts.timestamp(), arrival))

    def latencies(self, sent: dict[str, list[float]]) -> list[float]:
        """Per event: ms from its time to the first update of its lot that includes it."""
        out = []
        for lot_id, times in sent.items():
            updates = sorted(self.updates.get(lot_id, []))
            keys = [u[0] for u in updates]
            # arrival of the first update counting the event: the earliest arrival among updates with ts >= t
            earliest_after = [0.0] * len(updates)
            best = float("inf")
            for i in range(len(updates) - 1, -1, -1):
                best = min(best, updates[i][1])
                earliest_after[i] = best
            for t in times:
                i = bisect.bisect_left(keys, t - 1e-6)
                if i < len(updates):
                    out.append((earliest_after[i] - t) * 1000)
        return out

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publish_share(
    settings: MqttSettings, events: int, gates: int, lots: int, rate: float | None, share: int, shares: int
) -> dict[str, Any]:
    """One publisher process: the events n with n % shares == share (its own gates), at rate/shares."""
    topics = Topics(settings.topic_root)
    client = make_client(settings, f"bench-gates-{os.getpid()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(settings.host, settings.port)
    client.loop_start()
    epochs = [str(ULID()) for _ in range(gates)]
    seqs = [0] * gates
    sent: dict[str, list[float]] = defaultdict(list)
    decision = Decision(action=Action.OPEN, reason=Reason.SPACE_FREE)
    exit_decision = Decision(action=Action.OPEN, reason=Reason.EXIT)
    started = time.monotonic()
    infos: deque[mqtt.MQTTMessageInfo] = deque()
    for n in range(share, events, shares):
        if rate:
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        g = n % gates
        seqs[g] += 1
        lot = f"L{g % lots:04d}"
        direction = Direction.ENTRY if (n // gates) % 2 == 0 else Direction.EXIT
        now = datetime.now(UTC)
        ev = GateEvent(
            id=str(ULID()), epoch=epochs[g], seq=seqs[g], ts=now, lot_id=lot, gate_id=f"G{g:04d}",
            direction=direction, plate=None,
            decision=decision if direction is Direction.ENTRY else exit_decision,
        )  # fmt: skip
        if len(infos) >= MAX_UNACKED:  # message ids are 16 bits: paho refuses one still in use
            infos.popleft().wait_for_publish(120)
        infos.append(client.publish(topics.gate_events(ev.gate_id), encode(ev), qos=1))
        sent[lot].append(now.timestamp())
        if share == 0 and n and n % 50_000 < shares:
            print(f"[bench ingest] sent {n}/{events}", file=sys.stderr, flush=True)
    for info in infos:
        info.wait_for_publish(120)
    seconds = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    return {"sent": dict(sent), "publish_seconds": seconds}


def publish_events(
    settings: MqttSettings, events: int, gates: int, lots: int, rate: float | None, publishers: int = 1
) -> dict[str, Any]:
    """Send the events from ``publishers`` processes (gates split between them, ``gates`` a multiple
    of ``publishers`` keeps each gate in one process); returns per-lot event times."""
    if publishers <= 1:
        return _publish_share(settings, events, gates, lots, rate, 0, 1)
    with ProcessPoolExecutor(publishers) as pool:
        futures = [
            pool.submit(_publish_share, settings, events, gates, lots, rate, k, publishers)
            for k in range(publishers)
        ]
        parts = [f.result() for f in futures]
    sent: dict[str, list[float]] = defaultdict(list)
    for part in parts:
        for lot, times in part["sent"].items():
            sent[lot].extend(times)
    for times in sent.values():
        times.sort()
    return {"sent": sent, "publish_seconds": max(p["publish_seconds"] for p in parts)}


def stored_counts(db_url: str) -> tuple[int, int]:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT COUNT(*), COUNT(DISTINCT epoch || ':' || gate_id || ':' || seq) FROM events")
        )
        total, distinct = rows.one()
    engine.dispose()
    return int(total), int(distinct)


def run(
    *,
    events: int,
    collectors: int,
    db: str | None,
    rate: float | None,
    gates: int,
    lots: int,
    publishers: int = 1,
) -> int:
    if gates % publishers:
        print("parkgate bench ingest: --gates must be a multiple of --publishers", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="parkgate-ingest-") as tmp:
        work = Path(tmp)
        # --db postgres: a temporary local PostgreSQL server, durable commits (parkgate/postgres.py)
        pg = Postgres().start() if db == "postgres" else None
        db_url = pg.url() if pg else db or f"sqlite:///{work / 'events.sqlite'}"
        try:
            broker = Mosquitto(work / "broker").start()
        except BaseException:
            if pg:
                pg.stop()
            raise
        settings = MqttSettings(host=broker.host, port=broker.port)
        procs = []
        log = (work / "collectors.log").open("ab")
        try:
            for k in range(collectors):
                cfg: dict[str, Any] = {
                    "name": f"bench{k}",
                    "database": db_url,
                    "mqtt": {"host": broker.host, "port": broker.port},
                    "lots": [
                        {"id": f"L{i:04d}", "name": f"lot {i}", "capacity": 100_000} for i in range(lots)
                    ],
                }
                if collectors > 1:
                    cfg["shared_group"] = "bench"
                config = write_toml(work / f"collector{k}.toml", cfg)
                env = dict(os.environ, PARKGATE_LOG_LEVEL="WARNING")
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "parkgate", "collector", "--config", str(config)],
                        stdout=log,
                        stderr=log,
                        env=env,
                        preexec_fn=die_with_parent,
                    )
                )
            time.sleep(3.0)  # collectors connect and subscribe
            probe = LatencyProbe(settings)
            time.sleep(0.5)
            started = time.monotonic()
            result = publish_events(settings, events, gates, lots, rate, publishers)
            stored = distinct = 0
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                stored, distinct = stored_counts(db_url)
                print(f"[bench ingest] stored {stored}/{events}", file=sys.stderr, flush=True)
                if distinct >= events:
                    break
                time.sleep(1.0)
            seconds = time.monotonic() - started
            time.sleep(0.5)
            latencies = sorted(probe.latencies(result["sent"]))
            probe.stop()
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
            broker.stop()
            log.close()
            if pg:
                pg.stop()

    def pct(q: float) -> float | None:
        return round(latencies[min(int(q * len(latencies)), len(latencies) - 1)], 1) if latencies else None

    print(
        json.dumps(
            {
                "events": events,
                "stored": distinct,
                "lost": events - distinct,
                "duplicated": stored - distinct,
                "seconds": round(seconds, 2),
                "events_per_s": round(distinct / seconds, 1),
                "gate_to_screen_p50_ms": pct(0.50),
                "gate_to_screen_p99_ms": pct(0.99),
                "collectors": collectors,
                "db": db_url.split(":", 1)[0],
                "rate": rate,
                "publish_seconds": round(result["publish_seconds"], 2),
                "publishers": publishers,
            }
        ),
        flush=True,
    )
    return 0 if distinct == events and stored == distinct else 1
