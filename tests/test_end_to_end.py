"""A car in a real photo opens the barrier and the lot's retained availability counts it.

Real Mosquitto (free port, generated config), the real collector on a SQLite file, a real edge
node with RapidOCR; only the Pi's pins are simulated (MockFactory).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cloud.collector import Collector
from cloud.config import CollectorConfig, LotConfig, ScreenConfig, ScreenLot
from edge.config import EdgeConfig
from edge.frames import FilesSource
from edge.pipeline import EdgeNode
from parkgate.settings import MqttSettings
from protocol import (
    Action,
    Decision,
    Direction,
    GateEvent,
    LotAvailability,
    Reason,
    ScreenContent,
    Topics,
    decode,
    encode,
)
from protocol.messages import utc_now
from tests.mqtt_helpers import publish_raw, retained
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.dataset]


@pytest.fixture
def collector(tmp_path: Path, mqtt_settings: MqttSettings):  # type: ignore[no-untyped-def]
    cfg = CollectorConfig(
        name="c1",
        database=f"sqlite:///{tmp_path / 'events.sqlite'}",
        mqtt=mqtt_settings,
        lots=[LotConfig(id="L1", name="江汉路停车场", capacity=10)],
        screens=[ScreenConfig(id="S1", name="路口屏", lots=[ScreenLot(lot_id="L1", arrow="left")])],
    )
    c = Collector(cfg)
    c.start()
    wait_until(c.connected.is_set, what="collector connection")
    yield c
    c.close()


def edge_config(tmp_path: Path, settings: MqttSettings, photo: Path) -> EdgeConfig:
    return EdgeConfig.model_validate(
        {
            "gate_id": "L1-in",
            "lot_id": "L1",
            "direction": "entry",
            "outbox": tmp_path / "outbox.sqlite",
            "mqtt": settings.model_dump(),
            "camera": {"kind": "files", "path": photo, "interval_s": 0},
            "gate": {"travel_s": 0.2, "close_delay_s": 0.1, "open_timeout_s": 5},
            "simulation": {"enabled": True},
        }
    )


def availability(settings: MqttSettings) -> LotAvailability:
    payload = retained(settings, Topics(settings.topic_root).lot_availability("L1"))
    assert payload is not None, "no retained availability"
    return decode(LotAvailability, payload)


def test_car_in_photo_opens_barrier_is_stored_once_and_counted(
    tmp_path: Path, mqtt_settings: MqttSettings, collector: Collector, dataset: Path, manifest: dict[str, str]
) -> None:
    topics = Topics(mqtt_settings.topic_root)
    assert availability(mqtt_settings).free == 10
    photo = dataset / "scene_001.jpg"
    cfg = edge_config(tmp_path, mqtt_settings, photo)
    node = EdgeNode.build(cfg)
    assert node.link is not None and node.pin_factory is not None
    try:
        node.link.start()
        wait_until(lambda: node.link.availability is not None, what="edge to receive availability")
        frame = next(FilesSource(cfg.camera).frames(threading.Event()))  # type: ignore[arg-type]
        event = node.handle(frame)

        assert event is not None
        assert event.plate == manifest["scene_001.jpg"]
        assert event.decision.action is Action.OPEN and event.direction is Direction.ENTRY

        # the open relay pulsed: on for the travel time, then off
        open_pin = node.pin_factory.pin(cfg.gate.open_pin)
        wait_until(lambda: [s.state for s in open_pin.states] == [False, True, False], 3, "open relay pulse")
        # MockPin records each state with the time since the previous change
        assert open_pin.states[2].timestamp == pytest.approx(cfg.gate.travel_s, abs=0.1)

        # acknowledged by the broker -> left the outbox; stored exactly once -> counted
        wait_until(lambda: node.outbox.backlog()[0] == 0, what="outbox to drain")
        wait_until(lambda: collector.stored == 1, what="collector to store the event")
        assert collector.store.count_events(event.id) == 1
        # the plate crop travelled with the event; crop and frame are kept at the gate too
        crop = collector.store.snapshot(event.id)
        assert crop is not None and crop[:2] == b"\xff\xd8"  # a JPEG
        kept = sorted(p.name for p in node.snapshots.folder.iterdir())
        assert kept == [f"{event.id}.crop.jpg", f"{event.id}.frame.jpg"]
        wait_until(lambda: availability(mqtt_settings).free == 9, what="availability 9")
        screen = decode(ScreenContent, retained(mqtt_settings, topics.screen("S1")) or b"")
        assert screen.rows[0].free == 9

        # a second delivery of the same event changes nothing
        publish_raw(mqtt_settings, topics.gate_events("L1-in"), encode(event))
        wait_until(lambda: collector.duplicates == 1, what="duplicate to be seen")
        assert collector.store.count_events() == 1
        assert collector.store.lot("L1").occupied == 1  # type: ignore[union-attr]
        assert availability(mqtt_settings).free == 9
    finally:
        node.close()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "json"),
        (b'{"v": 99}', "version"),
        (b'{"v": 1, "type": "vehicle", "id": "x"}', "schema"),
        (b"{" + b" " * 300_000 + b"}", "too_large"),
    ],
)
def test_bad_payload_is_counted_and_stream_goes_on(
    payload: bytes, reason: str, mqtt_settings: MqttSettings, collector: Collector
) -> None:
    topics = Topics(mqtt_settings.topic_root)
    publish_raw(mqtt_settings, topics.gate_events("L1-in"), payload)
    good = GateEvent(
        epoch="TESTEPOCH01", id="01JABCDEFGHJKMNPQRSTVWXYZ0", seq=1, ts=utc_now(), lot_id="L1", gate_id="L1-in",
        direction=Direction.ENTRY, plate="鄂A12345", confidence=0.9,
        decision=Decision(action=Action.OPEN, reason=Reason.SPACE_FREE),
    )  # fmt: skip
    publish_raw(mqtt_settings, topics.gate_events("L1-in"), encode(good))
    wait_until(lambda: collector.stored == 1, what="the good event after the bad one")
    assert collector.rejected[reason] == 1
    assert collector.store.count_events() == 1


def test_event_published_under_another_gates_topic_is_refused(
    mqtt_settings: MqttSettings, collector: Collector
) -> None:
    forged = GateEvent(
        epoch="TESTEPOCH01", id="01JABCDEFGHJKMNPQRSTVWXYZ1", seq=1, ts=utc_now(), lot_id="L1", gate_id="L1-in",
        direction=Direction.EXIT, decision=Decision(action=Action.OPEN, reason=Reason.EXIT),
    )  # fmt: skip
    publish_raw(mqtt_settings, Topics(mqtt_settings.topic_root).gate_events("L9-out"), encode(forged))
    wait_until(lambda: collector.rejected["gate_mismatch"] == 1, what="forged event to be refused")
    assert collector.store.count_events() == 0
