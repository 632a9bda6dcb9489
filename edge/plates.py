"""Reading licence plates in a frame: produces :class:`PlateRead` values, best first."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from edge.ocr.base import OcrEngine
from edge.plate_format import find_plate, plate_kind

logger = logging.getLogger(__name__)

# An image this small and plate-shaped is taken to be a plate crop already.
CROP_MAX_HEIGHT = 120
CROP_ASPECT = (2.0, 6.5)


@dataclass(frozen=True)
class PlateRead:
    text: str
    confidence: float
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in frame pixels
    kind: str  # "standard" (7 characters) or "new_energy" (8)


class PlateReader:
    """Finds plates with an OCR engine and keeps only texts that are valid plates."""

    def __init__(self, engine: OcrEngine) -> None:
        self.engine = engine

    def read(self, image: np.ndarray) -> list[PlateRead]:
        """Every plate found in ``image``, highest confidence first."""
        if self._looks_like_crop(image):
            # A tight crop: the detector upscales it and returns fragments; recognise it whole.
            line = self.engine.read_line(image)
            plate = find_plate(line.text) if line else None
            if line and plate:
                return [PlateRead(plate, line.score, line.box, plate_kind(plate) or "standard")]
        reads = []
        for found in self.engine.find_and_read(image):
            plate = find_plate(found.text)
            if plate:
                reads.append(PlateRead(plate, found.score, found.box, plate_kind(plate) or "standard"))
        reads.sort(key=lambda r: r.confidence, reverse=True)
        return reads

    def best(self, image: np.ndarray) -> PlateRead | None:
        reads = self.read(image)
        return reads[0] if reads else None

    @staticmethod
    def _looks_like_crop(image: np.ndarray) -> bool:
        h, w = image.shape[:2]
        return h <= CROP_MAX_HEIGHT and CROP_ASPECT[0] <= w / max(h, 1) <= CROP_ASPECT[1]
