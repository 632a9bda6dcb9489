"""Operator pages (``/ops/``): every one needs a login (the guard in dashboard/auth.py).

The home page lists the lots the operator's scope covers: free/total, an occupancy bar, the
trend of the last hours (a sparkline drawn on the server from the occupancy history), the gates
online, and the data's age with a stale marker (the lot's own ``stale_after_s``, as the signs
judge it); it follows the operator stream, which carries only the scope's lots. The audit page
shows the audit trail: an admin's shows everyone, anyone else's their own. Lot detail, the live
vehicle feed and gate health are in dashboard/lots.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from flask import Blueprint, current_app, render_template, request
from sqlalchemy.exc import SQLAlchemyError

from dashboard import live_state
from dashboard.auth import operator, user_store
from dashboard.lot_data import Trend
from dashboard.lots import known_lots, page_attrs, trends
from dashboard.opendata import LotNow, database
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
    age_s: float | None  # since a gate confirmed the count (None: never, or no count)
    stale: bool
    data_age_s: float | None = None  # as the count said at ts (None: never confirmed, or no count)
    limit_s: float = STALE_S  # the lot's stale_after_s
    legacy: bool = False  # the count came from a collector that does not judge freshness
    gates_online: int = 0
    gates_total: int = 0
    trend: Trend | None = None

    @property
    def pct(self) -> int:
        """Occupied, percent (0 without a count)."""
        if self.capacity is None or self.occupied is None:
            return 0
        return 100 if self.capacity <= 0 else min(max(round(100 * self.occupied / self.capacity), 0), 100)

    @property
    def level(self) -> str:
        """As the public overview: ok (> 30 % free), mid (10-30 %), low (< 10 %), full."""
        if self.free is None or self.capacity is None or self.free <= 0 or self.capacity <= 0:
            return "full"
        ratio = self.free / self.capacity
        return "low" if ratio < 0.1 else "mid" if ratio <= 0.3 else "ok"


def scoped_lots() -> list[LotLine]:
    """The operator's lots, by id: those with a count from the live feed, and those without one
    yet that the scope names or the collector's database holds (a silent lot still shows up)."""
    user = operator()
    state = live_state(current_app)
    lots = state.lots
    gates = list(state.gates.values())
    now = utc_now()
    online: dict[str, list[bool]] = {}
    for gate in gates:
        online.setdefault(gate.lot_id, []).append(gate.state == "online")
    lines = []
    for lot in lots.values():
        if can_see_lot(user, lot.lot_id):
            judged = LotNow(lot, gates, now)
            states = online.get(lot.lot_id, [])
            lines.append(
                LotLine(
                    lot.lot_id, lot.name, lot.free, lot.capacity, lot.occupied, lot.ts, judged.age,
                    judged.stale, lot.data_age_s, judged.limit, lot.stale_after_s is None, sum(states),
                    len(states),
                )
            )  # fmt: skip
    for lot_id, (name, capacity) in known_lots(user, db=database(current_app)).items():
        if lot_id not in lots:
            states = online.get(lot_id, [])
            lines.append(
                LotLine(lot_id, name, None, capacity, None, None, None, True, None, STALE_S, False,
                        sum(states), len(states))
            )  # fmt: skip
    return sorted(lines, key=lambda x: x.lot_id)


def with_trends(lines: list[LotLine]) -> list[LotLine]:
    """The lines with their sparklines (the last hours of occupancy history)."""
    try:
        found = trends(current_app).get([x.lot_id for x in lines], utc_now())
    except SQLAlchemyError as err:
        current_app.logger.warning("trends cannot be read from the collector's database: %s", err)
        return lines
    return [replace(x, trend=found.get(x.lot_id)) for x in lines]


@bp.get("/")
def home() -> str:
    lots = with_trends(scoped_lots())
    counted = [x for x in lots if x.free is not None]
    return render_template(
        "ops/home.html",
        user=operator(),
        lots=lots,
        total_free=sum(x.free or 0 for x in counted),
        total_capacity=sum(x.capacity or 0 for x in counted),
        stale=sum(1 for x in lots if x.stale),
        gates_offline=sum(x.gates_total - x.gates_online for x in lots),
        **page_attrs(lot=None, kinds="lot,gate"),
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
