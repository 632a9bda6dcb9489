"""RapidOCR's PP-OCRv4 models, run directly on onnxruntime (nothing is downloaded).

The models ship inside the ``rapidocr-onnxruntime`` wheel; only its ``models/`` folder is used.
Running the two ONNX sessions here instead of through the ``RapidOCR`` class:

* skips the angle classifier (plates are upright within a few degrees at a gate) and the
  package's own imports (shapely, pyclipper, yaml), which saves memory and start-up;
* creates the text detector only when it is first needed: a reader whose colour stage finds
  the plate never loads it;
* turns onnxruntime's CPU memory arena off, so the buffers of one large detector run are
  returned instead of being kept for the life of the process;
* exposes the recogniser's CTC output, so every character gets its own probability and the
  engine's runner-up characters (used to repair reads and to calibrate confidence).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.errors import EngineUnavailable
from edge.ocr.base import OcrEngine, Quad, TextLine
from edge.plate_locate import order_quad, rectify

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "rapidocr_onnxruntime"
DET_MODEL = "ch_PP-OCRv4_det_infer.onnx"
REC_MODEL = "ch_PP-OCRv4_rec_infer.onnx"
REC_HEIGHT = 48  # the recogniser's input height
REC_WIDTH = 320  # its training width: shorter lines are padded to it, as RapidOCR does
DET_FULL_SIDE = 736  # RapidOCR's default: the shorter side of a frame is scaled to this
DET_MAX_PIXELS = 500_000  # bounds the detector's input, hence its memory (~1 kB of activations per pixel)
DET_MAX_UPSCALE = 2.0  # enlarging a small image further adds no detail, only cost (and fragments)
DET_THRESH = 0.3  # DB binarisation threshold (RapidOCR defaults)
DET_BOX_THRESH = 0.5  # mean probability a text box must reach
DET_UNCLIP = 1.6  # DB shrinks text regions when training; boxes are grown back by this ratio
ALTERNATIVES = 5  # runner-up characters kept per read character
#: One inference thread by default: a plate crop is too small a job to split, and on a node that
#: also runs MQTT, the outbox and the gate, more threads mostly wait for each other. The
#: detector fallback gains from 2 on an otherwise idle Pi 4/5 (``[ocr] threads = 2``).
DEFAULT_THREADS = 1


def model_dir() -> Path:
    """The ``models`` folder inside the installed rapidocr-onnxruntime package (not imported)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations or not (Path(locations[0]) / "models" / REC_MODEL).is_file():
        raise EngineUnavailable(
            "RapidOCR models are not installed: pip install --no-deps rapidocr-onnxruntime==1.4.4 "
            "(deploy/setup.sh does this)"
        )
    return Path(locations[0]) / "models"


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_cpu_mem_arena = False
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Worker threads that spin while waiting for work burn a core an idle node should leave idle,
    # and slow everything down when the cores are shared.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


@functools.cache
def _malloc_trim() -> object | None:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def _release_heap() -> None:
    """Give the detector's freed activations (~100 MB at 480 px) back to the OS.

    onnxruntime frees them after each run, but glibc keeps freed heap memory for reuse, so one
    fallback frame would leave the process that much larger for good; ``malloc_trim`` returns it
    (a few ms, and only on frames that needed the detector). A no-op without glibc.
    """
    trim = _malloc_trim()
    if callable(trim):
        trim(0)


def _box(points: np.ndarray) -> tuple[int, int, int, int]:
    x1, y1 = points.min(axis=0)
    x2, y2 = points.max(axis=0)
    return round(float(x1)), round(float(y1)), round(float(x2)), round(float(y2))


class CtcDecoder:
    """Greedy CTC decoding that keeps each character's probability and runner-ups."""

    def __init__(self, characters: list[str]) -> None:
        self.characters = ["", *characters, " "]  # blank first, space last (PaddleOCR's layout)

    def decode(self, probs: np.ndarray) -> tuple[str, list[float], list[tuple[tuple[str, float], ...]]]:
        """``probs``: (frames, classes) softmax output of one line."""
        best = probs.argmax(axis=1)
        peak = probs[np.arange(len(best)), best]
        text: list[str] = []
        scores: list[float] = []
        alts: list[tuple[tuple[str, float], ...]] = []
        peak_frame: list[int] = []
        prev = 0
        for t, (cls, p) in enumerate(zip(best.tolist(), peak.tolist(), strict=True)):
            if cls != 0 and cls == prev and text:
                if p > scores[-1]:
                    scores[-1], peak_frame[-1] = p, t
            elif cls != 0:
                text.append(self.characters[cls])
                scores.append(p)
                peak_frame.append(t)
            prev = cls
        for t in peak_frame:
            top = np.argpartition(probs[t], -ALTERNATIVES)[-ALTERNATIVES:]
            top = top[np.argsort(probs[t][top])[::-1]]
            alts.append(tuple((self.characters[c], float(probs[t][c])) for c in top.tolist() if c != 0))
        return "".join(text), scores, alts


