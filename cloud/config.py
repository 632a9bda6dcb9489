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

from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    # visits and occupancy (cloud/visits.py)
    max_stay_h: float | None = Field(
        None, gt=0, le=24 * 366, description="raise an overstay alert for a vehicle inside longer (hours)"
    )
    stale_visit_h: float = Field(
        72.0, gt=0, le=24 * 366, description="an open visit older than this is presumed exited (hours)"
    )
    reconcile: bool = Field(
        False,
        description="re-base the count to the plate-pairing estimate when they drift apart (audited); "
        "leave off where stays longer than stale_visit_h are common",
    )
    drift_tolerance: int = Field(
        3, ge=0, le=100_000, description="re-base (reconcile, sensors) only when the count is off by more"
    )
    occupancy_source: Literal["gates", "sensors"] = Field(
        "gates", description="gates: entries less exits; sensors: re-based to the bay sensors' reports"
    )

    @model_validator(mode="after")
    def _visits(self) -> LotConfig:
        if self.max_stay_h is not None and self.max_stay_h >= self.stale_visit_h:
            raise ValueError(
                f"max_stay_h ({self.max_stay_h:g}) must be less than stale_visit_h ({self.stale_visit_h:g}): "
                "a visit is presumed exited before it could overstay"
            )
        if self.reconcile and self.occupancy_source == "sensors":
            raise ValueError("reconcile is for lots counted by their gates, not occupancy_source 'sensors'")
        return self

    stale_after_s: float = Field(
        120.0,
        ge=1,
        le=86_400,
        description="the count is stale when no gate of the lot was heard (event or heartbeat) for this long",
    )
    history_interval_min: int = Field(
        5, ge=1, le=60, description="one occupancy sample per this many minutes (for forecasts)"
    )


SignText = Annotated[str, Field(max_length=16)]


class ScreenFormat(StrictModel):
    """How a screen writes a number and its states (cloud/screens.py)."""

    digits: int | None = Field(
        None, ge=1, le=5, description="width of the number field: padded to it, larger numbers clamped"
    )
    pad: Literal["space", "zero"] = Field("space", description="what pads a number to ``digits``")
    clamp_style: Literal["cap", "plus"] = Field(
        "cap", description='above the clamp show the clamp ("999") or the clamp and a plus ("99+")'
    )
    full_text: SignText = Field("满", min_length=1, description="shown when nothing is free (or mode full)")
    closed_text: SignText = Field("关闭", min_length=1, description="shown in mode closed")
    stale_text: SignText = Field(
        "--", min_length=1, description="shown instead of a number when the lot's data is stale"
    )

    @model_validator(mode="after")
    def _plus_fits(self) -> ScreenFormat:
        if self.clamp_style == "plus" and self.digits == 1:
            raise ValueError('clamp_style "plus" needs digits >= 2 (a digit and the "+")')
        return self


class ScreenLot(StrictModel):
    lot_id: Id
    label: str | None = Field(None, max_length=40, description="text on the sign; defaults to the lot name")
    arrow: Literal["left", "right", "up", "down", "none"] = "none"
    offset: int = Field(
        0, ge=0, le=100_000, description="spaces held back (e.g. reserved): shown free = free - offset"
    )
    clamp: int | None = Field(None, ge=1, le=99_999, description="largest number shown (e.g. 999)")


class ScreenConfig(StrictModel):
    id: Id
    name: str = Field(min_length=1, max_length=120)
    lots: list[ScreenLot] = Field(min_length=1, max_length=32)
    format: ScreenFormat = Field(
        default_factory=ScreenFormat, description="how numbers and states are written"
    )


class EntryRule(StrictModel):
    """Entries into an inspection area within the station's window that warn, then lock."""

    warn_at: int = Field(2, ge=1, le=1000, description="entries within the window that raise a warning")
    lock_at: int = Field(3, ge=2, le=1000, description="entries within the window that lock the subject out")

    @model_validator(mode="after")
    def _order(self) -> EntryRule:
        if self.lock_at <= self.warn_at:
            raise ValueError(f"lock_at ({self.lock_at}) must be greater than warn_at ({self.warn_at})")
        return self


