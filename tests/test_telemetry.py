"""Telemetry against a real VictoriaMetrics: points arrive, survive an outage and a collector crash.

The outage lasts ``PARKGATE_TELEMETRY_OUTAGE_S`` seconds (3 by default; 300 shows that a
five-minute outage loses nothing)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cloud.config import CollectorConfig, TelemetryConfig
from cloud.events_store import LotState
from cloud.telemetry import METRICS, Telemetry, epoch_ms, percentile
from parkgate.broker import free_port
from protocol import GateEvent, GateStatus
from protocol.messages import Action, Decision, Direction, Reason, utc_now
from tests.conftest import REPO, VictoriaMetrics, require_victoria_metrics

pytestmark = pytest.mark.integration

OUTAGE_S = float(os.environ.get("PARKGATE_TELEMETRY_OUTAGE_S", "3"))
DASHBOARD = REPO / "deploy" / "grafana" / "parkgate.json"
# one batch of make_batch(): 2 lots x 3 fields, 3 flows, 4 pipeline fields; one heartbeat: 8 fields
BATCH_SAMPLES = 2 * 3 + 3 + 4
HEARTBEAT_SAMPLES = 8
POINTS_PER_RECORD = 2 + 3 + 1 + 1  # line-protocol lines: lots, flows, pipeline, heartbeat
_seq = iter(range(1, 10**9))


def telemetry_config(url: str, spool: Path, **overrides: object) -> TelemetryConfig:
    values: dict[str, object] = {
        "url": url,
        "spool": spool,
        "flush_interval_s": 0.2,
        "max_backoff_s": 0.5,
        "timeout_s": 5.0,
    }
    return TelemetryConfig.model_validate(values | overrides)


def event(gate_id: str, direction: Direction, action: Action, ts: datetime) -> GateEvent:
    reason = Reason.SPACE_FREE if action == Action.OPEN else Reason.LOT_FULL
    return GateEvent(
        id=f"ev{next(_seq):020d}", epoch="epoch0001", seq=next(_seq), ts=ts, lot_id=gate_id[:3],
        gate_id=gate_id, direction=direction, decision=Decision(action=action, reason=reason),
    )  # fmt: skip


def make_batch(now: datetime, occupied: int) -> tuple[list[GateEvent], list[LotState]]:
    """Three new events (two lots, three gates, one refusal) and the two lots they changed."""
    events = [
        event("L01-in", Direction.ENTRY, Action.OPEN, now - timedelta(milliseconds=900)),
        event("L01-out", Direction.EXIT, Action.OPEN, now - timedelta(milliseconds=400)),
        event("L02-in", Direction.ENTRY, Action.DENY, now - timedelta(milliseconds=150)),
    ]
    lots = [
        LotState(id="L01", name="江汉路", capacity=120, occupied=occupied, last_event_ts=events[1].ts),
        LotState(id="L02", name="中山公园", capacity=40, occupied=40, last_event_ts=events[2].ts),
    ]
    return events, lots


def heartbeat(gate_id: str, ts: datetime, backlog: int = 0) -> GateStatus:
    return GateStatus(
        gate_id=gate_id, lot_id=gate_id[:3], state="online", ts=ts, backlog=backlog, backlog_age_s=1.5,
        dropped=0, camera="ok", fps=9.5, cpu_temp_c=51.0, disk_free_mb=2048.0,
    )  # fmt: skip


def record(telemetry: Telemetry, i: int) -> int:
    """One collector batch and one heartbeat, at the current time; returns the samples."""
    now = utc_now()
    telemetry.record_gate_status(heartbeat("L01-in", now - timedelta(milliseconds=5), backlog=i % 7))
    events, lots = make_batch(now, occupied=i % 120)
    telemetry.record_batch(events, lots, now)
    time.sleep(0.002)  # the next batch's events are a few ms later: one sample per gate and ms
    return BATCH_SAMPLES + HEARTBEAT_SAMPLES


def samples(series: list[dict[str, Any]]) -> Counter[str]:
    """Sample count per metric name."""
    counts: Counter[str] = Counter()
    for s in series:
        counts[s["metric"]["__name__"]] += len(s["values"])
    return counts


def wait_for_samples(vm: VictoriaMetrics, expected: int, timeout: float = 120.0) -> list[dict[str, Any]]:
    """VictoriaMetrics makes new samples searchable within about a second: read until the count
    reaches ``expected`` (or the time is up), then return what is there."""
    deadline = time.monotonic() + timeout
    while True:
        series = vm.export()
        if sum(samples(series).values()) >= expected or time.monotonic() > deadline:
            return series
        time.sleep(0.2)


def by_name(series: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in series if s["metric"]["__name__"] == name]


def test_points_written_and_read_back(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    now = utc_now()
    events, lots = make_batch(now, occupied=77)
    with Telemetry(telemetry_config(victoria.url, tmp_path / "spool.sqlite"), source="c1") as telemetry:
        telemetry.record_gate_status(heartbeat("L01-in", now, backlog=4))
        offline = GateStatus(gate_id="L02-in", lot_id="L02", state="offline", ts=now - timedelta(hours=2))
        telemetry.record_gate_status(offline, now=now)  # a last will made when the gate connected
        assert telemetry.record_batch(events, {lot.id: lot for lot in lots}, now) == 2 + 3 + 1 + 2
        assert telemetry.flush(timeout=60)
        assert telemetry.stats().sent_points == 8
    series = wait_for_samples(victoria, BATCH_SAMPLES + HEARTBEAT_SAMPLES + 1)

    assert {s["metric"]["__name__"] for s in series} == set(METRICS)
    assert sum(samples(series).values()) == BATCH_SAMPLES + HEARTBEAT_SAMPLES + 1
    now_ms = epoch_ms(now)
    free = {s["metric"]["lot"]: (s["values"], s["timestamps"]) for s in by_name(series, "parkgate_lot_free")}
    assert free == {"L01": ([43], [now_ms]), "L02": ([0], [now_ms])}
    flows = {
        tuple(s["metric"][k] for k in ("lot", "gate", "direction", "action")): (s["values"], s["timestamps"])
        for s in by_name(series, "parkgate_flow_vehicles")
    }
    assert flows == {
        (ev.lot_id, ev.gate_id, ev.direction.value, ev.decision.action.value): ([1], [epoch_ms(ev.ts)])
        for ev in events
    }
    (p99,) = by_name(series, "parkgate_pipeline_latency_p99_seconds")
    assert p99["metric"] == {"__name__": "parkgate_pipeline_latency_p99_seconds", "collector": "c1"}
    assert p99["values"] == [0.9]
    (p50,) = by_name(series, "parkgate_pipeline_latency_p50_seconds")
    assert p50["values"] == [0.4]
    online = {
        s["metric"]["gate"]: (s["values"], s["timestamps"]) for s in by_name(series, "parkgate_gate_online")
    }
    assert online == {"L01-in": ([1], [now_ms]), "L02-in": ([0], [now_ms])}  # offline stamped on receipt
    (backlog,) = by_name(series, "parkgate_gate_backlog")
    assert backlog["metric"] == {"__name__": "parkgate_gate_backlog", "lot": "L01", "gate": "L01-in"}
    assert backlog["values"] == [4]


def test_outage_and_collector_crash_lose_nothing(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    """VictoriaMetrics is down for OUTAGE_S seconds. Meanwhile the collector records, stops, a
    second collector process records and is killed (SIGKILL), a third one records until the TSDB
    is back: every sample arrives, exactly once."""
    cfg = telemetry_config(victoria.url, tmp_path / "spool.sqlite")
    expected = 0
    first = Telemetry(cfg, source="c1").start()
    for i in range(5):
        expected += record(first, i)
    assert first.flush(timeout=60)
    before = expected

    victoria.stop()
    outage_end = time.monotonic() + OUTAGE_S
    batches = 0
    while batches < 3 or time.monotonic() < outage_end - OUTAGE_S / 2:
        expected += record(first, batches)
        batches += 1
        time.sleep(0.1)
    first.close(timeout=0)  # a clean stop while the TSDB is away: the spool keeps everything

    crashed = 5  # a collector process that records and dies without closing anything
    with subprocess.Popen(
        [sys.executable, "-c", CRASHING_COLLECTOR, cfg.model_dump_json(), str(crashed)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        proc.send_signal(signal.SIGKILL)
    assert line == "recorded"
    expected += crashed * (BATCH_SAMPLES + HEARTBEAT_SAMPLES)
    batches += crashed

    third = Telemetry(cfg, source="c1").start()
    restarted = 0
    while restarted < 3 or time.monotonic() < outage_end:
        expected += record(third, batches)
        batches += 1
        restarted += 1
        time.sleep(0.1)
    during = expected - before

    victoria.start()
    assert third.flush(timeout=300)
    stats = third.stats()
    third.close()
    series = wait_for_samples(victoria, expected)
    counts = samples(series)
    figures = {
        "outage_s": OUTAGE_S,
        "batches_during_outage": batches,
        "points_during_outage": batches * POINTS_PER_RECORD,
        "samples_during_outage": during,
        "samples_expected": expected,
    }
    print("telemetry outage:", json.dumps(figures | {"samples_read_back": sum(counts.values())}))
    assert sum(counts.values()) == expected
    batches += 5
    assert counts["parkgate_lot_free"] == 2 * batches
    assert counts["parkgate_gate_online"] == batches
    flows = by_name(series, "parkgate_flow_vehicles")
    assert sum(sum(s["values"]) for s in flows) == 3 * batches
    assert stats.dropped_points == stats.rejected_points == 0


CRASHING_COLLECTOR = """
import sys, time
from cloud.config import TelemetryConfig
from cloud.telemetry import Telemetry
from tests.test_telemetry import record
telemetry = Telemetry(TelemetryConfig.model_validate_json(sys.argv[1]), source="c1").start()
for i in range(int(sys.argv[2])):
    record(telemetry, 100 + i)
    time.sleep(0.1)
