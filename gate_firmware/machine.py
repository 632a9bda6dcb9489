"""The barrier's transition machine: pure logic, no IO, no threads, no wall clock.

Every input carries the time it happened (``now``, seconds on a monotonic clock). Each input first
fires the timers that fell due before it (so a late :meth:`BarrierMachine.tick` never reorders
events), then applies itself, and returns the :class:`Step` s it caused, oldest first.

The rules are one table, :data:`_RULES`; every safety rule is in one method,
:meth:`BarrierMachine._interlock`, which sees every transition (and every input while staying):

- the emergency input wins over everything: drive open, stay open, ignore commands;
- both limit switches active at once is a wiring fault: motor off (FAULT);
- the close motor never runs while the safety zone (loop_b, photocell) is occupied: a close is not
  started, and a close under way reverses (OPENING, ``reversal``);
- a faulted motor stays off under an emergency too, and the barrier returns to FAULT after it.

The outputs follow from the state, the limit switches and the fault alone (:meth:`_outputs`), so
the two motor relays are never on together, and a motor never runs longer than
``travel_limit_s`` without reaching its limit switch: that is a fault (motor off).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from gate_firmware.config import GateConfig
from gate_firmware.passages import PassageTracker
from gate_firmware.states import SAFETY_ZONE, BarrierEvent, BarrierState, FaultReason, Input


class Trigger(StrEnum):
    """What made the machine act: a command, an input change, or one of its timers."""

    START = "start"  # the state the machine started in
    OPEN_COMMAND = "open_command"
    CLOSE_COMMAND = "close_command"
    BUTTON = "button"  # the button was pressed
    BUTTON_RELEASED = "button_released"
    ZONE_OCCUPIED = "zone_occupied"  # loop_b or the photocell became active; the zone was clear
    ZONE_CLEAR = "zone_clear"  # the last of loop_b and the photocell became inactive
    PASSAGE = "passage"  # a loop change completed a passage (Step.event tells which way)
    VEHICLE = "vehicle"  # any other loop or photocell change
    LIMIT_OPEN_REACHED = "limit_open_reached"
    LIMIT_OPEN_LEFT = "limit_open_left"
    LIMIT_CLOSED_REACHED = "limit_closed_reached"
    LIMIT_CLOSED_LEFT = "limit_closed_left"
    EMERGENCY_ON = "emergency_on"
    EMERGENCY_OFF = "emergency_off"
    TRAVEL_TIMEOUT = "travel_timeout"  # a motor ran travel_limit_s without reaching its limit switch
    CLOSE_DELAY = "close_delay"  # close_delay_s passed since a vehicle completed its passage
    OPEN_TIMEOUT = "open_timeout"  # open_timeout_s passed and no vehicle passed


@dataclass(frozen=True, slots=True)
class Counts:
    """What the machine counted since it started."""

    count_in: int = 0
    count_out: int = 0
    reversals: int = 0
    faults: int = 0

    @property
    def passages(self) -> int:
        return self.count_in + self.count_out


@dataclass(frozen=True, slots=True)
class Step:
    """The machine's outputs after one input it acted on."""

    state: BarrierState
    motor_open: bool
    motor_close: bool
    lamp: bool
    inputs: frozenset[Input]  # the inputs active after this step
    counts: Counts
    at: float  # when it happened: the input's ``now``, or the due time of the timer that fired
    trigger: Trigger
    event: BarrierEvent | None = None
    fault: FaultReason | None = None  # why the motor is stopped, while in FAULT (or under emergency)


@dataclass(frozen=True, slots=True)
class _Rule:
    target: BarrierState | None  # None: stay, timers untouched; a state (even the same one): enter it
    fault: FaultReason | None = None
    authorises: bool = False  # an accepted open: the next vehicle may pass (resets the close timers)


@dataclass(frozen=True, slots=True)
class _Timer:
    at: float
    trigger: Trigger


_S, _T, _F = BarrierState, Trigger, FaultReason

