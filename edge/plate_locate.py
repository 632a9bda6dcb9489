"""Finding plates in a frame fast, and cutting an upright crop out of each.

Mainland plates are printed on strongly coloured, retro-reflective backgrounds: blue (ordinary
cars), yellow (large vehicles, learners) and a white-to-green gradient (new energy). The colour
stage looks for such regions on a downscaled copy of the frame:

1. hue within a plate colour's range *and* chroma (max - min of B, G, R) above a level. Chroma,
   not HSV saturation, because saturation blows up in dark pixels: a black bumper or a shadow
   with a blue cast is highly "saturated" but has little chroma. Several chroma levels are tried,
   so a plate that touches a weakly tinted car body at a low level stands alone at a higher one;
2. a morphological close joins the background around the characters into one blob per plate;
3. each blob must be plate-shaped (aspect 1.5..8 after perspective, filling at least 45% of its
   rotated rectangle, wide enough to hold readable characters);
4. blobs are ranked by how plate-like their inside is: a plate's middle rows cross 7-8 characters,
   so a binarised row has at least ~12 light/dark transitions and the crop has contrast.

The quad of each blob (4 corners from its convex hull, or its rotated rectangle) maps back to the
full-resolution frame, and :func:`rectify` warps that quad to an upright crop for the recogniser.
Candidates from a text detector (:func:`text_candidates`) go through the same ranking and
rectification when the colour stage finds nothing readable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge.ocr.base import Quad

WORK_SIDE = 480  # longer side of the downscaled frame the colour stage looks at
#: OpenCV hue ranges (0..180) of plate backgrounds. Blue reaches down to 98: cameras with a warm
#: white balance render plate blue as cyan-blue.
PLATE_HUES: dict[str, tuple[int, int]] = {"blue": (98, 128), "yellow": (15, 35), "green": (35, 90)}
#: Chroma levels tried per colour. New-energy plates are pale (white at the top), hence lower.
CHROMA_LEVELS: dict[str, tuple[int, ...]] = {"blue": (45, 90, 135), "yellow": (60, 110), "green": (30, 60)}
#: The gradient plate is nearly white in its top third, which no colour mask sees; its quad is
#: extended upwards by this share of the green part's height (GA 36-2018 layout).
GREEN_TOP = 0.35
MIN_PLATE_WIDTH = 60  # px in the full frame: 7 characters need >= ~8 px each to be readable
MIN_BLOB_WIDTH = 12  # px in the working frame: smaller blobs are noise
ASPECT = (1.5, 8.0)  # plate is 3.1 (blue, 440x140 mm) or 3.4 (green); perspective widens the range
MIN_FILL = 0.45  # blob area / rotated-rectangle area
MIN_TRANSITIONS = 12  # light/dark changes across a plate's middle row (7 characters, 2 edges each)
MIN_CONTRAST = 40.0  # grey-level standard deviation of a plate crop
TEXTURE_HEIGHT = 24  # px: a candidate is looked at this high (characters ~12 px wide) for its texture
SAME_PLACE_IOU = 0.6  # candidates overlapping more than this are one candidate


@dataclass(frozen=True)
class Candidate:
    """A region that may hold a plate: its corners in frame pixels and how plate-like it looks."""

    quad: Quad
    colour: str  # background colour for colour candidates, "unknown" for text-detector ones
    score: float  # 0..1 plate-likeness (shape fill x character texture x contrast)
    source: str  # "colour" or "text"

    @property
    def box(self) -> tuple[int, int, int, int]:
        x1, y1 = self.quad.min(axis=0)
        x2, y2 = self.quad.max(axis=0)
        return math.floor(x1), math.floor(y1), math.ceil(x2), math.ceil(y2)


# -- geometry ---------------------------------------------------------------------------------------


def order_quad(points: np.ndarray) -> Quad:
    """Corners ordered top-left, top-right, bottom-right, bottom-left (for near-horizontal boxes)."""
    pts = np.asarray(points, np.float32).reshape(4, 2)
    by_x = pts[np.argsort(pts[:, 0], kind="stable")]
    left, right = by_x[:2], by_x[2:]
    tl, bl = left[np.argsort(left[:, 1], kind="stable")]
    tr, br = right[np.argsort(right[:, 1], kind="stable")]
    return np.array([tl, tr, br, bl], np.float32)


def quad_size(quad: Quad) -> tuple[float, float]:
    """Width and height of a quad (the longer of each pair of opposite sides)."""
    tl, tr, br, bl = quad
    width = max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl))
    height = max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr))
    return float(width), float(height)


def overlap(a: Quad, b: Quad) -> float:
    """Intersection over union of two convex quads."""
    inter, _ = cv2.intersectConvexConvex(a.astype(np.float32), b.astype(np.float32))
    union = cv2.contourArea(a.astype(np.float32)) + cv2.contourArea(b.astype(np.float32)) - inter
    return float(inter / union) if union > 0 else 0.0


def rectify(
    image: np.ndarray,
    quad: Quad,
    *,
    height: int = 48,
    margin: tuple[float, float] = (0.0, 0.0),
    stretch: float = 1.0,
) -> np.ndarray:
    """Warp ``quad`` of ``image`` to an upright crop ``height`` pixels high.

    ``margin`` adds (horizontal, vertical) context as fractions of the quad's width and height;
    ``stretch`` widens the crop relative to the quad's own aspect ratio.
    """
    width, tall = quad_size(quad)
    inner_w = max(8.0, height * width / max(tall, 1.0) * stretch)
    mx, my = margin[0] * inner_w, margin[1] * height
    dst = np.array([[mx, my], [mx + inner_w, my], [mx + inner_w, my + height], [mx, my + height]], np.float32)
    size = (round(inner_w + 2 * mx), round(height + 2 * my))
    src = quad.astype(np.float32)
    if tall > 2 * height:  # shrink the quad's surroundings first: warpPerspective does not average
        pad = 0.5 * tall + margin[0] * width + 4
        h, w = image.shape[:2]
        x1, y1 = np.clip(np.floor(src.min(axis=0) - pad), 0, [w - 1, h - 1]).astype(int)
        x2, y2 = np.clip(np.ceil(src.max(axis=0) + pad), [x1 + 1, y1 + 1], [w, h]).astype(int)
        factor = 2 * height / tall
        region = image[y1:y2, x1:x2]
        size_small = (max(1, round((x2 - x1) * factor)), max(1, round((y2 - y1) * factor)))
        image = cv2.resize(region, size_small, interpolation=cv2.INTER_AREA)
        src = ((src - [x1, y1]) * [size_small[0] / (x2 - x1), size_small[1] / (y2 - y1)]).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(src.astype(np.float32), dst)
    return cv2.warpPerspective(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def downscale(image: np.ndarray, longest: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` shrunk so its longer side is at most ``longest``, and the (x, y) factor used.

    Halves with a Gaussian pyramid first (cheap and alias-free), then resizes linearly.
    """
    h, w = image.shape[:2]
    scale = min(1.0, longest / max(h, w))
    if scale == 1.0:
        return image, np.array([1.0, 1.0], np.float32)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = image
    while small.shape[1] >= 2 * size[0] and small.shape[0] >= 2 * size[1]:
        small = cv2.pyrDown(small)
    small = cv2.resize(small, size, interpolation=cv2.INTER_LINEAR)
    return small, np.array([size[0] / w, size[1] / h], np.float32)


