"""gate_firmware: the pure barrier machine, passages, the gpiozero devices, the simulator and the
real-time controller.

Property tests take their number of examples from a hypothesis profile chosen by
``PARKGATE_HYPOTHESIS_PROFILE``: ``ci`` (default, a few hundred) or ``thorough`` (10,000).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.exc import GPIOPinInUse
from gpiozero.pins.mock import MockFactory
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gate_firmware import (
    BarrierEvent,
    BarrierMachine,
    BarrierMotor,
    BarrierState,
    ContactInput,
    FaultReason,
    GateConfig,
    GateController,
    GateDevices,
    Input,
    PassageTracker,
    Snapshot,
    Step,
    Trigger,
)
from gate_firmware.config import SUGGESTED_PINS
from gate_firmware.script import parse_script, run_script
from gate_firmware.simulator import SimulatedBarrier, WiredPin, crossing, set_contact, wired_pin
from gate_firmware.states import SAFETY_ZONE

settings.register_profile("ci", max_examples=300, deadline=None, database=None)
settings.register_profile("thorough", max_examples=10_000, deadline=None, database=None)
PROFILE = settings.get_profile(os.environ.get("PARKGATE_HYPOTHESIS_PROFILE", "ci"))

S, T = BarrierState, Trigger
FULL = dict(SUGGESTED_PINS)  # photocell, button and emergency fitted
CFG = GateConfig(travel_s=2.0, close_delay_s=1.0, open_timeout_s=30.0, **FULL)
TRAVEL, DELAY, TIMEOUT, LIMIT = CFG.travel_s, CFG.close_delay_s, CFG.open_timeout_s, CFG.travel_limit_s


# -- helpers ----------------------------------------------------------------------------------------


def last(steps: list[Step]) -> Step:
    assert steps, "expected the machine to act"
    return steps[-1]


def closed_machine(now: float = 100.0) -> BarrierMachine:
    return BarrierMachine(CFG, now=now, inputs={Input.LIMIT_CLOSED: True})


def machine_in(state: BarrierState) -> tuple[BarrierMachine, float]:
    """A machine brought to ``state`` through its public inputs (the arm working), and the time."""
    now = 100.0
    m = closed_machine(now)
    if state is S.CLOSED:
        return m, now
    m.open_command(now)
    m.input_changed(Input.LIMIT_CLOSED, False, now)
    if state is S.OPENING:
        return m, now
    if state is S.STOPPED:
        m.input_changed(Input.BUTTON, True, now + 0.5)
        m.input_changed(Input.BUTTON, False, now + 0.6)
        return m, now + 0.6
    now += TRAVEL
    m.input_changed(Input.LIMIT_OPEN, True, now)
    if state is S.OPEN:
        return m, now
    if state is S.FAULT:
        m.input_changed(Input.LIMIT_OPEN, False, now + 1)  # the arm came down by itself
        return m, now + 1
    if state is S.EMERGENCY_OPEN:
        m.input_changed(Input.EMERGENCY, True, now + 1)
        return m, now + 1
    now += TIMEOUT
    m.tick(now)
    m.input_changed(Input.LIMIT_OPEN, False, now)
    assert m.state is S.CLOSING
    return m, now


def assert_safe(step: Step) -> None:
    """The interlocks, as seen from outside."""
    assert not (step.motor_open and step.motor_close)
    if step.motor_close:
        assert not (step.inputs & (SAFETY_ZONE | {Input.EMERGENCY, Input.LIMIT_CLOSED}))
    if step.motor_open:
        assert Input.LIMIT_OPEN not in step.inputs
    if Input.EMERGENCY in step.inputs:
        assert step.state is S.EMERGENCY_OPEN
    if step.state in (S.CLOSED, S.OPEN, S.STOPPED, S.FAULT):
        assert not (step.motor_open or step.motor_close)
    assert step.lamp == (step.state not in (S.CLOSED, S.OPEN))


# -- config -----------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    c = GateConfig()
    assert (c.open_pin, c.close_pin, c.lamp_pin, c.loop_a_pin, c.loop_b_pin) == (
        "GPIO17", "GPIO27", "GPIO24", "GPIO23", "GPIO22",
    )  # fmt: skip
    assert (c.limit_open_pin, c.limit_closed_pin) == ("GPIO6", "GPIO13")
    assert (c.photocell_pin, c.button_pin, c.emergency_pin) == (None, None, None)
    assert set(c.input_pins()) == {Input.LOOP_A, Input.LOOP_B, Input.LIMIT_OPEN, Input.LIMIT_CLOSED}
    assert c.normally_closed == [Input.PHOTOCELL, Input.EMERGENCY]
    assert (c.travel_s, c.close_delay_s, c.open_timeout_s, c.bounce_s, c.travel_limit_s) == (
        2.0, 1.0, 30.0, 0.02, 5.0,
    )  # fmt: skip
    assert all(f.description for f in GateConfig.model_fields.values())


def test_config_reads_the_old_single_loop_keys() -> None:
    c = GateConfig.model_validate(
        {"open_pin": "GPIO17", "close_pin": "GPIO27", "loop_pin": "GPIO22", "travel_s": 2.0,
         "close_delay_s": 1.0, "open_timeout_s": 30.0, "loop_bounce_s": 0.05}
    )  # fmt: skip
    assert (c.loop_b_pin, c.bounce_s) == ("GPIO22", 0.05)
    with pytest.raises(ValidationError, match="loop_pin is the old name of loop_b_pin"):
        GateConfig.model_validate({"loop_pin": 5, "loop_b_pin": 6})


@pytest.mark.parametrize(
    "pins",
    [
        {"open_pin": "GPIO27"},
        {"open_pin": 27},
        {"loop_a_pin": "BCM22"},
        {"close_pin": "gpio6"},
        {"photocell_pin": "13"},
        {"lamp_pin": "GPIO17"},
    ],
)
def test_config_rejects_shared_pins(pins: dict[str, str | int]) -> None:
    with pytest.raises(ValidationError, match="same pin"):
        GateConfig.model_validate(pins)


@pytest.mark.parametrize(
    "bad",
    [
        {"travel_s": 0},
        {"travel_s": 3, "travel_timeout_s": 3},
        {"close_delay_s": -0.1},
        {"open_timeout_s": 0},
        {"bounce_s": -1},
        {"open_pin": -1},
        {"open_pin": ""},
        {"normally_closed": ["door"]},
        {"speed": 3},
    ],
)
def test_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GateConfig.model_validate(bad)


def test_config_optional_parts_and_explicit_travel_timeout() -> None:
    c = GateConfig(lamp_pin=None, photocell_pin=5, bounce_s=None, travel_s=2, travel_timeout_s=2.5)
    assert "lamp" not in c.output_pins() and c.input_pins()[Input.PHOTOCELL] == 5
    assert (c.bounce_s, c.travel_limit_s) == (None, 2.5)


# -- the pure machine: where it starts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "state", "motor_open"),
    [
        ({Input.LIMIT_CLOSED}, S.CLOSED, False),
        ({Input.LIMIT_OPEN}, S.OPEN, False),
        (set(), S.STOPPED, False),
        ({Input.LIMIT_OPEN, Input.LIMIT_CLOSED}, S.FAULT, False),
        ({Input.LIMIT_CLOSED, Input.EMERGENCY}, S.EMERGENCY_OPEN, True),
    ],
)
def test_machine_starts_where_its_inputs_say(
    inputs: set[Input], state: BarrierState, motor_open: bool
) -> None:
    m = BarrierMachine(CFG, now=5.0, inputs={name: True for name in inputs})
    first = m.first_step
    assert (first.state, first.trigger, first.motor_open, first.motor_close) == (
        state,
        T.START,
        motor_open,
        False,
    )
    assert_safe(first)
    if state is S.FAULT:
        assert (first.fault, first.event, first.counts.faults) == (
            FaultReason.BOTH_LIMITS,
            BarrierEvent.FAULT,
            1,
        )
    if state is S.OPEN:
        assert m.next_deadline == 5.0 + TIMEOUT  # nobody came: it closes by itself


# -- the pure machine: moving -----------------------------------------------------------------------------


def test_open_runs_the_motor_until_the_open_limit_switch() -> None:
    m = closed_machine(10.0)
    step = last(m.open_command(10.0))
    assert (step.state, step.motor_open, step.motor_close, step.lamp) == (S.OPENING, True, False, True)
    assert m.next_deadline == 10.0 + LIMIT  # the travel timeout, not the travel time
    assert (
        last(m.input_changed(Input.LIMIT_CLOSED, False, 10.1)).state is S.OPENING
    )  # leaving closed: expected
    step = last(m.input_changed(Input.LIMIT_OPEN, True, 11.7))
    assert (step.state, step.motor_open, step.lamp, step.trigger) == (
        S.OPEN,
        False,
        False,
        T.LIMIT_OPEN_REACHED,
    )
    assert m.next_deadline == 11.7 + TIMEOUT


@pytest.mark.parametrize("start", [S.OPENING, S.CLOSING])
def test_a_limit_switch_never_reached_is_a_travel_fault(start: BarrierState) -> None:
    m, now = machine_in(start)
    assert m.tick(now + LIMIT - 0.001) == []
    step = last(m.tick(now + LIMIT))
    assert (step.state, step.motor_open, step.motor_close, step.lamp) == (S.FAULT, False, False, True)
    assert (step.event, step.fault, step.counts.faults) == (BarrierEvent.FAULT, FaultReason.TRAVEL_TIMEOUT, 1)
    assert m.next_deadline is None
    assert m.open_command(now + 100) == [] and m.close_command(now + 100) == []  # commands refused


@pytest.mark.parametrize(
    ("start", "name", "active", "reason"),
    [
        (S.OPENING, Input.LIMIT_CLOSED, True, FaultReason.WRONG_LIMIT),
        (S.CLOSING, Input.LIMIT_OPEN, True, FaultReason.WRONG_LIMIT),
        (S.CLOSED, Input.LIMIT_CLOSED, False, FaultReason.ARM_MOVED),
        (S.OPEN, Input.LIMIT_OPEN, False, FaultReason.ARM_MOVED),
        (S.OPEN, Input.LIMIT_CLOSED, True, FaultReason.BOTH_LIMITS),
    ],
)
def test_limit_switch_faults(start: BarrierState, name: Input, active: bool, reason: FaultReason) -> None:
    m, now = machine_in(start)
    step = last(m.input_changed(name, active, now + 0.5))
    assert (step.state, step.fault, step.event) == (S.FAULT, reason, BarrierEvent.FAULT)
    assert not (step.motor_open or step.motor_close)


def test_button_resets_a_fault_to_where_the_limit_switches_say() -> None:
    m, now = machine_in(S.FAULT)  # the arm left the open position by itself
    m.input_changed(Input.LIMIT_CLOSED, True, now + 1)  # ... and came down
    step = last(m.input_changed(Input.BUTTON, True, now + 2))
    assert (step.state, step.fault, step.lamp) == (S.CLOSED, None, False)
    assert m.counts.faults == 1


def test_button_does_not_reset_a_wiring_fault_that_is_still_there() -> None:
    m = BarrierMachine(CFG, inputs={Input.LIMIT_OPEN: True, Input.LIMIT_CLOSED: True})
    step = last(m.input_changed(Input.BUTTON, True, 1.0))
    assert (step.state, step.fault, step.counts.faults) == (S.FAULT, FaultReason.BOTH_LIMITS, 1)


def test_passage_in_then_close_after_close_delay_then_closed_at_the_limit() -> None:
    m, now = machine_in(S.OPEN)
    for offset, loop, occupied in crossing(True, 3.0):
        step = last(m.input_changed(loop, occupied, now + 1 + offset))
    assert (step.state, step.event, step.trigger) == (S.OPEN, BarrierEvent.PASSAGE_IN, T.PASSAGE)
    assert (step.counts.count_in, step.counts.count_out) == (1, 0)
    left = now + 4
    assert m.next_deadline == left + DELAY
    step = last(m.tick(left + DELAY))
    assert (step.state, step.motor_close, step.trigger) == (S.CLOSING, True, T.CLOSE_DELAY)
    m.input_changed(Input.LIMIT_OPEN, False, left + DELAY)
    step = last(m.input_changed(Input.LIMIT_CLOSED, True, left + DELAY + TRAVEL))
    assert (step.state, step.motor_close, step.lamp) == (S.CLOSED, False, False)
    assert m.next_deadline is None


def test_passage_out_counts_out() -> None:
    m, now = machine_in(S.OPEN)
    for offset, loop, occupied in crossing(False, 3.0):
        m.input_changed(loop, occupied, now + offset)
    assert (m.counts.count_in, m.counts.count_out) == (0, 1)
    assert m.next_deadline == now + 3.0 + DELAY


def test_open_timeout_closes_when_no_vehicle_came() -> None:
    m, now = machine_in(S.OPEN)
    assert m.tick(now + TIMEOUT - 0.001) == []
    step = last(m.tick(now + TIMEOUT))
    assert (step.state, step.trigger) == (S.CLOSING, T.OPEN_TIMEOUT)
    assert m.counts.passages == 0


@pytest.mark.parametrize("blocker", [Input.LOOP_B, Input.PHOTOCELL])
@pytest.mark.parametrize("trigger", ["timeout", "close_command", "button"])
def test_never_starts_closing_while_the_safety_zone_is_occupied(blocker: Input, trigger: str) -> None:
    m, now = machine_in(S.OPEN)
    m.input_changed(blocker, True, now + 1)
    if trigger == "timeout":
        steps = m.tick(now + 10 * TIMEOUT)
    elif trigger == "close_command":
        steps = m.close_command(now + 2)
    else:
        steps = m.input_changed(Input.BUTTON, True, now + 2)
    assert m.state is S.OPEN and not any(s.motor_close for s in steps)
    assert m.tick(now + 1000 * TIMEOUT) == []  # nothing timed while the zone is occupied
    step = last(m.input_changed(blocker, False, now + 2000 * TIMEOUT))
    assert (step.state, step.trigger) == (S.OPEN, T.ZONE_CLEAR)
    assert m.next_deadline == now + 2000 * TIMEOUT + TIMEOUT  # no passage: the open timeout again


def test_a_vehicle_waiting_on_loop_a_does_not_hold_the_barrier_open() -> None:
    """The next car waits on the outer loop: the arm comes down in front of it (no tailgating)."""
    m, now = machine_in(S.OPEN)
    m.input_changed(Input.LOOP_A, True, now + 1)
    m.input_changed(Input.LOOP_B, True, now + 2)
    m.input_changed(Input.LOOP_A, False, now + 3)
    m.input_changed(Input.LOOP_A, True, now + 3.5)  # the follower
    step = last(m.input_changed(Input.LOOP_B, False, now + 4))
    assert (step.event, step.counts.count_in) == (BarrierEvent.PASSAGE_IN, 1)
    assert last(m.tick(now + 4 + DELAY)).state is S.CLOSING


@pytest.mark.parametrize("blocker", [Input.LOOP_B, Input.PHOTOCELL])
def test_safety_zone_occupied_while_closing_reverses_at_once(blocker: Input) -> None:
    m, now = machine_in(S.CLOSING)
    step = last(m.input_changed(blocker, True, now + 0.5))
    assert (step.state, step.motor_open, step.motor_close) == (S.OPENING, True, False)
    assert (step.event, step.counts.reversals) == (BarrierEvent.REVERSAL, 1)
    assert m.next_deadline == now + 0.5 + LIMIT
    m.input_changed(blocker, False, now + 1)
    assert last(m.input_changed(Input.LIMIT_OPEN, True, now + 1.5)).state is S.OPEN
    assert m.next_deadline == now + 1.5 + TIMEOUT


def test_close_command_lowers_an_open_barrier() -> None:
    m, now = machine_in(S.OPEN)
    step = last(m.close_command(now + 1))
    assert (step.state, step.motor_close, step.trigger) == (S.CLOSING, True, T.CLOSE_COMMAND)


def test_button_steps_open_stop_close_stop() -> None:
    m = closed_machine(0.0)

    def press(at: float) -> BarrierState:
        m.input_changed(Input.BUTTON, True, at)
        assert last(m.input_changed(Input.BUTTON, False, at + 0.1)).trigger is T.BUTTON_RELEASED
        return m.state

    assert press(1) is S.OPENING
    m.input_changed(Input.LIMIT_CLOSED, False, 1.2)
    assert press(2) is S.STOPPED and not m.motor_open
    assert press(3) is S.OPENING
    m.input_changed(Input.LIMIT_OPEN, True, 4)
    assert press(5) is S.CLOSING
    m.input_changed(Input.LIMIT_OPEN, False, 5.2)
    assert press(6) is S.STOPPED and not m.motor_close
    assert m.next_deadline is None  # a stopped barrier waits for someone
    assert last(m.close_command(7)).state is S.CLOSING


def test_emergency_opens_holds_and_ignores_commands() -> None:
    m, now = machine_in(S.CLOSING)
    step = last(m.input_changed(Input.EMERGENCY, True, now + 0.5))
    assert (step.state, step.motor_open, step.motor_close, step.lamp) == (S.EMERGENCY_OPEN, True, False, True)
    assert m.close_command(now + 1) == [] and m.open_command(now + 1) == []
    assert m.input_changed(Input.BUTTON, True, now + 1.1)[-1].state is S.EMERGENCY_OPEN
    step = last(m.input_changed(Input.LIMIT_OPEN, True, now + 2))
    assert (step.state, step.motor_open) == (S.EMERGENCY_OPEN, False)
    assert m.tick(now + 1000) == []  # held open, no timer
    step = last(m.input_changed(Input.EMERGENCY, False, now + 1000))
    assert (step.state, step.lamp) == (S.OPEN, False)
    assert m.next_deadline == now + 1000 + TIMEOUT


def test_emergency_with_a_stuck_arm_stops_the_motor_and_faults_when_released() -> None:
    m, now = machine_in(S.CLOSED)
    m.input_changed(Input.EMERGENCY, True, now)
    step = last(m.tick(now + LIMIT))
    assert (step.state, step.motor_open, step.fault, step.event) == (
        S.EMERGENCY_OPEN, False, FaultReason.TRAVEL_TIMEOUT, BarrierEvent.FAULT,
    )  # fmt: skip
    assert last(m.input_changed(Input.EMERGENCY, False, now + 50)).state is S.FAULT


def test_emergency_keeps_the_travel_limit_of_a_motor_already_running() -> None:
    m, now = machine_in(S.OPENING)
    m.input_changed(Input.EMERGENCY, True, now + 1)
    assert m.next_deadline == now + LIMIT  # the same motor, the same limit
    m.input_changed(Input.EMERGENCY, False, now + 2)
    assert (m.state, m.next_deadline) == (S.OPENING, now + LIMIT)


def test_emergency_does_not_run_a_faulted_motor() -> None:
    m, now = machine_in(S.FAULT)
    step = last(m.input_changed(Input.EMERGENCY, True, now + 1))
    assert (step.state, step.motor_open, step.fault) == (S.EMERGENCY_OPEN, False, FaultReason.ARM_MOVED)


@pytest.mark.parametrize(
    ("start", "command", "expected"),
    [
        (S.CLOSED, "open", S.OPENING),
        (S.CLOSED, "close", S.CLOSED),
        (S.OPENING, "open", S.OPENING),
        (S.OPENING, "close", S.CLOSING),
        (S.OPEN, "open", S.OPEN),
        (S.OPEN, "close", S.CLOSING),
        (S.CLOSING, "open", S.OPENING),
        (S.CLOSING, "close", S.CLOSING),
        (S.STOPPED, "open", S.OPENING),
        (S.STOPPED, "close", S.CLOSING),
        (S.FAULT, "open", S.FAULT),
        (S.FAULT, "close", S.FAULT),
        (S.EMERGENCY_OPEN, "open", S.EMERGENCY_OPEN),
        (S.EMERGENCY_OPEN, "close", S.EMERGENCY_OPEN),
    ],
)
def test_command_table(start: BarrierState, command: str, expected: BarrierState) -> None:
    m, now = machine_in(start)
    assert m.state is start
    steps = m.open_command(now + 0.1) if command == "open" else m.close_command(now + 0.1)
    assert m.state is expected
    for step in steps:
        assert_safe(step)


def test_open_command_while_opening_rearms_its_authorisation_only() -> None:
    m, now = machine_in(S.OPENING)
    for offset, loop, occupied in crossing(True, 0.6):  # a car slips through while the arm rises
        m.input_changed(loop, occupied, now + 0.1 + offset)
    deadline = m.next_deadline
    step = last(m.open_command(now + 1))  # the next car is let in
    assert (step.state, m.next_deadline) == (S.OPENING, deadline)
    m.input_changed(Input.LIMIT_OPEN, True, now + 1.5)
    assert m.next_deadline == now + 1.5 + TIMEOUT  # waits for the second car, not close_delay


def test_late_tick_fires_each_due_timer_at_its_own_time() -> None:
    m = closed_machine(0.0)
    m.open_command(0.0)
    steps = m.tick(1000.0)
    assert [(s.state, s.at, s.fault) for s in steps] == [(S.FAULT, LIMIT, FaultReason.TRAVEL_TIMEOUT)]


def test_inputs_fire_due_timers_first() -> None:
    m, now = machine_in(S.OPEN)
    steps = m.input_changed(
        Input.LOOP_B, True, now + TIMEOUT + 0.5
    )  # nobody ticked when the timeout fell due
    assert [(s.state, s.trigger, s.at, s.event) for s in steps] == [
        (S.CLOSING, T.OPEN_TIMEOUT, now + TIMEOUT, None),
        # reversed; the arm had not left the open limit switch yet, so it is simply OPEN again
        (S.OPEN, T.ZONE_OCCUPIED, now + TIMEOUT + 0.5, BarrierEvent.REVERSAL),
    ]


def test_repeated_input_level_is_ignored() -> None:
    m, now = machine_in(S.OPEN)
    assert m.input_changed(Input.LOOP_A, False, now) == []
    assert len(m.input_changed(Input.LOOP_A, True, now + 1)) == 1
    assert m.input_changed(Input.LOOP_A, True, now + 2) == []


# -- passages ---------------------------------------------------------------------------------------------


def play(tracker: PassageTracker, changes: list[tuple[str, bool]]) -> list[BarrierEvent]:
    names = {"a": Input.LOOP_A, "b": Input.LOOP_B}
    return [e for loop, occupied in changes if (e := tracker.changed(names[loop], occupied)) is not None]


IN, OUT = BarrierEvent.PASSAGE_IN, BarrierEvent.PASSAGE_OUT


@pytest.mark.parametrize(
    ("changes", "events"),
    [
        ([("a", True), ("b", True), ("a", False), ("b", False)], [IN]),
        ([("b", True), ("a", True), ("b", False), ("a", False)], [OUT]),
        ([("a", True), ("a", False)], []),  # came up to the gate and drove away
        ([("a", True), ("b", True), ("b", False), ("a", False)], []),  # backed out from under the arm
        ([("a", True), ("b", True), ("a", False), ("a", True), ("b", False), ("b", True), ("a", False),
          ("b", False)], [IN, IN]),  # a follower on loop_a before the first car left loop_b
        ([("a", True), ("a", False), ("b", True), ("b", False)], []),  # never on both: not counted
    ],
    ids=["entry", "exit", "turned-away", "backed-out", "follower", "gap"],
)  # fmt: skip
def test_passages(changes: list[tuple[str, bool]], events: list[BarrierEvent]) -> None:
    assert play(PassageTracker(), changes) == events


def test_passage_tracker_waits_for_an_empty_zone_when_it_starts_occupied() -> None:
    tracker = PassageTracker(loop_b=True)
    assert play(tracker, [("a", True), ("b", False), ("a", False)]) == []
    assert play(tracker, [("a", True), ("b", True), ("a", False), ("b", False)]) == [IN]


# -- property tests -----------------------------------------------------------------------------------------

_any_input = st.sampled_from(list(Input))
_actions = st.one_of(
    st.just(("open", None, 0.0)),
    st.just(("close", None, 0.0)),
    st.tuples(st.just("input"), _any_input, st.booleans().map(float)),
    st.tuples(st.just("wait"), st.none(), st.floats(min_value=0.0, max_value=40.0)),
)
_configs = st.builds(
    GateConfig,
    travel_s=st.floats(min_value=0.01, max_value=5.0),
    close_delay_s=st.floats(min_value=0.0, max_value=5.0),
    open_timeout_s=st.floats(min_value=0.01, max_value=60.0),
    **{name: st.just(pin) for name, pin in FULL.items()},
)
_starts = st.sets(st.sampled_from([Input.LIMIT_CLOSED, Input.LIMIT_OPEN, Input.EMERGENCY, Input.LOOP_B]))


@PROFILE
@given(config=_configs, start=_starts, actions=st.lists(_actions, max_size=50))
def test_interlocks_hold_for_any_input_sequence(
    config: GateConfig, start: set[Input], actions: list[tuple[str, Input | None, float]]
) -> None:
    """Whatever the inputs do (even impossible limit switches), the outputs stay safe, time moves
    forward, a motor never runs past its travel limit, and passages never outnumber loop clears."""
    m = BarrierMachine(config, inputs={name: True for name in start})
    now, last_at, loop_clears = 0.0, 0.0, 0
    motor_since: tuple[tuple[bool, bool], float] = ((m.motor_open, m.motor_close), 0.0)

    def check(steps: list[Step]) -> None:
        nonlocal last_at, motor_since
        for step in steps:
            assert_safe(step)
            assert step.at >= last_at
            last_at = step.at
            motors = (step.motor_open, step.motor_close)
            if motors != motor_since[0]:
                motor_since = (motors, step.at)
        if any(motor_since[0]):  # a running motor is always timed, from when it started
            deadline = m.next_deadline
            assert deadline is not None and deadline <= motor_since[1] + config.travel_limit_s + 1e-9

    check([m.first_step])
    for kind, name, value in actions:
        if kind == "open":
            check(m.open_command(now))
        elif kind == "close":
            check(m.close_command(now))
        elif kind == "input":
            assert name is not None
            loop_clears += name in (Input.LOOP_A, Input.LOOP_B) and m.is_active(name) and not value
            check(m.input_changed(name, bool(value), now))
        else:
            now += value
            check(m.tick(now))
            assert m.next_deadline is None or m.next_deadline > now  # nothing due is left unfired
        assert m.counts.passages <= loop_clears
        assert (m.state is S.FAULT) == (m.fault is not None and m.state is not S.EMERGENCY_OPEN)


_script_actions = st.one_of(
    st.tuples(st.sampled_from(["open_command", "close_command"]), st.none()),
    st.tuples(st.sampled_from(["in", "out"]), st.floats(min_value=0.3, max_value=6.0)),  # a vehicle
    st.tuples(st.just("button"), st.none()),
    st.tuples(st.sampled_from(["photocell", "emergency"]), st.floats(min_value=0.0, max_value=8.0)),
    st.tuples(st.just("wait"), st.floats(min_value=0.0, max_value=40.0)),
)


@PROFILE
@given(actions=st.lists(_script_actions, max_size=25), travel=st.floats(min_value=0.2, max_value=4.0))
def test_a_working_barrier_never_faults_counts_every_vehicle_and_ends_closed(
    actions: list[tuple[str, float | None]], travel: float
) -> None:
    """The whole stack (controller, MockFactory pins, simulated arm) in virtual time, with working
    hardware: however commands, button, photocell, emergency and vehicles come, no fault, one count
    per vehicle crossing, never both relays on, and once everything is quiet the gate closes."""
    steps: list[dict[str, object]] = []
    t = 0.0

    def at(offset: float, name: str, value: bool | None = None) -> None:
        steps.append({"t": t + offset, "input": name, **({} if value is None else {"value": value})})

    crossings = {"in": 0, "out": 0}
    for kind, value in actions:
        if kind in ("open_command", "close_command"):
            at(0, kind)
        elif kind in ("in", "out"):
            assert value is not None
            crossings[kind] += 1
            for offset, loop, occupied in crossing(kind == "in", value):
                at(offset, loop.value, occupied)
            t = float(steps[-1]["t"])  # type: ignore[arg-type]
        elif kind == "button":
            at(0, "button", True)
            at(0.2, "button", False)
            t += 0.2
        elif kind in ("photocell", "emergency"):
            assert value is not None
            at(0, kind, True)
            at(value, kind, False)
            t = float(steps[-1]["t"])  # type: ignore[arg-type]
        else:
            assert value is not None
            t += value
    at(CFG.travel_limit_s + 2 * travel + 1, "close_command")  # any motion is over by then
    script = parse_script({"config": {"travel_s": travel, "close_delay_s": 1.0}, "steps": steps})
    lines = list(run_script(script))
    for line in lines:
        assert not (line["motor_open"] and line["motor_close"])
        assert line["event"] != "fault" and line["faults"] == 0, line
    final = lines[-1]
    assert (final["count_in"], final["count_out"]) == (crossings["in"], crossings["out"])
    assert (final["state"], final["motor_open"], final["motor_close"], final["lamp"]) == (
        "CLOSED",
        False,
        False,
        False,
    )


@PROFILE
@given(st.lists(st.tuples(st.sampled_from([Input.LOOP_A, Input.LOOP_B]), st.booleans()), max_size=60))
def test_passages_are_mirror_symmetric(changes: list[tuple[Input, bool]]) -> None:
    """Swapping the loops swaps entries and exits, whatever the vehicles do."""
    swap = {Input.LOOP_A: Input.LOOP_B, Input.LOOP_B: Input.LOOP_A}
    mirror = {IN: OUT, OUT: IN}
    forward, backward = PassageTracker(), PassageTracker()
    for loop, occupied in changes:
        event = forward.changed(loop, occupied)
        assert backward.changed(swap[loop], occupied) == (event and mirror[event])


# -- gpiozero devices -------------------------------------------------------------------------------------------


def test_contact_inputs_normally_open_and_normally_closed(mock_factory: MockFactory) -> None:
    loop_pin, cell_pin = wired_pin(mock_factory, "GPIO22"), wired_pin(mock_factory, "GPIO5")
    with ContactInput("GPIO22") as loop, ContactInput("GPIO5", normally_closed=True) as cell:
        assert loop.pull_up and cell.pull_up
        assert (loop_pin.state, loop.is_active) == (True, False)  # open contact, pulled up: inactive
        assert (cell_pin.state, cell.is_active) == (True, True)  # NC contact open (cut wire): active
        loop_pin.wire(True)
        cell_pin.wire(True)
        assert (loop_pin.state, loop.is_active) == (False, True)
        assert (cell_pin.state, cell.is_active) == (False, False)


def test_barrier_motor_interlock_and_active_low_relays(mock_factory: MockFactory) -> None:
    up, down = mock_factory.pin("GPIO17"), mock_factory.pin("GPIO27")
    with BarrierMotor("GPIO17", "GPIO27", active_high=False) as motor:
        assert (up.state, down.state) == (True, True)  # active low: high is off
        motor.drive(motor_open=True, motor_close=False)
        assert (up.state, down.state, motor.is_opening) == (False, True, True)
        with pytest.raises(ValueError, match="both ways"):
            motor.drive(motor_open=True, motor_close=True)
        motor.drive(motor_open=False, motor_close=True)
        assert (up.state, down.state) == (True, False)
    assert motor.closed


def test_gate_devices_release_what_they_made_when_a_pin_is_taken(mock_factory: MockFactory) -> None:
    with DigitalOutputDevice("GPIO13"), pytest.raises(GPIOPinInUse):  # limit_closed's pin
        GateDevices(CFG)
    with GateDevices(CFG) as devices:  # every pin made before the failure was released
        assert set(devices.inputs) == set(Input) and devices.lamp is not None


# -- the simulator --------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_simulated_arm_moves_with_the_relays_in_virtual_time(mock_factory: MockFactory) -> None:
    clock = Clock()
    config = GateConfig(travel_s=2.0)
    barrier = SimulatedBarrier(config, mock_factory, clock=clock, realtime=False)
    limit_open, limit_closed = (mock_factory.pin(p) for p in ("GPIO6", "GPIO13"))
    with DigitalOutputDevice("GPIO17") as up, DigitalOutputDevice("GPIO27") as down:
        assert (barrier.position, barrier.next_due()) == (0.0, None)
        up.on()
        assert barrier.next_due() == 1000.0  # the closed limit switch opens at once
        barrier.advance(1000.0)
        assert barrier.next_due() == 1002.0
        clock.now = 1001.0
        up.off()
        assert barrier.position == 0.5 and barrier.next_due() is None
        down.on()
        clock.now = 1001.5
        barrier.advance(1001.5)
        assert barrier.position == 0.25
        clock.now = 1002.0
        barrier.advance(1002.0)
        assert barrier.position == 0.0
    assert not barrier.both_relays_seen
    assert limit_closed.contact_closed and not limit_open.contact_closed


def test_simulator_must_come_before_the_controller(mock_factory: MockFactory) -> None:
    mock_factory.pin("GPIO17")
    with pytest.raises(RuntimeError, match="before the GateController"):
        SimulatedBarrier(GateConfig(), mock_factory, realtime=False)


def test_set_contact_refuses_an_input_that_is_not_fitted(mock_factory: MockFactory) -> None:
    with pytest.raises(ValueError, match="photocell is not fitted"):
        set_contact(mock_factory, GateConfig(), Input.PHOTOCELL, True)


# -- the controller, in real time on simulated hardware ----------------------------------------------------------------

FAST = GateConfig(travel_s=0.1, close_delay_s=0.1, open_timeout_s=5.0, **FULL)


class Recorder:
    """on_change target: every snapshot with the real time it arrived."""

    def __init__(self) -> None:
        self.snapshots: list[tuple[float, Snapshot]] = []

    def __call__(self, snap: Snapshot) -> None:
        self.snapshots.append((time.monotonic(), snap))

    @property
    def states(self) -> list[BarrierState]:
        return [snap.state for _, snap in self.snapshots]

    def first_time_in(self, state: BarrierState) -> float:
        return next(t for t, snap in self.snapshots if snap.state is state)


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.002)


@pytest.fixture
def rig(mock_factory: MockFactory) -> Iterator[Callable[..., tuple[GateController, SimulatedBarrier]]]:
    """Makes a simulated barrier and its controller on the test's MockFactory; closes both."""
    made: list[tuple[GateController, SimulatedBarrier]] = []

    def make(
        config: GateConfig = FAST, *, stuck: bool = False, **kwargs: object
    ) -> tuple[GateController, SimulatedBarrier]:
        barrier = SimulatedBarrier(config, mock_factory, stuck=stuck)
        gate = GateController(config, **kwargs)  # type: ignore[arg-type]
        made.append((gate, barrier))
        return gate, barrier

    yield make
    for gate, barrier in made:
        gate.close()
        barrier.close()


