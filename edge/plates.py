"""Reading licence plates in a frame: produces :class:`PlateRead` values, best first.

The recogniser alone, given a tight, upright plate crop, is both the fastest (~15-20 ms on one
core) and the most accurate path; the text detector on a whole frame is the slow part. So the reader finds
plate *candidates* cheaply and only falls back to the detector when they yield nothing:

1. ``crop``: an image that is already small and plate-shaped is recognised whole.
2. ``colour``: plate-coloured, plate-shaped regions of a downscaled frame
   (:func:`edge.plate_locate.colour_candidates`, ~5 ms), most plate-like first; each is
   rectified from the full-resolution frame and recognised.
3. ``text``: the engine's text detector on the frame scaled to a short side of
   :data:`DETECT_SIDES` [0] (320 px), for plates the colour stage cannot see (washed-out green
   plates, white or black plates, odd lighting); plate-shaped lines are rectified and recognised.
4. ``text_fine``: the detector again at :data:`DETECT_SIDES` [1] for small, distant plates.

A stage runs only when the stages before it found no plate read with at least
:data:`ACCEPT_CONFIDENCE`. Every read is validated (and look-alikes repaired) against the plate
formats; its confidence is calibrated so that it tracks the share of such reads that are right.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from edge.ocr.base import OcrEngine, TextLine
from edge.plate_format import CHINESE, PlateFormats, PlateMatch, match_plate, plate_kind
from edge.plate_locate import (
    Candidate,
    colour_candidates,
    crop_colour,
    overlap,
    rectify,
    text_candidates,
)

logger = logging.getLogger(__name__)

# An image this small and plate-shaped is taken to be a plate crop already.
CROP_MAX_HEIGHT = 120
CROP_ASPECT = (2.0, 6.5)

REC_HEIGHT = 48  # crops are cut at the recogniser's input height
#: Context kept around a candidate's quad (fractions of its width, height): the recogniser was
#: trained on detector boxes, which leave a little room around the characters.
MARGIN = (0.04, 0.10)
#: Crops are cut this much wider than the plate's own aspect ratio. At its natural 3.1:1 a plate
#: spans ~19 CTC frames (one per 8 px of the 48-px-high input) for 8 symbols, too few to keep
#: repeated characters ("999") apart; 1.5x gives ~28 and still fits the 320-px training width.
STRETCH = 1.5
COLOUR_READS = 3  # colour candidates recognised at most per frame
TEXT_READS = 4  # detector candidates recognised at most per stage
STRONG_CANDIDATE = 0.6  # after a plate is read, candidates at least this plate-like are still read
#: A stage that yields a read this confident ends the search: by the calibration such reads are
#: right at least 9 times in 10; a less sure read is worth ~30 ms of detector for a second opinion.
ACCEPT_CONFIDENCE = 0.9
DETECT_SIDES = (320, 480)  # short side of the frame for the detector stages
SAME_PLATE_IOU = 0.3  # reads whose quads overlap this much are of one physical plate


@dataclass(frozen=True)
class PlateRead:
    text: str
    confidence: float  # calibrated: about the share of reads at this confidence that are right
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in frame pixels
    kind: str  # "standard" (7 characters), "new_energy" (8), "special", or "site"
    colour: str = "unknown"  # plate background: blue, yellow, green, white, black or unknown
    quad: tuple[tuple[float, float], ...] = ()  # corners tl, tr, br, bl in frame pixels
    char_scores: tuple[float, ...] = ()  # per character, after repair
    raw: str = ""  # the recogniser's text before validation and repair
    stage: str = ""  # crop, colour, text or text_fine
    crop: np.ndarray | None = field(default=None, compare=False, repr=False)  # the upright crop read


# -- confidence calibration ------------------------------------------------------------------------

#: Raw score (product of per-character probabilities) -> share of exact reads, as a piecewise
#: linear, monotone map. Fitted on degraded synthetic gate frames by ``python -m bench.calibration``
#: (never on real photos); see README "Plate reading". The top is held below 1: even the surest
#: bin of a thousand frames does not prove a reader that never errs.
CALIBRATION: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (0.4505, 0.3837),
    (0.8303, 0.599),
    (0.9407, 0.8483),
    (0.9653, 0.9356),
    (0.977, 0.9702),
    (0.9843, 0.9733),
    (0.9888, 0.9767),
    (0.9919, 0.9831),
    (0.9942, 0.99),
    (0.9968, 0.99),
    (1.0, 0.99),
)  # python -m bench.calibration --frames 1000 --seed 20240607: 976 reads, 87.2% exact


def calibrated(raw: float) -> float:
    """Map a raw score 0..1 to a calibrated confidence with :data:`CALIBRATION`."""
    xs, ys = zip(*CALIBRATION, strict=True)
    return float(np.interp(min(max(raw, 0.0), 1.0), xs, ys))


def raw_score(match: PlateMatch, line: TextLine) -> float:
    """Product of the plate's per-character probabilities (the line score if there are none)."""
    if match.scores and line.char_scores:
        return float(math.prod(match.scores))
    return float(line.score)


