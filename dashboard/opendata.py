"""The driver and open-data feed: lots near a place, free-space forecasts, a DATEX II export.

``GET /api/v1/lots?lat=&lon=&radius_km=``
    Like ParkAPI: the lots within ``radius_km`` (default 5, at most 50) of the point, nearest
    first (haversine distance), each with ``free``, ``capacity``, ``distance_m``, ``data_age_s``
    and ``stale``. Without ``lat``/``lon`` every lot, by id. A stale lot has ``free: null`` and
    ``state: "nodata"``; its last count stays in ``last_free`` beside its age, so an app can say
    "12 free 9 minutes ago" but never shows that as now.

``GET /api/v1/lots/<lot_id>/forecast``
    Free spaces in 30 and 60 minutes from the lot's occupancy history (cloud/history.py: weekly,
    then daily profile, then no change; each says its method and samples). Needs ``database`` in
    the dashboard's config (the collector's database), else 503.

``GET /api/v1/datex2``
    The lots as a DATEX II (v3) *Parking Publication Light* in JSON, the shape ParkAPI v3 and the
    German Mobilithek publish. Elements followed, per ``parkingSite``: ``_id``, ``name``, ``type``
    (``carPark``: ParkGate lots are barrier-gated), ``locationAndDimension`` /
    ``coordinatesForDisplay`` (``latitude``, ``longitude``; left out when the lot has no position),
    ``numberOfSpaces`` (capacity), ``availableSpaces`` (free; left out when stale), ``isOpenNow``
    and ``lastUpdate`` (when a gate last confirmed the count). Two elements come from the full
    DATEX II Parking Publications (``ParkingSiteStatus``), since Light has no place for them:
    ``parkingOccupancy`` (``parkingNumberOfOccupiedSpaces``, ``parkingOccupancy`` in percent; left
    out when stale) and ``parkingSiteStatus`` (``spacesAvailable``, ``full``, ``closed``, or
    ``unknown`` when the data is stale). The envelope: ``parkingPublicationLight`` with ``name``,
    ``lang``, ``publicationTime`` and ``parkingSite``; ``_modelBaseVersion`` "3".

Everything comes from the dashboard's live state (the collector's retained availability and
gate status over MQTT), so the age of each count is known here: ``data_age_s`` at the message's
``ts`` plus the time since. Query parameters are checked strictly: an unknown, repeated, empty,
non-numeric or out-of-range one is a 400 in the API's one error shape.
"""

from __future__ import annotations

import math
import re
import threading
from datetime import datetime, timedelta
from typing import Literal

from flask import Blueprint, Flask, Response, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from dashboard import live_state
from dashboard.api import QueryError, error_response, strict_params
from dashboard.config import DashboardConfig
from dashboard.openapi import operation, query
from protocol import GateStatus, LotAvailability
from protocol.messages import utc_now
from protocol.topics import ID_PATTERN

bp = Blueprint("opendata", __name__, url_prefix="/api/v1")

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)
DEFAULT_RADIUS_KM = 5.0
MAX_RADIUS_KM = 50.0
LEGACY_STALE_S = 120.0  # messages from a collector that predates stale_after_s: the sign's old rule
CLOSED_MODES = ("closed", "lockdown")
LOT_ID = re.compile(ID_PATTERN)

Reply = Response | tuple[Response, int]


# -- response models (for the OpenAPI description) ---------------------------------------------------
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class NearbyLot(_Model):
    id: str = Field(description="lot id")
    name: str
    lat: float | None = Field(description="latitude of the entrance (WGS 84)")
    lon: float | None = Field(description="longitude of the entrance (WGS 84)")
    distance_m: float | None = Field(description="from the query point (haversine); null without one")
    capacity: int = Field(ge=0)
    free: int | None = Field(description="free spaces now; null while the data is stale")
    last_free: int = Field(ge=0, description="the last count, however old (see data_age_s)")
    occupied: int = Field(ge=0, description="occupied spaces in the last count")
    stale: bool = Field(description="no gate of the lot confirmed the count within stale_after_s")
    data_age_s: float | None = Field(description="seconds since a gate confirmed the count; null if never")
    stale_after_s: float = Field(description="the lot's limit")
    state: Literal["open", "closed", "nodata"] = Field(description="as ParkAPI: nodata when stale")
    last_updated: datetime | None = Field(description="when a gate last confirmed the count")


