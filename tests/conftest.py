"""Shared fixtures: a real Mosquitto per test, MockFactory pins, the shared plate dataset."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from parkgate.broker import Mosquitto
from parkgate.settings import MqttSettings

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO.parent / "shared" / "datasets" / "plates" / "dev"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real Mosquitto on a free loopback port with the project's generated config."""
    with Mosquitto(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def topic_root() -> str:
    """A unique first topic level, so tests never read each other's retained messages."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def mqtt_settings(broker: Mosquitto, topic_root: str) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, topic_root=topic_root, keepalive_s=5)


@pytest.fixture
def mock_factory() -> Iterator[MockFactory]:
    factory = MockFactory()
    previous = Device.pin_factory
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.reset()
        Device.pin_factory = previous


@pytest.fixture(scope="session")
def dataset() -> Path:
    if not (DATASET / "manifest.csv").exists():
        pytest.skip(f"plate dataset not found at {DATASET} (it lives in ../shared beside the repo)")
    return DATASET


@pytest.fixture(scope="session")
def manifest(dataset: Path) -> dict[str, str]:
    with (dataset / "manifest.csv").open(encoding="utf-8") as f:
        return {row["file"]: row["plate"] for row in csv.DictReader(f)}


@pytest.fixture(scope="session")
def rapidocr_engine():  # type: ignore[no-untyped-def]
    """One RapidOCR engine for the whole session (loading it takes a second)."""
    pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is not installed")
    from edge.ocr import create_engine

    return create_engine("rapidocr")
