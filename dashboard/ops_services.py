"""What the operator actions (plates, lists, remote open, signs) share: the collector's services
opened once per app, the site's lots in an operator's scope, times in the site's zone, and asking
the collectors to re-publish after a change.

Each service is made on first use and kept in ``app.extensions`` (never per request): the
event store and :class:`~cloud.visits.Visits` (plate corrections re-pair visits inside the
database, the collector reads the result), :class:`~cloud.lists.PlateLists`. A dashboard
without ``database`` never gets here: the ``/ops`` guard answers 503 first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import abort, current_app
from flask_babel import gettext as _
from sqlalchemy.engine import Engine

from cloud.config import CollectorConfig
from cloud.events_store import EventStore
from cloud.lists import PlateLists, parse_time
from cloud.visits import Visits, request_refresh
from dashboard import live_state, site_config
from dashboard.config import DashboardConfig
from dashboard.opendata import database
from dashboard.users import User, can_see_lot

logger = logging.getLogger(__name__)

_LOCK = threading.Lock()


def config() -> DashboardConfig:
    cfg: DashboardConfig = current_app.config["PARKGATE"]
    return cfg


def engine() -> Engine:
    """The collector's database (operator pages exist only with one)."""
    found = database(current_app)
    if found is None:
        abort(503, description="operator actions need the collector's database: set database in the config")
    return found


def visits() -> Visits:
    """Visits on the collector's database, with the site's lots (their stale_visit_h decides the
    re-pairing after a correction). Without the site config it only reads."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with _LOCK:
        found: Visits | None = app.extensions.get("parkgate.ops.visits")
        if found is None:
            url = config().database
            if not url:
                abort(503, description="operator actions need the collector's database")
            store = EventStore(url, migrate=False)  # the schema is the collector's (and UserStore's) business
            found = app.extensions["parkgate.ops.visits"] = Visits(
                store, site_config(app) or CollectorConfig()
            )
        return found


def plate_lists() -> PlateLists:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with _LOCK:
        found: PlateLists | None = app.extensions.get("parkgate.ops.lists")
        if found is None:
            found = app.extensions["parkgate.ops.lists"] = PlateLists(engine())
        return found


def zone() -> ZoneInfo:
    """The site's time zone (``timezone`` in the dashboard config): form times are read in it."""
    return ZoneInfo(config().timezone)


def form_time(text: str, field: str, *, end_of_day: bool = False) -> datetime | None:
    """A time typed in a form (``datetime-local``: in the site's zone), or :class:`ActionRefused`."""
    try:
        return parse_time(text, zone(), end_of_day=end_of_day)
    except ValueError as err:
        raise ActionRefused(
            400, f"{field}: {err}",
            _("%(value)s is not a date or time (e.g. 2026-12-01 or 2026-12-01 08:00).", value=text),
        ) from None  # fmt: skip


def local_input(ts: datetime | None) -> str:
    """A time as a ``datetime-local`` input's value in the site's zone."""
    return ts.astimezone(zone()).strftime("%Y-%m-%dT%H:%M") if ts else ""


def scope_lots(user: User) -> dict[str, str]:
    """The lots of the user's scope that the dashboard knows, id -> name: the site config's, those
    with a live count, and every lot the scope names (by id, until one reports)."""
    found: dict[str, str] = {}
    site = site_config(current_app)
    if site is not None:
        found.update({lot.id: lot.name for lot in site.lots})
    found.update({lot_id: lot.name for lot_id, lot in live_state(current_app).lots.items()})
    for lot_id in user.lots or ():
        found.setdefault(lot_id, lot_id)
    return {k: v for k, v in sorted(found.items()) if can_see_lot(user, k)}


def refresh(lot_ids: Iterable[str] = (), screen_ids: Iterable[str] = ()) -> bool:
    """Ask every collector to re-publish these lots (availability, lists) and screens now; False
    when the broker could not be reached (the collectors' periodic checks catch up)."""
    lots, screens = sorted(set(lot_ids)), sorted(set(screen_ids))
    if not lots and not screens:
        return True
    timeout = float(current_app.config.get("OPS_REFRESH_TIMEOUT_S", 3.0))
    done = request_refresh(config().mqtt, lots, screens, timeout=timeout)
    if not done:
        logger.warning("refresh of lots %s, screens %s not delivered to the broker", lots, screens)
    return done


class ActionRefused(Exception):
    """An operator action that cannot be done as asked: the HTTP status, the reason in English
    (the JSON API, logs, the audit trail) and in the page's language (the pages)."""

    def __init__(self, status: int, message: str, text: str | None = None) -> None:
        self.status, self.message, self.text = status, message, text or message
        super().__init__(message)
