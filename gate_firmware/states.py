"""The barrier's names: its states, inputs, outputs, the events it reports and why it faults."""

from __future__ import annotations

from enum import StrEnum


class BarrierState(StrEnum):
    """Where the barrier arm is and what its motor does, as the controller knows it."""

    CLOSED = "CLOSED"  # at the closed limit switch, motor off
    OPENING = "OPENING"  # open relay on, until the open limit switch
    OPEN = "OPEN"  # at the open limit switch, motor off, close timers running (unless held by rule)
    CLOSING = "CLOSING"  # close relay on, until the closed limit switch
    STOPPED = (
        "STOPPED"  # between the limits, motor off (button, power-up mid-way); closes after open_timeout_s
    )
    FAULT = "FAULT"  # motor off until an operator resets it with the button; see FaultReason
    EMERGENCY_OPEN = "EMERGENCY_OPEN"  # emergency input active: drive open, stay open, ignore commands


class Input(StrEnum):
    """The barrier's input contacts, named as in gate scripts and the wiring table."""

    LOOP_A = "loop_a"  # outer loop: an entering vehicle crosses it first
    LOOP_B = "loop_b"  # loop under/after the arm: part of the safety zone
    PHOTOCELL = "photocell"  # beam across the arm's path: part of the safety zone
    LIMIT_OPEN = "limit_open"  # the arm is fully up
    LIMIT_CLOSED = "limit_closed"  # the arm is fully down
    BUTTON = "button"  # attendant's push-button: open / stop / close, raise while lowering, fault reset
    EMERGENCY = "emergency"  # fire alarm or emergency switch: hold the barrier open


SAFETY_ZONE = frozenset({Input.LOOP_B, Input.PHOTOCELL})
"""Inputs that mean "something is in the arm's path": the arm never closes while one is active.
They are also the monitored safety sensors: one active longer than ``safety_stuck_s`` raises the
``safety_stuck`` alarm, which disables auto-close."""


class FaultReason(StrEnum):
    """Why the barrier went to FAULT (or, under an emergency, stopped its motor)."""

    TRAVEL_TIMEOUT = "travel_timeout"  # the motor ran travel_timeout_s and the limit switch never closed
    WRONG_LIMIT = "wrong_limit"  # the other end's limit switch closed while moving (motor wired reversed?)
    ARM_MOVED = "arm_moved"  # the arm left its end position with the motor off (hit, broken off, forced)
    BOTH_LIMITS = "both_limits"  # both limit switches active at once: a wiring fault


class Alarm(StrEnum):
    """A reported problem that does not stop the motor, but changes what the barrier does by itself."""

    SAFETY_STUCK = "safety_stuck"  # loop_b or the photocell active longer than safety_stuck_s: no auto-close
    EDGE_LOST = "edge_lost"  # no heartbeat from the edge application for edge_heartbeat_s: on_edge_lost


class BarrierEvent(StrEnum):
    """Something worth reporting that happened at the barrier, beside a change of state.

    The value is what ``parkgate gate simulate`` and the socket print in ``event``.
    """

    ENTRY = "entry"  # a vehicle crossed loop_a then loop_b, on an authorisation (open command/button)
    EXIT = "exit"  # a vehicle crossed loop_b then loop_a, on an authorisation
    TAILGATE = "tailgate"  # a vehicle crossed (counted in its direction) with no authorisation left
    REVERSAL = "reversal"  # the safety zone became occupied while closing; the arm went back up
    FAULT_TRAVEL_TIMEOUT = "fault:travel_timeout"
    FAULT_WRONG_LIMIT = "fault:wrong_limit"
    FAULT_ARM_MOVED = "fault:arm_moved"
    FAULT_BOTH_LIMITS = "fault:both_limits"
    FAULT_SAFETY_STUCK = "fault:safety_stuck"  # alarm raised: auto-close off until reset
    FAULT_EDGE_LOST = "fault:edge_lost"  # alarm raised: the edge's heartbeat stopped
    CLEARED_SAFETY_STUCK = "cleared:safety_stuck"  # reset by the button or a close command
    CLEARED_EDGE_LOST = "cleared:edge_lost"  # the edge's heartbeat is back

    @classmethod
    def fault(cls, reason: FaultReason | Alarm) -> BarrierEvent:
        """``fault:<reason>`` for a fault or a raised alarm."""
        return cls(f"fault:{reason.value}")

    @classmethod
    def cleared(cls, alarm: Alarm) -> BarrierEvent:
        return cls(f"cleared:{alarm.value}")

    @property
    def is_fault(self) -> bool:
        return self.value.startswith("fault:")

    @property
    def is_passage(self) -> bool:
        return self in (BarrierEvent.ENTRY, BarrierEvent.EXIT, BarrierEvent.TAILGATE)


class EdgeLostPolicy(StrEnum):
    """What the barrier does when the edge application's heartbeat stops (``on_edge_lost``)."""

    STAY = "stay"  # finish the move under way, then keep the arm where it is (no auto-close)
    OPEN_HOLD = "open_hold"  # raise the arm and hold it up (free flow, green light) until the edge is back
    CLOSE_WHEN_CLEAR = "close_when_clear"  # lower the arm as soon as the safety zone is clear


class MotorOutput(StrEnum):
    """How the Pi drives the barrier's motor (``motor_output``)."""

    RELAYS = "relays"  # open and close relays, each held on until its limit switch
    PULSE = "pulse"  # one pulse output to a barrier controller's step-by-step input


class Light(StrEnum):
    """The traffic light for drivers."""

    RED = "red"
    GREEN = "green"  # the arm is up and a vehicle may go: authorised, emergency, or held open by rule
