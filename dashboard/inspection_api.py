"""Inspection stations in the operator JSON API (``/api/v1/ops/inspection/``): login required
(the guard in dashboard/auth.py), scoped to the user's stations, errors in the API's one shape
``{"error": {"status", "message"}}``. Viewers read; operators review and unlock.

``GET  alerts?station=ID&show=open|all``   alerts, newest first, each with its history
``GET  alerts/<id>``                       one alert and its history
``POST alerts/<id>/review``                ``{"note": "..."}``
``POST alerts/<id>/unlock``                ``{"reason": "...", "confirm": true}``; answers the
                                           station's locks after it and ``lanes_notified``
``GET  stations``                          the stations in scope: lanes, locks, open alerts
``GET  stations/<id>``                     lanes, recent results, locks
``GET  pass-rates``                        monthly pass rates of the stations in scope, peer band
``GET  stream?station=ID``                 server-sent events, only of the stations in scope:
                                           ``step`` (an alert step; its ``id:`` is the audit row id,
                                           so a reconnecting browser gets what it missed),
                                           ``result`` (a lane's inspection result) and ``gate``
                                           (a lane's heartbeat). ``?after=N`` starts after audit row N.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError

from dashboard import live_state
from dashboard.api import error_response, last_event_id, sse
from dashboard.auth import audit, operator, require_station, role_required
from dashboard.inspection import (
    TEXT_MAX,
    ActionRefused,
    engine,
    find_alerts,
    lane_json,
    lanes,
    locks,
    pass_rates,
    recent_results,
    review_alert,
    station_or_404,
    unlock_alert,
    visible_alert,
    visible_stations,
    watch,
)
from dashboard.inspection_feed import step_json, steps_after
from dashboard.openapi import header, operation, path, query
from protocol import GateStatus, InspectionResult
from protocol.topics import ID_PATTERN

bp = Blueprint("inspection_api", __name__, url_prefix="/api/v1/ops/inspection")

Reply = Response | tuple[Response, int]
MAX_ID = 2**63 - 1  # the database's integer ids


# -- shapes of the answers and bodies, for the OpenAPI description (dashboard/openapi.py) --------------
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


SubjectKind = Literal["plate", "person"]
AlertKind = Literal["warn", "lock", "flag"]
AlertStatus = Literal["open", "locked", "reviewed", "unlocked"]
StepAction = Literal["warn", "lock", "flag", "review", "unlock"]


class AlertStep(_Model):
    """One step of an alert's history (the inspection audit trail)."""

    id: int = Field(description="the audit row id")
    action: StepAction
    actor: str
    at: datetime
    why: str
    status: AlertStatus = Field(description="the alert's status after the step")


class InspectionAlert(_Model):
    """An alert of an inspection station and its history."""

    id: int
    station_id: str
    station_name: str
    subject_kind: SubjectKind
    subject: str = Field(description="the plate or the person code")
    kind: AlertKind
    rule: str = Field(description="the rule that raised it (entries, person_multi_vehicle)")
    count: int
    ts: datetime = Field(description="the entry that crossed the threshold")
    detail: str
    status: AlertStatus
    created_at: datetime
    in_force: bool = Field(description="a lock the lanes still enforce")
    open: bool = Field(description="still needs an operator: not reviewed yet, or a lock in force")
    history: list[AlertStep] = Field(description="oldest first")


class AlertList(_Model):
    alerts: list[InspectionAlert] = Field(description="newest first")
    count: int = Field(ge=0)


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # the view reads the note and ignores the rest

    note: str = Field(pattern=r"\S", max_length=TEXT_MAX, description="what was checked (trimmed)")


class UnlockRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # the view reads these two and ignores the rest

    reason: str = Field(
        pattern=r"\S", max_length=TEXT_MAX, description="why, for both audit trails (trimmed)"
    )
    confirm: Literal[True] = Field(description="true: the unlock is meant")


