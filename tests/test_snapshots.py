"""Snapshots: the crop sent with an event is size-capped; local files follow the retention policy."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import numpy as np

from edge.snapshots import SnapshotStore, crop_for_event


def test_crop_sent_with_an_event_fits_the_cap() -> None:
    noisy = np.random.default_rng(1).integers(0, 255, (200, 600, 3), dtype=np.uint8)  # hard to compress
    encoded = crop_for_event(noisy, max_bytes=8_000)
    assert encoded is not None
    data = base64.b64decode(encoded)
    assert data[:2] == b"\xff\xd8" and len(data) <= 8_000
    assert crop_for_event(None) is None


def test_retention_removes_old_then_oldest_beyond_budget(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_mb=0.05, max_age_days=1)
    image = np.random.default_rng(2).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    for n in range(6):
        store.save(f"E{n}", image, image)
    old = tmp_path / "E0.frame.jpg"
    os.utime(old, (time.time() - 3 * 86_400, time.time() - 3 * 86_400))
    removed = store.prune()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert removed >= 1 and "E0.frame.jpg" not in left
    assert sum((tmp_path / name).stat().st_size for name in left) <= 50_000
    assert "E5.crop.jpg" in left  # the newest stay
