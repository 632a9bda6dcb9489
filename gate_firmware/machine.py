"""The barrier's transition machine: pure logic, no IO, no threads, no wall clock.

Every input carries the time it happened (``now``, seconds on a monotonic clock). Each input first
fires the timers that fell due before it (so a late :meth:`BarrierMachine.tick` never reorders
events), then applies itself, and returns the :class:`Step` s it caused, oldest first.

The rules are one table, :data:`_RULES` (with :data:`_EDGE_LOST_RULES`, the configured reaction
to a lost edge heartbeat); every safety rule is in one method, :meth:`BarrierMachine._interlock`,
which sees every transition (and every input while staying):

- the emergency input wins over everything: drive open, stay open, ignore commands;
- both limit switches active at once is a wiring fault: motor off (FAULT);
- the close motor never runs while the safety zone (loop_b, photocell) is occupied: a close is not
  started, and a close under way reverses (OPENING, ``reversal``);
- a faulted motor stays off under an emergency too, and the barrier returns to FAULT after it.

An open signal while lowering (open command, button) raises the arm at once, like an obstruction.

The outputs follow from the state, the limit switches, the fault and the alarms alone
(:meth:`_outputs`), so the two motor relays are never on together, and a motor never runs longer
than ``travel_limit_s`` without reaching its limit switch: that is a fault (motor off). With a
pulse output (``motor_output = "pulse"``) the same motor demand is turned into pulses on one pin
(:meth:`_update_pulse`), following the barrier controller's open -> stop -> close -> stop input.

Counting: each accepted open command or button press authorises one vehicle (the authorisations
left are dropped once the arm is down). A passage (:mod:`passages`) uses one and is an ``entry``
or ``exit``; a passage with none left is counted in its direction and reported as ``tailgate``
(except while the barrier is held open for everyone: emergency, ``open_hold``).

The machine keeps several timers at once: the state's own (travel limit, close delay, open
timeout), one per safety sensor (stuck longer than ``safety_stuck_s``), the edge heartbeat, and
the pulse output's. :meth:`tick` fires them in time order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from gate_firmware.config import GateConfig
from gate_firmware.passages import PassageTracker
from gate_firmware.states import (
    SAFETY_ZONE,
    Alarm,
    BarrierEvent,
    BarrierState,
    EdgeLostPolicy,
    FaultReason,
    Input,
    Light,
    MotorOutput,
)


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
    CLOSE_DELAY = "close_delay"  # close_delay_s passed since the last authorised vehicle passed
    OPEN_TIMEOUT = "open_timeout"  # open_timeout_s passed and the authorised vehicle did not come
    STOPPED_TIMEOUT = "stopped_timeout"  # open_timeout_s passed with the arm STOPPED mid-way
    SAFETY_STUCK = "safety_stuck"  # loop_b or the photocell stayed active for safety_stuck_s
    EDGE_LOST = "edge_lost"  # no heartbeat for edge_heartbeat_s (close_when_clear: also its close)
    EDGE_BACK = "edge_back"  # a heartbeat after the edge was lost
    PULSE = "pulse"  # the pulse output switches on or off
    TURNAROUND = "turnaround"  # pulse mode: the arm reached the end a pulse train sent it to first


@dataclass(frozen=True, slots=True)
class Counts:
    """What the machine counted since it started."""

    count_in: int = 0  # entries, tailgaters included
    count_out: int = 0  # exits, tailgaters included
    tailgates: int = 0  # passages (in either direction) with no authorisation left
    reversals: int = 0
    faults: int = 0

    @property
    def passages(self) -> int:
        return self.count_in + self.count_out


@dataclass(frozen=True, slots=True)
class Step:
    """The machine's outputs after one input it acted on."""

    state: BarrierState
    motor_open: bool  # the motor should raise the arm (relay on; with a pulse output: what was asked)
    motor_close: bool  # the motor should lower the arm
    pulse: bool  # the pulse output (always False with relays)
    lamp: bool
    light: Light
    buzzer: bool
    auto_close: bool  # False while an alarm or policy holds the arm where it is
    alarms: frozenset[Alarm]
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
    authorises: bool = False  # an accepted open: one more vehicle may pass


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
    (_S.OPEN, _T.PASSAGE): _Rule(_S.OPEN),  # re-enter: arm close_delay (or wait for the next one)
    (_S.OPEN, _T.ZONE_CLEAR): _Rule(_S.OPEN),  # re-enter: arm a timer again (none while occupied)
    (_S.OPEN, _T.CLOSE_DELAY): _Rule(_S.CLOSING),
    (_S.OPEN, _T.OPEN_TIMEOUT): _Rule(_S.CLOSING),
    (_S.OPEN, _T.SAFETY_STUCK): _Rule(_S.OPEN),  # re-enter: auto-close is off now
    (_S.OPEN, _T.EDGE_BACK): _Rule(_S.OPEN),  # re-enter: auto-close again
    (_S.OPEN, _T.LIMIT_OPEN_LEFT): _Rule(_S.FAULT, _F.ARM_MOVED),
    (_S.OPEN, _T.LIMIT_CLOSED_REACHED): _Rule(_S.FAULT, _F.ARM_MOVED),
    (_S.CLOSING, _T.OPEN_COMMAND): _Rule(_S.OPENING, authorises=True),  # raise at once
    (_S.CLOSING, _T.BUTTON): _Rule(_S.OPENING, authorises=True),  # an open signal while lowering
    (_S.CLOSING, _T.LIMIT_CLOSED_REACHED): _Rule(_S.CLOSED),
    (_S.CLOSING, _T.LIMIT_OPEN_REACHED): _Rule(_S.FAULT, _F.WRONG_LIMIT),
    (_S.CLOSING, _T.TRAVEL_TIMEOUT): _Rule(_S.FAULT, _F.TRAVEL_TIMEOUT),
    (_S.STOPPED, _T.OPEN_COMMAND): _Rule(_S.OPENING, authorises=True),
    (_S.STOPPED, _T.CLOSE_COMMAND): _Rule(_S.CLOSING),
    (_S.STOPPED, _T.BUTTON): _Rule(_S.OPENING, authorises=True),
    (_S.STOPPED, _T.STOPPED_TIMEOUT): _Rule(_S.CLOSING),  # never stuck mid-way
    (_S.STOPPED, _T.PASSAGE): _Rule(_S.STOPPED),  # re-enter: arm its timer again
    (_S.STOPPED, _T.ZONE_CLEAR): _Rule(_S.STOPPED),
    (_S.STOPPED, _T.SAFETY_STUCK): _Rule(_S.STOPPED),
    (_S.STOPPED, _T.EDGE_BACK): _Rule(_S.STOPPED),
    (_S.STOPPED, _T.LIMIT_OPEN_REACHED): _Rule(_S.STOPPED),  # moved by hand: settles to OPEN
    (_S.STOPPED, _T.LIMIT_CLOSED_REACHED): _Rule(_S.STOPPED),  # ... or CLOSED
    (_S.FAULT, _T.BUTTON): _Rule(_S.STOPPED),  # reset: settles to where the limit switches say
    (_S.EMERGENCY_OPEN, _T.EMERGENCY_OFF): _Rule(_S.OPENING),  # carries on up; OPEN if already there
    (_S.EMERGENCY_OPEN, _T.LIMIT_OPEN_REACHED): _Rule(_S.EMERGENCY_OPEN),  # re-enter: motor off
    (_S.EMERGENCY_OPEN, _T.LIMIT_OPEN_LEFT): _Rule(_S.EMERGENCY_OPEN),  # re-enter: motor on again
    (_S.EMERGENCY_OPEN, _T.TRAVEL_TIMEOUT): _Rule(_S.EMERGENCY_OPEN, _F.TRAVEL_TIMEOUT),  # motor off
}

