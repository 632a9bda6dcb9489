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
from dataclasses import dataclass
from typing import ClassVar

import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.exc import GPIOPinInUse
from gpiozero.pins.mock import MockFactory
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gate_firmware import (
    Alarm,
    BarrierEvent,
    BarrierMachine,
    BarrierMotor,
    BarrierState,
    ContactInput,
    EdgeLostPolicy,
    FaultReason,
    GateConfig,
    GateController,
    GateDevices,
    Input,
    Light,
    MotorOutput,
    PassageTracker,
    Snapshot,
    Step,
    Trigger,
)
from gate_firmware.config import SUGGESTED_PINS
from gate_firmware.machine import pulses_needed
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


def closed_machine(now: float = 100.0, config: GateConfig = CFG) -> BarrierMachine:
    return BarrierMachine(config, now=now, inputs={Input.LIMIT_CLOSED: True})


def machine_in(state: BarrierState, config: GateConfig = CFG) -> tuple[BarrierMachine, float]:
    """A machine brought to ``state`` through its public inputs (the arm working), and the time."""
    now = 100.0
    m = closed_machine(now, config)
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
    now += config.travel_s
    m.input_changed(Input.LIMIT_OPEN, True, now)
    if state is S.OPEN:
        return m, now
    if state is S.FAULT:
        m.input_changed(Input.LIMIT_OPEN, False, now + 1)  # the arm came down by itself
        return m, now + 1
    if state is S.EMERGENCY_OPEN:
        m.input_changed(Input.EMERGENCY, True, now + 1)
        return m, now + 1
    now += config.open_timeout_s
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
    assert step.buzzer == (step.motor_open or step.motor_close or step.state is S.FAULT)
    if step.light is Light.GREEN:  # the arm rests up
        assert not (step.motor_open or step.motor_close) and Input.LIMIT_OPEN in step.inputs
        assert step.state in (S.OPEN, S.EMERGENCY_OPEN)


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
    assert (c.motor_output, c.pulse_pin, c.pulse_s) == (MotorOutput.RELAYS, None, 0.5)
    assert (c.light_red_pin, c.light_green_pin, c.buzzer_pin) == (None, None, None)
    assert (c.safety_stuck_s, c.edge_heartbeat_s, c.on_edge_lost) == (
        300.0,
        None,
        EdgeLostPolicy.CLOSE_WHEN_CLEAR,
    )
    assert set(c.output_pins()) == {"open", "close", "lamp"}


def test_config_pulse_output_claims_one_pin_instead_of_the_two_relays() -> None:
    with pytest.raises(ValidationError, match="needs pulse_pin"):
        GateConfig(motor_output=MotorOutput.PULSE)
    c = GateConfig.model_validate({"motor_output": "pulse", "pulse_pin": "GPIO17", "buzzer_pin": 16})
    assert c.output_pins() == {"pulse": "GPIO17", "lamp": "GPIO24", "buzzer": 16}  # open_pin is unused
    assert c.travel_limit_s == 2 * 2.0 + 1 + 8 * 0.5
    with pytest.raises(ValidationError, match="same pin"):
        GateConfig(motor_output=MotorOutput.PULSE, pulse_pin="GPIO24")
    assert "pulse" not in GateConfig(pulse_pin="GPIO12").output_pins()  # relays: not claimed
    with pytest.raises(ValidationError):
        GateConfig.model_validate({"on_edge_lost": "panic"})


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
        {"buzzer_pin": "GPIO24"},
        {"light_red_pin": "GPIO20", "light_green_pin": 20},
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
            BarrierEvent.FAULT_BOTH_LIMITS,
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
    assert (step.event, step.fault, step.counts.faults) == (
        BarrierEvent.FAULT_TRAVEL_TIMEOUT,
        FaultReason.TRAVEL_TIMEOUT,
        1,
    )
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
    assert (step.state, step.fault, step.event) == (S.FAULT, reason, BarrierEvent.fault(reason))
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
    assert (step.state, step.event, step.trigger) == (S.OPEN, BarrierEvent.ENTRY, T.PASSAGE)
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
    m, now = machine_in(S.OPEN, CFG.model_copy(update={"safety_stuck_s": None}))  # not monitored here
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


def test_a_follower_on_loop_a_does_not_hold_the_arm_up_and_is_a_tailgate_if_it_slips_under() -> None:
    """The next car waits on the outer loop: the light turns red and the arm comes down in front of
    it. If it drives under the arm anyway, the arm goes back up, and the car is counted and
    reported as a tailgate."""
    m, now = machine_in(S.OPEN)
    assert m.light is Light.GREEN
    m.input_changed(Input.LOOP_A, True, now + 1)
    m.input_changed(Input.LOOP_B, True, now + 2)
    m.input_changed(Input.LOOP_A, False, now + 3)
    m.input_changed(Input.LOOP_A, True, now + 3.5)  # the follower
    step = last(m.input_changed(Input.LOOP_B, False, now + 4))
    assert (step.event, step.counts.count_in, step.light) == (BarrierEvent.ENTRY, 1, Light.RED)
    assert last(m.tick(now + 4 + DELAY)).state is S.CLOSING
    m.input_changed(Input.LIMIT_OPEN, False, now + 4 + DELAY)
    step = last(m.input_changed(Input.LOOP_B, True, now + 5.5))  # it drives under the closing arm
    assert (step.state, step.event, step.motor_close) == (S.OPENING, BarrierEvent.REVERSAL, False)
    m.input_changed(Input.LOOP_A, False, now + 6)
    step = last(m.input_changed(Input.LOOP_B, False, now + 6.5))
    assert (step.event, step.counts.count_in, step.counts.tailgates) == (BarrierEvent.TAILGATE, 2, 1)


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
    assert press(6) is S.OPENING and m.motor_open  # an open signal while lowering: up at once
    assert press(7) is S.STOPPED and not m.motor_open
    assert m.next_deadline == 7 + TIMEOUT  # nobody comes: it closes by itself, never stuck mid-way
    assert last(m.close_command(8)).state is S.CLOSING


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
        S.EMERGENCY_OPEN, False, FaultReason.TRAVEL_TIMEOUT, BarrierEvent.FAULT_TRAVEL_TIMEOUT,
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


