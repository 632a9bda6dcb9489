"""OCR engines behind one interface. ``create_engine(name)`` builds one by name."""

from __future__ import annotations

from collections.abc import Callable

from edge.errors import EngineUnavailable
from edge.ocr.base import OcrEngine, TextLine


def _rapidocr(threads: int) -> OcrEngine:
    from edge.ocr.rapid import RapidOcrEngine

    return RapidOcrEngine(threads=threads)


def _easyocr(threads: int) -> OcrEngine:
    from edge.ocr.easy import EasyOcrEngine

    return EasyOcrEngine(threads=threads)


ENGINES: dict[str, Callable[[int], OcrEngine]] = {"rapidocr": _rapidocr, "easyocr": _easyocr}
DEFAULT_ENGINE = "rapidocr"


def create_engine(name: str = DEFAULT_ENGINE, *, threads: int = 0) -> OcrEngine:
    """Build the engine called ``name``; ``threads`` 0 lets the runtime choose."""
    try:
        factory = ENGINES[name]
    except KeyError:
        raise EngineUnavailable(f"unknown OCR engine {name!r}; choose one of {', '.join(ENGINES)}") from None
    return factory(threads)


__all__ = ["DEFAULT_ENGINE", "ENGINES", "EngineUnavailable", "OcrEngine", "TextLine", "create_engine"]