def test_open_pulses_the_open_relay_until_the_open_limit_switch(
    mock_factory: MockFactory, rig: Callable[..., tuple[GateController, SimulatedBarrier]]
) -> None:
    gate, barrier = rig()
    up, down, lamp = (mock_factory.pin(p) for p in ("GPIO17", "GPIO27", "GPIO24"))
    gate.open("test")
    assert gate.state is S.OPENING and up.state and lamp.state
    wait_until(lambda: gate.state is S.OPEN)
    assert [s.state for s in up.states] == [False, True, False]
    assert up.states[2].timestamp >= FAST.travel_s - 0.005  # it ran until the arm got there
    assert [s.state for s in down.states] == [False]
    assert not lamp.state and barrier.position == 1.0


def test_vehicles_are_counted_by_direction_and_the_gate_closes_after_close_delay(
    mock_factory: MockFactory, rig: Callable[..., tuple[GateController, SimulatedBarrier]]
) -> None:
    recorder = Recorder()
    gate, barrier = rig(on_change=recorder)
    down = mock_factory.pin("GPIO27")
    gate.open()
    wait_until(lambda: gate.state is S.OPEN)
    assert barrier.drive_vehicle(entering=True, drive_s=0.06)
    left_at = time.monotonic()
    assert (gate.counts.count_in, gate.counts.count_out) == (1, 0)
    wait_until(lambda: gate.state is S.CLOSED)
    assert recorder.first_time_in(S.CLOSING) >= left_at + FAST.close_delay_s - 0.005
    assert [s.state for s in down.states] == [False, True, False]
    gate.open()
    wait_until(lambda: gate.state is S.OPEN)
    assert barrier.drive_vehicle(entering=False, drive_s=0.06)
    assert (gate.counts.count_in, gate.counts.count_out) == (1, 1)
    events = [snap.event for _, snap in recorder.snapshots if snap.event]
    assert events == [BarrierEvent.PASSAGE_IN, BarrierEvent.PASSAGE_OUT]


