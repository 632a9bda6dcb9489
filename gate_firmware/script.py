"""Gate scripts: a barrier run in virtual time from timed inputs (``parkgate gate simulate``).

The real :class:`~gate_firmware.controller.GateController` runs on MockFactory pins with a
:class:`~gate_firmware.simulator.SimulatedBarrier` arm, on a clock that jumps from one due thing
to the next (a script step, a controller timer, a limit switch), so a script of minutes runs in
milliseconds and always gives the same output.

Script (JSON)::

    {
      "config": {"travel_s": 2.0, "close_delay_s": 1.0},
      "barrier": {"stuck": false, "start": "closed"},
      "until": 60.0,
      "steps": [
        {"t": 0.0, "input": "loop_a", "value": true},
        {"t": 0.5, "input": "open_command"},
        {"t": 3.0, "input": "loop_b", "value": true}
      ]
    }

- ``config`` (optional): gate config fields (``[gate]`` of the edge config). In a script the
  photocell, button and emergency inputs, the traffic light and the buzzer are fitted (and the
  pulse output, with ``"motor_output": "pulse"``) unless set to null.
- ``barrier`` (optional): ``stuck`` — the arm never moves, so limit switches change only by steps;
  ``start`` — ``closed`` (default), ``open`` or ``between`` (no limit switch active).
- ``until`` (optional): stop at this time; by default the run ends when nothing more is due.
- ``steps``: ``t`` seconds from the start (numbers, never decreasing); ``input`` a command
  (``open_command``, ``close_command``, ``heartbeat`` — the edge application's: no ``value``) or an
  input (``loop_a``, ``loop_b``, ``photocell``, ``limit_open``, ``limit_closed``, ``button``,
  ``emergency``: ``value`` true = active, false = inactive, required). A step on a limit switch
  overrides the simulated arm's.

Output: one JSON object per change (a step that changed the state, an output, a count or an
alarm, or reported an event), the first one being where the gate starts (``trigger`` ``start``)::

    {"t": 0.5, "state": "OPENING", "motor_open": true, "motor_close": false, "pulse": false,
     "lamp": true, "light": "red", "buzzer": true, "count_in": 0, "count_out": 0, "tailgates": 0,
     "reversals": 0, "faults": 0, "event": null, "fault": null, "alarms": [], "auto_close": true,
     "trigger": "open_command", "inputs": ["limit_closed", "loop_a"]}

``event`` is null or ``entry``, ``exit``, ``tailgate``, ``reversal``, ``fault:<reason>``
(``travel_timeout``, ``wrong_limit``, ``arm_moved``, ``both_limits``, and the alarms
``safety_stuck``, ``edge_lost``) or ``cleared:<alarm>``; ``fault`` the reason while faulted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gpiozero.pins.mock import MockFactory
from pydantic import ValidationError

from gate_firmware.config import SUGGESTED_PINS, GateConfig
from gate_firmware.controller import GateController, Snapshot
from gate_firmware.simulator import SimulatedBarrier, Start
from gate_firmware.states import Input

COMMANDS = ("open_command", "close_command", "heartbeat")
INPUTS = tuple(name.value for name in Input)
_STEP_KEYS = {"t", "input", "value"}
_STARTS = ("closed", "open", "between")
_NOT_A_CHANGE = {"t", "event", "trigger", "inputs"}  # a line is printed when anything else changes
_MAX_CHANGES = 1_000_000  # a script that never settles is a bug, not a reason to hang


class ScriptError(ValueError):
    """A script that cannot be run; ``problems`` holds one line per error, each naming its place."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True, slots=True)
class ScriptStep:
    t: float
    input: str  # a command or an Input value
    value: bool | None


@dataclass(frozen=True, slots=True)
class Script:
    config: GateConfig
    steps: tuple[ScriptStep, ...]
    stuck: bool = False
    start: Start = "closed"
    until: float | None = None


def parse_script(data: Any) -> Script:
    """Check a decoded JSON script; raise :class:`ScriptError` listing every problem."""
    if not isinstance(data, dict):
        raise ScriptError(["the script must be a JSON object with a 'steps' list"])
    problems = [f"unknown key {key!r} (expected config, barrier, until, steps)" for key in data if key not in
                ("config", "barrier", "until", "steps")]  # fmt: skip
    config = _config(data.get("config", {}), problems)
    stuck, start = _barrier(data.get("barrier", {}), problems)
    until = data.get("until")
    if until is not None and not _is_time(until):
        problems.append(f"until: must be a number of seconds >= 0 (got {_shown(until)})")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list):
        problems.append("steps: must be a list of steps")
        raw_steps = []
    steps = _steps(raw_steps, config, problems)
    if problems:
        raise ScriptError(problems)
    assert config is not None
    return Script(config, tuple(steps), stuck, start, until)


