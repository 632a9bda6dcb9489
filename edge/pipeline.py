"""One gate node: each frame is read, decided on, acted on at the barrier and recorded.

frame -> PlateReader -> decide() -> GateController.open() -> Outbox.append() -> EdgeLink
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from gpiozero.pins.mock import MockFactory
from ulid import ULID

from edge.config import EdgeConfig
from edge.decision import Policy, decide
from edge.frames import Frame, FrameSource, open_source
from edge.mqtt_link import EdgeLink
from edge.ocr import create_engine
from edge.outbox import Outbox
from edge.plates import PlateRead, PlateReader
from gate_firmware import BarrierState, GateController
from protocol import Action, Decision, GateEvent, Topics, encode
from protocol.messages import utc_now

logger = logging.getLogger(__name__)


@dataclass
class NodeStats:
    frames: int = 0
    reads: int = 0
    events: int = 0
    skipped_cooldown: int = 0
    bad_frames: Counter[str] = field(default_factory=Counter)


class EdgeNode:
    """Runs the gate pipeline for one lane. Built from an :class:`EdgeConfig` by :meth:`build`."""

    def __init__(
        self,
        cfg: EdgeConfig,
        reader: PlateReader,
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
        self.policy = Policy(
            allow=frozenset(cfg.policy.allow),
            deny=frozenset(cfg.policy.deny),
            open_without_plate=cfg.policy.open_without_plate,
        )
        self.stats = NodeStats()
        self._recent: dict[str, float] = {}

    @classmethod
    def build(cls, cfg: EdgeConfig) -> EdgeNode:
        """Create the engine, pins, barrier controller, outbox and MQTT link from config."""
        factory = MockFactory() if cfg.simulation.enabled else None
        reader = PlateReader(create_engine(cfg.ocr.engine, threads=cfg.ocr.threads))
        gate = GateController(cfg.gate, pin_factory=factory)
        outbox = Outbox(cfg.outbox)
        link = EdgeLink(
            cfg.mqtt, cfg.gate_id, cfg.lot_id, outbox, status_extra=lambda: {"barrier": str(gate.state)}
        )
        return cls(cfg, reader, gate, outbox, link, pin_factory=factory)

    # -- one vehicle ---------------------------------------------------------------------------
    def handle(self, frame: Frame) -> GateEvent | None:
        """Read, decide, act and record one frame. Returns the event, or None if nothing happened."""
        self.stats.frames += 1
        if frame.image is None:
            self.stats.bad_frames[frame.error or "unknown"] += 1
            logger.warning("frame %s unusable: %s", frame.source, frame.error)
            return None
        started = time.perf_counter()
        read = self.reader.best(frame.image)
        if read is not None and read.confidence < self.cfg.ocr.min_confidence:
            logger.info("frame %s: read %s below confidence %.2f", frame.source, read.text, read.confidence)
            read = None
        if read is not None:
            self.stats.reads += 1
            if self._in_cooldown(read.text):
                self.stats.skipped_cooldown += 1
                return None
        free = self.link.availability.free if self.link and self.link.availability else None
        decision = decide(self.cfg.direction, read.text if read else None, free, self.policy)
        if decision.action is Action.OPEN:
            self.gate.open(decision.reason.value)
        event = self._record(read, decision)
        logger.info(
            "%s %s %s -> %s (%s) seq=%d in %.0f ms",
            self.cfg.gate_id, frame.source, read.text if read else "no plate",
            decision.action.value, decision.reason.value, event.seq, (time.perf_counter() - started) * 1000,
        )  # fmt: skip
        return event

    def _in_cooldown(self, plate: str) -> bool:
        now = time.monotonic()
        last = self._recent.get(plate)
        self._recent = {p: t for p, t in self._recent.items() if now - t < self.cfg.policy.cooldown_s}
        self._recent[plate] = now
        return last is not None and now - last < self.cfg.policy.cooldown_s

    def _record(self, read: PlateRead | None, decision: Decision) -> GateEvent:
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
        """Simulation: once the barrier is open, put a vehicle on the loop and take it off again."""
        if self.pin_factory is None:
            raise RuntimeError("drive_vehicle_through needs simulated pins (simulation.enabled = true)")
        deadline = time.monotonic() + self.cfg.gate.travel_s * 3 + 1
        while self.gate.state is not BarrierState.OPEN:
            if stop.wait(0.02) or time.monotonic() > deadline:
                return False
        pin = self.pin_factory.pin(self.cfg.gate.loop_pin)
        pin.drive_high()
        stop.wait(self.cfg.simulation.drive_s)
        pin.drive_low()
        return True

    # -- service -------------------------------------------------------------------------------
    def run(self, stop: threading.Event, source: FrameSource | None = None) -> None:
        """Process frames until ``stop`` is set; keep the link up after a finite source ends."""
        source = source or open_source(self.cfg.camera)
        if self.link:
            self.link.start()
        logger.info(
            "gate %s (%s, lot %s) running on %s with %s",
            self.cfg.gate_id, self.cfg.direction.value, self.cfg.lot_id, source.name, self.reader.engine.name,
        )  # fmt: skip
        try:
            for frame in source.frames(stop):
                event = self.handle(frame)
                if event and event.decision.action is Action.OPEN and self.pin_factory is not None:
                    self.drive_vehicle_through(stop)
                if stop.is_set():
                    break
            if not stop.is_set():
                logger.info("source %s finished; the node stays up until stopped", source.name)
            stop.wait()
        finally:
            self.close()

    def close(self) -> None:
        if self.link:
            self.link.stop()
        self.gate.close()
        self.outbox.close()
