"""Visits and honest occupancy (cloud/visits.py) on a real SQLite file and a real PostgreSQL server:
entries and exits paired by plate in any arrival order, orphan exits, unread plates counted and not
paired, overstay alerts once per visit, stale visits presumed exited and the audited re-base, manual
recalibration, bay sensors, misread correction; and through the real broker: a collector pairing
the visits of real messages, sensor reports (bad ones counted by reason) and the refresh request
that `parkgate lots recalibrate` sends."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from ulid import ULID

from cloud.collector import Collector
from cloud.config import CollectorConfig
from cloud.events_store import EventStore
from cloud.visits import (
    CLOSED,
    OPEN,
    ORPHAN,
    PRESUMED,
    SYSTEM,
    EventNotFound,
    InvalidPlate,
    OccupancyOutOfRange,
    UnknownLot,
    Visits,
    estimate_from_flows,
    normalise_plate,
)
from parkgate.cli import main as parkgate
from parkgate.demo import write_toml
from parkgate.settings import MqttSettings
from protocol import Action, Decision, Direction, GateEvent, LotAvailability, Reason, Topics, decode, encode
from protocol.messages import LotAlerts, SpaceSensorReport
from tests.mqtt_helpers import publish_raw, retained
from tests.waiting import wait_until

T0 = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
H = timedelta(hours=1)
IN, OUT = Direction.ENTRY, Direction.EXIT
_seq = itertools.count(1)


class Clock:
    """The time of sweeps and adjustments, moved along by the script."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def car(
    direction: Direction, plate: str | None, at: datetime, lot: str = "L01", action: Action = Action.OPEN
) -> GateEvent:
    reason = (
        Reason.LOT_FULL if action is Action.DENY else (Reason.SPACE_FREE if direction is IN else Reason.EXIT)
    )
    return GateEvent(
        id=str(ULID()), epoch="EPOCH0001", seq=next(_seq), ts=at, lot_id=lot, gate_id=f"{lot}-{direction.value}",
        direction=direction, plate=plate, confidence=0.9 if plate else 0.0,
        decision=Decision(action=action, reason=reason),
    )  # fmt: skip


