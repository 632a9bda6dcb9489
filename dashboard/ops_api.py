"""Operator JSON API (``/api/v1/ops/``): login required (the guard in dashboard/auth.py); errors
in the API's one shape, ``{"error": {"status", "message"}}``.

Here: who am I, my lots, my audit trail, and notes — an operator writes what they did on site
(opened a barrier by hand, a sign was dark) into the audit trail. Viewers may read, not write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from dashboard import live_state
from dashboard.api import error_response
from dashboard.auth import audit, operator, require_lot, role_required, user_store
from dashboard.openapi import operation, query
from dashboard.users import LIMITS, can_see_lot, role_at_least
from protocol import LotAvailability

bp = Blueprint("ops_api", __name__, url_prefix="/api/v1/ops")


# -- shapes of the answers, for the OpenAPI description (dashboard/openapi.py) -------------------------
class OpsUser(BaseModel):
    """An account as ``User.to_json`` gives it."""

    name: str
    role: Literal["viewer", "operator", "admin"]
    lots: list[str] | Literal["*"] = Field(description='the lots in scope, or "*" for every lot')
    stations: list[str] | Literal["*"] = Field(description='the stations in scope, or "*" for every one')
    active: bool
    created_at: datetime
    last_login_at: datetime | None


class AuditEntry(BaseModel):
    """One row of the operator audit trail (``AuditRecord.to_json``)."""

    id: int
    ts: datetime
    user: str
    action: str
    target: str
    detail: str
    ip: str
    result: Literal["ok", "failed", "denied"]


class AuditPage(BaseModel):
    rows: list[AuditEntry] = Field(description="newest first")


class OpsLots(BaseModel):
    lots: list[LotAvailability] = Field(description="the lots in the operator's scope, by id")
    total_free: int


class NoteRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # the view reads these two and ignores the rest

    text: str = Field(min_length=1, max_length=LIMITS["detail"], pattern=r"[^\s\x1c-\x1f]")
    lot_id: str | None = Field(None, min_length=1, description="a lot in the operator's scope, or null")


@bp.get("/whoami")
@operation(OpsUser, summary="The logged-in account: name, role, scope")
def whoami() -> Response:
    return jsonify(operator().to_json())


@bp.get("/lots")
@operation(OpsLots)
def lots() -> Response:
    """Availability of the lots in the operator's scope."""
    user = operator()
    state = live_state(current_app)
    found = [lot.model_dump(mode="json") for lot in state.lots.values() if can_see_lot(user, lot.lot_id)]
    found.sort(key=lambda x: x["lot_id"])
    return jsonify(lots=found, total_free=sum(x["free"] for x in found))


@bp.get("/lots/<lot_id>")
@operation(LotAvailability, errors=(403,), summary="One lot's availability (the lot in scope)")
def lot(lot_id: str) -> Response | tuple[Response, int]:
    require_lot(lot_id)
    found = live_state(current_app).lots.get(lot_id)
    if found is None:
        return error_response(404, f"no availability for lot {lot_id!r}")
    return jsonify(found.model_dump(mode="json"))


@bp.get("/audit")
@operation(
    AuditPage,
    params=(
        query("before", "integer", "only rows with a smaller id (the last id of the page before)",
              minimum=1, maximum=2**63 - 1),
        query("limit", "integer", "rows at most", minimum=1, maximum=1000, default=100),
        query("user", "string", "only this user's rows (admins; others always see their own)",
              maxLength=64, pattern=r"^[^\x00-\x20\x7f]+$"),
    ),
)  # fmt: skip
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
@operation(
    AuditEntry, status=201, body=NoteRequest, errors=(403,), summary="Write a note into the audit trail"
)
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
