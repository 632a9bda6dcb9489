"""The event store and the collectors on a real PostgreSQL server (Debian's, started by the
``postgres`` fixture on a free loopback port): stored once, occupancy, gaps, on the plain and on the
day-partitioned events table (deploy/postgres/partitioning.sql); two collector processes splitting
one stream (MQTT 5 shared subscription, real Mosquitto) store what one would; one of them killed
mid-stream and restarted loses nothing."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from ulid import ULID

from cloud.config import LotConfig
from cloud.events_store import EventStore
from cloud.migrations import alembic_config
from parkgate.broker import die_with_parent
from parkgate.demo import write_toml
from parkgate.mqtt import make_client, wait_collectors_online
from parkgate.settings import MqttSettings
from protocol import Action, CollectorStatus, Decision, Direction, GateEvent, Reason, Topics, decode, encode
from protocol.messages import utc_now
from tests.mqtt_helpers import retained

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
PARTITIONING = REPO / "deploy" / "postgres" / "partitioning.sql"
WAIT_S = 60.0  # bounds every wait below; nothing is timed


def ev(
    seq: int,
    *,
    gate: str = "G1",
    lot: str = "L1",
    epoch: str = "EPOCH00001",
    direction: Direction = Direction.ENTRY,
    action: Action = Action.OPEN,
    ts: datetime | None = None,
    crop: bytes | None = None,
) -> GateEvent:
    reason = Reason.EXIT if direction is Direction.EXIT else Reason.SPACE_FREE
    if action is not Action.OPEN:
        reason = Reason.LOT_FULL
    return GateEvent(
        id=str(ULID()), epoch=epoch, seq=seq, ts=ts or utc_now(), lot_id=lot, gate_id=gate,
        direction=direction, decision=Decision(action=action, reason=reason),
        crop_jpeg=base64.b64encode(crop).decode() if crop else None,
    )  # fmt: skip


def run_sql_file(url: str, path: Path) -> None:
    """Run a SQL script as psql would (several statements, its own transactions)."""
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(path.read_text(encoding="utf-8").encode())


def scalar(store: EventStore, sql: str, **params: Any) -> Any:
    with store.engine.begin() as conn:
        return conn.execute(text(sql), params).scalar()


@pytest.fixture(params=["plain", "partitioned"])
def store(request: pytest.FixtureRequest, postgres: str) -> Iterator[EventStore]:
    s = EventStore(postgres)
    if request.param == "partitioned":
        run_sql_file(postgres, PARTITIONING)
    s.sync_lots([LotConfig(id="L1", name="lot", capacity=3)])
    yield s
    s.close()


# -- the event store -------------------------------------------------------------------------------
def test_a_repeated_batch_changes_nothing(store: EventStore) -> None:
    batch = [ev(1, crop=b"\xff\xd8jpeg"), ev(2), ev(3, direction=Direction.EXIT)]
    first = store.record_batch([*batch, batch[0]])  # a repeat inside the batch, too
    assert [e.id for e in first.stored] == [e.id for e in batch]
    assert first.lots["L1"].occupied == 1 and first.progress["G1"].upto == 3
    again = store.record_batch(batch)
    assert again.stored == [] and again.lots == {}
    assert again.progress["G1"].upto == 3 and not again.progress["G1"].gap
    assert store.count_events() == 3 and store.lot("L1").occupied == 1  # type: ignore[union-attr]
    assert store.snapshot(batch[0].id) == b"\xff\xd8jpeg"


def test_occupancy_counts_opened_entries_and_exits_with_clamps(store: EventStore) -> None:
    steps = [(Direction.ENTRY, Action.OPEN)] * 4 + [(Direction.ENTRY, Action.DENY)]
    steps += [(Direction.EXIT, Action.OPEN)] * 5
    seen = []
    for n, (direction, action) in enumerate(steps, start=1):
        store.record(ev(n, direction=direction, action=action))
        seen.append(store.lot("L1").occupied)  # type: ignore[union-attr]
    assert seen == [1, 2, 3, 3, 3, 2, 1, 0, 0, 0]


def test_gaps_are_found_filled_and_given_up(store: EventStore) -> None:
    assert store.record(ev(1)).progress.upto == 1  # type: ignore[union-attr]
    gap = store.record(ev(3)).progress
    assert gap is not None and (gap.upto, gap.max_seq, gap.gap) == (1, 3, True)
    assert store.record(ev(5)).progress.upto == 1  # type: ignore[union-attr]
    filled = store.record(ev(2)).progress
    assert filled is not None and (filled.upto, filled.max_seq) == (3, 5)
    progress, lost = store.note_first_seq("G1", "EPOCH00001", first_seq=5)  # the gate dropped 4
    assert lost == 1 and progress.upto == 5 and not progress.gap
    new_epoch = store.record(ev(1, epoch="EPOCH00002")).progress
    assert new_epoch is not None and (new_epoch.epoch, new_epoch.upto) == ("EPOCH00002", 1)


def test_events_are_kept_in_day_partitions(postgres: str) -> None:
    store = EventStore(postgres)
    try:
        run_sql_file(postgres, PARTITIONING)
        run_sql_file(postgres, PARTITIONING)  # a second run changes nothing
        store.sync_lots([LotConfig(id="L1", name="lot", capacity=100)])
        now = utc_now()
        old_ts = now - timedelta(days=40)
        today, old = ev(1, ts=now), ev(2, ts=old_ts, crop=b"old")
        assert len(store.record_batch([today, old]).stored) == 2

        def partition(e: GateEvent) -> str:
            return str(scalar(store, "SELECT tableoid::regclass::text FROM events WHERE id = :id", id=e.id))

        assert partition(today) == f"events_p{now.astimezone(UTC):%Y%m%d}"
        assert partition(old) == "events_default"  # no partition for that day: the safety net
        assert store.record_batch([today, old]).stored == []  # de-duplicated in either partition
        old_day = old_ts.astimezone(UTC).date()
        made = scalar(store, "SELECT parkgate_event_partitions(0, :day)", day=old_day)
        assert made == 40  # the days before today; today and the next 7 were made with the table
        assert partition(old) == f"events_p{old_day:%Y%m%d}"  # moved out of the default partition
        assert store.record_batch([old]).stored == []
        with store.engine.connect() as conn:
            command.check(alembic_config(conn))  # the partitions are not seen as unknown tables
        assert scalar(store, "SELECT parkgate_drop_event_partitions(30)") == 10  # 40 to 31 days ago
        assert store.count_events() == 1 and store.snapshot(old.id) is None
    finally:
        store.close()


# -- collectors on a shared subscription --------------------------------------------------------------
CAPACITY = 10  # small, so that the counts hit both clamps again and again


def make_events(n: int, *, gates: int, lots: int) -> list[GateEvent]:
    """As bench ingest's publisher: each gate its own epoch and consecutive seqs. Each lot sees 15
    entries then 20 exits, over and over: its count runs into capacity and into 0, where the clamps
    make it depend on the order events are counted in (the occupancy ledger counts them in time
    order, however the collectors split and store them)."""
    epochs = [str(ULID()) for _ in range(gates)]
    seqs = [0] * gates
    per_lot = [0] * lots
    out = []
    start = utc_now()
    for k in range(n):
        g = k % gates
        seqs[g] += 1
        lot = g % lots
        per_lot[lot] += 1
        exit_ = per_lot[lot] % 35 >= 15
        out.append(
            ev(
                seqs[g], gate=f"G{g:03d}", lot=f"L{lot:02d}", epoch=epochs[g],
                direction=Direction.EXIT if exit_ else Direction.ENTRY,
                ts=start + timedelta(milliseconds=k),
            )
        )  # fmt: skip
    return out


def lot_configs(lots: int) -> list[LotConfig]:
    return [LotConfig(id=f"L{i:02d}", name=f"lot {i}", capacity=CAPACITY) for i in range(lots)]


def totals(store: EventStore) -> dict[str, Any]:
    return {
        "events": store.count_events(),
        "lots": {lot.id: (lot.occupied, lot.last_event_ts) for lot in store.lots()},
        "gates": {p.gate_id: (p.epoch, p.upto, p.max_seq) for p in store.all_progress()},
    }


def one_collector_totals(tmp_path: Path, events: Sequence[GateEvent], lots: int) -> dict[str, Any]:
    """What one collector makes of the events: the same store code, in batches, on SQLite."""
    ref = EventStore(f"sqlite:///{tmp_path / 'reference.sqlite'}")
    try:
        ref.sync_lots(lot_configs(lots))
        for i in range(0, len(events), 500):
            ref.record_batch(events[i : i + 500])
        return totals(ref)
    finally:
        ref.close()


def stored_counts(url: str) -> tuple[int, int]:
    """(rows, distinct gate/epoch/seq) in the events table."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT COUNT(*), COUNT(DISTINCT (gate_id, epoch, seq)) FROM events")
            ).one()
        return int(row[0]), int(row[1])
    finally:
        engine.dispose()


