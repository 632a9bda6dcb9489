"""The barrier's transition machine: pure logic, no IO, no threads, no wall clock.

Every input carries the time it happened (``now``, seconds on a monotonic clock). Each input first
fires the timers that fell due before it (so a late :meth:`BarrierMachine.tick` never reorders
events), then applies itself, and returns the :class:`Step` s it caused, oldest first.

All rules live in one table, :data:`_RULES`, and one interlock, :meth:`BarrierMachine._interlock`;
the motor outputs follow from the state alone (:data:`_MOTORS`), so both motors can never be on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from gate_firmware.config import GateConfig
from gate_firmware.states import BarrierEvent, BarrierState


class Trigger(StrEnum):
    """What made the machine act: a command, the loop, or one of its timers."""

    OPEN_COMMAND = "open_command"
    VEHICLE_ARRIVED = "vehicle_arrived"
    VEHICLE_LEFT = "vehicle_left"
    TRAVEL_DONE = "travel_done"  # the arm has had travel_s to finish its movement
    CLOSE_DELAY = "close_delay"  # close_delay_s passed since the vehicle left the loop
    OPEN_TIMEOUT = "open_timeout"  # open_timeout_s passed and no vehicle came


@dataclass(frozen=True, slots=True)
class Counts:
    """What the machine counted since it started."""

    passages: int = 0
    reversals: int = 0


@dataclass(frozen=True, slots=True)
class Step:
    """The machine's outputs after one input it acted on."""

    state: BarrierState
    motor_open: bool
    motor_close: bool
    vehicle_present: bool
    counts: Counts
    at: float  # when it happened: the input's ``now``, or the due time of the timer that fired
    trigger: Trigger
    event: BarrierEvent | None = None


@dataclass(frozen=True, slots=True)
class _Rule:
    target: BarrierState | None  # None: stay, timers untouched; a state (even the same one): enter it
    event: BarrierEvent | None = None


@dataclass(frozen=True, slots=True)
class _Timer:
    at: float
    trigger: Trigger


_S, _T = BarrierState, Trigger

# (state, trigger) -> rule. A pair not listed is ignored (no step), except loop changes, which always
# give a step because vehicle_present changed.
_RULES: dict[tuple[BarrierState, Trigger], _Rule] = {
    (_S.CLOSED, _T.OPEN_COMMAND): _Rule(_S.OPENING),
    (_S.OPENING, _T.TRAVEL_DONE): _Rule(_S.OPEN),
    (_S.OPENING, _T.VEHICLE_LEFT): _Rule(None, BarrierEvent.PASSAGE),
    (_S.OPEN, _T.OPEN_COMMAND): _Rule(_S.OPEN),  # re-enter: re-arm the close timers
    (_S.OPEN, _T.VEHICLE_LEFT): _Rule(_S.OPEN, BarrierEvent.PASSAGE),  # re-enter: arm close_delay
    (_S.OPEN, _T.CLOSE_DELAY): _Rule(_S.CLOSING),
    (_S.OPEN, _T.OPEN_TIMEOUT): _Rule(_S.CLOSING),
    (_S.CLOSING, _T.TRAVEL_DONE): _Rule(_S.CLOSED),
    (_S.CLOSING, _T.OPEN_COMMAND): _Rule(_S.OPENING),
    (_S.CLOSING, _T.VEHICLE_ARRIVED): _Rule(_S.OPENING, BarrierEvent.REVERSAL),
}
_IGNORED = _Rule(None)
_LOOP_TRIGGERS = frozenset({_T.VEHICLE_ARRIVED, _T.VEHICLE_LEFT})

# state -> (motor_open, motor_close); the motors run only while the arm travels.
_MOTORS: dict[BarrierState, tuple[bool, bool]] = {
    _S.CLOSED: (False, False),
    _S.OPENING: (True, False),
    _S.OPEN: (False, False),
    _S.CLOSING: (False, True),
}