class LotsQuery(_Model):
    lat: float
    lon: float
    radius_km: float


class LotsResponse(_Model):
    ts: datetime = Field(description="when this answer was made")
    query: LotsQuery | None = Field(description="the point and radius searched; null: every lot")
    count: int
    lots: list[NearbyLot]


class ForecastItem(_Model):
    minutes: int = Field(description="how far ahead")
    free: int | None = Field(description="free spaces expected; null when unavailable")
    method: Literal["weekly", "daily", "none", "unavailable"] = Field(
        description="weekly/daily profile, none (no change), or unavailable (no current count)"
    )
    samples: int = Field(description="past weeks or days averaged")
    change: float = Field(description="mean change of occupied spaces applied")


class ForecastResponse(_Model):
    lot_id: str
    ts: datetime
    capacity: int
    free: int | None = Field(description="free spaces now; null when stale or unknown")
    stale: bool
    data_age_s: float | None
    forecasts: list[ForecastItem]
    detail: str | None = Field(None, description="why forecasts are unavailable")


class Datex2Coordinate(_Model):
    latitude: float
    longitude: float


class Datex2LocationAndDimension(_Model):
    coordinatesForDisplay: Datex2Coordinate  # DATEX II element names, camelCase


class Datex2Occupancy(_Model):
    parkingNumberOfOccupiedSpaces: int
    parkingOccupancy: float = Field(description="percent of the spaces occupied")


class Datex2ParkingSite(_Model):
    id: str = Field(alias="_id")
    name: str
    type: Literal["carPark"] = "carPark"
    locationAndDimension: Datex2LocationAndDimension | None = None
    numberOfSpaces: int
    availableSpaces: int | None = None
    parkingOccupancy: Datex2Occupancy | None = None
    parkingSiteStatus: Literal["spacesAvailable", "full", "closed", "unknown"]
    isOpenNow: bool | None = None
    lastUpdate: datetime | None = None


class Datex2ParkingPublicationLight(_Model):
    name: str
    lang: str = "zh"
    publicationTime: datetime
    parkingSite: list[Datex2ParkingSite]


class Datex2Publication(_Model):
    modelBaseVersion: str = Field("3", alias="_modelBaseVersion")
    parkingPublicationLight: Datex2ParkingPublicationLight


# -- what is known about a lot now ------------------------------------------------------------------
class LotNow:
    """A lot's retained availability seen from ``now``: age, staleness, closure."""

    def __init__(self, lot: LotAvailability, gates: list[GateStatus], now: datetime) -> None:
        self.lot = lot
        since = max((now - lot.ts).total_seconds(), 0.0)
        self.age: float | None
        if lot.stale_after_s is None:  # from a collector that does not judge freshness
            self.limit, self.age = LEGACY_STALE_S, since
        else:
            self.limit = lot.stale_after_s
            self.age = None if lot.data_age_s is None else lot.data_age_s + since
        self.stale = lot.stale or self.age is None or self.age > self.limit
        online = [g for g in gates if g.lot_id == lot.lot_id and g.state == "online"]
        self.closed = bool(online) and all(g.mode in CLOSED_MODES for g in online)
        self.confirmed_at = None if self.age is None else now - timedelta(seconds=self.age)

    @property
    def free(self) -> int | None:
        return None if self.stale else self.lot.free


def _now_lots() -> list[LotNow]:
    state = live_state(current_app)
    now = utc_now()
    gates = list(state.gates.values())
    return [LotNow(lot, gates, now) for lot in sorted(state.lots.values(), key=lambda x: x.lot_id)]


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