def _chroma(image: np.ndarray) -> np.ndarray:
    """max(B, G, R) - min(B, G, R) per pixel."""
    b, g, r = cv2.split(image)
    return cv2.subtract(cv2.max(cv2.max(b, g), r), cv2.min(cv2.min(b, g), r))


def _blob_quad(contour: np.ndarray) -> Quad:
    """Four corners of a blob: from its convex hull when that is a sound quad (keeps perspective),
    else its rotated rectangle."""
    hull = cv2.convexHull(contour)
    perimeter = cv2.arcLength(hull, True)
    for eps in (0.02, 0.04, 0.06):
        approx = cv2.approxPolyDP(hull, eps * perimeter, True)
        if len(approx) == 4:
            quad = order_quad(approx.reshape(4, 2))
            if cv2.isContourConvex(quad.reshape(-1, 1, 2)) and cv2.contourArea(quad) >= 0.8 * cv2.contourArea(
                hull
            ):
                return quad
            break
    return order_quad(cv2.boxPoints(cv2.minAreaRect(contour)))


def texture_score(image: np.ndarray, quad: Quad) -> float:
    """0..1: how much the inside of ``quad`` (in full-resolution ``image``) looks like a row of
    characters: enough light/dark transitions across its middle rows, and contrast."""
    patch = cv2.cvtColor(rectify(image, quad, height=TEXTURE_HEIGHT), cv2.COLOR_BGR2GRAY)
    _, binary = cv2.threshold(patch, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    h = patch.shape[0]
    middle = binary[h // 4 : 3 * h // 4].astype(np.int16)
    transitions = float(np.median((np.diff(middle, axis=1) != 0).sum(axis=1)))
    return min(1.0, transitions / MIN_TRANSITIONS) * min(1.0, float(patch.std()) / MIN_CONTRAST)


def _dedupe(candidates: list[Candidate]) -> list[Candidate]:
    kept: list[Candidate] = []
    for cand in sorted(candidates, key=lambda c: c.score, reverse=True):
        if all(overlap(cand.quad, k.quad) < SAME_PLACE_IOU for k in kept):
            kept.append(cand)
    return kept


# -- colour stage -----------------------------------------------------------------------------------


def colour_candidates(image: np.ndarray) -> list[Candidate]:
    """Plate-coloured, plate-shaped regions of a BGR frame, most plate-like first."""
    small, scale = downscale(image, WORK_SIDE)
    hue = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)[..., 0]
    chroma = _chroma(small)
    close = cv2.getStructuringElement(cv2.MORPH_RECT, (7, 3))  # bridges character strokes
    opening = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))  # drops specks and thin lines
    min_width = max(MIN_BLOB_WIDTH, MIN_PLATE_WIDTH * float(scale.min()))
    found: list[Candidate] = []
    for colour, (lo, hi) in PLATE_HUES.items():
        hue_mask = cv2.inRange(hue, lo, hi)
        for level in CHROMA_LEVELS[colour]:
            mask = cv2.bitwise_and(hue_mask, cv2.inRange(chroma, level, 255))
            mask = cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_CLOSE, close), cv2.MORPH_OPEN, opening)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for contour in contours:
                cand = _blob_candidate(contour, colour, image, scale, min_width)
                if cand is not None:
                    found.append(cand)
    return _dedupe(found)


