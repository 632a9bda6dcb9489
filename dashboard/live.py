"""What the dashboard knows right now: the newest retained messages, fed from MQTT.

:class:`LiveState` keeps the latest availability per lot, content per screen and status per
gate, numbers each change, and lets any number of page streams wait for changes after the
version they last saw. :class:`LiveFeed` fills it from the broker's retained topics.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import BaseModel

from parkgate.mqtt import connect_async, make_client, reason_text
from parkgate.settings import MqttSettings
from protocol import GateStatus, LotAvailability, PayloadError, ScreenContent, Topics, decode

logger = logging.getLogger(__name__)

HISTORY = 1000  # changes kept for streams that fell behind


@dataclass(frozen=True)
class Change:
    version: int
    kind: str  # "lot", "screen" or "gate"
    data: dict[str, Any]


class LiveState:
    def __init__(self) -> None:
        self.lots: dict[str, LotAvailability] = {}
        self.screens: dict[str, ScreenContent] = {}
        self.gates: dict[str, GateStatus] = {}
        self.version = 0
        self._changes: deque[Change] = deque(maxlen=HISTORY)
        self._cond = threading.Condition()

    def put(self, message: BaseModel) -> None:
        """Record the newest message of a lot, screen or gate and wake the streams."""
        with self._cond:
            if isinstance(message, LotAvailability):
                kind, self.lots[message.lot_id] = "lot", message
            elif isinstance(message, ScreenContent):
                kind, self.screens[message.screen_id] = "screen", message
            elif isinstance(message, GateStatus):
                kind, self.gates[message.gate_id] = "gate", message
            else:
                raise TypeError(f"not a live message: {type(message).__name__}")
            self.version += 1
            self._changes.append(Change(self.version, kind, message.model_dump(mode="json")))
            self._cond.notify_all()

    def snapshot(self) -> tuple[int, list[Change]]:
        """(current version, the newest message of every lot, screen and gate) for a new stream."""
        with self._cond:
            items: list[tuple[str, BaseModel]] = [("lot", m) for m in self.lots.values()]
            items += [("screen", m) for m in self.screens.values()]
            items += [("gate", m) for m in self.gates.values()]
            return self.version, [Change(self.version, k, m.model_dump(mode="json")) for k, m in items]

    def changes_since(self, version: int, timeout: float) -> list[Change]:
        """Changes newer than ``version``, waiting up to ``timeout`` s for the first one."""
        with self._cond:
            self._cond.wait_for(lambda: self.version > version, timeout)
            return [c for c in self._changes if c.version > version]


class LiveFeed:
    """Subscribes to availability, screen and gate-status topics and fills a LiveState."""

    def __init__(self, settings: MqttSettings, state: LiveState, client_id: str) -> None:
        self.settings = settings
        self.state = state
        self.topics = Topics(settings.topic_root)
        self.rejected: Counter[str] = Counter()
        self.client = make_client(settings, client_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def start(self) -> None:
        connect_async(self.client, self.settings)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            logger.error("broker refused connection: %s", reason_text(rc))
            return
        client.subscribe(
            [
                (self.topics.all_lot_availability(), 1),
                (self.topics.all_screens(), 1),
                (self.topics.all_gate_status(), 1),
            ]
        )

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        model: type[BaseModel]
        if msg.topic.endswith("/availability"):
            model = LotAvailability
        elif msg.topic.endswith("/status"):
            model = GateStatus
        else:
            model = ScreenContent
        try:
            self.state.put(decode(model, msg.payload))
        except PayloadError as err:
            self.rejected[err.reason] += 1
            logger.warning("dropped bad message on %s: %s", msg.topic, err)