# -- the pure machine: counting, authorisations and tailgating ---------------------------------------


def cross(m: BarrierMachine, at: float, *, entering: bool = True, drive_s: float = 0.6) -> list[Step]:
    """One vehicle crosses both loops, starting at ``at``; the steps it caused."""
    steps: list[Step] = []
    for offset, loop, occupied in crossing(entering, drive_s):
        steps += m.input_changed(loop, occupied, at + offset)
    return steps


def events(steps: list[Step]) -> list[BarrierEvent]:
    return [s.event for s in steps if s.event is not None]


@pytest.mark.parametrize("entering", [True, False])
def test_a_follower_through_the_same_opening_is_counted_and_reported_as_a_tailgate(entering: bool) -> None:
    m, now = machine_in(S.OPEN)
    first, second = (Input.LOOP_A, Input.LOOP_B) if entering else (Input.LOOP_B, Input.LOOP_A)
    steps = m.input_changed(first, True, now + 1)
    steps += m.input_changed(second, True, now + 1.2)
    steps += m.input_changed(first, False, now + 1.4)
    steps += m.input_changed(first, True, now + 1.5)  # the follower, close behind
    steps += m.input_changed(second, False, now + 1.6)  # the first one is through
    steps += m.input_changed(second, True, now + 1.7)
    steps += m.input_changed(first, False, now + 1.9)
    steps += m.input_changed(second, False, now + 2.1)
    authorised = BarrierEvent.ENTRY if entering else BarrierEvent.EXIT
    assert events(steps) == [authorised, BarrierEvent.TAILGATE]
    counted = (m.counts.count_in, m.counts.count_out)
    assert counted == ((2, 0) if entering else (0, 2)) and m.counts.tailgates == 1
    for step in steps:
        assert_safe(step)


def test_each_open_command_lets_one_vehicle_through() -> None:
    m, now = machine_in(S.OPEN)
    m.open_command(now + 0.5)  # the second car's plate was read while the first is still coming
    assert m.authorised == 2
    assert events(cross(m, now + 1)) == [BarrierEvent.ENTRY]
    assert m.next_deadline == now + 1.6 + TIMEOUT and m.light is Light.GREEN  # waits for the second car
    assert events(cross(m, now + 3)) == [BarrierEvent.ENTRY]
    assert m.next_deadline == now + 3.6 + DELAY and m.light is Light.RED
    assert (m.counts.count_in, m.counts.tailgates) == (2, 0)


def test_an_authorisation_not_used_is_dropped_once_the_arm_is_down() -> None:
    m, now = machine_in(S.OPEN)
    m.tick(now + TIMEOUT)  # nobody came
    m.input_changed(Input.LIMIT_OPEN, False, now + TIMEOUT)
    m.input_changed(Input.LIMIT_CLOSED, True, now + TIMEOUT + TRAVEL)
    assert (m.state, m.authorised) == (S.CLOSED, 0)
    assert events(cross(m, now + 100)) == [BarrierEvent.TAILGATE]  # a motorbike round the arm
    assert (m.counts.count_in, m.counts.tailgates) == (1, 1)


def test_passages_under_an_emergency_are_not_tailgates() -> None:
    m, now = machine_in(S.CLOSED)
    m.input_changed(Input.EMERGENCY, True, now)
    m.input_changed(Input.LIMIT_CLOSED, False, now)
    m.input_changed(Input.LIMIT_OPEN, True, now + TRAVEL)
    assert m.light is Light.GREEN
    assert events(cross(m, now + 3) + cross(m, now + 4, entering=False)) == [
        BarrierEvent.ENTRY,
        BarrierEvent.EXIT,
    ]
    assert m.counts.tailgates == 0


@pytest.mark.parametrize("signal", ["open_command", "button"])
def test_an_open_signal_while_lowering_raises_the_arm_at_once(signal: str) -> None:
    m, now = machine_in(S.CLOSING)
    assert m.motor_close
    at = now + 0.7
    steps = m.open_command(at) if signal == "open_command" else m.input_changed(Input.BUTTON, True, at)
    step = last(steps)
    assert (step.state, step.motor_open, step.motor_close, step.at) == (S.OPENING, True, False, at)
    assert len(steps) == 1 and m.authorised == 2  # (the first opening's car never came)