class RapidOcrEngine(OcrEngine):
    name = "rapidocr"
    reads_chinese = True

    def __init__(self, *, threads: int = 0) -> None:
        """``threads`` 0 means :data:`DEFAULT_THREADS`."""
        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise EngineUnavailable(
                f"onnxruntime is not installed: pip install onnxruntime [{err}]"
            ) from None
        self._models = model_dir()
        self._threads = threads if threads > 0 else DEFAULT_THREADS
        self._rec = _session(self._models / REC_MODEL, self._threads)
        meta = self._rec.get_modelmeta().custom_metadata_map
        self._decoder = CtcDecoder(meta["character"].splitlines())
        self._det: Any = None

    # -- recognition ---------------------------------------------------------------------------
    def recognise(self, crops: Sequence[np.ndarray]) -> list[TextLine | None]:
        if not crops:
            return []
        inputs = [self._rec_input(crop) for crop in crops]
        width = max(REC_WIDTH, *(x.shape[2] for x in inputs))
        batch = np.zeros((len(inputs), 3, REC_HEIGHT, width), np.float32)
        for i, x in enumerate(inputs):
            batch[i, :, :, : x.shape[2]] = x
        probs = self._rec.run(None, {self._rec.get_inputs()[0].name: batch})[0]
        out: list[TextLine | None] = []
        for crop, p in zip(crops, probs, strict=True):
            text, scores, alts = self._decoder.decode(p)
            if not text:
                out.append(None)
                continue
            h, w = crop.shape[:2]
            out.append(TextLine(text, float(np.mean(scores)), (0, 0, w, h), tuple(scores), tuple(alts)))
        return out

    def read_line(self, image: np.ndarray) -> TextLine | None:
        return self.recognise([image])[0]

    @staticmethod
    def _rec_input(crop: np.ndarray) -> np.ndarray:
        h, w = crop.shape[:2]
        width = max(8, math.ceil(REC_HEIGHT * w / max(h, 1)))
        resized = cv2.resize(crop, (width, REC_HEIGHT), interpolation=cv2.INTER_LINEAR)
        return (resized.astype(np.float32) * (1 / 127.5) - 1.0).transpose(2, 0, 1)

    # -- detection -----------------------------------------------------------------------------
    def detect(self, image: np.ndarray, *, min_side: int) -> list[Quad]:
        if self._det is None:
            self._det = _session(self._models / DET_MODEL, self._threads)
        h, w = image.shape[:2]
        scale = min(min_side / min(h, w), math.sqrt(DET_MAX_PIXELS / (h * w)), DET_MAX_UPSCALE)
        dh, dw = (max(32, round(v * scale / 32) * 32) for v in (h, w))
        x = cv2.resize(image, (dw, dh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        x = (x.astype(np.float32) * (1 / 127.5) - 1.0).transpose(2, 0, 1)[None]
        pred = self._det.run(None, {self._det.get_inputs()[0].name: x})[0][0, 0]
        quads = [q * np.array([w / dw, h / dh], np.float32) for q in _db_boxes(pred)]
        del x, pred
        _release_heap()
        return quads

    def find_and_read(self, image: np.ndarray) -> list[TextLine]:
        quads = self.detect(image, min_side=DET_FULL_SIDE)
        lines = self.recognise([rectify(image, q) for q in quads])
        out = []
        for quad, line in zip(quads, lines, strict=True):
            if line is not None:
                out.append(TextLine(line.text, line.score, _box(quad), line.char_scores, line.alternatives))
        return out


def _db_boxes(pred: np.ndarray) -> list[Quad]:
    """Text boxes from the DB probability map (RapidOCR's post-processing, without shapely)."""
    mask = cv2.dilate((pred > DET_THRESH).astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    quads = []
    for contour in contours:
        (cx, cy), (rw, rh), angle = cv2.minAreaRect(contour)
        if min(rw, rh) < 3:
            continue
        box = cv2.boxPoints(((cx, cy), (rw, rh), angle))
        if _mean_inside(pred, box) < DET_BOX_THRESH:
            continue
        distance = rw * rh * DET_UNCLIP / (2 * (rw + rh))  # DB's unclip offset: area * ratio / perimeter
        grow = 2 * distance
        if min(rw, rh) + grow < 5:
            continue
        quads.append(order_quad(cv2.boxPoints(((cx, cy), (rw + grow, rh + grow), angle))))
    return quads


def _mean_inside(pred: np.ndarray, box: np.ndarray) -> float:
    h, w = pred.shape
    x1, y1 = np.clip(np.floor(box.min(axis=0)).astype(int), 0, [w - 1, h - 1])
    x2, y2 = np.clip(np.ceil(box.max(axis=0)).astype(int), 0, [w - 1, h - 1])
    region = np.zeros((y2 - y1 + 1, x2 - x1 + 1), np.uint8)
    cv2.fillPoly(region, [np.round(box - [x1, y1]).astype(np.int32)], 1)
    return float(cv2.mean(pred[y1 : y2 + 1, x1 : x2 + 1], region)[0])