# on_edge_lost -> state -> rule, for Trigger.EDGE_LOST (a state not listed stays as it is).
_EDGE_LOST_RULES: dict[EdgeLostPolicy, dict[BarrierState, _Rule]] = {
    EdgeLostPolicy.STAY: {  # re-enter: drop the auto-close timers
        _S.OPEN: _Rule(_S.OPEN),
        _S.STOPPED: _Rule(_S.STOPPED),
    },
    EdgeLostPolicy.OPEN_HOLD: {
        _S.CLOSED: _Rule(_S.OPENING),
        _S.CLOSING: _Rule(_S.OPENING),
        _S.STOPPED: _Rule(_S.OPENING),
        _S.OPEN: _Rule(_S.OPEN),
    },
    EdgeLostPolicy.CLOSE_WHEN_CLEAR: {  # the interlock holds it while the zone is occupied
        _S.OPENING: _Rule(_S.CLOSING),
        _S.OPEN: _Rule(_S.CLOSING),
        _S.STOPPED: _Rule(_S.CLOSING),
    },
}
_STAY = _Rule(None)

_EDGE_TRIGGERS = {
    Input.LIMIT_OPEN: (_T.LIMIT_OPEN_LEFT, _T.LIMIT_OPEN_REACHED),
    Input.LIMIT_CLOSED: (_T.LIMIT_CLOSED_LEFT, _T.LIMIT_CLOSED_REACHED),
    Input.BUTTON: (_T.BUTTON_RELEASED, _T.BUTTON),
    Input.EMERGENCY: (_T.EMERGENCY_OFF, _T.EMERGENCY_ON),
}
_LIMIT_DIRECTION = {Input.LIMIT_OPEN: +1, Input.LIMIT_CLOSED: -1}
_AT_REST = frozenset({_S.CLOSED, _S.OPEN})  # the lamp is off only here
_MOTION, _EDGE, _PULSE = "motion", "edge", "pulse"  # timer slots, beside one per safety sensor
_SLOTS = (_MOTION, *(f"stuck:{name}" for name in sorted(SAFETY_ZONE)), _EDGE, _PULSE)  # tie order


