"""Occupancy history and the free-space forecast (cloud/history.py).

The forecast is checked on exact patterns (which profile it picks and what it adds up to), on a
synthetic lot with noise against "no change" (bench/forecast.py, loosely: it must clearly win),
and through the database the collector writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench.forecast import evaluate, synthetic_history
from cloud.config import LotConfig
from cloud.events_store import EventStore, LotState
from cloud.history import (
    HistorySampler,
    OccupancySampleRow,
    Sample,
    Series,
    forecast,
    forecast_lot,
    load_samples,
    slot_start,
    write_samples,
)

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)  # a Wednesday, 08:00


def pattern(days: int, step_min: int = 5, *, weekday_rise: int = 40, weekend_rise: int = 5) -> list[Sample]:
    """``days`` of history before NOW: 100 cars, and between 08:00 and 09:00 a linear rise."""
    out = []
    moment = NOW - timedelta(days=days)
    while moment < NOW:
        rise = weekday_rise if moment.weekday() < 5 else weekend_rise
        minutes = moment.hour * 60 + moment.minute - 8 * 60
        extra = rise * min(max(minutes, 0), 60) / 60
        out.append(Sample(moment, round(100 + extra)))
        moment += timedelta(minutes=step_min)
    return out


def test_series_interpolates_only_across_small_gaps() -> None:
    t = NOW
    series = Series([Sample(t, 10), Sample(t + timedelta(minutes=10), 20), Sample(t + timedelta(hours=2), 0)])
    assert series.at(t + timedelta(minutes=5)) == 15.0
    assert series.at(t) == 10.0
    assert series.at(t + timedelta(minutes=30)) is None  # 110 minutes between the samples
    assert series.at(t - timedelta(minutes=1)) is None


def test_weekly_profile_is_used_with_two_weeks_of_history() -> None:
    made = forecast(Series(pattern(21)), NOW, occupied=150, capacity=200, minutes=30)
    assert (made.method, made.samples, made.change) == ("weekly", 3, 20.0)
    assert (made.occupied, made.free) == (170, 30)  # the usual rise, added to today's level


def test_daily_profile_when_weeks_are_missing_and_no_change_without_history() -> None:
    made = forecast(Series(pattern(6)), NOW, occupied=150, capacity=200, minutes=60)
    # the past 6 days: 4 weekdays rose by 40, the weekend by 5
    assert (made.method, made.samples) == ("daily", 6)
    assert made.change == pytest.approx((4 * 40 + 2 * 5) / 6, abs=0.01)
    none = forecast(Series(pattern(2)), NOW, occupied=150, capacity=200, minutes=60)
    assert (none.method, none.samples, none.free) == ("none", 0, 50)


def test_forecast_is_clamped_to_the_lot() -> None:
    made = forecast(Series(pattern(21)), NOW, occupied=190, capacity=200, minutes=60)
    assert (made.free, made.occupied) == (0, 200)


def test_forecast_beats_no_change_on_a_noisy_synthetic_lot() -> None:
    """Loose bounds: the benchmark prints the figures (``python -m bench.forecast``)."""
    samples = synthetic_history(5, capacity=400, noise=8.0, day_spread=0.08, seed=7)
    results = {r["horizon_min"]: r for r in evaluate(samples, 400, days=3)}
    for minutes in (30, 60):
        r = results[minutes]
        assert r["points"] > 250
        assert r["mae_forecast"] < 0.8 * r["mae_no_change"], r  # type: ignore[operator]
        assert r["methods"] == {"weekly": r["points"]}


# -- the database ---------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(f"sqlite:///{tmp_path / 'events.sqlite'}")
    yield s
    s.close()


def test_forecast_from_the_database_matches_the_one_in_memory(store: EventStore) -> None:
    samples = pattern(21)
    assert write_samples(store.engine, "L1", [(s.ts, s.occupied, 200) for s in samples]) == len(samples)
    assert len(load_samples(store.engine, "L1", NOW - timedelta(days=1), NOW)) == 288
    made = forecast_lot(store.engine, "L1", NOW, occupied=150, capacity=200)
    assert [(f.minutes, f.method, f.free) for f in made] == [(30, "weekly", 30), (60, "weekly", 10)]
    assert forecast_lot(store.engine, "L2", NOW, occupied=5, capacity=10)[0].method == "none"


def test_sampler_writes_once_per_slot_and_skips_stale_lots(store: EventStore) -> None:
    lots_cfg = [
        LotConfig(id="L1", name="a", capacity=10),
        LotConfig(id="L2", name="b", capacity=5, history_interval_min=15),
    ]
    sampler = HistorySampler(store.engine, lots_cfg)
    lots = {"L1": LotState("L1", "a", 10, 4, None), "L2": LotState("L2", "b", 5, 5, None)}
    t = datetime(2026, 11, 25, 10, 2, 30, tzinfo=UTC)
    assert sampler.due(t) == ["L1", "L2"]
    assert sampler.record(lots, lambda lot_id: lot_id == "L2", t) == 1  # L2 is stale: passed over
    assert sampler.due(t) == []  # also L2's slot: not asked again until its next one
    assert sampler.due(t + timedelta(minutes=3)) == ["L1"]  # 10:05: L1's next 5-minute slot
    assert sampler.record(lots, lambda _lot: False, t + timedelta(minutes=3)) == 1
    assert sampler.due(t + timedelta(minutes=13)) == ["L1", "L2"]  # 10:15
    # a restarted collector (or a second one) does not write a slot twice
    again = HistorySampler(store.engine, lots_cfg)
    assert again.due(t + timedelta(minutes=4)) == ["L2"]
    assert again.record(lots, lambda _lot: False, t + timedelta(minutes=4)) == 1
    with Session(store.engine) as s:
        rows = s.execute(
            select(OccupancySampleRow.lot_id, OccupancySampleRow.ts, OccupancySampleRow.free)
        ).all()
        assert s.scalar(select(func.count()).select_from(OccupancySampleRow)) == 3
    stamps = sorted((lot_id, ts.replace(tzinfo=UTC), free) for lot_id, ts, free in rows)
    assert stamps == [
        ("L1", slot_start(t, 5), 6),
        ("L1", slot_start(t + timedelta(minutes=3), 5), 6),
        ("L2", datetime(2026, 11, 25, 10, 0, tzinfo=UTC), 0),
    ]