def test_photocell_while_closing_reverses_in_real_time(
    mock_factory: MockFactory, rig: Callable[..., tuple[GateController, SimulatedBarrier]]
) -> None:
    config = GateConfig(travel_s=0.2, close_delay_s=0.05, open_timeout_s=0.05, **FULL)
    gate, barrier = rig(config)
    up, down = mock_factory.pin("GPIO17"), mock_factory.pin("GPIO27")
    gate.open()
    wait_until(lambda: gate.state is S.CLOSING)  # nobody came: the open timeout closes it
    barrier.set_input(Input.PHOTOCELL, True)
    assert gate.state is S.OPENING and (up.state, down.state) == (True, False)
    assert gate.counts.reversals == 1
    barrier.set_input(Input.PHOTOCELL, False)
    wait_until(lambda: gate.state is S.CLOSED, timeout=5)
    assert [s.state for s in up.states] == [False, True, False, True, False]
    assert [s.state for s in down.states] == [False, True, False, True, False]
    assert not barrier.both_relays_seen


def test_stuck_arm_faults_after_the_travel_timeout(
    mock_factory: MockFactory, rig: Callable[..., tuple[GateController, SimulatedBarrier]]
) -> None:
    config = GateConfig(travel_s=0.05, travel_timeout_s=0.1, **FULL)
    gate, barrier = rig(config, stuck=True)
    gate.open()
    wait_until(lambda: gate.state is S.FAULT)
    assert gate.fault is FaultReason.TRAVEL_TIMEOUT and not mock_factory.pin("GPIO17").state
    gate.open()  # refused until an operator resets it
    assert gate.state is S.FAULT and barrier.position == 0.0


