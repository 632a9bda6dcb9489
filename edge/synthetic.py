"""Synthetic gate-camera frames of vehicles carrying known Chinese licence plates.

The simulated gates of ``parkgate demo`` and the test-suite need camera frames whose plate text is
known in advance, without shipping photographs of real vehicles.  This module draws them from
scratch with numpy, OpenCV and Pillow (no downloaded assets):

* :func:`random_plate` draws a valid mainland plate number (blue 7-character or green 8-character
  new-energy plate), weighted toward 鄂 (Hubei / Wuhan, where the pilot car parks are);
* :func:`render_plate` draws the plate itself (blue with white characters, or the white-to-green
  gradient new-energy plate with black characters) in the standard GA 36 layout;
* :func:`render_vehicle_frame` draws a parking-gate camera view - road, kerb, booth, barrier and a
  car seen from the front with the plate on its bumper - and returns the frame together with the
  plate's bounding box in frame pixels.

Everything is randomised from the ``random.Random`` passed in, so a seed reproduces a frame
exactly.  The CJK font comes from the system (Debian package ``fonts-wqy-zenhei``); see
:func:`find_cjk_font`.
"""

from __future__ import annotations

import functools
import logging
import random
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from glob import glob
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from edge.errors import FontNotFoundError

logger = logging.getLogger(__name__)

__all__ = [
    "PROVINCES",
    "FontNotFoundError",
    "find_cjk_font",
    "plate_colour",
    "random_plate",
    "render_plate",
    "render_vehicle_frame",
]

#: The 31 mainland province-level abbreviations used as the first plate character.
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
#: Letters allowed on plates: A-Z without I and O (too easily confused with 1 and 0).
PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
DIGITS = "0123456789"
_HOME_PROVINCE = "鄂"
_HOME_PROVINCE_WEIGHT = 0.55  # share of plates from Hubei; the rest spread over the other 30

_FONT_FAMILY = "WenQuanYi Zen Hei"
_FONT_PATHS: tuple[str, ...] = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-*.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)
_GLYPH_PX = 128  # size at which glyphs are rasterised once and cached
_FONT_LOCK = threading.Lock()  # FreeType faces are not thread-safe; simulated gates render in threads

BGR = tuple[int, int, int]
Box = tuple[int, int, int, int]


# --------------------------------------------------------------------------- plate numbers


def _random_province(rng: random.Random) -> str:
    if rng.random() < _HOME_PROVINCE_WEIGHT:
        return _HOME_PROVINCE
    return rng.choice(PROVINCES.replace(_HOME_PROVINCE, ""))


def _blue_serial(rng: random.Random) -> str:
    """Five characters, mostly digits with at most two letters (as issued in practice)."""
    chars = [rng.choice(DIGITS) for _ in range(5)]
    n_letters = rng.choices((0, 1, 2), weights=(55, 30, 15))[0]
    for pos in rng.sample(range(5), n_letters):
        chars[pos] = rng.choice(PLATE_LETTERS)
    return "".join(chars)


def _green_serial(rng: random.Random) -> str:
    """Six characters: D/F then five digits (small cars) or five digits then D/F (large vehicles)."""
    energy = rng.choice("DF")
    digits = "".join(rng.choice(DIGITS) for _ in range(5))
    return digits + energy if rng.random() < 0.1 else energy + digits


def random_plate(rng: random.Random, *, green_share: float = 0.15) -> str:
    """Return a valid mainland plate number such as ``"鄂A12345"`` or ``"鄂AD12345"`` (no separator)."""
    province = _random_province(rng)
    wuhan = province == _HOME_PROVINCE and rng.random() < 0.6  # 鄂A is Wuhan
    letter = "A" if wuhan else rng.choice(PLATE_LETTERS)
    serial = _green_serial(rng) if rng.random() < green_share else _blue_serial(rng)
    return province + letter + serial


def plate_colour(plate: str) -> str:
    """``"green"`` for 8-character new-energy plates, ``"blue"`` for ordinary 7-character ones."""
    if len(plate) == 8:
        return "green"
    if len(plate) == 7:
        return "blue"
    raise ValueError(f"not a 7- or 8-character plate: {plate!r}")


# --------------------------------------------------------------------------- font and glyphs


def _has_cjk_glyphs(font: ImageFont.FreeTypeFont) -> bool:
    """True if the font draws distinct Chinese glyphs (not the same .notdef box for every one)."""
    first, second = (np.asarray(font.getmask(ch)) for ch in "鄂京")
    return first.size > 0 and (first.shape != second.shape or not np.array_equal(first, second))


