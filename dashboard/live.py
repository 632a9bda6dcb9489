"""What the dashboard knows right now: the newest retained messages and the latest vehicles, fed from MQTT.

:class:`LiveState` keeps the latest availability per lot, content per screen and status (heartbeat)
per gate, numbers each change, and lets any number of page streams wait for changes after the
version they last saw. It also keeps the latest vehicles (gate events) for the operators' live
feed, in bounded rings: per lot the newest :data:`PER_LOT`, for streams the newest
:data:`STREAM_KEPT` of the whole city, and the plate crops of the newest :data:`CROPS_KEPT`
events only — a crop is never kept beyond that ring. :class:`LiveFeed` fills it from the broker.

Two wake-ups, so that the city's vehicles do not cost the public pages anything: public streams
wait on lot, screen and gate changes only (:meth:`LiveState.changes_since`); operator streams that
show vehicles wait on those and on vehicles (:meth:`LiveState.wait_ops`). Vehicle events are
personal data (plates): they never reach the public stream.

Gate events arrive at thousands a second in a city, at QoS 0 (the feed is for eyes; the collector
is the record). Per message the feed does one JSON validation of the fields it shows (not the
crop's alphabet: that is checked when a crop is served) and a few appends under a lock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from parkgate.mqtt import connect_async, make_client, reason_text
from parkgate.settings import MqttSettings
from protocol import (
    Action,
    Direction,
    GateStatus,
    LotAvailability,
    PayloadError,
    ScreenContent,
    Topics,
    decode,
)
from protocol.messages import MAX_PAYLOAD_BYTES, EventId, Id, Plate, Timestamp

logger = logging.getLogger(__name__)

HISTORY = 1000  # changes kept for streams that fell behind
PER_LOT = 50  # latest vehicles kept per lot (the lot page, the live feed on first load)
STREAM_KEPT = 2000  # latest vehicles of the city kept for streams that fell behind
CROPS_KEPT = 1000  # plate crops kept (of the newest events; ~15 KB each at most)
MAX_FEED_LOTS = 10_000  # lots a feed keeps vehicles for: a gate inventing lot ids cannot fill memory
LOG_FIRST = 10  # rejected vehicle messages logged per reason before only every LOG_EVERY-th is
LOG_EVERY = 1000


@dataclass(frozen=True)
class Change:
    version: int
    kind: str  # "lot", "screen" or "gate"
    data: dict[str, Any]


class _Decision(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    action: Action
    reason: str = Field(max_length=32, pattern=r"^[a-z0-9_:]+$")


class WireEvent(BaseModel):
    """The part of a :class:`protocol.GateEvent` the live feed shows, read leniently about the rest
    (extra fields ignored: a newer gate's additions do not hide its vehicles) but strictly about
    what is shown. ``reason`` is any short word, so a reason added later still shows."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: EventId
    ts: Timestamp
    lot_id: Id
    gate_id: Id
    direction: Direction
    plate: Plate | None = None
    confidence: float = Field(0.0, ge=0.0, le=1.0)
    decision: _Decision
    crop_jpeg: str | None = Field(None, max_length=20_000)


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One vehicle as the live feed keeps it (no crop: crops live in their own, smaller ring)."""

    seq: int  # arrival order at this dashboard
    id: str
    ts: datetime
    lot_id: str
    gate_id: str
    direction: str
    plate: str | None
    confidence: float
    action: str
    reason: str
    has_crop: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "id": self.id, "ts": self.ts.isoformat(), "lot_id": self.lot_id,
            "gate_id": self.gate_id, "direction": self.direction, "plate": self.plate,
            "confidence": round(self.confidence, 3), "action": self.action, "reason": self.reason,
            "crop": self.has_crop,
        }  # fmt: skip


@dataclass(frozen=True)
class OpsUpdate:
    """What an operator stream gets after waiting: lot/gate changes and vehicles newer than what it saw."""

    changes: list[Change]
    events: list[FeedEvent]
    version: int
    seq: int


class LiveState:
    def __init__(self) -> None:
        self.lots: dict[str, LotAvailability] = {}
        self.screens: dict[str, ScreenContent] = {}
        self.gates: dict[str, GateStatus] = {}
        self.version = 0
        self.event_seq = 0
        self._changes: deque[Change] = deque(maxlen=HISTORY)
        self._events: deque[FeedEvent] = deque(maxlen=STREAM_KEPT)
        self._lot_events: dict[str, deque[FeedEvent]] = {}
        self._crops: OrderedDict[str, tuple[str, str]] = OrderedDict()  # event id -> (lot id, base64)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # lot, screen, gate changes (every stream)
        self._ops_cond = threading.Condition(self._lock)  # those and vehicles (operator streams)

    def put(self, message: BaseModel) -> None:
        """Record the newest message of a lot, screen or gate and wake the streams."""
        with self._lock:
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
            self._ops_cond.notify_all()

    def add_event(self, event: WireEvent) -> FeedEvent | None:
        """Keep a vehicle in the rings (its crop in the crop ring) and wake the operator streams
        that show vehicles. None (and nothing kept) for a new lot beyond :data:`MAX_FEED_LOTS`."""
        with self._lock:
            ring = self._lot_events.get(event.lot_id)
            if ring is None:
                if len(self._lot_events) >= MAX_FEED_LOTS:
                    return None
                ring = self._lot_events[event.lot_id] = deque(maxlen=PER_LOT)
            self.event_seq += 1
            item = FeedEvent(
                self.event_seq, event.id, event.ts, event.lot_id, event.gate_id, event.direction.value,
                event.plate, event.confidence, event.decision.action.value, event.decision.reason,
                bool(event.crop_jpeg),
            )  # fmt: skip
            ring.append(item)
            self._events.append(item)
            if event.crop_jpeg:
                self._crops[event.id] = (event.lot_id, event.crop_jpeg)
                if len(self._crops) > CROPS_KEPT:
                    self._crops.popitem(last=False)
            self._ops_cond.notify_all()
            return item

    def snapshot(self) -> tuple[int, list[Change]]:
        """(current version, the newest message of every lot, screen and gate) for a new stream."""
        with self._lock:
            items: list[tuple[str, BaseModel]] = [("lot", m) for m in self.lots.values()]
            items += [("screen", m) for m in self.screens.values()]
            items += [("gate", m) for m in self.gates.values()]
            return self.version, [Change(self.version, k, m.model_dump(mode="json")) for k, m in items]

    def changes_since(self, version: int, timeout: float) -> list[Change]:
        """Changes newer than ``version``, waiting up to ``timeout`` s for the first one."""
        with self._lock:
            self._cond.wait_for(lambda: self.version > version, timeout)
            return [c for c in self._changes if c.version > version]

    def wait_ops(self, version: int, seq: int | None, timeout: float) -> OpsUpdate:
        """For an operator stream: changes newer than ``version`` and, unless ``seq`` is None,
        vehicles newer than ``seq``; waits up to ``timeout`` s for the first of either. A stream
        that fell further behind than the rings reach gets what they still hold."""
        with self._lock:
            if seq is None:
                self._cond.wait_for(lambda: self.version > version, timeout)
            else:
                self._ops_cond.wait_for(lambda: self.version > version or self.event_seq > seq, timeout)
            changes = [c for c in self._changes if c.version > version] if self.version > version else []
            events: list[FeedEvent] = []
            if seq is not None and self.event_seq > seq:
                events = list(itertools.takewhile(lambda e: e.seq > seq, reversed(self._events)))
                events.reverse()
            return OpsUpdate(changes, events, self.version, self.event_seq)

    def recent_events(self, lots: Iterable[str] | None, limit: int) -> list[FeedEvent]:
        """The newest ``limit`` vehicles (by event time) of ``lots`` (None: every lot), newest first."""
        with self._lock:
            if lots is None:
                rings = list(self._lot_events.values())
            else:
                rings = [ring for lot_id in lots if (ring := self._lot_events.get(lot_id)) is not None]
            items = [e for ring in rings for e in ring]
        return heapq.nlargest(limit, items, key=lambda e: (e.ts, e.seq))

    def crop(self, event_id: str) -> tuple[str, str] | None:
        """(lot id, base64 JPEG) of a recent event's plate crop, while the crop ring holds it."""
        with self._lock:
            return self._crops.get(event_id)


class LiveFeed:
    """Subscribes to availability, screen and gate-status topics (retained, QoS 1) and to gate
    events (QoS 0, for the operators' live feed) and fills a LiveState."""

    def __init__(self, settings: MqttSettings, state: LiveState, client_id: str) -> None:
        self.settings = settings
        self.state = state
        self.topics = Topics(settings.topic_root)
        self.rejected: Counter[str] = Counter()
        self.client = make_client(settings, client_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._events_prefix = f"{self.topics.base}/gates/"

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
                (self.topics.all_gate_events(), 0),
            ]
        )

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/events"):
            self.take_event(msg.topic, msg.payload)
            return
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

    def take_event(self, topic: str, payload: bytes | bytearray) -> FeedEvent | None:
        """One vehicle for the live feed; a bad one is counted (``event_<reason>``) and dropped."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            self._reject(topic, "too_large", f"{len(payload)} bytes")
            return None
        try:
            event = WireEvent.model_validate_json(payload)
        except ValidationError as err:
            first = err.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(x) for x in first["loc"]) or "(message)"
            self._reject(topic, "schema", f"{where}: {first['msg']}")
            return None
        if topic != f"{self._events_prefix}{event.gate_id}/events":
            self._reject(topic, "gate_mismatch", f"gate_id {event.gate_id!r}")
            return None
        item = self.state.add_event(event)
        if item is None:
            self._reject(topic, "too_many_lots", f"lot {event.lot_id!r} beyond {MAX_FEED_LOTS} lots")
            return None
        return item

    def _reject(self, topic: str, reason: str, detail: str) -> None:
        key = f"event_{reason}"
        self.rejected[key] += 1
        n = self.rejected[key]
        if n <= LOG_FIRST or n % LOG_EVERY == 0:
            logger.warning("live feed dropped a vehicle on %s (%s, %d so far): %s", topic, reason, n, detail)


def in_scope(lots: frozenset[str] | None, lot: str | None) -> Callable[[str], bool]:
    """A test for lot ids: within ``lots`` (None: every lot) and, if given, equal to ``lot``."""
    if lot is not None:
        return lambda lot_id: lot_id == lot and (lots is None or lot_id in lots)
    if lots is None:
        return lambda _lot_id: True
    return lambda lot_id: lot_id in lots
