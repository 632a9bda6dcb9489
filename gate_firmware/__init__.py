"""Barrier-gate firmware for the Raspberry Pi: a pure transition machine and its gpiozero controller.

- :class:`BarrierMachine` (``machine``): the rules, no IO, no threads, explicit time.
- :class:`GateController` (``controller``): runs the machine in real time on the GPIO devices.
- :class:`BarrierMotor`, :class:`VehicleLoop` (``hardware``): the gpiozero devices.
"""

from gate_firmware.config import GateConfig, PinName
from gate_firmware.controller import GateController, Snapshot
from gate_firmware.hardware import BarrierMotor, VehicleLoop
from gate_firmware.machine import BarrierMachine, Counts, Step, Trigger
from gate_firmware.states import BarrierEvent, BarrierState

__all__ = [
    "BarrierEvent",
    "BarrierMachine",
    "BarrierMotor",
    "BarrierState",
    "Counts",
    "GateConfig",
    "GateController",
    "PinName",
    "Snapshot",
    "Step",
    "Trigger",
    "VehicleLoop",
]
