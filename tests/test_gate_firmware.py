"""gate_firmware: the pure barrier machine, its gpiozero devices and the real-time controller."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPin
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gate_firmware import (
    BarrierEvent,
    BarrierMachine,
    BarrierMotor,
    BarrierState,
    GateConfig,
    GateController,
    Snapshot,
    Step,
    Trigger,
    VehicleLoop,
)

S = BarrierState
CFG = GateConfig(travel_s=2.0, close_delay_s=1.0, open_timeout_s=30.0)
TRAVEL, DELAY, TIMEOUT = CFG.travel_s, CFG.close_delay_s, CFG.open_timeout_s


# -- helpers ----------------------------------------------------------------------------------------


def machine_in(state: BarrierState, *, config: GateConfig = CFG) -> tuple[BarrierMachine, float]:
    """A machine brought to ``state`` through its public inputs (loop clear), and the time now."""
    m = BarrierMachine(config)
    now = 100.0
    if state is S.CLOSED:
        return m, now
    m.open_command(now)
    if state is S.OPENING:
        return m, now
    now += config.travel_s
    m.tick(now)
    if state is S.OPEN:
        return m, now
    now += config.open_timeout_s
    m.tick(now)
    assert m.state is S.CLOSING
    return m, now


def last(steps: list[Step]) -> Step:
    assert steps, "expected the machine to act"
    return steps[-1]


def assert_outputs_consistent(step: Step) -> None:
    assert not (step.motor_open and step.motor_close)
    assert not (step.motor_close and step.vehicle_present)
    assert step.motor_open == (step.state is S.OPENING)
    assert step.motor_close == (step.state is S.CLOSING)


# -- config -----------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    c = GateConfig()
    assert (c.open_pin, c.close_pin, c.loop_pin) == ("GPIO17", "GPIO27", "GPIO22")
    assert (c.travel_s, c.close_delay_s, c.open_timeout_s, c.loop_bounce_s) == (2.0, 1.0, 30.0, 0.02)
    assert all(f.description for f in GateConfig.model_fields.values())


@pytest.mark.parametrize(
    "pins",
    [
        {"open_pin": "GPIO27"},
        {"open_pin": 27},
        {"loop_pin": "BCM17"},
        {"close_pin": "gpio22"},
        {"loop_pin": "17"},
    ],
)
def test_config_rejects_shared_pins(pins: dict[str, str | int]) -> None:
    with pytest.raises(ValidationError, match="same pin"):
        GateConfig.model_validate(pins)


@pytest.mark.parametrize(
    "bad",
    [
        {"travel_s": 0},
        {"close_delay_s": -0.1},
        {"open_timeout_s": 0},
        {"loop_bounce_s": -1},
        {"open_pin": -1},
        {"open_pin": ""},
        {"speed": 3},
    ],
)
def test_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GateConfig.model_validate(bad)


def test_config_accepts_numbers_and_no_debounce() -> None:
    c = GateConfig(open_pin=5, close_pin=6, loop_pin=13, loop_bounce_s=None, close_delay_s=0)
    assert (c.open_pin, c.loop_bounce_s, c.close_delay_s) == (5, None, 0)


# -- the pure machine ---------------------------------------------------------------------------------


def test_machine_starts_closed_and_idle() -> None:
    m = BarrierMachine(CFG)
    assert (m.state, m.motor_open, m.motor_close, m.vehicle_present) == (S.CLOSED, False, False, False)
    assert m.next_deadline is None
    assert m.tick(1e9) == []
    assert m.counts.passages == 0


def test_open_command_raises_the_arm_for_travel_s() -> None:
    m = BarrierMachine(CFG)
    step = last(m.open_command(10.0))
    assert (step.state, step.motor_open, step.motor_close) == (S.OPENING, True, False)
    assert (step.trigger, step.at, step.event) == (Trigger.OPEN_COMMAND, 10.0, None)
    assert m.next_deadline == 10.0 + TRAVEL
    assert m.tick(10.0 + TRAVEL - 0.001) == []
    step = last(m.tick(10.0 + TRAVEL))
    assert (step.state, step.motor_open, step.motor_close) == (S.OPEN, False, False)
    assert step.trigger is Trigger.TRAVEL_DONE


def test_passage_then_close_after_close_delay_then_closed_after_travel() -> None:
    m, now = machine_in(S.OPEN)
    assert last(m.loop_changed(True, now + 1)).event is None
    step = last(m.loop_changed(False, now + 3))
    assert (step.state, step.event, step.counts.passages) == (S.OPEN, BarrierEvent.PASSAGE, 1)
    assert m.next_deadline == now + 3 + DELAY
    assert m.tick(now + 3 + DELAY - 0.001) == []
    step = last(m.tick(now + 3 + DELAY))
    assert (step.state, step.motor_close, step.trigger) == (S.CLOSING, True, Trigger.CLOSE_DELAY)
    step = last(m.tick(now + 3 + DELAY + TRAVEL))
    assert (step.state, step.motor_open, step.motor_close) == (S.CLOSED, False, False)
    assert m.next_deadline is None
    assert m.counts.passages == 1


def test_open_timeout_closes_when_no_vehicle_came() -> None:
    m, now = machine_in(S.OPEN)
    assert m.tick(now + TIMEOUT - 0.001) == []
    step = last(m.tick(now + TIMEOUT))
    assert (step.state, step.trigger) == (S.CLOSING, Trigger.OPEN_TIMEOUT)
    assert m.counts.passages == 0


@pytest.mark.parametrize(
    "arrive_after",
    [0.5, TIMEOUT - 0.001],
    ids=["early", "just-before-timeout"],
)
def test_never_closes_while_the_loop_is_occupied(arrive_after: float) -> None:
    m, now = machine_in(S.OPEN)
    m.loop_changed(True, now + arrive_after)
    steps = m.tick(now + 10 * TIMEOUT)  # the open timeout fires, the interlock postpones closing
    assert [s.state for s in steps] == [S.OPEN]
    assert not any(s.motor_close for s in steps)
    assert m.next_deadline is None  # postponed until the loop clears
    assert m.tick(now + 1000 * TIMEOUT) == []
    step = last(m.loop_changed(False, now + 11 * TIMEOUT))
    assert step.event is BarrierEvent.PASSAGE
    assert m.next_deadline == now + 11 * TIMEOUT + DELAY


def test_second_vehicle_during_close_delay_postpones_closing() -> None:
    m, now = machine_in(S.OPEN)
    m.loop_changed(True, now + 1)
    m.loop_changed(False, now + 2)
    m.loop_changed(True, now + 2 + DELAY / 2)  # the next car, before the close delay ran out
    step = last(m.tick(now + 2 + DELAY))
    assert (step.state, step.motor_close, step.trigger) == (S.OPEN, False, Trigger.CLOSE_DELAY)
    m.loop_changed(False, now + 50)
    assert m.counts.passages == 2
    assert last(m.tick(now + 50 + DELAY)).state is S.CLOSING


def test_vehicle_waiting_on_the_loop_before_opening_is_a_passage_when_it_leaves() -> None:
    m = BarrierMachine(CFG, vehicle_present=True)
    m.open_command(0.0)
    assert last(m.tick(TRAVEL)).state is S.OPEN
    assert m.next_deadline is None  # occupied: no close timer at all
    assert last(m.loop_changed(False, 5.0)).event is BarrierEvent.PASSAGE
    assert m.next_deadline == 5.0 + DELAY


def test_vehicle_arriving_while_closing_reverses_at_once() -> None:
    m, now = machine_in(S.CLOSING)
    step = last(m.loop_changed(True, now + 0.5))
    assert (step.state, step.motor_open, step.motor_close) == (S.OPENING, True, False)
    assert (step.event, step.counts.reversals) == (BarrierEvent.REVERSAL, 1)
    assert m.next_deadline == now + 0.5 + TRAVEL
    # It leaves while the arm goes back up: one passage, then the usual close delay once open.
    assert last(m.loop_changed(False, now + 1)).event is BarrierEvent.PASSAGE
    assert last(m.tick(now + 0.5 + TRAVEL)).state is S.OPEN
    assert m.next_deadline == now + 0.5 + TRAVEL + DELAY
    assert m.counts.passages == 1


def test_open_command_while_open_rearms_the_open_timeout() -> None:
    m, now = machine_in(S.OPEN)
    step = last(m.open_command(now + 20))
    assert (step.state, step.trigger) == (S.OPEN, Trigger.OPEN_COMMAND)
    assert m.next_deadline == now + 20 + TIMEOUT
    assert m.tick(now + TIMEOUT) == []  # the first timeout no longer fires
    assert last(m.tick(now + 20 + TIMEOUT)).state is S.CLOSING


def test_open_command_after_a_passage_waits_for_the_next_vehicle() -> None:
    m, now = machine_in(S.OPEN)
    m.loop_changed(True, now + 1)
    m.loop_changed(False, now + 2)
    assert m.next_deadline == now + 2 + DELAY
    m.open_command(now + 2.5)  # the next vehicle was let in
    assert m.next_deadline == now + 2.5 + TIMEOUT


def test_open_command_while_closing_reverses_without_counting_a_reversal() -> None:
    m, now = machine_in(S.CLOSING)
    step = last(m.open_command(now + 1))
    assert (step.state, step.motor_open, step.motor_close, step.event) == (S.OPENING, True, False, None)
    assert m.counts.reversals == 0
    assert m.next_deadline == now + 1 + TRAVEL


def test_open_command_while_opening_is_ignored() -> None:
    m, now = machine_in(S.OPENING)
    deadline = m.next_deadline
    assert m.open_command(now + 1) == []
    assert (m.state, m.next_deadline) == (S.OPENING, deadline)


@pytest.mark.parametrize(
    ("start", "trigger", "expected"),
    [
        (S.CLOSED, "open", S.OPENING),
        (S.CLOSED, "arrive", S.CLOSED),
        (S.OPENING, "open", S.OPENING),
        (S.OPENING, "arrive", S.OPENING),
        (S.OPEN, "open", S.OPEN),
        (S.OPEN, "arrive", S.OPEN),
        (S.CLOSING, "open", S.OPENING),
        (S.CLOSING, "arrive", S.OPENING),
    ],
)
def test_transition_table(start: BarrierState, trigger: str, expected: BarrierState) -> None:
    m, now = machine_in(start)
    steps = m.open_command(now + 0.1) if trigger == "open" else m.loop_changed(True, now + 0.1)
    assert m.state is expected
    for step in steps:
        assert_outputs_consistent(step)


@pytest.mark.parametrize("state", list(S))
def test_motors_follow_the_state_and_are_never_both_on(state: BarrierState) -> None:
    m, _ = machine_in(state)
    assert (m.motor_open, m.motor_close) == (state is S.OPENING, state is S.CLOSING)


def test_repeated_loop_level_is_ignored() -> None:
    m, now = machine_in(S.OPEN)
    assert m.loop_changed(False, now) == []
    assert len(m.loop_changed(True, now + 1)) == 1
    assert m.loop_changed(True, now + 2) == []


def test_loop_while_closed_changes_presence_only() -> None:
    m = BarrierMachine(CFG)
    step = last(m.loop_changed(True, 1.0))
    assert (step.state, step.vehicle_present, step.trigger, step.event) == (
        S.CLOSED,
        True,
        Trigger.VEHICLE_ARRIVED,
        None,
    )
    assert last(m.loop_changed(False, 2.0)).event is None  # backing away from a closed gate
    assert m.counts.passages == 0
    assert m.next_deadline is None


def test_passage_while_opening_counts_once_and_uses_the_close_delay() -> None:
    m, now = machine_in(S.OPENING)
    m.loop_changed(True, now + 0.5)
    step = last(m.loop_changed(False, now + 1.0))
    assert (step.state, step.event) == (S.OPENING, BarrierEvent.PASSAGE)
    assert m.next_deadline == now + TRAVEL  # the arm still finishes its travel
    m.tick(now + TRAVEL)
    assert m.next_deadline == now + TRAVEL + DELAY
    assert m.counts.passages == 1


def test_late_tick_fires_each_due_timer_at_its_own_time() -> None:
    m = BarrierMachine(CFG)
    m.open_command(0.0)
    steps = m.tick(1000.0)
    assert [(s.state, s.at) for s in steps] == [
        (S.OPEN, TRAVEL),
        (S.CLOSING, TRAVEL + TIMEOUT),
        (S.CLOSED, TRAVEL + TIMEOUT + TRAVEL),
    ]


def test_inputs_fire_due_timers_first() -> None:
    m, now = machine_in(S.CLOSING)
    steps = m.loop_changed(True, now + TRAVEL + 0.5)  # nobody ticked when the arm got down
    assert [(s.state, s.trigger) for s in steps] == [
        (S.CLOSED, Trigger.TRAVEL_DONE),
        (S.CLOSED, Trigger.VEHICLE_ARRIVED),
    ]
    assert m.counts.reversals == 0


def test_zero_close_delay_closes_as_soon_as_the_loop_clears() -> None:
    m, now = machine_in(S.OPEN, config=GateConfig(close_delay_s=0))
    m.loop_changed(True, now + 1)
    steps = m.loop_changed(False, now + 2)
    assert last(steps).event is BarrierEvent.PASSAGE
    assert last(m.tick(now + 2)).state is S.CLOSING


# -- property test ------------------------------------------------------------------------------------

_actions = st.one_of(
    st.just(("open", 0.0)),
    st.booleans().map(lambda present: ("loop", float(present))),
    st.floats(min_value=0.0, max_value=40.0).map(lambda dt: ("wait", dt)),
)
_configs = st.builds(
    GateConfig,
    travel_s=st.floats(min_value=0.01, max_value=5.0),
    close_delay_s=st.floats(min_value=0.0, max_value=5.0),
    open_timeout_s=st.floats(min_value=0.01, max_value=60.0),
)


@settings(max_examples=300, deadline=None, database=None)
@given(config=_configs, actions=st.lists(_actions, max_size=40))
def test_machine_invariants_hold_for_any_input_sequence(
    config: GateConfig, actions: list[tuple[str, float]]
) -> None:
    m = BarrierMachine(config)
    now = 0.0
    last_at = now
    leaves = 0

    def check(steps: list[Step]) -> None:
        nonlocal last_at
        for step in steps:
            assert_outputs_consistent(step)
            assert step.at >= last_at
            last_at = step.at
        assert not (m.motor_open and m.motor_close)
        assert not (m.state is S.CLOSING and m.vehicle_present)

    for kind, value in actions:
        if kind == "open":
            check(m.open_command(now))
        elif kind == "loop":
            leaves += m.vehicle_present and not value
            check(m.loop_changed(bool(value), now))
        else:
            now += value
            check(m.tick(now))
            assert m.next_deadline is None or m.next_deadline > now  # nothing due is left unfired
        assert m.counts.passages <= leaves

    # No state is a trap: once the loop is clear, the gate ends up closed and idle.
    check(m.loop_changed(False, now))
    now += 2 * config.travel_s + max(config.close_delay_s, config.open_timeout_s) + 1.0
    check(m.tick(now))
    assert (m.state, m.next_deadline, m.motor_open, m.motor_close) == (S.CLOSED, None, False, False)


# -- gpiozero devices -----------------------------------------------------------------------------------


@pytest.fixture
def mock_factory() -> Iterator[MockFactory]:
    saved = Device.pin_factory
    Device.pin_factory = MockFactory()
    try:
        yield Device.pin_factory
    finally:
        Device.pin_factory.reset()
        Device.pin_factory.close()
        Device.pin_factory = saved


def test_vehicle_loop_aliases(mock_factory: MockFactory) -> None:
    events: list[str] = []
    with VehicleLoop("GPIO22", bounce_time=0.01) as loop:
        assert loop.pull_up is False
        loop.when_vehicle_arrives = lambda: events.append("arrive")
        loop.when_vehicle_leaves = lambda: events.append("leave")
        pin = mock_factory.pin("GPIO22")
        assert loop.is_vehicle_present is False
        pin.drive_high()
        assert loop.is_vehicle_present is True
        pin.drive_low()
    assert events == ["arrive", "leave"]


def test_barrier_motor_interlock(mock_factory: MockFactory) -> None:
    up, down = mock_factory.pin("GPIO17"), mock_factory.pin("GPIO27")
    with BarrierMotor("GPIO17", "GPIO27") as motor:
        assert (up.state, down.state) == (False, False)
        motor.drive(motor_open=True, motor_close=False)
        with pytest.raises(ValueError, match="both ways"):
            motor.drive(motor_open=True, motor_close=True)
        assert (motor.is_opening, motor.is_closing) == (True, False)
        motor.drive(motor_open=False, motor_close=True)
        assert (up.state, down.state) == (False, True)
    assert (up.state, down.state) == (False, False)
    assert motor.closed


# -- the controller -------------------------------------------------------------------------------------


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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
def make_controller(mock_factory: MockFactory) -> Iterator[Callable[..., GateController]]:
    made: list[GateController] = []

    def make(config: GateConfig, **kwargs: object) -> GateController:
        controller = GateController(config, **kwargs)  # type: ignore[arg-type]
        made.append(controller)
        return controller

    yield make
    for controller in made:
        controller.close()


FAST = GateConfig(travel_s=0.1, close_delay_s=0.1, open_timeout_s=5.0)


def test_open_pulses_the_open_relay_for_travel_s(
    mock_factory: MockFactory, make_controller: Callable[..., GateController]
) -> None:
    gate = make_controller(FAST)
    up, down = mock_factory.pin("GPIO17"), mock_factory.pin("GPIO27")
    up.clear_states()
    gate.open("test")
    assert gate.state is S.OPENING and up.state
    wait_until(lambda: gate.state is S.OPEN)
    assert [s.state for s in up.states] == [False, True, False]
    up.assert_states_and_times([(0.0, False), (0.0, True), (FAST.travel_s, False)])
    assert up.states[2].timestamp >= FAST.travel_s - 0.005  # never shorter than the travel time
    assert [s.state for s in down.states] == [False]


def test_vehicle_passage_closes_after_close_delay_and_counts_once(
    mock_factory: MockFactory, make_controller: Callable[..., GateController]
) -> None:
    recorder = Recorder()
    gate = make_controller(FAST, on_change=recorder)
    loop, down = mock_factory.pin("GPIO22"), mock_factory.pin("GPIO27")
    gate.open()
    wait_until(lambda: gate.state is S.OPEN)
    loop.drive_high()
    assert gate.is_vehicle_present
    left_at = time.monotonic()
    loop.drive_low()
    assert not gate.is_vehicle_present
    assert gate.counts.passages == 1
    wait_until(lambda: gate.state is S.CLOSED)
    assert recorder.first_time_in(S.CLOSING) >= left_at + FAST.close_delay_s
    assert recorder.states == [S.OPENING, S.OPEN, S.OPEN, S.OPEN, S.CLOSING, S.CLOSED]
    assert [s.state for s in down.states] == [False, True, False]
    assert gate.counts.passages == 1
    snap = gate.snapshot()
    assert (snap.state, snap.motor_open, snap.motor_close, snap.counts.passages) == (
        S.CLOSED,
        False,
        False,
        1,
    )


PIN_CHANGES: list[tuple[str, bool]] = []


class LoggingPin(MockPin):
    """A mock pin that logs every change of level, in order, to PIN_CHANGES."""

    def _change_state(self, value: bool) -> bool:
        changed: bool = super()._change_state(value)
        if changed:
            PIN_CHANGES.append((self.info.name, value))
        return changed


def relays_ever_both_on(changes: list[tuple[str, bool]]) -> bool:
    level = {"GPIO17": False, "GPIO27": False}
    for name, value in changes:
        level[name] = value
        if level["GPIO17"] and level["GPIO27"]:
            return True
    return False


def test_vehicle_arriving_while_closing_reverses_in_real_time(
    mock_factory: MockFactory, make_controller: Callable[..., GateController]
) -> None:
    mock_factory.pin_class = LoggingPin
    PIN_CHANGES.clear()
    config = GateConfig(travel_s=0.2, close_delay_s=0.05, open_timeout_s=0.05)
    gate = make_controller(config)
    loop, up, down = (mock_factory.pin(p) for p in ("GPIO22", "GPIO17", "GPIO27"))
    gate.open()
    wait_until(lambda: gate.state is S.CLOSING)  # nobody came: the open timeout closes it
    assert down.state
    loop.drive_high()
    assert gate.state is S.OPENING
    assert (up.state, down.state) == (True, False)
    assert gate.counts.reversals == 1
    loop.drive_low()
    wait_until(lambda: gate.state is S.CLOSED)
    assert gate.counts.passages == 1
    assert [s.state for s in up.states] == [False, True, False, True, False]
    assert [s.state for s in down.states] == [False, True, False, True, False]
    assert ("GPIO17", True) in PIN_CHANGES and ("GPIO27", True) in PIN_CHANGES
    assert not relays_ever_both_on(PIN_CHANGES)


def test_reversal_with_a_manual_clock(
    mock_factory: MockFactory, make_controller: Callable[..., GateController]
) -> None:
    clock = ManualClock()
    recorder = Recorder()
    gate = make_controller(CFG, clock=clock, on_change=recorder)
    loop, up, down = (mock_factory.pin(p) for p in ("GPIO22", "GPIO17", "GPIO27"))
    gate.open()
    clock.advance(TRAVEL)
    gate.tick()
    assert gate.state is S.OPEN and not up.state
    loop.drive_high()
    loop.drive_low()
    clock.advance(DELAY)
    gate.tick()
    assert gate.state is S.CLOSING and down.state
    clock.advance(TRAVEL / 2)
    loop.drive_high()  # a second car, under the lowering arm
    assert gate.state is S.OPENING
    assert (up.state, down.state) == (True, False)
    clock.advance(TRAVEL)
    gate.tick()
    assert gate.state is S.OPEN
    clock.advance(10 * TIMEOUT)
    gate.tick()
    assert gate.state is S.OPEN and not down.state  # it is still there
    loop.drive_low()
    clock.advance(DELAY)
    gate.tick()
    clock.advance(TRAVEL)
    gate.tick()
    assert gate.state is S.CLOSED
    assert (gate.counts.passages, gate.counts.reversals) == (2, 1)
    assert all(not (snap.motor_open and snap.motor_close) for _, snap in recorder.snapshots)
    assert [snap.at for _, snap in recorder.snapshots][:2] == [1000.0, 1000.0 + TRAVEL]


def test_close_stops_the_motor_thread_and_pins(
    mock_factory: MockFactory, make_controller: Callable[..., GateController]
) -> None:
    gate = make_controller(CFG)
    up = mock_factory.pin("GPIO17")
    gate.open()
    assert up.state
    thread = gate._thread
    gate.close()
    assert not up.state
    assert not thread.is_alive()
    assert gate.closed
    gate.close()  # again: no-op
    with pytest.raises(RuntimeError, match="closed"):
        gate.open()
    with GateController(CFG) as again:  # the pins were released
        again.open()
        assert up.state
    assert not up.state


def test_pin_factory_is_passed_to_every_device(mock_factory: MockFactory) -> None:
    other = MockFactory()
    try:
        with GateController(CFG, pin_factory=other) as gate:
            gate.open()
            assert other.pin("GPIO17").state
            other.pin("GPIO22").drive_high()
            assert gate.is_vehicle_present
        assert not mock_factory.pins  # the default factory was never used
    finally:
        other.reset()
        other.close()


def test_on_change_failure_is_logged_and_control_goes_on(
    make_controller: Callable[..., GateController], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(snap: Snapshot) -> None:
        raise RuntimeError("dashboard down")

    clock = ManualClock()
    gate = make_controller(CFG, clock=clock, on_change=broken)
    with caplog.at_level(logging.ERROR, logger="gate_firmware.controller"):
        gate.open()
        clock.advance(TRAVEL)
        gate.tick()
    assert gate.state is S.OPEN
    assert "on_change callback failed" in caplog.text


def test_open_is_thread_safe(make_controller: Callable[..., GateController]) -> None:
    recorder = Recorder()
    gate = make_controller(CFG, on_change=recorder)
    threads = [threading.Thread(target=gate.open, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert gate.state is S.OPENING
    assert recorder.states == [S.OPENING]  # the others were ignored while opening


def test_timer_thread_failure_stops_the_motor_and_closes(
    mock_factory: MockFactory,
    make_controller: Callable[..., GateController],
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = threading.Event()

    def clock() -> float:
        if broken.is_set():
            raise OSError("clock gone")
        return time.monotonic()

    gate = make_controller(GateConfig(travel_s=0.05), clock=clock)
    gate.open()
    assert mock_factory.pin("GPIO17").state
    broken.set()
    wait_until(lambda: gate.closed)
    assert not mock_factory.pin("GPIO17").state
    with pytest.raises(RuntimeError, match="closed"):
        gate.open()
    assert "timer thread failed" in caplog.text