def combine(reads: Sequence[PlateRead]) -> tuple[PlateRead, int]:
    """Vote several reads of one plate into one; returns it and how many reads agree with it.

    The length (7 or 8 characters) goes to the length with the largest summed confidence; each
    position then to the character with the largest summed weight among reads of that length,
    a read's weight being its confidence times its probability for that character. The result keeps the most confident
    read that agrees with it exactly (its crop is the best crop) and that read's confidence. A
    plate assembled from disagreeing reads, vouched for by none of them, gets the most
    confident read's confidence times the weakest position's share of the vote; a mix that is
    no valid plate gives way to the most confident read.
    """
    if not reads:
        raise ValueError("combine() needs at least one read")
    strongest = max(reads, key=lambda r: r.confidence)
    by_length: dict[int, float] = {}
    for read in reads:
        by_length[len(read.text)] = by_length.get(len(read.text), 0.0) + read.confidence
    length = max(by_length, key=lambda n: (by_length[n], n))
    same = [r for r in reads if len(r.text) == length]
    chars, shares = [], []
    for i in range(length):
        weights: dict[str, float] = {}
        for read in same:
            weight = read.confidence * (read.char_scores[i] if len(read.char_scores) == length else 1.0)
            weights[read.text[i]] = weights.get(read.text[i], 0.0) + weight
        winner = max(weights, key=lambda c: weights[c])
        chars.append(winner)
        shares.append(weights[winner] / max(sum(weights.values()), 1e-9))
    text = "".join(chars)
    agreeing = [r for r in reads if r.text == text]
    if agreeing:
        return max(agreeing, key=lambda r: r.confidence), len(agreeing)
    kind = plate_kind(text)
    if kind is None:
        return strongest, sum(r.text == strongest.text for r in reads)
    confidence = round(strongest.confidence * min(shares), 4)
    return replace(strongest, text=text, kind=kind, confidence=confidence), 0


# -- reader ------------------------------------------------------------------------------------------