def test_emergency_input_opens_in_real_time(
    mock_factory: MockFactory, rig: Callable[..., tuple[GateController, SimulatedBarrier]]
) -> None:
    gate, barrier = rig()
    barrier.set_input(Input.EMERGENCY, True)
    assert gate.state is S.EMERGENCY_OPEN and mock_factory.pin("GPIO17").state
    wait_until(lambda: not mock_factory.pin("GPIO17").state)  # at the open limit switch
    gate.close_barrier("ignored")
    assert gate.state is S.EMERGENCY_OPEN
    barrier.set_input(Input.EMERGENCY, False)
    assert gate.state is S.OPEN


def test_an_input_wired_straight_back_is_fed_after_the_step_that_caused_it(mock_factory: MockFactory) -> None:
    """A pin callback that happens inside a relay write (same thread) waits its turn."""
    for name in FAST.input_pins():  # closed at the closed limit switch; nothing else active
        set_contact(mock_factory, FAST, name, name is Input.LIMIT_CLOSED)
    relay = wired_pin(mock_factory, FAST.open_pin)
    relay.listeners.append(lambda pin, level: set_contact(mock_factory, FAST, Input.LIMIT_CLOSED, not level))
    recorder = Recorder()
    with GateController(FAST, on_change=recorder) as gate:
        gate.open()
        assert [snap.trigger for _, snap in recorder.snapshots] == [
            T.START,
            T.OPEN_COMMAND,
            T.LIMIT_CLOSED_LEFT,
        ]
        assert all(snap.state is S.OPENING for _, snap in recorder.snapshots[1:])


