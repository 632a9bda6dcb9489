"""Tests for edge.synthetic: plate numbers, plate images and gate-camera frames (incl. a real OCR read)."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge import synthetic
from edge.synthetic import (
    PROVINCES,
    FontNotFoundError,
    find_cjk_font,
    plate_colour,
    random_plate,
    render_plate,
    render_vehicle_frame,
)

LETTER = "[A-HJ-NP-Z]"  # A-Z without I and O
BLUE_RE = re.compile(rf"^[{PROVINCES}]{LETTER}[0-9A-HJ-NP-Z]{{5}}$")
GREEN_RE = re.compile(rf"^[{PROVINCES}]{LETTER}(?:[DF][0-9]{{5}}|[0-9]{{5}}[DF])$")


def _plates(seed: int, n: int, **kwargs: float) -> list[str]:
    rng = random.Random(seed)
    return [random_plate(rng, **kwargs) for _ in range(n)]


# --------------------------------------------------------------------------- plate numbers


def test_random_plates_are_valid() -> None:
    plates = _plates(1, 3000)
    for plate in plates:
        assert BLUE_RE.match(plate) or GREEN_RE.match(plate), plate
        assert "I" not in plate and "O" not in plate, plate
        assert plate_colour(plate) == ("green" if GREEN_RE.match(plate) else "blue")
    provinces = Counter(p[0] for p in plates)
    assert provinces.most_common(1)[0][0] == "鄂"
    assert 0.4 < provinces["鄂"] / len(plates) < 0.7
    assert len(provinces) >= 25  # the other provinces do occur
    assert any(re.search("[A-Z]", p[2:]) for p in plates if len(p) == 7)  # blue serials contain letters too
    assert any(p[-1] in "DF" for p in plates if len(p) == 8)  # large new-energy vehicles


@pytest.mark.parametrize("share", [0.0, 0.15, 0.5, 1.0])
def test_green_share(share: float) -> None:
    plates = _plates(2, 4000, green_share=share)
    green = sum(len(p) == 8 for p in plates) / len(plates)
    assert green == pytest.approx(share, abs=0.03)


def test_random_plate_is_deterministic() -> None:
    assert _plates(7, 50) == _plates(7, 50)
    assert _plates(7, 50) != _plates(8, 50)


def test_plate_colour() -> None:
    assert plate_colour("鄂A12345") == "blue"
    assert plate_colour("鄂AD12345") == "green"
    with pytest.raises(ValueError):
        plate_colour("鄂A123")


# --------------------------------------------------------------------------- plate image


def test_render_blue_plate() -> None:
    img = render_plate("鄂A12345", height=56)
    assert img.dtype == np.uint8
    assert img.shape == (56, 176, 3)  # 440 x 140 mm
    b, _, r = np.median(img.reshape(-1, 3), axis=0)
    assert b > 120 and r < 60  # blue background dominates
    assert (img.min(axis=2) > 200).mean() > 0.1  # white characters and border


def test_render_green_plate() -> None:
    img = render_plate("鄂AD12345", height=56)
    assert img.shape == (56, 192, 3)  # 480 x 140 mm
    top, bottom = img[5, 96].astype(int), img[-5, 96].astype(int)
    assert top.min() > 200  # near-white at the top
    assert bottom[1] > bottom[0] + 60 and bottom[1] > bottom[2] + 60  # green at the bottom
    assert (img.max(axis=2) < 60).mean() > 0.1  # black characters


def test_font_not_found_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    find_cjk_font.cache_clear()
    try:
        monkeypatch.setattr(synthetic, "_font_candidates", lambda: [])
        with pytest.raises(FontNotFoundError, match="fonts-wqy-zenhei"):
            find_cjk_font()
    finally:
        find_cjk_font.cache_clear()
    assert issubclass(FontNotFoundError, RuntimeError)


def test_font_without_chinese_glyphs_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    latin = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if not latin.is_file():
        pytest.skip("DejaVuSans.ttf not installed")
    find_cjk_font.cache_clear()
    try:
        monkeypatch.setattr(synthetic, "_font_candidates", lambda: [str(latin)])
        with pytest.raises(FontNotFoundError):
            find_cjk_font()
    finally:
        find_cjk_font.cache_clear()


# --------------------------------------------------------------------------- frames


def test_frame_shape_and_box() -> None:
    rng = random.Random(3)
    for size in [(960, 540), (1280, 720), (640, 360)]:
        for _ in range(5):
            plate = random_plate(rng, green_share=0.5)
            frame, (x1, y1, x2, y2) = render_vehicle_frame(plate, rng, size=size)
            assert frame.shape == (size[1], size[0], 3)
            assert frame.dtype == np.uint8
            assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]
            scale = size[0] / 960
            assert 110 * scale <= x2 - x1 <= 240 * scale  # plate 120-220 px wide at 960, plus skew


def test_frame_is_a_scene_not_a_bare_plate() -> None:
    frame, (x1, y1, x2, y2) = render_vehicle_frame("鄂A12345", random.Random(4))
    plate_area = (x2 - x1) * (y2 - y1)
    assert plate_area < 0.06 * frame.shape[0] * frame.shape[1]
    outside = frame.copy()
    outside[y1:y2, x1:x2] = 0
    assert outside.std() > 25  # plenty of structure outside the plate
    assert frame.std(axis=(0, 1)).min() > 10  # in every colour channel


def test_frames_are_deterministic_per_seed() -> None:
    a, box_a = render_vehicle_frame("鄂A12345", random.Random(5))
    b, box_b = render_vehicle_frame("鄂A12345", random.Random(5))
    c, _ = render_vehicle_frame("鄂A12345", random.Random(6))
    assert box_a == box_b
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


# --------------------------------------------------------------------------- OCR round trip

OCR_FRAMES = 40
OCR_MIN_RATE = 0.85


def _normalise(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z\u4e00-\u9fff]", "", text).upper()


@pytest.fixture(scope="module")
def ocr() -> Any:
    rapidocr = pytest.importorskip(
        "rapidocr_onnxruntime", reason="rapidocr_onnxruntime not installed (pip install parkgate[ocr])"
    )
    return rapidocr.RapidOCR(use_cls=False)


def test_rapidocr_reads_rendered_frames(ocr: Any) -> None:
    rng = random.Random(2024)
    misses = []
    for _ in range(OCR_FRAMES):
        plate = random_plate(rng)
        frame, (x1, y1, x2, y2) = render_vehicle_frame(plate, rng)
        result, _ = ocr(frame)
        hits = [np.asarray(quad, float) for quad, text, _ in result or [] if _normalise(text) == plate]
        if not hits:
            misses.append((plate, [text for _, text, _ in result or []]))
            continue
        cx, cy = hits[0].mean(axis=0)  # the text was found where the box says the plate is
        assert x1 <= cx <= x2 and y1 <= cy <= y2, (plate, (cx, cy), (x1, y1, x2, y2))
    rate = 1 - len(misses) / OCR_FRAMES
    assert rate >= OCR_MIN_RATE, f"read {rate:.0%} of {OCR_FRAMES} frames; misses: {misses}"