class UnlockResponse(_Model):
    alert: InspectionAlert
    locked: list[str] = Field(description="the station's plates locked after the unlock")
    locked_persons: list[str] = Field(description="the station's person codes locked after the unlock")
    lanes_notified: bool = Field(description="the collectors were asked to re-publish the lists now")


class StationSummary(_Model):
    id: str
    name: str
    lane_lot: str = Field(description="the lot_id the station's lanes (gates) carry")
    lanes: list[GateStatus] = Field(description="the lanes' last heartbeats, by gate id")
    locks: int = Field(ge=0, description="locks in force")
    open_alerts: int = Field(ge=0, description="alerts that still need an operator")


class StationList(_Model):
    stations: list[StationSummary] = Field(description="the stations in scope, by id")


class StationResult(_Model):
    id: str
    ts: datetime
    gate_id: str
    plate: str
    result: Literal["pass", "fail"]


class LockedSubject(_Model):
    alert_id: int
    subject: str


class StationDetail(_Model):
    id: str
    name: str
    lane_lot: str
    lanes: list[GateStatus]
    results: list[StationResult] = Field(description="the latest inspection results, newest first")
    locked: list[LockedSubject] = Field(description="plates locked here now, oldest lock first")
    locked_persons: list[LockedSubject] = Field(description="person codes locked here now")


class PassRateSettings(_Model):
    months: int = Field(description="consecutive months above the band that flag a station")
    k: float
    min_spread: float
    min_results: int
    min_stations: int
    max_rate: float | None


class MonthCell(_Model):
    month: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}$")
    results: int = Field(ge=0)
    passed: int = Field(ge=0)
    rate: float
    rated: bool = Field(description="enough results to be judged")
    median: float | None = Field(description="of the month's rated stations; null without enough peers")
    band_low: float | None
    band_high: float | None
    above: bool
    run: int = Field(ge=0, description="consecutive months above, up to and including this one")
    flagged: bool


class StationRates(_Model):
    id: str
    name: str
    flagged: bool
    months: list[MonthCell] = Field(description="the months with results, oldest first")


class PassRatesResponse(_Model):
    months: list[str] = Field(description="YYYY-MM, oldest first")
    settings: PassRateSettings
    stations: list[StationRates]


class StepAlert(_Model):
    id: int
    station_id: str
    subject_kind: SubjectKind
    subject: str
    kind: AlertKind
    status: AlertStatus


class StepEvent(_Model):
    """An alert step; the event's id is its audit row id."""

    id: int
    alert_id: int
    action: StepAction
    actor: str
    at: datetime
    why: str
    status: AlertStatus
    alert: StepAlert


class ResultEvent(InspectionResult):
    """A lane's inspection result, with the station it belongs to."""

    station_id: str


STATION_QUERY = query(
    "station",
    description="only this station (in scope)",
    hint="a station id",
    pattern=ID_PATTERN,
    maxLength=64,
)
ALERT_ID = path("alert_id", "the alert's id", type="integer", minimum=0, maximum=MAX_ID)


def _unavailable(err: SQLAlchemyError) -> tuple[Response, int]:
    current_app.logger.warning("inspection API: database error: %s", err)
    return error_response(503, "the collector's database cannot be read right now")


def _body() -> dict[str, Any] | None:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else None


def _not_an_object(action: str, alert_id: int, message: str) -> tuple[Response, int]:
    audit(action, target=f"alert:{alert_id}", detail="the request body is not a JSON object", result="failed")
    return error_response(400, message)


