"""The gate controller: runs a :class:`BarrierMachine` in real time on the gpiozero devices.

Inputs (open commands from any thread, loop edges from gpiozero's callback thread) and the timer
thread all go through one lock, feed the machine, and drive the relays from each resulting step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from gpiozero.pins import Factory

from gate_firmware.config import GateConfig
from gate_firmware.hardware import BarrierMotor, VehicleLoop
from gate_firmware.machine import BarrierMachine, Counts, Step
from gate_firmware.states import BarrierState

log = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The gate as the controller saw it at one moment (``at``: the controller's clock)."""

    state: BarrierState
    motor_open: bool
    motor_close: bool
    vehicle_present: bool
    counts: Counts
    at: float

    @classmethod
    def of_step(cls, step: Step) -> Snapshot:
        return cls(step.state, step.motor_open, step.motor_close, step.vehicle_present, step.counts, step.at)


class GateController:
    """One barrier gate: motor relays, vehicle loop and the timer thread that closes it again.

    ``on_change`` is called with a :class:`Snapshot` after every step the machine takes, in order,
    with the controller's (re-entrant) lock held: keep it short and don't wait in it on another
    thread that uses this controller. An exception it raises is logged and otherwise ignored.

    ``clock`` (default :func:`time.monotonic`) timestamps every input; the timer thread sleeps by
    its differences, so a manual clock for tests should be paired with :meth:`tick`.
    """

    def __init__(
        self,
        config: GateConfig,
        *,
        pin_factory: Factory | None = None,
        on_change: Callable[[Snapshot], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_change = on_change
        self._clock = clock
        self._cond = threading.Condition(threading.RLock())
        self._closed = False
        self._motor = BarrierMotor(config.open_pin, config.close_pin, pin_factory=pin_factory)
        try:
            self._loop = VehicleLoop(
                config.loop_pin, bounce_time=config.loop_bounce_s, pin_factory=pin_factory
            )
        except BaseException:
            self._motor.close()
            raise
        with self._cond:  # an edge arriving meanwhile waits for the machine, then is seen as a repeat
            self._loop.when_vehicle_arrives = self._vehicle_arrived
            self._loop.when_vehicle_leaves = self._vehicle_left
            self._machine = BarrierMachine(config, vehicle_present=self._loop.is_vehicle_present)
        self._thread = threading.Thread(target=self._run, name="gate-timer", daemon=True)
        self._thread.start()
        log.info("gate controller started: %s", config.model_dump())

    # -- commands -------------------------------------------------------------------------------

    def open(self, reason: str = "") -> None:
        """Raise the barrier for one vehicle (thread-safe). Raises RuntimeError once closed."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the gate controller is closed")
            log.info("open command%s", f" ({reason})" if reason else "")
            self._feed(self._machine.open_command)

    def tick(self) -> None:
        """Fire the machine's due timers now. The timer thread does this by itself; a test with a
        manual clock calls it after moving the clock."""
        self._feed(self._machine.tick)

    def close(self) -> None:
        """Stop the timer thread, switch both relays off and release the pins. Safe to call again."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._motor.stop()
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT_S)
        self._loop.close()
        self._motor.close()
        log.info("gate controller closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- state ----------------------------------------------------------------------------------

    @property
    def state(self) -> BarrierState:
        with self._cond:
            return self._machine.state

    @property
    def counts(self) -> Counts:
        with self._cond:
            return self._machine.counts

    @property
    def is_vehicle_present(self) -> bool:
        """The loop as the machine last saw it (debounced)."""
        with self._cond:
            return self._machine.vehicle_present

    @property
    def closed(self) -> bool:
        return self._closed

    def snapshot(self) -> Snapshot:
        with self._cond:
            m = self._machine
            return Snapshot(m.state, m.motor_open, m.motor_close, m.vehicle_present, m.counts, self._clock())

    # -- inside ---------------------------------------------------------------------------------

    def _vehicle_arrived(self) -> None:
        self._feed(lambda now: self._machine.loop_changed(True, now))

    def _vehicle_left(self) -> None:
        self._feed(lambda now: self._machine.loop_changed(False, now))

    def _feed(self, machine_input: Callable[[float], list[Step]]) -> None:
        """Give one input to the machine and carry out its steps; wakes the timer thread."""
        with self._cond:
            if self._closed:
                return
            for step in machine_input(self._clock()):
                self._carry_out(step)
            self._cond.notify_all()  # the next deadline may have moved

    def _carry_out(self, step: Step) -> None:
        self._motor.drive(motor_open=step.motor_open, motor_close=step.motor_close)
        log.info(
            "barrier %s after %s%s (vehicle %s, passages %d)",
            step.state,
            step.trigger,
            f", {step.event}" if step.event else "",
            "present" if step.vehicle_present else "absent",
            step.counts.passages,
        )
        if self._on_change is None:
            return
        snap = Snapshot.of_step(step)
        try:
            self._on_change(snap)
        except Exception:
            log.exception("on_change callback failed for %s", snap)

    def _run(self) -> None:
        try:
            while not self._wait():
                self.tick()
        except Exception:  # fail safe: without its timers the gate must not take commands
            log.critical("gate timer thread failed; closing the gate controller", exc_info=True)
            self.close()

    def _wait(self) -> bool:
        """Sleep until the machine's next deadline or the next input; True once closing."""
        with self._cond:
            if not self._closed:
                self._cond.wait(self._timeout())
            return self._closed

    def _timeout(self) -> float | None:
        deadline = self._machine.next_deadline
        return None if deadline is None else min(max(0.0, deadline - self._clock()), threading.TIMEOUT_MAX)
