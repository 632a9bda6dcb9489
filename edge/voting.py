"""One decision per vehicle: the plate reads of a passage's frames voted into one plate.

A camera sees a vehicle in several frames as it drives up. Each frame's read may differ in one
character (a reflection, motion blur); voting over the frames, per character position and
weighted by each read's confidence, gives a better plate than any one frame. The most confident
read of the voted plate is kept, and with it the best crop.

A passage is decided (:class:`Vote`) as soon as the evidence is good enough, so the barrier does
not wait for the vehicle to stop: one read at least ``sure`` confident, or ``min_agree`` reads
that agree exactly, or after ``max_frames`` frames or ``max_seconds`` seconds with whatever was
read (perhaps nothing: a vehicle without a readable plate). After the decision the rest of the
passage is ignored - one trigger per vehicle per lane - until :meth:`PassageVoter.vehicle_left`;
the next passage may then carry the same plate again (a car that left and came back).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edge.plates import PlateRead, combine


@dataclass(frozen=True)
class Vote:
    """The outcome of one passage."""

    text: str | None  # None: the vehicle's plate was not read
    confidence: float
    kind: str | None
    colour: str
    frames: int  # frames seen in the passage before the decision
    reads: int  # of which had a plate read
    agreeing: int  # reads exactly equal to the voted plate
    best: PlateRead | None = field(default=None, repr=False)  # its crop is the passage's best crop


def vote(reads: Sequence[PlateRead], frames: int | None = None) -> Vote:
    """Vote the reads of one passage into one plate with :func:`edge.plates.combine`: per
    character position, weighted by each read's per-character probability."""
    frames = len(reads) if frames is None else frames
    if not reads:
        return Vote(None, 0.0, None, "unknown", frames, 0, 0, None)
    best, agreeing = combine(reads)
    return Vote(best.text, best.confidence, best.kind, best.colour, frames, len(reads), agreeing, best)


class PassageVoter:
    """Collects the reads of one lane's current passage and decides it once."""

    def __init__(
        self, *, max_frames: int = 6, max_seconds: float = 3.0, min_agree: int = 2, sure: float = 0.97
    ) -> None:
        if max_frames < 1 or min_agree < 1 or max_seconds <= 0:
            raise ValueError("max_frames and min_agree must be >= 1 and max_seconds > 0")
        self.max_frames = max_frames
        self.max_seconds = max_seconds
        self.min_agree = min_agree
        self.sure = sure
        self._reads: list[PlateRead] = []
        self._frames = 0
        self._started: float | None = None
        self._decided = False

    @property
    def active(self) -> bool:
        """A passage has started (at least one frame seen since the last vehicle left)."""
        return self._started is not None

    @property
    def decided(self) -> bool:
        """This passage has produced its vote; further frames are ignored until the vehicle leaves."""
        return self._decided

    def add(self, read: PlateRead | None, now: float) -> Vote | None:
        """Add one frame's best read (None: nothing read). Returns the vote once it is decided."""
        if self._decided:
            return None
        if self._started is None:
            self._started = now
        self._frames += 1
        if read is not None:
            self._reads.append(read)
        if self._ready(read, now):
            return self._decide()
        return None

    def vehicle_left(self, now: float) -> Vote | None:
        """The vehicle has gone: decide a passage still undecided, then start afresh."""
        result = self._decide() if self.active and not self._decided else None
        self._reads, self._frames, self._started, self._decided = [], 0, None, False
        return result

    def expire(self, now: float) -> Vote | None:
        """Decide a passage that has run past ``max_seconds`` without a new frame."""
        if (
            self.active
            and not self._decided
            and self._started is not None
            and now - self._started >= self.max_seconds
        ):
            return self._decide()
        return None

    def _ready(self, read: PlateRead | None, now: float) -> bool:
        if read is not None and read.confidence >= self.sure:
            return True
        if read is not None and sum(r.text == read.text for r in self._reads) >= self.min_agree:
            return True
        assert self._started is not None
        return self._frames >= self.max_frames or now - self._started >= self.max_seconds

    def _decide(self) -> Vote:
        self._decided = True
        return vote(self._reads, self._frames)
