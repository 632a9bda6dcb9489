"""``parkgate bench plates DIR --manifest CSV``: plate-reading accuracy and speed per engine.

Prints one JSON line per engine with the exact full-plate rate, per-character accuracy, the
green (new-energy) plate rate, exact rates and p50 ms per file group (the part of the name before
the first ``_``, e.g. ``scene`` and ``crop``), mean/p50/p95 ms per image, the process's peak RSS,
which reader stage produced the reads, the plate colours reported, and a reliability table (per
reported-confidence bin: reads and the share that were exact).

Times cover decoding the file and reading it, one image after another in one process (the
engine warmed up on the first image). ``latin_exact_rate`` compares the plates without their
province character, so that an engine that cannot read Chinese (EasyOCR's offline English
weights) can be compared on the rest.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import resource
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from bench.calibration import reliability
from edge.errors import ImageError
from edge.images import load_image
from edge.ocr import create_engine
from edge.plate_format import PROVINCES, PlateFormats
from edge.plates import PlateReader

logger = logging.getLogger(__name__)

#: For engines that cannot read the province character: accept the Latin part of a plate.
LATIN_PART = re.compile(r"[A-HJ-NP-Z][A-HJ-NP-Z0-9]{5,6}")


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(round(q * (len(ordered) - 1)), len(ordered) - 1)] if ordered else 0.0


def read_manifest(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8") as f:
        return [(row["file"], row["plate"]) for row in csv.DictReader(f)]


def _latin(plate: str) -> str:
    return plate[1:] if plate[:1] and plate[0] in PROVINCES else plate


def bench_engine(
    engine_name: str, folder: Path, truth: list[tuple[str, str]], threads: int
) -> dict[str, object]:
    engine = create_engine(engine_name, threads=threads)
    formats = PlateFormats() if engine.reads_chinese else PlateFormats(site=(LATIN_PART,))
    reader = PlateReader(engine, formats=formats)
    reader.read(load_image(folder / truth[0][0]))  # warm-up: first inference allocates
    times: list[float] = []
    exact = latin = chars = total_chars = errors = 0
    groups: dict[str, dict[str, list]] = {}
    green = [0, 0]
    stages: Counter[str] = Counter()
    colours: Counter[str] = Counter()
    confidences: list[float] = []
    hits: list[bool] = []
    for n, (name, plate) in enumerate(truth, 1):
        started = time.perf_counter()
        try:
            best = reader.best(load_image(folder / name))
        except ImageError as err:
            logger.warning("%s", err)
            errors += 1
            best = None
        elapsed = (time.perf_counter() - started) * 1000
        times.append(elapsed)
        got = best.text if best else ""
        hit = got == plate
        exact += hit
        latin += bool(got) and _latin(got) == _latin(plate)
        chars += max(len(plate) - edit_distance(got, plate), 0)
        total_chars += len(plate)
        group = groups.setdefault(name.split("_", 1)[0], {"hits": [], "ms": []})
        group["hits"].append(hit)
        group["ms"].append(elapsed)
        if len(plate) == 8:
            green[0] += hit
            green[1] += 1
        stages[best.stage if best else "none"] += 1
        if best:
            colours[best.colour] += 1
            confidences.append(best.confidence)
            hits.append(hit)
        if n % 20 == 0:
            print(f"[bench plates] {engine_name}: {n}/{len(truth)}", file=sys.stderr, flush=True)
    return {
        "engine": engine_name,
        "images": len(truth),
        "exact_rate": round(exact / len(truth), 4),
        "char_accuracy": round(chars / total_chars, 4),
        "latin_exact_rate": round(latin / len(truth), 4),
        "green_rate": round(green[0] / green[1], 4) if green[1] else None,
        "green_images": green[1],
        "groups": {
            g: {
                "images": len(v["hits"]),
                "exact_rate": round(sum(v["hits"]) / len(v["hits"]), 4),
                "p50_ms": round(percentile(v["ms"], 0.5), 1),
                "p95_ms": round(percentile(v["ms"], 0.95), 1),
            }
            for g, v in sorted(groups.items())
        },
        "errors": errors,
        "mean_ms": round(statistics.fmean(times), 1),
        "p50_ms": round(percentile(times, 0.5), 1),
        "p95_ms": round(percentile(times, 0.95), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "stages": dict(stages),
        "colours": dict(colours),
        "reliability": reliability(confidences, hits),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def run(folder: Path, manifest: Path, engines: list[str], threads: int = 0) -> int:
    truth = read_manifest(manifest)
    if not truth:
        print(f"parkgate bench plates: {manifest} lists no images", file=sys.stderr)
        return 1
    for name in engines:
        print(json.dumps(bench_engine(name, folder, truth, threads), ensure_ascii=False), flush=True)
    return 0