def test_light_and_buzzer() -> None:
    m = closed_machine(0.0)
    assert (m.light, m.buzzer) == (Light.RED, False)
    m.open_command(0.0)
    m.input_changed(Input.LIMIT_CLOSED, False, 0.0)
    assert (m.light, m.buzzer) == (Light.RED, True)  # moving: not yet
    m.input_changed(Input.LIMIT_OPEN, True, TRAVEL)
    assert (m.light, m.buzzer) == (Light.GREEN, False)
    cross(m, TRAVEL + 1)
    assert m.light is Light.RED  # the authorised vehicle is through: the next one must stop
    m.open_command(TRAVEL + 2)
    assert m.light is Light.GREEN
    m.close_command(TRAVEL + 3)
    assert (m.state, m.light, m.buzzer) == (S.CLOSING, Light.RED, True)
    m.tick(TRAVEL + 3 + LIMIT)
    assert (m.state, m.light, m.buzzer, m.lamp) == (S.FAULT, Light.RED, True, True)


# -- the pure machine: monitored safety sensors, the edge heartbeat, never stuck mid-way -----------------

STUCK = CFG.safety_stuck_s
assert STUCK is not None


@pytest.mark.parametrize("sensor", [Input.PHOTOCELL, Input.LOOP_B])
def test_a_safety_sensor_stuck_beyond_its_limit_disables_auto_close_until_reset(sensor: Input) -> None:
    m, now = machine_in(S.OPEN)
    m.input_changed(sensor, True, now + 1)
    assert m.tick(now + 1 + STUCK - 0.001) == []
    step = last(m.tick(now + 1 + STUCK))
    assert (step.state, step.event, step.alarms, step.auto_close) == (
        S.OPEN, BarrierEvent.FAULT_SAFETY_STUCK, {Alarm.SAFETY_STUCK}, False,
    )  # fmt: skip
    assert m.close_command(now + 2 * STUCK) == []  # no reset while it is still active
    step = last(m.input_changed(sensor, False, now + 3 * STUCK))
    assert (step.state, step.auto_close, m.next_deadline) == (S.OPEN, False, None)  # held open
    assert m.tick(now + 100 * STUCK) == []
    step = last(m.close_command(now + 100 * STUCK))  # an operator's reset, with the zone clear
    assert (step.state, step.event, step.alarms, step.auto_close) == (
        S.CLOSING, BarrierEvent.CLEARED_SAFETY_STUCK, frozenset(), True,
    )  # fmt: skip


def test_the_button_resets_a_stuck_sensor_alarm_and_a_short_one_raises_none() -> None:
    m, now = machine_in(S.CLOSED)
    m.input_changed(Input.PHOTOCELL, True, now)
    m.input_changed(Input.PHOTOCELL, False, now + STUCK - 1)  # just under the limit: no alarm
    m.input_changed(Input.PHOTOCELL, True, now + STUCK)
    assert m.tick(now + STUCK + STUCK - 0.5) == [] and m.auto_close  # the limit counts from each break
    m.tick(now + 2 * STUCK)
    m.input_changed(Input.PHOTOCELL, False, now + 2 * STUCK + 1)
    assert not m.auto_close and m.state is S.CLOSED
    step = last(m.input_changed(Input.BUTTON, True, now + 2 * STUCK + 2))
    assert (step.state, step.event, step.auto_close) == (S.OPENING, BarrierEvent.CLEARED_SAFETY_STUCK, True)


EDGE = GateConfig(**{**CFG.model_dump(), "edge_heartbeat_s": 5.0})


def test_heartbeats_keep_the_edge_alive_and_without_a_setting_they_do_nothing() -> None:
    m, now = machine_in(S.CLOSED, EDGE)
    for beat in range(1, 20):
        assert m.heartbeat(now + 4 * beat) == []
    assert m.next_deadline == now + 4 * 19 + 5 and not m.alarms
    plain = closed_machine()
    assert plain.heartbeat(1000.0) == [] and plain.next_deadline is None


def test_edge_lost_stay_keeps_the_arm_where_it_is_until_the_heartbeat_is_back() -> None:
    m, now = machine_in(S.OPEN, EDGE.model_copy(update={"on_edge_lost": EdgeLostPolicy.STAY}))
    step = last(m.tick(now + 5))  # the last heartbeat was at the start, 5 s before... (machine_in took 2 s)
    assert (step.state, step.event, step.auto_close, step.alarms) == (
        S.OPEN, BarrierEvent.FAULT_EDGE_LOST, False, {Alarm.EDGE_LOST},
    )  # fmt: skip
    assert m.next_deadline is None and m.tick(now + 1000) == []  # no open timeout: it stays
    step = last(m.heartbeat(now + 1000))
    assert (step.state, step.event, step.auto_close) == (S.OPEN, BarrierEvent.CLEARED_EDGE_LOST, True)
    assert m.next_deadline == now + 1000 + 5  # the next heartbeat is due; the open timeout is later
    assert last(m.tick(now + 1000 + TIMEOUT)).trigger is T.EDGE_LOST  # (no heartbeat again)