# -- strict query parameters ------------------------------------------------------------------------
def _number(params: dict[str, str], name: str, low: float, high: float, *, low_open: bool = False) -> float:
    try:
        value = float(params[name])
    except ValueError:
        raise QueryError(f"{name} must be a number, not {params[name]!r}") from None
    if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
        bound = f"{'more than' if low_open else 'from'} {low:g} {'up to' if low_open else 'to'} {high:g}"
        raise QueryError(f"{name} must be {bound}; got {params[name]}")
    return value


def _lots_query() -> LotsQuery | None:
    params = strict_params(("lat", "lon", "radius_km"))
    if not params:
        return None
    if "lat" not in params or "lon" not in params:
        missing = "lon" if "lat" in params else "lat"
        raise QueryError(f"{missing} is missing: give lat and lon together (radius_km is optional)")
    return LotsQuery(
        lat=_number(params, "lat", -90, 90),
        lon=_number(params, "lon", -180, 180),
        radius_km=_number(params, "radius_km", 0, MAX_RADIUS_KM, low_open=True)
        if "radius_km" in params
        else DEFAULT_RADIUS_KM,
    )


def _json(model: BaseModel, *, exclude_none: bool = False) -> Response:
    return jsonify(model.model_dump(mode="json", by_alias=True, exclude_none=exclude_none))


# -- endpoints -----------------------------------------------------------------------------------------
@bp.get("/lots")
@operation(
    LotsResponse,
    params=(
        query("lat", "number", "latitude of the point (WGS 84); give lat and lon together", minimum=-90, maximum=90),
        query("lon", "number", "longitude of the point (WGS 84)", minimum=-180, maximum=180),
        query("radius_km", "number", "search radius around the point (needs lat and lon)",
              exclusiveMinimum=0, maximum=MAX_RADIUS_KM, default=DEFAULT_RADIUS_KM),
    ),
)  # fmt: skip
def lots() -> Reply:
    """Lots near a point (ParkAPI-like), nearest first, or every lot."""
    try:
        query = _lots_query()
    except QueryError as err:
        return error_response(400, str(err))
    found: list[NearbyLot] = []
    for now_lot in _now_lots():
        lot = now_lot.lot
        distance = None
        if query is not None:
            if lot.lat is None or lot.lon is None:
                continue  # a lot without a position is never "near"
            distance = haversine_m(query.lat, query.lon, lot.lat, lot.lon)
            if distance > query.radius_km * 1000:
                continue
        found.append(
            NearbyLot(
                id=lot.lot_id,
                name=lot.name,
                lat=lot.lat,
                lon=lot.lon,
                distance_m=None if distance is None else round(distance, 1),
                capacity=lot.capacity,
                free=now_lot.free,
                last_free=lot.free,
                occupied=lot.occupied,
                stale=now_lot.stale,
                data_age_s=None if now_lot.age is None else round(now_lot.age, 1),
                stale_after_s=now_lot.limit,
                state="nodata" if now_lot.stale else "closed" if now_lot.closed else "open",
                last_updated=now_lot.confirmed_at,
            )
        )
    if query is not None:
        found.sort(key=lambda x: (x.distance_m, x.id))
    return _json(LotsResponse(ts=utc_now(), query=query, count=len(found), lots=found))


