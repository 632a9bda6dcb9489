"""Snapshots of each read: the plate crop and the whole frame, kept on the node's disk with a
retention policy, and a small crop sent with the event.

Files are ``{event_id}.crop.jpg`` and ``{event_id}.frame.jpg`` in one folder. Retention: files
older than ``max_age_days`` go first, then the oldest until the folder is under ``max_mb``.
Snapshots are pruned long before events could be: events live in the outbox, which has its own
bound (edge/outbox.py), and a missing snapshot never holds an event back.
"""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

CROP_MAX_BYTES = 12_000  # the crop sent with an event, as JPEG; re-encoded smaller until it fits


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("image could not be encoded as JPEG")
    return bytes(data)


def crop_for_event(crop: np.ndarray | None, max_bytes: int = CROP_MAX_BYTES) -> str | None:
    """The crop as base64 JPEG of at most ``max_bytes`` (lower quality, then smaller), or None."""
    if crop is None or crop.size == 0:
        return None
    image = crop
    for _ in range(6):
        for quality in (85, 70, 50):
            data = encode_jpeg(image, quality)
            if len(data) <= max_bytes:
                return base64.b64encode(data).decode("ascii")
        image = cv2.resize(image, (max(image.shape[1] // 2, 8), max(image.shape[0] // 2, 8)))
    return None


class SnapshotStore:
    def __init__(self, folder: str | Path, *, max_mb: float = 500.0, max_age_days: float = 30.0) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_mb * 1e6)
        self.max_age_s = max_age_days * 86_400

    def save(self, event_id: str, crop: np.ndarray | None, frame: np.ndarray | None) -> None:
        """Write the snapshots of one event; a failure is logged, never raised (the event matters more)."""
        try:
            if crop is not None and crop.size:
                (self.folder / f"{event_id}.crop.jpg").write_bytes(encode_jpeg(crop, 90))
            if frame is not None and frame.size:
                (self.folder / f"{event_id}.frame.jpg").write_bytes(encode_jpeg(frame, 80))
        except (OSError, ValueError) as err:
            logger.warning("snapshot of %s not kept: %s", event_id, err)

    def prune(self) -> int:
        """Apply the retention policy; returns how many files were removed."""
        files = []
        for path in self.folder.glob("*.jpg"):
            try:
                st = path.stat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, path))
        files.sort()
        now, total, removed = time.time(), sum(size for _, size, _ in files), 0
        for mtime, size, path in files:
            if now - mtime <= self.max_age_s and total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        if removed:
            logger.info("pruned %d snapshots (%s)", removed, self.folder)
        return removed
