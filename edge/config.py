"""The edge node's config file (TOML), validated before anything starts.

Example::

    gate_id = "L01-in"
    lot_id = "L01"
    direction = "entry"
    outbox = "/var/lib/parkgate/outbox.sqlite"

    [mqtt]
    host = "broker.example"
    username = "L01-in"
    password_env = "PARKGATE_MQTT_PASSWORD"

    [camera]
    kind = "device"
    url = "rtsp://10.0.0.5/stream1"
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from gate_firmware.config import GateConfig
from parkgate.settings import MqttSettings, StrictModel
from protocol.messages import Direction, Id, Plate


class FilesCamera(StrictModel):
    """Image files as frames: one file, or every image in a folder (sorted by name)."""

    kind: Literal["files"]
    path: Path = Field(description="an image file or a folder of images")
    interval_s: float = Field(2.0, ge=0.0, le=3600, description="pause between vehicles")
    repeat: bool = Field(False, description="start over after the last file")


class DeviceCamera(StrictModel):
    """A camera through OpenCV: a USB index ("0") or a stream URL (rtsp://, http://)."""

    kind: Literal["device"]
    url: str = Field(min_length=1, description='USB index such as "0", or an rtsp:// / http:// URL')
    fps: float = Field(5.0, gt=0, le=60, description="frames per second to analyse")
    reconnect_s: float = Field(2.0, gt=0, le=300, description="wait before reopening a failed camera")


class SyntheticCamera(StrictModel):
    """Generated gate-camera frames of vehicles with known plates (demo and tests)."""

    kind: Literal["synthetic"]
    seed: int = Field(
        1, description="plate sequence seed; an exit gate with its entry's seed sees the same cars"
    )
    interval_s: float = Field(4.0, gt=0, le=3600, description="mean pause between vehicles")
    start_delay_s: float = Field(0.0, ge=0, le=3600, description="wait before the first vehicle")
    green_share: float = Field(0.15, ge=0, le=1, description="share of new-energy (green) plates")
    render: bool = Field(
        True,
        description="draw frames; false yields only the known plate (fault benchmarks, with ocr.engine = 'truth')",
    )
    count: int | None = Field(None, ge=1, description="stop after this many vehicles (default: never)")


Camera = Annotated[FilesCamera | DeviceCamera | SyntheticCamera, Field(discriminator="kind")]


class OcrSettings(StrictModel):
    engine: str = Field(
        "rapidocr",
        description="OCR engine: rapidocr (default), easyocr, or truth (simulation only: take the plate the "
        "synthetic camera says it shows, for benchmarks where reading is not the subject)",
    )
    threads: int = Field(0, ge=0, le=16, description="inference threads; 0 = runtime default")
    min_confidence: float = Field(0.6, ge=0, le=1, description="reads below this count as no plate")


class PolicySettings(StrictModel):
    allow: list[Plate] = Field(default_factory=list, description="plates admitted even when the lot is full")
    deny: list[Plate] = Field(default_factory=list, description="plates never admitted")
    open_without_plate: bool = Field(False, description="admit an entering vehicle whose plate was not read")
    cooldown_s: float = Field(10.0, ge=0, le=3600, description="ignore the same plate again within this time")


class SimulationSettings(StrictModel):
    """Simulated hardware: MockFactory pins and a vehicle that drives over the loop."""

    enabled: bool = Field(False, description="use MockFactory pins and simulate vehicles on the loop")
    drive_s: float = Field(1.0, gt=0, le=60, description="time a vehicle spends on the loop")
    vehicles: bool = Field(True, description="drive a simulated vehicle through after each opening")


class LinkSettings(StrictModel):
    """How the node talks to the cloud (see edge/mqtt_link.py)."""

    heartbeat_s: float = Field(30.0, ge=1, le=3600, description="status heartbeat interval")
    drain_rate: float = Field(500.0, gt=0, le=100_000, description="events/s at most when draining a backlog")
    confirm_timeout_s: float = Field(
        10.0,
        ge=0.5,
        le=3600,
        description="publish again events the collector has not confirmed after this long",
    )
    outbox_max_events: int = Field(
        1_000_000, ge=100, description="outbox bound; beyond it the oldest events are dropped with an alarm"
    )


class EdgeConfig(StrictModel):
    gate_id: Id = Field(description="unique gate id, also its MQTT user name")
    lot_id: Id = Field(description="the lot this gate belongs to")
    direction: Direction = Field(description="entry or exit")
    outbox: Path = Field(Path("outbox.sqlite"), description="SQLite file of events not yet acknowledged")
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    camera: Camera
    ocr: OcrSettings = Field(default_factory=OcrSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    gate: GateConfig = Field(default_factory=GateConfig)
    simulation: SimulationSettings = Field(default_factory=SimulationSettings)
    link: LinkSettings = Field(default_factory=LinkSettings)

    @model_validator(mode="after")
    def _truth_needs_simulation(self) -> EdgeConfig:
        if self.ocr.engine == "truth" and not (
            self.simulation.enabled and isinstance(self.camera, SyntheticCamera)
        ):
            raise ValueError("ocr.engine 'truth' is only for simulation with a synthetic camera")
        return self
