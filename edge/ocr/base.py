"""The interface every OCR engine implements.

A plate reader needs two things from an engine: *where* text lines are in a frame (``detect``) and
*what* a tight, upright line crop says (``recognise``). ``find_and_read`` does both in one call
(the engine's own whole-frame pipeline); ``read_line`` recognises one crop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Quad = np.ndarray  # (4, 2) float32 corners: top-left, top-right, bottom-right, bottom-left


@dataclass(frozen=True)
class TextLine:
    """One line of text: raw text, engine score 0..1, box in image pixels.

    ``char_scores`` holds one probability per character of ``text`` when the engine exposes them
    (RapidOCR does, from its CTC output); ``alternatives`` holds, per character, the engine's most
    probable characters at that point as ``(char, probability)`` pairs, best first. Both are empty
    when the engine does not expose them.
    """

    text: str
    score: float
    box: tuple[int, int, int, int]  # x1, y1, x2, y2
    char_scores: tuple[float, ...] = ()
    alternatives: tuple[tuple[tuple[str, float], ...], ...] = field(default=(), repr=False)


class OcrEngine(ABC):
    """Finds and reads text lines. Engines are not thread-safe: one per thread."""

    name: str
    #: False for engines whose offline models cannot read the Chinese province character.
    reads_chinese: bool = True

    @abstractmethod
    def find_and_read(self, image: np.ndarray) -> list[TextLine]:
        """Detect text lines in a whole BGR image and recognise each (the engine's own slow path)."""

    @abstractmethod
    def read_line(self, image: np.ndarray) -> TextLine | None:
        """Recognise a BGR image that already is one tight line of text (e.g. a plate crop)."""

    def recognise(self, crops: Sequence[np.ndarray]) -> list[TextLine | None]:
        """Recognise several line crops (one result per crop, None where nothing was read)."""
        return [self.read_line(crop) for crop in crops]

    @abstractmethod
    def detect(self, image: np.ndarray, *, min_side: int) -> list[Quad]:
        """Text-line quadrilaterals in a BGR image, run with its shorter side scaled to ``min_side``."""
