"""``parkgate simulate`` and the city/day generator it shares with ``bench ingest``.

The generator is checked on its own (exact event counts, capacities, visits that pair, a full
lot refusing, valid plates, the shape of the day); the command runs a small city through a real
Mosquitto, the real collector process and SQLite, and what the collector stored is read back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean, median
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text

from bench.load import ENTRY, EXIT, OPEN_EXIT, OPEN_SPACE, REFUSED_FULL
from cloud.config import CollectorConfig
from edge.plate_format import plate_kind
from parkgate.broker import Mosquitto, die_with_parent, stop_process
from parkgate.settings import MqttSettings
from parkgate.simulate import City, DayPlan, make_city, plan_day, split_by_lot
from protocol import CollectorStatus, Topics, decode
from tests.mqtt_helpers import retained
from tests.waiting import wait_until

ENV = dict(os.environ, PARKGATE_LOG_LEVEL="WARNING")
CONTRACT = {"lots", "spaces", "events", "stored", "lost", "duplicated", "seconds", "events_per_s", "sim_hours",
            "speed", "occupancy_mismatches", "peak_occupancy_ratio", "screens"}  # fmt: skip
INGEST = {"events", "stored", "lost", "duplicated", "seconds", "events_per_s", "gate_to_screen_p50_ms",
          "gate_to_screen_p99_ms", "collectors", "db", "rate", "publish_seconds", "publishers"}  # fmt: skip
SMALL = ["--lots", "20", "--spaces", "2000", "--events", "2000", "--screens", "5"]


def parkgate(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parkgate", *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


def last_json(out: str) -> dict[str, Any]:
    lines = out.strip().splitlines()
    assert lines, "nothing on stdout"
    return dict(json.loads(lines[-1]))


def _online(settings: MqttSettings, name: str) -> bool:
    payload = retained(settings, Topics().collector_status(name), timeout=1.0)
    return payload is not None and decode(CollectorStatus, payload).state == "online"


def replay_lots(city: City, plan: DayPlan) -> list[int]:
    """Walk the plan as the collector counts it; check the rules of each event on the way."""
    occupied = list(plan.initial)
    parked: dict[str, int] = {}  # plate -> lot it is in
    lot_of = [g.lot for g in city.gates]
    for t, gate, direction, plate, decision in plan.sends:
        lot = lot_of[gate]
        capacity = city.lots[lot].capacity
        assert plate is not None and plate_kind(plate) is not None, plate
        if direction == ENTRY:
            assert city.gates[gate].direction in ("entry", "both")
            assert plate not in parked, f"{plate} enters lot {lot} while parked in {parked.get(plate)}"
            if decision == REFUSED_FULL:
                assert occupied[lot] == capacity, f"lot {lot} refused at {occupied[lot]}/{capacity}"
                continue
            assert decision == OPEN_SPACE
            assert occupied[lot] < capacity
            occupied[lot] += 1
            parked[plate] = lot
        else:
            assert direction == EXIT and decision == OPEN_EXIT
            assert city.gates[gate].direction in ("exit", "both")
            assert parked.pop(plate, None) == lot, f"{plate} leaves lot {lot} it did not enter"
            occupied[lot] -= 1
        assert 0 <= t < 86_400
    return occupied


# -- the generator ------------------------------------------------------------------------------


def test_a_wuhan_sized_city_has_many_small_lots_a_few_large_and_a_valid_collector_config() -> None:
    city = make_city(2000, 600_000, 200, seed=3)
    sizes = [lot.capacity for lot in city.lots]
    assert len(sizes) == 2000 and sum(sizes) == 600_000 and min(sizes) >= 1
    assert median(sizes) < 0.75 * mean(sizes) and max(sizes) > 8 * median(sizes)
    assert {lot.kind.value for lot in city.lots} == {"office", "shopping", "residential", "hub"}
    for lot in city.lots:
        assert 30.0 < lot.lat < 31.2 and 113.7 < lot.lon < 115.1
        assert 1 <= len(set(lot.entries) | set(lot.exits)) <= 4 and lot.entries and lot.exits
    assert len(city.screens) == 200
    assert all(2 <= len(screen.lots) <= 4 for screen in city.screens)
    config = CollectorConfig.model_validate({"name": "t", **city.collector_city()})
    assert len(config.lots) == 2000 and len(config.screens) == 200
    assert len({g.id for g in city.gates}) == len(city.gates)


def test_a_day_has_exactly_the_events_asked_for_and_visits_that_pair() -> None:
    city = make_city(12, 300, 3, seed=5)  # small lots: some fill up and refuse
    plan = plan_day(city, 5000, seed=5)
    assert len(plan.sends) == 5000
    assert [s[0] for s in plan.sends] == sorted(s[0] for s in plan.sends)
    assert replay_lots(city, plan) == plan.final
    assert plan.refused > 0 and plan.lots_full > 0
    assert sum(1 for s in plan.sends if s[4] == REFUSED_FULL) == plan.refused
    assert 0 < plan.peak_occupancy_ratio <= 1
    plates = Counter(s[3] for s in plan.sends if s[2] == ENTRY)
    assert max(plates.values()) > 1, "some cars come back during the day"
    for events in (1, 2, 3, 777):
        assert len(plan_day(city, events, seed=1).sends) == events


def test_a_day_starts_where_the_database_left_the_lots() -> None:
    city = make_city(5, 500, 0, seed=2)
    start = [lot.capacity for lot in city.lots]  # every lot full at midnight
    plan = plan_day(city, 400, seed=2, initial=start)
    assert replay_lots(city, plan) == plan.final
    first = {city.gates[s[1]].lot: s for s in reversed(plan.sends) if s[2] == ENTRY}
    assert all(s[4] == REFUSED_FULL for s in first.values()), "a full lot refuses until a car leaves"


def test_the_daily_curve_has_a_night_trough_a_morning_peak_a_midday_plateau_and_an_evening_peak() -> None:
    plan = plan_day(make_city(300, 90_000, 0, seed=7), 60_000, seed=7)
    hourly = plan.hourly
    assert sum(hourly) == 60_000
    top = max(hourly)
    assert min(range(24), key=hourly.__getitem__) in range(1, 6)  # night trough
    assert max(hourly[1:6]) < 0.05 * top
    morning = max(range(6, 12), key=hourly.__getitem__)
    evening = max(range(14, 23), key=hourly.__getitem__)
    assert morning in (8, 9) and evening in (17, 18, 19), hourly
    midday = hourly[10:15]
    assert max(midday) < 1.3 * min(midday), f"midday is no plateau: {midday}"
    assert hourly[morning] > 1.2 * mean(midday) and hourly[evening] > 1.2 * mean(midday)


def test_publishers_get_whole_lots_in_time_order() -> None:
    city = make_city(30, 6000, 0, seed=1)
    plan = plan_day(city, 3000, seed=1)
    shares = split_by_lot(city, plan.sends, 4)
    assert sum(len(s) for s in shares) == 3000
    owners: dict[int, set[int]] = defaultdict(set)
    for k, share in enumerate(shares):
        assert [s[0] for s in share] == sorted(s[0] for s in share)
        for send in share:
            owners[city.gates[send[1]].lot].add(k)
    assert all(len(o) == 1 for o in owners.values())
    assert min(len(s) for s in shares) > 0.5 * max(len(s) for s in shares)


# -- the command ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_small_city_day_goes_through_the_real_broker_and_collector(tmp_path: Path) -> None:
    work = tmp_path / "work"
    done = parkgate("simulate", *SMALL, "--speed", "max", "--date", "2026-11-20", "--workdir", str(work))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = last_json(done.stdout)
    assert summary.keys() >= CONTRACT
    assert summary["events"] == summary["stored"] == 2000
    assert (summary["lost"], summary["duplicated"], summary["occupancy_mismatches"]) == (0, 0, 0)
    assert summary["screens"] == 5 and summary["screens_wrong"] == 0
    assert summary["lots"] == 20 and summary["spaces"] == 2000 and summary["speed"] == "max"
    assert 20 < summary["sim_hours"] <= 24
    assert "sim | sent 2,000/2,000 | stored 2,000" in done.stderr
    # what the collector stored: the simulated day, valid plates, every exit after its car's entry
    engine = create_engine(f"sqlite:///{work / 'events.sqlite'}")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT lot_id, plate, direction, action, ts FROM events ORDER BY ts")).all()
        occupied: dict[str, int] = {r[0]: r[1] for r in conn.execute(text("SELECT id, occupied FROM lots"))}
    engine.dispose()
    assert len(rows) == 2000
    day = datetime(2026, 11, 20, tzinfo=ZoneInfo("Asia/Shanghai"))
    inside: dict[str, str] = {}
    counted: Counter[str] = Counter()
    for lot, plate, direction, action, ts in rows:
        moment = (ts if isinstance(ts, datetime) else datetime.fromisoformat(ts)).replace(tzinfo=UTC)
        assert 0 <= (moment - day).total_seconds() < 86_400
        assert plate_kind(plate) is not None
        if direction == "entry" and action == "open":
            assert plate not in inside
            inside[plate] = lot
            counted[lot] += 1
        elif direction == "exit":
            assert inside.pop(plate) == lot
            counted[lot] -= 1
    assert {lot: counted[lot] for lot in occupied} == occupied


@pytest.mark.integration
def test_a_running_broker_and_collector_serve_two_days_in_a_row(tmp_path: Path) -> None:
    work = tmp_path / "city"
    db = f"sqlite:///{work / 'events.sqlite'}"
    with Mosquitto(tmp_path / "broker") as broker:
        address = f"{broker.host}:{broker.port}"
        written = parkgate("simulate", *SMALL, "--config-only", "--workdir", str(work), "--broker", address)
        assert written.returncode == 0, written.stderr
        config = last_json(written.stdout)["config"]
        collector = subprocess.Popen(
            [sys.executable, "-m", "parkgate", "collector", "--config", config],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, preexec_fn=die_with_parent,
        )  # fmt: skip
        try:
            settings = MqttSettings(host=broker.host, port=broker.port)
            wait_until(lambda: _online(settings, "city"), timeout=60, what="the collector online")
            other = parkgate("simulate", *SMALL, "--seed", "2", "--broker", address, "--db", db)
            assert other.returncode == 2 and "does not serve this city" in other.stderr
            for day in ("2026-11-20", "2026-11-21"):  # the second day starts from the first one's counts
                done = parkgate("simulate", *SMALL, "--speed", "max", "--date", day, "--broker", address,
                                "--db", db)  # fmt: skip
                assert done.returncode == 0, done.stderr[-3000:]
                summary = last_json(done.stdout)
                assert (summary["stored"], summary["lost"], summary["duplicated"]) == (2000, 0, 0)
                assert summary["occupancy_mismatches"] == 0 and summary["screens_wrong"] == 0
        finally:
            stop_process(collector, 30.0)


@pytest.mark.integration
def test_bench_ingest_sends_a_city_day_and_keeps_its_json(tmp_path: Path) -> None:
    done = parkgate(
        "bench", "ingest", "--events", "1500", "--lots", "10", "--gates", "25", "--publishers", "2"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = last_json(done.stdout)
    assert summary.keys() == INGEST
    assert (summary["events"], summary["stored"], summary["lost"], summary["duplicated"]) == (
        1500,
        1500,
        0,
        0,
    )
    assert summary["gate_to_screen_p50_ms"] is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--events", "-5"], "argument --events: must be at least 1 (got -5)"),
        (["--lots", "10", "--spaces", "5"], "--spaces (5) must be at least --lots (10)"),
        (["--speed", "fast"], "argument --speed: 'fast' is not a speed"),
        (["--speed", "-3"], "argument --speed: '-3' is not a speed"),
        (["--lots", "many"], "argument --lots: 'many' is not a whole number"),
        (
            ["--lots", "3", "--spaces", "300", "--publishers", "4"],
            "--publishers (4) cannot exceed --lots (3)",
        ),
        (["--lots", "3"], "--spaces (600000) is more than 3 lots of 100,000 spaces can hold"),
        (["--broker", "127.0.0.1:1883"], "--broker needs --db URL"),
        (["--broker", "localhost"], "--broker: 'localhost' is not HOST:PORT"),
        (["--config-only"], "--config-only needs --workdir"),
    ],
)
def test_bad_arguments_exit_2_saying_what_is_wrong(args: list[str], message: str) -> None:
    done = parkgate("simulate", *args, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


def test_bench_ingest_refuses_fewer_gates_than_lots() -> None:
    done = parkgate("bench", "ingest", "--lots", "10", "--gates", "5", timeout=30)
    assert done.returncode == 2 and "--gates (5) must be at least --lots (10)" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runs", "0"], "argument --runs: must be at least 1 (got 0)"),
        (["--duration", "-1"], "argument --duration: must be greater than 0 (got -1)"),
        (["--connections", "lots"], "argument --connections: 'lots' is not a whole number"),
    ],
)
def test_bench_api_refuses_bad_numbers(args: list[str], message: str) -> None:
    done = parkgate("bench", "api", *args, timeout=30)
    assert done.returncode == 2 and message in done.stderr and done.stdout == ""
