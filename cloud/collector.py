"""The collector service: gate events in, stored once, availability and screen content out.

Its MQTT connection runs in a child process (cloud/broker_link.py); the writer thread here reads
what it received in batches, stores each batch in one transaction and hands back what to
acknowledge and publish. Each event is acknowledged to the broker (MQTT 5, manual ack) only after
its database transaction committed, and the link keeps a persistent session, so events sent while
the collector is down or restarting wait in the broker. A payload that does not validate is counted by
reason, logged with the offending field, acknowledged (so it is not redelivered forever) and
dropped; the stream goes on.

Per gate it keeps the contiguous run of sequence numbers stored and confirms it to the gate
(retained ``gates/{id}/ack``, at most every ``ACK_INTERVAL_S``); the gate drops confirmed events
from its outbox and re-sends what stays unconfirmed, so an event lost inside a crashing broker is
sent again. A hole in the run is a gap: counted in the status; if the gate's heartbeat says its
outbox no longer holds the missing events, they are recorded as unrecoverable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Literal, TypeVar

from cloud.availability import Signs
from cloud.broker_link import BrokerLink, Inbound
from cloud.config import CollectorConfig
from cloud.events_store import EventStore, LotState, Progress
from cloud.history import HistorySampler
from cloud.intruders import InspectionAreas
from cloud.lists import ListWatch
from cloud.telemetry import Telemetry
from cloud.visits import Visits
from protocol import (
    CollectorStatus,
    CommandResult,
    GateAck,
    GateEvent,
    GateStatus,
    InspectionResult,
    LotLists,
    PayloadError,
    Topics,
    decode,
    encode,
)
from protocol.errors import TopicError
from protocol.messages import CollectorRefresh, SpaceSensorReport, utc_now

logger = logging.getLogger(__name__)

FromGate = TypeVar("FromGate", GateEvent, InspectionResult)

STATUS_INTERVAL_S = 10.0
ACK_INTERVAL_S = 0.2
BATCH_MAX = 5000  # messages written in one transaction (more: fewer pages written per event)
# Availability and screen content after each batch go out at QoS 0: each replaces the last and the
# broker retains it; one lost with a dropped connection is replaced by the next or by the
# re-publication on reconnect and every ``republish_s`` (QoS 1). Acknowledging thousands of them a
# second would cost the collector as much as storing the events.
STATE_QOS = 0
UPKEEP_S = 1.0  # screens whose data turned stale/fresh or whose override changed; history samples


class Collector:
    def __init__(self, cfg: CollectorConfig, store: EventStore | None = None) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.mqtt.topic_root)
        self.store = store or EventStore(cfg.database, background_checkpoints=True)
        self.store.sync_lots(cfg.lots)
        self.areas = InspectionAreas(self.store.engine, cfg)
        self.visits = Visits(self.store, cfg)  # paired inside record_batch; swept from run()
        self.plate_lists = ListWatch(self.store.engine)  # operators' allow/deny entries (cloud/lists.py)
        self.telemetry = Telemetry(cfg.telemetry, source=cfg.name) if cfg.telemetry else None
        self.signs = Signs(cfg, self.store.engine)  # guidance screens: freshness and overrides
        self.history = HistorySampler(self.store.engine, cfg.lots)
        self._publish_lock = threading.Lock()  # lots read and published in order by the threads
        self._lot_cache: dict[str, LotState] = {}  # what the upkeep last read, for a database outage
        self._upkeep_thread = threading.Thread(target=self._upkeep_loop, name="upkeep", daemon=True)
        self.stored = 0
        self.duplicates = 0
        self.rejected: Counter[str] = Counter()
        self.unrecoverable = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._acks_due: dict[str, Progress] = {}
        self._acks_lock = threading.Lock()
        self._ack_thread = threading.Thread(target=self._ack_loop, name="acks", daemon=True)
        self._pending: list[Inbound] = []  # received, beyond the last batch's BATCH_MAX
        self._writer = threading.Thread(target=self._write_loop, name="writer", daemon=True)
        self.link = BrokerLink(
            cfg.mqtt,
            f"collector-{cfg.name}",
            self._filters(),
            session_expiry_s=cfg.session_expiry_s,
            will=(self.topics.collector_status(cfg.name), encode(self._status("offline"))),
            on_subscribed=self._on_subscribed,
            on_disconnected=self._on_disconnected,
        )

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.link.start()
        self._ack_thread.start()
        self._writer.start()
        self._upkeep_thread.start()
        if self.telemetry:
            self.telemetry.start()

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set. Publishes the collector's status every few seconds and
        re-publishes every lot and screen every ``republish_s``, so a quiet lot's count stays
        fresh on screens instead of looking stale."""
        self.start()
        last_republish = time.monotonic()
        try:
            while not stop.wait(STATUS_INTERVAL_S):
                self._publish_status()
                self._sweep_visits()
                if self.connected.is_set() and self.plate_lists.changed():  # an entry, or its window
                    self._publish_all()
                if self.connected.is_set() and time.monotonic() - last_republish >= self.cfg.republish_s:
                    self._publish_all()
                    last_republish = time.monotonic()
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        for thread in (self._writer, self._ack_thread, self._upkeep_thread):
            if thread.is_alive():
                thread.join(5)
        if self.telemetry:
            self.telemetry.close()
        self.link.close([(self.topics.collector_status(self.cfg.name), encode(self._status("offline")))])
        self.store.close()

    def healthy(self) -> bool:
        """The worker threads are alive (for the service watchdog)."""
        # (a link process that died is replaced by the writer: cloud/broker_link.py)
        alive = all(t.is_alive() for t in (self._writer, self._ack_thread, self._upkeep_thread))
        return alive and (self.telemetry is None or self.telemetry.healthy())

    # -- the broker link's news (on the writer thread, as it reads the link) --------------------
    def _filters(self) -> list[str]:
        filters = [
            self.topics.all_gate_events(),
            self.topics.all_gate_status(),
            self.topics.all_gate_results(),
            self.topics.all_gate_inspections(),  # inspection lanes' results: the pass rates
            self.topics.all_lot_sensors(),
        ]
        if self.cfg.shared_group:  # several collectors split the stream (MQTT 5 shared subscription)
            filters = [f"$share/{self.cfg.shared_group}/{f}" for f in filters]
        filters.append(self.topics.collectors_refresh())  # never shared: every collector answers it
        return filters

    def _on_subscribed(self, _refused: list[str]) -> None:
        """Connected for real once the broker confirmed the subscriptions (the link logs any it
        refused): an event published before that would not reach this session."""
        self.connected.set()
        self._publish_all()
        for alerts in self.visits.alert_lists():
            self._publish(self.topics.lot_alerts(alerts.lot_id), encode(alerts))
        self._publish_status()

    def _on_disconnected(self, reason: str) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was and not self._stop.is_set():
            logger.warning("disconnected from broker: %s", reason)

    # -- the work (writer thread) --------------------------------------------------------------
    def _write_loop(self) -> None:
        while not self._stop.is_set():
            batch = self._take_batch()
            while batch and not self._stop.is_set():
                try:
                    self.process(batch)
                    break
                except Exception:  # the database is away: keep the batch, unacknowledged, and retry
                    logger.exception("could not store a batch of %d messages; retrying", len(batch))
                    self._stop.wait(1.0)

    def _take_batch(self) -> list[Inbound]:
        """Every message that arrived (up to BATCH_MAX), waiting briefly for the first: while a
        batch is written the next one gathers, so batches grow with the load by themselves and a
        lone event is stored at once."""
        if len(self._pending) < BATCH_MAX:
            self._pending += self.link.receive(0.0 if self._pending else 0.2)
        batch, self._pending = self._pending[:BATCH_MAX], self._pending[BATCH_MAX:]
        return batch

    def process(self, batch: list[Inbound]) -> list[GateEvent]:
        """Validate, store (one transaction), acknowledge and publish a batch of messages.
        Returns the events that were new. Raises if the database fails: nothing is acknowledged."""
        events: list[GateEvent] = []
        results: list[InspectionResult] = []
        sensors: list[SpaceSensorReport] = []
        refresh: set[str] = set()  # lots to re-publish from the database (collectors/refresh)
        for topic, payload, _mid, _qos in batch:
            kind = topic.rsplit("/", 1)[-1]
            if kind == "events":
                ev = self._validate(topic, payload, GateEvent)
                if ev is not None:
                    events.append(ev)
            elif kind == "inspections":
                inspection = self._validate(topic, payload, InspectionResult)
                if inspection is not None:
                    results.append(inspection)
            elif kind == "status":
                self._take_status(topic, payload)
            elif kind == "results":
                self._take_result(topic, payload)
            elif kind == "sensors":
                sensors += self._take_sensors(topic, payload)
            elif kind == "refresh":
                refresh |= self._take_refresh(topic, payload)
        result = self.store.record_batch(events)
        rebased = self.visits.on_sensor_reports(sensors) if sensors else {}
        self.signs.freshness.commit(events)  # stored: this batch's events and heartbeats date their lots
        # every validated event, not only the new ones: both calls are idempotent, so a crash
        # between the store's commit and these is repaired when the broker redelivers
        changes = self.areas.on_events(events)
        self.areas.on_results(results)
        # acknowledged only now that everything is committed
        self.link.ack([(mid, qos) for _t, _p, mid, qos in batch if mid is not None])
        self.stored += len(result.stored)
        self.duplicates += len(events) - len(result.stored)
        if self.telemetry:  # every batch, also an empty one: heartbeats waiting go out with it
            self.telemetry.record_batch(result.stored, result.lots, utc_now())
        for progress in result.progress.values():
            self._ack_due(progress)  # also for repeats: the gate may have missed the last confirmation
        if result.lots or rebased or refresh:
            republish = {lot.id: lot for lot in self.store.lots(refresh)} if refresh else {}
            self._publish_lots({**republish, **result.lots, **rebased})
        if refresh and self.plate_lists.changed():  # an operator changed a list entry
            self._publish_all()
        for change in changes:
            if change.lists is not None:  # a lock or unlock: every lane of the station hears it
                lists = self.plate_lists.merge(change.lists)
                self._publish(self.topics.lot_lists(change.lot_id), encode(lists))
        for lists in self.areas.all_lists() if refresh & self.areas.lane_lots else []:  # a dashboard unlock
            if lists.lot_id in refresh:
                self._publish(self.topics.lot_lists(lists.lot_id), encode(self.plate_lists.merge(lists)))
        return result.stored

    def handle(self, topic: str, payload: bytes | bytearray) -> GateEvent | None:
        """Process one message outside the stream (tests, tools). Returns the event if it was new."""
        stored = self.process([(topic, bytes(payload), None, 0)])
        return stored[0] if stored else None

    def _validate(self, topic: str, payload: bytes, model: type[FromGate]) -> FromGate | None:
        """Decode a message a gate published under its own prefix; a gate may speak only for itself."""
        try:
            message = decode(model, payload)
            if self.topics.gate_id_of(topic) != message.gate_id:
                raise PayloadError("gate_mismatch", f"gate_id {message.gate_id!r} published on {topic!r}")
        except (PayloadError, TopicError) as err:
            self._reject(topic, err)
            return None
        return message

    def _reject(self, topic: str, err: PayloadError | TopicError) -> None:
        reason = getattr(err, "reason", "topic")
        self.rejected[reason] += 1
        logger.warning("rejected payload on %s (%s): %s", topic, reason, err)

    def _take_status(self, topic: str, payload: bytes | bytearray) -> None:
        """A gate's heartbeat says which events its outbox still holds: a hole before that is final."""
        try:
            status = decode(GateStatus, payload)
        except PayloadError as err:
            self._reject(topic, err)
            return
        if self.telemetry:
            self.telemetry.record_gate_status(status)
        self.signs.freshness.note_status(status)
        if status.state != "online" or status.epoch is None or status.outbox_first_seq is None:
            return
        progress, lost = self.store.note_first_seq(status.gate_id, status.epoch, status.outbox_first_seq)
        if lost:
            self.unrecoverable += lost
            logger.error(
                "gate %s no longer holds %d events that never arrived (gap recorded)", status.gate_id, lost
            )
        self._ack_due(progress)

    def _take_result(self, topic: str, payload: bytes | bytearray) -> None:
        try:
            result = decode(CommandResult, payload)
        except PayloadError as err:
            self._reject(topic, err)
            return
        log = logger.info if result.result == "done" else logger.warning
        log("gate %s: command %s %s (%s)", result.gate_id, result.command_id, result.result, result.reason)

    def _take_sensors(self, topic: str, payload: bytes) -> list[SpaceSensorReport]:
        """A lot's bay-sensor report, if it is valid, for a configured lot, on that lot's topic."""
        try:
            report = decode(SpaceSensorReport, payload)
            if self.topics.lot_id_of(topic) != report.lot_id:
                raise PayloadError("lot_mismatch", f"lot_id {report.lot_id!r} published on {topic!r}")
            if report.lot_id not in self.visits.lots:
                raise PayloadError("unknown_lot", f"lot {report.lot_id!r} is not configured")
        except (PayloadError, TopicError) as err:
            self._reject(topic, err)
            return []
        return [report]

    def _take_refresh(self, topic: str, payload: bytes) -> set[str]:
        """The lots a refresh request names, and those its screens show."""
        try:
            request = decode(CollectorRefresh, payload)
        except PayloadError as err:
            self._reject(topic, err)
            return set()
        screens = set(request.screen_ids)
        shown = {item.lot_id for s in self.cfg.screens if s.id in screens for item in s.lots}
        return set(request.lot_ids) | shown

    def _sweep_visits(self) -> None:
        """Stale visits, overstay alerts and (every few minutes) reconciliation; publish what changed."""
        try:
            swept = self.visits.sweep()
        except Exception:  # the database is away: the next tick tries again
            logger.exception("visit sweep failed; retrying in %.0f s", STATUS_INTERVAL_S)
            return
        if swept.lots:
            self._publish_lots(swept.lots)
        for alerts in swept.alerts:
            self._publish(self.topics.lot_alerts(alerts.lot_id), encode(alerts))

    # -- confirmations to gates ----------------------------------------------------------------
    def _ack_due(self, progress: Progress) -> None:
        with self._acks_lock:
            self._acks_due[progress.gate_id] = progress

    def _ack_loop(self) -> None:
        while not self._stop.wait(ACK_INTERVAL_S):
            if not self.connected.is_set():
                continue
            with self._acks_lock:
                due, self._acks_due = self._acks_due, {}
            now = utc_now()
            acks = [GateAck(gate_id=p.gate_id, epoch=p.epoch, upto=p.upto, ts=now) for p in due.values()]
            self.link.publish([(self.topics.gate_ack(ack.gate_id), encode(ack), 1) for ack in acks])

    def _publish_lots(self, changed: dict[str, LotState]) -> None:
        """Availability of each changed lot, and every screen that shows one of them."""
        with self._publish_lock:
            out = [
                (self.topics.lot_availability(lot.id), encode(self.signs.availability(lot)), STATE_QOS)
                for lot in changed.values()
            ]
            screens = [s for s in self.cfg.screens if any(item.lot_id in changed for item in s.lots)]
            if screens:  # only the lots those screens show, not every lot of the city, per batch
                shown = {item.lot_id for screen in screens for item in screen.lots}
                lots = {lot.id: lot for lot in self.store.lots(shown)}
                out += [
                    (self.topics.screen(screen.id), encode(self.signs.content(screen, lots)), STATE_QOS)
                    for screen in screens
                ]
            self.link.publish(out)

    def _publish_all(self) -> None:
        with self._publish_lock:
            lots = {lot.id: lot for lot in self.store.lots()}
            out = [
                (self.topics.lot_availability(lot.id), encode(self.signs.availability(lot)), 1)
                for lot in lots.values()
            ]
            out += [
                (self.topics.screen(screen.id), encode(self.signs.content(screen, lots)), 1)
                for screen in self.cfg.screens
            ]
            self.link.publish(out)
        out = []
        for cfg in self.cfg.lots:
            if cfg.id in self.areas.lane_lots:
                continue  # an inspection station's lanes: its lists come with its locks, below
            lists = LotLists(lot_id=cfg.id, ts=utc_now(), allow=cfg.allow, deny=cfg.deny, locked=cfg.locked)
            out.append((self.topics.lot_lists(cfg.id), encode(self.plate_lists.merge(lists)), 1))
        for lists in self.areas.all_lists():  # also how an unlock made in the dashboard reaches the lanes
            out.append((self.topics.lot_lists(lists.lot_id), encode(self.plate_lists.merge(lists)), 1))
        self.link.publish(out)

    def _upkeep_loop(self) -> None:
        failing = False
        while not self._stop.wait(UPKEEP_S):
            try:
                self._upkeep()
                failing = False
            except Exception:  # the database is away: screens stay as published; log it once
                if not failing:
                    logger.exception("screen and history upkeep failed; retrying every %.0f s", UPKEEP_S)
                failing = True

    def _upkeep(self) -> None:
        """Re-publish the lots whose data turned stale or fresh and the screens showing them or
        whose override began or ended (cloud/screens.py); sample the history when a slot begins."""
        self.store.checkpoint()  # SQLite: the WAL into the database here, not in a batch's commit
        now = utc_now()
        if self.connected.is_set():
            lot_ids, screens = self.signs.due(now)
            wanted = lot_ids | {item.lot_id for screen in screens for item in screen.lots}
            with self._publish_lock:
                lots = self._read_lots(wanted) if wanted else {}
                states = [self.signs.availability(lots[lot_id], now) for lot_id in lot_ids & lots.keys()]
                out = [(self.topics.lot_availability(lot.lot_id), encode(lot), STATE_QOS) for lot in states]
                out += [
                    (self.topics.screen(screen.id), encode(self.signs.content(screen, lots, now)), STATE_QOS)
                    for screen in screens
                    if all(item.lot_id in lots for item in screen.lots)
                ]
                self.link.publish(out)
        sample = self.history.due(now)
        if sample:
            lots = {lot.id: lot for lot in self.store.lots(sample)}
            self.history.record(lots, lambda lot_id: self.signs.freshness.is_stale(lot_id, now), now)

    def _read_lots(self, ids: set[str]) -> dict[str, LotState]:
        """The lots' states; while the database is away the last ones read (stale rows show no
        number, so an old count does not reach a sign through them)."""
        try:
            lots = {lot.id: lot for lot in self.store.lots(ids)}
        except Exception:
            logger.warning("database unreachable: screens rendered from the last lot states read")
            return {i: self._lot_cache[i] for i in ids if i in self._lot_cache}
        self._lot_cache.update(lots)
        return lots

    def _publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.link.publish([(topic, payload, qos)])

    def _publish_status(self) -> None:
        if self.connected.is_set():
            self._publish(self.topics.collector_status(self.cfg.name), encode(self._status("online")))

    def _status(self, state: Literal["online", "offline"]) -> CollectorStatus:
        return CollectorStatus(
            name=self.cfg.name,
            state=state,
            ts=utc_now(),
            stored=self.stored,
            duplicates=self.duplicates,
            rejected=dict(self.rejected),
            gaps_open=sum(p.gap for p in self.store.all_progress()) if state == "online" else 0,
            unrecoverable=self.unrecoverable,
        )
