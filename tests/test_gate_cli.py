"""``parkgate gate``: simulate scripts, commissioning pulses, and the controller over a Unix socket."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from gate_firmware import Alarm, BarrierState, GateConfig, GateController, Input, MotorOutput, Snapshot
from gate_firmware.commissioning import dry_run, outputs_to_pulse, run_test_pulse
from gate_firmware.config import SUGGESTED_PINS
from gate_firmware.remote import GateClient, GateCommandError, GateServer
from gate_firmware.script import ScriptError, parse_script, run_script
from gate_firmware.simulator import SimulatedBarrier

CONTRACT = {"t", "state", "motor_open", "motor_close", "count_in", "count_out", "event"}
STATES = {"CLOSED", "OPENING", "OPEN", "CLOSING", "STOPPED", "FAULT", "EMERGENCY_OPEN"}
ENV = dict(os.environ, PARKGATE_LOG_LEVEL="WARNING")


def parkgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parkgate", *args], capture_output=True, text=True, timeout=60, env=env or ENV
    )


def simulate(steps: list[dict[str, Any]], **script: Any) -> list[dict[str, Any]]:
    return list(run_script(parse_script({"steps": steps, **script})))


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


# -- gate scripts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"t": 0, "input": "loop_a"}], "step 0: loop_a needs a value"),
        ([{"t": 0, "input": "open_command", "value": True}], "step 0: open_command is a command and takes no value"),
        ([{"t": 0, "input": "loop_c", "value": True}], 'step 0: unknown input "loop_c"'),
        ([{"t": 1, "input": "button", "value": True}, {"t": 0.5, "input": "open_command"}],
         "step 1: t=0.5 is before the step ahead of it"),
        ([{"t": 0, "input": "loop_a", "value": "yes"}], 'step 0: loop_a needs a value of true .* \\(got "yes"\\)'),
        ([{"input": "open_command"}], "step 0: t is missing"),
        ([{"t": -1, "input": "open_command"}], "step 0: t must be a number of seconds >= 0"),
        ([{"t": 0}], "step 0: input is missing"),
        ([{"t": 0, "input": "open_command", "speed": 2}], "step 0: unknown key 'speed'"),
        ([{"t": 0, "input": "open_command"}, ["loop_a", True]], "step 1: must be an object"),
    ],
)  # fmt: skip
def test_script_errors_name_the_step(steps: list[Any], message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        parse_script({"steps": steps})


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ([], "must be a JSON object"),
        ({}, "steps: must be a list"),
        ({"steps": [], "config": {"travel_s": 0}}, "config.travel_s: Input should be greater than 0"),
        ({"steps": [], "barrier": {"start": "up"}}, "barrier.start: must be one of closed, open, between"),
        ({"steps": [], "until": "later"}, "until: must be a number"),
        ({"steps": [{"t": 0, "input": "photocell", "value": True}], "config": {"photocell_pin": None}},
         "step 0: photocell is not fitted"),
    ],
)  # fmt: skip
def test_script_errors_outside_the_steps(script: Any, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        parse_script(script)


def test_script_entry_counts_in_and_closes() -> None:
    lines = simulate(
        [
            {"t": 0.0, "input": "loop_a", "value": True},
            {"t": 0.5, "input": "open_command"},
            {"t": 3.0, "input": "loop_b", "value": True},
            {"t": 3.5, "input": "loop_a", "value": False},
            {"t": 4.0, "input": "loop_b", "value": False},
        ],
        config={"travel_s": 2.0, "close_delay_s": 1.0},
    )
    assert all(set(line) >= CONTRACT for line in lines)
    assert [(line["t"], line["state"], line["event"]) for line in lines] == [
        (0.0, "CLOSED", None),
        (0.5, "OPENING", None),
        (2.5, "OPEN", None),
        (4.0, "OPEN", "entry"),
        (5.0, "CLOSING", None),
        (7.0, "CLOSED", None),
    ]
    assert (lines[-1]["count_in"], lines[-1]["count_out"]) == (1, 0)
    assert [line["motor_open"] for line in lines] == [False, True, False, False, False, False]


def test_script_photocell_reverses_and_a_stuck_arm_faults() -> None:
    steps = [
        {"t": 0, "input": "open_command"},
        {"t": 3, "input": "close_command"},
        {"t": 4, "input": "photocell", "value": True},
    ]
    lines = simulate(steps, config={"travel_s": 2.0}, until=5.0)
    assert [(line["t"], line["state"], line["event"]) for line in lines][-3:] == [
        (3.0, "CLOSING", None),
        (4.0, "OPENING", "reversal"),
        (5.0, "OPEN", None),  # it had come down halfway: one second back up
    ]
    stuck = simulate([{"t": 0, "input": "open_command"}], config={"travel_s": 1.0}, barrier={"stuck": True})
    assert (stuck[-1]["t"], stuck[-1]["state"], stuck[-1]["fault"], stuck[-1]["event"]) == (
        3.0, "FAULT", "travel_timeout", "fault:travel_timeout",
    )  # fmt: skip


def test_script_emergency_until_and_start_position() -> None:
    lines = simulate([{"t": 1, "input": "emergency", "value": True}], barrier={"start": "between"}, until=100)
    assert [(line["t"], line["state"], line["motor_open"]) for line in lines] == [
        (0.0, "STOPPED", False),
        (1.0, "EMERGENCY_OPEN", True),
        (2.0, "EMERGENCY_OPEN", False),  # halfway up to start with: one second to the open limit switch
    ]


def test_simulate_command_prints_json_lines(tmp_path: Path) -> None:
    script = tmp_path / "entry.json"
    script.write_text(json.dumps({"steps": [{"t": 0, "input": "open_command"}], "config": {"travel_s": 1.0}}))
    done = parkgate("gate", "simulate", "--script", str(script))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["state"] for line in lines] == ["CLOSED", "OPENING", "OPEN", "CLOSING", "CLOSED"]
    assert lines[3]["t"] == 31.0  # the open timeout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"steps": [{"t": 0, "input": "loop_a"}, {"t": 1, "input": "open_command", "value": 1}]}',
         "2 error(s) in script\n  step 0: loop_a needs a value"),
        ("{not json", "not a JSON script"),
    ],
)  # fmt: skip
def test_simulate_command_refuses_a_bad_script(tmp_path: Path, content: str, message: str) -> None:
    script = tmp_path / "bad.json"
    script.write_text(content)
    done = parkgate("gate", "simulate", "--script", str(script))
    assert (done.returncode, done.stdout) == (2, "")
    assert message in done.stderr


def check_contract(lines: list[dict[str, Any]]) -> None:
    """The outside contract of ``gate simulate``: these fields, these types, these names."""
    for line in lines:
        assert set(line) >= CONTRACT
        assert isinstance(line["t"], float) and line["state"] in STATES
        assert isinstance(line["motor_open"], bool) and isinstance(line["motor_close"], bool)
        assert isinstance(line["count_in"], int) and isinstance(line["count_out"], int)
        event = line["event"]
        assert (
            event is None
            or event in ("entry", "exit", "tailgate", "reversal")
            or (event.split(":")[0] in ("fault", "cleared") and len(event.split(":")) == 2)
        ), event
    assert [line["t"] for line in lines] == sorted(line["t"] for line in lines)


def test_script_tailgate_is_counted_and_reported() -> None:
    lines = simulate(
        [
            {"t": 0.0, "input": "loop_a", "value": True},
            {"t": 0.5, "input": "open_command"},
            {"t": 3.0, "input": "loop_b", "value": True},
            {"t": 3.5, "input": "loop_a", "value": False},
            {"t": 3.6, "input": "loop_a", "value": True},  # the next car, close behind
            {"t": 4.0, "input": "loop_b", "value": False},
            {"t": 4.5, "input": "loop_b", "value": True},
            {"t": 5.0, "input": "loop_a", "value": False},
            {"t": 5.5, "input": "loop_b", "value": False},
        ],
        config={"travel_s": 2.0, "close_delay_s": 1.0},
    )
    check_contract(lines)
    assert [
        (line["t"], line["event"], line["count_in"], line["light"]) for line in lines if line["event"]
    ] == [
        (4.0, "entry", 1, "red"),
        (5.5, "tailgate", 2, "red"),
    ]
    assert (lines[-1]["state"], lines[-1]["count_in"], lines[-1]["tailgates"]) == ("CLOSED", 2, 1)


def test_script_open_command_while_lowering_raises_at_once() -> None:
    lines = simulate(
        [
            {"t": 0, "input": "open_command"},
            {"t": 3, "input": "close_command"},
            {"t": 3.5, "input": "open_command"},
        ],
        config={"travel_s": 2.0},
        until=10,
    )
    check_contract(lines)
    assert [(line["t"], line["state"], line["motor_open"], line["motor_close"]) for line in lines][3:6] == [
        (3.0, "CLOSING", False, True),
        (3.5, "OPENING", True, False),
        (4.0, "OPEN", False, False),
    ]


def test_script_safety_sensor_stuck_disables_auto_close_until_a_close_command() -> None:
    lines = simulate(
        [
            {"t": 0, "input": "open_command"},
            {"t": 3, "input": "photocell", "value": True},
            {"t": 20, "input": "photocell", "value": False},
            {"t": 100, "input": "close_command"},
        ],
        config={"travel_s": 2.0, "safety_stuck_s": 10.0},
    )
    check_contract(lines)
    changes = [(line["t"], line["state"], line["event"], line["auto_close"]) for line in lines[3:]]
    assert changes == [
        (13.0, "OPEN", "fault:safety_stuck", False),
        (100.0, "CLOSING", "cleared:safety_stuck", True),  # not before: held open meanwhile
        (102.0, "CLOSED", None, True),
    ]


@pytest.mark.parametrize(
    ("policy", "final"),
    [("stay", ("OPEN", False)), ("open_hold", ("OPEN", False)), ("close_when_clear", ("CLOSED", True))],
)
def test_script_edge_heartbeat_lost(policy: str, final: tuple[str, bool]) -> None:
    beats = [{"t": float(t), "input": "heartbeat"} for t in range(0, 20, 2)]
    lines = simulate(
        [{"t": 0, "input": "open_command"}, *beats[:2], {"t": 2.5, "input": "loop_b", "value": True}, *beats[2:],
         {"t": 30, "input": "loop_b", "value": False}],
        config={"travel_s": 2.0, "edge_heartbeat_s": 5.0, "on_edge_lost": policy},
    )  # fmt: skip
    check_contract(lines)
    lost = [line for line in lines if line["event"] == "fault:edge_lost"]
    assert [line["t"] for line in lost] == [23.0] and lost[0]["alarms"] == ["edge_lost"]
    assert (lines[-1]["state"], lines[-1]["auto_close"]) == final
    assert not any(line["motor_close"] and "loop_b" in line["inputs"] for line in lines)


def test_script_pulse_output() -> None:
    lines = simulate(
        [{"t": 0, "input": "open_command"}, {"t": 3, "input": "close_command"}, {"t": 3.5, "input": "loop_b",
         "value": True}, {"t": 4, "input": "loop_b", "value": False}],
        config={"travel_s": 2.0, "motor_output": "pulse", "pulse_s": 0.2},
    )  # fmt: skip
    check_contract(lines)
    edges = [(line["t"], line["pulse"]) for line in lines if line["trigger"] in ("pulse", "open_command",
             "close_command", "zone_occupied")]  # fmt: skip
    assert edges[:8] == [(0.0, True), (0.2, False), (3.0, True), (3.2, False), (3.5, True), (3.7, False),
                         (3.9, True), (4.1, False)]  # fmt: skip
    assert [line["event"] for line in lines if line["event"]] == ["reversal"]
    assert lines[-1]["state"] == "CLOSED" and lines[-1]["faults"] == 0


def write_script(tmp_path: Path, script: Any) -> Path:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script))
    return path


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"t": 0, "input": "open_command"}, {"t": 1, "input": "loop_a", "value": True, "speed": 3}],
         "step 1: unknown key 'speed' (expected t, input, value)"),
        ([{"t": 0, "input": "open_command"}, "loop_a at 1"],
         'step 1: must be an object like {"t": 1.0, "input": "loop_a", "value": true} (got "loop_a at 1")'),
        ([{"input": "open_command"}], "step 0: t is missing (seconds from the start)"),
        ([{"t": 0, "input": "open_command"}, {"t": 1, "input": "door", "value": True}],
         'step 1: unknown input "door" (expected one of open_command, close_command, heartbeat, loop_a, loop_b, '
         "photocell, limit_open, limit_closed, button, emergency)"),
        ([{"t": 0, "input": "open_command"}, {"t": 2, "input": "loop_a", "value": True},
          {"t": 1.5, "input": "loop_b", "value": True}],
         "step 2: t=1.5 is before the step ahead of it (t=2.0): times must not decrease"),
        ([{"t": 0, "input": "heartbeat", "value": True}], "step 0: heartbeat is a command and takes no value"),
    ],
    ids=["unknown-key", "not-an-object", "no-time", "unknown-input", "time-goes-back", "value-on-command"],
)  # fmt: skip
def test_simulate_command_names_the_bad_step(tmp_path: Path, steps: list[Any], message: str) -> None:
    done = parkgate("gate", "simulate", "--script", str(write_script(tmp_path, {"steps": steps})))
    assert (done.returncode, done.stdout) == (2, "")
    assert message in done.stderr, done.stderr
    assert "1 error(s) in script" in done.stderr


# -- commissioning ----------------------------------------------------------------------------------------


def test_test_pulse_dry_run_touches_no_pin(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text('gate_id = "L1-in"\n[gate]\nopen_pin = "GPIO5"\nphotocell_pin = 16\n')
    env = {k: v for k, v in ENV.items() if k != "GPIOZERO_PIN_FACTORY"}  # no GPIO here: a pin touched fails
    done = parkgate("gate", "test-pulse", "--config", str(config), "--dry-run", "--pin", "open", env=env)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(line["dry_run"] for line in lines)
    assert {"dry_run": True, "input": "photocell", "pin": "GPIO16", "normally_closed": True} in lines
    assert lines[-1] == {
        "dry_run": True,
        "output": "open",
        "pin": "GPIO5",
        "seconds": 0.5,
        "active_high": True,
    }


def test_test_pulse_on_mock_pins_and_its_usage_errors(tmp_path: Path) -> None:
    mock = dict(ENV, GPIOZERO_PIN_FACTORY="mock")
    done = parkgate("gate", "test-pulse", "--pin", "GPIO24", "--seconds", "0.05", env=mock)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["output"] == "lamp"
    done = parkgate("gate", "test-pulse", "--pin", "GPIO99", env=mock)
    assert (done.returncode, done.stdout) == (2, "")
    assert (
        "GPIO99 is not a fitted output; expected one of open (GPIO17), close (GPIO27), lamp (GPIO24)"
        in done.stderr
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[gate]\ntravel_s = -1\n")
    done = parkgate("gate", "test-pulse", "--config", str(bad), env=mock)
    assert done.returncode == 78 and "gate.travel_s" in done.stderr


def test_pulses_stop_at_the_limit_switch_and_close_is_refused_over_a_vehicle(
    mock_factory: MockFactory,
) -> None:
    config = GateConfig(travel_s=0.05, **SUGGESTED_PINS)
    lines: list[dict[str, Any]] = []
    with SimulatedBarrier(config, mock_factory) as barrier:
        assert run_test_pulse(config, ["open"], 2.0, lines.append) == 0
        pulse = lines[-1]
        assert (pulse["output"], pulse["limit_reached"], pulse["stopped_by"]) == ("open", True, "limit_open")
        assert "limit_closed" in pulse["inputs_before"] and "limit_open" in pulse["inputs_after"]
        assert barrier.position == 1.0
        barrier.set_input(Input.LOOP_B, True)
        assert run_test_pulse(config, ["close"], 2.0, lines.append) == 1
        assert lines[-1]["refused"] == "loop_b active: the arm must not come down"
        assert barrier.position == 1.0
        assert run_test_pulse(config, ["open"], 0.1, lines.append) == 0
        assert lines[-1]["skipped"] == "limit_open is already active"
    inputs = {line["input"]: line["active"] for line in lines[:7]}
    assert inputs == {"loop_a": False, "loop_b": False, "photocell": False, "limit_open": False,
                      "limit_closed": True, "button": False, "emergency": False}  # fmt: skip


def test_test_pulse_on_the_light_the_buzzer_and_a_pulse_output(mock_factory: MockFactory) -> None:
    config = GateConfig(travel_s=0.05, motor_output=MotorOutput.PULSE, **SUGGESTED_PINS)
    assert outputs_to_pulse(config, None) == ["lamp", "light_red", "light_green", "buzzer", "pulse"]
    lines: list[dict[str, Any]] = []
    with SimulatedBarrier(config, mock_factory) as barrier:
        assert run_test_pulse(config, ["buzzer", "pulse"], 0.02, lines.append) == 0
        assert (lines[-2]["output"], lines[-2]["pin"], lines[-2]["ok"]) == ("buzzer", "GPIO16", True)
        pulse = lines[-1]
        assert (pulse["output"], pulse["pin"], pulse["limit_reached"], pulse["limit"]) == (
            "pulse", "GPIO12", True, "limit_open",
        )  # fmt: skip
        assert barrier.position == 1.0 and barrier.pulses == 1
        barrier.set_input(Input.PHOTOCELL, True)  # the next step from the top would be "close"
        assert run_test_pulse(config, ["pulse"], 0.02, lines.append) == 1
        assert lines[-1]["refused"] == "photocell active: the next step may bring the arm down"
        assert barrier.pulses == 1


def test_outputs_to_pulse() -> None:
    config = GateConfig(lamp_pin=None)
    assert outputs_to_pulse(config, None) == ["open", "close"]
    assert outputs_to_pulse(config, "BCM27") == ["close"]
    with pytest.raises(ValueError, match="lamp is not a fitted output"):
        outputs_to_pulse(config, "lamp")
    lines: list[dict[str, Any]] = []
    assert dry_run(config, ["close"], 1.0, lines.append) == 0
    assert lines[-1]["pin"] == "GPIO27"


# -- the controller over a Unix socket ------------------------------------------------------------------------


@dataclass
class Served:
    path: Path
    server: GateServer
    barrier: SimulatedBarrier
    controller: GateController


@pytest.fixture
def served(tmp_path: Path, mock_factory: MockFactory) -> Iterator[Served]:
    """A simulated gate served on a real Unix socket in tmp_path, in a thread."""
    config = GateConfig(travel_s=0.05, close_delay_s=0.05, open_timeout_s=5.0, **SUGGESTED_PINS)
    path = tmp_path / "gate.sock"
    server = GateServer(path)
    stop = threading.Event()
    barrier = SimulatedBarrier(config, mock_factory)
    controller = GateController(config, on_change=server.publish)
    thread = threading.Thread(target=server.serve, args=(controller, stop))
    thread.start()
    try:
        assert server.ready.wait(5)
        yield Served(path, server, barrier, controller)
    finally:
        stop.set()
        thread.join(5)
        controller.close()
        barrier.close()
    assert not path.exists()


def test_client_has_the_controllers_surface(served: Served) -> None:
    path, barrier = served.path, served.barrier
    seen: list[Snapshot] = []
    with GateClient(path, on_change=seen.append) as gate:
        assert gate.state is BarrierState.CLOSED and gate.counts.passages == 0
        gate.open("space_free")
        assert gate.state is BarrierState.OPENING  # its snapshot came before the reply
        wait_until(lambda: gate.state is BarrierState.OPEN)
        assert barrier.drive_vehicle(entering=True, drive_s=0.03)
        wait_until(lambda: gate.counts.count_in == 1)
        wait_until(lambda: gate.state is BarrierState.CLOSED)
        gate.open()
        wait_until(lambda: gate.state is BarrierState.OPEN)
        gate.heartbeat()  # accepted (this gate does not monitor it)
        gate.close_barrier("operator")
        assert gate.state is BarrierState.CLOSING
        assert gate.snapshot().motor_close
    assert [s.event.value for s in seen if s.event] == ["entry"]
    assert not gate.connected


def test_the_edge_heartbeat_through_the_socket(tmp_path: Path, mock_factory: MockFactory) -> None:
    config = GateConfig(travel_s=0.05, edge_heartbeat_s=0.1, on_edge_lost="open_hold", **SUGGESTED_PINS)
    path = tmp_path / "gate.sock"
    server, stop = GateServer(path), threading.Event()
    with (
        SimulatedBarrier(config, mock_factory),
        GateController(config, on_change=server.publish) as controller,
    ):
        thread = threading.Thread(target=server.serve, args=(controller, stop))
        thread.start()
        try:
            assert server.ready.wait(5)
            with GateClient(path) as gate:
                wait_until(lambda: gate.state is BarrierState.OPEN)  # the edge never pinged
                assert gate.snapshot().alarms == {Alarm.EDGE_LOST}
                gate.heartbeat()  # its snapshots come before its reply
                assert gate.snapshot().alarms == frozenset() and gate.snapshot().auto_close
        finally:
            stop.set()
            thread.join(5)


def test_every_client_gets_every_change(served: Served) -> None:
    path = served.path
    with GateClient(path) as first, GateClient(path) as second:
        first.open()
        wait_until(lambda: second.state is BarrierState.OPEN)


def raw_exchange(path: Path, lines: list[bytes]) -> list[dict[str, Any]]:
    """Send raw lines; return the replies (snapshots left out)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.settimeout(5)
        reader = sock.makefile("rb")
        replies = []
        for line in lines:
            sock.sendall(line)
            while (message := json.loads(reader.readline()))["type"] != "reply":
                pass
            replies.append(message)
        return replies


