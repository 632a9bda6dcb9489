"""``parkgate demo`` end to end: real processes, free counts that move, and a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.waiting import processes_mentioning

pytestmark = pytest.mark.integration


def availability(url: str) -> dict[str, tuple[int, int]]:
    """lot id -> (free, capacity) as the dashboard's API reports it."""
    with urllib.request.urlopen(url + "api/v1/availability", timeout=5) as resp:
        return {lot["lot_id"]: (lot["free"], lot["capacity"]) for lot in json.load(resp)["lots"]}


@pytest.mark.parametrize(
    ("stop_signal", "photos"), [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)]
)
def test_demo_counts_cars_and_stops_every_child(
    tmp_path: Path, stop_signal: signal.Signals, photos: bool, request: pytest.FixtureRequest
) -> None:
    workdir = tmp_path / "demo"
    log = tmp_path / "demo.log"
    extra: list[str] = []
    if photos:  # real photos, linked (not copied) into a folder of their own
        dataset = request.getfixturevalue("dataset")
        folder = tmp_path / "photos"
        folder.mkdir()
        for name in ("scene_001.jpg", "scene_002.jpg", "scene_003.jpg", "scene_004.jpg"):
            (folder / name).symlink_to(dataset / name)
        extra = ["--photos", str(folder)]
    command = [
        sys.executable,
        "-m",
        "parkgate",
        "demo",
        "--lots",
        "2",
        "--interval",
        "1.5",
        "--workdir",
        str(workdir),
    ]
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*command, *extra],
            stdout=subprocess.PIPE, stderr=err, text=True, env=dict(os.environ, PARKGATE_LOG_LEVEL="WARNING"),
        )  # fmt: skip
    stderr = log.read_text  # read on failure
    try:
        started = time.monotonic()
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("dashboard: http://127.0.0.1:"), stderr()
        url = line.split(" ", 1)[1].strip()
        children = processes_mentioning(str(workdir))
        assert len(children) >= 6, children  # broker, collector, dashboard, 2 lots x 2 gates

        seen: dict[str, set[int]] = {}
        while time.monotonic() - started < 15:  # the issue: counts move within 15 s of start
            for lot_id, (free, capacity) in availability(url).items():
                seen.setdefault(lot_id, {capacity}).add(free)
            if len(seen) == 2 and all(len(values) > 1 for values in seen.values()):
                break
            time.sleep(0.25)
        assert set(seen) == {"L01", "L02"}
        assert all(len(values) > 1 for values in seen.values()), f"free counts never changed: {seen}"
    finally:
        proc.send_signal(stop_signal)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == 0, stderr()[-3000:]
    time.sleep(0.2)
    assert processes_mentioning(str(workdir)) == []
