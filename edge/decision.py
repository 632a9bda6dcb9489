"""The gate's decision policy: pure, no IO. Given what was read and what is known, open or deny."""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol import Action, Decision, Direction, GateMode, Reason


@dataclass(frozen=True)
class Policy:
    """What the gate knows when it decides: its lists and its operating mode."""

    allow: frozenset[str] = field(default_factory=frozenset)
    deny: frozenset[str] = field(default_factory=frozenset)
    locked: frozenset[str] = field(default_factory=frozenset)
    open_without_plate: bool = False
    mode: GateMode = GateMode.NORMAL


def _deny(reason: Reason) -> Decision:
    return Decision(action=Action.DENY, reason=reason)


def decide(direction: Direction, plate: str | None, free: int | None, policy: Policy) -> Decision:
    """Open or deny one vehicle. ``free`` is None while the cloud has not been heard from.

    Lockdown opens nothing by itself (a remote "open" still can). Otherwise exits always open: a
    car is never trapped inside. Entries, first match wins: lot closed -> deny; deny- or
    lock-listed -> deny; allow-listed -> open even when full; lot known to be full -> deny; no
    plate read -> per policy; otherwise open. An unknown free count is treated as room, so the
    gate keeps working offline.
    """
    if policy.mode is GateMode.LOCKDOWN:
        return _deny(Reason.LOCKDOWN)
    if direction is Direction.EXIT:
        return Decision(action=Action.OPEN, reason=Reason.EXIT)
    if policy.mode is GateMode.CLOSED:
        return _deny(Reason.LOT_CLOSED)
    if plate is not None and plate in policy.deny:
        return _deny(Reason.DENY_LISTED)
    if plate is not None and plate in policy.locked:
        return _deny(Reason.LOCKED)
    if plate is not None and plate in policy.allow:
        return Decision(action=Action.OPEN, reason=Reason.ALLOW_LISTED)
    if free is not None and free <= 0:
        return _deny(Reason.LOT_FULL)
    if plate is None:
        return Decision(
            action=Action.OPEN if policy.open_without_plate else Action.DENY, reason=Reason.NO_PLATE_READ
        )
    return Decision(action=Action.OPEN, reason=Reason.SPACE_FREE)
