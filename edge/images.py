"""Loading image files safely: every bad file becomes an ImageError with a specific reason."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from edge.errors import ImageError

MAX_PIXELS = 40_000_000  # 40 MP: beyond any gate camera; refuses decompression bombs before decoding
MAX_BYTES = 64 * 1024 * 1024


def decode_image(data: bytes, source: str = "image") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, BMP, WebP...) to a BGR array, or raise ImageError."""
    if not data:
        raise ImageError(source, "empty file")
    if len(data) > MAX_BYTES:
        raise ImageError(source, f"file of {len(data)} bytes is larger than {MAX_BYTES}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                fmt = probe.format
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageError(source, f"image exceeds the {MAX_PIXELS:,}-pixel limit ({err})") from None
    except UnidentifiedImageError:
        raise ImageError(source, "not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(source, f"not a readable image ({err})") from None
    if width * height > MAX_PIXELS:
        raise ImageError(source, f"image of {width}x{height} exceeds the {MAX_PIXELS:,}-pixel limit")
    if fmt == "JPEG" and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        raise ImageError(source, "truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageError(source, f"{fmt or 'image'} data could not be decoded")
    return image


def load_image(path: str | Path) -> np.ndarray:
    """Read and decode an image file to a BGR array, or raise ImageError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise ImageError(str(path), "is a directory") from None
    except OSError as err:
        raise ImageError(str(path), f"cannot read file: {err.strerror or err}") from None
    return decode_image(data, str(path))
