"""Commissioning on the real pins (``parkgate gate test-pulse``): read every input, pulse each output.

Run it with the lane closed to traffic and the edge service stopped (it claims the same pins).
It prints one JSON line per input (``{"input", "pin", "active", "normally_closed"}``) and then one
per output pulse, the harmless ones first (lamp, light_red, light_green, buzzer), then the motor
(open, close; or pulse)::

    {"output": "open", "pin": "GPIO17", "on_s": 0.5, "limit_reached": false,
     "inputs_before": [...], "inputs_after": [...], "ok": true}

A motor pulse stops early when the limit switch of its direction closes. The close relay is never
pulsed while the safety zone (loop_b, photocell) or the emergency input is active (``"refused"``);
a pulse toward a limit switch that is already closed is skipped. With a pulse output
(``motor_output = "pulse"``) one pulse of ``seconds`` steps the barrier's own controller; then it
watches up to ``travel_limit_s`` for a limit switch (``"limit_reached"``, ``"limit"``, ``"travel_s"``), and
sends a second (stop) pulse if the safety zone becomes occupied meanwhile. It is refused while the
zone or the emergency input is active unless the arm is down (its next move is up).
``dry_run`` only prints the plan (``{"dry_run": true, ...}``) and touches no pin.
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
    """The outputs ``--pin`` names: an output name (open, close, pulse, lamp, light_red,
    light_green, buzzer) or its configured pin; every fitted output when None. Raises ValueError
    naming the choices."""
    fitted = config.output_pins()
    if pin is None:  # the harmless ones first; open then close leaves the arm where it was
        order = ("lamp", "light_red", "light_green", "buzzer", "open", "close", "pulse")
        return [name for name in order if name in fitted]
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
            pulsed = _pulse(devices, output, seconds, config.travel_limit_s)
            result = {"output": output, "pin": pin_key(fitted[output]), **pulsed}
            refused += "refused" in result
            emit(result)
    return 1 if refused else 0


def _pulse(devices: GateDevices, output: str, seconds: float, travel_limit_s: float) -> dict[str, Any]:
    before = _active(devices)
    if output == "pulse":
        return _step_pulse(devices, seconds, travel_limit_s)
    if devices.motor is None or output not in ("open", "close"):
        single = devices.outputs()[output]
        single.on()
        started = time.monotonic()
        time.sleep(seconds)
        single.off()
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


def _step_pulse(devices: GateDevices, seconds: float, travel_limit_s: float) -> dict[str, Any]:
    """One pulse into the barrier controller's step-by-step input; watch where the arm goes."""
    assert devices.pulse is not None
    before = _active(devices)
    blocking = sorted(before & (SAFETY_ZONE | {Input.EMERGENCY}))
    if blocking and Input.LIMIT_CLOSED not in before:
        return {"refused": f"{', '.join(blocking)} active: the next step may bring the arm down",
                "inputs_before": sorted(before), "ok": False}  # fmt: skip
    ends = {Input.LIMIT_OPEN, Input.LIMIT_CLOSED}
    started = time.monotonic()
    devices.pulse.on()
    time.sleep(seconds)
    devices.pulse.off()
    on_s = round(time.monotonic() - started, 3)
    reached, stopped_by = None, None
    while time.monotonic() - started < travel_limit_s:
        now_active = _active(devices)
        if arrived := (now_active - before) & ends:
            reached = arrived.pop().value
            break
        if Input.LIMIT_CLOSED not in before and now_active & SAFETY_ZONE:
            stopped_by = ", ".join(sorted(now_active & SAFETY_ZONE))
            time.sleep(max(0.0, seconds - (time.monotonic() - started - on_s)))
            devices.pulse.on()  # the controller's next step is "stop"
            time.sleep(seconds)
            devices.pulse.off()
            break
        time.sleep(_POLL_S)
    return {"on_s": on_s, "limit_reached": reached is not None, "limit": reached,
            "travel_s": round(time.monotonic() - started, 3),
            "stopped_by": stopped_by, "inputs_before": sorted(before),
            "inputs_after": sorted(_active(devices)), "ok": True}  # fmt: skip


def _active(devices: GateDevices) -> set[Input]:
    return {name for name, active in devices.levels().items() if active}