@bp.get("/alerts")
@operation(
    AlertList,
    errors=(403, 404),
    params=(STATION_QUERY, query("show", description="open: still needing an operator; all",
                                 enum=["open", "all"], default="open")),
)  # fmt: skip
def alerts() -> Reply:
    """Alerts of the stations in scope, newest first, each with its history."""
    user = operator()
    station = request.args.get("station") or None
    show = request.args.get("show", "open")
    if show not in ("open", "all"):
        return error_response(400, f"show: 'open' or 'all', not {show[:40]!r}")
    if station is not None:
        station_or_404(station)
        require_station(station)
    ids = [station] if station else [st.id for st in visible_stations(user)]
    try:
        found = find_alerts(ids, show=show)
    except SQLAlchemyError as err:
        return _unavailable(err)
    return jsonify(alerts=[a.to_json() for a in found], count=len(found))


@bp.get("/alerts/<int:alert_id>")
@operation(InspectionAlert, errors=(403,), params=(ALERT_ID,))
def alert(alert_id: int) -> Reply:
    """One alert and its history."""
    try:
        return jsonify(visible_alert(alert_id).to_json())
    except SQLAlchemyError as err:
        return _unavailable(err)


@bp.post("/alerts/<int:alert_id>/review")
@operation(InspectionAlert, body=ReviewRequest, errors=(403, 409), params=(ALERT_ID,))
@role_required("operator")
def review(alert_id: int) -> Reply:
    """Mark an open alert or a lock as reviewed (a lock stays in force); answers the alert.

    409 if the alert is neither open nor locked."""
    body = _body()
    if body is None:
        return _not_an_object("alert.review", alert_id, 'send a JSON object: {"note": "..."}')
    try:
        return jsonify(review_alert(alert_id, body.get("note")).to_json())
    except ActionRefused as err:
        return error_response(err.status, err.message)
    except SQLAlchemyError as err:
        return _unavailable(err)


@bp.post("/alerts/<int:alert_id>/unlock")
@operation(UnlockResponse, body=UnlockRequest, errors=(403, 409), params=(ALERT_ID,))
@role_required("operator")
def unlock(alert_id: int) -> Reply:
    """Lift a lock in force; the station's lanes are sent the new lists.

    Answers the alert and the station's locks after it. 409 if the alert is not a lock in force."""
    body = _body()
    if body is None:
        return _not_an_object(
            "alert.unlock", alert_id, 'send a JSON object: {"reason": "...", "confirm": true}'
        )
    try:
        done = unlock_alert(alert_id, body.get("reason"), body.get("confirm"))
    except ActionRefused as err:
        return error_response(err.status, err.message)
    except SQLAlchemyError as err:
        return _unavailable(err)
    return jsonify(
        alert=done.alert.to_json(),
        locked=done.locked,
        locked_persons=done.locked_persons,
        lanes_notified=done.lanes_notified,
    )


@bp.get("/stations")
@operation(StationList)
def stations() -> Reply:
    """The stations in scope: lanes, locks in force, open alerts."""
    out = []
    try:
        visible = visible_stations(operator())
        open_alerts = find_alerts([st.id for st in visible], show="open", limit=1000)
    except SQLAlchemyError as err:
        return _unavailable(err)
    for st in visible:
        mine = [a for a in open_alerts if a.station_id == st.id]
        out.append(
            {
                "id": st.id, "name": st.name, "lane_lot": st.lane_lot,
                "lanes": [lane_json(g) for g in lanes(st)],
                "locks": sum(1 for a in mine if a.in_force), "open_alerts": sum(1 for a in mine if a.is_open),
            }
        )  # fmt: skip
    return jsonify(stations=out)


@bp.get("/stations/<station_id>")
@operation(StationDetail, errors=(403,))
def station(station_id: str) -> Reply:
    """One station: its lanes, latest results and the locks in force there."""
    st = station_or_404(station_id)
    require_station(st.id)
    try:
        locked = locks(st.id)
        results = recent_results(st.id)
    except SQLAlchemyError as err:
        return _unavailable(err)
    return jsonify(
        id=st.id,
        name=st.name,
        lane_lot=st.lane_lot,
        lanes=[lane_json(g) for g in lanes(st)],
        results=[r.to_json() for r in results],
        locked=[{"alert_id": a.id, "subject": a.subject} for a in locked if a.subject_kind == "plate"],
        locked_persons=[
            {"alert_id": a.id, "subject": a.subject} for a in locked if a.subject_kind == "person"
        ],
    )


