"""``parkgate gate``: the barrier controller's commands.

- ``parkgate gate simulate --script FILE.json``: runs the real controller on simulated pins and a
  simulated arm, in virtual time, and prints one JSON line per change::

      {"t": 0.5, "state": "OPENING", "motor_open": true, "motor_close": false, "pulse": false,
       "lamp": true, "light": "red", "buzzer": true, "count_in": 0, "count_out": 0, "tailgates": 0,
       "reversals": 0, "faults": 0, "event": null, "fault": null, "alarms": [], "auto_close": true,
       "trigger": "open_command", "inputs": ["limit_closed", "loop_a"]}

  ``event`` is null, ``entry``, ``exit``, ``tailgate``, ``reversal``, ``fault:<reason>`` or
  ``cleared:<alarm>``.

  The script is ``{"config": {...}, "barrier": {"stuck": false, "start": "closed"}, "until": S,
  "steps": [{"t": 0.0, "input": "loop_a", "value": true}, {"t": 1.0, "input": "open_command"}]}``
  (only ``steps`` is required; the full format is in :mod:`gate_firmware.script`). A script error
  (malformed step, unknown input, time going back, a value on a command, no value on an input)
  prints every problem with its step index to stderr, nothing to stdout, and exits 2.
- ``parkgate gate test-pulse [--config FILE] [--pin NAME] [--seconds S] [--dry-run]``:
  commissioning on the real pins (:mod:`gate_firmware.commissioning`).
- ``parkgate gate serve --config FILE --socket PATH [--simulate]``: the controller for another
  process on the same Pi, JSON lines over a Unix socket (:mod:`gate_firmware.remote`).

``--config`` is a TOML file with a ``[gate]`` table; the edge's own config file will do.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EX_USAGE = 2


def add_gate_commands(sub: Any) -> None:
    """Register ``gate simulate``, ``gate test-pulse`` and ``gate serve`` on the top-level subparsers."""
    gate = sub.add_parser(
        "gate",
        help="the barrier controller: simulate a script, commissioning pulses, serve it on a socket",
        description="The barrier controller (gate_firmware): loops, photocell, limit switches, button, "
        "emergency input; motor relays or pulse output, lamp, traffic light, buzzer.",
    )
    actions = gate.add_subparsers(dest="gate", required=True, metavar="ACTION")

    simulate = actions.add_parser(
        "simulate",
        help="run a gate script in virtual time; one JSON line per change",
        description='Runs the controller on simulated pins with a simulated arm. Prints per change {"t", '
        '"state", "motor_open", "motor_close", "pulse", "lamp", "light", "buzzer", "count_in", "count_out", '
        '"tailgates", "reversals", "faults", "event", "fault", "alarms", "auto_close", "trigger", "inputs"}; '
        'event is null, "entry", "exit", "tailgate", "reversal", "fault:<reason>" or "cleared:<alarm>". '
        'Script: {"config": {...}, "barrier": {"stuck": false, "start": "closed"}, "until": S, "steps": '
        '[{"t": 0.0, "input": "loop_a", "value": true}, {"t": 1.0, "input": "open_command"}]}; inputs: '
        "open_command, close_command, heartbeat (no value), loop_a, loop_b, photocell, limit_open, "
        "limit_closed, button, emergency (value true/false).",
    )
    simulate.add_argument("--script", type=Path, required=True, metavar="FILE.json", help="the gate script")
    simulate.set_defaults(func=_simulate)

    pulse = actions.add_parser(
        "test-pulse",
        help="commissioning: read every input and pulse the relays on the real pins",
        description="Prints each input's level, then pulses the lamp, traffic light, buzzer, and the open "
        "and close relays (or the pulse output) in turn (a motor pulse stops at its limit switch; the close "
        "relay is refused while loop_b, the photocell or the emergency input is active). Stop the edge "
        "service first: it holds the same pins.",
    )
    pulse.add_argument("--config", type=Path, help="TOML file with a [gate] table (default: built-in pins)")
    pulse.add_argument(
        "--pin",
        metavar="NAME",
        help="only this output: open, close, pulse, lamp, light_red, light_green, buzzer, or its pin (GPIO17)",
    )
    pulse.add_argument(
        "--seconds",
        type=_pulse_seconds,
        default=0.5,
        metavar="S",
        help="pulse length (default 0.5, at most 10)",
    )
    pulse.add_argument("--dry-run", action="store_true", help="print the plan; touch no pin")
    pulse.set_defaults(func=_test_pulse)

    serve = actions.add_parser(
        "serve",
        help="serve the controller to another process over a Unix socket (JSON lines)",
        description='Commands in: {"cmd": "open"|"close"|"heartbeat"|"snapshot", "id", "reason"}; out: '
        '{"type": "snapshot", ...} after every change and {"type": "reply", "id", "ok", ...} per command.',
    )
    serve.add_argument("--config", type=Path, required=True, help="TOML file with a [gate] table")
    serve.add_argument("--socket", type=Path, required=True, metavar="PATH", help="Unix socket to listen on")
    serve.add_argument("--simulate", action="store_true", help="simulated pins and arm instead of real GPIO")
    serve.set_defaults(func=_serve)


def _pulse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 10:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 10 seconds (got {text})")
    return value


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    print(f"parkgate gate {args.gate}: {message}", file=sys.stderr)
    return code


def _emit(line: dict[str, Any]) -> None:
    print(json.dumps(line, ensure_ascii=False), flush=True)


def _load_gate_config(path: Path | None) -> Any:
    from pydantic import BaseModel, ConfigDict

    from gate_firmware import GateConfig
    from parkgate.settings import load_config

    class GateFile(BaseModel):
        model_config = ConfigDict(extra="ignore")  # the rest of an edge config is not ours
        gate: GateConfig

    return GateConfig() if path is None else load_config(GateFile, path).gate


def _simulate(args: argparse.Namespace) -> int:
    import logging

    from gate_firmware.script import ScriptError, parse_script, run_script

    if args.log_level is None:  # every step is on stdout already
        logging.getLogger("gate_firmware").setLevel(logging.WARNING)

    try:
        data = json.loads(args.script.read_text(encoding="utf-8"))
    except OSError as err:
        return _fail(args, f"cannot read {args.script}: {err.strerror or err}", EX_USAGE)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return _fail(args, f"{args.script}: not a JSON script: {err}", EX_USAGE)
    try:
        script = parse_script(data)
    except ScriptError as err:
        lines = "\n".join(f"  {problem}" for problem in err.problems)
        return _fail(args, f"{args.script}: {len(err.problems)} error(s) in script\n{lines}", EX_USAGE)
    out = [json.dumps(line, ensure_ascii=False) for line in run_script(script)]
    print("\n".join(out), flush=True)
    return 0


def _test_pulse(args: argparse.Namespace) -> int:
    from gpiozero.exc import GPIOZeroError

    from gate_firmware.commissioning import dry_run, outputs_to_pulse, run_test_pulse

    config = _load_gate_config(args.config)
    try:
        outputs = outputs_to_pulse(config, args.pin)
    except ValueError as err:
        return _fail(args, f"--pin {err}", EX_USAGE)
    if args.dry_run:
        return dry_run(config, outputs, args.seconds, _emit)
    try:
        return run_test_pulse(config, outputs, args.seconds, _emit)
    except (GPIOZeroError, OSError) as err:
        return _fail(
            args, f"cannot use the GPIO pins: {err} (is the edge service holding them? try --dry-run)", 1
        )


def _serve(args: argparse.Namespace) -> int:
    from gpiozero.pins.mock import MockFactory

    from gate_firmware import GateController
    from gate_firmware.remote import GateServer
    from gate_firmware.simulator import SimulatedBarrier
    from parkgate.services import stop_on_signals

    config = _load_gate_config(args.config)
    stop = stop_on_signals()
    server = GateServer(args.socket)
    factory = MockFactory() if args.simulate else None
    barrier = SimulatedBarrier(config, factory) if factory is not None else None
    try:
        with GateController(config, pin_factory=factory, on_change=server.publish) as controller:
            server.serve(controller, stop)
    except FileExistsError as err:
        return _fail(args, str(err), 1)
    finally:
        if barrier is not None:
            barrier.close()
    return 0
