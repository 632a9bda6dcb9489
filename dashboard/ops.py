"""Operator pages (``/ops/``): every one needs a login (the guard in dashboard/auth.py).

The home page lists the lots the operator's scope covers, with free/total and a stale marker;
the audit page shows the audit trail: an admin's shows everyone, anyone else's their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import Blueprint, current_app, render_template, request

from dashboard import live_state
from dashboard.auth import operator, user_store
from dashboard.users import can_see_lot, role_at_least
from protocol.messages import utc_now

bp = Blueprint("ops", __name__, url_prefix="/ops")

STALE_S = 120.0  # same as parkgate.js: a count older than this is shown as stale
AUDIT_PAGE = 100


@dataclass(frozen=True)
class LotLine:
    lot_id: str
    name: str
    free: int | None  # None: no availability received yet
    capacity: int | None
    occupied: int | None
    ts: datetime | None
    age_s: float | None
    stale: bool


def scoped_lots() -> list[LotLine]:
    """The operator's lots, by id: those with a count from the live feed, and, for a scope that
    lists lots, those without one yet (so a lot whose gates are silent still shows up)."""
    user = operator()
    lots = live_state(current_app).lots
    now = utc_now()
    lines = []
    for lot in lots.values():
        if can_see_lot(user, lot.lot_id):
            age = (now - lot.ts).total_seconds()
            lines.append(
                LotLine(
                    lot.lot_id, lot.name, lot.free, lot.capacity, lot.occupied, lot.ts, age, age > STALE_S
                )
            )
    for lot_id in (user.lots or frozenset()) - lots.keys():
        lines.append(LotLine(lot_id, lot_id, None, None, None, None, None, True))
    return sorted(lines, key=lambda x: x.lot_id)


@bp.get("/")
def home() -> str:
    lots = scoped_lots()
    counted = [x for x in lots if x.free is not None]
    return render_template(
        "ops/home.html",
        user=operator(),
        lots=lots,
        total_free=sum(x.free or 0 for x in counted),
        total_capacity=sum(x.capacity or 0 for x in counted),
        stale=sum(1 for x in lots if x.stale),
    )


@bp.get("/audit")
def audit() -> str:
    user = operator()
    store = user_store()
    assert store is not None  # the guard answers 503 without one
    is_admin = role_at_least(user, "admin")
    who = (request.args.get("user") or None) if is_admin else user.name
    before = request.args.get("before", type=int)
    rows = store.audit_trail(user=who, before=before, limit=AUDIT_PAGE)
    return render_template(
        "ops/audit.html",
        rows=rows,
        is_admin=is_admin,
        who=who,
        older=rows[-1].id if len(rows) == AUDIT_PAGE else None,
    )
