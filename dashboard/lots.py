"""Operator pages for one lot, the live vehicle feed and gate health (``/ops/...``, login required
by the guard in dashboard/auth.py; a lot outside the user's scope is refused with 403 and audited
by :func:`dashboard.auth.require_lot`, everywhere alike).

``/ops/lots/<lot_id>``
    Free, occupied and capacity (live), occupancy over 24 hours and over 7 days, entries and exits
    per hour over 24 hours (Chart.js charts), the lot's gates with their health, and its latest
    vehicles. A lot nobody knows (no count, not in the collector's database, not named in the
    user's scope) is a 404.
``/ops/live`` (``?lot=ID`` for one lot)
    The latest vehicles, newest first, with their plate crops, then pushed as they arrive.
``/ops/gates`` (``?lot=ID``)
    Every gate of the scope with its last heartbeat and warnings (dashboard/lot_data.py).
``/ops/events/<event_id>/crop.jpg``
    An event's plate crop: from the live feed's crop ring while it holds it (a crop can be shown
    before the collector has stored it), else from the collector's ``snapshots``.

Pages get their first data rendered on the server; ``static/ops-lots.js`` then follows the
operator stream (``/api/v1/ops/stream``, dashboard/lots_api.py), which carries only the scope's lots.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from dashboard import live_state, site_config
from dashboard.auth import operator, require_lot
from dashboard.live import FeedEvent, in_scope
from dashboard.lot_data import (
    DEFAULT_INTERVAL_MIN,
    WARNING_LIMITS,
    Bucket,
    FlowHour,
    Trends,
    gate_health,
    hourly_flows,
    merge_events,
    occupancy_series,
    stored_crop,
    stored_events,
    stored_lots,
)
from dashboard.opendata import LotNow, database
from dashboard.users import User
from protocol import LotAvailability
from protocol.messages import utc_now

logger = logging.getLogger(__name__)

bp = Blueprint("lots", __name__, url_prefix="/ops")

LIVE_ROWS = 100  # vehicles on the live page when it opens
LOT_ROWS = 10  # latest vehicles on a lot's page
EVENT_ID = re.compile(r"^[0-9A-Za-z_-]{16,40}$")  # protocol.messages.EventId
JPEG_MAGIC = b"\xff\xd8\xff"
RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}
SEVEN_DAY_STEP = timedelta(hours=1)


# -- shared with the JSON API ------------------------------------------------------------------------
def engine() -> Engine:
    """The collector's database (always there: operator pages need ``database`` in the config)."""
    found = database(current_app)
    if found is None:  # the guard answers 503 first; this is for a view called some other way
        abort(503, description="operator pages need the collector's database: set database in the config")
    return found


_TRENDS_LOCK = threading.Lock()


def trends(app: Flask) -> Trends:
    with _TRENDS_LOCK:
        found: Trends | None = app.extensions.get("parkgate.lots.trends")
        if found is None:
            db = database(app)
            assert db is not None
            found = app.extensions["parkgate.lots.trends"] = Trends(db)
        return found


def interval_of(lot_id: str) -> int:
    """The lot's history sampling interval in minutes (the collector's config, when the dashboard has it)."""
    site = site_config(current_app)
    if site is not None:
        for lot in site.lots:
            if lot.id == lot_id:
                return lot.history_interval_min
    return DEFAULT_INTERVAL_MIN


def series_step(lot_id: str, span: timedelta) -> timedelta:
    """Bucket width of a chart: the lot's sampling interval for a day, an hour for a week."""
    if span > timedelta(hours=24):
        return SEVEN_DAY_STEP
    return timedelta(minutes=interval_of(lot_id))


def known_lots(user: User, *, db: Engine | None = None) -> dict[str, tuple[str, int | None]]:
    """The lots of the user's scope the dashboard knows (id -> (name, capacity)): with a count,
    in the collector's database or the site config, and every lot the scope names."""
    live = live_state(current_app).lots
    found: dict[str, tuple[str, int | None]] = {}
    site = site_config(current_app)
    if site is not None:
        found.update({lot.id: (lot.name, lot.capacity) for lot in site.lots})
    if db is not None:
        try:
            found.update(stored_lots(db, user.lots))
        except SQLAlchemyError as err:
            logger.warning("lots cannot be read from the collector's database: %s", err)
    found.update({lot_id: (lot.name, lot.capacity) for lot_id, lot in live.items()})
    for lot_id in user.lots or ():
        found.setdefault(lot_id, (lot_id, None))
    return {k: v for k, v in sorted(found.items()) if user.lots is None or k in user.lots}


@dataclass(frozen=True)
class LotView:
    """A lot as its page shows it: the live count (if any) judged for staleness now."""

    lot_id: str
    name: str
    capacity: int | None
    live: LotAvailability | None
    now: LotNow | None

    @property
    def stale(self) -> bool:
        return self.now is None or self.now.stale

    def to_json(self) -> dict[str, Any]:
        lot = self.live
        return {
            "lot_id": self.lot_id, "name": self.name, "capacity": self.capacity,
            "free": lot.free if lot else None, "occupied": lot.occupied if lot else None,
            "ts": lot.ts.isoformat() if lot else None, "stale": self.stale,
            "data_age_s": None if self.now is None or self.now.age is None else round(self.now.age, 1),
            "stale_after_s": self.now.limit if self.now else None,
        }  # fmt: skip