class StationConfig(StrictModel):
    """An inspection station: its lanes are the gates whose lot_id is ``lot_id`` (default: ``id``)."""

    id: Id = Field(description="station id")
    name: str = Field(min_length=1, max_length=120)
    lot_id: Id | None = Field(
        None, description="the lot_id its lanes (gates) carry; defaults to the station id"
    )
    window_h: float = Field(
        24.0, gt=0, le=31 * 24, description="sliding window the entries are counted in (h)"
    )
    plates: EntryRule = Field(default_factory=EntryRule, description="thresholds for one plate")
    persons: EntryRule = Field(default_factory=EntryRule, description="thresholds for one person code")
    person_vehicles_flag_at: int = Field(
        2,
        ge=2,
        le=100,
        description="distinct plates one person code arrives in, within the window, that flag it",
    )
    count_refused: bool = Field(True, description="refused attempts at a lane count as entries too")

    @property
    def lane_lot(self) -> str:
        return self.lot_id or self.id


class PassRateConfig(StrictModel):
    """When a station's monthly inspection pass rate counts as too high."""

    timezone: str = Field("Asia/Shanghai", description="months are counted in this time zone")
    months: int = Field(3, ge=1, le=24, description="consecutive months above the band that flag a station")
    k: float = Field(3.0, gt=0, le=20, description="band = median + k * MAD (scaled) of the stations' rates")
    min_spread: float = Field(
        0.02, ge=0, le=1, description="the band reaches at least this far above the median"
    )
    min_results: int = Field(30, ge=1, description="a station-month with fewer results is not rated")
    min_stations: int = Field(3, ge=2, description="rated stations a month needs for a peer band")
    max_rate: float | None = Field(
        None, gt=0, le=1, description="fixed upper bound: a rate above it is too high"
    )

    @model_validator(mode="after")
    def _zone(self) -> PassRateConfig:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r} (e.g. Asia/Shanghai)") from None
        return self


class TelemetryConfig(StrictModel):
    """Where the collector writes telemetry (InfluxDB v2 write API: VictoriaMetrics, InfluxDB 2.x/3.x).
    Every point goes to the local ``spool`` first and leaves it only after the TSDB accepted it."""

    url: str = Field(
        pattern=r"^https?://[^\s]+$",
        description="TSDB base URL; points are POSTed to {url}/api/v2/write",
    )
    org: str = Field(
        "parkgate", min_length=1, description="InfluxDB organisation (VictoriaMetrics ignores it)"
    )
    bucket: str = Field("parkgate", min_length=1, description="InfluxDB bucket (VictoriaMetrics ignores it)")
    token_env: str | None = Field(
        None, description="name of the environment variable holding the API token (never the token itself)"
    )
    spool: Path = Field(
        Path("telemetry-spool.sqlite"), description="SQLite file holding points not yet accepted by the TSDB"
    )
    batch_size: int = Field(5000, ge=1, le=100_000, description="at most this many points per write request")
    flush_interval_s: float = Field(
        1.0, gt=0, le=300, description="spooled points are written at least this often"
    )
    max_spool_mb: float = Field(
        1024.0, gt=0, le=1_000_000, description="spool bound; beyond it the oldest points are dropped (ALARM)"
    )
    timeout_s: float = Field(10.0, gt=0, le=300, description="HTTP timeout of one write request")
    max_backoff_s: float = Field(
        30.0, gt=0, le=3600, description="longest wait between retries while the TSDB is unreachable"
    )


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
    stations: list[StationConfig] = Field(default_factory=list, description="inspection stations")
    pass_rates: PassRateConfig = Field(default_factory=PassRateConfig)
    telemetry: TelemetryConfig | None = Field(None, description="telemetry to a TSDB; absent = off")

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

    @model_validator(mode="after")
    def _stations_unique(self) -> CollectorConfig:
        ids = [st.id for st in self.stations]
        lanes = [st.lane_lot for st in self.stations]
        for what, values in (("station ids", ids), ("station lot_ids", lanes)):
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"{what} must be unique; repeated: {', '.join(dupes)}")
        return self
