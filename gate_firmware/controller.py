"""The gate controller: runs a :class:`BarrierMachine` in real time on the gpiozero devices.

Inputs (commands from any thread, input edges from gpiozero's callback thread) and the timer
thread all go through one lock, feed the machine, and drive the relays from each resulting step.
An input that arrives while a step is being carried out in the same thread (a pin wired straight
back, as a simulator may do) is queued and fed right after it, so steps are carried out in order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from gpiozero.pins import Factory

from gate_firmware.closing import Closing
from gate_firmware.config import GateConfig
from gate_firmware.hardware import GateDevices
from gate_firmware.machine import BarrierMachine, Counts, Step, Trigger
from gate_firmware.states import Alarm, BarrierEvent, BarrierState, FaultReason, Input, Light

log = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The gate as the controller saw it at one moment (``at``: the controller's clock).

    ``trigger`` and ``event`` say what caused it when it reports a step; both are None for a
    snapshot taken on request.
    """

    state: BarrierState
    motor_open: bool
    motor_close: bool
    pulse: bool
    lamp: bool
    light: Light
    buzzer: bool
    auto_close: bool
    alarms: frozenset[Alarm]
    inputs: frozenset[Input]
    counts: Counts
    fault: FaultReason | None
    at: float
    trigger: Trigger | None = None
    event: BarrierEvent | None = None

    @classmethod
    def of_step(cls, step: Step) -> Snapshot:
        return cls(
            step.state, step.motor_open, step.motor_close, step.pulse, step.lamp, step.light, step.buzzer,
            step.auto_close, step.alarms, step.inputs, step.counts, step.fault, step.at, step.trigger,
            step.event,
        )  # fmt: skip

    @classmethod
    def of_machine(cls, machine: BarrierMachine, at: float) -> Snapshot:
        m = machine
        return cls(
            m.state, m.motor_open, m.motor_close, m.pulse, m.lamp, m.light, m.buzzer, m.auto_close,
            m.alarms, m.inputs, m.counts, m.fault, at,
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types: enums as their values, inputs and alarms as sorted lists, counts
        flattened. ``event`` is null, ``entry``, ``exit``, ``tailgate``, ``reversal``,
        ``fault:<reason>`` or ``cleared:<alarm>``."""
        return {
            "at": self.at,
            "state": self.state.value,
            "motor_open": self.motor_open,
            "motor_close": self.motor_close,
            "pulse": self.pulse,
            "lamp": self.lamp,
            "light": self.light.value,
            "buzzer": self.buzzer,
            **asdict(self.counts),
            "event": self.event and self.event.value,
            "fault": self.fault and self.fault.value,
            "alarms": sorted(alarm.value for alarm in self.alarms),
            "auto_close": self.auto_close,
            "trigger": self.trigger and self.trigger.value,
            "inputs": sorted(name.value for name in self.inputs),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        """The inverse of :meth:`as_dict` (raises KeyError or ValueError on a malformed one)."""
        return cls(
            BarrierState(data["state"]),
            bool(data["motor_open"]),
            bool(data["motor_close"]),
            bool(data["pulse"]),
            bool(data["lamp"]),
            Light(data["light"]),
            bool(data["buzzer"]),
            bool(data["auto_close"]),
            frozenset(Alarm(name) for name in data["alarms"]),
            frozenset(Input(name) for name in data["inputs"]),
            Counts(**{name: int(data[name]) for name in Counts.__dataclass_fields__}),
            FaultReason(data["fault"]) if data["fault"] else None,
            float(data["at"]),
            Trigger(data["trigger"]) if data["trigger"] else None,
            BarrierEvent(data["event"]) if data["event"] else None,
        )


MachineInput = Callable[[float], list[Step]]


class GateController(Closing):
    """One barrier gate: its devices, its machine and the timer thread that keeps time for it.

    ``on_change`` is called with a :class:`Snapshot` after every step the machine takes (the first
    one, trigger ``start``, from the constructor), in order, with the controller's (re-entrant)
    lock held: keep it short and don't wait in it on another thread that uses this controller.
    An exception it raises is logged and otherwise ignored.

    ``clock`` (default :func:`time.monotonic`) timestamps every input; the timer thread sleeps by
    its differences. A manual clock (a simulation in virtual time) goes with
    ``timer_thread=False``: the caller then calls :meth:`tick` after moving the clock.
    """

    def __init__(
        self,
        config: GateConfig,
        *,
        pin_factory: Factory | None = None,
        on_change: Callable[[Snapshot], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        timer_thread: bool = True,
    ) -> None:
        self._on_change = on_change
        self._clock = clock
        self._cond = threading.Condition(threading.RLock())
        self._closed = False
        self._pending: deque[MachineInput] = deque()
        self._feeding = False
        self._devices = GateDevices(config, pin_factory=pin_factory)
        try:
            with self._cond:  # an edge arriving meanwhile waits for the machine, then is seen as a repeat
                self._devices.watch(self._input_changed)
                self._machine = BarrierMachine(config, now=clock(), inputs=self._devices.levels())
                self._feed(lambda now: [self._machine.first_step])
        except BaseException:
            self._devices.close()
            raise
        self._thread: threading.Thread | None = None
        if timer_thread:
            self._thread = threading.Thread(target=self._run, name="gate-timer", daemon=True)
            self._thread.start()
        log.info("gate controller started in %s: %s", self._machine.state, config.model_dump(mode="json"))

    # -- commands -------------------------------------------------------------------------------

    def open(self, reason: str = "") -> None:
        """Raise the barrier for one vehicle (thread-safe). Raises RuntimeError once closed."""
        self._command("open", reason, self._machine_open)

    def close_barrier(self, reason: str = "") -> None:
        """Lower the barrier now, unless something is in its path (thread-safe)."""
        self._command("close", reason, self._machine_close)

    def heartbeat(self) -> None:
        """The edge application is alive (thread-safe). Call it more often than the config's
        ``edge_heartbeat_s``; without that setting it does nothing."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the gate controller is closed")
            self._feed(self._machine_heartbeat)

    def tick(self) -> None:
        """Fire the machine's due timers now. The timer thread does this by itself; with
        ``timer_thread=False`` the caller does, after moving the clock."""
        self._feed(self._machine_tick)

    def close(self) -> None:
        """Stop the timer thread, switch the motor off and release the pins. Safe to call again."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._devices.stop()
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT_S)
        self._devices.close()
        log.info("gate controller closed")

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
    def fault(self) -> FaultReason | None:
        with self._cond:
            return self._machine.fault

    @property
    def alarms(self) -> frozenset[Alarm]:
        with self._cond:
            return self._machine.alarms

    @property
    def next_deadline(self) -> float | None:
        """When the machine next has something timed to do (the controller's clock), or None."""
        with self._cond:
            return self._machine.next_deadline

    @property
    def closed(self) -> bool:
        return self._closed

    def snapshot(self) -> Snapshot:
        with self._cond:
            return Snapshot.of_machine(self._machine, self._clock())

    # -- inside ---------------------------------------------------------------------------------

    def _machine_open(self, now: float) -> list[Step]:
        return self._machine.open_command(now)

    def _machine_close(self, now: float) -> list[Step]:
        return self._machine.close_command(now)

    def _machine_heartbeat(self, now: float) -> list[Step]:
        return self._machine.heartbeat(now)

    def _machine_tick(self, now: float) -> list[Step]:
        return self._machine.tick(now)

    def _command(self, name: str, reason: str, machine_input: MachineInput) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the gate controller is closed")
            log.info("%s command%s", name, f" ({reason})" if reason else "")
            self._feed(machine_input)

    def _input_changed(self, name: Input, active: bool) -> None:
        self._feed(lambda now: self._machine.input_changed(name, active, now))

    def _feed(self, machine_input: MachineInput) -> None:
        """Give one input to the machine and carry out its steps; wakes the timer thread."""
        with self._cond:
            if self._closed:
                return
            self._pending.append(machine_input)
            if self._feeding:  # re-entered from a step being carried out: the loop below takes it
                return
            self._feeding = True
            try:
                while self._pending:
                    for step in self._pending.popleft()(self._clock()):
                        self._carry_out(step)
            finally:
                self._feeding = False
                self._pending.clear()
            self._cond.notify_all()  # the next deadline may have moved

    def _carry_out(self, step: Step) -> None:
        self._devices.drive(
            motor_open=step.motor_open,
            motor_close=step.motor_close,
            lamp=step.lamp,
            pulse=step.pulse,
            light=step.light,
            buzzer=step.buzzer,
        )
        log.log(
            logging.WARNING if step.event is not None and step.event.is_fault else logging.INFO,
            "barrier %s after %s%s%s (in %d, out %d)",
            step.state,
            step.trigger,
            f", {step.event}" if step.event else "",
            f", fault {step.fault}" if step.fault else "",
            step.counts.count_in,
            step.counts.count_out,
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
