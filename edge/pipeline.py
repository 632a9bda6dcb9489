"""One gate node: each frame is read, decided on, acted on at the barrier and recorded.

frame -> Trigger -> PlateReader -> PassageVoter -> decide() -> GateController.open() -> Outbox.append()
      -> EdgeLink

Plates are read only while the trigger sees a vehicle; the reads of one vehicle's frames are
voted into one decision, made once per vehicle (edge/trigger.py, edge/voting.py).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from gpiozero.pins.mock import MockFactory
from ulid import ULID

from edge import health
from edge.commands import CommandHandler
from edge.config import EdgeConfig
from edge.decision import Policy, decide
from edge.frames import DeviceSource, Frame, FrameSource, open_source
from edge.lists import ListsCache
from edge.mqtt_link import EdgeLink
from edge.ocr import create_engine
from edge.outbox import Outbox
from edge.plate_format import PlateFormats, plate_kind
from edge.plates import PlateRead, PlateReader
from edge.snapshots import SnapshotStore, crop_for_event
from edge.trigger import EveryFrame, make_trigger
from edge.voting import PassageVoter, Vote
from gate_firmware import BarrierState, GateController
from protocol import (
    Action,
    Decision,
    Direction,
    GateCommand,
    GateEvent,
    GateMode,
    LotLists,
    Reason,
    Topics,
    encode,
)
from protocol.messages import utc_now

logger = logging.getLogger(__name__)

PRUNE_EVERY_S = 600.0  # snapshot retention is applied this often


@dataclass
class NodeStats:
    frames: int = 0
    reads: int = 0
    events: int = 0
    skipped_cooldown: int = 0
    idle_frames: int = 0  # frames without a vehicle: not read
    passages: int = 0  # vehicles decided on
    bad_frames: Counter[str] = field(default_factory=Counter)
    last_frame: float | None = None  # monotonic time of the newest usable frame
    last_read_ts: datetime | None = None
    fps: float = 0.0  # usable frames per second, smoothed


class EdgeNode:
    """Runs the gate pipeline for one lane. Built from an :class:`EdgeConfig` by :meth:`build`."""

    def __init__(
        self,
        cfg: EdgeConfig,
        reader: PlateReader | None,
        gate: GateController,
        outbox: Outbox,
        link: EdgeLink | None,
        *,
        pin_factory: MockFactory | None = None,
    ) -> None:
        self.cfg = cfg
        self.reader = reader
        self.gate = gate
        self.outbox = outbox
        self.link = link
        self.pin_factory = pin_factory
        self.topics = Topics(cfg.mqtt.topic_root)
        self.mode = GateMode.NORMAL
        self.lists = ListsCache(cfg.outbox.with_name(cfg.outbox.stem + ".lists.json"))
        self.policy = self._policy()
        self.stats = NodeStats()
        self.source: FrameSource | None = None
        self._recent: dict[str, float] = {}
        self._frame: np.ndarray | None = None  # the newest usable frame, for snapshots
        self._admitted: list[float] = []  # wall times this gate opened for a vehicle
        snapshots = cfg.snapshots
        self.snapshots = SnapshotStore(
            snapshots.folder or cfg.outbox.parent / "snapshots", max_mb=snapshots.max_mb,
            max_age_days=snapshots.max_age_days,
        )  # fmt: skip
        self.commands = CommandHandler(
            cfg.gate_id, open_barrier=self.remote_open, set_mode=self.set_mode, reload_lists=self.reload_lists
        )
        if link is not None:
            link.on_command = self._command
            link.on_lists = self._lists
            link.status_extra = self.health
        if reader is not None and (cfg.ocr.formats or not cfg.ocr.chinese):
            reader.formats = PlateFormats.from_patterns(cfg.ocr.formats, chinese=cfg.ocr.chinese)
        self.trigger = make_trigger(cfg.trigger, pin_factory=pin_factory)
        # Without a presence signal every frame is a vehicle of its own: decide on each.
        one_frame = isinstance(self.trigger, EveryFrame)
        self.voter = PassageVoter(
            max_frames=1 if one_frame else cfg.voting.max_frames,
            max_seconds=cfg.voting.max_seconds,
            min_agree=cfg.voting.min_agree,
            sure=cfg.voting.sure,
        )

    @classmethod
    def build(cls, cfg: EdgeConfig) -> EdgeNode:
        """Create the engine, pins, barrier controller, outbox and MQTT link from config."""
        factory = MockFactory() if cfg.simulation.enabled else None
        # "truth" (simulation only): the synthetic camera's own plate stands in for reading
        reader = (
            None
            if cfg.ocr.engine == "truth"
            else PlateReader(create_engine(cfg.ocr.engine, threads=cfg.ocr.threads))
        )
        from gate_firmware.simulator import SimulatedBarrier

        # A simulated arm works the limit switches; it wires the pins, so it comes first. It stops
        # by itself when the controller releases the relays.
        barrier = SimulatedBarrier(cfg.gate, factory) if factory is not None else None
        try:
            gate = GateController(cfg.gate, pin_factory=factory)
        except BaseException:
            if barrier is not None:
                barrier.close()
            raise
        outbox = Outbox(cfg.outbox, max_events=cfg.link.outbox_max_events)
        link = EdgeLink(
            cfg.mqtt, cfg.gate_id, cfg.lot_id, outbox,
            heartbeat_s=cfg.link.heartbeat_s, drain_rate=cfg.link.drain_rate,
            confirm_timeout_s=cfg.link.confirm_timeout_s,
        )  # fmt: skip
        return cls(cfg, reader, gate, outbox, link, pin_factory=factory)

    # -- what the gate knows: lists, mode, health ----------------------------------------------
    def _policy(self) -> Policy:
        lists = self.lists.lists
        return Policy(
            allow=frozenset(self.cfg.policy.allow) | frozenset(lists.allow if lists else ()),
            deny=frozenset(self.cfg.policy.deny) | frozenset(lists.deny if lists else ()),
            locked=frozenset(lists.locked if lists else ()),
            open_without_plate=self.cfg.policy.open_without_plate,
            mode=self.mode,
        )

    def free_estimate(self) -> int | None:
        """Free spaces as the cloud last said, less what this gate let in since that count was
        made (so a gate cut off from the cloud does not keep admitting cars into a full lot).
        Exits add room back. None while the cloud has never been heard from."""
        availability = self.link.availability if self.link else None
        if availability is None:
            return None
        since = availability.ts.timestamp()
        self._admitted = [t for t in self._admitted if t > since]
        step = -1 if self.cfg.direction is Direction.ENTRY else 1
        return max(availability.free + step * len(self._admitted), 0)

    def _lists(self, lists: LotLists) -> None:
        if self.lists.update(lists):
            self.policy = self._policy()
            logger.info("lists updated: %d allowed, %d denied, %d locked", *self.lists.sizes())

    def reload_lists(self) -> None:
        self.lists = ListsCache(self.lists.path)
        self.policy = self._policy()

    def set_mode(self, mode: GateMode) -> None:
        logger.warning("gate %s mode %s -> %s", self.cfg.gate_id, self.mode.value, mode.value)
        self.mode = mode
        self.policy = self._policy()

    def remote_open(self, reason: str) -> None:
        """An operator's "open": lift the barrier once and record it as an event."""
        self.gate.open(reason)
        self._record(None, Decision(action=Action.OPEN, reason=Reason.REMOTE_OPEN))

    def _command(self, command: GateCommand) -> None:
        result = self.commands.handle(command)
        if self.link:
            self.link.publish_result(result)

    def health(self) -> dict[str, object]:
        """The node's part of its heartbeat."""
        last = self.stats.last_frame
        camera_down = isinstance(self.source, DeviceSource) and not self.source.connected
        return {
            "barrier": str(self.gate.state),
            "mode": self.mode.value,
            "camera": "down" if camera_down else ("ok" if last and time.monotonic() - last < 60 else "idle"),
            "fps": round(self.stats.fps, 2),
            "last_read_ts": self.stats.last_read_ts,
            "cpu_temp_c": health.cpu_temp_c(),
            "disk_free_mb": health.disk_free_mb(self.cfg.outbox.parent),
        }

    def healthy(self) -> bool:
        """The worker threads are alive (for the service watchdog)."""
        return self.link is None or self.link.alive()

    # -- one vehicle ---------------------------------------------------------------------------
    def handle(self, frame: Frame) -> GateEvent | None:
        """Read, decide, act and record one frame. Returns the event, or None if nothing happened."""
        self.stats.frames += 1
        if frame.image is None and not (self.reader is None and frame.truth):
            self.stats.bad_frames[frame.error or "unknown"] += 1
            logger.warning("frame %s unusable: %s", frame.source, frame.error)
            return None
        started = time.perf_counter()
        now = time.monotonic()
        self._count_frame(now)
        self._frame = frame.image
        presence = self.trigger.update(frame.image, now)
        if not presence.present:
            self.stats.idle_frames += 1
            vote = self.voter.vehicle_left(now) if presence.left else None
            return self._act(vote, frame.source, started) if vote else None
        if self.voter.decided:  # this vehicle has had its decision: one trigger per vehicle
            return None
        read = self._read(frame)
        if read is not None and read.confidence < self.cfg.ocr.min_confidence:
            logger.info("frame %s: read %s below confidence %.2f", frame.source, read.text, read.confidence)
            read = None
        if read is not None:
            self.stats.reads += 1
            self.stats.last_read_ts = utc_now()
        vote = self.voter.add(read, now)
        if isinstance(self.trigger, EveryFrame):
            self.voter.vehicle_left(now)
        return self._act(vote, frame.source, started) if vote else None

    def _read(self, frame: Frame) -> PlateRead | None:
        if self.reader is None:  # ocr.engine "truth": simulation only (checked by EdgeConfig)
            text = frame.truth
            return PlateRead(text, 1.0, (0, 0, 0, 0), plate_kind(text) or "standard") if text else None
        assert frame.image is not None
        return self.reader.best(frame.image)

    def _count_frame(self, now: float) -> None:
        last = self.stats.last_frame
        if last is not None and now > last:
            self.stats.fps = 0.8 * self.stats.fps + 0.2 / (now - last)
        self.stats.last_frame = now

    def _act(self, vote: Vote, source: str, started: float) -> GateEvent | None:
        """Decide on one vehicle's vote, open the barrier if so decided, and record the event."""
        read: PlateRead | None = None
        if vote.text is not None and vote.best is not None and vote.confidence >= self.cfg.ocr.min_confidence:
            read = dataclasses.replace(
                vote.best, text=vote.text, confidence=vote.confidence, kind=vote.kind or vote.best.kind
            )
        if read is not None and isinstance(self.trigger, EveryFrame) and self._in_cooldown(read.text):
            self.stats.skipped_cooldown += 1  # no presence signal: the plate cooldown keeps one car one event
            return None
        self.stats.passages += 1
        decision = decide(self.cfg.direction, read.text if read else None, self.free_estimate(), self.policy)
        if decision.action is Action.OPEN:
            self.gate.open(decision.reason.value)
            self._admitted.append(time.time())
        crop = read.crop if read is not None else None
        event = self._record(read, decision, crop_for_event(crop) if self.cfg.snapshots.send_crop else None)
        self.snapshots.save(event.id, crop, self._frame)
        logger.info(
            "%s %s %s -> %s (%s) seq=%d in %.0f ms",
            self.cfg.gate_id, source, read.text if read else "no plate",
            decision.action.value, decision.reason.value, event.seq, (time.perf_counter() - started) * 1000,
        )  # fmt: skip
        return event

    def _in_cooldown(self, plate: str) -> bool:
        now = time.monotonic()
        last = self._recent.get(plate)
        self._recent = {p: t for p, t in self._recent.items() if now - t < self.cfg.policy.cooldown_s}
        self._recent[plate] = now
        return last is not None and now - last < self.cfg.policy.cooldown_s

    def _record(self, read: PlateRead | None, decision: Decision, crop_jpeg: str | None = None) -> GateEvent:
        made: list[GateEvent] = []

        def build(seq: int) -> tuple[str, str, bytes]:
            event = GateEvent(
                id=str(ULID()),
                epoch=self.outbox.epoch,
                seq=seq,
                ts=utc_now(),
                lot_id=self.cfg.lot_id,
                gate_id=self.cfg.gate_id,
                direction=self.cfg.direction,
                plate=read.text if read else None,
                confidence=round(read.confidence, 4) if read else 0.0,
                decision=decision,
                crop_jpeg=crop_jpeg,
            )
            made.append(event)
            return event.id, self.topics.gate_events(self.cfg.gate_id), encode(event)

        self.outbox.append(build)
        self.stats.events += 1
        if self.link:
            self.link.wake()
        return made[0]

    # -- simulated hardware --------------------------------------------------------------------
    def drive_vehicle_through(self, stop: threading.Event) -> bool:
        """Simulation: once the barrier is open, a vehicle crosses the loops in ``simulation.drive_s``:
        loop_a then loop_b at an entry, loop_b then loop_a at an exit."""
        from gate_firmware.simulator import drive_vehicle

        if self.pin_factory is None:
            raise RuntimeError("drive_vehicle_through needs simulated pins (simulation.enabled = true)")
        deadline = time.monotonic() + self.cfg.gate.travel_limit_s + 1
        while self.gate.state is not BarrierState.OPEN:
            if stop.wait(0.02) or time.monotonic() > deadline:
                return False
        return drive_vehicle(
            self.pin_factory,
            self.cfg.gate,
            entering=self.cfg.direction is Direction.ENTRY,
            drive_s=self.cfg.simulation.drive_s,
            stop=stop,
        )

    # -- service -------------------------------------------------------------------------------
    def run(self, stop: threading.Event, source: FrameSource | None = None) -> None:
        """Process frames until ``stop`` is set; keep the link up after a finite source ends."""
        source = self.source = source or open_source(self.cfg.camera)
        if self.link:
            self.link.start()
        logger.info(
            "gate %s (%s, lot %s) running on %s with %s",
            self.cfg.gate_id, self.cfg.direction.value, self.cfg.lot_id, source.name,
            self.reader.engine.name if self.reader else "the simulated camera's plates",
        )  # fmt: skip
        next_prune = 0.0
        try:
            for frame in source.frames(stop):
                if time.monotonic() >= next_prune:
                    self.snapshots.prune()
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                event = self.handle(frame)
                simulate = self.pin_factory is not None and self.cfg.simulation.vehicles
                if event and event.decision.action is Action.OPEN and simulate:
                    self.drive_vehicle_through(stop)
                if stop.is_set():
                    break
            last = self.voter.vehicle_left(time.monotonic())  # a passage the source ended mid-way
            if last is not None:
                self._act(last, source.name, time.perf_counter())
            if not stop.is_set():
                logger.info("source %s finished; the node stays up until stopped", source.name)
            stop.wait()
        finally:
            self.close()

    def close(self) -> None:
        self.trigger.close()
        if self.link:
            self.link.stop()
        self.gate.close()
        self.outbox.close()
