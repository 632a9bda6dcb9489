"""Commissioning on the real pins (``parkgate gate test-pulse``): read every input, pulse each output.

Run it with the lane closed to traffic and the edge service stopped (it claims the same pins).
It prints one JSON line per input (``{"input", "pin", "active", "normally_closed"}``) and then one
per output pulse, in the order lamp, open, close::

    {"output": "open", "pin": "GPIO17", "on_s": 0.5, "limit_reached": false,
     "inputs_before": [...], "inputs_after": [...], "ok": true}

A motor pulse stops early when the limit switch of its direction closes. The close relay is never
pulsed while the safety zone (loop_b, photocell) or the emergency input is active (``"refused"``);
a pulse toward a limit switch that is already closed is skipped. ``dry_run`` only prints the plan
(``{"dry_run": true, ...}``) and touches no pin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from gpiozero.pins import Factory

from gate_firmware.config import GateConfig, pin_key
from gate_firmware.hardware import GateDevices
from gate_firmware.states import SAFETY_ZONE, Input

Emit = Callable[[dict[str, Any]], None]
_POLL_S = 0.005


def outputs_to_pulse(config: GateConfig, pin: str | None) -> list[str]:
    """The outputs ``--pin`` names: an output name (open, close, lamp) or its configured pin;
    every fitted output when None. Raises ValueError naming the choices."""
    fitted = config.output_pins()
    if pin is None:  # the harmless one first; open then close leaves the arm where it was
        return [name for name in ("lamp", "open", "close") if name in fitted]
    if pin in fitted:
        return [pin]
    for name, configured in fitted.items():
        if pin_key(configured) == pin_key(pin):
            return [name]
    choices = ", ".join(f"{name} ({pin_key(p)})" for name, p in fitted.items())
    raise ValueError(f"{pin} is not a fitted output; expected one of {choices}")


def dry_run(config: GateConfig, outputs: Sequence[str], seconds: float, emit: Emit) -> int:
    """Print what :func:`run_test_pulse` would read and pulse; touch nothing."""
    for name, pin in config.input_pins().items():
        nc = config.is_normally_closed(name)
        emit({"dry_run": True, "input": name.value, "pin": pin_key(pin), "normally_closed": nc})
    fitted = config.output_pins()
    for output in outputs:
        emit({"dry_run": True, "output": output, "pin": pin_key(fitted[output]), "seconds": seconds,
              "active_high": config.relay_active_high})  # fmt: skip
    return 0


def run_test_pulse(
    config: GateConfig,
    outputs: Sequence[str],
    seconds: float,
    emit: Emit,
    *,
    pin_factory: Factory | None = None,
) -> int:
    """Read every input, then pulse each output for up to ``seconds``. 0 if every pulse was
    done or skipped, 1 if one was refused."""
    fitted = config.output_pins()
    refused = 0
    with GateDevices(config, pin_factory=pin_factory) as devices:
        levels = devices.levels()
        for name, pin in config.input_pins().items():
            emit({"input": name.value, "pin": pin_key(pin), "active": levels[name],
                  "normally_closed": config.is_normally_closed(name)})  # fmt: skip
        for output in outputs:
            result = {"output": output, "pin": pin_key(fitted[output]), **_pulse(devices, output, seconds)}
            refused += "refused" in result
            emit(result)
    return 1 if refused else 0


def _pulse(devices: GateDevices, output: str, seconds: float) -> dict[str, Any]:
    before = _active(devices)
    if output == "lamp":
        assert devices.lamp is not None
        devices.lamp.on()
        started = time.monotonic()
        time.sleep(seconds)
        devices.lamp.off()
        return {"on_s": round(time.monotonic() - started, 3), "ok": True}
    limit = Input.LIMIT_OPEN if output == "open" else Input.LIMIT_CLOSED
    if limit in before:
        return {"skipped": f"{limit.value} is already active", "inputs_before": sorted(before), "ok": True}
    if output == "close":
        blocking = sorted(before & (SAFETY_ZONE | {Input.EMERGENCY}))
        if blocking:
            return {"refused": f"{', '.join(blocking)} active: the arm must not come down",
                    "inputs_before": sorted(before), "ok": False}  # fmt: skip
    started = time.monotonic()
    stopped_by = None
    try:
        devices.motor.drive(motor_open=output == "open", motor_close=output == "close")
        while time.monotonic() - started < seconds:
            now_active = _active(devices)
            if limit in now_active:
                stopped_by = limit.value
                break
            if output == "close" and now_active & SAFETY_ZONE:
                stopped_by = ", ".join(sorted(now_active & SAFETY_ZONE))
                break
            time.sleep(_POLL_S)
    finally:
        devices.stop()
    on_s = round(time.monotonic() - started, 3)
    return {"on_s": on_s, "limit_reached": stopped_by == limit.value, "stopped_by": stopped_by,
            "inputs_before": sorted(before), "inputs_after": sorted(_active(devices)), "ok": True}  # fmt: skip


def _active(devices: GateDevices) -> set[Input]:
    return {name for name, active in devices.levels().items() if active}