# (state, trigger) -> rule. A pair not listed changes nothing (input changes still give a step).
_RULES: dict[tuple[BarrierState, Trigger], _Rule] = {
    (_S.CLOSED, _T.OPEN_COMMAND): _Rule(_S.OPENING, authorises=True),
    (_S.CLOSED, _T.BUTTON): _Rule(_S.OPENING, authorises=True),
    (_S.CLOSED, _T.LIMIT_CLOSED_LEFT): _Rule(_S.FAULT, _F.ARM_MOVED),
    (_S.CLOSED, _T.LIMIT_OPEN_REACHED): _Rule(_S.FAULT, _F.ARM_MOVED),
    (_S.OPENING, _T.OPEN_COMMAND): _Rule(None, authorises=True),
    (_S.OPENING, _T.CLOSE_COMMAND): _Rule(_S.CLOSING),
    (_S.OPENING, _T.BUTTON): _Rule(_S.STOPPED),
    (_S.OPENING, _T.LIMIT_OPEN_REACHED): _Rule(_S.OPEN),
    (_S.OPENING, _T.LIMIT_CLOSED_REACHED): _Rule(_S.FAULT, _F.WRONG_LIMIT),
    (_S.OPENING, _T.TRAVEL_TIMEOUT): _Rule(_S.FAULT, _F.TRAVEL_TIMEOUT),
    (_S.OPEN, _T.OPEN_COMMAND): _Rule(_S.OPEN, authorises=True),  # re-enter: re-arm the close timers
    (_S.OPEN, _T.CLOSE_COMMAND): _Rule(_S.CLOSING),
    (_S.OPEN, _T.BUTTON): _Rule(_S.CLOSING),
    (_S.OPEN, _T.PASSAGE): _Rule(_S.OPEN),  # re-enter: arm close_delay
    (_S.OPEN, _T.ZONE_CLEAR): _Rule(_S.OPEN),  # re-enter: arm a timer again (none while occupied)
    (_S.OPEN, _T.CLOSE_DELAY): _Rule(_S.CLOSING),
    (_S.OPEN, _T.OPEN_TIMEOUT): _Rule(_S.CLOSING),
    (_S.OPEN, _T.LIMIT_OPEN_LEFT): _Rule(_S.FAULT, _F.ARM_MOVED),
    (_S.OPEN, _T.LIMIT_CLOSED_REACHED): _Rule(_S.FAULT, _F.ARM_MOVED),
    (_S.CLOSING, _T.OPEN_COMMAND): _Rule(_S.OPENING, authorises=True),
    (_S.CLOSING, _T.BUTTON): _Rule(_S.STOPPED),
    (_S.CLOSING, _T.LIMIT_CLOSED_REACHED): _Rule(_S.CLOSED),
    (_S.CLOSING, _T.LIMIT_OPEN_REACHED): _Rule(_S.FAULT, _F.WRONG_LIMIT),
    (_S.CLOSING, _T.TRAVEL_TIMEOUT): _Rule(_S.FAULT, _F.TRAVEL_TIMEOUT),
    (_S.STOPPED, _T.OPEN_COMMAND): _Rule(_S.OPENING, authorises=True),
    (_S.STOPPED, _T.CLOSE_COMMAND): _Rule(_S.CLOSING),
    (_S.STOPPED, _T.BUTTON): _Rule(_S.OPENING, authorises=True),
    (_S.STOPPED, _T.LIMIT_OPEN_REACHED): _Rule(_S.STOPPED),  # moved by hand: settles to OPEN
    (_S.STOPPED, _T.LIMIT_CLOSED_REACHED): _Rule(_S.STOPPED),  # ... or CLOSED
    (_S.FAULT, _T.BUTTON): _Rule(_S.STOPPED),  # reset: settles to where the limit switches say
    (_S.EMERGENCY_OPEN, _T.EMERGENCY_OFF): _Rule(_S.OPENING),  # carries on up; OPEN if already there
    (_S.EMERGENCY_OPEN, _T.LIMIT_OPEN_REACHED): _Rule(_S.EMERGENCY_OPEN),  # re-enter: motor off
    (_S.EMERGENCY_OPEN, _T.LIMIT_OPEN_LEFT): _Rule(_S.EMERGENCY_OPEN),  # re-enter: motor on again
    (_S.EMERGENCY_OPEN, _T.TRAVEL_TIMEOUT): _Rule(_S.EMERGENCY_OPEN, _F.TRAVEL_TIMEOUT),  # motor off
}
_STAY = _Rule(None)

_EDGE_TRIGGERS = {
    Input.LIMIT_OPEN: (_T.LIMIT_OPEN_LEFT, _T.LIMIT_OPEN_REACHED),
    Input.LIMIT_CLOSED: (_T.LIMIT_CLOSED_LEFT, _T.LIMIT_CLOSED_REACHED),
    Input.BUTTON: (_T.BUTTON_RELEASED, _T.BUTTON),
    Input.EMERGENCY: (_T.EMERGENCY_OFF, _T.EMERGENCY_ON),
}
_AT_REST = frozenset({_S.CLOSED, _S.OPEN})  # the lamp is off only here