def test_bad_lines_are_answered_counted_and_the_connection_goes_on(
    served: Served,
) -> None:
    path, server = served.path, served.server
    replies = raw_exchange(
        path,
        [
            b"not json\n",
            b'{"cmd": "lift", "id": 7}\n',
            b'{"cmd": "open", "id": "x", "extra": 1}\n',
            b'{"cmd": "snapshot", "id": "s1"}\n',
        ],
    )
    assert [r["ok"] for r in replies] == [False, False, False, True]
    assert replies[0]["error"].startswith("not JSON")
    assert replies[1] == {"type": "reply", "id": 7, "ok": False,
                          "error": "unknown command 'lift' (expected open, close, heartbeat, snapshot)"}  # fmt: skip
    assert replies[2]["error"] == "extra: Extra inputs are not permitted" and replies[2]["id"] == "x"
    assert replies[3]["snapshot"]["state"] == "CLOSED"
    assert server.rejected == {"json": 1, "unknown_command": 1, "schema": 1}


def test_a_second_server_on_the_same_socket_is_refused(
    served: Served,
) -> None:
    other = GateServer(served.path)
    with pytest.raises(FileExistsError, match="another gate server"):
        other.serve(served.controller, threading.Event())


def test_client_command_fails_cleanly_when_the_server_is_gone(
    tmp_path: Path, mock_factory: MockFactory
) -> None:
    config = GateConfig(**SUGGESTED_PINS)
    path = tmp_path / "gate.sock"
    server, stop = GateServer(path), threading.Event()
    with (
        SimulatedBarrier(config, mock_factory),
        GateController(config, on_change=server.publish) as controller,
    ):
        thread = threading.Thread(target=server.serve, args=(controller, stop))
        thread.start()
        assert server.ready.wait(5)
        client = GateClient(path, timeout=2)
        stop.set()
        thread.join(5)
        wait_until(lambda: not client.connected)
        with pytest.raises(GateCommandError, match="not connected"):
            client.open()
        client.close()


def test_gate_serve_runs_in_its_own_process(tmp_path: Path) -> None:
    config = tmp_path / "gate.toml"
    config.write_text("[gate]\ntravel_s = 0.05\nclose_delay_s = 0.05\n")
    path = tmp_path / "gate.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "parkgate", "gate", "serve", "--config", str(config), "--socket", str(path),
         "--simulate"], env=ENV, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(path.exists, timeout=20)
        with GateClient(path) as gate:
            gate.open("from another process")
            wait_until(lambda: gate.state is BarrierState.OPEN)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert not path.exists()
