"""The barrier's GPIO devices (gpiozero): input contacts, the two motor relays (or one pulse
output), the lamp, the traffic light and the buzzer.

Like gpiozero's own devices, each class takes a keyword-only ``pin_factory`` (None: gpiozero's
default) and hands it to every device it makes, so tests can run on ``MockFactory`` pins.

Wiring (``deploy/gate-wiring.md``): every input is a dry contact between its pin and GND, read
with the Pi's internal pull-up. A normally-open contact is active when closed (pin low); a
normally-closed one is active when open (pin high), so a broken wire reads as active.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack

from gpiozero import DigitalInputDevice, DigitalOutputDevice
from gpiozero.pins import Factory

from gate_firmware.closing import Closing
from gate_firmware.config import GateConfig, PinName
from gate_firmware.states import Input, Light, MotorOutput


class ContactInput(DigitalInputDevice):
    """A dry contact between a GPIO pin and GND, pulled up inside the Pi.

    ``normally_closed=False`` (a loop detector's relay, a limit switch, a button): active while
    the contact is closed, i.e. the pin is low. ``normally_closed=True`` (a photocell receiver,
    an emergency contact): active while the contact is open, i.e. the pin is high — as it also is
    when the wire is cut. Debounced by ``bounce_time`` seconds (None: not debounced).
    """

    def __init__(
        self,
        pin: PinName,
        *,
        normally_closed: bool = False,
        bounce_time: float | None = 0.02,
        pin_factory: Factory | None = None,
    ) -> None:
        if normally_closed:
            # gpiozero ties "pulled up" to "active low"; this contact is pulled up yet active high.
            super().__init__(
                pin, pull_up=None, active_state=True, bounce_time=bounce_time, pin_factory=pin_factory
            )
            try:
                self.pin.pull = "up"
            except BaseException:
                self.close()
                raise
        else:
            super().__init__(pin, pull_up=True, bounce_time=bounce_time, pin_factory=pin_factory)
        self.normally_closed = normally_closed


class VehicleLoop(ContactInput):
    """An inductive-loop detector's relay output (normally open): active while a vehicle is on it."""

    # Domain aliases, the way gpiozero's MotionSensor names its own (when_motion, motion_detected).
    is_vehicle_present = DigitalInputDevice.is_active
    when_vehicle_arrives = DigitalInputDevice.when_activated
    when_vehicle_leaves = DigitalInputDevice.when_deactivated


class BarrierMotor(Closing):
    """The motor's two relays, one per direction, interlocked: never both on.

    Starts with both relays off. :meth:`drive` switches off before it switches on, so the two are
    never on together, not even for an instant between two writes. ``active_high=False`` is for
    relay boards whose relays close on a low input.
    """

    def __init__(
        self,
        open_pin: PinName,
        close_pin: PinName,
        *,
        active_high: bool = True,
        pin_factory: Factory | None = None,
    ) -> None:
        self._open_relay = DigitalOutputDevice(
            open_pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
        )
        try:
            self._close_relay = DigitalOutputDevice(
                close_pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
            )
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


class GateDevices(Closing):
    """Every device of one barrier, made from its :class:`GateConfig`: ``inputs`` (the fitted
    ones, by name); ``motor`` (the two relays) or ``pulse`` (the one pulse output), as
    ``motor_output`` says; ``lamp``, ``light_red``, ``light_green`` and ``buzzer`` (None if not
    fitted). Closing it releases them all."""

    def __init__(self, config: GateConfig, *, pin_factory: Factory | None = None) -> None:
        with ExitStack() as undo:  # a pin that cannot be claimed releases the ones made before it

            def output(pin: PinName | None) -> DigitalOutputDevice | None:
                if pin is None:
                    return None
                device = DigitalOutputDevice(
                    pin, active_high=config.relay_active_high, initial_value=False, pin_factory=pin_factory
                )
                undo.callback(device.close)
                return device

            self.motor: BarrierMotor | None = None
            self.pulse: DigitalOutputDevice | None = None
            if config.motor_output is MotorOutput.RELAYS:
                self.motor = BarrierMotor(
                    config.open_pin,
                    config.close_pin,
                    active_high=config.relay_active_high,
                    pin_factory=pin_factory,
                )
                undo.callback(self.motor.close)
            else:
                self.pulse = output(config.pulse_pin)
            self.lamp = output(config.lamp_pin)
            self.light_red = output(config.light_red_pin)
            self.light_green = output(config.light_green_pin)
            self.buzzer = output(config.buzzer_pin)
            self.inputs: dict[Input, ContactInput] = {}
            for name, pin in config.input_pins().items():
                kind = VehicleLoop if name in (Input.LOOP_A, Input.LOOP_B) else ContactInput
                self.inputs[name] = kind(
                    pin,
                    normally_closed=config.is_normally_closed(name),
                    bounce_time=config.bounce_s,
                    pin_factory=pin_factory,
                )
                undo.callback(self.inputs[name].close)
            undo.pop_all()

    def outputs(self) -> dict[str, DigitalOutputDevice]:
        """The fitted single outputs by name (``pulse``, ``lamp``, ``light_red``, ...), not the
        motor relays."""
        named = {"pulse": self.pulse, "lamp": self.lamp, "light_red": self.light_red,
                 "light_green": self.light_green, "buzzer": self.buzzer}  # fmt: skip
        return {name: device for name, device in named.items() if device is not None}

    def levels(self) -> dict[Input, bool]:
        """Which fitted inputs are active now."""
        return {name: bool(device.is_active) for name, device in self.inputs.items()}

    def watch(self, callback: Callable[[Input, bool], None]) -> None:
        """Call ``callback(name, active)`` on every change of every input (gpiozero's thread)."""
        for name, device in self.inputs.items():
            device.when_activated = _bind(callback, name, True)
            device.when_deactivated = _bind(callback, name, False)

    def drive(
        self,
        *,
        motor_open: bool,
        motor_close: bool,
        lamp: bool,
        pulse: bool = False,
        light: Light = Light.RED,
        buzzer: bool = False,
    ) -> None:
        """Set every fitted output; the motor first. With a pulse output, ``motor_open`` and
        ``motor_close`` are not wired anywhere (the machine turned them into ``pulse``)."""
        if self.motor is not None:
            self.motor.drive(motor_open=motor_open, motor_close=motor_close)
        if self.pulse is not None:
            self.pulse.value = pulse
        if self.light_green is not None and light is Light.RED:
            self.light_green.off()  # green off before red on: never both, never neither for long
        if self.light_red is not None:
            self.light_red.value = light is Light.RED
        if self.light_green is not None:
            self.light_green.value = light is Light.GREEN
        if self.lamp is not None:
            self.lamp.value = lamp
        if self.buzzer is not None:
            self.buzzer.value = buzzer

    def stop(self) -> None:
        """Motor relays (or the pulse output) off; the lamp and the light stay as they are."""
        if self.motor is not None:
            self.motor.stop()
        if self.pulse is not None:
            self.pulse.off()

    def close(self) -> None:
        """Every output off, every pin released. Safe to call again."""
        for device in self.inputs.values():
            device.close()
        for single in self.outputs().values():
            if not single.closed:
                single.off()  # a released pin may keep driving its last level
            single.close()
        if self.motor is not None:
            self.motor.close()


def _bind(callback: Callable[[Input, bool], None], name: Input, active: bool) -> Callable[[], None]:
    def changed() -> None:
        callback(name, active)

    return changed