def test_edge_lost_open_hold_raises_and_holds_the_arm_for_everyone() -> None:
    m, now = machine_in(S.CLOSED, EDGE.model_copy(update={"on_edge_lost": EdgeLostPolicy.OPEN_HOLD}))
    step = last(m.tick(now + 5))
    assert (step.state, step.motor_open, step.event) == (S.OPENING, True, BarrierEvent.FAULT_EDGE_LOST)
    m.input_changed(Input.LIMIT_CLOSED, False, now + 5)
    step = last(m.input_changed(Input.LIMIT_OPEN, True, now + 5 + TRAVEL))
    assert (step.state, step.light, m.next_deadline) == (S.OPEN, Light.GREEN, None)
    assert events(cross(m, now + 10)) == [BarrierEvent.ENTRY]  # free flow: not a tailgate
    assert m.tick(now + 10_000) == []
    m.heartbeat(now + 10_000)
    assert m.next_deadline == now + 10_000 + DELAY and m.auto_close  # back to normal: it closes


def test_edge_lost_close_when_clear_waits_for_the_safety_zone() -> None:
    m, now = machine_in(S.OPEN, EDGE)  # close_when_clear is the default
    m.input_changed(Input.LOOP_B, True, now + 1)  # a car under the arm
    step = last(m.tick(now + 5))
    assert (step.state, step.event, step.auto_close) == (S.OPEN, BarrierEvent.FAULT_EDGE_LOST, True)
    assert not any(s.motor_close for s in m.tick(now + 100))
    m.input_changed(Input.LOOP_B, False, now + 101)
    step = last(m.tick(now + 101 + DELAY))
    assert (step.state, step.motor_close, step.trigger) == (S.CLOSING, True, T.EDGE_LOST)
    m.input_changed(Input.LIMIT_OPEN, False, now + 102)
    m.input_changed(Input.LIMIT_CLOSED, True, now + 104)
    assert m.state is S.CLOSED and m.next_deadline is None
    m.input_changed(Input.BUTTON, True, now + 110)  # an attendant lets the next car in as usual
    m.input_changed(Input.LIMIT_CLOSED, False, now + 110)
    m.input_changed(Input.LIMIT_OPEN, True, now + 112)
    assert (m.state, m.next_deadline) == (S.OPEN, now + 112 + TIMEOUT)


def test_stopped_mid_way_closes_by_itself_when_the_zone_is_clear() -> None:
    m = BarrierMachine(CFG, now=0.0)  # between the limit switches: power came back mid-way
    assert (m.state, m.next_deadline) == (S.STOPPED, TIMEOUT)
    m.input_changed(Input.PHOTOCELL, True, 1.0)
    assert m.tick(TIMEOUT) == [] and m.state is S.STOPPED
    m.input_changed(Input.PHOTOCELL, False, 40.0)
    step = last(m.tick(40.0 + TIMEOUT))
    assert (step.state, step.trigger, step.motor_close) == (S.CLOSING, T.STOPPED_TIMEOUT, True)


# -- the pure machine: one pulse output ------------------------------------------------------------------

PULSED = GateConfig(**{**CFG.model_dump(), "motor_output": MotorOutput.PULSE, "pulse_s": 0.25})


@pytest.mark.parametrize(
    ("motion", "next_move", "demand", "pulses"),
    [(0, 1, 1, 1), (0, -1, -1, 1), (1, -1, 0, 1), (1, -1, -1, 2), (-1, 1, 1, 2), (0, -1, 1, 3), (0, 1, 0, 0)],
)
def test_pulses_needed_for_an_open_stop_close_stop_input(
    motion: int, next_move: int, demand: int, pulses: int
) -> None:
    assert pulses_needed(motion, next_move, demand) == pulses


def test_pulse_output_opens_with_one_pulse_and_reverses_with_stop_then_open() -> None:
    m = closed_machine(0.0, PULSED)
    step = last(m.open_command(0.0))
    assert (step.state, step.motor_open, step.pulse) == (S.OPENING, True, True)  # at once
    step = last(m.tick(0.25))
    assert (step.pulse, step.trigger) == (False, T.PULSE)
    m.input_changed(Input.LIMIT_CLOSED, False, 0.3)
    m.input_changed(Input.LIMIT_OPEN, True, TRAVEL)  # the barrier controller stopped there by itself
    assert m.state is S.OPEN and not m.pulse and m.next_deadline == TRAVEL + TIMEOUT
    step = last(m.close_command(3.0))
    assert (step.state, step.pulse) == (S.CLOSING, True)  # its next step from the top is "close"
    m.tick(3.25)
    m.input_changed(Input.LIMIT_OPEN, False, 3.3)
    step = last(m.input_changed(Input.PHOTOCELL, True, 3.6))
    assert (step.state, step.event, step.pulse) == (S.OPENING, BarrierEvent.REVERSAL, True)  # stop, at once
    assert [(s.at, s.pulse) for s in m.tick(5.0)] == [(3.85, False), (4.1, True), (4.35, False)]  # then open