def lot_view(lot_id: str, user: User, now: datetime) -> LotView | None:
    """The lot, or None if the dashboard knows nothing of it (see the module docstring)."""
    state = live_state(current_app)
    live = state.lots.get(lot_id)
    if live is not None:
        return LotView(lot_id, live.name, live.capacity, live, LotNow(live, list(state.gates.values()), now))
    known = known_lots(user, db=engine()).get(lot_id)
    if known is None:
        return None
    return LotView(lot_id, known[0], known[1], None, None)


def latest_vehicles(lots: frozenset[str] | None, limit: int) -> list[FeedEvent]:
    """The newest vehicles of ``lots`` (None: every lot): the live feed's and the stored ones."""
    state = live_state(current_app)
    recent = state.recent_events(lots, limit)
    try:
        stored = stored_events(engine(), lots, limit)
    except SQLAlchemyError as err:
        logger.warning("recent events cannot be read from the collector's database: %s", err)
        stored = []
    return merge_events(limit, recent, stored)


def page_texts() -> dict[str, str]:
    """Texts the page's script shows, in the page's language (beside parkgate.js's own)."""
    return {
        "entry": _("Entry"), "exit": _("Exit"), "open": _("Admitted"), "deny": _("Refused"),
        "online": _("Online"), "offline": _("Offline"), "never": _("never confirmed"),
        "stale": _("Stale"), "no_data": _("No data yet"), "crop": _("Plate crop"), "no_plate": _("no plate"),
        "ok": _("OK"), "occupancy": _("Occupancy"), "occupied": _("Occupied"), "free": _("Free"),
        "entries": _("Entries"), "exits": _("Exits"), "refused": _("Refused"),
        "skipped": _("{n} more vehicles arrived at once and are not listed"),
        "paused": _("Paused: {n} new"), "pause": _("Pause"), "resume": _("Resume"),
        "no_history": _("No history for this period yet"),
        **{f"warn.{k}": v for k, v in warning_texts().items()},
        **{f"reason.{k}": v for k, v in reason_texts().items()},
        **value_texts(),
    }  # fmt: skip


def value_texts() -> dict[str, str]:
    """Words for what a heartbeat reports (``mode.*``, ``barrier.*``, ``camera.*``); a value not
    listed is shown as the gate sent it."""
    return {
        "mode.normal": _("Normal"), "mode.free_exit": _("Free exit"), "mode.closed": _("Closed"),
        "mode.lockdown": _("Lockdown"), "barrier.CLOSED": _("Arm down"), "barrier.OPENING": _("Arm rising"),
        "barrier.OPEN": _("Arm up"), "barrier.CLOSING": _("Arm lowering"), "barrier.STOPPED": _("Arm stopped"),
        "barrier.FAULT": _("Barrier fault"), "barrier.EMERGENCY_OPEN": _("Emergency open"),
        "camera.ok": _("OK"), "camera.down": _("Down"), "camera.idle": _("Idle"),
    }  # fmt: skip


def warning_texts() -> dict[str, str]:
    return {
        "offline": _("Offline"), "heartbeat_late": _("No heartbeat"), "backlog_old": _("Backlog waiting"),
        "camera_down": _("Camera down"), "disk_low": _("Disk low"), "hot": _("Running hot"),
        "barrier_fault": _("Barrier fault"), "dropped": _("Events dropped"),
    }  # fmt: skip


def reason_texts() -> dict[str, str]:
    return {
        "space_free": _("space free"), "allow_listed": _("allow list"), "lot_full": _("lot full"),
        "deny_listed": _("deny list"), "exit": _("exit"), "no_plate_read": _("no plate read"),
        "locked": _("locked"), "lot_closed": _("lot closed"), "lockdown": _("lockdown"),
        "remote_open": _("remote open"),
    }  # fmt: skip