print("recorded", flush=True)
time.sleep(600)
"""


def test_a_repeated_point_overwrites(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    """Sending the same batch again (a spool resent after a crash between write and delete)
    lands on the same timestamps: VictoriaMetrics keeps one sample per point."""
    now = utc_now()
    events, lots = make_batch(now, occupied=5)
    for attempt in range(2):
        cfg = telemetry_config(victoria.url, tmp_path / f"spool{attempt}.sqlite")
        with Telemetry(cfg, source="c1") as telemetry:
            telemetry.record_batch(events, lots, now)
            assert telemetry.flush(timeout=60)
        series = wait_for_samples(victoria, BATCH_SAMPLES)
    assert sum(samples(series).values()) == BATCH_SAMPLES


def test_a_refused_batch_is_dropped_and_counted_not_retried_forever(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A TSDB that answers 400 (here: a line longer than VictoriaMetrics accepts) will refuse the
    batch however often it is sent: it is dropped with an ALARM and the points after it go on."""
    require_victoria_metrics()
    vm = VictoriaMetrics(tmp_path / "victoria", "-influx.maxLineSize=120").start()  # a heartbeat is longer
    try:
        now = utc_now()
        _, lots = make_batch(now, occupied=9)
        with (
            caplog.at_level(logging.ERROR, logger="cloud.telemetry"),
            Telemetry(telemetry_config(vm.url, tmp_path / "spool.sqlite")) as telemetry,
        ):
            telemetry.record_gate_status(heartbeat("L01-in", now))
            assert telemetry.flush(timeout=60)
            telemetry.record_batch([], lots, now)
            assert telemetry.flush(timeout=60)
            stats = telemetry.stats()
        assert (stats.rejected_points, stats.sent_points) == (1, 2)
        assert "ALARM telemetry: TSDB refused 1 points (HTTP 400" in caplog.text
        assert sum(samples(wait_for_samples(vm, 2 * 3)).values()) == 2 * 3
    finally:
        vm.stop()


