"""``python -m bench.qr``: QR decode rate and speed per decoder on photo-like 720x1160 scenes.

Each image is a real signed ParkGate code (``protocol.credentials``), printed on a card and
"photographed": resized with area sampling, rotated and/or keystoned (perspective), pasted into a
720x1160 scene (the real street photos of ``../shared/datasets/plates/dev`` when present, else a
generated street), shaded, blurred, given sensor noise and JPEG-compressed. A decode counts only
when the decoder returns exactly the code's text.

Prints one JSON line per decoder and condition ``{"decoder", "condition", "images", "decoded",
"rate", "median_ms", "p95_ms"}``, one ``"condition": "all"`` line per decoder, then
``{"recommended", "current_default", "backgrounds"}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np

from edge.errors import ImageError
from edge.images import load_image
from edge.qr import DECODERS, DEFAULT_DECODER, ERROR_CORRECTION, DecoderUnavailable, QrDecoder, make_code
from protocol.credentials import generate_private_key, new_credential, sign

logger = logging.getLogger(__name__)

SCENE_W, SCENE_H = 720, 1160
DATASET = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "plates" / "dev"
PLATES = ["鄂A12345", "皖AY6B59", "京N8P8F8", "沪AD12345", "粤B3X7K9", "川A0H2M5", "苏E1234F"]


@dataclass(frozen=True)
class Condition:
    """How a code is photographed. ``size`` is the symbol's side in the photo, in pixels."""

    size: int = 220
    angle: float = 0.0  # degrees, in the image plane
    keystone: float = 0.0  # 0..1: how much narrower the far edge looks (card tilted away)
    blur: float = 0.0  # Gaussian sigma in pixels (defocus / motion)
    noise: float = 3.0  # sensor noise sigma, grey levels
    jpeg: int = 85  # JPEG quality of the photo
    glare: float = 0.0  # a saturated reflection this wide (fraction of the symbol) over the code


CONDITIONS: dict[str, Condition] = {
    "clean": Condition(size=260),
    "rotated_20": Condition(angle=20),
    "rotated_45": Condition(angle=45),
    "blurred": Condition(blur=1.5),
    "blurred_strong": Condition(blur=2.5),
    "small_60": Condition(size=60),
    "small_80": Condition(size=80),
    "small_100": Condition(size=100),
    "keystone_mild": Condition(size=260, keystone=0.25, angle=5),
    "keystone_strong": Condition(size=260, keystone=0.5, angle=10),
    "glare": Condition(glare=0.3),
    "glare_strong": Condition(glare=0.5),
    "combined": Condition(size=160, angle=15, keystone=0.2, blur=0.8, jpeg=70),
}


