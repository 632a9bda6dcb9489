"""Frame sources: folders (with bad files among good ones), OpenCV devices, generated frames."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import cv2
import numpy as np

from edge.config import DeviceCamera, FilesCamera, SyntheticCamera
from edge.frames import DeviceSource, FilesSource, SyntheticSource


def test_folder_yields_images_in_order_and_reports_bad_files(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((20, 30, 3), np.uint8))
    (tmp_path / "b.jpg").write_bytes(b"garbage")
    cv2.imwrite(str(tmp_path / "c.png"), np.full((20, 30, 3), 255, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image suffix; skipped")
    frames = list(
        FilesSource(FilesCamera(kind="files", path=tmp_path, interval_s=0)).frames(threading.Event())
    )
    assert [f.source for f in frames] == ["a.png", "b.jpg", "c.png"]
    assert frames[0].image is not None and frames[0].image.shape == (20, 30, 3)
    assert frames[1].image is None and frames[1].error and "not a readable image" in frames[1].error


def test_folder_repeats_when_asked(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    source = FilesSource(FilesCamera(kind="files", path=tmp_path, interval_s=0, repeat=True))
    assert len(list(itertools.islice(source.frames(threading.Event()), 5))) == 5


def test_opencv_device_source_reads_a_stream_and_reopens_it(tmp_path: Path) -> None:
    """A video file stands in for a camera URL: OpenCV opens both the same way. When the stream
    ends the source reconnects, as it would after an RTSP drop."""
    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), i * 80, np.uint8))
    writer.release()
    source = DeviceSource(DeviceCamera(kind="device", url=str(video), fps=60, reconnect_s=0.01))
    frames = list(itertools.islice(source.frames(threading.Event()), 7))
    assert all(f.image is not None and f.image.shape == (48, 64, 3) for f in frames)
    assert len(frames) == 7  # 3 frames, reopen, 3 frames, reopen, ...


def test_unopenable_device_retries_until_stopped() -> None:
    stop = threading.Event()
    source = DeviceSource(DeviceCamera(kind="device", url="/nonexistent/camera.avi", reconnect_s=0.01))
    threading.Timer(0.2, stop.set).start()
    assert list(source.frames(stop)) == []
    assert not source.connected


def test_exit_gate_with_the_entry_seed_sees_the_same_cars() -> None:
    def plates(cfg: SyntheticCamera, n: int) -> list[str | None]:
        return [f.truth for f in itertools.islice(SyntheticSource(cfg).frames(threading.Event()), n)]

    entry = plates(SyntheticCamera(kind="synthetic", seed=5, interval_s=0.001), 4)
    exit_ = plates(SyntheticCamera(kind="synthetic", seed=5, interval_s=0.002), 4)
    other = plates(SyntheticCamera(kind="synthetic", seed=6, interval_s=0.001), 4)
    assert entry == exit_ and entry != other
    assert all(p is not None and len(p) in (7, 8) for p in entry)
