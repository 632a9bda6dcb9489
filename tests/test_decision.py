"""The gate's decision policy."""

from __future__ import annotations

import pytest

from edge.decision import Policy, decide
from protocol import Action, Direction, GateMode, Reason

POLICY = Policy(allow=frozenset({"鄂A00001"}), deny=frozenset({"鄂A66666"}), locked=frozenset({"鄂A77777"}))
CLOSED = Policy(mode=GateMode.CLOSED, allow=frozenset({"鄂A00001"}))
LOCKDOWN = Policy(mode=GateMode.LOCKDOWN)
E, X = Direction.ENTRY, Direction.EXIT


@pytest.mark.parametrize(
    ("direction", "plate", "free", "policy", "expected"),
    [
        (E, "鄂A12345", 5, POLICY, (Action.OPEN, Reason.SPACE_FREE)),
        (E, "鄂A12345", 0, POLICY, (Action.DENY, Reason.LOT_FULL)),
        (E, "鄂A00001", 0, POLICY, (Action.OPEN, Reason.ALLOW_LISTED)),
        (E, "鄂A66666", 5, POLICY, (Action.DENY, Reason.DENY_LISTED)),
        (E, "鄂A12345", None, POLICY, (Action.OPEN, Reason.SPACE_FREE)),  # offline: unknown counts as room
        (E, None, 5, POLICY, (Action.DENY, Reason.NO_PLATE_READ)),
        (E, None, 5, Policy(open_without_plate=True), (Action.OPEN, Reason.NO_PLATE_READ)),
        (E, None, 0, Policy(open_without_plate=True), (Action.DENY, Reason.LOT_FULL)),
        (X, "鄂A66666", 0, POLICY, (Action.OPEN, Reason.EXIT)),  # never trap a car inside
        (X, None, None, POLICY, (Action.OPEN, Reason.EXIT)),
        (E, "鄂A77777", 5, POLICY, (Action.DENY, Reason.LOCKED)),
        (E, "鄂A00001", 5, CLOSED, (Action.DENY, Reason.LOT_CLOSED)),  # closed beats the allow list
        (X, "鄂A12345", 5, CLOSED, (Action.OPEN, Reason.EXIT)),
        (E, "鄂A00001", 5, LOCKDOWN, (Action.DENY, Reason.LOCKDOWN)),
        (X, "鄂A12345", 5, LOCKDOWN, (Action.DENY, Reason.LOCKDOWN)),
    ],
)
def test_decide(
    direction: Direction, plate: str | None, free: int | None, policy: Policy, expected: tuple[Action, Reason]
) -> None:
    decision = decide(direction, plate, free, policy)
    assert (decision.action, decision.reason) == expected
