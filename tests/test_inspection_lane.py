"""An inspection day through the whole system: a lane (real edge node, simulated pins) sends its
entries through the real broker to the collector, which warns then locks a repeat plate and pushes
the lock to the lane, which refuses it; an operator unlocks and the lane admits it again; the
audit trail shows every step."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.collector import Collector
from cloud.config import CollectorConfig, LotConfig, StationConfig
from edge.config import EdgeConfig
from edge.frames import Frame
from edge.pipeline import EdgeNode
from parkgate.settings import MqttSettings
from protocol import Action, Reason
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
PLATE = "冀F12345"


@pytest.fixture
def system(tmp_path: Path, mqtt_settings: MqttSettings) -> Iterator[tuple[Collector, EdgeNode]]:
    collector = Collector(
        CollectorConfig(
            name="c1",
            database=f"sqlite:///{tmp_path / 'events.sqlite'}",
            mqtt=mqtt_settings,
            lots=[LotConfig(id="ST01", name="保定检测站", capacity=50)],
            stations=[StationConfig(id="ST01", name="保定检测站")],
        )
    )
    collector.start()
    node = EdgeNode.build(
        EdgeConfig.model_validate(
            {
                "gate_id": "ST01-lane1",
                "lot_id": "ST01",
                "direction": "entry",
                "outbox": tmp_path / "lane.sqlite",
                "mqtt": mqtt_settings.model_dump(),
                "camera": {"kind": "synthetic", "render": False},
                "ocr": {"engine": "truth"},
                "policy": {"cooldown_s": 0},
                "gate": {"travel_s": 0.05, "close_delay_s": 0.05},
                "simulation": {"enabled": True},
            }
        )
    )
    assert node.link is not None
    node.link.start()
    wait_until(lambda: collector.connected.is_set() and node.link.connected.is_set(), what="connections")  # type: ignore[union-attr]
    yield collector, node
    node.close()
    collector.close()


def test_repeat_plate_is_warned_locked_refused_and_unlocked(system: tuple[Collector, EdgeNode]) -> None:
    collector, node = system
    decisions = []
    for n in range(3):
        ev = node.handle(Frame(source=f"visit {n}", ts=time.time(), truth=PLATE))
        assert ev is not None
        decisions.append(ev.decision.reason)
        wait_until(lambda n=n: collector.stored == n + 1, what=f"entry {n + 1} stored")
    assert decisions == [Reason.SPACE_FREE] * 3  # the lock comes with the third entry
    wait_until(lambda: PLATE in node.policy.locked, what="the lock to reach the lane")

    refused = node.handle(Frame(source="visit 4", ts=time.time(), truth=PLATE))
    assert refused is not None and (refused.decision.action, refused.decision.reason) == (
        Action.DENY,
        Reason.LOCKED,
    )

    alerts = collector.areas.alerts("ST01")
    lock = next(a for a in alerts if a.kind == "lock")
    collector.areas.review(lock.id, "operator:zhao", "seen on camera: a middleman")
    collector.areas.unlock(lock.id, "operator:zhao", "cleared after interview")
    collector._publish_all()  # what the periodic re-publish does after a dashboard unlock
    wait_until(lambda: PLATE not in node.policy.locked, what="the unlock to reach the lane")
    admitted = node.handle(Frame(source="visit 5", ts=time.time(), truth=PLATE))
    assert admitted is not None and admitted.decision.action is Action.OPEN

    steps = [(a.action, a.actor) for a in collector.areas.audit("ST01")]
    assert [s[0] for s in steps] == ["warn", "lock", "review", "unlock"], steps
    assert steps[2][1] == steps[3][1] == "operator:zhao"
