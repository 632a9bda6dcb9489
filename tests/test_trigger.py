"""Presence triggers (loop input, frame difference) and their wiring into the edge node."""

from __future__ import annotations

import random
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.config import EdgeConfig, TriggerSettings
from edge.frames import Frame
from edge.synthetic import render_vehicle_frame
from edge.trigger import EveryFrame, LoopTrigger, MotionTrigger, Presence, make_trigger

SIZE = (480, 270)


def lane(seed: int = 1) -> np.ndarray:
    """An empty lane: smooth asphalt-like texture."""
    noise = np.random.default_rng(seed).integers(60, 120, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 3)


def car(plate: str = "鄂A12345", seed: int = 1) -> np.ndarray:
    return render_vehicle_frame(plate, random.Random(seed), size=SIZE)[0]


def test_every_frame_is_a_vehicle() -> None:
    trigger = EveryFrame()
    assert trigger.update(None, 0.0) == Presence(True, arrived=True)
    assert trigger.update(lane(), 1.0).present


def test_loop_trigger_with_hysteresis() -> None:
    level = {"on": False}
    trigger = LoopTrigger(lambda: level["on"], leave_s=0.5)
    assert trigger.update(None, 0.0) == Presence(False)
    level["on"] = True
    assert trigger.update(None, 0.1) == Presence(True, arrived=True)
    level["on"] = False
    assert trigger.update(None, 0.2) == Presence(True)  # a flicker is not a departure
    level["on"] = True
    assert trigger.update(None, 0.3) == Presence(True)
    level["on"] = False
    assert trigger.update(None, 0.4) == Presence(True)
    assert trigger.update(None, 0.95) == Presence(False, left=True)
    assert trigger.update(None, 1.0) == Presence(False)


def test_loop_trigger_reads_a_gpio_input() -> None:
    factory = MockFactory()
    try:
        trigger = make_trigger(TriggerSettings(kind="loop", pin="GPIO24", leave_s=0.0), pin_factory=factory)
        pin = factory.pin("GPIO24")
        assert not trigger.update(None, 0.0).present  # pulled up, contact open: no vehicle
        pin.drive_low()  # the detector's relay closes to ground
        assert trigger.update(None, 0.1) == Presence(True, arrived=True)
        pin.drive_high()
        assert trigger.update(None, 0.2) == Presence(False, left=True)
        trigger.close()
    finally:
        factory.reset()


def test_motion_trigger_sees_a_vehicle_come_wait_and_go() -> None:
    trigger = MotionTrigger(leave_s=1.0)
    empty, vehicle = lane(), car()
    assert not trigger.update(empty, 0.0).present  # learns the empty lane
    assert not trigger.update(empty, 0.2).present
    assert trigger.update(vehicle, 0.4) == Presence(True, arrived=True)
    for t in (0.6, 0.8, 5.0):  # waiting still at the barrier: still present
        assert trigger.update(vehicle, t).present
    assert trigger.update(empty, 5.2) == Presence(True)  # gone for less than leave_s
    assert trigger.update(empty, 6.3) == Presence(False, left=True)
    assert not trigger.update(empty, 6.5).present


def test_motion_trigger_ignores_light_changes_small_things_and_the_world_outside_its_region() -> None:
    empty = lane()
    trigger = MotionTrigger(roi=(0.0, 0.5, 1.0, 1.0), leave_s=0.0)
    trigger.update(empty, 0.0)
    darker = cv2.convertScaleAbs(empty, alpha=1.0, beta=-40)  # a cloud
    assert not trigger.update(darker, 0.1).present
    speck = empty.copy()
    cv2.circle(speck, (240, 200), 6, (255, 255, 255), -1)  # a leaf, a bird
    assert not trigger.update(speck, 0.2).present
    above = empty.copy()
    above[: SIZE[1] // 2] = car()[: SIZE[1] // 2]  # traffic in the top half, outside the region
    assert not trigger.update(above, 0.3).present
    below = empty.copy()
    below[SIZE[1] // 2 :] = car()[SIZE[1] // 2 :]
    assert trigger.update(below, 0.4).present


def test_motion_trigger_adopts_a_scene_that_stays_changed_and_still() -> None:
    trigger = MotionTrigger(leave_s=0.0, relearn_s=10.0)
    trigger.update(lane(), 0.0)
    parked = car()
    assert trigger.update(parked, 1.0).present  # arrives (moving)
    assert trigger.update(parked, 2.0).present  # still from here on
    assert trigger.update(parked, 11.0).present
    assert trigger.update(parked, 12.5) == Presence(False, left=True)  # still for 10 s: the new normal
    assert not trigger.update(parked, 13.0).present


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"kind": "loop"}, "needs the pin"),
        ({"kind": "motion", "roi": (0.5, 0.0, 0.4, 1.0)}, "roi"),
        ({"kind": "motion", "on_fraction": 0.02, "off_fraction": 0.05}, "off_fraction"),
    ],
)
def test_bad_trigger_settings(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        TriggerSettings.model_validate(settings)


def test_motion_trigger_checks_its_region() -> None:
    with pytest.raises(ValueError, match="roi"):
        MotionTrigger(roi=(0.2, 0.2, 0.1, 0.9))


@pytest.fixture
def node(tmp_path: Path):  # type: ignore[no-untyped-def]
    """An edge node with simulated pins, a motion trigger and voting; its link is never started."""
    pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is not installed")
    from edge.pipeline import EdgeNode

    cfg = EdgeConfig.model_validate(
        {
            "gate_id": "L1-in",
            "lot_id": "L1",
            "direction": "entry",
            "outbox": tmp_path / "outbox.sqlite",
            "camera": {"kind": "files", "path": tmp_path},
            "simulation": {"enabled": True},
            "trigger": {"kind": "motion", "leave_s": 0.0},
            "voting": {"max_frames": 4, "sure": 1.0, "min_agree": 2},
        }
    )
    edge = EdgeNode.build(cfg)
    yield edge
    edge.close()


def test_node_reads_only_while_a_vehicle_is_there_and_decides_once_per_vehicle(node) -> None:  # type: ignore[no-untyped-def]
    empty, vehicle = lane(), car("鄂A12345")
    frames = [empty] * 4 + [vehicle] * 4 + [empty] * 3 + [vehicle] * 3 + [empty] * 2
    events = []
    for n, image in enumerate(frames):
        event = node.handle(Frame(source=f"f{n}", ts=time.time(), image=image))
        if event is not None:
            events.append((n, event.plate))
    # two passages of the same car (it left and came back): one event each, decided as soon as
    # two frames agreed; the frames after the decision and the empty lane were never read
    assert events == [(5, "鄂A12345"), (12, "鄂A12345")]
    assert node.stats.reads == 4
    assert node.stats.idle_frames == 9
    assert node.stats.passages == 2