def test_full_spool_drops_the_oldest_and_raises_the_alarm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No TSDB at all: the spool stays within max_spool_mb by dropping the oldest batches, and
    counts what it dropped across restarts."""
    cfg = telemetry_config(f"http://127.0.0.1:{free_port()}", tmp_path / "spool.sqlite", max_spool_mb=0.01)
    telemetry = Telemetry(cfg)
    recorded = 0
    with caplog.at_level(logging.ERROR, logger="cloud.telemetry"):
        for i in range(60):
            events, lots = make_batch(utc_now() + timedelta(seconds=i), occupied=i)
            recorded += telemetry.record_batch(events, lots)
    stats = telemetry.stats()
    telemetry.close(timeout=0)
    assert stats.spool_bytes <= 0.01 * 1024 * 1024
    assert stats.dropped_points > 0
    assert stats.dropped_points + stats.spooled_points == recorded
    assert "ALARM telemetry spool full" in caplog.text

    reopened = Telemetry(cfg)
    try:
        assert reopened.stats().dropped_points == stats.dropped_points
        assert reopened.stats().spooled_points == stats.spooled_points
    finally:
        reopened.close(timeout=0)


def test_dashboard_queries_read_the_metrics_the_writer_produces(
    victoria: VictoriaMetrics, tmp_path: Path
) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\bparkgate_[a-z0-9_]+", expr)}
    assert used <= set(METRICS), f"dashboard reads metrics the writer never writes: {used - set(METRICS)}"
    for needed in (
        "parkgate_lot_free",
        "parkgate_flow_vehicles",
        "parkgate_gate_online",
        "parkgate_gate_backlog",
        "parkgate_pipeline_latency_p50_seconds",
        "parkgate_pipeline_latency_p99_seconds",
    ):
        assert needed in used, f"no panel shows {needed}"

    now = utc_now()
    with Telemetry(telemetry_config(victoria.url, tmp_path / "spool.sqlite")) as telemetry:
        telemetry.record_gate_status(heartbeat("L01-in", now))
        telemetry.record_gate_status(GateStatus(gate_id="L01-out", lot_id="L01", state="offline", ts=now))
        events, lots = make_batch(now, occupied=3)
        telemetry.record_batch(events, lots, now)
        assert telemetry.flush(timeout=60)
    wait_for_samples(victoria, BATCH_SAMPLES + HEARTBEAT_SAMPLES + 1)

    start = int(now.timestamp()) - 3600
    for expr in exprs:
        query = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$lot", ".*")
        body = victoria.get(
            "/api/v1/query_range", query=query, start=str(start), end=str(start + 3660), step="60"
        )
        answer = json.loads(body)
        assert answer["status"] == "success", (expr, answer)
        assert answer["data"]["result"], f"no data for {expr}"


def test_telemetry_config() -> None:
    assert CollectorConfig().telemetry is None
    cfg = CollectorConfig.model_validate(
        {"telemetry": {"url": "http://127.0.0.1:8428", "spool": "/tmp/s.sqlite"}}
    )
    assert cfg.telemetry is not None and cfg.telemetry.batch_size == 5000
    with pytest.raises(ValidationError, match="url"):
        CollectorConfig.model_validate({"telemetry": {"url": "victoria:8428"}})
    with pytest.raises(ValidationError, match="batch_siz"):
        CollectorConfig.model_validate({"telemetry": {"url": "http://x", "batch_siz": 10}})


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile([7.0], 0.99)) == (50.0, 99.0, 7.0)
