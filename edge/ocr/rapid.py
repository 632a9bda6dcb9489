"""RapidOCR (PP-OCRv4 ONNX models shipped inside ``rapidocr-onnxruntime``; nothing is downloaded)."""

from __future__ import annotations

import logging

import numpy as np

from edge.errors import EngineUnavailable
from edge.ocr.base import OcrEngine, TextLine

logger = logging.getLogger(__name__)


def _box(points: object) -> tuple[int, int, int, int]:
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    x1, y1 = pts.min(axis=0)
    x2, y2 = pts.max(axis=0)
    return round(float(x1)), round(float(y1)), round(float(x2)), round(float(y2))


class RapidOcrEngine(OcrEngine):
    name = "rapidocr"

    def __init__(self, *, threads: int = 0) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as err:
            raise EngineUnavailable(
                "RapidOCR is not installed: pip install --no-deps rapidocr-onnxruntime==1.4.4 "
                f"(deploy/setup.sh does this) [{err}]"
            ) from None
        n = threads if threads > 0 else -1
        # The angle classifier is off: plates are upright within a few degrees at a gate.
        self._ocr = RapidOCR(use_cls=False, intra_op_num_threads=n, inter_op_num_threads=1 if n > 0 else -1)
        logging.getLogger("RapidOCR").setLevel(logging.WARNING)

    def find_and_read(self, image: np.ndarray) -> list[TextLine]:
        result, _ = self._ocr(image, use_cls=False)
        return [TextLine(str(text), float(score), _box(points)) for points, text, score in result or []]

    def read_line(self, image: np.ndarray) -> TextLine | None:
        result, _ = self._ocr(image, use_det=False, use_cls=False)
        if not result:
            return None
        text, score = result[0][0], result[0][1]
        h, w = image.shape[:2]
        return TextLine(str(text), float(score), (0, 0, w, h))
