"""Operator JSON API (``/api/v1/ops/``): login required (the guard in dashboard/auth.py); errors
in the API's one shape, ``{"error": {"status", "message"}}``.

Here: who am I, my lots, my audit trail, and notes — an operator writes what they did on site
(opened a barrier by hand, a sign was dark) into the audit trail. Viewers may read, not write.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from dashboard import live_state
from dashboard.api import error_response
from dashboard.auth import audit, operator, require_lot, role_required, user_store
from dashboard.users import LIMITS, can_see_lot, role_at_least

bp = Blueprint("ops_api", __name__, url_prefix="/api/v1/ops")


@bp.get("/whoami")
def whoami() -> Response:
    return jsonify(operator().to_json())


@bp.get("/lots")
def lots() -> Response:
    """Availability of the lots in the operator's scope."""
    user = operator()
    state = live_state(current_app)
    found = [lot.model_dump(mode="json") for lot in state.lots.values() if can_see_lot(user, lot.lot_id)]
    found.sort(key=lambda x: x["lot_id"])
    return jsonify(lots=found, total_free=sum(x["free"] for x in found))


@bp.get("/lots/<lot_id>")
def lot(lot_id: str) -> Response | tuple[Response, int]:
    require_lot(lot_id)
    found = live_state(current_app).lots.get(lot_id)
    if found is None:
        return error_response(404, f"no availability for lot {lot_id!r}")
    return jsonify(found.model_dump(mode="json"))


@bp.get("/audit")
def audit_trail() -> Response:
    """The newest rows first (``?before=ID`` pages back, ``?limit=N`` up to 1000); an admin sees
    everyone's (``?user=NAME`` to pick one), anyone else their own."""
    user = operator()
    store = user_store()
    assert store is not None
    who = request.args.get("user") if role_at_least(user, "admin") else user.name
    rows = store.audit_trail(
        user=who or None,
        before=request.args.get("before", type=int),
        limit=request.args.get("limit", 100, type=int),
    )
    return jsonify(rows=[r.to_json() for r in rows])


@bp.post("/notes")
@role_required("operator")
def note() -> tuple[Response, int]:
    """``{"text": "...", "lot_id": "L01"}`` (lot optional, in scope) into the audit trail."""
    body: Any = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error_response(400, 'send a JSON object: {"text": "...", "lot_id": "..."}')
    text, lot_id = body.get("text"), body.get("lot_id")
    if not isinstance(text, str) or not text.strip() or len(text) > LIMITS["detail"]:
        return error_response(400, f"text: 1-{LIMITS['detail']} characters")
    if lot_id is not None and (not isinstance(lot_id, str) or not lot_id):
        return error_response(400, "lot_id: a lot id or null")
    if lot_id is not None:
        require_lot(lot_id)
    record = audit("note", target=f"lot:{lot_id}" if lot_id else "", detail=text.strip())
    assert record is not None  # the guard answers 503 without a database
    return jsonify(record.to_json()), 201