@bp.get("/lots/<lot_id>/forecast")
@operation(ForecastResponse, errors=(503,))
def forecast(lot_id: str) -> Reply:
    """Free spaces in 30 and 60 minutes, from the lot's history in the collector's database."""
    try:
        strict_params(())
    except QueryError as err:
        return error_response(400, str(err))
    if not LOT_ID.match(lot_id):
        return error_response(400, f"lot id {lot_id[:80]!r} is malformed (1-64 of A-Z a-z 0-9 _ . -)")
    engine = database(current_app)
    if engine is None:
        return error_response(
            503, "forecasts need the collector's database: set database in the dashboard config"
        )
    from cloud.events_store import LotRow
    from cloud.history import HORIZONS_MIN, forecast_lot

    now = utc_now()
    try:
        with Session(engine) as s:
            row = s.get(LotRow, lot_id)
            capacity = row.capacity if row else 0
        if row is None:
            return error_response(404, f"no lot {lot_id!r}")
        live = live_state(current_app).lots.get(lot_id)
        now_lot = LotNow(live, list(live_state(current_app).gates.values()), now) if live else None
        if now_lot is None or now_lot.stale:
            detail = "no current count for the lot" if now_lot is None else "the lot's data is stale"
            items = [
                ForecastItem(minutes=m, free=None, method="unavailable", samples=0, change=0.0)
                for m in HORIZONS_MIN
            ]
            return _json(
                ForecastResponse(
                    lot_id=lot_id, ts=now, capacity=capacity, free=None, stale=True,
                    data_age_s=None if now_lot is None or now_lot.age is None else round(now_lot.age, 1),
                    forecasts=items, detail=detail,
                )
            )  # fmt: skip
        lot = now_lot.lot
        made = forecast_lot(engine, lot_id, now, lot.occupied, lot.capacity)
    except SQLAlchemyError as err:
        current_app.logger.warning("forecast for %s: database error: %s", lot_id, err)
        return error_response(503, "the collector's database cannot be read right now (not migrated or away)")
    items = [
        ForecastItem(minutes=f.minutes, free=f.free, method=f.method, samples=f.samples, change=f.change)
        for f in made
    ]
    return _json(
        ForecastResponse(
            lot_id=lot_id, ts=now, capacity=lot.capacity, free=lot.free, stale=False,
            data_age_s=None if now_lot.age is None else round(now_lot.age, 1), forecasts=items,
        )
    )  # fmt: skip


@bp.get("/datex2")
@operation(Datex2Publication)
def datex2() -> Reply:
    """Every lot as a DATEX II Parking Publication Light (see the module docstring)."""
    try:
        strict_params(())
    except QueryError as err:
        return error_response(400, str(err))
    cfg: DashboardConfig = current_app.config["PARKGATE"]
    sites = [_datex2_site(now_lot) for now_lot in _now_lots()]
    publication = Datex2Publication(
        parkingPublicationLight=Datex2ParkingPublicationLight(
            name=f"{cfg.title} parking sites", publicationTime=utc_now(), parkingSite=sites
        )
    )
    return _json(publication, exclude_none=True)


def _datex2_site(now_lot: LotNow) -> Datex2ParkingSite:
    lot = now_lot.lot
    if now_lot.stale:
        status: Literal["spacesAvailable", "full", "closed", "unknown"] = "unknown"
    elif now_lot.closed:
        status = "closed"
    else:
        status = "full" if lot.free == 0 else "spacesAvailable"
    location = None
    if lot.lat is not None and lot.lon is not None:
        location = Datex2LocationAndDimension(
            coordinatesForDisplay=Datex2Coordinate(latitude=lot.lat, longitude=lot.lon)
        )
    return Datex2ParkingSite(
        id=lot.lot_id,
        name=lot.name,
        locationAndDimension=location,
        numberOfSpaces=lot.capacity,
        availableSpaces=None if now_lot.stale else lot.free,
        parkingOccupancy=None
        if now_lot.stale
        else Datex2Occupancy(
            parkingNumberOfOccupiedSpaces=lot.occupied,
            parkingOccupancy=round(100 * lot.occupied / lot.capacity, 1) if lot.capacity else 100.0,
        ),
        parkingSiteStatus=status,
        isOpenNow=None if now_lot.stale else not now_lot.closed,
        lastUpdate=now_lot.confirmed_at,
    )


# -- the collector's database --------------------------------------------------------------------------
_ENGINE_LOCK = threading.Lock()
ENGINE_KEY = "parkgate.opendata.engine"


def database(app: Flask) -> Engine | None:
    """An engine on the collector's database (``database`` in the config), made on first use; None
    when the dashboard has no database. Read-only use: the collector keeps the schema."""
    cfg: DashboardConfig = app.config["PARKGATE"]
    if not cfg.database:
        return None
    with _ENGINE_LOCK:
        engine: Engine | None = app.extensions.get(ENGINE_KEY)
        if engine is None:
            from cloud.events_store import open_engine

            engine = app.extensions[ENGINE_KEY] = open_engine(cfg.database)
        return engine
