"""The edge node's MQTT link: drains the outbox to the broker and listens for lot availability.

Events are published with QoS 1 from the outbox only; each is removed when its PUBACK arrives.
paho keeps in-flight messages in memory, so after a reconnect or a restart everything still in
the outbox is simply published again; the collector stores by event id, so a repeat is harmless.
The node's retained status is "online" while connected and the broker publishes the retained
last will "offline" if the node vanishes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as mqtt

from edge.outbox import Outbox
from parkgate.mqtt import connect_async, make_client, publish_retained_and_wait, reason_text
from parkgate.settings import MqttSettings
from protocol import GateStatus, LotAvailability, PayloadError, Topics, decode, encode
from protocol.messages import utc_now

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 100
RESEND_AFTER_S = 30.0  # an event unacknowledged this long is published again


class EdgeLink:
    """Owns the MQTT client of one gate node and the thread that drains its outbox."""

    def __init__(
        self,
        settings: MqttSettings,
        gate_id: str,
        lot_id: str,
        outbox: Outbox,
        *,
        status_extra: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.topics = Topics(settings.topic_root)
        self.gate_id = gate_id
        self.lot_id = lot_id
        self.outbox = outbox
        self.settings = settings
        self._status_extra = status_extra
        self.availability: LotAvailability | None = None
        self.rejected: dict[str, int] = {}
        self.published = 0
        self.acknowledged = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._in_flight: dict[int, tuple[int, float]] = {}  # mid -> (seq, sent at)
        self._thread = threading.Thread(target=self._drain_loop, name=f"outbox-{gate_id}", daemon=True)
        offline = GateStatus(gate_id=gate_id, lot_id=lot_id, state="offline", ts=utc_now())
        self.client = make_client(
            settings, f"gate-{gate_id}", will=(self.topics.gate_status(gate_id), encode(offline))
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        connect_async(self.client, self.settings)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish "offline", wait briefly for it, disconnect and stop the drain thread."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self.connected.is_set():
            publish_retained_and_wait(
                self.client, self.topics.gate_status(self.gate_id), self._status("offline")
            )
        self.client.disconnect()
        self.client.loop_stop()

    def wake(self) -> None:
        """Something new is in the outbox: publish it now rather than at the next poll."""
        self._wake.set()

    # -- paho callbacks (network thread) -------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            logger.error("broker refused connection: %s", reason_text(rc))
            return
        logger.info("connected to broker %s:%d", self.settings.host, self.settings.port)
        client.publish(self.topics.gate_status(self.gate_id), self._status("online"), 1, True)
        client.subscribe(self.topics.lot_availability(self.lot_id), qos=1)
        self.connected.set()
        self._wake.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            logger.warning("disconnected from broker: %s; events stay in the outbox", reason_text(rc))

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _rc: Any, _p: Any = None) -> None:
        self._acks.put(mid)
        self._wake.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            availability = decode(LotAvailability, msg.payload)
        except PayloadError as err:
            self.rejected[err.reason] = self.rejected.get(err.reason, 0) + 1
            logger.warning("dropped bad availability on %s: %s", msg.topic, err)
            return
        if availability.lot_id == self.lot_id:
            self.availability = availability

    # -- outbox draining (own thread) ----------------------------------------------------------
    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            self._take_acks()
            if self.connected.is_set():
                self._publish_pending()

    def _take_acks(self) -> None:
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                return
            entry = self._in_flight.pop(mid, None)
            if entry is not None:  # status messages and stale resends have no entry
                self.outbox.remove(entry[0])
                self.acknowledged += 1

    def _publish_pending(self) -> None:
        now = time.monotonic()
        for mid, (_seq, sent) in list(self._in_flight.items()):
            if now - sent > RESEND_AFTER_S:
                del self._in_flight[mid]  # lost with a connection; publish it again below
        room = MAX_IN_FLIGHT - len(self._in_flight)
        if room <= 0:
            return
        busy = {seq for seq, _ in self._in_flight.values()}
        for item in self.outbox.pending(room, exclude=busy):
            info = self.client.publish(item.topic, item.payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                logger.debug("publish of seq %d deferred: %s", item.seq, mqtt.error_string(info.rc))
                return
            self._in_flight[info.mid] = (item.seq, now)
            self.published += 1

    def _status(self, state: Literal["online", "offline"]) -> bytes:
        backlog, _age = self.outbox.backlog()
        extra = self._status_extra() if state == "online" else {}
        return encode(
            GateStatus(
                gate_id=self.gate_id, lot_id=self.lot_id, state=state, ts=utc_now(), backlog=backlog, **extra
            )
        )