def test_close_stops_the_timer_thread_the_motor_and_the_simulator(
    mock_factory: MockFactory, rig: Callable[..., tuple[GateController, SimulatedBarrier]]
) -> None:
    gate, barrier = rig(GateConfig(travel_s=5.0, **FULL))
    up = mock_factory.pin("GPIO17")
    gate.open()
    assert up.state
    thread, sim_thread = gate._thread, barrier._thread
    gate.close()
    assert not up.state and gate.closed
    assert thread is not None and not thread.is_alive()
    assert sim_thread is not None
    sim_thread.join(1)
    assert not sim_thread.is_alive()  # the simulator stops once the relays are released
    gate.close()  # again: no-op
    with pytest.raises(RuntimeError, match="closed"):
        gate.open()
    with GateController(GateConfig(**FULL)) as again:  # the pins were released
        again.open()
        assert up.state
    assert not up.state


def test_pin_factory_is_passed_to_every_device(mock_factory: MockFactory) -> None:
    other = MockFactory()
    try:
        with SimulatedBarrier(FAST, other) as barrier, GateController(FAST, pin_factory=other) as gate:
            assert gate.state is S.CLOSED
            gate.open()
            assert other.pin("GPIO17").state
            barrier.set_input(Input.LOOP_B, True)
            assert Input.LOOP_B in gate.snapshot().inputs
        assert not mock_factory.pins  # the default factory was never used
    finally:
        other.reset()
        other.close()


