"""A simulated barrier on gpiozero's MockFactory pins: the arm, its limit switches, and vehicles.

:class:`SimulatedBarrier` watches the two motor relays (as the controller drives them) and moves
an arm between closed (0) and open (1) in ``travel_s``: the limit switch it leaves opens as soon as
the motor starts, the one it reaches closes when it gets there. With ``motor_output = "pulse"`` it
is a barrier with its own motor controller instead: each rising edge of the pulse output steps it
open -> stop -> close -> stop, and it stops by itself at either end. ``stuck=True`` is an arm that
does not move (the limit switches then change only when something calls :meth:`set_input`).

Every pin of the gate is a :class:`WiredPin`: an input follows the contact wired to it (closed:
low; open: whatever the Pi's pull-up makes it), an output tells its listeners each change. The
simulator must therefore be made *before* the :class:`~gate_firmware.controller.GateController`
claims the pins.

It runs in real time (a thread drives the limit switches when they fall due; ``parkgate edge``
in simulation mode) or in virtual time (``realtime=False``: the caller moves the shared clock and
calls :meth:`advance`; ``parkgate gate simulate``).

:func:`crossing` is a vehicle crossing the loops (a then b to enter, b then a to leave) as timed
input changes; :meth:`SimulatedBarrier.drive_vehicle` and :func:`drive_vehicle` play it in real time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from gpiozero.pins.mock import MockFactory, MockPin

from gate_firmware.closing import Closing
from gate_firmware.config import GateConfig, PinName
from gate_firmware.states import Input, MotorOutput

log = logging.getLogger(__name__)

Start = Literal["closed", "open", "between"]
_JOIN_TIMEOUT_S = 5.0


class WiredPin(MockPin):
    """A MockPin with something wired to it.

    As an input it follows the contact wired to it (:meth:`wire`): a closed contact pulls it low,
    an open one leaves it to its pull resistor, as on a real Pi. As an output it calls each of
    :attr:`listeners` with (pin, level) on every change, and each of :attr:`on_release` when the
    device using it releases it.
    """

    def __init__(self, factory: MockFactory, info: object) -> None:
        self.contact_closed = False
        self.listeners: list[Callable[[WiredPin, bool], None]] = []
        self.on_release: list[Callable[[], None]] = []
        super().__init__(factory, info)

    def wire(self, closed: bool) -> None:
        """Close (True) or open (False) the contact between this input and GND."""
        self.contact_closed = closed
        self._follow_wire()

    def _follow_wire(self) -> None:
        if self._function != "input":
            return
        if self.contact_closed or self._pull != "up":
            self.drive_low()  # a closed contact, or an open one without a pull-up (pull-down/floating)
        else:
            self.drive_high()

    def _set_pull(self, value: str) -> None:
        super()._set_pull(value)
        self._follow_wire()

    def _change_state(self, value: bool) -> bool:
        changed: bool = super()._change_state(value)
        if changed and self._function == "output":
            for listener in list(self.listeners):
                listener(self, value)
        return changed

    def close(self) -> None:
        super().close()
        for released in list(self.on_release):
            released()


def wired_pin(factory: MockFactory, pin: PinName) -> WiredPin:
    """The :class:`WiredPin` for ``pin``, made now if it does not exist yet."""
    made = factory.pin(pin, pin_class=WiredPin)
    if not isinstance(made, WiredPin):
        raise RuntimeError(
            f"pin {pin} already exists as a {type(made).__name__}: make the SimulatedBarrier before the "
            "GateController (or anything else) uses the pin factory"
        )
    return made


def set_contact(factory: MockFactory, config: GateConfig, name: Input, active: bool) -> None:
    """Make input ``name`` active or inactive at its pin, wired as ``config`` says."""
    pin = config.input_pins().get(name)
    if pin is None:
        raise ValueError(f"{name} is not fitted (its pin is null in the gate config)")
    wired_pin(factory, pin).wire(active != config.is_normally_closed(name))


def crossing(entering: bool, drive_s: float) -> list[tuple[float, Input, bool]]:
    """A vehicle crossing both loops in ``drive_s`` seconds: (offset, loop, occupied) in order.

    It covers the first loop, then both, then only the second, then neither: loop_a first when
    ``entering``, loop_b first when leaving.
    """
    first, second = (Input.LOOP_A, Input.LOOP_B) if entering else (Input.LOOP_B, Input.LOOP_A)
    q = drive_s / 3
    return [(0.0, first, True), (q, second, True), (2 * q, first, False), (3 * q, second, False)]


def drive_vehicle(
    factory: MockFactory,
    config: GateConfig,
    *,
    entering: bool,
    drive_s: float,
    stop: threading.Event | None = None,
) -> bool:
    """Play :func:`crossing` on the loop pins in real time. False if ``stop`` cut it short (the
    loops are then left clear)."""
    stop = stop or threading.Event()
    started = time.monotonic()
    for offset, loop, occupied in crossing(entering, drive_s):
        if stop.wait(max(0.0, started + offset - time.monotonic())):
            for name in (Input.LOOP_A, Input.LOOP_B):
                set_contact(factory, config, name, False)
            return False
        set_contact(factory, config, loop, occupied)
    return True


class SimulatedBarrier(Closing):
    """The arm of one barrier and its limit switches, moved by the relays on ``factory``'s pins.

    ``clock`` must be the controller's clock. In real time a daemon thread drives the limit
    switches; it stops by itself once the controller releases the relays, or on :meth:`close`.
    """

    def __init__(
        self,
        config: GateConfig,
        factory: MockFactory,
        *,
        clock: Callable[[], float] = time.monotonic,
        realtime: bool = True,
        stuck: bool = False,
        start: Start = "closed",
    ) -> None:
        self.config = config
        self.factory = factory
        self.stuck = stuck
        self.both_relays_seen = False  # set if the open and close relays were ever on together
        self._clock = clock
        self._cond = threading.Condition()
        self._stopped = False
        self._position = {"closed": 0.0, "open": 1.0, "between": 0.5}[start]
        self._direction = 0  # +1 up, -1 down, 0 still
        self._next = -1 if start == "open" else +1  # pulse: where the next pulse from still goes
        self.pulses = 0  # rising edges seen on the pulse output
        self._since = clock()
        self._due: list[tuple[float, Input, bool]] = []  # limit switch changes, in time order
        self._relays: dict[WiredPin, int] = {}
        self._pulse: WiredPin | None = None
        if config.motor_output is MotorOutput.RELAYS:
            self._relays = {
                wired_pin(factory, config.open_pin): +1,
                wired_pin(factory, config.close_pin): -1,
            }
        else:
            assert config.pulse_pin is not None
            self._pulse = wired_pin(factory, config.pulse_pin)
        for name, pin in config.input_pins().items():
            wired_pin(factory, pin)
            self.set_input(name, False)
        self.set_input(Input.LIMIT_CLOSED, self._position == 0.0)
        self.set_input(Input.LIMIT_OPEN, self._position == 1.0)
        for relay in self._relays:
            relay.listeners.append(self._relay_changed)
            relay.on_release.append(self._stop)
        if self._pulse is not None:
            self._pulse.listeners.append(self._pulse_changed)
            self._pulse.on_release.append(self._stop)
        self._thread: threading.Thread | None = None
        if realtime:
            self._thread = threading.Thread(target=self._run, name="barrier-sim", daemon=True)
            self._thread.start()

    # -- the world around the gate ----------------------------------------------------------------

    def set_input(self, name: Input, active: bool) -> None:
        """Make an input active or inactive at its pin (a vehicle, the photocell, a switch...)."""
        set_contact(self.factory, self.config, name, active)

    def drive_vehicle(self, *, entering: bool, drive_s: float, stop: threading.Event | None = None) -> bool:
        """A vehicle crosses the loops in real time (see :func:`drive_vehicle`)."""
        return drive_vehicle(self.factory, self.config, entering=entering, drive_s=drive_s, stop=stop)

    @property
    def position(self) -> float:
        """Where the arm is now: 0 closed, 1 open."""
        with self._cond:
            self._move_to(self._clock())
            return self._position

    # -- virtual time -------------------------------------------------------------------------------

    def next_due(self) -> float | None:
        """When the next limit switch changes, or None while the arm is still."""
        with self._cond:
            return self._due[0][0] if self._due else None

    def advance(self, now: float) -> None:
        """Drive every limit switch change due by ``now``, in order."""
        while True:
            with self._cond:
                if not self._due or self._due[0][0] > now:
                    return
                at, name, active = self._due.pop(0)
                self._move_to(at)
                if active:  # arrived: exactly at the end, whatever the rounding
                    self._position = 1.0 if name is Input.LIMIT_OPEN else 0.0
                    if self._pulse is not None:  # its own controller stops the motor there
                        self._next, self._direction = -self._direction or self._next, 0
            self.set_input(name, active)  # outside the lock: the controller reacts to it at once

    # -- inside -------------------------------------------------------------------------------------

    def _relay_changed(self, _pin: WiredPin, _level: bool) -> None:
        """A relay changed (called in the controller's thread): the arm starts, stops or turns."""
        on = self.config.relay_active_high
        moving = {direction for relay, direction in self._relays.items() if relay.state == on}
        with self._cond:
            now = self._clock()
            self._move_to(now)
            if len(moving) == 2:
                self.both_relays_seen = True
                log.error("simulated barrier: both motor relays are on")
            direction = moving.pop() if len(moving) == 1 else 0
            if direction == self._direction:
                return
            self._direction = direction
            self._due = [] if self.stuck else self._travel(now, direction)
            self._cond.notify_all()

    def _pulse_changed(self, _pin: WiredPin, level: bool) -> None:
        """The pulse output changed: a rising edge steps the barrier controller's sequence."""
        if level != self.config.relay_active_high:
            return
        with self._cond:
            now = self._clock()
            self._move_to(now)
            self.pulses += 1
            if self._direction:
                self._next, self._direction = -self._direction, 0
            else:
                self._direction = self._next
            self._due = [] if self.stuck else self._travel(now, self._direction)
            self._cond.notify_all()

    def _travel(self, now: float, direction: int) -> list[tuple[float, Input, bool]]:
        due: list[tuple[float, Input, bool]] = []
        if direction == 0:
            return due
        leaving, reaching, end = (
            (Input.LIMIT_CLOSED, Input.LIMIT_OPEN, 1.0)
            if direction > 0
            else (Input.LIMIT_OPEN, Input.LIMIT_CLOSED, 0.0)
        )
        if self._position == 1.0 - end:
            due.append((now, leaving, False))
        # Already at that end (it had only just left it): its switch closes again at once.
        due.append((now + abs(end - self._position) * self.config.travel_s, reaching, True))
        return due

    def _move_to(self, now: float) -> None:
        if not self.stuck and self._direction:
            moved = self._direction * (now - self._since) / self.config.travel_s
            self._position = min(1.0, max(0.0, self._position + moved))
        self._since = now

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                due = self._due[0][0] if self._due else None
                timeout = None if due is None else max(0.0, due - self._clock())
                if timeout is None or timeout > 0:
                    self._cond.wait(timeout)
                    continue
            self.advance(self._clock())

    def _stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the real-time thread (the pins stay as they are). Safe to call again."""
        self._stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT_S)
