"""Shared fixtures: a real Mosquitto per test, MockFactory pins, the shared plate dataset."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from parkgate.broker import Mosquitto, die_with_parent, free_port
from parkgate.postgres import TEST_SETTINGS, Postgres, postgres_available
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


VICTORIA_METRICS = "/usr/bin/victoria-metrics"


class VictoriaMetrics:
    """Debian's VictoriaMetrics on a loopback port with its data in ``workdir``. ``stop()`` then
    ``start()`` brings it back on the same port and data (an outage). Deduplication at 1 ms, as in
    deploy: a point written twice is one sample."""

    def __init__(self, workdir: Path, *flags: str) -> None:
        self.workdir = workdir
        self.flags = flags
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> VictoriaMetrics:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            VICTORIA_METRICS,
            f"-storageDataPath={self.workdir / 'data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-dedup.minScrapeInterval=1ms",
            "-search.latencyOffset=0s",  # queries see the newest samples at once
            "-search.disableCache",
            *self.flags,
        ]
        with (self.workdir / "victoria-metrics.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"victoria-metrics did not start; see {self.workdir / 'victoria-metrics.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def get(self, path: str, **params: str) -> bytes:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as r:
            return bytes(r.read())

    def export(self, match: str = '{__name__=~"parkgate_.*"}') -> list[dict[str, Any]]:
        """Every raw sample of the matching series (after deduplication), one dict per series."""
        self.get("/internal/force_flush")
        body = self.get("/api/v1/export", **{"match[]": match}).decode()
        return [json.loads(line) for line in body.splitlines() if line.strip()]


def require_victoria_metrics() -> None:
    if shutil.which(VICTORIA_METRICS) is None:
        pytest.skip(f"{VICTORIA_METRICS} not found: apt-get install victoria-metrics (deploy/setup.sh --dev)")


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A real VictoriaMetrics (Debian package ``victoria-metrics``) on a free loopback port."""
    require_victoria_metrics()
    vm = VictoriaMetrics(tmp_path / "victoria").start()
    try:
        yield vm
    finally:
        vm.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """Debian's PostgreSQL server for the session: a temporary cluster on a free loopback port
    (parkgate/postgres.py), commits not waiting for the disk (TEST_SETTINGS), removed afterwards."""
    if not postgres_available():
        pytest.skip("the PostgreSQL server is not installed (Debian: postgresql; deploy/setup.sh --dev)")
    with Postgres(settings=TEST_SETTINGS) as server:
        yield server


@pytest.fixture
def postgres(postgres_server: Postgres) -> str:
    """SQLAlchemy URL (postgresql+psycopg://...@127.0.0.1:PORT/db) of a new, empty database."""
    return postgres_server.create_database(f"t{uuid.uuid4().hex[:12]}")