def _fc_match() -> list[str]:
    try:
        out = subprocess.run(
            ["fc-match", "-f", "%{file}", _FONT_FAMILY],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [out.stdout.strip()] if out.returncode == 0 and out.stdout.strip() else []


def _font_candidates() -> list[str]:
    paths = _fc_match()
    for pattern in _FONT_PATHS:
        paths.extend(sorted(glob(pattern)) if "*" in pattern else [pattern])
    return paths


@functools.cache
def find_cjk_font() -> str:
    """Path of an installed font with Chinese glyphs (fontconfig first, then known paths)."""
    for path in _font_candidates():
        if not Path(path).is_file():
            continue
        try:
            font = ImageFont.truetype(path, 32)
        except OSError:
            continue
        if _has_cjk_glyphs(font):
            logger.debug("using CJK font %s", path)
            return path
    raise FontNotFoundError(
        "No font with Chinese glyphs found (tried fc-match 'WenQuanYi Zen Hei' and "
        f"{', '.join(_FONT_PATHS)}). Install the Debian package fonts-wqy-zenhei: "
        "sudo apt-get install fonts-wqy-zenhei"
    )


@functools.cache
def _font() -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(find_cjk_font(), _GLYPH_PX)


@functools.cache
def _glyph(ch: str) -> np.ndarray:
    """Tight, slightly emboldened coverage mask of one character at ``_GLYPH_PX``."""
    font = _font()
    pad = _GLYPH_PX // 4
    img = Image.new("L", (_GLYPH_PX * 2, _GLYPH_PX * 2), 0)
    stroke = max(1, _GLYPH_PX // 40)
    with _FONT_LOCK:
        ImageDraw.Draw(img).text((pad, pad), ch, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    mask = np.asarray(img)
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError(f"character {ch!r} has no glyph to draw on a plate")
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].copy()


@functools.lru_cache(maxsize=2048)
def _glyph_fitted(ch: str, cell_w: int, cell_h: int) -> np.ndarray:
    """The glyph scaled to the plate's character cell: full height, narrow glyphs keep their width."""
    mask = _glyph(ch)
    h, w = mask.shape
    natural_w = round(w * cell_h / h)
    width = cell_w if "\u4e00" <= ch <= "\u9fff" else max(1, min(cell_w, natural_w))
    return cv2.resize(mask, (width, cell_h), interpolation=cv2.INTER_AREA)


# --------------------------------------------------------------------------- plate image


@dataclass(frozen=True)
class _PlateSpec:
    """GA 36 plate geometry in millimetres."""

    width: float
    char_w: float
    gap: float
    dot_gap: float  # gap between the 2nd and 3rd characters, holding the separator dot


_BLUE = _PlateSpec(width=440, char_w=45, gap=12, dot_gap=34)
_GREEN = _PlateSpec(width=480, char_w=43, gap=9, dot_gap=49)
_PLATE_H_MM = 140.0
_CHAR_H_MM = 90.0
_BLUE_BG: BGR = (160, 60, 10)
_WHITE: BGR = (245, 245, 245)
_BLACK: BGR = (20, 20, 20)


def _char_lefts(spec: _PlateSpec, n: int) -> list[float]:
    """Left edge (mm) of each of ``n`` characters, centred on the plate."""
    used = n * spec.char_w + (n - 2) * spec.gap + spec.dot_gap
    x = (spec.width - used) / 2
    lefts = []
    for i in range(n):
        lefts.append(x)
        x += spec.char_w + (spec.dot_gap if i == 1 else spec.gap)
    return lefts


def _plate_background(colour: str, w: int, h: int) -> np.ndarray:
    if colour == "blue":
        img = np.empty((h, w, 3), np.uint8)
        img[:] = _BLUE_BG
        return img
    # new-energy plate: near-white at the top fading into green at the bottom
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None] ** 1.3
    top = np.array([235, 250, 240], np.float32)
    bottom = np.array([80, 200, 40], np.float32)
    column = (top * (1 - t) + bottom * t).astype(np.uint8)
    return np.repeat(column[:, None, :], w, axis=1)


def _blend_mask(img: np.ndarray, mask: np.ndarray, x: int, y: int, colour: BGR) -> None:
    """Paint ``colour`` into ``img`` at (x, y) with coverage ``mask`` (0-255)."""
    h, w = mask.shape
    roi = img[y : y + h, x : x + w]
    alpha = mask[: roi.shape[0], : roi.shape[1], None].astype(np.float32) / 255.0
    roi[:] = (roi * (1 - alpha) + np.asarray(colour, np.float32) * alpha).astype(np.uint8)


def render_plate(plate: str, *, height: int = 56) -> np.ndarray:
    """BGR image of the plate: two characters, a separator dot, then the rest, evenly spaced."""
    colour = plate_colour(plate)
    spec = _GREEN if colour == "green" else _BLUE
    mm = height / _PLATE_H_MM
    width = round(spec.width * mm)
    img = _plate_background(colour, width, height)
    ink = _WHITE if colour == "blue" else _BLACK
    thick = max(1, round(height / 40))
    inset = max(1, round(height / 28))
    cv2.rectangle(img, (inset, inset), (width - 1 - inset, height - 1 - inset), ink, thick, cv2.LINE_AA)
    cell_w, cell_h = max(1, round(spec.char_w * mm)), max(1, round(_CHAR_H_MM * mm))
    top = round((height - cell_h) / 2)
    lefts = _char_lefts(spec, len(plate))
    for ch, left in zip(plate, lefts, strict=True):
        glyph = _glyph_fitted(ch, cell_w, cell_h)
        x = round(left * mm) + (cell_w - glyph.shape[1]) // 2
        _blend_mask(img, glyph, x, top, ink)
    dot_x = round((lefts[1] + spec.char_w + spec.dot_gap / 2) * mm)
    cv2.circle(img, (dot_x, height // 2), max(1, round(5 * mm)), ink, -1, cv2.LINE_AA)
    return img


# --------------------------------------------------------------------------- drawing helpers


@functools.cache
def _noise_tile(seed: int, size: int = 1024) -> np.ndarray:
    """A fixed tile of unit-variance Gaussian noise (float32); frames take random windows of it."""
    return np.random.default_rng(seed).standard_normal((size, size), dtype=np.float32)


@functools.cache
def _texture_tile(size: int = 1024) -> np.ndarray:
    """Asphalt-like texture, roughly in [-1, 1]: blotchy low-frequency stains plus fine grain."""
    coarse = cv2.resize(_noise_tile(1, 48), (size, size), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(_noise_tile(2), (0, 0), 0.7)
    speckle = np.where(_noise_tile(4) > 2.3, 1.5, 0.0).astype(np.float32)  # light aggregate stones
    return np.clip(0.45 * coarse + 0.55 * fine + speckle, -3, 3) / 3


def _window(tile: np.ndarray, rng: random.Random, w: int, h: int) -> np.ndarray:
    """A random (w, h) window of a square tile (tiled when the frame is larger than the tile)."""
    n = tile.shape[0]
    if w > n or h > n:
        tile = np.tile(tile, (-(-h // n), -(-w // n)))
    x, y = rng.randint(0, tile.shape[1] - w), rng.randint(0, tile.shape[0] - h)
    return tile[y : y + h, x : x + w]


def _clip8(value: float) -> int:
    return min(255, max(0, round(value)))


def _jitter(colour: Sequence[int], rng: random.Random, amount: int) -> BGR:
    """Random brightness change of up to ``amount`` with a much smaller per-channel tint."""
    base = rng.randint(-amount, amount)
    tint = max(1, amount // 4)
    b, g, r = (_clip8(c + base + rng.randint(-tint, tint)) for c in colour)
    return b, g, r


def _shade(colour: Sequence[int], factor: float) -> BGR:
    b, g, r = (_clip8(c * factor) for c in colour)
    return b, g, r


def _ipt(p: tuple[float, float]) -> tuple[int, int]:
    return round(p[0]), round(p[1])


def _poly(img: np.ndarray, points: Sequence[tuple[float, float]], colour: BGR) -> None:
    """Filled anti-aliased polygon with sub-pixel vertices."""
    pts = np.round(np.asarray(points, np.float32) * 4).astype(np.int32)
    cv2.fillPoly(img, [pts], colour, cv2.LINE_AA, shift=2)


def _gradient_poly(img: np.ndarray, points: Sequence[tuple[float, float]], top: BGR, bottom: BGR) -> None:
    """Polygon filled with a vertical gradient from ``top`` to ``bottom`` colour."""
    h, w = img.shape[:2]
    pts = np.asarray(points, np.float32)
    (px1, py1), (px2, py2) = pts.min(axis=0), pts.max(axis=0)
    x1, y1 = max(0, int(px1)), max(0, int(py1))
    x2, y2 = min(w, int(np.ceil(px2)) + 1), min(h, int(np.ceil(py2)) + 1)
    if x2 <= x1 or y2 <= y1:
        return
    mask = np.zeros((y2 - y1, x2 - x1), np.uint8)
    cv2.fillPoly(mask, [np.round((pts - [x1, y1]) * 4).astype(np.int32)], 255, cv2.LINE_AA, shift=2)
    t = np.clip((np.arange(y1, y2, dtype=np.float32) - py1) / max(1.0, py2 - py1), 0, 1)[:, None, None]
    column = (np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t).astype(np.uint8)
    fill = cv2.resize(column, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
    a = mask.astype(np.float32) * (1 / 255)
    roi = img[y1:y2, x1:x2]
    roi[:] = cv2.blendLinear(fill, roi, a, 1 - a)


def _rounded_rect_pts(x1: float, y1: float, x2: float, y2: float, r: float) -> list[tuple[float, float]]:
    r = max(0.0, min(r, abs(x2 - x1) / 2, abs(y2 - y1) / 2))
    x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
    angles = np.linspace(0, np.pi / 2, 5)
    corners = ((x2 - r, y2 - r, 0), (x1 + r, y2 - r, 1), (x1 + r, y1 + r, 2), (x2 - r, y1 + r, 3))
    return [
        (cx + r * np.cos(a + q * np.pi / 2), cy + r * np.sin(a + q * np.pi / 2))
        for cx, cy, q in corners
        for a in angles
    ]


def _rounded_rect(img: np.ndarray, x1: float, y1: float, x2: float, y2: float, r: float, colour: BGR) -> None:
    """Filled anti-aliased rectangle with rounded corners of radius ``r``."""
    _poly(img, _rounded_rect_pts(x1, y1, x2, y2, r), colour)


def _vertical_gradient(img: np.ndarray, x1: int, y1: int, x2: int, y2: int, top: BGR, bottom: BGR) -> None:
    h, w = img.shape[:2]
    x1, x2, y1, y2 = max(0, x1), min(w, x2), max(0, y1), min(h, y2)
    if x2 <= x1 or y2 <= y1:
        return
    t = np.linspace(0, 1, y2 - y1, dtype=np.float32)[:, None, None]
    column = (np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t).astype(np.uint8)
    img[y1:y2, x1:x2] = cv2.resize(column, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)


# --------------------------------------------------------------------------- background


def _draw_background(img: np.ndarray, rng: random.Random, horizon: int) -> None:
    """Entrance surroundings above the horizon, then kerb and asphalt with markings below it."""
    if rng.random() < 0.5:
        _draw_garage_entrance(img, rng, horizon)
    else:
        _draw_outdoor(img, rng, horizon)
    _draw_road(img, rng, horizon)


def _draw_garage_entrance(img: np.ndarray, rng: random.Random, horizon: int) -> None:
    """Concrete facade with the dark mouth of a car-park ramp and its ceiling lights."""
    w = img.shape[1]
    wall = _jitter((165, 170, 172), rng, 25)
    _vertical_gradient(img, 0, 0, w, horizon, _shade(wall, 0.85), wall)
    x1, x2 = round(w * rng.uniform(0.08, 0.25)), round(w * rng.uniform(0.75, 0.92))
    top = round(horizon * rng.uniform(0.15, 0.35))
    _vertical_gradient(img, x1, top, x2, horizon, (28, 28, 30), (55, 56, 58))
    for i in range(1, 4):  # ceiling lights receding into the ramp
        y = top + (horizon - top) * (0.08 + 0.1 * i)
        half = (x2 - x1) * (0.06 + 0.02 * i)
        _rounded_rect(img, w / 2 - half, y, w / 2 + half, y + 2 + i, 1, (225, 235, 235))
    band = max(4, horizon // 12)
    cv2.rectangle(img, (x1 - band, top - band), (x2 + band, top), (40, 150, 230), -1)  # yellow lintel
    for x in (x1 - band, x2):
        cv2.rectangle(img, (x, top), (x + band, horizon), _shade(wall, 0.9), -1)


def _draw_outdoor(img: np.ndarray, rng: random.Random, horizon: int) -> None:
    """Sky, a building facade with windows and a row of trees behind the entrance."""
    w = img.shape[1]
    _vertical_gradient(
        img, 0, 0, w, horizon, _jitter((225, 200, 170), rng, 20), _jitter((235, 225, 215), rng, 15)
    )
    facade = _jitter((170, 185, 200), rng, 25)
    fx1, fx2 = round(w * rng.uniform(-0.2, 0.3)), round(w * rng.uniform(0.7, 1.2))
    ftop = round(horizon * rng.uniform(0.0, 0.3))
    cv2.rectangle(img, (fx1, ftop), (fx2, horizon), facade, -1)
    win_w, win_h = max(8, w // 30), max(6, horizon // 8)
    glass = _shade(facade, 0.45)
    for y in range(ftop + win_h // 2, horizon - win_h, win_h * 2):
        for x in range(fx1 + win_w // 2, fx2 - win_w, win_w * 2):
            cv2.rectangle(img, (x, y), (x + win_w, y + win_h), glass, -1)
    leaf = _jitter((50, 105, 65), rng, 20)
    for _ in range(rng.randint(3, 7)):
        cx, r = rng.uniform(0, w), rng.uniform(0.2, 0.45) * horizon
        cv2.circle(
            img,
            (round(cx), round(horizon - r * 0.6)),
            round(r),
            _shade(leaf, rng.uniform(0.8, 1.2)),
            -1,
            cv2.LINE_AA,
        )


def _draw_road(img: np.ndarray, rng: random.Random, horizon: int) -> None:
    h, w = img.shape[:2]
    kerb_h = max(6, h // 40)
    cv2.rectangle(img, (0, horizon - kerb_h), (w, horizon), _jitter((175, 178, 180), rng, 15), -1)
    cv2.rectangle(img, (0, horizon), (w, horizon + kerb_h // 2), (95, 97, 100), -1)
    asphalt = _jitter((84, 85, 86), rng, 16)
    _vertical_gradient(img, 0, horizon + kerb_h // 2, w, h, _shade(asphalt, 0.85), asphalt)
    paint = _jitter((200, 205, 205), rng, 15)
    vx = w / 2 + rng.uniform(-0.1, 0.1) * w
    for side in (-1, 1):  # lane edges converging toward the entrance
        x_bottom = w / 2 + side * w * rng.uniform(0.55, 0.7)
        x_top = vx + side * w * 0.3
        _poly(
            img,
            [(x_top - 3, horizon + 8), (x_top + 3, horizon + 8), (x_bottom + 10, h), (x_bottom - 10, h)],
            paint,
        )
    y = horizon + (h - horizon) * rng.uniform(0.25, 0.4)  # stop line
    stop_h = max(4, h // 45)
    _poly(img, [(w * 0.12, y), (w * 0.88, y), (w * 0.9, y + stop_h), (w * 0.1, y + stop_h)], paint)


def _add_texture(img: np.ndarray, rng: random.Random, horizon: int) -> None:
    """Asphalt grain, stones and stains on the road (below the horizon)."""
    h, w = img.shape[:2]
    tex = _window(_texture_tile(), rng, w, h - horizon) * rng.uniform(16, 26)
    road = img[horizon:]
    tex16 = tex.astype(np.int16)
    road[:] = cv2.add(road, cv2.merge([tex16, tex16, tex16]), dtype=cv2.CV_8U)


def _draw_booth(img: np.ndarray, rng: random.Random, horizon: int) -> None:
    """Guard booth on one side and the barrier post with its raised striped arm."""
    h, w = img.shape[:2]
    left = rng.random() < 0.5
    bw = round(w * rng.uniform(0.13, 0.19))
    bx = 0 if left else w - bw
    top = round(horizon * rng.uniform(0.05, 0.3))
    bottom = horizon + h // 20
    body = _jitter((215, 215, 210), rng, 20)
    _vertical_gradient(img, bx, top, bx + bw, bottom, body, _shade(body, 0.85))
    cv2.rectangle(img, (bx, top), (bx + bw, top + max(6, h // 45)), (150, 90, 30), -1)  # blue roof band
    wx1, wy1, wx2, wy2 = bx + bw // 7, top + h // 14, bx + bw * 6 // 7, horizon - h // 25
    _vertical_gradient(img, wx1, wy1, wx2, wy2, (120, 105, 90), (70, 62, 55))  # window
    cv2.line(
        img, (wx1 + (wx2 - wx1) // 3, wy1), (wx1, wy1 + (wy2 - wy1) // 2), (170, 165, 160), 2, cv2.LINE_AA
    )
    cv2.rectangle(img, (wx1, wy1), (wx2, wy2), _shade(body, 0.7), 2)
    post_x = bx + bw + w // 30 if left else bx - w // 30
    post_w = max(8, w // 70)
    cv2.rectangle(
        img, (post_x - post_w, horizon - h // 7), (post_x + post_w, horizon + h // 25), (70, 150, 225), -1
    )
    cv2.rectangle(
        img, (post_x - post_w, horizon - h // 7), (post_x + post_w, horizon - h // 9), (230, 230, 230), -1
    )
    _draw_barrier_arm(img, rng, (post_x, horizon - h // 8), left)


def _draw_barrier_arm(img: np.ndarray, rng: random.Random, pivot: tuple[int, int], left: bool) -> None:
    """Raised barrier arm with red and white stripes, rising steeply away from the post."""
    h = img.shape[0]
    angle = np.radians(rng.uniform(62, 82))
    direction = np.array([np.cos(angle) * (1 if left else -1), -np.sin(angle)])
    length = h * 0.9
    normal = np.array([-direction[1], direction[0]]) * max(3, h // 120)
    n = 9
    for i in range(n):
        a = np.asarray(pivot) + direction * length * i / n
        b = np.asarray(pivot) + direction * length * (i + 1) / n
        colour: BGR = (45, 45, 205) if i % 2 == 0 else (240, 240, 240)
        _poly(img, [tuple(a + normal), tuple(b + normal), tuple(b - normal), tuple(a - normal)], colour)


# --------------------------------------------------------------------------- car

_CAR_COLOURS: tuple[tuple[BGR, int], ...] = (
    ((232, 232, 230), 28),  # white
    ((34, 34, 36), 20),  # black
    ((180, 180, 176), 16),  # silver
    ((105, 105, 103), 12),  # grey
    ((40, 40, 165), 8),  # red
    ((115, 60, 25), 8),  # dark blue
    ((55, 80, 110), 4),  # brown
    ((125, 155, 170), 4),  # champagne
)


@dataclass(frozen=True)
class _Car:
    """Car placement and shape.

    ``cx`` is the centre, ``ground`` the y of the tyre contact line and ``w`` the body width, all in
    frame pixels; heights ``v`` are measured upward from the ground in body widths.
    """

    cx: float
    ground: float
    w: float
    colour: BGR
    bumper_top: float  # top of the front fascia
    hood_back: float  # hood meets windscreen
    roof: float
    grille_w: float  # half-width of the upper grille
    lamp_drop: float  # how far the outer end of each headlight drops (swept-back lamps)
    black_holder: bool  # black plastic plate frame instead of a body-coloured recess

    def x(self, u: float) -> float:
        return self.cx + u * self.w

    def y(self, v: float) -> float:
        return self.ground - v * self.w

    def pt(self, u: float, v: float) -> tuple[float, float]:
        return self.x(u), self.y(v)


_PLATE_V = 0.225  # plate centre height above the ground in body widths


def _random_car(rng: random.Random, w: int, h: int, blue_plate_w: float) -> _Car:
    car_w = blue_plate_w * rng.uniform(3.9, 4.3)  # a 1.8 m wide car carries a 0.44 m plate
    plate_cy = h * rng.uniform(0.6, 0.74)
    colour = rng.choices([c for c, _ in _CAR_COLOURS], weights=[wt for _, wt in _CAR_COLOURS])[0]
    bumper_top = rng.uniform(0.44, 0.5)
    return _Car(
        cx=w / 2 + rng.uniform(-0.1, 0.1) * w,
        ground=plate_cy + _PLATE_V * car_w,
        w=car_w,
        colour=_jitter(colour, rng, 10),
        bumper_top=bumper_top,
        hood_back=bumper_top + rng.uniform(0.1, 0.16),
        roof=bumper_top + rng.uniform(0.38, 0.46),
        grille_w=rng.uniform(0.14, 0.22),
        lamp_drop=rng.uniform(0.0, 0.05),
        black_holder=rng.random() < 0.5,
    )


def _draw_car(img: np.ndarray, car: _Car, rng: random.Random) -> None:
    _draw_shadow(img, car)
    _draw_wheels(img, car)
    _draw_cabin(img, car, rng)
    _draw_fascia(img, car)
    _draw_grille(img, car, rng)
    _draw_headlights(img, car)
    _draw_plate_holder(img, car)


def _draw_shadow(img: np.ndarray, car: _Car) -> None:
    """Soft dark contact shadow on the road under the car."""
    h, w = img.shape[:2]
    x1, x2 = int(car.x(-0.62)), int(car.x(0.62))
    y1, y2 = int(car.y(0.08)), int(car.y(-0.07))
    x1c, x2c, y1c, y2c = max(0, x1), min(w, x2), max(0, y1), min(h, y2)
    if x2c <= x1c or y2c <= y1c:
        return
    mask = np.zeros((y2 - y1, x2 - x1), np.float32)
    cv2.ellipse(
        mask, ((x2 - x1) // 2, (y2 - y1) // 2), ((x2 - x1) // 2 - 4, (y2 - y1) // 3), 0, 0, 360, 1, -1
    )
    soft = cv2.blur(mask, (max(3, (x2 - x1) // 20),) * 2)
    darken = soft[y1c - y1 : y2c - y1, x1c - x1 : x2c - x1, None] * 0.7
    roi = img[y1c:y2c, x1c:x2c]
    roi[:] = (roi * (1 - darken)).astype(np.uint8)


def _draw_wheels(img: np.ndarray, car: _Car) -> None:
    for side in (-1, 1):
        u = side * 0.42
        _rounded_rect(
            img, car.x(u - 0.07), car.y(0.2), car.x(u + 0.07), car.y(-0.004), car.w * 0.025, (24, 24, 26)
        )
        _rounded_rect(
            img, car.x(u - 0.05), car.y(0.17), car.x(u + 0.05), car.y(0.03), car.w * 0.02, (45, 45, 48)
        )


def _draw_cabin(img: np.ndarray, car: _Car, rng: random.Random) -> None:
    """Roof, A-pillars, windscreen and mirrors, then the hood in front of them."""
    c, top, back = car.colour, car.roof, car.hood_back
    _poly(
        img, [car.pt(-0.36, top), car.pt(0.36, top), car.pt(0.45, back), car.pt(-0.45, back)], _shade(c, 0.9)
    )
    glass = _jitter((62, 52, 46), rng, 10)
    screen = [
        car.pt(-0.33, top - 0.02),
        car.pt(0.33, top - 0.02),
        car.pt(0.415, back + 0.01),
        car.pt(-0.415, back + 0.01),
    ]
    _gradient_poly(img, screen, _shade(glass, 0.6), _shade(glass, 1.25))
    s = rng.uniform(-0.25, 0.1)  # diagonal sky reflection
    _poly(
        img,
        [
            car.pt(s, top - 0.02),
            car.pt(s + 0.13, top - 0.02),
            car.pt(s + 0.02, back + 0.01),
            car.pt(s - 0.11, back + 0.01),
        ],
        _shade(glass, 1.5),
    )
    cv2.ellipse(
        img,
        _ipt(car.pt(0.17, back + 0.12)),
        (int(car.w * 0.045), int(car.w * 0.055)),
        0,
        0,
        360,
        _shade(glass, 0.7),
        -1,
        cv2.LINE_AA,
    )  # driver's head
    _poly(
        img,
        [
            car.pt(-0.4, back + 0.045),
            car.pt(0.4, back + 0.045),
            car.pt(0.415, back + 0.01),
            car.pt(-0.415, back + 0.01),
        ],
        _shade(glass, 0.45),
    )  # dashboard
    for side in (-1, 1):  # door mirrors
        _rounded_rect(
            img,
            car.x(side * 0.45),
            car.y(back + 0.06),
            car.x(side * 0.545),
            car.y(back - 0.005),
            car.w * 0.015,
            _shade(c, 0.75),
        )
    hood = [
        car.pt(-0.45, back),
        car.pt(0.45, back),
        car.pt(0.49, car.bumper_top),
        car.pt(-0.49, car.bumper_top),
    ]
    _gradient_poly(img, hood, _shade(c, 1.08) if sum(c) < 600 else c, _shade(c, 0.95))


def _draw_fascia(img: np.ndarray, car: _Car) -> None:
    """Front fascia and bumper with a crease highlight, lower intake and valance."""
    c, top = car.colour, car.bumper_top
    _gradient_poly(
        img,
        _rounded_rect_pts(car.x(-0.5), car.y(top), car.x(0.5), car.y(0.08), car.w * 0.02),
        _shade(c, 1.0),
        _shade(c, 0.82),
    )
    thick = max(1, round(car.w * 0.004))
    cv2.line(
        img,
        _ipt(car.pt(-0.47, top - 0.005)),
        _ipt(car.pt(0.47, top - 0.005)),
        _shade(c, 0.6),
        thick,
        cv2.LINE_AA,
    )  # shut line between hood and fascia
    cv2.line(img, _ipt(car.pt(-0.48, 0.32)), _ipt(car.pt(0.48, 0.32)), _shade(c, 1.15), thick, cv2.LINE_AA)
    _poly(img, [car.pt(-0.3, 0.165), car.pt(0.3, 0.165), car.pt(0.34, 0.1), car.pt(-0.34, 0.1)], (30, 30, 32))
    _rounded_rect(img, car.x(-0.49), car.y(0.1), car.x(0.49), car.y(0.065), car.w * 0.02, _shade(c, 0.55))
    for side in (-1, 1):  # fog-lamp pockets
        cv2.ellipse(
            img,
            _ipt(car.pt(side * 0.41, 0.15)),
            (int(car.w * 0.035), int(car.w * 0.02)),
            0,
            0,
            360,
            (40, 40, 42),
            -1,
            cv2.LINE_AA,
        )
        cv2.circle(
            img, _ipt(car.pt(side * 0.41, 0.15)), max(2, int(car.w * 0.014)), (190, 195, 200), -1, cv2.LINE_AA
        )


def _draw_grille(img: np.ndarray, car: _Car, rng: random.Random) -> None:
    g, top = car.grille_w, car.bumper_top - 0.02
    outline = [car.pt(-g, top), car.pt(g, top), car.pt(g * 0.85, top - 0.12), car.pt(-g * 0.85, top - 0.12)]
    _poly(img, outline, (26, 26, 28))
    chrome, thick = (135, 135, 140), max(1, round(car.w * 0.004))
    if rng.random() < 0.5:  # horizontal slats
        for v in np.linspace(top - 0.025, top - 0.1, 4):
            cv2.line(img, _ipt(car.pt(-g * 0.88, v)), _ipt(car.pt(g * 0.88, v)), chrome, thick, cv2.LINE_AA)
    else:  # mesh
        step = car.w * 0.02
        x0, x1, y0, y1 = car.x(-g * 0.85), car.x(g * 0.85), car.y(top - 0.015), car.y(top - 0.105)
        for x in np.arange(x0, x1, step):
            cv2.line(img, _ipt((x, y0)), _ipt((x, y1)), _shade(chrome, 0.55), 1, cv2.LINE_AA)
        for y in np.arange(y0, y1, step):
            cv2.line(img, _ipt((x0, y)), _ipt((x1, y)), _shade(chrome, 0.55), 1, cv2.LINE_AA)
    cv2.polylines(
        img, [np.round(np.asarray(outline) * 4).astype(np.int32)], True, chrome, thick, cv2.LINE_AA, 2
    )
    cv2.ellipse(
        img,
        _ipt(car.pt(0, top - 0.06)),
        (int(car.w * 0.03), int(car.w * 0.018)),
        0,
        0,
        360,
        (205, 205, 210),
        -1,
        cv2.LINE_AA,
    )  # badge


def _draw_headlights(img: np.ndarray, car: _Car) -> None:
    top, drop, inner = car.bumper_top - 0.025, car.lamp_drop, car.grille_w + 0.025
    for side in (-1, 1):
        housing = [
            car.pt(side * 0.485, top + 0.005 - drop),
            car.pt(side * inner, top),
            car.pt(side * inner, top - 0.065),
            car.pt(side * 0.46, top - 0.075 - drop),
        ]
        _poly(img, housing, (55, 55, 60))
        lens = [
            car.pt(side * 0.47, top - 0.005 - drop),
            car.pt(side * (inner + 0.01), top - 0.008),
            car.pt(side * (inner + 0.01), top - 0.058),
            car.pt(side * 0.45, top - 0.065 - drop),
        ]
        _gradient_poly(img, lens, (215, 215, 218), (150, 150, 155))
        mid = (0.47 + inner) / 2
        cv2.circle(
            img,
            _ipt(car.pt(side * mid, top - 0.035 - drop / 2)),
            max(2, int(car.w * 0.02)),
            (80, 80, 85),
            -1,
            cv2.LINE_AA,
        )  # projector
        cv2.circle(
            img,
            _ipt(car.pt(side * mid, top - 0.035 - drop / 2)),
            max(1, int(car.w * 0.012)),
            (245, 248, 250),
            -1,
            cv2.LINE_AA,
        )
        cv2.line(
            img,
            _ipt(car.pt(side * 0.465, top - 0.012 - drop)),
            _ipt(car.pt(side * (inner + 0.015), top - 0.014)),
            (252, 252, 252),
            max(1, round(car.w * 0.006)),
            cv2.LINE_AA,
        )  # LED daytime running light


def _draw_plate_holder(img: np.ndarray, car: _Car) -> None:
    c = car.colour
    colour = (30, 30, 32) if car.black_holder else _shade(c, 0.6)
    _rounded_rect(
        img,
        car.x(-0.138),
        car.y(_PLATE_V + 0.054),
        car.x(0.138),
        car.y(_PLATE_V - 0.052),
        car.w * 0.01,
        colour,
    )


# --------------------------------------------------------------------------- plate placement


def _plate_quad(rng: random.Random, cx: float, cy: float, pw: float, ph: float) -> np.ndarray:
    """Corners (tl, tr, br, bl) of the plate in the frame: small rotation and perspective skew."""
    angle = np.radians(rng.uniform(-3.5, 3.5))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    yaw = rng.uniform(-0.05, 0.05)  # one side slightly taller: plate turned a few degrees
    tilt = rng.uniform(-0.04, 0.04)  # top slightly wider or narrower: camera above the plate
    half_w, half_h = pw / 2, ph / 2
    corners = np.array(
        [
            [-half_w * (1 + tilt), -half_h * (1 - yaw)],
            [half_w * (1 + tilt), -half_h * (1 + yaw)],
            [half_w * (1 - tilt), half_h * (1 + yaw)],
            [-half_w * (1 - tilt), half_h * (1 - yaw)],
        ]
    )
    return corners @ rot.T + np.array([cx, cy])


def _paste_plate(img: np.ndarray, plate_img: np.ndarray, quad: np.ndarray) -> Box:
    """Warp the plate onto ``quad`` (anti-aliased edges) and return its bounding box."""
    h, w = img.shape[:2]
    x1, y1 = np.floor(quad.min(axis=0)).astype(int)
    x2, y2 = np.ceil(quad.max(axis=0)).astype(int)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2 + 1), min(h, y2 + 1)
    ph, pw = plate_img.shape[:2]
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, (quad - [x1, y1]).astype(np.float32))
    size = (x2 - x1, y2 - y1)
    warped = cv2.warpPerspective(plate_img, matrix, size, flags=cv2.INTER_LINEAR)
    alpha = cv2.warpPerspective(np.full((ph, pw), 255, np.uint8), matrix, size, flags=cv2.INTER_LINEAR)
    a = alpha[..., None].astype(np.float32) / 255.0
    roi = img[y1:y2, x1:x2]
    roi[:] = (roi * (1 - a) + warped * a).astype(np.uint8)
    return int(x1), int(y1), int(x2), int(y2)


# --------------------------------------------------------------------------- camera effects


@dataclass(frozen=True)
class _Exposure:
    gain: float
    bias: float
    cast: tuple[float, float, float]  # per-channel (B, G, R) multipliers
    headlights_on: bool


def _random_exposure(rng: random.Random) -> _Exposure:
    """Bright day, overcast or dusk, with a slight colour cast."""
    mode = rng.choices(("day", "overcast", "dusk"), weights=(55, 30, 15))[0]
    if mode == "day":
        return _Exposure(
            rng.uniform(0.95, 1.12),
            rng.uniform(-5, 10),
            (rng.uniform(0.96, 1.02), 1.0, rng.uniform(0.99, 1.05)),
            False,
        )
    if mode == "overcast":
        return _Exposure(
            rng.uniform(0.8, 0.95), rng.uniform(0, 15), (rng.uniform(1.0, 1.05), 1.0, 1.0), False
        )
    return _Exposure(
        rng.uniform(0.55, 0.72),
        rng.uniform(-8, 4),
        (rng.uniform(0.88, 0.97), 1.0, rng.uniform(1.02, 1.1)),
        True,
    )


def _light_map(rng: random.Random, car: _Car, w: int, h: int) -> np.ndarray:
    """Smooth per-pixel illumination: vignette, light falling across the scene, car body curvature."""
    sw, sh = max(2, w // 8), max(2, h // 8)
    ys, xs = np.mgrid[0:sh, 0:sw].astype(np.float32)
    nx, ny = xs / sw - 0.5, ys / sh - 0.5
    strength = rng.uniform(0.15, 0.3)
    light = 1.0 - strength * (nx**2 + ny**2) * 2  # vignette
    light += rng.uniform(-0.08, 0.08) * nx + rng.uniform(-0.06, 0.02) * ny  # sun direction
    body = np.zeros((sh, sw), np.uint8)
    scale = sw / w
    outline = [
        car.pt(-0.5, 0.08),
        car.pt(0.5, 0.08),
        car.pt(0.5, car.bumper_top),
        car.pt(0.36, car.roof),
        car.pt(-0.36, car.roof),
        car.pt(-0.5, car.bumper_top),
    ]
    cv2.fillPoly(body, [np.round(np.asarray(outline) * scale).astype(np.int32)], 255)
    body_f = cv2.GaussianBlur(body.astype(np.float32) / 255, (0, 0), 1.0)
    u = (xs / scale - car.cx) / car.w
    light -= body_f * 0.35 * np.clip(np.abs(u) - 0.28, 0, None) / 0.22  # sides curve away from the light
    return cv2.resize(light, (w, h), interpolation=cv2.INTER_LINEAR)


def _apply_exposure(img: np.ndarray, exp: _Exposure, light: np.ndarray) -> np.ndarray:
    lut = np.empty((256, 1, 3), np.uint8)
    ramp = np.arange(256, dtype=np.float32)
    for ch in range(3):
        lut[:, 0, ch] = np.clip(ramp * exp.gain * exp.cast[ch] + exp.bias, 0, 255).astype(np.uint8)
    img = cv2.LUT(img, lut)
    return cv2.multiply(img, cv2.merge([light, light, light]), dtype=cv2.CV_8U)


def _add_headlight_glow(img: np.ndarray, car: _Car) -> None:
    """Headlights switched on at dusk: bright lamps with a soft halo."""
    h, w = img.shape[:2]
    glow = np.zeros((h // 4, w // 4), np.uint8)
    top, inner = car.bumper_top - 0.025, car.grille_w + 0.025
    for side in (-1, 1):
        x, y = car.pt(side * (0.47 + inner) / 2, top - 0.035 - car.lamp_drop / 2)
        cv2.circle(glow, (round(x / 4), round(y / 4)), max(2, round(car.w * 0.035 / 4)), 255, -1)
    glow = cv2.GaussianBlur(glow, (0, 0), max(1.0, car.w * 0.02 / 4))
    glow = cv2.resize(glow, (w, h), interpolation=cv2.INTER_LINEAR)
    img[:] = cv2.add(img, cv2.merge([glow, glow, glow]))


def _apply_sensor(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """Slight defocus blur, Gaussian sensor noise and optional JPEG compression."""
    h, w = img.shape[:2]
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.0))
    noise = _window(_noise_tile(3), rng, w, h) * rng.uniform(2.0, 5.0)
    noise16 = noise.astype(np.int16)
    img = cv2.add(img, cv2.merge([noise16, noise16, noise16]), dtype=cv2.CV_8U)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(55, 90)])
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            img = decoded
    return img


# --------------------------------------------------------------------------- frame


def render_vehicle_frame(
    plate: str, rng: random.Random, *, size: tuple[int, int] = (960, 540)
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Draw a gate-camera frame of a car carrying ``plate``.

    Returns the BGR frame of ``size`` = (width, height) and the plate's axis-aligned bounding box
    ``(x1, y1, x2, y2)`` in frame pixels (x2/y2 exclusive).
    """
    w, h = size
    img = np.empty((h, w, 3), np.uint8)
    horizon = round(h * rng.uniform(0.3, 0.4))
    _draw_background(img, rng, horizon)
    _add_texture(img, rng, horizon)
    _draw_booth(img, rng, horizon)
    spec = _GREEN if plate_colour(plate) == "green" else _BLUE
    plate_w = rng.uniform(120, 220) * w / 960
    car = _random_car(rng, w, h, plate_w * _BLUE.width / spec.width)
    _draw_car(img, car, rng)
    plate_h = plate_w * _PLATE_H_MM / spec.width
    plate_img = render_plate(plate, height=max(12, round(plate_h)))
    box = _paste_plate(img, plate_img, _plate_quad(rng, car.x(0.0), car.y(_PLATE_V), plate_w, plate_h))
    exposure = _random_exposure(rng)
    img = _apply_exposure(img, exposure, _light_map(rng, car, w, h))
    if exposure.headlights_on:
        _add_headlight_glow(img, car)
    return _apply_sensor(img, rng), box
