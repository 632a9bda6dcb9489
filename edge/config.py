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

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from gate_firmware.config import GateConfig
from parkgate.settings import MqttSettings, StrictModel
from protocol.messages import Direction, Id, Plate


class FilesCamera(StrictModel):
    """Image files as frames: one file, or every image in a folder (sorted by name)."""

    kind: Literal["files"]
    path: Path = Field(description="an image file or a folder of images")
    interval_s: float = Field(2.0, ge=0.0, le=3600, description="pause between vehicles")
    start_delay_s: float = Field(0.0, ge=0, le=3600, description="wait before the first file")
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
    threads: int = Field(0, ge=0, le=16, description="inference threads; 0 = the engine's default (1)")
    min_confidence: float = Field(0.6, ge=0, le=1, description="reads below this count as no plate")
    chinese: bool = Field(True, description="accept mainland Chinese plate formats (with look-alike repair)")
    formats: list[str] = Field(
        default_factory=list,
        description="the site's own plate formats as regular expressions, matched against the read text "
        "in upper case without separators, e.g. '[A-Z]{2}[0-9]{3}[A-Z]{2}'",
    )

    @field_validator("formats")
    @classmethod
    def _formats_compile(cls, formats: list[str]) -> list[str]:
        for pattern in formats:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(
                    f"plate format {pattern!r} is not a valid regular expression: {err}"
                ) from None
        return formats

    @model_validator(mode="after")
    def _some_format(self) -> OcrSettings:
        if not self.chinese and not self.formats:
            raise ValueError("with chinese = false, list the site's plate formats in ocr.formats")
        return self


class TriggerSettings(StrictModel):
    """When to read plates: only while a vehicle is in front of the camera (see edge/trigger.py)."""

    kind: Literal["none", "loop", "motion"] = Field(
        "none",
        description="none: every frame is a vehicle (files, synthetic); loop: a loop detector's presence "
        "output on 'pin'; motion: frame difference in 'roi'",
    )
    pin: str | None = Field(None, description="loop: BCM pin of the loop detector's presence output")
    active_high: bool = Field(False, description="loop: the output pulls the pin high (default: to ground)")
    roi: tuple[float, float, float, float] = Field(
        (0.0, 0.0, 1.0, 1.0), description="motion: region x1, y1, x2, y2 as fractions of the frame"
    )
    level: int = Field(25, ge=1, le=255, description="motion: grey-level change that counts as different")
    on_fraction: float = Field(
        0.08, gt=0, lt=1, description="motion: share of the region that means a vehicle"
    )
    off_fraction: float = Field(0.03, gt=0, lt=1, description="motion: share under which the lane is empty")
    leave_s: float = Field(1.0, ge=0, le=60, description="absence needed before a vehicle counts as gone")
    relearn_s: float = Field(
        600.0, gt=0, le=86_400, description="motion: a region changed and still this long becomes background"
    )

    @model_validator(mode="after")
    def _consistent(self) -> TriggerSettings:
        if self.kind == "loop" and not self.pin:
            raise ValueError("trigger kind 'loop' needs the pin of the loop detector's presence output")
        x1, y1, x2, y2 = self.roi
        if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
            raise ValueError(f"trigger roi {self.roi}: expected 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")
        if self.off_fraction > self.on_fraction:
            raise ValueError("trigger off_fraction must not exceed on_fraction")
        return self


class VotingSettings(StrictModel):
    """Several frames per vehicle voted into one plate (see edge/voting.py); used with a trigger."""

    max_frames: int = Field(6, ge=1, le=100, description="decide after this many frames of one vehicle")
    max_seconds: float = Field(3.0, gt=0, le=60, description="decide after this long with what was read")
    min_agree: int = Field(2, ge=1, le=20, description="decide as soon as this many reads agree exactly")
    sure: float = Field(0.97, ge=0, le=1, description="decide at once on a read at least this confident")


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


class SnapshotSettings(StrictModel):
    """Plate crop and frame of each read, kept on the node (edge/snapshots.py)."""

    folder: Path | None = Field(
        None, description="where to keep them (default: 'snapshots' beside the outbox)"
    )
    max_mb: float = Field(500.0, ge=1, description="disk budget; the oldest go first")
    max_age_days: float = Field(30.0, gt=0, description="older snapshots are removed")
    send_crop: bool = Field(True, description="send the plate crop (size-capped JPEG) with the event")


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
    snapshots: SnapshotSettings = Field(default_factory=SnapshotSettings)
    trigger: TriggerSettings = Field(default_factory=TriggerSettings)
    voting: VotingSettings = Field(default_factory=VotingSettings)

    @model_validator(mode="after")
    def _truth_needs_simulation(self) -> EdgeConfig:
        if self.ocr.engine == "truth" and not (
            self.simulation.enabled and isinstance(self.camera, SyntheticCamera)
        ):
            raise ValueError("ocr.engine 'truth' is only for simulation with a synthetic camera")
        return self
