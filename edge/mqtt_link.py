"""The edge node's MQTT link: drains the outbox, takes confirmations, commands and lists.

Events are published with QoS 1 from the outbox only. A PUBACK marks an event sent; it leaves
the outbox when the collector's retained confirmation (``gates/{id}/ack``, "stored up to seq N")
covers it. A sent event left unconfirmed for ``confirm_timeout_s`` (the broker died before
passing it on) is published again, with back-off while confirmations do not advance; the
collector stores by event id, so repeats are harmless.

Live events (made in the last few seconds) go out at once; an older backlog, after an outage,
drains at most ``drain_rate`` events per second so it never crowds out live traffic.

Status: retained "online" on connect and every ``heartbeat_s`` with the node's health; the
broker publishes the retained last will "offline" if the node vanishes.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as mqtt
from pydantic import BaseModel

from edge.outbox import Outbox
from parkgate.mqtt import connect_async, make_client, publish_retained_and_wait, reason_text
from parkgate.settings import MqttSettings
from protocol import (
    CommandResult,
    GateAck,
    GateCommand,
    GateStatus,
    LotAvailability,
    LotLists,
    PayloadError,
    Topics,
    decode,
    encode,
)
from protocol.messages import utc_now

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 100
LIVE_WINDOW_S = 5.0  # events younger than this are live traffic, sent ahead of any backlog
PUBACK_TIMEOUT_S = 30.0  # an in-flight publish without PUBACK this long is forgotten and redone


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
        on_command: Callable[[GateCommand], None] | None = None,
        on_lists: Callable[[LotLists], None] | None = None,
        heartbeat_s: float = 30.0,
        drain_rate: float = 500.0,
        confirm_timeout_s: float = 10.0,
    ) -> None:
        self.topics = Topics(settings.topic_root)
        self.gate_id = gate_id
        self.lot_id = lot_id
        self.outbox = outbox
        self.settings = settings
        self.heartbeat_s = heartbeat_s
        self.drain_rate = drain_rate
        self.confirm_timeout_s = confirm_timeout_s
        self.status_extra = status_extra
        self.on_command = on_command
        self.on_lists = on_lists
        self.availability: LotAvailability | None = None
        self.rejected: Counter[str] = Counter()
        self.confirmed_upto = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pubacks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._in_flight: dict[int, tuple[int, float]] = {}  # mid -> (seq, sent at)
        self._tokens = drain_rate
        self._last_refill = time.monotonic()
        self._requeue_after = confirm_timeout_s
        self._last_progress = time.monotonic()
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
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.connected.is_set():
            publish_retained_and_wait(
                self.client, self.topics.gate_status(self.gate_id), self._status("offline")
            )
        self.client.disconnect()
        self.client.loop_stop()

    def alive(self) -> bool:
        """The drain thread runs (for the service watchdog)."""
        return self._thread.is_alive()

    def wake(self) -> None:
        """Something new is in the outbox: publish it now rather than at the next poll."""
        self._wake.set()

    def publish_result(self, result: CommandResult) -> None:
        self.client.publish(self.topics.gate_results(self.gate_id), encode(result), qos=1)

    # -- paho callbacks (network thread) -------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            logger.error("broker refused connection: %s", reason_text(rc))
            return
        logger.info("connected to broker %s:%d", self.settings.host, self.settings.port)
        client.publish(self.topics.gate_status(self.gate_id), self._status("online"), 1, True)
        client.subscribe(
            [
                (self.topics.lot_availability(self.lot_id), 1),
                (self.topics.lot_lists(self.lot_id), 1),
                (self.topics.gate_ack(self.gate_id), 1),
                (self.topics.gate_commands(self.gate_id), 1),
            ]
        )
        self.connected.set()
        self._wake.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            logger.warning("disconnected from broker: %s; events stay in the outbox", reason_text(rc))

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _rc: Any, _p: Any = None) -> None:
        self._pubacks.put(mid)
        self._wake.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.rsplit("/", 1)[-1]
        handlers: dict[str, tuple[type[BaseModel], Callable[[Any], None]]] = {
            "availability": (LotAvailability, self._take_availability),
            "lists": (LotLists, self._take_lists),
            "ack": (GateAck, self._take_ack),
            "commands": (GateCommand, self._take_command),
        }
        if kind not in handlers:
            self.rejected["topic"] += 1
            logger.warning("message on unexpected topic %s ignored", msg.topic)
            return
        model, handler = handlers[kind]
        try:
            message = decode(model, msg.payload)
        except PayloadError as err:
            self.rejected[err.reason] += 1
            logger.warning("dropped bad %s message on %s: %s", kind, msg.topic, err)
            if kind == "commands":
                self._refuse_malformed_command(msg.payload, err)
            return
        handler(message)

    def _take_availability(self, availability: LotAvailability) -> None:
        if availability.lot_id == self.lot_id:
            self.availability = availability

    def _take_lists(self, lists: LotLists) -> None:
        if lists.lot_id == self.lot_id and self.on_lists:
            self.on_lists(lists)

    def _take_ack(self, ack: GateAck) -> None:
        if ack.gate_id != self.gate_id or ack.epoch != self.outbox.epoch:
            return  # a confirmation for an earlier outbox (the node was reinstalled): not ours
        if ack.upto > self.confirmed_upto:
            self.confirmed_upto = ack.upto
            self._last_progress = time.monotonic()
            self._requeue_after = self.confirm_timeout_s
            self.outbox.confirm(ack.upto)

    def _take_command(self, command: GateCommand) -> None:
        if command.gate_id != self.gate_id:
            self.rejected["wrong_gate"] += 1
            logger.warning("command %s for gate %s ignored", command.id, command.gate_id)
            return
        if self.on_command:
            self.on_command(command)

    def _refuse_malformed_command(self, payload: bytes | bytearray, err: PayloadError) -> None:
        try:
            command_id = str(json.loads(payload).get("id", ""))[:64] or "unknown"
        except (ValueError, AttributeError, TypeError):
            command_id = "unknown"
        self.publish_result(
            CommandResult(
                command_id=command_id, gate_id=self.gate_id, ts=utc_now(), result="refused",
                reason=f"invalid: {err}"[:200],
            )
        )  # fmt: skip

    # -- outbox draining (own thread) ----------------------------------------------------------
    def _drain_loop(self) -> None:
        next_heartbeat = time.monotonic() + self.heartbeat_s
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            self._take_pubacks()
            if not self.connected.is_set():
                continue
            self._publish_unsent()
            self._requeue_unconfirmed()
            if time.monotonic() >= next_heartbeat:
                next_heartbeat = time.monotonic() + self.heartbeat_s
                self.client.publish(self.topics.gate_status(self.gate_id), self._status("online"), 1, True)

    def _take_pubacks(self) -> None:
        while True:
            try:
                mid = self._pubacks.get_nowait()
            except queue.Empty:
                return
            entry = self._in_flight.pop(mid, None)
            if entry is not None:  # status and result messages have no entry
                self.outbox.mark_sent(entry[0])

    def _publish_unsent(self) -> None:
        now = time.monotonic()
        for mid, (_seq, sent) in list(self._in_flight.items()):
            if now - sent > PUBACK_TIMEOUT_S:
                del self._in_flight[mid]  # lost with a connection; publish it again
        room = MAX_IN_FLIGHT - len(self._in_flight)
        if room <= 0:
            return
        busy = {seq for seq, _ in self._in_flight.values()}
        live = self.outbox.unsent(room, exclude=busy, since=time.time() - LIVE_WINDOW_S)
        self._refill_tokens(now)
        backlog_room = min(room - len(live), int(self._tokens))
        backlog = (
            self.outbox.unsent(backlog_room, exclude=busy | {p.seq for p in live}) if backlog_room > 0 else []
        )
        self._tokens -= len(backlog)
        for item in [*live, *backlog]:
            info = self.client.publish(item.topic, item.payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                logger.debug("publish of seq %d deferred: %s", item.seq, mqtt.error_string(info.rc))
                return
            self._in_flight[info.mid] = (item.seq, now)
        if backlog:
            self._wake.set()  # more may be waiting; the token bucket paces it

    def _refill_tokens(self, now: float) -> None:
        self._tokens = min(self.drain_rate, self._tokens + (now - self._last_refill) * self.drain_rate)
        self._last_refill = now

    def _requeue_unconfirmed(self) -> None:
        """Sent events the collector has not confirmed for a while are published again; while
        confirmations stay stuck, wait twice as long each time (up to 5 minutes)."""
        if time.monotonic() - self._last_progress < self._requeue_after:
            return
        again = self.outbox.requeue(self._requeue_after, limit=int(self.drain_rate * self._requeue_after))
        self._last_progress = time.monotonic()
        if again:
            logger.warning(
                "%d events unconfirmed for %.0f s: publishing them again", again, self._requeue_after
            )
            self._requeue_after = min(self._requeue_after * 2, 300.0)
            self._wake.set()

    def _status(self, state: Literal["online", "offline"]) -> bytes:
        extra: dict[str, Any] = {}
        if state == "online":
            backlog, age = self.outbox.backlog()
            extra = {
                "backlog": backlog,
                "backlog_age_s": round(age, 1) if age is not None else None,
                "outbox_first_seq": self.outbox.first_seq(),
                "epoch": self.outbox.epoch,
                "dropped": self.outbox.dropped,
                **self.status_extra(),
            }
        return encode(
            GateStatus(gate_id=self.gate_id, lot_id=self.lot_id, state=state, ts=utc_now(), **extra)
        )