def _blob_candidate(
    contour: np.ndarray, colour: str, image: np.ndarray, scale: np.ndarray, min_width: float
) -> Candidate | None:
    _, (rw, rh), _ = cv2.minAreaRect(contour)
    long, short = max(rw, rh), min(rw, rh)
    if short < 4 or long < min_width or not ASPECT[0] <= long / short <= ASPECT[1]:
        return None
    fill = cv2.contourArea(contour) / (rw * rh)
    if fill < MIN_FILL:
        return None
    quad = _blob_quad(contour) / scale
    if colour == "green":
        quad[0] += (quad[0] - quad[3]) * GREEN_TOP
        quad[1] += (quad[1] - quad[2]) * GREEN_TOP
    return Candidate(quad, colour, fill * texture_score(image, quad), "colour")


# -- text-detector stage ----------------------------------------------------------------------------


def text_candidates(image: np.ndarray, quads: Sequence[Quad]) -> list[Candidate]:
    """Plate-shaped text lines among a detector's quads (pieces of one line joined), best first."""
    lines = _join_pieces([q for q in quads if quad_size(q)[1] >= 8])
    found = []
    for quad in lines:
        width, tall = quad_size(quad)
        if width < MIN_PLATE_WIDTH or not ASPECT[0] <= width / max(tall, 1.0) <= ASPECT[1] + 2:
            continue
        found.append(Candidate(quad, "unknown", texture_score(image, quad), "text"))
    return _dedupe(found)


def _join_pieces(quads: list[Quad]) -> list[Quad]:
    """Join boxes that continue one another on the same line (a detector may split a plate at
    its separator dot). Two boxes join when their heights agree within 40%, their centres are
    within half a height vertically and the gap between them is under one height."""
    lines: list[Quad] = []
    pieces: list[Quad] = []  # the parts of joined lines stay candidates: a join can be wrong
    for quad in sorted(quads, key=lambda q: float(q[:, 0].min())):
        for i, line in enumerate(lines):
            if _continues(line, quad):
                pieces.extend([line, quad])
                points = np.concatenate([line, quad]).astype(np.float32)
                lines[i] = order_quad(cv2.boxPoints(cv2.minAreaRect(points)))
                break
        else:
            lines.append(quad)
    return lines + pieces


def _continues(left: Quad, right: Quad) -> bool:
    (_, lh), (_, rh) = quad_size(left), quad_size(right)
    if not 0.6 <= lh / max(rh, 1.0) <= 1.0 / 0.6:
        return False
    height = max(lh, rh)
    dy = abs(float(left[:, 1].mean() - right[:, 1].mean()))
    gap = float(right[:, 0].min() - left[:, 0].max())
    return dy < 0.5 * height and -0.5 * height < gap < height


# -- colour of a plate crop -------------------------------------------------------------------------


def crop_colour(crop: np.ndarray) -> str:
    """Background colour of an upright plate crop: blue, yellow, green, white, black or unknown.

    Characters are the minority class of an Otsu split of the grey image; the background is the
    rest, and its median chroma, hue and brightness decide.
    """
    if crop.size == 0:
        return "unknown"
    h, w = crop.shape[:2]
    inner = crop[h // 8 : h - h // 8 or h, w // 16 : w - w // 16 or w]
    gray = cv2.cvtColor(inner, cv2.COLOR_BGR2GRAY)
    _, binary = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    light = binary > 0
    background = light if light.mean() >= 0.5 else ~light
    pixels = inner[background]
    if len(pixels) < 10:
        return "unknown"
    hsv = cv2.cvtColor(pixels.reshape(-1, 1, 3), cv2.COLOR_BGR2HSV).reshape(-1, 3)
    chroma = float(np.median(pixels.max(axis=1).astype(np.int16) - pixels.min(axis=1)))
    value = float(np.median(hsv[:, 2]))
    if chroma >= 35:
        hue = float(np.median(hsv[:, 0]))
        for colour, (lo, hi) in PLATE_HUES.items():
            if lo <= hue <= hi:
                return colour
        return "unknown"
    if value >= 140:
        return "white"
    return "black" if value < 80 else "unknown"
