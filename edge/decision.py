"""The gate's decision policy: pure, no IO. Given what was read and what is known, open or deny."""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol import Action, Decision, Direction, Reason


@dataclass(frozen=True)
class Policy:
    """What the gate knows when it decides. ``free`` is None while no availability was received."""

    allow: frozenset[str] = field(default_factory=frozenset)
    deny: frozenset[str] = field(default_factory=frozenset)
    open_without_plate: bool = False


def decide(direction: Direction, plate: str | None, free: int | None, policy: Policy) -> Decision:
    """Exits always open (a car is never trapped inside); entries open unless denied or full.

    Entry rules, first match wins: deny-listed -> deny; allow-listed -> open even when full;
    lot known to be full -> deny; no plate read -> per policy; otherwise open. An unknown
    free count (cloud not heard yet) is treated as room: the gate keeps working offline.
    """
    if direction is Direction.EXIT:
        return Decision(action=Action.OPEN, reason=Reason.EXIT)
    if plate is not None and plate in policy.deny:
        return Decision(action=Action.DENY, reason=Reason.DENY_LISTED)
    if plate is not None and plate in policy.allow:
        return Decision(action=Action.OPEN, reason=Reason.ALLOW_LISTED)
    if free is not None and free <= 0:
        return Decision(action=Action.DENY, reason=Reason.LOT_FULL)
    if plate is None:
        action = Action.OPEN if policy.open_without_plate else Action.DENY
        return Decision(action=action, reason=Reason.NO_PLATE_READ)
    return Decision(action=Action.OPEN, reason=Reason.SPACE_FREE)
