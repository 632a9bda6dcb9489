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

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from dashboard import live_state
from dashboard.api import error_response
from dashboard.auth import audit, operator, require_station, role_required
from dashboard.inspection import (
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

bp = Blueprint("inspection_api", __name__, url_prefix="/api/v1/ops/inspection")

Reply = Response | tuple[Response, int]


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
def alerts() -> Reply:
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
def alert(alert_id: int) -> Reply:
    try:
        return jsonify(visible_alert(alert_id).to_json())
    except SQLAlchemyError as err:
        return _unavailable(err)


@bp.post("/alerts/<int:alert_id>/review")
@role_required("operator")
def review(alert_id: int) -> Reply:
    body = _body()
    if body is None:
        return _not_an_object("alert.review", alert_id, 'send a JSON object: {"note": "..."}')
    try:
        return jsonify(review_alert(alert_id, body.get("note")).to_json())
    except ActionRefused as err:
        return error_response(err.status, err.message)


@bp.post("/alerts/<int:alert_id>/unlock")
@role_required("operator")
def unlock(alert_id: int) -> Reply:
    body = _body()
    if body is None:
        return _not_an_object(
            "alert.unlock", alert_id, 'send a JSON object: {"reason": "...", "confirm": true}'
        )
    try:
        done = unlock_alert(alert_id, body.get("reason"), body.get("confirm"))
    except ActionRefused as err:
        return error_response(err.status, err.message)
    return jsonify(
        alert=done.alert.to_json(),
        locked=done.locked,
        locked_persons=done.locked_persons,
        lanes_notified=done.lanes_notified,
    )


@bp.get("/stations")
def stations() -> Reply:
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
def station(station_id: str) -> Reply:
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
def rates() -> Reply:
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
def stream() -> Reply:
    """Alert steps, results and lane heartbeats of the stations in scope (``?station=`` narrows)."""
    user = operator()
    station = request.args.get("station") or None
    if station is not None:
        station_or_404(station)
        require_station(station)
    visible = [st for st in visible_stations(user) if station is None or st.id == station]
    ids = {st.id for st in visible}
    lane_lots = {st.lane_lot for st in visible}
    last = request.headers.get("Last-Event-ID", "") or request.args.get("after", "")
    after = int(last) if last.isdigit() else None
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
                    yield _sse("step", step_json(step, alert_row), step.id)
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
                out.append(_sse(change.kind, change.data, change.audit_id))
            for gate in state.changes_since(gate_version, 0):
                gate_version = gate.version
                if gate.kind == "gate" and gate.data.get("lot_id") in lane_lots:
                    out.append(_sse("gate", gate.data))
            if out:
                yield "".join(out)
            elif time.monotonic() - quiet_since < keepalive:
                continue
            else:
                yield ": keepalive\n\n"
            quiet_since = time.monotonic()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(events(), mimetype="text/event-stream", headers=headers)


def _sse(kind: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
