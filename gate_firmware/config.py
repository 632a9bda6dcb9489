"""Gate configuration: which GPIO pins, and how long each movement and wait takes."""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A gpiozero pin name ("GPIO17", "BCM17", "BOARD11", "J8:11") or a bare Broadcom number (17).
PinName = Annotated[int, Field(ge=0)] | Annotated[str, Field(min_length=1)]

_BROADCOM = re.compile(r"^(?:GPIO|BCM)?(\d+)$")


def pin_key(pin: PinName) -> str:
    """A canonical spelling for comparing pins: 17, "17", "BCM17" and "gpio17" are all "GPIO17".

    Physical names ("BOARD11", "J8:11") are only upper-cased: telling that BOARD11 is GPIO17 needs
    the board's pin table, which gpiozero checks anyway when the devices are made.
    """
    text = str(pin).strip().upper()
    match = _BROADCOM.match(text)
    return f"GPIO{int(match.group(1))}" if match else text


class GateConfig(BaseModel):
    """One barrier: its two motor relays, its vehicle loop and its timings (seconds)."""

    model_config = ConfigDict(extra="forbid")

    open_pin: PinName = Field(
        default="GPIO17", description="output: relay that drives the motor to raise the arm"
    )
    close_pin: PinName = Field(
        default="GPIO27", description="output: relay that drives the motor to lower the arm"
    )
    loop_pin: PinName = Field(default="GPIO22", description="input: vehicle loop detector, active high")
    travel_s: float = Field(
        default=2.0, gt=0, description="arm travel time; a motor relay is on for this long"
    )
    close_delay_s: float = Field(
        default=1.0, ge=0, description="wait after the vehicle left the loop (loop clear) before closing"
    )
    open_timeout_s: float = Field(default=30.0, gt=0, description="close if no vehicle arrives after opening")
    loop_bounce_s: float | None = Field(
        default=0.02, ge=0, description="debounce time of the loop input; None for no debouncing"
    )

    @model_validator(mode="after")
    def _pins_distinct(self) -> Self:
        pins = {"open_pin": self.open_pin, "close_pin": self.close_pin, "loop_pin": self.loop_pin}
        seen: dict[str, str] = {}
        for field, pin in pins.items():
            key = pin_key(pin)
            if key in seen:
                raise ValueError(f"{field} and {seen[key]} are the same pin ({key}); each needs its own")
            seen[key] = field
        return self