def _event_rank(event: BarrierEvent) -> int:
    """Which event a step reports when one input caused several: faults first."""
    if event.is_fault:
        return 0
    if event is BarrierEvent.REVERSAL:
        return 1
    return 2 if event.is_passage else 3


def pulses_needed(motion: int, next_move: int, demand: int) -> int:
    """Pulses that take a step-by-step input (open -> stop -> close -> stop) from ``motion``
    (+1 up, -1 down, 0 still; ``next_move``: where the next pulse from still goes) to ``demand``."""
    pulses = 0
    while motion != demand:
        motion, next_move = (0, -motion) if motion else (next_move, next_move)
        pulses += 1
    return pulses


class BarrierMachine:
    """State, input levels, counts, alarms and the pending timers of a barrier.

    It starts where its limit switches say (CLOSED, OPEN, or STOPPED between them), or in
    EMERGENCY_OPEN or FAULT if its inputs say so.
    """

    def __init__(
        self, config: GateConfig, *, now: float = 0.0, inputs: Mapping[Input, bool] | None = None
    ) -> None:
        self._travel_limit_s = config.travel_limit_s
        self._close_delay_s = config.close_delay_s
        self._open_timeout_s = config.open_timeout_s
        self._safety_stuck_s = config.safety_stuck_s
        self._edge_heartbeat_s = config.edge_heartbeat_s
        self._on_edge_lost = config.on_edge_lost
        self._pulse_mode = config.motor_output is MotorOutput.PULSE
        self._pulse_s = config.pulse_s
        self._inputs = {name: bool((inputs or {}).get(name, False)) for name in Input}
        self._passages = PassageTracker(loop_a=self._inputs[Input.LOOP_A], loop_b=self._inputs[Input.LOOP_B])
        self._state = BarrierState.STOPPED
        self._fault: FaultReason | None = None
        self._alarms: set[Alarm] = set()
        self._credits = 0  # vehicles authorised (open command, button) and not passed yet
        self._passed = False  # a passage since the last accepted open
        self._close_pending = False  # edge lost, close_when_clear: close once the zone is clear
        self._counts = Counts()
        self._timers: dict[str, _Timer] = {}
        # The pulse output and the barrier controller's step-by-step input as far as we know it.
        self._pulse_on = False
        self._pulse_ready_at = now  # the earliest next rising edge (a pause of pulse_s after each)
        self._ext_motion = 0
        self._ext_next = -1 if self._inputs[Input.LIMIT_OPEN] else +1
        for name in SAFETY_ZONE:
            self._watch_stuck(name, now)
        if self._edge_heartbeat_s is not None:
            self._timers[_EDGE] = _Timer(now + self._edge_heartbeat_s, Trigger.EDGE_LOST)
        # The limit switches (through the interlock) decide where it starts.
        _changed, event = self._apply(_Rule(BarrierState.STOPPED), now)
        self._update_pulse(now)
        self._first = self._step(now, Trigger.START, event)

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
    def alarms(self) -> frozenset[Alarm]:
        return frozenset(self._alarms)

    @property
    def authorised(self) -> int:
        """Vehicles authorised and not passed yet."""
        return self._credits

    @property
    def auto_close(self) -> bool:
        """False while the arm is held where it is by rule: a safety sensor was stuck (until reset),
        or the edge is lost with ``on_edge_lost`` ``stay`` or ``open_hold``."""
        if Alarm.SAFETY_STUCK in self._alarms:
            return False
        return not (
            Alarm.EDGE_LOST in self._alarms and self._on_edge_lost is not EdgeLostPolicy.CLOSE_WHEN_CLEAR
        )

    @property
    def inputs(self) -> frozenset[Input]:
        """The inputs that are active."""
        return frozenset(name for name, active in self._inputs.items() if active)

    def is_active(self, name: Input) -> bool:
        return self._inputs[name]

    @property
    def motor_open(self) -> bool:
        return self._motors()[0]

    @property
    def motor_close(self) -> bool:
        return self._motors()[1]

    @property
    def pulse(self) -> bool:
        return self._pulse_on

    @property
    def lamp(self) -> bool:
        return self._state not in _AT_REST

    @property
    def light(self) -> Light:
        return self._light()

    @property
    def buzzer(self) -> bool:
        return any(self._motors()) or self._state is BarrierState.FAULT

    @property
    def first_step(self) -> Step:
        """Where the machine started (trigger ``start``)."""
        return self._first

    @property
    def travel_deadline(self) -> float | None:
        """When the running motor's missing limit switch becomes a fault, or None (no motor running,
        or a pulse train still waiting to start)."""
        timer = self._timers.get(_MOTION)
        return timer.at if timer is not None and timer.trigger is Trigger.TRAVEL_TIMEOUT else None

    @property
    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do, or None while nothing is timed."""
        return min((timer.at for timer in self._timers.values()), default=None)

    # -- inputs --------------------------------------------------------------------------------

    def open_command(self, now: float) -> list[Step]:
        """Authorise one vehicle: raise the barrier (at once, also while it is lowering), or keep
        it up and re-arm its close timers."""
        return [*self.tick(now), *self._fire(Trigger.OPEN_COMMAND, now)]

    def close_command(self, now: float) -> list[Step]:
        """Lower the barrier now (an operator's command); the safety zone still holds it up. It
        also resets the ``safety_stuck`` alarm once the zone is clear."""
        return [*self.tick(now), *self._fire(Trigger.CLOSE_COMMAND, now)]

    def heartbeat(self, now: float) -> list[Step]:
        """The edge application is alive. Ends a lost heartbeat (``cleared:edge_lost``)."""
        steps = self.tick(now)
        if self._edge_heartbeat_s is None:
            return steps
        self._timers[_EDGE] = _Timer(now + self._edge_heartbeat_s, Trigger.EDGE_LOST)
        if Alarm.EDGE_LOST in self._alarms:
            steps += self._fire(Trigger.EDGE_BACK, now)
        return steps

    def input_changed(self, name: Input, active: bool, now: float) -> list[Step]:
        """An input became active or inactive. A repeated level is ignored."""
        steps = self.tick(now)
        if self._inputs[name] == active:
            return steps
        zone_was_occupied = self._zone_occupied()
        self._inputs[name] = active
        if name in SAFETY_ZONE:
            self._watch_stuck(name, now)
        arrived = _LIMIT_DIRECTION.get(name)
        train_step = False  # pulse mode: the arm reached the end our pulses sent it to, on the way back
        if active and arrived is not None and self._ext_motion == arrived:
            self._ext_motion, self._ext_next = 0, -arrived  # the barrier controller stops there
            motor_open, motor_close = self._motors()
            train_step = (1 if motor_open else -1 if motor_close else 0) == -arrived
        event = None
        if name in (Input.LOOP_A, Input.LOOP_B):
            event = self._passages.changed(name, active)
        if train_step:
            trigger = Trigger.TURNAROUND  # not a wrong limit: the next pulse sends it the right way
        elif name in _EDGE_TRIGGERS:
            trigger = _EDGE_TRIGGERS[name][active]
        elif event is not None:
            trigger = Trigger.PASSAGE
        elif zone_was_occupied != self._zone_occupied():
            trigger = Trigger.ZONE_OCCUPIED if active else Trigger.ZONE_CLEAR
        else:
            trigger = Trigger.VEHICLE
        return [*steps, *self._fire(trigger, now, event, always=True)]

    def tick(self, now: float) -> list[Step]:
        """Fire every timer due by ``now``, each at its own due time, in time order."""
        steps: list[Step] = []
        while True:
            due = [
                (timer.at, _SLOTS.index(slot), slot)
                for slot, timer in self._timers.items()
                if timer.at <= now
            ]
            if not due:
                return steps
            slot = min(due)[2]
            timer = self._timers.pop(slot)
            steps += self._fire(timer.trigger, timer.at)

    # -- the one place where it changes ---------------------------------------------------------

    def _rule(self, trigger: Trigger) -> _Rule:
        if trigger is Trigger.EDGE_LOST:
            return _EDGE_LOST_RULES[self._on_edge_lost].get(self._state, _STAY)
        return _RULES.get((self._state, trigger), _STAY)

    def _fire(
        self, trigger: Trigger, now: float, passage: BarrierEvent | None = None, *, always: bool = False
    ) -> list[Step]:
        rule = self._rule(trigger)
        before = self._outputs()
        events = self._bookkeeping(trigger, rule, passage, now)
        changed, event = self._apply(rule, now)
        if event is not None:
            events.append(event)
        self._update_pulse(now)
        if not (changed or events or always or rule.authorises or self._outputs() != before):
            return []
        return [self._step(now, trigger, min(events, key=_event_rank) if events else None)]

    def _bookkeeping(
        self, trigger: Trigger, rule: _Rule, passage: BarrierEvent | None, now: float
    ) -> list[BarrierEvent]:
        """Counts, authorisations, alarms and the pulse output: what a trigger changes beside the state."""
        events: list[BarrierEvent] = []
        if passage is not None:
            events.append(self._count_passage(passage))
        if rule.authorises and not self._inputs[Input.EMERGENCY]:
            self._credits += 1
            self._passed = False
            self._close_pending = False
        if trigger is Trigger.SAFETY_STUCK and Alarm.SAFETY_STUCK not in self._alarms:
            self._alarms.add(Alarm.SAFETY_STUCK)
            events.append(BarrierEvent.FAULT_SAFETY_STUCK)
        if (
            trigger in (Trigger.BUTTON, Trigger.CLOSE_COMMAND)
            and Alarm.SAFETY_STUCK in self._alarms
            and not (self._zone_occupied() or self._inputs[Input.EMERGENCY])
        ):
            self._alarms.discard(Alarm.SAFETY_STUCK)  # an operator's reset, with the zone clear
            events.append(BarrierEvent.CLEARED_SAFETY_STUCK)
        if trigger is Trigger.EDGE_LOST and Alarm.EDGE_LOST not in self._alarms:
            self._alarms.add(Alarm.EDGE_LOST)
            self._close_pending = self._on_edge_lost is EdgeLostPolicy.CLOSE_WHEN_CLEAR
            events.append(BarrierEvent.FAULT_EDGE_LOST)
        if trigger is Trigger.EDGE_BACK:
            self._alarms.discard(Alarm.EDGE_LOST)
            self._close_pending = False
            events.append(BarrierEvent.CLEARED_EDGE_LOST)
        if trigger is Trigger.PULSE and self._pulse_on:  # the end of a pulse; the pause follows
            self._pulse_on = False
            self._pulse_ready_at = now + self._pulse_s
        return events

    def _apply(self, rule: _Rule, now: float) -> tuple[bool, BarrierEvent | None]:
        """Pass the rule's target through the interlock, then enter it. True if a state was entered."""
        target, fault, safety_event = self._interlock(rule.target, rule.fault)
        event: BarrierEvent | None = None
        if safety_event is BarrierEvent.REVERSAL:
            self._counts = replace(self._counts, reversals=self._counts.reversals + 1)
            event = safety_event
        if fault is not None and self._fault is None:
            self._fault = fault
            self._counts = replace(self._counts, faults=self._counts.faults + 1)
            event = BarrierEvent.fault(fault)
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
        motors_before = self._motors()
        if self._fault is not None and state not in (BarrierState.FAULT, BarrierState.EMERGENCY_OPEN):
            self._fault = None  # reset by the operator: the barrier controller is where its limits say
            self._ext_motion, self._ext_next = 0, -1 if self._inputs[Input.LIMIT_OPEN] else +1
        if state is BarrierState.CLOSED:
            self._credits = 0  # the arm is down: whoever was let in and did not come must ask again
        if state in (BarrierState.CLOSING, BarrierState.CLOSED):
            self._close_pending = False
        self._state = state
        motors_after = self._motors()
        timer = self._timers.get(_MOTION)
        keeps_running = any(motors_after) and motors_after == motors_before
        if keeps_running and timer is not None and timer.trigger is Trigger.TRAVEL_TIMEOUT:
            return  # the same motor keeps running: its travel limit counts from when it started
        new = self._timer_for(state, now)
        if new is None:
            self._timers.pop(_MOTION, None)
        else:
            self._timers[_MOTION] = new

    def _timer_for(self, state: BarrierState, now: float) -> _Timer | None:
        if any(self._motors()):
            return _Timer(now + self._travel_limit_s, Trigger.TRAVEL_TIMEOUT)
        if state not in (BarrierState.OPEN, BarrierState.STOPPED) or self._zone_occupied():
            return None  # OPEN and STOPPED wait for the safety zone to clear; the others for an input
        if self._close_pending:
            return _Timer(now + self._close_delay_s, Trigger.EDGE_LOST)
        if not self.auto_close:
            return None  # held by rule
        if state is BarrierState.STOPPED:
            return _Timer(now + self._open_timeout_s, Trigger.STOPPED_TIMEOUT)
        if self._passed and self._credits == 0:
            return _Timer(now + self._close_delay_s, Trigger.CLOSE_DELAY)
        return _Timer(now + self._open_timeout_s, Trigger.OPEN_TIMEOUT)

    # -- outputs ---------------------------------------------------------------------------------

    def _motors(self) -> tuple[bool, bool]:
        """(motor_open, motor_close), from the state, the open limit switch and the fault."""
        state = self._state
        motor_open = state is BarrierState.OPENING or (
            state is BarrierState.EMERGENCY_OPEN
            and not self._inputs[Input.LIMIT_OPEN]
            and self._fault is None
        )
        return motor_open, state is BarrierState.CLOSING

    def _outputs(self) -> tuple[bool, bool, bool, bool, Light, bool, bool, frozenset[Alarm]]:
        return (*self._motors(), self._pulse_on, self.lamp, self._light(), self.buzzer, self.auto_close,
                frozenset(self._alarms))  # fmt: skip

    def _light(self) -> Light:
        """Green only while the arm rests up and a vehicle may go: one is authorised, or everyone is
        (emergency, open_hold)."""
        if self._state is BarrierState.OPEN and (self._credits > 0 or self._free_flow()):
            return Light.GREEN
        if self._state is BarrierState.EMERGENCY_OPEN and self._inputs[Input.LIMIT_OPEN] and not self._fault:
            return Light.GREEN
        return Light.RED

    def _update_pulse(self, now: float) -> None:
        """Pulse mode: start the next pulse the motor demand needs, if the output is free.

        The barrier controller's input goes open -> stop -> close -> stop; each rising edge moves it
        one step (:func:`pulses_needed`); it stops by itself at its limit switches. In FAULT no pulse
        is sent (the arm's state is not known). A train that would start the arm *down* when no
        close is wanted (to get to "open" from "stopped after opening": close, stop, open) waits
        while the safety zone is occupied, and the move's travel limit counts from its first pulse.
        """
        if not self._pulse_mode or self._pulse_on:
            return
        motor_open, motor_close = self._motors()
        demand = 1 if motor_open else -1 if motor_close else 0
        owed = 0 if self._fault is not None else pulses_needed(self._ext_motion, self._ext_next, demand)
        if owed == 0:
            self._timers.pop(_PULSE, None)
            return
        if now < self._pulse_ready_at:
            self._timers[_PULSE] = _Timer(self._pulse_ready_at, Trigger.PULSE)
            return
        starts_down = self._ext_motion == 0 and self._ext_next == -1 and demand != -1
        if starts_down and self._zone_occupied():
            # Not even briefly down over a vehicle: wait for the zone to clear (an input change
            # brings it back here); the motor has not been asked yet, so its travel limit waits too.
            self._timers.pop(_PULSE, None)
            self._timers.pop(_MOTION, None)
            return
        if demand and _MOTION not in self._timers:  # the first pulse after waiting: time the move now
            self._timers[_MOTION] = _Timer(now + self._travel_limit_s, Trigger.TRAVEL_TIMEOUT)
        self._pulse_on = True
        self._ext_motion, self._ext_next = (
            (0, -self._ext_motion) if self._ext_motion else (self._ext_next, self._ext_next)
        )
        self._timers[_PULSE] = _Timer(now + self._pulse_s, Trigger.PULSE)

    # -- inside ----------------------------------------------------------------------------------

    def _free_flow(self) -> bool:
        """Held open for everyone: passages are not tailgates."""
        if self._state is BarrierState.EMERGENCY_OPEN:
            return True
        return Alarm.EDGE_LOST in self._alarms and self._on_edge_lost is EdgeLostPolicy.OPEN_HOLD

    def _watch_stuck(self, name: Input, now: float) -> None:
        slot = f"stuck:{name}"
        if self._inputs[name] and self._safety_stuck_s is not None:
            self._timers[slot] = _Timer(now + self._safety_stuck_s, Trigger.SAFETY_STUCK)
        else:
            self._timers.pop(slot, None)

    def _zone_occupied(self) -> bool:
        return any(self._inputs[name] for name in SAFETY_ZONE)

    def _count_passage(self, passage: BarrierEvent) -> BarrierEvent:
        """Count one passage in its direction; a tailgate if nobody was authorised for it."""
        self._passed = True
        tailgate = self._credits == 0 and not self._free_flow()
        self._credits = max(0, self._credits - 1)
        counts = self._counts
        self._counts = replace(
            counts,
            count_in=counts.count_in + (passage is BarrierEvent.ENTRY),
            count_out=counts.count_out + (passage is BarrierEvent.EXIT),
            tailgates=counts.tailgates + tailgate,
        )
        return BarrierEvent.TAILGATE if tailgate else passage

    def _step(self, now: float, trigger: Trigger, event: BarrierEvent | None) -> Step:
        motor_open, motor_close = self._motors()
        return Step(
            self._state,
            motor_open,
            motor_close,
            self._pulse_on,
            self.lamp,
            self._light(),
            self.buzzer,
            self.auto_close,
            frozenset(self._alarms),
            self.inputs,
            self._counts,
            now,
            trigger,
            event,
            self._fault,
        )
