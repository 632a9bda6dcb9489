"""Barrier-gate firmware for the Raspberry Pi: a pure transition machine and its gpiozero controller.

- :class:`BarrierMachine` (``machine``): the rules and every interlock, no IO, no threads, explicit time.
- :class:`PassageTracker` (``passages``): entries and exits from the order of the two loops.
- :class:`GateController` (``controller``): runs the machine in real time on the GPIO devices.
- :class:`GateDevices`, :class:`ContactInput`, :class:`BarrierMotor` (``hardware``): gpiozero devices.
- ``simulator``: a simulated arm and vehicles on MockFactory pins; ``script``: gate scripts in
  virtual time; ``remote``: the controller over a Unix socket; ``commissioning``: test pulses.
"""

from gate_firmware.config import GateConfig, PinName
from gate_firmware.controller import GateController, Snapshot
from gate_firmware.hardware import BarrierMotor, ContactInput, GateDevices, VehicleLoop
from gate_firmware.machine import BarrierMachine, Counts, Step, Trigger
from gate_firmware.passages import PassageTracker
from gate_firmware.states import (
    Alarm,
    BarrierEvent,
    BarrierState,
    EdgeLostPolicy,
    FaultReason,
    Input,
    Light,
    MotorOutput,
)

__all__ = [
    "Alarm",
    "BarrierEvent",
    "BarrierMachine",
    "BarrierMotor",
    "BarrierState",
    "ContactInput",
    "Counts",
    "EdgeLostPolicy",
    "FaultReason",
    "GateConfig",
    "GateController",
    "GateDevices",
    "Input",
    "Light",
    "MotorOutput",
    "PassageTracker",
    "PinName",
    "Snapshot",
    "Step",
    "Trigger",
    "VehicleLoop",
]