class BarrierMachine:
    """State, vehicle presence, counts and the one pending timer of a barrier; starts CLOSED."""

    def __init__(self, config: GateConfig, *, vehicle_present: bool = False) -> None:
        self._travel_s = config.travel_s
        self._close_delay_s = config.close_delay_s
        self._open_timeout_s = config.open_timeout_s
        self._state = BarrierState.CLOSED
        self._vehicle_present = vehicle_present
        self._vehicle_passed = False  # a passage since the last accepted open command
        self._counts = Counts()
        self._timer: _Timer | None = None

    # -- what it holds -------------------------------------------------------------------------

    @property
    def state(self) -> BarrierState:
        return self._state

    @property
    def vehicle_present(self) -> bool:
        return self._vehicle_present

    @property
    def counts(self) -> Counts:
        return self._counts

    @property
    def motor_open(self) -> bool:
        return _MOTORS[self._state][0]

    @property
    def motor_close(self) -> bool:
        return _MOTORS[self._state][1]

    @property
    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do, or None while nothing is timed."""
        return None if self._timer is None else self._timer.at

    # -- inputs --------------------------------------------------------------------------------

    def open_command(self, now: float) -> list[Step]:
        """Raise the barrier (or keep it up and re-arm its close timers)."""
        return [*self.tick(now), *self._fire(Trigger.OPEN_COMMAND, now)]

    def loop_changed(self, present: bool, now: float) -> list[Step]:
        """The vehicle loop became occupied (``present``) or clear. A repeated level is ignored."""
        steps = self.tick(now)
        if present == self._vehicle_present:
            return steps
        self._vehicle_present = present
        trigger = Trigger.VEHICLE_ARRIVED if present else Trigger.VEHICLE_LEFT
        return [*steps, *self._fire(trigger, now)]

    def tick(self, now: float) -> list[Step]:
        """Fire every timer due by ``now``, each at its own due time."""
        steps: list[Step] = []
        while self._timer is not None and self._timer.at <= now:
            timer, self._timer = self._timer, None
            steps += self._fire(timer.trigger, timer.at)
        return steps

    # -- the one place where it changes ---------------------------------------------------------

    def _fire(self, trigger: Trigger, now: float) -> list[Step]:
        rule = _RULES.get((self._state, trigger), _IGNORED)
        target = self._interlock(rule.target)
        if target is None and rule.event is None and trigger not in _LOOP_TRIGGERS:
            return []
        if trigger is Trigger.OPEN_COMMAND:
            self._vehicle_passed = False  # a new authorisation waits for its own vehicle
        self._count(rule.event)
        if target is not None:
            self._enter(target, now)
        return [self._step(now, trigger, rule.event)]

    def _interlock(self, target: BarrierState | None) -> BarrierState | None:
        """Safety: never start closing onto an occupied loop. Stay open instead; as the loop is
        occupied, re-entering OPEN arms no timer, and the vehicle leaving arms close_delay.

        (Closing never *continues* over a vehicle either: arriving while CLOSING reverses, see
        :data:`_RULES`.)
        """
        if target is BarrierState.CLOSING and self._vehicle_present:
            return BarrierState.OPEN
        return target

    def _count(self, event: BarrierEvent | None) -> None:
        if event is BarrierEvent.PASSAGE:
            self._vehicle_passed = True
            self._counts = replace(self._counts, passages=self._counts.passages + 1)
        elif event is BarrierEvent.REVERSAL:
            self._counts = replace(self._counts, reversals=self._counts.reversals + 1)

    def _enter(self, state: BarrierState, now: float) -> None:
        self._state = state
        self._timer = self._timer_for(state, now)

    def _timer_for(self, state: BarrierState, now: float) -> _Timer | None:
        if state in (BarrierState.OPENING, BarrierState.CLOSING):
            return _Timer(now + self._travel_s, Trigger.TRAVEL_DONE)
        if state is not BarrierState.OPEN or self._vehicle_present:
            return None  # CLOSED waits for a command; OPEN waits for the loop to clear
        if self._vehicle_passed:
            return _Timer(now + self._close_delay_s, Trigger.CLOSE_DELAY)
        return _Timer(now + self._open_timeout_s, Trigger.OPEN_TIMEOUT)

    def _step(self, now: float, trigger: Trigger, event: BarrierEvent | None) -> Step:
        motor_open, motor_close = _MOTORS[self._state]
        return Step(
            self._state, motor_open, motor_close, self._vehicle_present, self._counts, now, trigger, event
        )