def config(**lot: Any) -> CollectorConfig:
    return CollectorConfig.model_validate(
        {
            "lots": [
                {"id": "L01", "name": "江汉路", "capacity": 50, **lot},
                {"id": "L02", "name": "汉口站", "capacity": 20},
            ]
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    store = EventStore(f"sqlite:///{tmp_path / 'events.sqlite'}")
    yield store
    store.close()


def visits_on(store: EventStore, cfg: CollectorConfig, clock: Clock) -> Visits:
    store.sync_lots(cfg.lots)
    return Visits(store, cfg, clock=clock)


def shape(visits: Visits, plate: str | None = None, lot_id: str | None = None) -> list[tuple[object, ...]]:
    """(plate, status, note, dwell in hours) oldest first."""
    return [
        (v.plate, v.status, v.note, v.dwell / H if v.dwell else None)
        for v in reversed(visits.visits(plate, lot_id=lot_id))
    ]


def occupied(store: EventStore, lot_id: str = "L01") -> int:
    lot = store.lot(lot_id)
    assert lot is not None
    return lot.occupied


# -- pairing ---------------------------------------------------------------------------------------
def test_entry_and_exit_pair_into_a_visit_with_its_dwell(store: EventStore) -> None:
    visits = visits_on(store, config(), Clock(T0))
    store.record_batch([car(IN, "鄂A12345", T0), car(IN, "鄂B00001", T0 + 0.5 * H)])
    store.record_batch([car(OUT, "鄂A12345", T0 + 2.5 * H)])
    assert shape(visits) == [("鄂A12345", CLOSED, None, 2.5), ("鄂B00001", OPEN, None, None)]
    (visit,) = visits.visits("鄂A12345")
    assert visit.entry_ts == T0 and visit.exit_ts == T0 + 2.5 * H and visit.lot_id == "L01"


def test_a_redelivered_batch_pairs_nothing_twice(store: EventStore) -> None:
    visits = visits_on(store, config(), Clock(T0))
    batch = [car(IN, "鄂A12345", T0), car(OUT, "鄂A12345", T0 + H), car(IN, "鄂A12346", T0 + H)]
    batch.append(car(IN, None, T0 + H))
    store.record_batch(batch)
    before = (shape(visits), visits.unread("L01"), visits.estimate("L01", now=T0 + 2 * H))
    store.record_batch(batch)  # the broker redelivers: the store refuses every id, the hook sees nothing
    store.record_batch(batch[:2] + batch[:2])
    assert (shape(visits), visits.unread("L01"), visits.estimate("L01", now=T0 + 2 * H)) == before
    assert before[0] == [("鄂A12345", CLOSED, None, 1.0), ("鄂A12346", OPEN, None, None)]


def test_orphan_exits_unread_plates_and_refusals(store: EventStore) -> None:
    visits = visits_on(store, config(), Clock(T0))
    store.record_batch(
        [
            car(OUT, "鄂A99999", T0),  # never seen entering: an orphan exit
            car(IN, None, T0 + H),  # no plate read: counted, not paired
            car(OUT, None, T0 + 2 * H),
            car(IN, None, T0 + 2 * H),
            car(IN, "鄂A77777", T0 + H, action=Action.DENY),  # refused: no visit
        ]
    )
    (orphan,) = visits.visits()
    assert (orphan.plate, orphan.status, orphan.entry_ts, orphan.exit_ts) == ("鄂A99999", ORPHAN, None, T0)
    assert orphan.dwell is None
    assert visits.unread("L01") == {"entries": 2, "exits": 1}
    assert visits.visits("鄂A77777") == []


def test_an_exit_that_arrives_before_its_entry_is_paired_with_it(store: EventStore) -> None:
    """The entry gate was offline: its backlog drains after the exit gate's event arrived."""
    visits = visits_on(store, config(), Clock(T0))
    store.record_batch([car(OUT, "鄂A12345", T0 + 3 * H)])
    assert shape(visits) == [("鄂A12345", ORPHAN, None, None)]
    store.record_batch([car(IN, "鄂A12345", T0 + H)])
    assert shape(visits) == [("鄂A12345", CLOSED, "late_entry", 2.0)]


def test_an_exit_closes_the_most_recent_open_visit_and_a_re_entry_proves_a_missed_exit(
    store: EventStore,
) -> None:
    visits = visits_on(store, config(), Clock(T0))
    # in one batch: in, in again (the first exit was missed), out
    store.record_batch(
        [car(IN, "鄂A12345", T0), car(IN, "鄂A12345", T0 + 5 * H), car(OUT, "鄂A12345", T0 + 6 * H)]
    )
    assert shape(visits) == [("鄂A12345", PRESUMED, "re_entered", None), ("鄂A12345", CLOSED, None, 1.0)]
    # the missed exit turns up late: it closes the visit it belongs to
    store.record_batch([car(OUT, "鄂A12345", T0 + 2 * H)])
    assert shape(visits) == [("鄂A12345", CLOSED, "late_exit", 2.0), ("鄂A12345", CLOSED, None, 1.0)]


def test_plate_search_is_newest_first_and_filters(store: EventStore) -> None:
    visits = visits_on(store, config(), Clock(T0))
    store.record_batch(
        [
            car(IN, "鄂A12345", T0),
            car(OUT, "鄂A12345", T0 + H),
            car(IN, "鄂A12345", T0 + 3 * H, lot="L02"),
            car(IN, "鄂A12345", T0 + 5 * H),
            car(IN, "鄂B54321", T0 + 4 * H),
        ]
    )
    found = visits.visits("鄂A12345")
    assert [(v.lot_id, v.entry_ts) for v in found] == [("L01", T0 + 5 * H), ("L02", T0 + 3 * H), ("L01", T0)]
    assert [v.entry_ts for v in visits.visits("鄂A12345", lot_id="L01")] == [T0 + 5 * H, T0]
    assert [v.entry_ts for v in visits.visits("鄂A12345", since=T0 + 2 * H)] == [T0 + 5 * H, T0 + 3 * H]
    assert len(visits.visits("鄂A12345", limit=1)) == 1
    assert [v.plate for v in visits.visits(lot_id="L01")] == ["鄂A12345", "鄂B54321", "鄂A12345"]
    assert normalise_plate(" 鄂a·123-45 ") == "鄂A12345"


# -- overstay --------------------------------------------------------------------------------------
def test_overstay_is_alerted_once_per_visit_and_resolved_when_it_leaves(store: EventStore) -> None:
    clock = Clock(T0)
    visits = visits_on(store, config(max_stay_h=2), clock)
    store.record_batch([car(IN, "鄂A12345", T0), car(IN, "鄂B00001", T0 + H)])
    clock.now = T0 + 1.5 * H
    assert visits.sweep().raised == []

    clock.now = T0 + 2.5 * H
    swept = visits.sweep()
    assert [(a.plate, a.lot_id, a.entry_ts, a.status) for a in swept.raised] == [
        ("鄂A12345", "L01", T0, "open")
    ]
    assert [(m.lot_id, [(o.plate, o.since) for o in m.overstays], m.total) for m in swept.alerts] == [
        ("L01", [("鄂A12345", T0)], 1)
    ]
    assert visits.sweep().raised == []  # once per visit, however many sweeps

    clock.now = T0 + 3.5 * H
    swept = visits.sweep()
    assert [a.plate for a in swept.raised] == ["鄂B00001"]
    assert [o.plate for o in swept.alerts[0].overstays] == ["鄂A12345", "鄂B00001"]

    store.record_batch([car(OUT, "鄂A12345", T0 + 4 * H)])
    clock.now = T0 + 4 * H
    swept = visits.sweep()
    assert swept.resolved == 1 and [o.plate for o in swept.alerts[0].overstays] == ["鄂B00001"]
    assert [(a.plate, a.status) for a in visits.alerts("L01")] == [
        ("鄂A12345", "resolved"),
        ("鄂B00001", "open"),
    ]
    assert visits.alert_lists()[0].total == 1  # what the collector publishes on connect
    message = decode(LotAlerts, encode(swept.alerts[0]))  # the wire format round-trips
    assert message.overstays[0].plate == "鄂B00001"


# -- the count -------------------------------------------------------------------------------------
def reconciling(store: EventStore, clock: Clock, **lot: Any) -> Visits:
    """A lot that reconciles, its visits tracked for long enough (2W) before T0."""
    tracked_from = Clock(T0 - 10 * H)
    visits = visits_on(
        store, config(**{"reconcile": True, "stale_visit_h": 4, "drift_tolerance": 1, **lot}), tracked_from
    )
    visits.clock = clock
    return visits


def test_stale_visits_are_presumed_exited_and_a_drifted_count_is_re_based_with_an_audit_row(
    store: EventStore,
) -> None:
    clock = Clock(T0)
    visits = reconciling(store, clock)
    store.record_batch(
        [car(IN, plate, T0) for plate in ("鄂A00001", "鄂A00002", "鄂A00003", "鄂A00004", "鄂A00005")]
        + [car(IN, None, T0 + H), car(OUT, None, T0 + 1.5 * H)]  # an unread pair: cancel each other
        + [car(OUT, "鄂A00001", T0 + H)]
    )
    assert occupied(store) == 4
    clock.now = T0 + 2 * H
    assert visits.sweep(reconcile=True).adjustments == []  # 4 open visits, the counter says 4

    # 鄂A00002..4 left unseen (the exit loop missed them); 鄂A00005 stays; two new cars, one unread
    store.record_batch([car(IN, "鄂A00006", T0 + 5 * H), car(IN, None, T0 + 5 * H)])
    clock.now = T0 + 6 * H
    swept = visits.sweep(reconcile=True)
    assert swept.stale == 4  # 鄂A00002..5 entered more than stale_visit_h ago
    assert sorted((v.plate, v.note) for v in visits.visits(status=[PRESUMED])) == [
        ("鄂A00002", "stale"), ("鄂A00003", "stale"), ("鄂A00004", "stale"), ("鄂A00005", "stale")
    ]  # fmt: skip
    (adjustment,) = swept.adjustments
    assert (adjustment.lot_id, adjustment.before, adjustment.after, adjustment.cause, adjustment.actor) == (
        "L01", 6, 2, "reconcile", SYSTEM,
    )  # fmt: skip
    assert "1 open visits +1 unread" in adjustment.reason and "the counter said 6" in adjustment.reason
    assert occupied(store) == 2 and swept.lots["L01"].occupied == 2
    assert visits.adjustments("L01") == [adjustment]
    assert visits.sweep(reconcile=True).adjustments == []  # within tolerance now

    store.record_batch([car(OUT, "鄂A00005", T0 + 7 * H)])  # it was there after all: closes its visit
    assert [v.note for v in visits.visits("鄂A00005")] == ["late_exit"]


def test_reconcile_waits_for_history_respects_a_recalibration_and_is_opt_in(store: EventStore) -> None:
    clock = Clock(T0)
    cfg = config(reconcile=True, stale_visit_h=4, drift_tolerance=1)
    visits = visits_on(store, cfg, clock)  # tracking starts now
    store.record_batch([car(IN, p, T0 - 6 * H) for p in ("鄂A00001", "鄂A00002", "鄂A00003")])
    clock.now = T0 + H
    assert (
        visits.sweep(reconcile=True).adjustments == []
    )  # not tracked for 2W yet: cars before would count out

    clock.now = T0 + 9 * H
    visits.recalibrate("L01", 3, "operator:li", "counted on site")
    clock.now = T0 + 12 * H
    assert visits.sweep(reconcile=True).adjustments == []  # an operator's count holds for W
    clock.now = T0 + 13.5 * H
    assert [a.after for a in visits.sweep(reconcile=True).adjustments] == [0]

    other = EventStore(str(store.engine.url))
    try:
        off = visits_on(other, config(stale_visit_h=4, drift_tolerance=1), Clock(T0 - 20 * H))
        off.recalibrate("L01", 9, "operator:li", "counted")
        assert off.sweep(now=T0 + 20 * H, reconcile=True).adjustments == []  # reconcile is off by default
    finally:
        other.close()


def test_the_estimate_matches_each_unclaimed_exit_to_the_nearest_earlier_entry() -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    hour = int(now.timestamp() // 3600)

    def b(known_in: int = 0, unread_in: int = 0, unread_out: int = 0, orphan_out: int = 0) -> dict[str, int]:
        return {
            "known_in": known_in,
            "unread_in": unread_in,
            "unread_out": unread_out,
            "orphan_out": orphan_out,
        }

    # W = 4 h. 10 h ago: 3 entries whose exits were never seen (stale, outside the window); 1 h ago two
    # unread entries; now one unread exit and one orphan exit. Nearest earlier: the exits cancel the two
    # recent unread entries, not the old ones, which stay outside the window.
    flows = {
        hour - 10: b(known_in=3),
        hour - 1: b(known_in=2, unread_in=2),
        hour: b(unread_out=1, orphan_out=1),
    }
    e = estimate_from_flows("L01", 50, flows, now, 4)
    assert (e.value, e.open_visits, e.unread_in, e.unread_out, e.orphan_out, e.balance) == (2, 2, 2, 1, 1, 0)
    # an exit with nothing earlier to cancel claims nothing; the value never exceeds the capacity
    assert estimate_from_flows("L01", 50, {hour: b(orphan_out=2)}, now, 4).value == 0
    assert estimate_from_flows("L01", 3, {hour: b(known_in=5)}, now, 4).value == 3


def test_recalibration_is_audited_and_refused_beyond_the_capacity(store: EventStore) -> None:
    visits = visits_on(store, config(), Clock(T0))
    store.record_batch([car(IN, "鄂A12345", T0)])
    adjustment, lot = visits.recalibrate("L01", 17, "operator:li", "counted on site at 09:00")
    assert (adjustment.before, adjustment.after, adjustment.cause, adjustment.actor) == (
        1, 17, "recalibrate", "operator:li"
    )  # fmt: skip
    assert (lot.occupied, lot.free, occupied(store)) == (17, 33, 17)
    with pytest.raises(OccupancyOutOfRange, match=r"lot L01 has 50 spaces: occupied must be 0\.\.50, not 51"):
        visits.recalibrate("L01", 51, "operator:li", "typo")
    with pytest.raises(OccupancyOutOfRange, match="not -1"):
        visits.recalibrate("L01", -1, "operator:li", "typo")
    with pytest.raises(UnknownLot, match="L99"):
        visits.recalibrate("L99", 1, "operator:li", "no such lot")
    with pytest.raises(ValueError, match=r"reason must be 1\.\.400 characters"):
        visits.recalibrate("L01", 1, "operator:li", "  ")
    assert [a.after for a in visits.adjustments("L01")] == [17] and occupied(store) == 17


def test_sensor_reports_re_base_a_sensor_lot(store: EventStore) -> None:
    clock = Clock(T0)
    visits = visits_on(store, config(occupancy_source="sensors", drift_tolerance=0), clock)
    store.record_batch([car(IN, None, T0), car(IN, None, T0), car(IN, None, T0)])
    report = SpaceSensorReport(lot_id="L01", occupied=7, total_sensed=50, ts=T0 + H)
    assert visits.on_sensor_reports([report])["L01"].occupied == 7
    (adjustment,) = visits.adjustments("L01")
    assert (adjustment.before, adjustment.after, adjustment.cause) == (3, 7, "sensor")
    assert "7 of 50 occupied" in adjustment.reason

    older = SpaceSensorReport(lot_id="L01", occupied=1, total_sensed=50, ts=T0)
    assert visits.on_sensor_reports([older]) == {} and occupied(store) == 7  # out of order: ignored
    partial = SpaceSensorReport(lot_id="L01", occupied=10, total_sensed=25, ts=T0 + 2 * H)
    assert visits.on_sensor_reports([partial])["L01"].occupied == 20
    assert "scaled to the lot's 50 spaces: 20" in visits.adjustments("L01")[0].reason
    gates_lot = SpaceSensorReport(lot_id="L02", occupied=5, total_sensed=20, ts=T0 + 2 * H)
    assert visits.on_sensor_reports([gates_lot]) == {} and occupied(store, "L02") == 0  # counted by gates

    with pytest.raises(ValidationError, match="exceeds total_sensed"):
        SpaceSensorReport(lot_id="L01", occupied=30, total_sensed=25, ts=T0)


def test_correcting_a_misread_re_pairs_the_visits_of_both_plates(store: EventStore) -> None:
    clock = Clock(T0 + 3 * H)
    visits = visits_on(store, config(), clock)
    misread = car(OUT, "鄂A12346", T0 + 2 * H)  # 鄂A12345 read as 鄂A12346 on the way out
    unread = car(IN, None, T0 + H)
    store.record_batch([car(IN, "鄂A12345", T0), misread, unread])
    assert shape(visits) == [("鄂A12345", OPEN, None, None), ("鄂A12346", ORPHAN, None, None)]

    correction = visits.correct_plate(misread.id, "鄂a 12345", "operator:li", "checked the crop")
    assert (correction.old_plate, correction.new_plate, correction.lot_id) == ("鄂A12346", "鄂A12345", "L01")
    assert shape(visits) == [("鄂A12345", CLOSED, None, 2.0)]
    assert [(c.event_id, c.old_plate, c.actor) for c in visits.corrections()] == [
        (misread.id, "鄂A12346", "operator:li")
    ]

    visits.correct_plate(
        unread.id, "鄂B77777", "operator:li", "read by eye"
    )  # an unread entry gets its plate
    assert visits.unread("L01") == {"entries": 0, "exits": 0}
    assert [v.status for v in visits.visits("鄂B77777")] == [OPEN]
    assert occupied(store) == 1  # the counter counts vehicles, not plates: unchanged

    with pytest.raises(InvalidPlate, match="'<script>' is not a plate"):
        visits.correct_plate(misread.id, "<script>", "operator:li", "x")
    with pytest.raises(InvalidPlate, match="already reads 鄂A12345"):
        visits.correct_plate(misread.id, "鄂A12345", "operator:li", "x")
    with pytest.raises(EventNotFound):
        visits.correct_plate("01JUNKUNKNOWNEVENT00000000", "鄂A12345", "operator:li", "x")
    elsewhere = car(IN, "鄂C11111", T0, lot="L77")  # stored, but of a lot this configuration lacks
    store.record_batch([elsewhere])
    with pytest.raises(UnknownLot, match="L77"):
        visits.correct_plate(elsewhere.id, "鄂C11112", "operator:li", "x")
    assert len(visits.corrections()) == 2


def test_a_correction_re_checks_a_reconciling_lot(store: EventStore) -> None:
    clock = Clock(T0)
    visits = reconciling(store, clock, drift_tolerance=0)
    store.record_batch([car(IN, "鄂A12345", T0), car(OUT, "鄂A12346", T0 + H)])  # misread exit
    clock.now = T0 - 5 * H  # an operator's count, older than the window
    visits.recalibrate("L01", 3, "operator:li", "counted")
    clock.now = T0 + 2 * H
    wrong = visits.visits("鄂A12346")[0]
    correction = visits.correct_plate(str(wrong.exit_event_id), "鄂A12345", "operator:li", "crop checked")
    assert correction.adjustment is not None and correction.adjustment.after == 0
    assert "after plate correction" in correction.adjustment.reason
    assert correction.lot is not None and correction.lot.occupied == 0


@pytest.mark.parametrize(
    ("lot", "message"),
    [
        ({"max_stay_h": 80}, "max_stay_h \\(80\\) must be less than stale_visit_h \\(72\\)"),
        (
            {"reconcile": True, "occupancy_source": "sensors"},
            "reconcile is for lots counted by their gates",
        ),
        ({"drift_tolerance": -1}, "greater than or equal to 0"),
        ({"occupancy_source": "cameras"}, "'gates' or 'sensors'"),
    ],
)
def test_bad_lot_settings(lot: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**lot)


# -- PostgreSQL ------------------------------------------------------------------------------------
def test_visits_on_postgresql(postgres: str) -> None:
    store = EventStore(postgres)
    try:
        clock = Clock(T0)
        visits = reconciling(store, clock, max_stay_h=2, drift_tolerance=0)
        misread = car(OUT, "鄂A12346", T0 + H)
        store.record_batch([car(OUT, "鄂A12345", T0 + 3 * H)])  # the exit before its entry
        store.record_batch([car(IN, "鄂A12345", T0 + 2 * H), car(IN, "鄂B00001", T0), misread])
        store.record_batch([car(IN, "鄂B00001", T0)])  # a new event of a plate already inside
        assert shape(visits, "鄂A12345") == [("鄂A12345", CLOSED, "late_entry", 1.0)]
        assert [v.status for v in visits.visits("鄂B00001")] == [OPEN, PRESUMED]

        # The counter says 1 (鄂B00001's entry read twice, the misread exit, 鄂A12345 in and out:
        # counted in time order, although its exit was stored first); the pairing says 0:
        # 鄂B00001's second visit is cancelled by the orphan exit that follows it.
        clock.now = T0 + 2.5 * H
        swept = visits.sweep(reconcile=True)
        assert [a.plate for a in swept.raised] == ["鄂B00001"]
        assert [(a.before, a.after, a.cause) for a in swept.adjustments] == [(1, 0, "reconcile")]
        visits.correct_plate(misread.id, "鄂B00001", "operator:li", "crop checked")  # the orphan was its exit
        assert [v.status for v in visits.visits("鄂B00001")] == [CLOSED, PRESUMED]
        assert visits.sweep(reconcile=True).resolved == 1  # the overstay ends with the visit

        adjustment, _lot = visits.recalibrate("L01", 5, "operator:li", "counted")
        assert (adjustment.before, adjustment.after) == (0, 5)
    finally:
        store.close()


# -- through the real broker -----------------------------------------------------------------------
@pytest.mark.integration
def test_collector_pairs_visits_takes_sensor_reports_and_answers_a_refresh(
    tmp_path: Path, mqtt_settings: MqttSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = {
        "name": "c1",
        "database": f"sqlite:///{tmp_path / 'events.sqlite'}",
        "mqtt": mqtt_settings.model_dump(exclude_none=True, mode="json"),
        "lots": [
            {"id": "L01", "name": "江汉路", "capacity": 50, "max_stay_h": 1},
            {
                "id": "L02",
                "name": "汉口站",
                "capacity": 20,
                "occupancy_source": "sensors",
                "drift_tolerance": 0,
            },
        ],
    }
    config_file = write_toml(tmp_path / "collector.toml", doc)
    collector = Collector(CollectorConfig.model_validate(doc))
    topics = Topics(mqtt_settings.topic_root)
    collector.start()
    try:
        wait_until(collector.connected.is_set, what="the collector's connection")
        # `connected` is set inside on_connect, before the SUBSCRIBE leaves; the collector's status
        # is published after it on the same connection: once the status is at the broker, so is
        # the subscription
        status = topics.collector_status("c1")
        wait_until(lambda: retained(mqtt_settings, status, timeout=0.5) is not None, what="the subscription")
        now = datetime.now(UTC)
        sent = [
            car(IN, "鄂A12345", now - 3 * H),  # still inside, for 3 h: over the 1 h maximum
            car(IN, "鄂B54321", now - 0.5 * H),
            car(OUT, "鄂B54321", now),
        ]
        for ev in sent:
            publish_raw(mqtt_settings, topics.gate_events(ev.gate_id), encode(ev))
        wait_until(lambda: collector.stored == 3, what="three events stored")
        assert [(v.plate, v.status) for v in collector.visits.visits(lot_id="L01")] == [
            ("鄂B54321", CLOSED), ("鄂A12345", OPEN)
        ]  # fmt: skip

        collector._sweep_visits()  # what Collector.run does every STATUS_INTERVAL_S

        def overstaying() -> list[str] | None:
            payload = retained(mqtt_settings, topics.lot_alerts("L01"), timeout=1)
            return [o.plate for o in decode(LotAlerts, payload).overstays] if payload else None

        wait_until(lambda: overstaying() == ["鄂A12345"], what="the overstay alert retained")

        # bay sensors: a good report re-bases the sensor lot; bad ones are counted by reason
        good = SpaceSensorReport(lot_id="L02", occupied=12, total_sensed=20, ts=datetime.now(UTC))
        publish_raw(mqtt_settings, topics.lot_sensors("L02"), b'{"v": 1, "lot_id": "L02"')
        publish_raw(mqtt_settings, topics.lot_sensors("L01"), encode(good))  # on another lot's topic
        publish_raw(
            mqtt_settings, topics.lot_sensors("L02"), encode(good.model_copy(update={"occupied": 21}))
        )
        publish_raw(
            mqtt_settings, topics.lot_sensors("L09"), encode(good.model_copy(update={"lot_id": "L09"}))
        )
        publish_raw(mqtt_settings, topics.lot_sensors("L02"), encode(good))
        wait_until(
            lambda: collector.rejected == {"json": 1, "lot_mismatch": 1, "schema": 1, "unknown_lot": 1},
            what="four bad sensor reports counted",
        )
        wait_until(lambda: occupied(collector.store, "L02") == 12, what="the sensor lot re-based")

        def availability(lot_id: str) -> LotAvailability | None:
            payload = retained(mqtt_settings, topics.lot_availability(lot_id), timeout=2)
            return decode(LotAvailability, payload) if payload else None

        wait_until(
            lambda: (a := availability("L02")) is not None and a.occupied == 12, what="L02 re-published"
        )

        # an operator recalibrates from the command line: stored, audited, and every collector asked
        # to re-publish (nothing else would re-publish L01 before republish_s)
        wait_until(lambda: (a := availability("L01")) is not None and a.occupied == 1, what="L01 published")
        code = parkgate(
            [
                "lots",
                "recalibrate",
                "--config",
                str(config_file),
                "L01",
                "--occupied",
                "7",
                "--reason",
                "counted",
            ]
        )
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert code == 0
        assert {k: out[k] for k in ("lot", "before", "after", "free", "cause", "refresh_sent")} == {
            "lot": "L01", "before": 1, "after": 7, "free": 43, "cause": "recalibrate", "refresh_sent": True,
        }  # fmt: skip
        wait_until(
            lambda: (a := availability("L01")) is not None and a.occupied == 7, what="L01 re-published"
        )
        assert [a.cause for a in collector.visits.adjustments("L01")] == ["recalibrate"]

        assert parkgate(["lots", "recalibrate", "--config", str(config_file), "L01", "--occupied", "51",
                         "--reason", "typo"]) == 2  # fmt: skip
        assert "occupied must be 0..50, not 51" in capsys.readouterr().err
    finally:
        collector.close()
