"""Operator JSON API for lots, gates and vehicles (``/api/v1/ops/...``; login required by the guard
in dashboard/auth.py; errors in the API's one shape ``{"error": {"status", "message"}}``).

A lot outside the user's scope is a 403 (audited), as everywhere in ``/api/v1/ops/``; a lot in
scope that nobody knows is a 404. Query parameters are checked strictly: an unknown, repeated,
empty or out-of-range one is a 400 naming it.

``GET /lots/<lot_id>/occupancy?range=24h|7d``
    The lot's occupancy history in buckets (the lot's sampling interval for 24 h, an hour for 7
    days): each ``{ts, occupied, free, capacity, pct, samples}``, ``occupied`` null where the lot
    was not sampled (its data was stale, or the collector was down).
``GET /lots/<lot_id>/flows?hours=N``
    Admitted entries, admitted exits and refused vehicles per clock hour (1-168 hours, default 24).
``GET /gates?lot=ID``
    The scope's gates: their last heartbeat, its age, and the warnings it raises.
``GET /events?lot=ID&limit=N``
    The latest vehicles (default 50, at most 500), newest first; ``crop`` says whether a plate
    crop can be fetched (``/ops/events/<id>/crop.jpg``).
``GET /stream?kinds=lot,gate,event&lot=ID&after=SEQ``
    Server-sent events of the scope only: ``lot`` (availability), ``gate`` (heartbeat) and
    ``event`` (a vehicle; only when asked for). First the current state of the scope's lots and
    gates, then changes as they happen. Vehicles come in batches at most every
    ``OPS_STREAM_BATCH_S`` (0.25 s), at most :data:`MAX_PUSH` per batch (``skipped`` says how many
    more were left out), so a browser is never flooded. ``after`` (or the ``Last-Event-ID`` of a
    reconnecting browser) resumes the vehicles after that number while the ring holds them. The
    stream ends (``end``) once the user's session no longer holds (logged out elsewhere, password
    changed, account disabled).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError

from dashboard import live_state
from dashboard.api import QueryError, error_response, last_event_id, sse, strict_params
from dashboard.auth import operator, require_lot, user_store
from dashboard.live import in_scope
from dashboard.lot_data import WARNING_LIMITS, WARNINGS, gate_health, hourly_flows, occupancy_series
from dashboard.lots import RANGES, engine, latest_vehicles, lot_view, series_step
from dashboard.openapi import header, operation, query
from protocol import GateStatus, LotAvailability
from protocol.messages import utc_now
from protocol.topics import ID_PATTERN

bp = Blueprint("lots_api", __name__, url_prefix="/api/v1/ops")

Reply = Response | tuple[Response, int]
KINDS = ("lot", "gate", "event")
KINDS_PATTERN = r"^(lot|gate|event)(,(lot|gate|event))*$"
MAX_PUSH = 100  # vehicles per batch on a stream
MAX_EVENTS = 500
MAX_SEQ = 2**53  # vehicle numbers: far more than a dashboard ever counts, and exact in JSON
SESSION_CHECK_S = 30.0  # a stream checks this often that its user's session still holds
LOT_ID = re.compile(ID_PATTERN)


# -- shapes of the answers, for the OpenAPI description (dashboard/openapi.py) -------------------------
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OccupancyBucket(_Model):
    ts: datetime = Field(description="start of the bucket")
    occupied: float | None = Field(description="mean of the samples in the bucket; null: none")
    free: float | None
    capacity: int | None
    pct: float | None = Field(description="occupied, percent of the capacity")
    samples: int = Field(ge=0)


class OccupancyResponse(_Model):
    lot_id: str
    range: Literal["24h", "7d"]
    step_s: int = Field(description="width of a bucket, seconds")
    buckets: list[OccupancyBucket] = Field(description="oldest first; the last holds now")


class FlowHourItem(_Model):
    hour: datetime = Field(description="start of the clock hour")
    entries: int = Field(ge=0, description="admitted entries")
    exits: int = Field(ge=0, description="admitted exits")
    refused: int = Field(ge=0, description="vehicles refused, either way")


class FlowsResponse(_Model):
    lot_id: str
    hours: list[FlowHourItem] = Field(description="oldest first; the last is the current hour")


class GateHealthItem(GateStatus):
    """A gate's last heartbeat, its age and the warnings it raises."""

    heartbeat_age_s: float = Field(ge=0, description="seconds since the heartbeat (or the last will)")
    warnings: list[Literal[WARNINGS]] = Field(description="what needs attention, most serious first")  # type: ignore[valid-type]


class WarningLimits(_Model):
    heartbeat_late_s: float
    backlog_age_s: float
    disk_low_mb: float
    cpu_hot_c: float