def test_pulse_output_never_starts_the_arm_down_over_a_vehicle_to_raise_it() -> None:
    m = closed_machine(0.0, PULSED)
    m.open_command(0.0)
    m.input_changed(Input.LIMIT_CLOSED, False, 0.1)
    m.tick(0.25)
    m.input_changed(Input.BUTTON, True, 1.0)  # stop: its next step is now "close"
    m.tick(1.25)
    m.input_changed(Input.BUTTON, False, 1.3)
    m.input_changed(Input.LOOP_B, True, 1.5)
    steps = m.input_changed(Input.BUTTON, True, 2.0)  # raise again: close, stop, open would go down first
    assert m.state is S.OPENING and not any(s.pulse for s in steps)
    assert m.tick(200.0) == []  # it waits (no travel timeout before its first pulse)
    step = last(m.input_changed(Input.LOOP_B, False, 200.0))
    assert step.pulse and m.next_deadline == 200.25
    assert [s.pulse for s in m.tick(201.25)] == [False, True, False, True, False]
    assert m.next_deadline == 200.0 + PULSED.travel_limit_s


def test_pulse_output_reaching_the_closed_end_on_the_way_to_open_is_not_a_wrong_limit() -> None:
    """Stopped just above the closed end after opening, the controller's next step is "close":
    close, stop, open. If the arm gets to the closed limit switch meanwhile, it stopped there and
    the next pulse raises it."""
    m = closed_machine(0.0, PULSED)
    m.open_command(0.0)
    m.input_changed(Input.LIMIT_CLOSED, False, 0.1)
    m.input_changed(Input.BUTTON, True, 0.2)  # stop (pulse at 0.5: the first one is on until 0.25)
    m.tick(1.0)
    m.input_changed(Input.BUTTON, False, 1.0)
    m.input_changed(Input.BUTTON, True, 2.0)  # raise: close (at 2.0), stop, open
    step = last(m.input_changed(Input.LIMIT_CLOSED, True, 2.1))  # it was nearly down
    assert (step.state, step.fault, step.trigger) == (S.OPENING, None, T.TURNAROUND)
    assert [(s.at, s.pulse) for s in m.tick(3.0)] == [(2.25, False), (2.5, True), (2.75, False)]  # open
    m.input_changed(Input.LIMIT_CLOSED, False, 2.6)
    assert last(m.input_changed(Input.LIMIT_OPEN, True, 4.5)).state is S.OPEN


def test_no_pulse_in_fault() -> None:
    m = closed_machine(0.0, PULSED)
    m.open_command(0.0)
    steps = m.tick(100.0)  # the arm never left the closed limit switch
    assert m.state is S.FAULT and not steps[-1].pulse and m.next_deadline is None


# -- passages ---------------------------------------------------------------------------------------------


def play(tracker: PassageTracker, changes: list[tuple[str, bool]]) -> list[BarrierEvent]:
    names = {"a": Input.LOOP_A, "b": Input.LOOP_B}
    return [e for loop, occupied in changes if (e := tracker.changed(names[loop], occupied)) is not None]


IN, OUT = BarrierEvent.ENTRY, BarrierEvent.EXIT


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


@dataclass
class Vehicle:
    direction: int  # +1 entering (loop_a first), -1 leaving (loop_b first)
    pos: int = 1  # 1: on its first loop, 2: on both, 3: on the far loop (0: backed away, 4: through)
    cleared_first: bool = False  # it has been on the far loop alone


class Lane:
    """Vehicles on one lane across the two loops, within what two presence loops can tell apart
    (``gate_firmware.passages``): each loop holds at most one vehicle at a time (it clears between
    two), a vehicle that has been on its far loop alone never backs onto its first loop alone
    again, and vehicles going opposite ways are never on the loops together. Within that: followers
    as close as can be (tailgaters), vehicles that stop, back off the far loop, or turn away.

    Every move changes exactly one loop; ``through`` counts the vehicles that crossed, by direction.
    """

    FIRST: ClassVar[dict[int, Input]] = {+1: Input.LOOP_A, -1: Input.LOOP_B}

    def __init__(self) -> None:
        self.vehicles: list[Vehicle] = []
        self.through = {+1: 0, -1: 0}

    @classmethod
    def loops(cls, direction: int, pos: int) -> set[Input]:
        first, far = cls.FIRST[direction], cls.FIRST[-direction]
        return {1: {first}, 2: {first, far}, 3: {far}}.get(pos, set())

    def taken(self, but: Vehicle | None = None) -> set[Input]:
        return {loop for v in self.vehicles if v is not but for loop in self.loops(v.direction, v.pos)}

    def moves(self) -> list[tuple[Vehicle | int, int]]:
        """(direction, 0): a new vehicle arrives; (vehicle, +1 or -1): one moves on or backs."""
        found: list[tuple[Vehicle | int, int]] = []
        for direction in (+1, -1):
            others = {v.direction for v in self.vehicles}
            if self.FIRST[direction] not in self.taken() and -direction not in others:
                found.append((direction, 0))
        for v in self.vehicles:
            for delta in (+1, -1):
                pos = v.pos + delta
                if delta < 0 and v.cleared_first and pos == 1:
                    continue
                if not self.loops(v.direction, pos) & self.taken(but=v):
                    found.append((v, delta))
        return found

    def apply(self, move: tuple[Vehicle | int, int]) -> tuple[Input, bool]:
        """Make a move from :meth:`moves`; the loop change it makes."""
        who, delta = move
        if isinstance(who, int):
            self.vehicles.append(Vehicle(who))
            return self.FIRST[who], True
        before = self.loops(who.direction, who.pos)
        who.pos += delta
        after = self.loops(who.direction, who.pos)
        who.cleared_first |= who.pos == 3
        if who.pos in (0, 4):
            self.vehicles.remove(who)
            self.through[who.direction] += who.pos == 4
        ((loop, occupied),) = [(loop, loop in after) for loop in before ^ after]
        return loop, occupied

    def drive_out(self) -> list[tuple[Input, bool]]:
        """Every vehicle still on the loops drives on through, the one in front first."""
        changes = []
        while self.vehicles:
            front = max(self.vehicles, key=lambda v: v.pos)
            changes.append(self.apply((front, +1)))
        return changes


