"""Fit the plate reader's confidence calibration on synthetic gate frames (never on real photos).

``python -m bench.calibration [--frames N] [--seed S]`` renders N frames with
:func:`edge.synthetic.render_vehicle_frame`, degrades each at random the way real cameras do
(low resolution, defocus and motion blur, dusk gamma, sensor noise, heavy JPEG), reads them with
the current reader, and fits the share of exact reads as a monotone function of the raw score
(product of per-character probabilities) by isotonic regression. It prints a reliability table
on stderr and, on stdout, one JSON line with the fitted ``calibration`` knots to paste into
``edge/plates.py`` (``CALIBRATION``).

The degradations matter: clean synthetic frames are read almost perfectly and would teach the
map nothing about the errors real photos cause.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
from collections.abc import Sequence

import cv2
import numpy as np

# Reported confidence bins of the reliability tables (lower edges).
RELIABILITY_EDGES = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


def degrade(image: np.ndarray, rng: random.Random) -> np.ndarray:
    """A random camera-like degradation of a clean synthetic frame."""
    h, w = image.shape[:2]
    factor = rng.uniform(0.35, 1.0)  # a more distant or lower-resolution camera
    small = cv2.resize(
        image, (max(1, int(w * factor)), max(1, int(h * factor))), interpolation=cv2.INTER_AREA
    )
    out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 2.0))
    if rng.random() < 0.3:  # horizontal motion blur of a moving car
        k = rng.randint(3, 9)
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        out = cv2.filter2D(out, -1, kernel)
    if rng.random() < 0.4:  # dusk: darker mid-tones
        gamma = rng.uniform(1.3, 2.5)
        lut = np.clip(255 * (np.arange(256) / 255.0) ** gamma, 0, 255).astype(np.uint8)
        out = cv2.LUT(out, lut)
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(2, 12), out.shape)
    out = np.clip(out + noise, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(20, 90)])
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
    return decoded if decoded is not None else out


def isotonic(xs: Sequence[float], ys: Sequence[float]) -> list[float]:
    """Pool-adjacent-violators: the non-decreasing fit of ``ys`` ordered by ``xs``."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    blocks: list[list[float]] = []  # [sum, count]
    for i in order:
        blocks.append([float(ys[i]), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, n = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += n
    fitted: list[float] = []
    for s, n in blocks:
        fitted.extend([s / n] * int(n))
    out = [0.0] * len(xs)
    for rank, i in enumerate(order):
        out[i] = fitted[rank]
    return out


def fit_knots(raw: Sequence[float], hit: Sequence[bool], bins: int = 10) -> list[tuple[float, float]]:
    """Piecewise-linear knots (raw score, exact rate): isotonic fit averaged over equal-count bins.

    Each bin's rate is smoothed as (hits + 1) / (reads + 2), so a bin without a single miss still
    does not claim certainty.
    """
    fitted = isotonic(raw, [float(h) for h in hit])
    pairs = sorted(zip(raw, fitted, strict=True))
    knots = [(0.0, 0.0)]
    size = math.ceil(len(pairs) / bins)
    for start in range(0, len(pairs), size):
        chunk = pairs[start : start + size]
        x = float(np.mean([p[0] for p in chunk]))
        y = (float(np.sum([p[1] for p in chunk])) + 1) / (len(chunk) + 2)
        if x > knots[-1][0]:
            knots.append((round(x, 4), round(max(y, knots[-1][1]), 4)))
    knots.append((1.0, knots[-1][1]))
    return knots


def reliability(confidence: Sequence[float], hit: Sequence[bool]) -> list[dict[str, object]]:
    """Per reported-confidence bin: reads, mean confidence and the share that were exact."""
    rows = []
    edges = [*RELIABILITY_EDGES, 1.0000001]
    for lo, hi in itertools.pairwise(edges):
        idx = [i for i, c in enumerate(confidence) if lo <= c < hi]
        if idx:
            rows.append(
                {
                    "bin": f"{lo:.2f}-{min(hi, 1.0):.2f}",
                    "reads": len(idx),
                    "mean_confidence": round(float(np.mean([confidence[i] for i in idx])), 3),
                    "exact_rate": round(float(np.mean([hit[i] for i in idx])), 3),
                }
            )
    return rows


def run(frames: int, seed: int, green_share: float) -> dict[str, object]:
    from edge.ocr import create_engine
    from edge.plates import PlateReader
    from edge.synthetic import random_plate, render_vehicle_frame

    reader = PlateReader(create_engine("rapidocr"))
    rng = random.Random(seed)
    raw: list[float] = []
    conf: list[float] = []
    hit: list[bool] = []
    unread = 0
    for n in range(1, frames + 1):
        plate = random_plate(rng, green_share=green_share)
        image, _ = render_vehicle_frame(plate, rng)
        read = reader.best(degrade(image, rng))
        if read is None:
            unread += 1
        else:
            raw.append(math.prod(read.char_scores) if read.char_scores else read.confidence)
            conf.append(read.confidence)
            hit.append(read.text == plate)
        if n % 50 == 0:
            print(f"[calibration] {n}/{frames}", file=sys.stderr, flush=True)
    knots = fit_knots(raw, hit)
    return {
        "frames": frames,
        "seed": seed,
        "read": len(hit),
        "unread": unread,
        "exact_rate": round(sum(hit) / max(len(hit), 1), 4),
        "reliability_before": reliability(conf, hit),
        "calibration": knots,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calibration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1000, help="synthetic frames to read (default 1000)")
    parser.add_argument("--seed", type=int, default=20240607, help="random seed (default fixed)")
    parser.add_argument("--green-share", type=float, default=0.3, help="share of new-energy plates")
    args = parser.parse_args(argv)
    result = run(args.frames, args.seed, args.green_share)
    for row in result["reliability_before"]:  # type: ignore[attr-defined]
        print(f"[calibration] {row}", file=sys.stderr)
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
