"""The collector writes telemetry for what it stores: events through the real broker end up as
lot occupancy and flow points in a real VictoriaMetrics."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ulid import ULID

from cloud.collector import Collector
from cloud.config import CollectorConfig, LotConfig, TelemetryConfig
from parkgate.settings import MqttSettings
from protocol import Action, Decision, Direction, GateEvent, Reason, Topics, encode
from protocol.messages import utc_now
from tests.conftest import VictoriaMetrics
from tests.mqtt_helpers import publish_raw
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def test_stored_events_become_telemetry(
    tmp_path: Path, mqtt_settings: MqttSettings, victoria: VictoriaMetrics
) -> None:
    collector = Collector(
        CollectorConfig(
            name="c1",
            database=f"sqlite:///{tmp_path / 'events.sqlite'}",
            mqtt=mqtt_settings,
            lots=[LotConfig(id="L1", name="lot", capacity=10)],
            telemetry=TelemetryConfig(
                url=victoria.url, spool=tmp_path / "spool.sqlite", flush_interval_s=0.2
            ),
        )
    )
    collector.start()
    try:
        wait_until(collector.connected.is_set, timeout=30, what="connection")
        epoch = str(ULID())
        for seq in (1, 2, 3):
            ev = GateEvent(
                id=str(ULID()), epoch=epoch, seq=seq, ts=utc_now(), lot_id="L1", gate_id="G1",
                direction=Direction.ENTRY, decision=Decision(action=Action.OPEN, reason=Reason.SPACE_FREE),
            )  # fmt: skip
            publish_raw(mqtt_settings, Topics(mqtt_settings.topic_root).gate_events("G1"), encode(ev))
        wait_until(lambda: collector.stored == 3, timeout=30, what="events stored")
        assert collector.telemetry is not None and collector.telemetry.flush(timeout=30)
        time.sleep(0.5)

        def occupied() -> list[float]:
            series = victoria.export('{__name__="parkgate_lot_occupied"}')
            return [v for s in series for v in s["values"]]

        wait_until(lambda: 3.0 in occupied(), timeout=30, what="occupancy in VictoriaMetrics")
        flows = victoria.export('{__name__="parkgate_flow_vehicles"}')
        assert sum(sum(s["values"]) for s in flows) == 3
    finally:
        collector.close()