def held_by_rule_or_at_rest(state: BarrierState, auto_close: bool) -> bool:
    """Where the barrier may stay for good: closed, faulted, or held up (or mid-way) by a rule."""
    return state in (S.CLOSED, S.FAULT) or (state in (S.OPEN, S.STOPPED) and not auto_close)


_configs = st.builds(
    GateConfig,
    travel_s=st.floats(min_value=0.01, max_value=5.0),
    close_delay_s=st.floats(min_value=0.0, max_value=5.0),
    open_timeout_s=st.floats(min_value=0.01, max_value=60.0),
    motor_output=st.sampled_from(MotorOutput),
    pulse_s=st.floats(min_value=0.01, max_value=1.0),
    safety_stuck_s=st.none() | st.floats(min_value=0.5, max_value=100.0),
    edge_heartbeat_s=st.none() | st.floats(min_value=0.5, max_value=50.0),
    on_edge_lost=st.sampled_from(EdgeLostPolicy),
    **{name: st.just(pin) for name, pin in FULL.items()},
)
_starts = st.sets(st.sampled_from([Input.LIMIT_CLOSED, Input.LIMIT_OPEN, Input.EMERGENCY, Input.LOOP_B]))
_waits = st.floats(min_value=0.0, max_value=40.0)


class Checked:
    """A machine whose every step is checked against the interlocks as it is taken."""

    def __init__(self, machine: BarrierMachine, config: GateConfig) -> None:
        self.m, self.config = machine, config
        self.now = self.last_at = 0.0
        self.motor_since: tuple[tuple[bool, bool], float] = ((machine.motor_open, machine.motor_close), 0.0)
        self.steps: list[Step] = []
        self.check([machine.first_step])

    def check(self, steps: list[Step]) -> None:
        m = self.m
        for step in steps:
            assert_safe(step)
            assert step.at >= self.last_at
            self.last_at = step.at
            motors = (step.motor_open, step.motor_close)
            if motors != self.motor_since[0]:
                self.motor_since = (motors, step.at)
        self.steps += steps
        if any(self.motor_since[0]):  # a running motor is always timed
            deadline = m.travel_deadline
            if self.config.motor_output is MotorOutput.RELAYS:  # from when it started
                assert deadline is not None
                assert deadline <= self.motor_since[1] + self.config.travel_limit_s + 1e-9
            else:  # from its first pulse, which waits only for the zone to clear
                assert deadline is not None or m.inputs & SAFETY_ZONE
        assert (m.state is S.FAULT) == (m.fault is not None and m.state is not S.EMERGENCY_OPEN)

    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.check(self.m.tick(self.now))
        assert self.m.next_deadline is None or self.m.next_deadline > self.now  # nothing due left

    def settles(self) -> None:
        """Everything but the limit switches goes quiet: the machine comes to rest by itself."""
        for name in (Input.BUTTON, Input.EMERGENCY, Input.PHOTOCELL, Input.LOOP_A, Input.LOOP_B):
            self.check(self.m.input_changed(name, False, self.now))
        for _ in range(100):
            deadline = self.m.next_deadline
            if deadline is None:
                break
            self.wait(deadline - self.now)
        assert self.m.next_deadline is None, "still busy after 100 timers"
        assert held_by_rule_or_at_rest(self.m.state, self.m.auto_close), self.m.state
        assert not (self.m.motor_open or self.m.motor_close or self.m.pulse)


@PROFILE
@given(config=_configs, start=_starts, data=st.data())
def test_interlocks_hold_for_any_input_sequence_and_nothing_is_stuck(
    config: GateConfig, start: set[Input], data: st.DataObject
) -> None:
    """Whatever the inputs do (even impossible limit switches), the outputs stay safe (the close
    motor never on while loop_b or the photocell is active, never both motors, ...), time moves
    forward, a motor never runs past its travel limit, passages never outnumber loop clears, and
    once the inputs go quiet the barrier comes to rest: CLOSED, FAULT, or held by rule."""
    c = Checked(BarrierMachine(config, inputs={name: True for name in start}), config)
    m, loop_clears = c.m, 0
    for _ in range(data.draw(st.integers(0, 50), label="actions")):
        kind = data.draw(st.sampled_from(["open", "close", "heartbeat", "input", "input", "wait"]))
        if kind == "open":
            c.check(m.open_command(c.now))
        elif kind == "close":
            c.check(m.close_command(c.now))
        elif kind == "heartbeat":
            c.check(m.heartbeat(c.now))
        elif kind == "input":
            name, value = data.draw(st.sampled_from(list(Input))), data.draw(st.booleans())
            loop_clears += name in (Input.LOOP_A, Input.LOOP_B) and m.is_active(name) and not value
            c.check(m.input_changed(name, value, c.now))
        else:
            c.wait(data.draw(_waits))
        assert m.counts.passages <= loop_clears
    c.settles()