class BarrierMachine:
    """State, input levels, counts and the one pending timer of a barrier.

    It starts where its limit switches say (CLOSED, OPEN, or STOPPED between them), or in
    EMERGENCY_OPEN or FAULT if its inputs say so.
    """

    def __init__(
        self, config: GateConfig, *, now: float = 0.0, inputs: Mapping[Input, bool] | None = None
    ) -> None:
        self._travel_limit_s = config.travel_limit_s
        self._close_delay_s = config.close_delay_s
        self._open_timeout_s = config.open_timeout_s
        self._inputs = {name: bool((inputs or {}).get(name, False)) for name in Input}
        self._passages = PassageTracker(loop_a=self._inputs[Input.LOOP_A], loop_b=self._inputs[Input.LOOP_B])
        self._state = BarrierState.STOPPED
        self._fault: FaultReason | None = None
        self._vehicle_passed = False  # a passage since the last accepted open
        self._counts = Counts()
        self._timer: _Timer | None = None
        # The limit switches (through the interlock) decide where it starts.
        self._first = self._step(now, Trigger.START, self._apply(_Rule(BarrierState.STOPPED), now)[1])

    # -- what it holds -------------------------------------------------------------------------

    @property
    def state(self) -> BarrierState:
        return self._state

    @property
    def counts(self) -> Counts:
        return self._counts

    @property
    def fault(self) -> FaultReason | None:
        return self._fault

    @property
    def inputs(self) -> frozenset[Input]:
        """The inputs that are active."""
        return frozenset(name for name, active in self._inputs.items() if active)

    def is_active(self, name: Input) -> bool:
        return self._inputs[name]

    @property
    def motor_open(self) -> bool:
        return self._outputs()[0]

    @property
    def motor_close(self) -> bool:
        return self._outputs()[1]

    @property
    def lamp(self) -> bool:
        return self._outputs()[2]

    @property
    def first_step(self) -> Step:
        """Where the machine started (trigger ``start``)."""
        return self._first

    @property
    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do, or None while nothing is timed."""
        return None if self._timer is None else self._timer.at

    # -- inputs --------------------------------------------------------------------------------

    def open_command(self, now: float) -> list[Step]:
        """Raise the barrier for one vehicle (or keep it up and re-arm its close timers)."""
        return [*self.tick(now), *self._fire(Trigger.OPEN_COMMAND, now)]

    def close_command(self, now: float) -> list[Step]:
        """Lower the barrier now (an operator's command); the safety zone still holds it up."""
        return [*self.tick(now), *self._fire(Trigger.CLOSE_COMMAND, now)]

    def input_changed(self, name: Input, active: bool, now: float) -> list[Step]:
        """An input became active or inactive. A repeated level is ignored."""
        steps = self.tick(now)
        if self._inputs[name] == active:
            return steps
        zone_was_occupied = self._zone_occupied()
        self._inputs[name] = active
        event = None
        if name in (Input.LOOP_A, Input.LOOP_B):
            event = self._passages.changed(name, active)
        if name in _EDGE_TRIGGERS:
            trigger = _EDGE_TRIGGERS[name][active]
        elif event is not None:
            trigger = Trigger.PASSAGE
        elif zone_was_occupied != self._zone_occupied():
            trigger = Trigger.ZONE_OCCUPIED if active else Trigger.ZONE_CLEAR
        else:
            trigger = Trigger.VEHICLE
        return [*steps, *self._fire(trigger, now, event, always=True)]

    def tick(self, now: float) -> list[Step]:
        """Fire every timer due by ``now``, each at its own due time."""
        steps: list[Step] = []
        while self._timer is not None and self._timer.at <= now:
            timer, self._timer = self._timer, None
            steps += self._fire(timer.trigger, timer.at)
        return steps

    # -- the one place where it changes ---------------------------------------------------------

    def _fire(
        self, trigger: Trigger, now: float, event: BarrierEvent | None = None, *, always: bool = False
    ) -> list[Step]:
        rule = _RULES.get((self._state, trigger), _STAY)
        if event in (BarrierEvent.PASSAGE_IN, BarrierEvent.PASSAGE_OUT):
            self._count_passage(event)
        if rule.authorises:
            self._vehicle_passed = False  # a new authorisation waits for its own vehicle
        changed, event = self._apply(rule, now, event)
        if not (changed or event or always or rule.authorises):
            return []
        return [self._step(now, trigger, event)]

    def _apply(
        self, rule: _Rule, now: float, event: BarrierEvent | None = None
    ) -> tuple[bool, BarrierEvent | None]:
        """Pass the rule's target through the interlock, then enter it. True if a state was entered."""
        target, fault, safety_event = self._interlock(rule.target, rule.fault)
        if fault is not None and self._fault is None:
            self._fault = fault
            self._counts = replace(self._counts, faults=self._counts.faults + 1)
            event = BarrierEvent.FAULT
        if safety_event is BarrierEvent.REVERSAL:
            self._counts = replace(self._counts, reversals=self._counts.reversals + 1)
            event = safety_event
        if target is None:
            return False, event
        self._enter(self._settle(target), now)
        return True, event

    def _interlock(
        self, target: BarrierState | None, fault: FaultReason | None
    ) -> tuple[BarrierState | None, FaultReason | None, BarrierEvent | None]:
        """Every safety rule: what the machine may enter instead of ``target`` (None: stay)."""
        both_limits = self._inputs[Input.LIMIT_OPEN] and self._inputs[Input.LIMIT_CLOSED]
        if self._inputs[Input.EMERGENCY]:
            fault = FaultReason.BOTH_LIMITS if both_limits else fault
            stay = self._state is BarrierState.EMERGENCY_OPEN and target is None
            return (None if stay else BarrierState.EMERGENCY_OPEN), fault, None
        if both_limits:
            return BarrierState.FAULT, FaultReason.BOTH_LIMITS, None
        wanted = self._state if target is None else target
        if wanted is BarrierState.CLOSING and self._zone_occupied():
            if self._state is BarrierState.CLOSING:  # the close motor runs: reverse at once
                return BarrierState.OPENING, None, BarrierEvent.REVERSAL
            return None, None, None  # a close may not start: stay (an OPEN timer re-arms on zone_clear)
        return target, fault, None

    def _settle(self, target: BarrierState) -> BarrierState:
        """Where ``target`` really leaves the arm, given the limit switches (and a pending fault)."""
        limit_open, limit_closed = self._inputs[Input.LIMIT_OPEN], self._inputs[Input.LIMIT_CLOSED]
        leaves_emergency = (
            self._state is BarrierState.EMERGENCY_OPEN and target is not BarrierState.EMERGENCY_OPEN
        )
        if leaves_emergency and self._fault is not None:  # its motor gave up under the emergency
            return BarrierState.FAULT
        if target is BarrierState.OPENING and limit_open:
            return BarrierState.OPEN
        if target is BarrierState.CLOSING and limit_closed:
            return BarrierState.CLOSED
        if target is BarrierState.STOPPED:
            return BarrierState.CLOSED if limit_closed else BarrierState.OPEN if limit_open else target
        return target

    def _enter(self, state: BarrierState, now: float) -> None:
        motors_before = self._outputs()[:2]
        if state not in (BarrierState.FAULT, BarrierState.EMERGENCY_OPEN):
            self._fault = None  # reset by the operator (or never set)
        self._state = state
        motors_after = self._outputs()[:2]
        timer = self._timer
        keeps_running = any(motors_after) and motors_after == motors_before
        if keeps_running and timer is not None and timer.trigger is Trigger.TRAVEL_TIMEOUT:
            return  # the same motor keeps running: its travel limit counts from when it started
        self._timer = self._timer_for(state, now)

    def _timer_for(self, state: BarrierState, now: float) -> _Timer | None:
        if any(self._outputs()[:2]):
            return _Timer(now + self._travel_limit_s, Trigger.TRAVEL_TIMEOUT)
        if state is not BarrierState.OPEN or self._zone_occupied():
            return None  # OPEN waits for the safety zone to clear; the others wait for an input
        if self._vehicle_passed:
            return _Timer(now + self._close_delay_s, Trigger.CLOSE_DELAY)
        return _Timer(now + self._open_timeout_s, Trigger.OPEN_TIMEOUT)

    def _outputs(self) -> tuple[bool, bool, bool]:
        """(motor_open, motor_close, lamp), from the state, the open limit switch and the fault."""
        state = self._state
        motor_open = state is BarrierState.OPENING or (
            state is BarrierState.EMERGENCY_OPEN
            and not self._inputs[Input.LIMIT_OPEN]
            and self._fault is None
        )
        return motor_open, state is BarrierState.CLOSING, state not in _AT_REST

    def _zone_occupied(self) -> bool:
        return any(self._inputs[name] for name in SAFETY_ZONE)

    def _count_passage(self, event: BarrierEvent) -> None:
        self._vehicle_passed = True
        if event is BarrierEvent.PASSAGE_IN:
            self._counts = replace(self._counts, count_in=self._counts.count_in + 1)
        else:
            self._counts = replace(self._counts, count_out=self._counts.count_out + 1)

    def _step(self, now: float, trigger: Trigger, event: BarrierEvent | None) -> Step:
        motor_open, motor_close, lamp = self._outputs()
        return Step(
            self._state,
            motor_open,
            motor_close,
            lamp,
            self.inputs,
            self._counts,
            now,
            trigger,
            event,
            self._fault,
        )
