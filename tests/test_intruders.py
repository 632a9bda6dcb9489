"""Inspection areas: a scripted inspection day through the real module on a real SQLite file (warn,
lock, the lane refuses, an operator reviews and unlocks, every step audited), the person seen in
several vehicles, the pass-rate anomaly, the wire format, and a real lane on the real broker
refusing a plate locked by the station's retained lists."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from ulid import ULID

from cloud.config import CollectorConfig
from cloud.events_store import EventStore
from cloud.intruders import (
    SYSTEM,
    AlertNotFound,
    AlertStateError,
    InspectionAreas,
    UnknownStation,
)
from edge.config import EdgeConfig
from edge.decision import Policy, decide
from edge.frames import Frame
from edge.pipeline import EdgeNode
from parkgate.settings import MqttSettings
from protocol import (
    Action,
    Decision,
    Direction,
    GateEvent,
    InspectionResult,
    LotLists,
    PayloadError,
    Reason,
    Topics,
    decode,
    encode,
)
from tests.mqtt_helpers import publish_raw

DAY = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)  # 08:00 in Baoding
LANE = "ST01-L1"
_seq = itertools.count(1)


class ScriptClock:
    """The time of automatic steps, moved along by the script."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def config(**station: object) -> CollectorConfig:
    return CollectorConfig.model_validate(
        {
            "lots": [
                {
                    "id": "ST01",
                    "name": "保定检测站",
                    "capacity": 40,
                    "locked": ["冀F99999"],
                    "deny": ["冀F88888"],
                }
            ],
            "stations": [{"id": "ST01", "name": "保定检测站", **station}],
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    store = EventStore(f"sqlite:///{tmp_path / 'events.sqlite'}")
    yield store
    store.close()


def entry(
    at: datetime, plate: str | None, person: str | None = None, action: Action = Action.OPEN
) -> GateEvent:
    reason = Reason.SPACE_FREE if action is Action.OPEN else Reason.LOCKED
    return GateEvent(
        id=str(ULID()), epoch="EPOCH0001", seq=next(_seq), ts=at, lot_id="ST01", gate_id=LANE,
        direction=Direction.ENTRY, plate=plate, confidence=0.9 if plate else 0.0,
        decision=Decision(action=action, reason=reason), person=person,
    )  # fmt: skip


class Station:
    """The collector's path for one batch: store the events, then judge them (as Collector.process will)."""

    def __init__(self, store: EventStore, areas: InspectionAreas, clock: ScriptClock) -> None:
        self.store, self.areas, self.clock = store, areas, clock

    def lane(self, at: datetime, plate: str | None, person: str | None = None) -> GateEvent:
        """A vehicle at the lane: it decides from the station's current lists, like a real lane."""
        lists = self.areas.station_lists("ST01")
        decision = decide(Direction.ENTRY, plate, None, Policy(locked=frozenset(lists.locked)))
        if person is not None and person in lists.locked_persons:  # the lane-side person check
            decision = Decision(action=Action.DENY, reason=Reason.LOCKED)
        ev = entry(at, plate, person, decision.action)
        self.clock.now = at + timedelta(seconds=5)
        self.store.record_batch([ev])
        self.areas.on_events([ev])
        return ev


def test_scripted_inspection_day(store: EventStore) -> None:
    clock = ScriptClock(DAY)
    areas = InspectionAreas(store.engine, config(), clock=clock)
    store.sync_lots(areas.cfg.lots)
    station = Station(store, areas, clock)
    h = lambda hours: DAY + timedelta(hours=hours)  # noqa: E731

    station.lane(h(0.5), "冀F30001", "CITIZEN-1")  # an ordinary customer, once
    assert station.lane(h(1), "冀F12345").decision.action is Action.OPEN
    station.lane(h(1.5), "冀F20001", "MID-0001")
    station.lane(h(3), "冀F12345")  # second entry of the plate: warned
    assert [(a.subject, a.kind, a.status) for a in areas.alerts()] == [("冀F12345", "warn", "open")]
    assert areas.station_lists("ST01").locked == ["冀F99999"]  # the lot's own list only: not locked yet

    station.lane(h(4), "冀F20002", "MID-0001")  # the same person in a second vehicle: warned and flagged
    changes_before = len(areas.alerts())
    replay = entry(h(4.5), "冀F12345")
    clock.now = h(4.5) + timedelta(seconds=5)
    store.record_batch([replay])
    first = areas.on_events([replay])  # third entry of the plate: locked
    assert areas.on_events([replay]) == []  # a redelivery changes nothing
    assert len(areas.alerts()) == changes_before + 1
    assert len(first) == 1 and first[0].lists is not None and first[0].lot_id == "ST01"
    assert first[0].lists.locked == ["冀F12345", "冀F99999"]

    station.lane(h(6), "冀F20003", "MID-0001")  # third entry of the person: locked
    lists = areas.station_lists("ST01")
    assert (lists.lot_id, lists.locked, lists.locked_persons) == (
        "ST01",
        ["冀F12345", "冀F99999"],
        ["MID-0001"],
    )
    assert lists.deny == ["冀F88888"]  # the lot's configured lists ride along

    refused = station.lane(h(7), "冀F12345")
    assert (refused.decision.action, refused.decision.reason) == (Action.DENY, Reason.LOCKED)
    assert station.lane(h(7.5), "冀F20004", "MID-0001").decision.reason is Reason.LOCKED
    assert [a.kind for a in areas.alerts(subject="冀F12345")] == ["warn", "lock"]  # no more while locked

    person_alerts = [(a.kind, a.rule, a.count) for a in areas.alerts(subject="MID-0001")]
    assert person_alerts == [
        ("warn", "entries", 2),
        ("flag", "person_multi_vehicle", 2),
        ("lock", "entries", 3),
    ]
    assert "冀F20001, 冀F20002" in areas.alerts(subject="MID-0001")[1].detail
    assert areas.alerts(subject="冀F30001") == [] and areas.alerts(subject="CITIZEN-1") == []

    # The operator reviews (the lock holds), then unlocks.
    lock = next(a for a in areas.alerts(subject="冀F12345") if a.kind == "lock")
    reviewed = areas.review(lock.id, "operator:wang", "video checked: same car, no booking", at=h(8))
    assert reviewed.status == "reviewed"
    assert "冀F12345" in areas.station_lists("ST01").locked
    change = areas.unlock(lock.id, "operator:wang", "owner's repeat visits explained", at=h(9))
    assert change.lists is not None and change.lists.locked == ["冀F99999"]
    assert change.lists.locked_persons == ["MID-0001"]
    assert station.lane(h(10), "冀F12345").decision.action is Action.OPEN
    assert [a.kind for a in areas.alerts(subject="冀F12345")] == ["warn", "lock"]  # counting starts again

    trail = areas.audit("ST01", subject="冀F12345")
    assert [(t.action, t.actor, t.status) for t in trail] == [
        ("warn", SYSTEM, "open"),
        ("lock", SYSTEM, "locked"),
        ("review", "operator:wang", "reviewed"),
        ("unlock", "operator:wang", "unlocked"),
    ]
    assert [t.at for t in trail] == [h(3) + timedelta(seconds=5), h(4.5) + timedelta(seconds=5), h(8), h(9)]
    assert "2 entries of plate 冀F12345 within 24 h (warn at 2)" in trail[0].why
    assert "3 entries" in trail[1].why and LANE in trail[1].why
    assert trail[3].why == "owner's repeat visits explained"
    assert [t.action for t in areas.audit(subject="MID-0001")] == ["warn", "flag", "lock"]


def test_window_slides_over_midnight_and_forgets_after_a_day(store: EventStore) -> None:
    areas = InspectionAreas(store.engine, config())
    late = datetime(2026, 3, 10, 15, 50, tzinfo=UTC)  # 23:50 in Baoding
    areas.on_events([entry(late, "冀F40001"), entry(late + timedelta(minutes=20), "冀F40001")])
    assert [a.kind for a in areas.alerts(subject="冀F40001")] == ["warn"]  # midnight is no loophole

    areas.on_events([entry(late, "冀F50001"), entry(late + timedelta(hours=25), "冀F50001")])
    assert areas.alerts(subject="冀F50001") == []


def test_same_person_in_one_vehicle_is_not_flagged(store: EventStore) -> None:
    areas = InspectionAreas(store.engine, config(persons={"warn_at": 3, "lock_at": 5}))
    areas.on_events(
        [entry(DAY, "冀F60001", "OWNER-1"), entry(DAY + timedelta(hours=2), "冀F60001", "OWNER-1")]
    )
    assert areas.alerts(subject="OWNER-1") == []
    areas.on_events([entry(DAY + timedelta(hours=3), "冀F60002", "OWNER-1")])
    assert [(a.kind, a.count) for a in areas.alerts(subject="OWNER-1")] == [("warn", 3), ("flag", 2)]


def test_refused_attempts_count_only_when_configured(store: EventStore) -> None:
    areas = InspectionAreas(store.engine, config(count_refused=False))
    areas.on_events([entry(DAY + timedelta(hours=n), "冀F70001", action=Action.DENY) for n in range(3)])
    assert areas.alerts() == []


def inspection(station: str, at: datetime, passed: bool) -> InspectionResult:
    return InspectionResult(
        id=str(ULID()), ts=at, station=station, gate_id=f"{station}-L1", plate="冀F12345",
        result="pass" if passed else "fail",
    )  # fmt: skip


def test_pass_rate_above_the_peer_band_for_three_months_is_flagged(store: EventStore) -> None:
    cfg = CollectorConfig.model_validate({"pass_rates": {"min_results": 20, "months": 3}})
    areas = InspectionAreas(store.engine, cfg)
    months = ["2025-12", "2026-01", "2026-02", "2026-03"]
    normal = {"ST-A": 0.800, "ST-B": 0.825, "ST-C": 0.775, "ST-D": 0.800, "ST-E": 0.850}
    rates = {st: [rate] * 4 for st, rate in normal.items()}
    rates["ST-HIGH"] = [0.800, 0.975, 0.975, 0.975]  # three months running
    rates["ST-TWO"] = [0.975, 0.975, 0.800, 0.800]  # only two
    results = [
        inspection(
            st,
            datetime.fromisoformat(f"{month}-15T02:00:00+00:00") + timedelta(minutes=n),
            n < round(rate * 40),
        )
        for st, per_month in rates.items()
        for month, rate in zip(months, per_month, strict=True)
        for n in range(40)
    ]
    assert areas.on_results(results) == len(results)
    assert areas.on_results(results[:10]) == 0  # stored once by id

    table = {(r.station_id, r.month): r for r in areas.pass_rates()}
    high = table["ST-HIGH", "2026-03"]
    assert (high.rate, high.run, high.flagged) == (0.975, 3, True)
    assert high.band_high is not None and high.band_high < high.rate and high.median == pytest.approx(0.80)
    assert not table["ST-HIGH", "2026-02"].flagged  # two months is not yet a pattern
    assert max(r.run for r in table.values() if r.station_id == "ST-TWO") == 2
    assert {r.station_id for r in table.values() if r.flagged} == {"ST-HIGH"}
    assert not any(r.above for r in table.values() if r.station_id in normal)
    assert [r.month for r in areas.pass_rates(since="2026-02") if r.station_id == "ST-HIGH"] == months[2:]


def test_months_are_counted_in_the_station_time_zone(store: EventStore) -> None:
    areas = InspectionAreas(store.engine, CollectorConfig())
    late = inspection("ST09", datetime(2026, 1, 31, 17, 0, tzinfo=UTC), passed=False)
    assert areas.on_result(late) and not areas.on_result(late)
    assert [(r.month, r.rate, r.rated) for r in areas.pass_rates()] == [("2026-02", 0.0, False)]


def test_operator_errors(store: EventStore) -> None:
    areas = InspectionAreas(store.engine, config())
    areas.on_events([entry(DAY + timedelta(hours=n), "冀F80001") for n in range(2)])
    warn = areas.alerts()[0]
    with pytest.raises(AlertStateError, match="only a lock in force can be unlocked"):
        areas.unlock(warn.id, "operator:li", "no")
    with pytest.raises(AlertNotFound, match="no alert 999"):
        areas.review(999, "operator:li", "x")
    with pytest.raises(ValueError, match="operator must be"):
        areas.review(warn.id, " ", "x")
    areas.review(warn.id, "operator:li", "known customer")
    with pytest.raises(AlertStateError, match="is reviewed"):
        areas.review(warn.id, "operator:li", "again")
    with pytest.raises(UnknownStation, match="ST77"):
        areas.station_lists("ST77")
    assert [t.action for t in areas.audit(alert_id=warn.id)] == ["warn", "review"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"stations": [{"id": "S", "name": "n", "plates": {"warn_at": 3, "lock_at": 3}}]}, "lock_at"),
        (
            {"stations": [{"id": "S", "name": "n"}, {"id": "T", "name": "n", "lot_id": "S"}]},
            "station lot_ids",
        ),
        ({"pass_rates": {"timezone": "Mars/Base"}}, "unknown time zone"),
    ],
)
def test_bad_station_config(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CollectorConfig.model_validate(doc)


def test_wire_format() -> None:
    plain = entry(DAY, "冀F12345")
    assert b"person" not in encode(plain)  # old receivers (extra="forbid") still accept it
    with_person = entry(DAY, "冀F12345", "MID-0001")
    assert decode(GateEvent, encode(with_person)).person == "MID-0001"
    bad = encode(with_person).replace(b"MID-0001", b"MID 0001")
    with pytest.raises(PayloadError, match="person"):
        decode(GateEvent, bad)
    assert b"locked_persons" not in encode(LotLists(lot_id="ST01", ts=DAY))
    result = InspectionResult(
        id=str(ULID()), ts=DAY, station="ST01", gate_id=LANE, plate="冀F12345", person="MID-0001",
        booking="W3ZQ7K2M", result="pass",
    )  # fmt: skip
    assert decode(InspectionResult, encode(result)) == result
    topics = Topics("parkgate")
    assert topics.gate_inspections(LANE) == "parkgate/v1/gates/ST01-L1/inspections"
    assert topics.all_gate_inspections() == "parkgate/v1/gates/+/inspections"
    assert topics.gate_id_of(topics.gate_inspections(LANE)) == LANE


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.integration
def test_lane_refuses_a_plate_locked_through_the_retained_lists(
    tmp_path: Path, mqtt_settings: MqttSettings, store: EventStore
) -> None:
    """The lane's own events lock its plate; the station's lists reach the real lane through the
    real broker; the lane refuses; the unlock reaches it the same way and it opens again."""
    cfg = EdgeConfig.model_validate(
        {
            "gate_id": LANE,
            "lot_id": "ST01",
            "direction": "entry",
            "outbox": tmp_path / "outbox.sqlite",
            "mqtt": mqtt_settings.model_dump(),
            "camera": {"kind": "synthetic", "render": False},
            "ocr": {"engine": "truth"},
            "policy": {"cooldown_s": 0},
            "gate": {"travel_s": 0.1, "close_delay_s": 0.1, "open_timeout_s": 1.0},
            "simulation": {"enabled": True},
        }
    )
    areas = InspectionAreas(store.engine, config())
    store.sync_lots(areas.cfg.lots)
    topic = Topics(mqtt_settings.topic_root).lot_lists("ST01")
    node = EdgeNode.build(cfg)
    try:
        assert node.link is not None
        node.link.start()
        wait_until(node.link.connected.is_set, what="connection")

        def car() -> GateEvent:
            event = node.handle(Frame(source="t", ts=time.time(), truth="冀F12345"))
            assert event is not None
            store.record_batch([event])
            for change in areas.on_events([event]):
                if change.lists is not None:
                    publish_raw(mqtt_settings, topic, encode(change.lists), retain=True)
            return event

        assert [car().decision.action for _ in range(3)] == [Action.OPEN] * 3
        wait_until(lambda: "冀F12345" in node.policy.locked, what="the lock to reach the lane")
        refused = car()
        assert (refused.decision.action, refused.decision.reason) == (Action.DENY, Reason.LOCKED)

        lock = areas.alerts(status=["locked"])[0]
        change = areas.unlock(lock.id, "operator:wang", "middleman suspicion cleared")
        assert change.lists is not None
        publish_raw(mqtt_settings, topic, encode(change.lists), retain=True)
        wait_until(lambda: "冀F12345" not in node.policy.locked, what="the unlock to reach the lane")
        assert car().decision.reason is Reason.SPACE_FREE
        assert [t.action for t in areas.audit(subject="冀F12345")] == ["warn", "lock", "unlock"]
    finally:
        node.close()