def test_on_change_failure_is_logged_and_control_goes_on(
    rig: Callable[..., tuple[GateController, SimulatedBarrier]], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(snap: Snapshot) -> None:
        raise RuntimeError("dashboard down")

    with caplog.at_level(logging.ERROR, logger="gate_firmware.controller"):
        gate, _ = rig(on_change=broken)
        gate.open()
        wait_until(lambda: gate.state is S.OPEN)
    assert "on_change callback failed" in caplog.text


def test_commands_are_thread_safe(rig: Callable[..., tuple[GateController, SimulatedBarrier]]) -> None:
    recorder = Recorder()
    gate, _ = rig(GateConfig(travel_s=5.0, **FULL), on_change=recorder)
    threads = [threading.Thread(target=gate.open, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert gate.state is S.OPENING
    assert recorder.states.count(S.OPENING) >= 8 and S.OPEN not in recorder.states


def test_timer_thread_failure_stops_the_motor_and_closes(
    mock_factory: MockFactory, caplog: pytest.LogCaptureFixture
) -> None:
    broken = threading.Event()

    def clock() -> float:
        if broken.is_set():
            raise OSError("clock gone")
        return time.monotonic()

    with GateController(GateConfig(travel_s=0.05), clock=clock) as gate:
        gate.open()
        assert mock_factory.pin("GPIO17").state
        broken.set()
        wait_until(lambda: gate.closed)
        assert not mock_factory.pin("GPIO17").state
        with pytest.raises(RuntimeError, match="closed"):
            gate.open()
    assert "timer thread failed" in caplog.text


def test_wired_pin_follows_its_pull_until_a_contact_closes(mock_factory: MockFactory) -> None:
    pin = wired_pin(mock_factory, "GPIO20")
    assert isinstance(pin, WiredPin) and not pin.state
    pin.pull = "up"
    assert pin.state
    pin.wire(True)
    pin.pull = "up"  # setting the pull again does not beat the contact
    assert not pin.state
    pin.wire(False)
    assert pin.state
