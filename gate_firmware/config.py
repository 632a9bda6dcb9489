"""Gate configuration: which GPIO pin does what, how each input is wired, and the timings (seconds).

Every input is a dry contact between its GPIO pin and GND, read with the Pi's pull-up (see
``deploy/gate-wiring.md``). A normally-open contact (loop detector relay, limit switch, button)
is *active* when it closes (pin low); an input listed in ``normally_closed`` (by default the
photocell and the emergency input) is active when its contact opens (pin high), so a cut wire
reads as "obstacle" or "emergency" and fails safe.

Before the two loops and the limit switches the config had one ``loop_pin``; it is still read, as
``loop_b_pin`` (the loop under the arm, which keeps it from closing). ``loop_bounce_s`` is read as
``bounce_s``.

The motor is driven either by two relays (``motor_output = "relays"``: ``open_pin``, ``close_pin``,
each held on until its limit switch) or by one pulse output (``"pulse"``: ``pulse_pin``, for a
barrier with its own motor controller whose step-by-step input goes open -> stop -> close -> stop).
The pins of the other mode are not claimed. The traffic light (``light_red_pin``,
``light_green_pin``) and the buzzer (``buzzer_pin``) are optional, like the lamp.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gate_firmware.states import EdgeLostPolicy, Input, MotorOutput

# A gpiozero pin name ("GPIO17", "BCM17", "BOARD11", "J8:11") or a bare Broadcom number (17).
PinName = Annotated[int, Field(ge=0)] | Annotated[str, Field(min_length=1)]

_BROADCOM = re.compile(r"^(?:GPIO|BCM)?(\d+)$")

_OLD_NAMES = {"loop_pin": "loop_b_pin", "loop_bounce_s": "bounce_s"}

SUGGESTED_PINS: dict[str, PinName] = {
    "photocell_pin": "GPIO5",
    "button_pin": "GPIO19",
    "emergency_pin": "GPIO26",
    "pulse_pin": "GPIO12",
    "light_red_pin": "GPIO20",
    "light_green_pin": "GPIO21",
    "buzzer_pin": "GPIO16",
}
"""Pins for the optional parts (null by default): the wiring table's, and what gate scripts fit.
(``pulse_pin`` is only claimed with ``motor_output = "pulse"``.)"""

OUTPUTS = ("open", "close", "pulse", "lamp", "light_red", "light_green", "buzzer")
"""The output names used by ``parkgate gate test-pulse --pin`` and the wiring table."""

_MOTOR_PINS = {
    MotorOutput.RELAYS: ("open_pin", "close_pin"),
    MotorOutput.PULSE: ("pulse_pin",),
}


def pin_key(pin: PinName) -> str:
    """A canonical spelling for comparing pins: 17, "17", "BCM17" and "gpio17" are all "GPIO17".

    Physical names ("BOARD11", "J8:11") are only upper-cased: telling that BOARD11 is GPIO17 needs
    the board's pin table, which gpiozero checks anyway when the devices are made.
    """
    text = str(pin).strip().upper()
    match = _BROADCOM.match(text)
    return f"GPIO{int(match.group(1))}" if match else text


class GateConfig(BaseModel):
    """One barrier: motor relays (or one pulse output), lamp, traffic light, buzzer, two vehicle
    loops, photocell, limit switches, button, emergency input, its timings and its policies. An
    optional part whose pin is null is not fitted."""

    model_config = ConfigDict(extra="forbid")

    # -- outputs --------------------------------------------------------------------------------
    motor_output: MotorOutput = Field(
        default=MotorOutput.RELAYS,
        description='"relays": open_pin and close_pin held on until the limit switch; "pulse": one '
        "pulse on pulse_pin per step of a barrier controller's open/stop/close/stop input",
    )
    open_pin: PinName = Field(
        default="GPIO17", description="output (relays): relay that runs the motor to raise the arm"
    )
    close_pin: PinName = Field(
        default="GPIO27", description="output (relays): relay that runs the motor to lower the arm"
    )
    pulse_pin: PinName | None = Field(
        default=None,
        description="output (pulse): relay pulsed into the barrier controller's step-by-step input",
    )
    pulse_s: float = Field(
        default=0.5, gt=0, le=5, description="pulse length, and the pause between two pulses (pulse)"
    )
    lamp_pin: PinName | None = Field(
        default="GPIO24", description="output: warning-lamp relay, on unless the arm rests closed or open"
    )
    light_red_pin: PinName | None = Field(
        default=None, description="output: traffic light red (on unless green); null if not fitted"
    )
    light_green_pin: PinName | None = Field(
        default=None,
        description="output: traffic light green, only while the arm is up and a vehicle may go; null if none",
    )
    buzzer_pin: PinName | None = Field(
        default=None, description="output: buzzer, on while the motor runs and in FAULT; null if none"
    )
    relay_active_high: bool = Field(
        default=True,
        description="relay board input polarity; false for boards whose relays close on a low pin",
    )
    # -- inputs ---------------------------------------------------------------------------------
    loop_a_pin: PinName = Field(
        default="GPIO23", description="input: outer loop detector; an entering vehicle crosses it first"
    )
    loop_b_pin: PinName = Field(
        default="GPIO22", description="input: loop detector under/after the arm (safety zone)"
    )
    photocell_pin: PinName | None = Field(
        default=None, description="input: photocell across the arm's path (safety zone); null if not fitted"
    )
    limit_open_pin: PinName = Field(default="GPIO6", description="input: limit switch, arm fully up")
    limit_closed_pin: PinName = Field(default="GPIO13", description="input: limit switch, arm fully down")
    button_pin: PinName | None = Field(
        default=None,
        description="input: attendant's push-button (open/stop/close, fault reset); null if none",
    )
    emergency_pin: PinName | None = Field(
        default=None,
        description="input: emergency/fire-alarm contact that holds the barrier open; null if none",
    )
    normally_closed: list[Input] = Field(
        default_factory=lambda: [Input.PHOTOCELL, Input.EMERGENCY],
        description="inputs whose contact is closed at rest and opens when active (fail-safe wiring)",
    )
    bounce_s: float | None = Field(
        default=0.02, ge=0, description="debounce time of every input; null for no debouncing"
    )
    # -- timings --------------------------------------------------------------------------------
    travel_s: float = Field(
        default=2.0, gt=0, description="arm travel time between the limit switches (the simulator uses it)"
    )
    travel_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="fault if a limit switch is not reached in this time; null: 2 x travel_s + 1 "
        "(+ 8 x pulse_s with a pulse output)",
    )
    close_delay_s: float = Field(
        default=1.0, ge=0, description="wait after a vehicle completed its passage before closing"
    )
    open_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="close if no vehicle passes after opening (and after this long STOPPED mid-way)",
    )
    # -- monitoring -----------------------------------------------------------------------------
    safety_stuck_s: float | None = Field(
        default=300.0,
        gt=0,
        description="loop_b or the photocell active this long: alarm, auto-close off until the button "
        "or a close command resets it; null: not monitored",
    )
    edge_heartbeat_s: float | None = Field(
        default=None,
        gt=0,
        description="the edge application's heartbeat is lost after this long without one; null: not "
        "monitored",
    )
    on_edge_lost: EdgeLostPolicy = Field(
        default=EdgeLostPolicy.CLOSE_WHEN_CLEAR,
        description='when the heartbeat is lost: "stay" (no automatic moves), "open_hold" (raise and '
        'hold open) or "close_when_clear" (lower as soon as the safety zone is clear)',
    )

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for old, new in _OLD_NAMES.items():
            if old in data:
                if new in data:
                    raise ValueError(f"{old} is the old name of {new}; give only {new}")
                data[new] = data.pop(old)
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        seen: dict[str, str] = {}
        for field, pin in self.pins().items():
            key = pin_key(pin)
            if key in seen:
                raise ValueError(f"{field} and {seen[key]} are the same pin ({key}); each needs its own")
            seen[key] = field
        if self.motor_output is MotorOutput.PULSE and self.pulse_pin is None:
            raise ValueError('motor_output = "pulse" needs pulse_pin')
        if self.travel_timeout_s is not None and self.travel_timeout_s <= self.travel_s:
            raise ValueError(
                f"travel_timeout_s ({self.travel_timeout_s}) must be longer than travel_s ({self.travel_s})"
            )
        return self

    def pins(self) -> dict[str, PinName]:
        """Every pin in use by its field name (``open_pin``: "GPIO17", ...): the fitted parts, and
        the motor pins of the configured ``motor_output`` only."""
        unused = {pin for mode, pins in _MOTOR_PINS.items() if mode is not self.motor_output for pin in pins}
        fields = [name for name in type(self).model_fields if name.endswith("_pin") and name not in unused]
        return {name: pin for name in fields if (pin := getattr(self, name)) is not None}

    def input_pins(self) -> dict[Input, PinName]:
        """The fitted inputs and their pins."""
        pins = self.pins()
        return {name: pins[f"{name}_pin"] for name in Input if f"{name}_pin" in pins}

    def output_pins(self) -> dict[str, PinName]:
        """The fitted outputs (``open``, ``close`` or ``pulse``, ``lamp``, ``light_red``,
        ``light_green``, ``buzzer``) and their pins."""
        pins = self.pins()
        return {name: pins[f"{name}_pin"] for name in OUTPUTS if f"{name}_pin" in pins}

    def is_normally_closed(self, name: Input) -> bool:
        return name in self.normally_closed

    @property
    def travel_limit_s(self) -> float:
        """How long a motor may run before the missing limit switch is a fault. By default 2 x
        ``travel_s`` + 1 s, plus 8 x ``pulse_s`` with a pulse output (a train of up to three pulses,
        each followed by a pause, may come before the arm moves the right way)."""
        if self.travel_timeout_s is not None:
            return self.travel_timeout_s
        pulses = 8 * self.pulse_s if self.motor_output is MotorOutput.PULSE else 0.0
        return 2 * self.travel_s + 1.0 + pulses
