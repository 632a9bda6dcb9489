"""The barrier's states and the events it reports."""

from __future__ import annotations

from enum import StrEnum


class BarrierState(StrEnum):
    """Where the barrier arm is, as far as the controller knows (time based, no limit switches yet)."""

    CLOSED = "CLOSED"
    OPENING = "OPENING"
    OPEN = "OPEN"
    CLOSING = "CLOSING"


class BarrierEvent(StrEnum):
    """Something worth reporting that happened at the barrier, beside a change of state."""

    PASSAGE = "passage"  # a vehicle was on the loop and left it while the barrier was opening or open
    REVERSAL = "reversal"  # a vehicle arrived on the loop while closing; the barrier went back up