@bp.get("/pass-rates")
@operation(PassRatesResponse)
def rates() -> Reply:
    """Monthly pass rates of the stations in scope, with the peer band and the anomaly flag.

    503 without configured stations."""
    try:
        table = pass_rates(visible_stations(operator()))
    except SQLAlchemyError as err:
        return _unavailable(err)
    cfg = table.settings
    return jsonify(
        months=table.months,
        settings={"months": cfg.months, "k": cfg.k, "min_spread": cfg.min_spread,
                  "min_results": cfg.min_results, "min_stations": cfg.min_stations, "max_rate": cfg.max_rate},
        stations=[
            {
                "id": row.station.id, "name": row.station.name, "flagged": row.flagged,
                "months": [
                    {"month": c.month, "results": c.results, "passed": c.passed, "rate": c.rate,
                     "rated": c.rated, "median": c.median, "band_low": c.band_low, "band_high": c.band_high,
                     "above": c.above, "run": c.run, "flagged": c.flagged}
                    for c in row.cells if c is not None
                ],
            }
            for row in table.rows
        ],
    )  # fmt: skip


@bp.get("/stream")
@operation(
    events={"step": StepEvent, "result": ResultEvent, "gate": GateStatus},
    errors=(403, 404),
    params=(
        STATION_QUERY,
        query("after", "integer", "alert steps after this audit row id (the page's, when it was made)",
              minimum=0, maximum=MAX_ID),
        header("Last-Event-ID", "the id of the last step seen: the steps after it are sent first"),
    ),
)  # fmt: skip
def stream() -> Reply:
    """Alert steps, results and lane heartbeats of the stations in scope (``?station=`` narrows).

    A ``step``'s id is its audit row id: ``?after=N`` (or a reconnecting browser's
    ``Last-Event-ID``) first sends the steps after N."""
    user = operator()
    station = request.args.get("station") or None
    if station is not None:
        station_or_404(station)
        require_station(station)
    visible = [st for st in visible_stations(user) if station is None or st.id == station]
    ids = {st.id for st in visible}
    lane_lots = {st.lane_lot for st in visible}
    resumed = last_event_id()
    after = resumed if resumed is not None else request.args.get("after", type=int)
    follow = watch()
    state = live_state(current_app)
    eng = engine()
    keepalive = float(current_app.config["SSE_KEEPALIVE_S"])

    def events() -> Iterator[str]:
        yield "retry: 2000\n\n"
        version, gate_version = follow.version, state.version  # first: nothing falls between the two
        sent = after if after is not None else -1
        if after is not None:  # what happened since the page was made (or the stream broke)
            try:
                missed = steps_after(eng, after, limit=1000)
            except SQLAlchemyError:
                missed = []
            for step, alert_row in missed:
                if alert_row.station_id in ids:
                    yield sse("step", step_json(step, alert_row), step.id)
                sent = max(sent, step.id)
        quiet_since = time.monotonic()
        while True:
            changes = follow.changes_since(version, 1.0)
            out = []
            for change in changes:
                version = change.version
                if change.station_id not in ids:
                    continue
                if change.audit_id is not None:
                    if change.audit_id <= sent:
                        continue
                    sent = change.audit_id
                out.append(sse(change.kind, change.data, change.audit_id))
            for gate in state.changes_since(gate_version, 0):
                gate_version = gate.version
                if gate.kind == "gate" and gate.data.get("lot_id") in lane_lots:
                    out.append(sse("gate", gate.data))
            if out:
                yield "".join(out)
            elif time.monotonic() - quiet_since < keepalive:
                continue
            else:
                yield ": keepalive\n\n"
            quiet_since = time.monotonic()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(events(), mimetype="text/event-stream", headers=headers)