def wait_for(what: str, check: Callable[[], bool], logs: Sequence[Path] = ()) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {WAIT_S} s: {what}\n{tails(logs)}")
        time.sleep(0.05)


def tails(logs: Sequence[Path]) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())


class CollectorProcess:
    """``parkgate collector`` with a generated config, in a shared-subscription group."""

    def __init__(self, tmp_path: Path, name: str, settings: MqttSettings, db: str, lots: int) -> None:
        self.name = name
        self.settings = settings
        self.log = tmp_path / f"{name}.log"
        self.config = write_toml(
            tmp_path / f"{name}.toml",
            {
                "name": name,
                "database": db,
                "shared_group": "ingest",
                "mqtt": {"host": settings.host, "port": settings.port, "topic_root": settings.topic_root},
                "lots": [lot.model_dump(include={"id", "name", "capacity"}) for lot in lot_configs(lots)],
            },
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CollectorProcess:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "parkgate", "collector", "--config", str(self.config)],
                stdout=log, stderr=log, preexec_fn=die_with_parent,
                env=dict(os.environ, PARKGATE_LOG_LEVEL="INFO"),
            )  # fmt: skip
        return self

    def status(self) -> CollectorStatus | None:
        raw = retained(
            self.settings, Topics(self.settings.topic_root).collector_status(self.name), timeout=1.0
        )
        return decode(CollectorStatus, raw) if raw else None

    def wait_online(self, since: datetime) -> None:
        if not wait_collectors_online(self.settings, [self.name], since=since, timeout=WAIT_S):
            pytest.fail(f"collector {self.name} not online within {WAIT_S} s\n{tails([self.log])}")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def publish(settings: MqttSettings, events: Sequence[GateEvent], rate: float | None = None) -> None:
    """Every event with QoS 1, as its gate would; returns once the broker acknowledged them all."""
    topics = Topics(settings.topic_root)
    client = make_client(settings, f"test-gates-{ULID()}")
    client.max_inflight_messages_set(500)
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        started = time.monotonic()
        infos = []
        for k, e in enumerate(events):
            if rate:
                time.sleep(max(started + k / rate - time.monotonic(), 0))
            infos.append(client.publish(topics.gate_events(e.gate_id), encode(e), qos=1))
        for info in infos:
            info.wait_for_publish(WAIT_S)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def collectors(
    tmp_path: Path, postgres: str, mqtt_settings: MqttSettings
) -> Iterator[list[CollectorProcess]]:
    """Two collector processes on the shared subscription, writing to one PostgreSQL database."""
    EventStore(postgres).close()  # the schema first: the test reads the table while they start
    procs = [CollectorProcess(tmp_path, f"pg{k}", mqtt_settings, postgres, lots=5) for k in range(2)]
    since = utc_now()
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.wait_online(since)
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def test_two_collectors_split_one_stream_and_store_it_as_one_would(
    tmp_path: Path, postgres: str, mqtt_settings: MqttSettings, collectors: list[CollectorProcess]
) -> None:
    events = make_events(3000, gates=20, lots=5)
    publish(mqtt_settings, events)
    wait_for(
        "every event stored", lambda: stored_counts(postgres)[1] >= len(events), [c.log for c in collectors]
    )
    for proc in collectors:
        proc.stop()  # a clean stop publishes the final counts (retained, "offline")
    statuses = [proc.status() for proc in collectors]

    assert stored_counts(postgres) == (len(events), len(events))  # nothing lost, nothing twice
    shares = [s.stored if s and s.state == "offline" else None for s in statuses]
    assert None not in shares and sum(shares) == len(events) and min(shares) > 0, shares  # type: ignore[operator]
    store = EventStore(postgres, migrate=False)
    try:
        assert totals(store) == one_collector_totals(tmp_path, events, lots=5)
    finally:
        store.close()