class GatesResponse(_Model):
    gates: list[GateHealthItem] = Field(description="those with warnings first, then by lot and gate")
    limits: WarningLimits


class Vehicle(_Model):
    """One vehicle at a gate, as the live feed shows it."""

    seq: int = Field(ge=0, description="arrival order at this dashboard (0: read from the database)")
    id: str
    ts: datetime
    lot_id: str
    gate_id: str
    direction: Literal["entry", "exit"]
    plate: str | None
    confidence: float
    action: Literal["open", "deny"]
    reason: str
    crop: bool = Field(description="a plate crop is at /ops/events/{id}/crop.jpg")


class VehiclesResponse(_Model):
    events: list[Vehicle] = Field(description="newest first")


class Skipped(_Model):
    count: int = Field(ge=1, description="vehicles of one batch left out of the stream")


class StreamEnd(_Model):
    """The session no longer holds: log in again."""


LOT_QUERY = query(
    "lot", description="only this lot (in scope)", hint="a lot id", pattern=ID_PATTERN, maxLength=64
)


def _int(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    if name not in params:
        return default
    text = params[name]
    try:
        value = int(text)
    except ValueError:
        raise QueryError(f"{name} must be a whole number, not {text[:40]!r}") from None
    if not low <= value <= high:
        raise QueryError(f"{name} must be from {low} to {high}; got {text[:40]}")
    return value


def _lot_param(params: dict[str, str]) -> str | None:
    lot_id = params.get("lot")
    if lot_id is not None and not LOT_ID.match(lot_id):
        raise QueryError(f"lot: {lot_id[:80]!r} is not a lot id (1-64 of A-Z a-z 0-9 _ . -)")
    return lot_id


def _known_lot(lot_id: str) -> Reply | None:
    """None if the lot is in scope (403 otherwise, by require_lot) and known; else the 404."""
    require_lot(lot_id)
    if lot_view(lot_id, operator(), utc_now()) is None:
        return error_response(404, f"no lot {lot_id!r}")
    return None


def _database_error(err: SQLAlchemyError, what: str) -> Reply:
    current_app.logger.warning("%s: database error: %s", what, err)
    return error_response(503, "the collector's database cannot be read right now")


@bp.get("/lots/<lot_id>/occupancy")
@operation(
    OccupancyResponse,
    errors=(403, 503),
    params=(query("range", description="how far back", enum=list(RANGES), default="24h"),),
)
def occupancy(lot_id: str) -> Reply:
    """A lot's occupancy history in buckets (the lot's sampling interval for 24 h, an hour for 7 days)."""
    try:
        params = strict_params(("range",))
        name = params.get("range", "24h")
        if name not in RANGES:
            raise QueryError(f"range must be one of {', '.join(RANGES)}, not {name[:20]!r}")
    except QueryError as err:
        return error_response(400, str(err))
    refused = _known_lot(lot_id)
    if refused is not None:
        return refused
    span = RANGES[name]
    step = series_step(lot_id, span)
    try:
        buckets = occupancy_series(engine(), lot_id, utc_now(), span, step)
    except SQLAlchemyError as err:
        return _database_error(err, f"occupancy of {lot_id}")
    return _json(
        OccupancyResponse,
        {"lot_id": lot_id, "range": name, "step_s": int(step.total_seconds()),
         "buckets": [b.to_json() for b in buckets]},
    )  # fmt: skip


@bp.get("/lots/<lot_id>/flows")
@operation(
    FlowsResponse,
    errors=(403, 503),
    params=(
        query(
            "hours",
            "integer",
            "how many clock hours, the current one last",
            minimum=1,
            maximum=168,
            default=24,
        ),
    ),
)
def flows(lot_id: str) -> Reply:
    """Admitted entries, admitted exits and refused vehicles of a lot per clock hour."""
    try:
        hours = _int(strict_params(("hours",)), "hours", 24, 1, 168)
    except QueryError as err:
        return error_response(400, str(err))
    refused = _known_lot(lot_id)
    if refused is not None:
        return refused
    try:
        found = hourly_flows(engine(), lot_id, utc_now(), hours)
    except SQLAlchemyError as err:
        return _database_error(err, f"flows of {lot_id}")
    return _json(FlowsResponse, {"lot_id": lot_id, "hours": [f.to_json() for f in found]})


@bp.get("/gates")
@operation(GatesResponse, errors=(403,), params=(LOT_QUERY,))
def gates() -> Reply:
    """The gates of the scope (or of one lot): last heartbeat, its age, warnings."""
    try:
        lot_id = _lot_param(strict_params(("lot",)))
    except QueryError as err:
        return error_response(400, str(err))
    if lot_id is not None:
        require_lot(lot_id)
    found = gate_health(live_state(current_app).gates.values(), in_scope(operator().lots, lot_id), utc_now())
    return _json(GatesResponse, {"gates": [g.to_json() for g in found], "limits": WARNING_LIMITS})


@bp.get("/events")
@operation(
    VehiclesResponse,
    errors=(403,),
    params=(LOT_QUERY, query("limit", "integer", "how many", minimum=1, maximum=MAX_EVENTS, default=50)),
)
def events() -> Reply:
    """The latest vehicles of the scope (or of one lot), newest first."""
    try:
        params = strict_params(("lot", "limit"))
        lot_id = _lot_param(params)
        limit = _int(params, "limit", 50, 1, MAX_EVENTS)
    except QueryError as err:
        return error_response(400, str(err))
    if lot_id is not None:
        require_lot(lot_id)
    lots = frozenset({lot_id}) if lot_id else operator().lots
    found = latest_vehicles(lots, limit)
    return _json(VehiclesResponse, {"events": [e.to_json() for e in found]})


@bp.get("/stream")
@operation(
    events={"lot": LotAvailability, "gate": GateStatus, "event": Vehicle, "skipped": Skipped, "end": StreamEnd},
    errors=(403,),
    params=(
        query("kinds", description="comma-separated: lot, gate, event", pattern=KINDS_PATTERN, maxLength=40,
              default="lot,gate"),
        LOT_QUERY,
        query("after", "integer", "vehicles after this number (the page's, when it was made)", minimum=0,
              maximum=MAX_SEQ),
        header("Last-Event-ID", "the id of the last event seen: vehicles resume after it if still kept"),
    ),
)  # fmt: skip
def stream() -> Reply:
    """Server-sent events of the user's scope: lots, gates and (if asked) vehicles, as they happen.

    First the current state of the scope's lots and gates, then changes; vehicles in batches (see
    the module docstring). The id of each event is the number of the last vehicle sent."""
    try:
        params = strict_params(("kinds", "lot", "after"))
        kinds = tuple(k.strip() for k in params.get("kinds", "lot,gate").split(","))
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise QueryError(f"kinds: {bad[0][:20]!r} is not one of {', '.join(KINDS)}")
        lot_id = _lot_param(params)
        after = _int(params, "after", -1, 0, MAX_SEQ)
    except QueryError as err:
        return error_response(400, str(err))
    if lot_id is not None:
        require_lot(lot_id)
    user = operator()
    store = user_store()
    assert store is not None  # the guard answers 503 without one
    session_id = user.get_id()
    state = live_state(current_app)
    keepalive = float(current_app.config["SSE_KEEPALIVE_S"])
    batch_s = float(current_app.config.get("OPS_STREAM_BATCH_S", 0.25))
    keep = in_scope(user.lots, lot_id)
    seq: int | None = None
    if "event" in kinds:
        seq = state.event_seq
        resumed = last_event_id()
        if resumed is not None:
            seq = resumed
        elif after >= 0:
            seq = after
        seq = min(seq, state.event_seq)  # a number from before a restart of the dashboard

    def messages(seq: int | None) -> Iterator[str]:
        yield "retry: 2000\n\n"
        version, current = state.snapshot()
        out = [sse(c.kind, c.data, seq or 0) for c in current if c.kind in kinds and keep(c.data["lot_id"])]
        yield "".join(out) or ": connected\n\n"
        sent = checked = time.monotonic()
        while True:
            if time.monotonic() - checked >= SESSION_CHECK_S:
                checked = time.monotonic()
                if store.load_session(session_id) is None:
                    yield "event: end\ndata: {}\n\n"
                    return
            update = state.wait_ops(version, seq, keepalive)
            out = []
            for c in update.changes:
                if c.kind in kinds and keep(c.data["lot_id"]):
                    out.append(sse(c.kind, c.data, seq or 0))
            if seq is not None:
                shown = [e for e in update.events if keep(e.lot_id)]
                if len(shown) > MAX_PUSH:
                    out.append(sse("skipped", {"count": len(shown) - MAX_PUSH}, shown[-MAX_PUSH - 1].seq))
                    shown = shown[-MAX_PUSH:]
                out += [sse("event", e.to_json(), e.seq) for e in shown]
                seq = update.seq
            version = update.version
            if out:
                yield "".join(out)
                sent = time.monotonic()
            elif time.monotonic() - sent >= keepalive:
                yield ": keepalive\n\n"
                sent = time.monotonic()
            if seq is not None and batch_s > 0:
                time.sleep(batch_s)  # vehicles in batches: a busy city wakes this stream 4 times a second

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return Response(messages(seq), mimetype="text/event-stream", headers=headers)


def _json(model: type[BaseModel], data: dict[str, Any]) -> Response:
    """``data`` checked against its declared shape (what the OpenAPI description promises)."""
    return jsonify(model.model_validate(data).model_dump(mode="json"))
