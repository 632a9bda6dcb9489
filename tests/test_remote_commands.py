"""Remote commands through the real broker to a real edge node (simulated pins): an "open" lifts
the barrier once and is answered; an expired one is refused and reported; a malformed one is
counted and answered as invalid; modes and lists change what the gate decides."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from ulid import ULID

from edge.config import EdgeConfig
from edge.frames import Frame
from edge.pipeline import EdgeNode
from parkgate.mqtt import make_client
from parkgate.settings import MqttSettings
from protocol import (
    Action,
    CommandName,
    CommandResult,
    GateCommand,
    GateMode,
    LotLists,
    Reason,
    Topics,
    decode,
    encode,
)
from protocol.messages import utc_now
from tests.mqtt_helpers import publish_raw
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


class Results:
    """Collects the gate's command results from the broker."""

    def __init__(self, settings: MqttSettings, gate_id: str) -> None:
        self.items: list[CommandResult] = []
        self.client = make_client(settings, f"results-{uuid.uuid4().hex[:6]}")
        topic = Topics(settings.topic_root).gate_results(gate_id)
        self.client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
        self.client.on_message = self._take
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()

    def _take(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.items.append(decode(CommandResult, msg.payload))

    def of(self, command_id: str) -> CommandResult | None:
        return next((r for r in self.items if r.command_id == command_id), None)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def node(tmp_path: Path, mqtt_settings: MqttSettings) -> Iterator[EdgeNode]:
    cfg = EdgeConfig.model_validate(
        {
            "gate_id": "G1",
            "lot_id": "L1",
            "direction": "entry",
            "outbox": tmp_path / "outbox.sqlite",
            "mqtt": mqtt_settings.model_dump(),
            "camera": {"kind": "synthetic", "render": False},
            "ocr": {"engine": "truth"},
            "gate": {"travel_s": 0.1, "close_delay_s": 0.1, "open_timeout_s": 1.0},
            "simulation": {"enabled": True},
        }
    )
    node = EdgeNode.build(cfg)
    assert node.link is not None
    node.link.start()
    wait_until(node.link.connected.is_set, what="connection")
    time.sleep(0.2)  # subscriptions granted
    yield node
    node.close()


def command(name: CommandName, *, ttl_s: float = 30, age_s: float = 0, **extra: object) -> GateCommand:
    issued = utc_now() - timedelta(seconds=age_s)
    return GateCommand(
        id=str(ULID()), gate_id="G1", command=name, issuer="operator:wang", ts=issued,
        expires_at=issued + timedelta(seconds=ttl_s), reason="test", **extra,  # type: ignore[arg-type]
    )  # fmt: skip


def test_open_expired_and_malformed_commands(node: EdgeNode, mqtt_settings: MqttSettings) -> None:
    topic = Topics(mqtt_settings.topic_root).gate_commands("G1")
    results = Results(mqtt_settings, "G1")
    time.sleep(0.3)
    try:
        assert node.pin_factory is not None
        open_pin = node.pin_factory.pin(node.cfg.gate.open_pin)
        stale = command(CommandName.OPEN, age_s=4 * 3600, ttl_s=60)
        publish_raw(mqtt_settings, topic, encode(stale))
        wait_until(lambda: results.of(stale.id) is not None, what="expired command's result")
        assert results.of(stale.id).result == "refused"  # type: ignore[union-attr]
        assert "expired" in results.of(stale.id).reason  # type: ignore[union-attr]
        assert not any(s.state for s in open_pin.states[1:]), "a stale open lifted the barrier"

        fresh = command(CommandName.OPEN)
        publish_raw(mqtt_settings, topic, encode(fresh))
        wait_until(lambda: results.of(fresh.id) is not None, what="open command's result")
        assert results.of(fresh.id).result == "done"  # type: ignore[union-attr]
        wait_until(lambda: any(s.state for s in open_pin.states), what="open relay")
        assert node.stats.events == 1  # the remote open is on record

        publish_raw(mqtt_settings, topic, b'{"id": "BROKEN-0000000001", "command": "fly"}')
        wait_until(lambda: results.of("BROKEN-0000000001") is not None, what="malformed command's result")
        answer = results.of("BROKEN-0000000001")
        assert answer is not None and answer.result == "refused" and answer.reason.startswith("invalid")
        assert node.link is not None and node.link.rejected["schema"] == 1
    finally:
        results.stop()


def test_mode_and_lists_change_decisions(node: EdgeNode, mqtt_settings: MqttSettings) -> None:
    topics = Topics(mqtt_settings.topic_root)
    lists = LotLists(lot_id="L1", ts=utc_now(), locked=["鄂A77777"])
    publish_raw(mqtt_settings, topics.lot_lists("L1"), encode(lists), retain=True)
    wait_until(lambda: "鄂A77777" in node.policy.locked, what="lists to arrive")
    frame = Frame(source="t", ts=time.time(), truth="鄂A77777")
    event = node.handle(frame)
    assert event is not None and event.decision.reason is Reason.LOCKED
    assert node.lists.path.exists()  # kept on disk for offline decisions

    publish_raw(
        mqtt_settings, topics.gate_commands("G1"), encode(command(CommandName.SET_MODE, mode=GateMode.CLOSED))
    )
    wait_until(lambda: node.mode is GateMode.CLOSED, what="mode change")
    event = node.handle(Frame(source="t", ts=time.time(), truth="鄂A12345"))
    assert event is not None and (event.decision.action, event.decision.reason) == (
        Action.DENY,
        Reason.LOT_CLOSED,
    )


def test_cut_off_gate_counts_its_own_admissions_against_the_last_free_count(node: EdgeNode) -> None:
    """Offline, the gate still knows the last free count and subtracts the cars it let in since."""
    from protocol import LotAvailability

    assert node.link is not None
    node.link.client.disconnect()  # the cloud is gone; decisions go on
    wait_until(lambda: not node.link.connected.is_set(), what="disconnect")  # type: ignore[union-attr]
    node.link.availability = LotAvailability(
        lot_id="L1", name="lot", capacity=10, occupied=8, free=2, ts=utc_now() - timedelta(seconds=1)
    )
    decisions = [node.handle(Frame(source="t", ts=time.time(), truth=f"鄂A1234{n}")) for n in range(3)]
    assert [d.decision.reason for d in decisions if d] == [
        Reason.SPACE_FREE,
        Reason.SPACE_FREE,
        Reason.LOT_FULL,
    ]
    assert node.outbox.backlog()[0] == 3  # all three on record, waiting for the cloud