@PROFILE
@given(config=_configs, data=st.data())
def test_every_vehicle_is_counted_once_in_its_direction_tailgaters_included(
    config: GateConfig, data: st.DataObject
) -> None:
    """Vehicles come and go on the lane (followers, back-aways, both directions) while commands,
    the button, the photocell, the emergency input, heartbeats and time come in any order: each
    vehicle that crossed is counted once in its direction, each passage is reported once (entry,
    exit or tailgate), and the barrier then comes to rest by itself."""
    c = Checked(BarrierMachine(config, inputs={Input.LIMIT_CLOSED: True}), config)
    m, lane = c.m, Lane()
    for _ in range(data.draw(st.integers(0, 60), label="actions")):
        kind = data.draw(st.sampled_from(["lane"] * 4 + ["open", "close", "heartbeat", "toggle", "wait"]))
        if kind == "lane":
            moves = lane.moves()
            c.check(m.input_changed(*lane.apply(data.draw(st.sampled_from(moves))), c.now))
        elif kind == "open":
            c.check(m.open_command(c.now))
        elif kind == "close":
            c.check(m.close_command(c.now))
        elif kind == "heartbeat":
            c.check(m.heartbeat(c.now))
        elif kind == "toggle":
            name = data.draw(st.sampled_from([Input.PHOTOCELL, Input.BUTTON, Input.EMERGENCY]))
            c.check(m.input_changed(name, not m.is_active(name), c.now))
        else:
            c.wait(data.draw(st.floats(min_value=0.0, max_value=5.0)))
    for change in lane.drive_out():
        c.check(m.input_changed(*change, c.now))
    assert (m.counts.count_in, m.counts.count_out) == (lane.through[+1], lane.through[-1])
    reported = [s.event for s in c.steps if s.event is not None and s.event.is_passage]
    assert len(reported) == m.counts.passages
    assert reported.count(BarrierEvent.TAILGATE) == m.counts.tailgates
    c.settles()


@PROFILE
@given(config=_configs, entering=st.booleans(), data=st.data())
def test_one_opening_lets_one_vehicle_through_and_every_follower_is_a_tailgate(
    config: GateConfig, entering: bool, data: st.DataObject
) -> None:
    """One open command, then any number of vehicles one way (close followers, back-aways), the
    photocell and time: the first vehicle through is authorised, every later one is a tailgate."""
    config = config.model_copy(update={"edge_heartbeat_s": None})  # no open_hold (free flow) here
    c = Checked(BarrierMachine(config, inputs={Input.LIMIT_CLOSED: True}), config)
    m, lane = c.m, Lane()
    c.check(m.open_command(0.0))
    direction = +1 if entering else -1
    for _ in range(data.draw(st.integers(0, 40), label="actions")):
        kind = data.draw(st.sampled_from(["lane"] * 4 + ["photocell", "wait"]))
        moves = [move for move in lane.moves() if move[0] != -direction]
        if kind == "lane" and moves:
            c.check(m.input_changed(*lane.apply(data.draw(st.sampled_from(moves))), c.now))
        elif kind == "photocell":
            c.check(m.input_changed(Input.PHOTOCELL, not m.is_active(Input.PHOTOCELL), c.now))
        else:
            c.wait(data.draw(st.floats(min_value=0.0, max_value=5.0)))
    for change in lane.drive_out():
        c.check(m.input_changed(*change, c.now))
    through = lane.through[direction]
    assert (m.counts.passages, m.counts.tailgates) == (through, max(0, through - 1))


