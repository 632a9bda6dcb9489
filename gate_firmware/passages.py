"""Entries and exits from two loops: a vehicle shows up on one loop and leaves from the other.

``loop_a`` is the outer loop, ``loop_b`` the one under/after the arm. A vehicle that first covers
loop_a and last leaves loop_b entered (``entry``); b then a is an exit (``exit``). One that
leaves from the loop it came on backed away and is not counted. Whether a passage was authorised
(``entry``/``exit``) or not (``tailgate``) is the machine's business; this only tells direction.

What two presence loops can tell apart, and so what this counts exactly once per vehicle:

- the loops lie so close that a car always covers part of both at once (a vehicle that is never
  on both, a gap longer than it, is not counted);
- each loop clears between two vehicles (a follower arrives on the first loop after the vehicle
  ahead left it, e.g. while that one is still on the far loop): followers (tailgaters) are
  counted one by one. Vehicles bumper to bumper, keeping the first loop covered the whole time,
  count as one;
- a vehicle does not come back onto its first loop after having cleared it and then back out
  the way it came: that reads exactly like a passage with the next vehicle arriving on the first
  loop, and is counted as one passage;
- vehicles going opposite ways are not on the loops at the same time (one lane).
"""

from __future__ import annotations

from gate_firmware.states import BarrierEvent, Input

_LOOPS = (Input.LOOP_A, Input.LOOP_B)
_PASSAGE = {Input.LOOP_A: BarrierEvent.ENTRY, Input.LOOP_B: BarrierEvent.EXIT}


def _other(loop: Input) -> Input:
    return Input.LOOP_B if loop is Input.LOOP_A else Input.LOOP_A


class PassageTracker:
    """Follows the vehicle on the two loops; :meth:`changed` reports each completed passage."""

    def __init__(self, *, loop_a: bool = False, loop_b: bool = False) -> None:
        self._occupied = {Input.LOOP_A: loop_a, Input.LOOP_B: loop_b}
        self._origin: Input | None = None  # the loop the tracked vehicle came on (None: not known)
        self._reached_far = False  # it has covered the other loop
        self._left_origin = False  # ... and then cleared the loop it came on

    def changed(self, loop: Input, occupied: bool) -> BarrierEvent | None:
        """One loop became occupied or clear; returns the passage it completed (``ENTRY`` or
        ``EXIT``), if any."""
        if loop not in _LOOPS:
            raise ValueError(f"{loop} is not a vehicle loop")
        if self._occupied[loop] == occupied:
            return None
        zone_was_empty = not any(self._occupied.values())
        self._occupied[loop] = occupied
        if occupied:
            self._arrived(loop, zone_was_empty)
            return None
        return self._left(loop)

    def _arrived(self, loop: Input, zone_was_empty: bool) -> None:
        if zone_was_empty:
            self._track(loop)
        elif self._origin is not None and loop is _other(self._origin):
            self._reached_far = True

    def _left(self, loop: Input) -> BarrierEvent | None:
        origin = self._origin
        if origin is None:  # occupied since before we looked: wait for an empty zone
            return None
        far_occupied = self._occupied[_other(origin)]
        if loop is origin:
            if self._reached_far and far_occupied:
                self._left_origin = True
            elif not far_occupied:
                self._origin = None  # backed away before reaching the other loop
            return None
        if not self._left_origin:  # still on the loop it came on: it backed off the far loop
            self._reached_far = False
            return None
        event = _PASSAGE[origin]
        if self._occupied[origin]:
            self._track(origin)  # a follower is already on the first loop
        else:
            self._origin = None
        return event

    def _track(self, origin: Input) -> None:
        self._origin, self._reached_far, self._left_origin = origin, False, False
