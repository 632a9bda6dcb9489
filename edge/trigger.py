"""Is a vehicle in front of the camera? Plates are read only while one is, so an idle node idles.

* :class:`EveryFrame` - no presence signal: every frame is a vehicle of its own (file and
  synthetic sources, which deliver one frame per vehicle).
* :class:`LoopTrigger` - an inductive loop detector's presence output on a GPIO input (most loop
  detectors have a second relay output for exactly this; the barrier controller keeps its own).
* :class:`MotionTrigger` - frame difference on a region of interest (the lane in front of the
  barrier) against a running background of the empty lane. A vehicle waiting still at the
  barrier still differs from the background, so it stays present; the background learns only
  while the lane is empty, and adopts a scene that stays changed and still for ``relearn_s``
  (a parked trailer, a new shadow) so the node does not stay awake for ever.

Each trigger turns presence into :class:`Presence` with hysteresis: it takes ``leave_s`` of
absence before a vehicle counts as gone, so a flicker never splits one vehicle into two.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    from edge.config import TriggerSettings


@dataclass(frozen=True)
class Presence:
    present: bool
    arrived: bool = False  # a vehicle became present with this frame
    left: bool = False  # the vehicle counts as gone with this frame


class Trigger(ABC):
    name: str

    @abstractmethod
    def update(self, image: np.ndarray | None, now: float) -> Presence:
        """Presence at time ``now`` (seconds, monotonic), given the latest frame if there is one."""

    def close(self) -> None:  # noqa: B027 - most triggers hold nothing
        """Release what the trigger holds (a GPIO input)."""


class EveryFrame(Trigger):
    """Every frame is a vehicle that arrives and, by the next frame, has left."""

    name = "none"

    def update(self, image: np.ndarray | None, now: float) -> Presence:
        return Presence(present=True, arrived=True)


class _Hysteresis:
    """Present at once on a positive signal; gone only after ``leave_s`` without one."""

    def __init__(self, leave_s: float) -> None:
        self.leave_s = leave_s
        self.present = False
        self._quiet_since: float | None = None

    def step(self, signal: bool, now: float) -> Presence:
        if signal:
            self._quiet_since = None
            if not self.present:
                self.present = True
                return Presence(True, arrived=True)
            return Presence(True)
        if not self.present:
            return Presence(False)
        if self._quiet_since is None:
            self._quiet_since = now
        if now - self._quiet_since >= self.leave_s:
            self.present = False
            self._quiet_since = None
            return Presence(False, left=True)
        return Presence(True)


class LoopTrigger(Trigger):
    """Presence from a loop detector: ``is_present()`` reads its output (e.g. a gpiozero input)."""

    name = "loop"

    def __init__(self, is_present: Callable[[], bool], *, leave_s: float = 0.5, device: Any = None) -> None:
        self._is_present = is_present
        self._state = _Hysteresis(leave_s)
        self._device = device

    def update(self, image: np.ndarray | None, now: float) -> Presence:
        return self._state.step(bool(self._is_present()), now)

    def close(self) -> None:
        if self._device is not None:
            self._device.close()


class MotionTrigger(Trigger):
    """Presence from the difference between the region of interest and the empty lane.

    ``roi`` is (x1, y1, x2, y2) as fractions of the frame. A pixel differs when its grey level
    (after removing the region's mean brightness, so clouds and headlights shifting the whole
    scene do not count) is more than ``level`` from the background; a vehicle is present when
    at least ``on_fraction`` of the region differs, and counts as gone when under
    ``off_fraction`` differs for ``leave_s``.
    """

    name = "motion"
    WIDTH = 160  # the region is compared at this width: enough for a car, cheap on a Pi

    def __init__(
        self,
        roi: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
        *,
        level: int = 25,
        on_fraction: float = 0.08,
        off_fraction: float = 0.03,
        leave_s: float = 1.0,
        learn_rate: float = 0.05,
        relearn_s: float = 600.0,
    ) -> None:
        x1, y1, x2, y2 = roi
        if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
            raise ValueError(f"roi {roi}: expected 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")
        if not 0 < off_fraction <= on_fraction < 1:
            raise ValueError("expected 0 < off_fraction <= on_fraction < 1")
        self.roi = roi
        self.level = level
        self.on_fraction = on_fraction
        self.off_fraction = off_fraction
        self.learn_rate = learn_rate
        self.relearn_s = relearn_s
        self._state = _Hysteresis(leave_s)
        self._background: np.ndarray | None = None
        self._previous: np.ndarray | None = None
        self._still_since: float | None = None
        self.changed = 0.0  # share of the region that differed from the background last frame

    def update(self, image: np.ndarray | None, now: float) -> Presence:
        if image is None:  # an unusable frame says nothing about the lane
            return Presence(self._state.present)
        region = self._region(image)
        if self._background is None or self._background.shape != region.shape:
            self._background = region.copy()
            self._previous = region
            return self._state.step(False, now)
        self.changed = self._differs(region, self._background)
        moving = self._previous is not None and self._differs(region, self._previous) >= self.off_fraction
        self._previous = region
        threshold = self.off_fraction if self._state.present else self.on_fraction
        result = self._state.step(self.changed >= threshold, now)
        if not result.present:
            cv2.accumulateWeighted(region, self._background, self.learn_rate)
            self._still_since = None
        elif moving:
            self._still_since = None
        elif self._still_since is None:
            self._still_since = now
        elif now - self._still_since >= self.relearn_s:  # changed and still for long: the new normal
            self._background = region.copy()
            self._still_since = None
            self._state.present = False
            return Presence(False, left=True)
        return result

    def _region(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        x1, y1, x2, y2 = self.roi
        crop = image[
            int(y1 * h) : max(int(y2 * h), int(y1 * h) + 1), int(x1 * w) : max(int(x2 * w), int(x1 * w) + 1)
        ]
        gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
        height = max(1, round(gray.shape[0] * self.WIDTH / max(gray.shape[1], 1)))
        small = cv2.resize(gray, (self.WIDTH, height), interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(small, (5, 5), 0).astype(np.float32)

    def _differs(self, a: np.ndarray, b: np.ndarray) -> float:
        diff = np.abs((a - float(a.mean())) - (b - float(b.mean())))
        return float(np.count_nonzero(diff > self.level)) / diff.size


def make_trigger(cfg: TriggerSettings, *, pin_factory: Any = None) -> Trigger:
    """The trigger ``cfg`` describes; a loop input is claimed on ``pin_factory`` (None: gpiozero's)."""
    if cfg.kind == "loop":
        from gpiozero import DigitalInputDevice

        device = DigitalInputDevice(cfg.pin, pull_up=not cfg.active_high, pin_factory=pin_factory)
        return LoopTrigger(lambda: bool(device.is_active), leave_s=cfg.leave_s, device=device)
    if cfg.kind == "motion":
        return MotionTrigger(
            cfg.roi,
            level=cfg.level,
            on_fraction=cfg.on_fraction,
            off_fraction=cfg.off_fraction,
            leave_s=cfg.leave_s,
            relearn_s=cfg.relearn_s,
        )
    return EveryFrame()