def code_card(text: str, size: int, error: str = ERROR_CORRECTION) -> np.ndarray:
    """The QR code of ``text`` on a white card: the symbol ``size`` px square, plus its quiet zone."""
    matrix = np.array([list(row) for row in make_code(text, error).matrix], np.uint8)
    modules = matrix.shape[0]
    card: np.ndarray = np.where(np.pad(matrix, 4) == 1, 0, 255).astype(np.uint8)
    side = round(size * (modules + 8) / modules)
    per_module = max(1, -(-side * 4 // card.shape[0]))  # render finely, then sample down like a lens
    card = cv2.resize(card, None, fx=per_module, fy=per_module, interpolation=cv2.INTER_NEAREST)
    return cv2.resize(card, (side, side), interpolation=cv2.INTER_AREA)


def street_scene(rng: np.random.Generator, width: int = SCENE_W, height: int = SCENE_H) -> np.ndarray:
    """A generated street: sky, buildings with windows, road with markings, a car, signs with text."""
    scene = np.zeros((height, width, 3), np.uint8)
    horizon = int(height * rng.uniform(0.35, 0.5))
    for y in range(horizon):  # sky gradient
        scene[y, :] = (235 - y * 60 // horizon, 200 - y * 40 // horizon, 150 + y * 30 // horizon)
    x = 0
    while x < width:  # buildings and their windows
        w, h = int(rng.integers(80, 200)), int(rng.integers(horizon // 3, horizon))
        colour = tuple(int(c) for c in rng.integers(70, 200, 3))
        cv2.rectangle(scene, (x, horizon - h), (x + w, horizon), colour, -1)
        for wy in range(horizon - h + 12, horizon - 20, 28):
            for wx in range(x + 8, x + w - 16, 24):
                shade = int(rng.integers(20, 120))
                cv2.rectangle(scene, (wx, wy), (wx + 12, wy + 16), (shade, shade, shade + 20), -1)
        x += w
    scene[horizon:] = (90, 92, 95)  # asphalt, then its texture and lane markings
    for lane_x in range(width // 6, width, width // 3):
        for y in range(horizon + 20, height, 90):
            cv2.line(scene, (lane_x, y), (lane_x, y + 45), (230, 230, 230), 6)
    cx, cy = int(rng.integers(120, width - 120)), int(rng.integers(horizon + 150, height - 180))
    body = tuple(int(c) for c in rng.integers(30, 230, 3))
    cv2.rectangle(scene, (cx - 170, cy - 60), (cx + 170, cy + 110), body, -1)
    cv2.rectangle(scene, (cx - 120, cy - 140), (cx + 120, cy - 60), body, -1)
    cv2.rectangle(scene, (cx - 105, cy - 128), (cx + 105, cy - 68), (60, 50, 40), -1)
    cv2.rectangle(scene, (cx - 55, cy + 50), (cx + 55, cy + 85), (160, 80, 20), -1)  # a blue plate
    cv2.putText(scene, "A12345", (cx - 50, cy + 78), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
    for _ in range(6):  # signs and shop fronts with text: edges and corners that look like codes
        sx, sy = int(rng.integers(0, width - 160)), int(rng.integers(20, height - 60))
        cv2.rectangle(scene, (sx, sy), (sx + 150, sy + 44), (250, 250, 245), -1)
        cv2.putText(scene, "PARK P2 >", (sx + 8, sy + 31), cv2.FONT_HERSHEY_DUPLEX, 0.9, (20, 20, 20), 2)
    texture = rng.normal(0, 6, scene.shape)
    return np.clip(scene + texture, 0, 255).astype(np.uint8)


def photograph(
    text: str,
    condition: Condition,
    rng: np.random.Generator,
    background: np.ndarray | None = None,
    error: str = ERROR_CORRECTION,
) -> np.ndarray:
    """A BGR photo of the code of ``text`` on a card in a street scene, taken under ``condition``."""
    scene = (background if background is not None else street_scene(rng)).copy()
    height, width = scene.shape[:2]
    card = code_card(text, condition.size, error)
    size = card.shape[0]
    half = size / 2
    k = condition.keystone
    quad = np.array(  # the card tilted away: the top edge narrower and a little shorter
        [
            [-half * (1 - k), -half * (1 - k / 2)],
            [half * (1 - k), -half * (1 - k / 2)],
            [half, half],
            [-half, half],
        ]
    )
    theta = np.deg2rad(condition.angle)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    quad = quad @ rotation.T
    margin = np.abs(quad).max() + 4
    centre = rng.uniform([margin, margin], [width - margin, height - margin])
    quad = (quad + centre).astype(np.float32)
    source = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float32)
    transform = cv2.getPerspectiveTransform(source, quad)
    warped = cv2.warpPerspective(card, transform, (width, height), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full_like(card, 255), transform, (width, height), flags=cv2.INTER_LINEAR)
    light = rng.uniform(0.7, 1.0)  # the card in shade or sun, tinted by the light
    tint = rng.uniform(0.9, 1.0, 3)
    paper = warped[..., None].astype(np.float32) * light * tint
    alpha = mask[..., None].astype(np.float32) / 255
    photo: np.ndarray = scene.astype(np.float32) * (1 - alpha) + paper * alpha
    if condition.glare:  # a soft saturated ellipse somewhere over the symbol
        spot: np.ndarray = np.zeros((height, width), np.float32)
        axes = (round(condition.size * condition.glare / 2), round(condition.size * condition.glare / 4))
        at = quad.mean(axis=0) + rng.uniform(-0.25, 0.25, 2) * condition.size
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(spot, (round(at[0]), round(at[1])), axes, angle, 0, 360, 1.0, -1)
        spot = cv2.GaussianBlur(spot, (0, 0), max(1.0, axes[1] / 3))[..., None]
        photo = photo * (1 - spot) + 255 * spot
    if condition.blur:
        photo = cv2.GaussianBlur(photo, (0, 0), condition.blur)
    photo += rng.normal(0, condition.noise, photo.shape)
    photo_u8 = np.clip(photo, 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", photo_u8, [cv2.IMWRITE_JPEG_QUALITY, condition.jpeg])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    if decoded is None:
        raise RuntimeError("JPEG decoding failed")
    return decoded


def sample_codes(count: int, rng: np.random.Generator) -> list[str]:
    """Real signed codes with realistic fields (so the QR version is the one lanes see)."""
    key = generate_private_key()
    codes = []
    for i in range(count):
        credential = new_credential(
            plate=PLATES[i % len(PLATES)],
            station=f"ST{int(rng.integers(1, 99)):02d}",
            lane=f"L{int(rng.integers(1, 9))}",
            valid_for=timedelta(minutes=int(rng.integers(15, 240))),
        )
        codes.append(sign(credential, key))
    return codes


def load_backgrounds(folder: Path | None, limit: int = 40) -> list[np.ndarray]:
    if folder is None or not folder.is_dir():
        return []
    images = []
    for path in sorted(folder.glob("scene_*.jpg"))[:limit]:
        try:
            image = load_image(path)
        except ImageError as err:
            logger.warning("%s", err)
            continue
        if image.shape[:2] == (SCENE_H, SCENE_W):
            images.append(image)
    return images


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(round(q * (len(ordered) - 1)), len(ordered) - 1)] if ordered else 0.0


def measure(decoder: QrDecoder, photos: list[tuple[str, np.ndarray]]) -> dict[str, object]:
    times, decoded = [], 0
    for text, image in photos:
        started = time.perf_counter()
        found = decoder.decode(image)
        times.append((time.perf_counter() - started) * 1000)
        decoded += text in found
    return {
        "images": len(photos),
        "decoded": decoded,
        "rate": round(decoded / len(photos), 3) if photos else 0.0,
        "median_ms": round(statistics.median(times), 2) if times else 0.0,
        "p95_ms": round(percentile(times, 0.95), 2),
    }


def run(
    per_condition: int,
    backgrounds_dir: Path | None,
    seed: int,
    decoders: list[str],
    error: str = ERROR_CORRECTION,
) -> int:
    rng = np.random.default_rng(seed)
    backgrounds = load_backgrounds(backgrounds_dir)
    where = str(backgrounds_dir) if backgrounds else "generated"
    logger.info("backgrounds: %s; %d images per condition; error correction %s", where, per_condition, error)
    codes = sample_codes(per_condition, rng)
    photos: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name, condition in CONDITIONS.items():
        photos[name] = []
        for i, text in enumerate(codes):
            background = backgrounds[(i * 7 + len(photos)) % len(backgrounds)] if backgrounds else None
            photos[name].append((text, photograph(text, condition, rng, background, error)))
    totals: dict[str, tuple[float, float]] = {}
    for decoder_name in decoders:
        try:
            decoder = DECODERS[decoder_name]()
        except DecoderUnavailable as err:
            logger.error("%s", err)
            continue
        decoder.decode(photos["clean"][0][1])  # warm-up
        for name, images in photos.items():
            row = measure(decoder, images)
            print(json.dumps({"decoder": decoder_name, "condition": name, **row}), flush=True)
        overall = measure(decoder, [p for images in photos.values() for p in images])
        print(json.dumps({"decoder": decoder_name, "condition": "all", **overall}), flush=True)
        totals[decoder_name] = (float(overall["rate"]), float(overall["median_ms"]))  # type: ignore[arg-type]
    # The default is the decoder that reads the most codes; speed breaks a tie.
    best = max(totals, key=lambda n: (totals[n][0], -totals[n][1])) if totals else None
    print(
        json.dumps(
            {"recommended": best, "current_default": DEFAULT_DECODER, "backgrounds": where, "error": error}
        )
    )
    return 0 if totals else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.qr", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--per-condition", type=int, default=40, help="codes per condition (default 40)")
    parser.add_argument(
        "--backgrounds",
        type=Path,
        default=DATASET,
        help="folder of 720x1160 scene_*.jpg photos (default: the shared plate dev set; generated if absent)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--decoder", action="append", choices=list(DECODERS), help="decoder to measure (default: all)"
    )
    parser.add_argument(
        "--error",
        choices="lmqh",
        default=ERROR_CORRECTION,
        help=f"QR error correction level of the codes (default {ERROR_CORRECTION}, as issued)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    return run(args.per_condition, args.backgrounds, args.seed, args.decoder or list(DECODERS), args.error)


if __name__ == "__main__":
    sys.exit(main())