@PROFILE
@given(
    data=st.data(),
    travel=st.floats(min_value=0.2, max_value=4.0),
    motor_output=st.sampled_from(MotorOutput),
    heartbeat=st.none() | st.floats(min_value=1.0, max_value=20.0),
    on_edge_lost=st.sampled_from(EdgeLostPolicy),
)
def test_a_working_barrier_never_faults_counts_every_vehicle_and_comes_to_rest(
    data: st.DataObject,
    travel: float,
    motor_output: MotorOutput,
    heartbeat: float | None,
    on_edge_lost: EdgeLostPolicy,
) -> None:
    """The whole stack (controller, MockFactory pins, simulated arm or barrier controller) in
    virtual time, with working hardware: however commands, button, photocell, emergency, heartbeats
    and vehicles come, no fault, never both relays on, never the close motor over the safety zone,
    one count per vehicle crossing, and once everything is quiet the barrier comes to rest (closed,
    or held by the on_edge_lost rule)."""
    steps: list[dict[str, object]] = []
    t, lane = 0.0, Lane()

    def at(name: str, value: bool | None = None) -> None:
        steps.append({"t": t, "input": name, **({} if value is None else {"value": value})})

    def pause(most: float) -> None:
        nonlocal t
        t += data.draw(st.floats(min_value=0.0, max_value=most))

    for _ in range(data.draw(st.integers(0, 40), label="actions")):
        kind = data.draw(st.sampled_from(["lane"] * 4 + ["open_command", "close_command", "heartbeat", "press",
                                          "photocell", "emergency", "wait"]))  # fmt: skip
        if kind == "lane":
            loop, occupied = lane.apply(data.draw(st.sampled_from(lane.moves())))
            at(loop.value, occupied)
            pause(2.0)
        elif kind in ("open_command", "close_command", "heartbeat"):
            at(kind)
        elif kind in ("press", "photocell", "emergency"):
            name = "button" if kind == "press" else kind
            at(name, True)
            pause(0.2 if kind == "press" else 8.0)
            at(name, False)
        else:
            pause(40.0)
    for loop, occupied in lane.drive_out():
        t += 0.5
        at(loop.value, occupied)
    config = {"travel_s": travel, "close_delay_s": 1.0, "motor_output": motor_output, "pulse_s": 0.1,
              "edge_heartbeat_s": heartbeat, "on_edge_lost": on_edge_lost}  # fmt: skip
    lines = list(run_script(parse_script({"config": config, "steps": steps})))
    for line in lines:
        assert not (line["motor_open"] and line["motor_close"])
        assert not (line["motor_close"] and {"loop_b", "photocell"} & set(line["inputs"])), line
        assert line["state"] != "FAULT" and line["faults"] == 0, line
    final = lines[-1]
    assert (final["count_in"], final["count_out"]) == (lane.through[+1], lane.through[-1])
    assert held_by_rule_or_at_rest(BarrierState(final["state"]), final["auto_close"]), final
    assert not (final["motor_open"] or final["motor_close"] or final["pulse"])
    if heartbeat is None:
        assert (final["state"], final["lamp"], final["light"]) == ("CLOSED", False, "red")


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


def test_gate_devices_drive_the_light_and_buzzer_and_a_pulse_output(mock_factory: MockFactory) -> None:
    red, green, buzzer = (mock_factory.pin(p) for p in ("GPIO20", "GPIO21", "GPIO16"))
    with GateDevices(CFG) as devices:
        devices.drive(motor_open=True, motor_close=False, lamp=True, light=Light.RED, buzzer=True)
        assert (red.state, green.state, buzzer.state, mock_factory.pin("GPIO17").state) == (
            True,
            False,
            True,
            True,
        )
        devices.drive(motor_open=False, motor_close=False, lamp=False, light=Light.GREEN)
        assert (red.state, green.state, buzzer.state) == (False, True, False)
        assert devices.pulse is None and devices.motor is not None
    assert not (red.state or green.state)
    with GateDevices(PULSED) as devices:
        assert devices.motor is None and devices.pulse is not None
        devices.drive(motor_open=True, motor_close=False, lamp=True, pulse=True)
        assert mock_factory.pin("GPIO12").state
        with DigitalOutputDevice("GPIO17"), DigitalOutputDevice("GPIO27"):  # the relay pins are free
            pass


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
    assert events == [BarrierEvent.ENTRY, BarrierEvent.EXIT]


def test_photocell_while_closing_reverses_in_real_time(
    mock_factory: MockFactory, rig: Callable[..., tuple[GateController, SimulatedBarrier]]
) -> None:
    config = GateConfig(travel_s=0.2, close_delay_s=0.05, open_timeout_s=0.05, **FULL)
    gate, barrier = rig(config)
    up, down = mock_factory.pin("GPIO17"), mock_factory.pin("GPIO27")
    gate.open()
    # Nobody came: the open timeout closes it; wait until the arm has left the open limit switch.
    wait_until(lambda: gate.state is S.CLOSING and Input.LIMIT_OPEN not in gate.snapshot().inputs)
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


def test_pulse_output_in_real_time(
    mock_factory: MockFactory, rig: Callable[..., tuple[GateController, SimulatedBarrier]]
) -> None:
    config = GateConfig(**{**FAST.model_dump(), "motor_output": "pulse", "pulse_s": 0.02})
    gate, barrier = rig(config)
    pulse = mock_factory.pin("GPIO12")
    gate.open()
    wait_until(lambda: gate.state is S.OPEN)
    gate.close_barrier()
    wait_until(lambda: gate.state is S.CLOSED)
    assert [s.state for s in pulse.states] == [False, True, False, True, False]
    assert barrier.pulses == 2 and barrier.position == 0.0
    assert not (mock_factory.pin("GPIO17").state or mock_factory.pin("GPIO27").state)  # not claimed


def test_heartbeat_lost_in_real_time_opens_and_holds_until_it_is_back(
    rig: Callable[..., tuple[GateController, SimulatedBarrier]],
) -> None:
    config = GateConfig(**{**FAST.model_dump(), "edge_heartbeat_s": 0.05, "on_edge_lost": "open_hold"})
    recorder = Recorder()
    gate, _ = rig(config, on_change=recorder)
    wait_until(lambda: gate.state is S.OPEN)  # nobody sent a heartbeat
    assert gate.alarms == {Alarm.EDGE_LOST} and not gate.snapshot().auto_close
    gate.heartbeat()
    assert BarrierEvent.CLEARED_EDGE_LOST in [snap.event for _, snap in recorder.snapshots]
    gate.close()
    with pytest.raises(RuntimeError, match="closed"):
        gate.heartbeat()


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
