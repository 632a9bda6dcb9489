"""Command-to-relay latency of the gate controller, from MockFactory's own pin timestamps.

``python -m bench.gate_latency [--runs N] [--socket-runs N]`` prints one JSON line per path::

    {"path": "in_process", "command": "open", "runs": 2000, "median_us": 38.1, "p95_us": 52.0,
     "p99_us": 80.3, "max_us": 400.2}

- ``in_process``, ``open`` / ``close``: ``GateController.open()`` / ``close_barrier()`` to the
  motor relay's pin change;
- ``in_process``, ``photocell_reversal``: the photocell pin going active while closing, to the
  open relay's pin change (the safety path: gpiozero callback, machine, interlock, relays);
- ``in_process_pulse``, ``open`` / ``photocell_stop``: the same with ``motor_output = "pulse"``, to
  the rising edge of the pulse output (the stop pulse of a reversal); its pulse timers run on a
  virtual clock, so the bench does not wait out real pulses;
- ``unix_socket``, ``open``: ``GateClient.open()`` in this process, through a real Unix socket
  and a ``GateServer`` thread (JSON both ways), to the relay's pin change; ``roundtrip_us`` is the
  time until the client has the server's reply.

Each figure is the time from ``MockPin.clear_states()`` (taken just before the command) to the
relay pin's recorded change (``MockPin.states[-1].timestamp``); the limit switches are worked by
hand between runs. Logging is at WARNING (the controller logs every step at INFO in service).
MockFactory pins cost far less than real GPIO writes (lgpio: a few microseconds each), so on a Pi
add those, and the Pi's slower CPU, to these figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPin

from gate_firmware import BarrierState, GateConfig, GateController, Input, MotorOutput
from gate_firmware.config import SUGGESTED_PINS
from gate_firmware.remote import GateClient, GateServer
from gate_firmware.simulator import set_contact

CONFIG = GateConfig(travel_s=1.0, open_timeout_s=600.0, **SUGGESTED_PINS)
PULSE_CONFIG = CONFIG.model_copy(update={"motor_output": MotorOutput.PULSE, "pulse_s": 0.3})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(round(q * (len(ordered) - 1)), len(ordered) - 1)]


def figures(path: str, command: str, seconds: list[float], **extra: Any) -> dict[str, Any]:
    us = [s * 1e6 for s in seconds]
    return {
        "path": path,
        "command": command,
        "runs": len(us),
        "median_us": round(statistics.median(us), 1),
        "p95_us": round(percentile(us, 0.95), 1),
        "p99_us": round(percentile(us, 0.99), 1),
        "max_us": round(max(us), 1),
        **extra,
    }


class Rig:
    """A controller on MockFactory pins whose limit switches are worked by hand."""

    def __init__(self, factory: MockFactory, gate: GateController) -> None:
        self.factory, self.gate = factory, gate
        self.up: MockPin = factory.pin(CONFIG.open_pin)
        self.down: MockPin = factory.pin(CONFIG.close_pin)

    def contact(self, name: Input, active: bool) -> None:
        set_contact(self.factory, CONFIG, name, active)

    def arrive(self, at: Input) -> None:
        """The arm got to one end: the other limit switch opened, this one closed."""
        self.contact(Input.LIMIT_OPEN if at is Input.LIMIT_CLOSED else Input.LIMIT_CLOSED, False)
        self.contact(at, True)

    @staticmethod
    def timed(relay: MockPin, action: Callable[[], object]) -> float:
        relay.clear_states()
        action()
        assert len(relay.states) == 2 and relay.states[1].state, "the relay did not switch on"
        return float(relay.states[1].timestamp)


def wired_rig(factory: MockFactory, **controller: Any) -> Rig:
    for name in CONFIG.input_pins():  # every contact at rest, the arm down
        set_contact(factory, CONFIG, name, name is Input.LIMIT_CLOSED)
    return Rig(factory, GateController(CONFIG, pin_factory=factory, **controller))


def in_process(runs: int) -> list[dict[str, Any]]:
    factory = MockFactory()
    rig = wired_rig(factory)
    opened, closed, reversed_ = [], [], []
    try:
        for _ in range(runs):
            opened.append(rig.timed(rig.up, rig.gate.open))
            rig.arrive(Input.LIMIT_OPEN)
            closed.append(rig.timed(rig.down, rig.gate.close_barrier))
            rig.contact(Input.LIMIT_OPEN, False)  # on its way down
            reversed_.append(rig.timed(rig.up, lambda: rig.contact(Input.PHOTOCELL, True)))
            rig.contact(Input.PHOTOCELL, False)
            rig.arrive(Input.LIMIT_OPEN)
            rig.gate.close_barrier()
            rig.arrive(Input.LIMIT_CLOSED)
            assert rig.gate.state is BarrierState.CLOSED
    finally:
        rig.gate.close()
        factory.reset()
    return [
        figures("in_process", "open", opened),
        figures("in_process", "close", closed),
        figures("in_process", "photocell_reversal", reversed_),
    ]


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def in_process_pulse(runs: int) -> list[dict[str, Any]]:
    factory = MockFactory()
    for name in PULSE_CONFIG.input_pins():
        set_contact(factory, PULSE_CONFIG, name, name is Input.LIMIT_CLOSED)
    clock = VirtualClock()
    gate = GateController(PULSE_CONFIG, pin_factory=factory, clock=clock, timer_thread=False)
    pulse: MockPin = factory.pin(PULSE_CONFIG.pulse_pin)

    def contact(name: Input, active: bool) -> None:
        set_contact(factory, PULSE_CONFIG, name, active)

    def later(pulses: int = 1) -> None:  # a pulse's length (or its pause), then its timers
        for _ in range(pulses):
            clock.now += PULSE_CONFIG.pulse_s
            gate.tick()

    opened, stopped = [], []
    try:
        for _ in range(runs):
            opened.append(Rig.timed(pulse, gate.open))
            later()
            contact(Input.LIMIT_CLOSED, False)
            contact(Input.LIMIT_OPEN, True)  # the barrier's controller stops there by itself
            later()
            gate.close_barrier()
            later()
            contact(Input.LIMIT_OPEN, False)
            later()
            stopped.append(Rig.timed(pulse, lambda: contact(Input.PHOTOCELL, True)))  # stop, then open
            contact(Input.PHOTOCELL, False)
            later(4)
            contact(Input.LIMIT_OPEN, True)
            later()
            gate.close_barrier()
            later()
            contact(Input.LIMIT_OPEN, False)
            contact(Input.LIMIT_CLOSED, True)
            later()
            assert gate.state is BarrierState.CLOSED and not pulse.state
    finally:
        gate.close()
        factory.reset()
    return [
        figures("in_process_pulse", "open", opened),
        figures("in_process_pulse", "photocell_stop", stopped),
    ]


def unix_socket(runs: int) -> dict[str, Any]:
    factory = MockFactory()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "gate.sock"
        server, stop = GateServer(path), threading.Event()
        rig = wired_rig(factory, on_change=server.publish)
        thread = threading.Thread(target=server.serve, args=(rig.gate, stop), daemon=True)
        thread.start()
        opened, roundtrips = [], []
        try:
            if not server.ready.wait(10):
                raise RuntimeError("the gate server did not start")
            with GateClient(path) as client:
                for _ in range(runs):
                    started = time.perf_counter()
                    opened.append(rig.timed(rig.up, client.open))
                    roundtrips.append(time.perf_counter() - started)
                    rig.arrive(Input.LIMIT_OPEN)
                    rig.gate.close_barrier()
                    rig.arrive(Input.LIMIT_CLOSED)
        finally:
            stop.set()
            thread.join(10)
            rig.gate.close()
            factory.reset()
    return figures(
        "unix_socket", "open", opened, roundtrip_median_us=round(statistics.median(roundtrips) * 1e6, 1)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gate_latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=2000, help="in-process cycles (default 2000)")
    parser.add_argument(
        "--socket-runs", type=int, default=500, help="cycles through the socket (default 500)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    env = {"python": platform.python_version(), "machine": platform.machine()}
    for line in [*in_process(args.runs), *in_process_pulse(args.runs), unix_socket(args.socket_runs)]:
        print(json.dumps({**line, **env}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
