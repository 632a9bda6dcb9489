"""The interface every OCR engine implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TextLine:
    """One line of text found in an image: raw text, engine score 0..1, box in image pixels."""

    text: str
    score: float
    box: tuple[int, int, int, int]  # x1, y1, x2, y2


class OcrEngine(ABC):
    """Finds and reads text lines. Engines are not thread-safe: one per thread."""

    name: str

    @abstractmethod
    def find_and_read(self, image: np.ndarray) -> list[TextLine]:
        """Detect text lines in a whole BGR image and recognise each."""

    @abstractmethod
    def read_line(self, image: np.ndarray) -> TextLine | None:
        """Recognise a BGR image that already is one tight line of text (e.g. a plate crop)."""