def test_a_collector_killed_mid_stream_loses_nothing(
    tmp_path: Path, postgres: str, mqtt_settings: MqttSettings, collectors: list[CollectorProcess]
) -> None:
    """SIGKILL one collector while events flow; the other goes on; the killed one, restarted with
    the same config (same client id, so the broker resumes its persistent session), gets what the
    broker held for it: the messages it had not acknowledged and those queued while it was away."""
    events = make_events(3000, gates=20, lots=5)
    logs = [c.log for c in collectors]
    sender = threading.Thread(target=publish, args=(mqtt_settings, events, 1500.0))
    sender.start()
    try:
        wait_for("a quarter stored", lambda: stored_counts(postgres)[1] >= len(events) // 4, logs)
        victim = collectors[0]
        victim.kill()
        at_kill = stored_counts(postgres)[1]
        wait_for(
            "the other collector to go on storing",
            lambda: stored_counts(postgres)[1] >= min(at_kill + 300, len(events)),
            logs,
        )
        since = utc_now()
        victim.start()  # same config: same client id, its session resumed
        victim.wait_online(since)
    finally:
        sender.join()
    wait_for("every event stored", lambda: stored_counts(postgres)[1] >= len(events), logs)
    for proc in collectors:
        proc.stop()

    assert stored_counts(postgres) == (len(events), len(events))  # 0 lost, 0 duplicated
    store = EventStore(postgres, migrate=False)
    try:
        assert totals(store) == one_collector_totals(tmp_path, events, lots=5)
    finally:
        store.close()
