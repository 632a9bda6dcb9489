"""Events leave the edge's outbox only after the broker acknowledged them, wait there while the
broker is away, and reach the collector exactly once when it is back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ulid import ULID

from cloud.collector import Collector
from cloud.config import CollectorConfig, LotConfig
from edge.mqtt_link import EdgeLink
from edge.outbox import Outbox
from parkgate.broker import Mosquitto
from parkgate.settings import MqttSettings
from protocol import Action, Decision, Direction, GateEvent, Reason, Topics, encode
from protocol.messages import utc_now
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def append_event(outbox: Outbox, topics: Topics) -> None:
    def build(seq: int) -> tuple[str, str, bytes]:
        ev = GateEvent(
            epoch=outbox.epoch, id=str(ULID()), seq=seq, ts=utc_now(), lot_id="L1", gate_id="L1-in",
            direction=Direction.ENTRY, plate=None, decision=Decision(action=Action.OPEN, reason=Reason.NO_PLATE_READ),
        )  # fmt: skip
        return ev.id, topics.gate_events("L1-in"), encode(ev)

    outbox.append(build)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_broker_restart_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, broker: Mosquitto, mqtt_settings: MqttSettings, how: str
) -> None:
    """A clean stop saves the broker's sessions; a SIGKILL may lose what it held in memory (queued
    events, the collector's fresh session): the collector's confirmations make the gate send
    those again."""
    topics = Topics(mqtt_settings.topic_root)
    collector = Collector(
        CollectorConfig(
            name="c1",
            database=f"sqlite:///{tmp_path / 'events.sqlite'}",
            mqtt=mqtt_settings,
            lots=[LotConfig(id="L1", name="lot", capacity=1000)],
        )
    )
    outbox = Outbox(tmp_path / "outbox.sqlite")
    link = EdgeLink(mqtt_settings, "L1-in", "L1", outbox, confirm_timeout_s=1.0)
    collector.start()
    link.start()
    try:
        wait_until(lambda: link.connected.is_set() and collector.connected.is_set(), what="connections")
        for _ in range(10):
            append_event(outbox, topics)
            link.wake()
        wait_until(lambda: collector.stored == 10, what="first 10 events")
        wait_until(lambda: outbox.backlog()[0] == 0, what="confirmation")

        broker.stop() if how == "stop" else broker.kill()
        wait_until(lambda: not link.connected.is_set(), what="edge to notice")
        for _ in range(25):
            append_event(outbox, topics)
            link.wake()
        time.sleep(1.0)
        assert outbox.backlog()[0] == 25  # nothing confirmed, nothing dropped

        broker.start()  # same port, same persistence folder
        wait_until(lambda: collector.stored == 35, what="all 35 events stored")
        wait_until(lambda: outbox.backlog()[0] == 0, what="outbox to drain after restart")
        time.sleep(0.5)
        assert collector.store.count_events() == 35
        assert collector.store.lot("L1").occupied == 35  # type: ignore[union-attr]
        assert outbox.last_seq() == 35
    finally:
        link.stop()
        collector.close()
        outbox.close()


def test_link_stops_promptly_while_broker_is_down(
    tmp_path: Path, broker: Mosquitto, mqtt_settings: MqttSettings
) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    link = EdgeLink(mqtt_settings, "L1-in", "L1", outbox)
    link.start()
    wait_until(link.connected.is_set, what="connection")
    broker.kill()
    wait_until(lambda: not link.connected.is_set(), what="disconnect")
    started = time.monotonic()
    link.stop()
    elapsed = time.monotonic() - started
    outbox.close()
    assert elapsed < 10, f"stop took {elapsed:.1f} s with the broker down"


def test_gate_status_is_retained_and_the_last_will_says_offline(
    tmp_path: Path, mqtt_settings: MqttSettings
) -> None:
    """A real ``parkgate edge`` process announces itself online; killed with SIGKILL, the broker
    publishes its retained last will: offline."""
    import signal
    import subprocess
    import sys

    from parkgate.demo import write_toml
    from protocol import GateStatus, decode
    from tests.mqtt_helpers import retained

    config = write_toml(
        tmp_path / "edge.toml",
        {
            "gate_id": "L1-in",
            "lot_id": "L1",
            "direction": "entry",
            "outbox": tmp_path / "outbox.sqlite",
            "mqtt": mqtt_settings.model_dump(exclude_none=True),
            "camera": {"kind": "synthetic", "start_delay_s": 3600},
            "simulation": {"enabled": True},
        },
    )
    topic = Topics(mqtt_settings.topic_root).gate_status("L1-in")

    def state() -> str | None:
        payload = retained(mqtt_settings, topic, timeout=0.5)
        return decode(GateStatus, payload).state if payload else None

    proc = subprocess.Popen([sys.executable, "-m", "parkgate", "edge", "--config", str(config)])
    try:
        wait_until(lambda: state() == "online", timeout=60, what="online status")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: state() == "offline", what="last will")
    finally:
        proc.kill()
        proc.wait()


def test_edge_with_a_missing_camera_folder_says_so(tmp_path: Path, mqtt_settings: MqttSettings) -> None:
    import subprocess
    import sys

    from parkgate.demo import write_toml

    config = write_toml(
        tmp_path / "edge.toml",
        {
            "gate_id": "L1-in",
            "lot_id": "L1",
            "direction": "entry",
            "outbox": tmp_path / "outbox.sqlite",
            "mqtt": mqtt_settings.model_dump(exclude_none=True),
            "camera": {"kind": "files", "path": tmp_path / "no-such-folder"},
            "simulation": {"enabled": True},
        },
    )
    run = subprocess.run(
        [sys.executable, "-m", "parkgate", "edge", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "no-such-folder: no such file or folder" in run.stderr
    assert "Traceback" not in run.stderr
