"""Frame sources: where the edge node's images come from.

Every source yields :class:`Frame` values until stopped; each paces itself (``stop.wait``) so
an idle node sleeps. Files and folders, USB and RTSP cameras (through OpenCV) and generated
frames for simulation all sit behind :func:`open_source`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.config import Camera, DeviceCamera, FilesCamera, SyntheticCamera
from edge.errors import ImageError, SourceError
from edge.images import load_image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Frame:
    """One camera image, or the reason it could not be had."""

    source: str
    ts: float
    image: np.ndarray | None = None
    error: str | None = None
    truth: str | None = None  # the plate a synthetic frame shows (for checks, never for decisions)


class FrameSource(ABC):
    name: str

    @abstractmethod
    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Yield frames until ``stop`` is set or the source ends."""


def image_files(path: Path) -> list[Path]:
    """The image files in a folder (sorted by name), or the file itself."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if path.exists():
        return [path]
    raise SourceError(f"{path}: no such file or folder")


class FilesSource(FrameSource):
    def __init__(self, cfg: FilesCamera) -> None:
        self.cfg = cfg
        self.name = str(cfg.path)
        self.files = image_files(cfg.path)
        if not self.files:
            raise SourceError(f"{cfg.path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        if stop.wait(self.cfg.start_delay_s):
            return
        while not stop.is_set():
            for path in self.files:
                try:
                    yield Frame(source=path.name, ts=time.time(), image=load_image(path))
                except ImageError as err:
                    yield Frame(source=path.name, ts=time.time(), error=err.problem)
                if stop.wait(self.cfg.interval_s):
                    return
            if not self.cfg.repeat:
                return


class DeviceSource(FrameSource):
    """A USB or network camera through OpenCV; reopens it after failures and says so."""

    def __init__(self, cfg: DeviceCamera) -> None:
        self.cfg = cfg
        self.name = cfg.url
        self.connected = False

    def _open(self) -> cv2.VideoCapture:
        target: int | str = int(self.cfg.url) if self.cfg.url.isdigit() else self.cfg.url
        return cv2.VideoCapture(target)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        period = 1.0 / self.cfg.fps
        while not stop.is_set():
            cap = self._open()
            if not cap.isOpened():
                logger.warning(
                    "camera %s cannot be opened; retrying in %.0f s", self.name, self.cfg.reconnect_s
                )
                stop.wait(self.cfg.reconnect_s)
                continue
            self.connected = True
            logger.info("camera %s connected", self.name)
            try:
                while not stop.is_set():
                    ok, image = cap.read()
                    if not ok:
                        logger.warning("camera %s stopped delivering frames; reconnecting", self.name)
                        break
                    yield Frame(source=self.name, ts=time.time(), image=image)
                    stop.wait(period)
            finally:
                self.connected = False
                cap.release()
            stop.wait(self.cfg.reconnect_s)


class SyntheticSource(FrameSource):
    """Generated frames of cars at a gate. Plates follow ``seed``: an exit gate given its entry
    gate's seed sees the same cars leave, in the same order, after its start delay."""

    def __init__(self, cfg: SyntheticCamera) -> None:
        from edge import synthetic  # needs the CJK font; imported only when used

        if cfg.render:  # fail at start, not at the first car, if the font is missing
            synthetic.render_plate("京A00000")
        self.cfg = cfg
        self.name = f"synthetic:{cfg.seed}"
        self._synthetic = synthetic

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        plates = random.Random(self.cfg.seed)
        scene = random.Random(self.cfg.seed ^ 0x5EED5)
        if stop.wait(self.cfg.start_delay_s):
            return
        n = 0
        while not stop.is_set() and (self.cfg.count is None or n < self.cfg.count):
            plate = self._synthetic.random_plate(plates, green_share=self.cfg.green_share)
            image = self._synthetic.render_vehicle_frame(plate, scene)[0] if self.cfg.render else None
            n += 1
            yield Frame(source=f"{self.name}#{n}", ts=time.time(), image=image, truth=plate)
            if stop.wait(scene.expovariate(1.0 / self.cfg.interval_s)):
                return


def open_source(cfg: Camera) -> FrameSource:
    if isinstance(cfg, FilesCamera):
        return FilesSource(cfg)
    if isinstance(cfg, DeviceCamera):
        return DeviceSource(cfg)
    if isinstance(cfg, SyntheticCamera):
        return SyntheticSource(cfg)
    raise SourceError(f"unknown camera kind {cfg!r}")
