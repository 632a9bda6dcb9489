"""Readings of the node's own health for its heartbeat (absent readings are None)."""

from __future__ import annotations

import shutil
from pathlib import Path

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")


def cpu_temp_c(zone: Path = THERMAL_ZONE) -> float | None:
    """SoC temperature in °C (the Pi's thermal zone 0), or None where there is none."""
    try:
        return round(int(zone.read_text().strip()) / 1000, 1)
    except (OSError, ValueError):
        return None


def disk_free_mb(path: Path) -> float | None:
    """Free space in MB on the file system holding ``path``."""
    try:
        return round(shutil.disk_usage(path).free / 1e6, 1)
    except OSError:
        return None
