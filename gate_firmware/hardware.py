"""The barrier's GPIO devices (gpiozero): two motor relays and the vehicle loop detector.

Like gpiozero's own devices, each class takes a keyword-only ``pin_factory`` (None: gpiozero's
default) and hands it to every device it makes, so tests can run on ``MockFactory`` pins.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from gpiozero import DigitalInputDevice, DigitalOutputDevice
from gpiozero.pins import Factory

from gate_firmware.config import PinName


class VehicleLoop(DigitalInputDevice):
    """An inductive-loop detector's output: high while a vehicle stands on the loop.

    Pulled down, active high, debounced by ``bounce_time`` seconds (None: not debounced).
    """

    def __init__(
        self, pin: PinName, *, bounce_time: float | None = 0.02, pin_factory: Factory | None = None
    ) -> None:
        super().__init__(pin, pull_up=False, bounce_time=bounce_time, pin_factory=pin_factory)

    # Domain aliases, the way gpiozero's MotionSensor names its own (when_motion, motion_detected).
    is_vehicle_present = DigitalInputDevice.is_active
    when_vehicle_arrives = DigitalInputDevice.when_activated
    when_vehicle_leaves = DigitalInputDevice.when_deactivated


class BarrierMotor:
    """The motor's two relays, one per direction, interlocked: never both on.

    Starts with both relays off. :meth:`drive` switches off before it switches on, so the two are
    never on together, not even for an instant between two writes.
    """

    def __init__(self, open_pin: PinName, close_pin: PinName, *, pin_factory: Factory | None = None) -> None:
        self._open_relay = DigitalOutputDevice(open_pin, initial_value=False, pin_factory=pin_factory)
        try:
            self._close_relay = DigitalOutputDevice(close_pin, initial_value=False, pin_factory=pin_factory)
        except BaseException:
            self._open_relay.close()
            raise

    @property
    def is_opening(self) -> bool:
        """True while the motor-open relay is on."""
        return bool(self._open_relay.value)

    @property
    def is_closing(self) -> bool:
        """True while the motor-close relay is on."""
        return bool(self._close_relay.value)

    @property
    def closed(self) -> bool:
        return bool(self._open_relay.closed and self._close_relay.closed)

    def drive(self, *, motor_open: bool, motor_close: bool) -> None:
        """Set both relays; refuses (ValueError) to switch both on."""
        if motor_open and motor_close:
            raise ValueError("refusing to drive the barrier motor both ways at once")
        if not motor_open:
            self._open_relay.off()
        if not motor_close:
            self._close_relay.off()
        if motor_open:
            self._open_relay.on()
        if motor_close:
            self._close_relay.on()

    def stop(self) -> None:
        """Both relays off."""
        self.drive(motor_open=False, motor_close=False)

    def close(self) -> None:
        """Switch both relays off and release their pins. Safe to call again."""
        for relay in (self._open_relay, self._close_relay):
            if not relay.closed:
                relay.off()  # a released pin may keep driving its last level
            relay.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