class PlateReader:
    """Finds plates with an OCR engine and keeps only texts that are valid plates."""

    def __init__(
        self,
        engine: OcrEngine,
        *,
        formats: PlateFormats = CHINESE,
        detect_sides: Sequence[int] = DETECT_SIDES,
    ) -> None:
        self.engine = engine
        self.formats = formats
        self.detect_sides = tuple(detect_sides)

    def read(self, image: np.ndarray) -> list[PlateRead]:
        """Every plate found in ``image``, highest confidence first."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 8:
            raise ValueError(
                f"expected a BGR image (uint8) of at least 8x8 pixels, got {image.dtype} {image.shape}"
            )
        reads: list[PlateRead] = []
        if self._looks_like_crop(image):
            # A tight crop: the detector upscales it and returns fragments; recognise it whole.
            h, w = image.shape[:2]
            quad = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
            reads += self._read([Candidate(quad, "unknown", 1.0, "crop")], image, "crop", tight=True)
            if self._done(reads):
                return self._finish(reads)
        reads += self._colour_stage(image)
        if self._done(reads):
            return self._finish(reads)
        for side, stage in zip(self.detect_sides, ("text", "text_fine"), strict=False):
            cands = text_candidates(image, self.engine.detect(image, min_side=side))
            cands = [c for c in cands if not self._already_read(c, reads)]
            reads += self._read(cands[:TEXT_READS], image, stage)
            if self._done(reads):
                break
        return self._finish(reads)

    def best(self, image: np.ndarray) -> PlateRead | None:
        reads = self.read(image)
        return reads[0] if reads else None

    # -- stages ----------------------------------------------------------------------------------
    def _colour_stage(self, image: np.ndarray) -> list[PlateRead]:
        reads: list[PlateRead] = []
        for cand in colour_candidates(image)[:COLOUR_READS]:
            if self._done(reads) and cand.score < STRONG_CANDIDATE:
                break
            reads += self._read([cand], image, "colour")
        return reads

    def _read(
        self,
        cands: Sequence[Candidate],
        image: np.ndarray,
        stage: str,
        *,
        tight: bool = False,
    ) -> list[PlateRead]:
        """Recognise each candidate; ``tight`` crops are read as they are (no margin, no stretch)."""
        if not cands:
            return []
        margin, stretch = ((0.0, 0.0), 1.0) if tight else (MARGIN, STRETCH)
        crops = [rectify(image, c.quad, height=REC_HEIGHT, margin=margin, stretch=stretch) for c in cands]
        out = []
        for cand, crop, line in zip(cands, crops, self.engine.recognise(crops), strict=True):
            if line is None:
                continue
            match = match_plate(line.text, line.char_scores, line.alternatives, self.formats)
            if match is None:
                logger.debug("%s candidate %s read %r: not a plate", stage, cand.box, line.text)
                continue
            colour = crop_colour(crop)
            if match.kind == "new_energy" and colour not in ("green", "yellow"):
                colour = "green"  # GA 36-2018: new-energy plates are green (large vehicles yellow-green)
            h, w = image.shape[:2]
            x1, y1, x2, y2 = cand.box
            out.append(
                PlateRead(
                    text=match.text,
                    confidence=round(calibrated(raw_score(match, line)), 4),
                    box=(max(0, x1), max(0, y1), min(w, x2), min(h, y2)),
                    kind=match.kind,
                    colour=colour,
                    quad=tuple((float(x), float(y)) for x, y in cand.quad),
                    char_scores=tuple(round(s, 4) for s in match.scores),
                    raw=line.text,
                    stage=stage,
                    crop=crop,
                )
            )
        return out

    # -- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _done(reads: Sequence[PlateRead]) -> bool:
        return any(r.confidence >= ACCEPT_CONFIDENCE for r in reads)

    @staticmethod
    def _already_read(cand: Candidate, reads: Sequence[PlateRead]) -> bool:
        """A candidate where a plate was already read with enough confidence is not read again."""
        return any(
            r.confidence >= ACCEPT_CONFIDENCE
            and overlap(cand.quad, np.array(r.quad, np.float32)) > SAME_PLATE_IOU
            for r in reads
        )

    @staticmethod
    def _finish(reads: list[PlateRead]) -> list[PlateRead]:
        """One read per physical plate, most confident first. Several reads of one plate (crops
        from different stages) are voted into one, as the frames of a passage are."""
        groups: list[list[PlateRead]] = []
        for read in sorted(reads, key=lambda r: r.confidence, reverse=True):
            quad = np.array(read.quad, np.float32)
            for group in groups:
                if overlap(quad, np.array(group[0].quad, np.float32)) > SAME_PLATE_IOU:
                    group.append(read)
                    break
            else:
                groups.append([read])
        return sorted((combine(g)[0] for g in groups), key=lambda r: r.confidence, reverse=True)

    @staticmethod
    def _looks_like_crop(image: np.ndarray) -> bool:
        h, w = image.shape[:2]
        return h <= CROP_MAX_HEIGHT and CROP_ASPECT[0] <= w / max(h, 1) <= CROP_ASPECT[1]
