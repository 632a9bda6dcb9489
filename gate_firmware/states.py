"""The barrier's names: its states, its inputs, the events it reports and why it faults."""

from __future__ import annotations

from enum import StrEnum


class BarrierState(StrEnum):
    """Where the barrier arm is and what its motor does, as the controller knows it."""

    CLOSED = "CLOSED"  # at the closed limit switch, motor off
    OPENING = "OPENING"  # open relay on, until the open limit switch
    OPEN = "OPEN"  # at the open limit switch, motor off, close timers running
    CLOSING = "CLOSING"  # close relay on, until the closed limit switch
    STOPPED = "STOPPED"  # between the limits, motor off (button, power-up mid-way); waits for a command
    FAULT = "FAULT"  # motor off until an operator resets it with the button; see FaultReason
    EMERGENCY_OPEN = "EMERGENCY_OPEN"  # emergency input active: drive open, stay open, ignore commands


class Input(StrEnum):
    """The barrier's input contacts, named as in gate scripts and the wiring table."""

    LOOP_A = "loop_a"  # outer loop: an entering vehicle crosses it first
    LOOP_B = "loop_b"  # loop under/after the arm: part of the safety zone
    PHOTOCELL = "photocell"  # beam across the arm's path: part of the safety zone
    LIMIT_OPEN = "limit_open"  # the arm is fully up
    LIMIT_CLOSED = "limit_closed"  # the arm is fully down
    BUTTON = "button"  # attendant's push-button: open / stop / close, and fault reset
    EMERGENCY = "emergency"  # fire alarm or emergency switch: hold the barrier open


SAFETY_ZONE = frozenset({Input.LOOP_B, Input.PHOTOCELL})
"""Inputs that mean "something is in the arm's path": the arm never closes while one is active."""


class BarrierEvent(StrEnum):
    """Something worth reporting that happened at the barrier, beside a change of state."""

    PASSAGE_IN = "passage_in"  # a vehicle crossed loop_a then loop_b (entered)
    PASSAGE_OUT = "passage_out"  # a vehicle crossed loop_b then loop_a (left)
    REVERSAL = "reversal"  # the safety zone became occupied while closing; the arm went back up
    FAULT = "fault"  # the controller stopped the motor and needs an operator (see Step.fault)


class FaultReason(StrEnum):
    """Why the barrier went to FAULT (or, under an emergency, stopped its motor)."""

    TRAVEL_TIMEOUT = "travel_timeout"  # the motor ran travel_timeout_s and the limit switch never closed
    WRONG_LIMIT = "wrong_limit"  # the other end's limit switch closed while moving (motor wired reversed?)
    ARM_MOVED = "arm_moved"  # the arm left its end position with the motor off (hit, broken off, forced)
    BOTH_LIMITS = "both_limits"  # both limit switches active at once: a wiring fault