def run_script(script: Script) -> Iterator[dict[str, Any]]:
    """Run the script in virtual time; yield one JSON-ready dict per change, in time order."""
    factory = MockFactory()
    clock = _Clock()
    seen: list[Snapshot] = []
    barrier = SimulatedBarrier(
        script.config, factory, clock=clock, realtime=False, stuck=script.stuck, start=script.start
    )
    gate = GateController(
        script.config, pin_factory=factory, on_change=seen.append, clock=clock, timer_thread=False
    )
    last: tuple[Any, ...] | None = None  # what the last line printed showed
    try:
        pending = list(script.steps)
        for _ in range(_MAX_CHANGES):
            for snap in seen:
                line = _line(snap)
                key = tuple(value for name, value in line.items() if name not in _NOT_A_CHANGE)
                if key != last or snap.event is not None:
                    last = key
                    yield line
            seen.clear()
            due = [t for t in (pending[0].t if pending else None, gate.next_deadline, barrier.next_due()) if
                   t is not None]  # fmt: skip
            if not due or (script.until is not None and min(due) > script.until):
                return
            clock.now = max(clock.now, min(due))
            gate.tick()
            barrier.advance(clock.now)
            while pending and pending[0].t <= clock.now and not seen:
                _apply(pending.pop(0), gate, barrier)
        raise RuntimeError(f"the simulation did not settle after {_MAX_CHANGES} changes")
    finally:
        gate.close()
        barrier.close()
        factory.reset()
        factory.close()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _apply(step: ScriptStep, gate: GateController, barrier: SimulatedBarrier) -> None:
    if step.input == "open_command":
        gate.open(f"script t={step.t}")
    elif step.input == "close_command":
        gate.close_barrier(f"script t={step.t}")
    elif step.input == "heartbeat":
        gate.heartbeat()
    else:
        assert step.value is not None
        barrier.set_input(Input(step.input), step.value)


def _line(snap: Snapshot) -> dict[str, Any]:
    out = snap.as_dict()
    t = round(out.pop("at"), 6)
    return {"t": t + 0.0, **out}  # + 0.0: never -0.0


def _config(raw: Any, problems: list[str]) -> GateConfig | None:
    if not isinstance(raw, dict):
        problems.append("config: must be an object of gate config fields")
        return None
    try:
        return GateConfig.model_validate({**SUGGESTED_PINS, **raw})
    except ValidationError as err:
        for e in err.errors(include_url=False):
            where = ".".join(str(part) for part in ("config", *e["loc"]))
            problems.append(f"{where}: {e['msg']}")
        return None


def _barrier(raw: Any, problems: list[str]) -> tuple[bool, Start]:
    if not isinstance(raw, dict):
        problems.append('barrier: must be an object like {"stuck": false, "start": "closed"}')
        return False, "closed"
    for key in raw:
        if key not in ("stuck", "start"):
            problems.append(f"barrier: unknown key {key!r} (expected stuck, start)")
    stuck, start = raw.get("stuck", False), raw.get("start", "closed")
    if not isinstance(stuck, bool):
        problems.append(f"barrier.stuck: must be true or false (got {_shown(stuck)})")
        stuck = False
    if start not in _STARTS:
        problems.append(f"barrier.start: must be one of {', '.join(_STARTS)} (got {_shown(start)})")
        start = "closed"
    return stuck, start


def _steps(raw_steps: list[Any], config: GateConfig | None, problems: list[str]) -> list[ScriptStep]:
    steps: list[ScriptStep] = []
    previous = 0.0
    for index, raw in enumerate(raw_steps):
        step_problems = _step_problems(raw, previous, config)
        problems += [f"step {index}: {problem}" for problem in step_problems]
        if isinstance(raw, dict) and _is_time(raw.get("t")):
            previous = max(previous, float(raw["t"]))
        if not step_problems:
            steps.append(ScriptStep(float(raw["t"]), raw["input"], raw.get("value")))
    return steps


def _step_problems(raw: Any, previous: float, config: GateConfig | None) -> list[str]:
    if not isinstance(raw, dict):
        return [f'must be an object like {{"t": 1.0, "input": "loop_a", "value": true}} (got {_shown(raw)})']
    found = [f"unknown key {key!r} (expected t, input, value)" for key in raw if key not in _STEP_KEYS]
    t: Any = raw.get("t")
    name = raw.get("input")
    if "t" not in raw:
        found.append("t is missing (seconds from the start)")
    elif not _is_time(t):
        found.append(f"t must be a number of seconds >= 0 (got {_shown(t)})")
    elif t < previous:
        found.append(f"t={t} is before the step ahead of it (t={previous}): times must not decrease")
    if name in COMMANDS:
        if "value" in raw:
            found.append(f"{name} is a command and takes no value (got value {_shown(raw['value'])})")
    elif name in INPUTS:
        if "value" not in raw:
            found.append(f"{name} needs a value: true (active) or false (inactive)")
        elif not isinstance(raw["value"], bool):
            found.append(f"{name} needs a value of true (active) or false (got {_shown(raw['value'])})")
        elif config is not None and Input(name) not in config.input_pins():
            found.append(f"{name} is not fitted (config.{name}_pin is null)")
    elif "input" not in raw:
        found.append("input is missing")
    else:
        found.append(f"unknown input {_shown(name)} (expected one of {', '.join((*COMMANDS, *INPUTS))})")
    return found


def _shown(value: Any) -> str:
    """A value as it was written in the JSON script."""
    return json.dumps(value, ensure_ascii=False)


def _is_time(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    )
