"""``parkgate bench plates DIR --manifest CSV``: plate-reading accuracy and speed per engine.

Prints one JSON line per engine with the exact full-plate rate, per-character accuracy, the
green (new-energy) plate rate, exact rates per file group (the part of the name before the first
``_``, e.g. ``scene`` and ``crop``), mean/p50/p95 ms per image and the process's peak RSS.
"""

from __future__ import annotations

import csv
import json
import logging
import resource
import statistics
import sys
import time
from pathlib import Path

from edge.errors import ImageError
from edge.images import load_image
from edge.ocr import create_engine
from edge.plates import PlateReader

logger = logging.getLogger(__name__)


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


def bench_engine(
    engine_name: str, folder: Path, truth: list[tuple[str, str]], threads: int
) -> dict[str, object]:
    reader = PlateReader(create_engine(engine_name, threads=threads))
    reader.read(load_image(folder / truth[0][0]))  # warm-up: first inference allocates
    times, exact, chars, total_chars, errors = [], 0, 0, 0, 0
    groups: dict[str, list[int]] = {}
    green = [0, 0]
    for n, (name, plate) in enumerate(truth, 1):
        started = time.perf_counter()
        try:
            best = reader.best(load_image(folder / name))
        except ImageError as err:
            logger.warning("%s", err)
            errors += 1
            best = None
        times.append((time.perf_counter() - started) * 1000)
        got = best.text if best else ""
        hit = int(got == plate)
        exact += hit
        chars += max(len(plate) - edit_distance(got, plate), 0)
        total_chars += len(plate)
        group = groups.setdefault(name.split("_", 1)[0], [0, 0])
        group[0] += hit
        group[1] += 1
        if len(plate) == 8:
            green[0] += hit
            green[1] += 1
        if n % 20 == 0:
            print(f"[bench plates] {engine_name}: {n}/{len(truth)}", file=sys.stderr, flush=True)
    return {
        "engine": engine_name,
        "images": len(truth),
        "exact_rate": round(exact / len(truth), 4),
        "char_accuracy": round(chars / total_chars, 4),
        "green_rate": round(green[0] / green[1], 4) if green[1] else None,
        "green_images": green[1],
        "groups": {g: {"images": t, "exact_rate": round(h / t, 4)} for g, (h, t) in sorted(groups.items())},
        "errors": errors,
        "mean_ms": round(statistics.fmean(times), 1),
        "p50_ms": round(percentile(times, 0.5), 1),
        "p95_ms": round(percentile(times, 0.95), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run(folder: Path, manifest: Path, engines: list[str], threads: int = 0) -> int:
    truth = read_manifest(manifest)
    if not truth:
        print(f"parkgate bench plates: {manifest} lists no images", file=sys.stderr)
        return 1
    for name in engines:
        print(json.dumps(bench_engine(name, folder, truth, threads), ensure_ascii=False), flush=True)
    return 0
