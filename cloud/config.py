"""The collector's config file (TOML): database, broker, lots and guidance screens.

Example::

    name = "collector-1"
    database = "sqlite:///var/lib/parkgate/events.sqlite"

    [mqtt]
    host = "127.0.0.1"

    [[lots]]
    id = "L01"
    name = "江汉路停车场"
    capacity = 120

    [[screens]]
    id = "S01"
    name = "解放大道 / 江汉路口"
    lots = [{ lot_id = "L01", arrow = "left" }]
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from parkgate.settings import MqttSettings, StrictModel
from protocol.messages import Id, Plate

STATUS_MIN_S = 10.0  # the collector's status tick; re-publishing cannot be more frequent


class LotConfig(StrictModel):
    id: Id = Field(description="lot id, used in topics")
    name: str = Field(min_length=1, max_length=120, description="name shown to drivers")
    capacity: int = Field(ge=0, le=100_000, description="number of spaces")
    lat: float | None = Field(None, ge=-90, le=90, description="latitude of the entrance")
    lon: float | None = Field(None, ge=-180, le=180, description="longitude of the entrance")
    allow: list[Plate] = Field(
        default_factory=list, description="plates admitted even when full (sent to gates)"
    )
    deny: list[Plate] = Field(default_factory=list, description="plates never admitted (sent to gates)")
    locked: list[Plate] = Field(default_factory=list, description="plates locked out (sent to gates)")


class ScreenLot(StrictModel):
    lot_id: Id
    label: str | None = Field(None, max_length=40, description="text on the sign; defaults to the lot name")
    arrow: Literal["left", "right", "up", "down", "none"] = "none"


class ScreenConfig(StrictModel):
    id: Id
    name: str = Field(min_length=1, max_length=120)
    lots: list[ScreenLot] = Field(min_length=1, max_length=32)


class CollectorConfig(StrictModel):
    name: Id = Field("collector-1", description="this collector's name (MQTT client id, status topic)")
    database: str = Field("sqlite:///parkgate.sqlite", description="SQLAlchemy database URL")
    session_expiry_s: int = Field(
        86_400,
        ge=0,
        le=30 * 86_400,
        description="how long the broker queues events while the collector is away",
    )
    shared_group: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="MQTT 5 shared-subscription group: collectors with the same group split the event stream",
    )
    republish_s: float = Field(
        30.0,
        ge=STATUS_MIN_S,
        le=3600,
        description="re-publish every lot's count this often, even without traffic",
    )
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    lots: list[LotConfig] = Field(default_factory=list)
    screens: list[ScreenConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> CollectorConfig:
        lot_ids = [lot.id for lot in self.lots]
        dupes = sorted({i for i in lot_ids if lot_ids.count(i) > 1})
        if dupes:
            raise ValueError(f"lot ids must be unique; repeated: {', '.join(dupes)}")
        screen_ids = [s.id for s in self.screens]
        if len(set(screen_ids)) != len(screen_ids):
            raise ValueError("screen ids must be unique")
        for screen in self.screens:
            unknown = [s.lot_id for s in screen.lots if s.lot_id not in lot_ids]
            if unknown:
                raise ValueError(f"screen {screen.id} shows unknown lot(s): {', '.join(unknown)}")
        return self
