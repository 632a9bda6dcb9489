"""Plate formats, image loading of bad files, and reading real photos (``parkgate plates``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.errors import ImageError
from edge.images import load_image
from edge.plate_format import find_plate, normalise, plate_kind
from edge.plates import PlateReader


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