def age_text(seconds: float | None) -> str:
    """An age in the page's language, worded as parkgate.js words it ("5 s ago", "3 min ago")."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = int(max(seconds, 0))
    if s < 1:
        return _("just now")
    if s < 60:
        return _("{n} s ago").format(n=s)
    if s < 3600:
        return _("{n} min ago").format(n=s // 60)
    if s < 48 * 3600:
        return _("{n} h ago").format(n=s // 3600)
    return _("{n} d ago").format(n=s // 86400)


def lot_names(known: dict[str, tuple[str, int | None]]) -> dict[str, str]:
    return {lot_id: name for lot_id, (name, _cap) in known.items()}


# -- pages ---------------------------------------------------------------------------------------------
@bp.get("/lots/<lot_id>")
def lot(lot_id: str) -> str:
    require_lot(lot_id)
    user = operator()
    now = utc_now()
    view = lot_view(lot_id, user, now)
    if view is None:
        abort(404, description=f"no lot {lot_id!r}")
    db = engine()
    day: list[Bucket] = []
    week: list[Bucket] = []
    flows: list[FlowHour] = []
    db_error = False
    try:
        day = occupancy_series(db, lot_id, now, RANGES["24h"], series_step(lot_id, RANGES["24h"]))
        week = occupancy_series(db, lot_id, now, RANGES["7d"], SEVEN_DAY_STEP)
        flows = hourly_flows(db, lot_id, now)
    except SQLAlchemyError as err:
        logger.warning("lot %s: history cannot be read from the collector's database: %s", lot_id, err)
        db_error = True
    gates = gate_health(live_state(current_app).gates.values(), in_scope(None, lot_id), now)
    after = live_state(current_app).event_seq
    vehicles = latest_vehicles(frozenset({lot_id}), LOT_ROWS)
    data = {
        "lot": view.to_json(),
        "occupancy_24h": [b.to_json() for b in day],
        "occupancy_7d": [b.to_json() for b in week],
        "flows": [f.to_json() for f in flows],
    }
    api = {
        "day": url_for("lots_api.occupancy", lot_id=lot_id, range="24h"),
        "week": url_for("lots_api.occupancy", lot_id=lot_id, range="7d"),
        "flows": url_for("lots_api.flows", lot_id=lot_id),
    }
    return render_template(
        "ops/lot.html",
        lot=view,
        gates=gates,
        vehicles=vehicles,
        names={lot_id: view.name},
        data=data,
        api=api,
        db_error=db_error,
        **page_attrs(lot=lot_id, kinds="lot,gate,event", after=after),
    )


@bp.get("/live")
def live() -> str:
    user = operator()
    lot_id = request.args.get("lot") or None
    if lot_id is not None:
        require_lot(lot_id)
    known = known_lots(user, db=engine())
    lots = frozenset({lot_id}) if lot_id else user.lots
    after = live_state(current_app).event_seq  # before reading: the stream brings what comes later
    vehicles = latest_vehicles(lots, LIVE_ROWS)
    return render_template(
        "ops/live.html",
        vehicles=vehicles,
        lot_id=lot_id,
        known=known,
        names=lot_names(known),
        **page_attrs(lot=lot_id, kinds="event", after=after),
    )


@bp.get("/gates")
def gates() -> str:
    user = operator()
    lot_id = request.args.get("lot") or None
    if lot_id is not None:
        require_lot(lot_id)
    known = known_lots(user, db=engine())
    found = gate_health(live_state(current_app).gates.values(), in_scope(user.lots, lot_id), utc_now())
    return render_template(
        "ops/gates.html",
        gates=found,
        lot_id=lot_id,
        known=known,
        names=lot_names(known),
        warned=sum(1 for g in found if g.warnings),
        offline=sum(1 for g in found if not g.online),
        **page_attrs(lot=lot_id, kinds="gate"),
    )


@bp.get("/events/<event_id>/crop.jpg")
def crop(event_id: str) -> Response:
    if not EVENT_ID.match(event_id):
        abort(404, description="not an event id")
    found: tuple[str, bytes] | None = None
    kept = live_state(current_app).crop(event_id)
    if kept is not None:
        try:
            found = (kept[0], base64.b64decode(kept[1], validate=True))
        except (binascii.Error, ValueError):
            found = (kept[0], b"")
    if found is None:
        try:
            found = stored_crop(engine(), event_id)
        except SQLAlchemyError as err:
            logger.warning("crop of %s cannot be read from the collector's database: %s", event_id, err)
            abort(503, description="the collector's database cannot be read right now")
    if found is None:
        abort(404, description=f"no plate crop for event {event_id!r}")
    lot_id, jpeg = found
    require_lot(lot_id)
    if not jpeg.startswith(JPEG_MAGIC):
        logger.warning("plate crop of event %s (lot %s) is not a JPEG: not served", event_id, lot_id)
        abort(404, description=f"the plate crop of event {event_id!r} is not a JPEG image")
    return Response(jpeg, mimetype="image/jpeg")


def page_attrs(*, lot: str | None, kinds: str, after: int | None = None) -> dict[str, Any]:
    """Template values every one of these pages needs: the stream URL (scoped on the server by the
    user's session; ``lot`` narrows it), the crop URL pattern, the limits the script judges by."""
    args: dict[str, Any] = {"kinds": kinds}
    if lot:
        args["lot"] = lot
    if after is not None:
        args["after"] = after
    cfg = current_app.config["PARKGATE"]
    return {
        "stream_url": url_for("lots_api.stream", **args),
        "crop_url": url_for("lots.crop", event_id="EVENTID"),
        "lot_url": url_for("lots.lot", lot_id="LOTID"),
        "limits": WARNING_LIMITS,
        "timezone": cfg.timezone,
        "texts": page_texts(),
        "age_text": age_text,
    }
