"""Inspection stations for operators: intruder alerts, station pages, monthly pass rates.

Pages (login required, like everything under ``/ops/``; each shows only the stations in the
user's scope, ``require_station`` answers 403 for another):

``/ops/alerts``
    Alerts of the stations in scope, open ones (warnings and flags not yet reviewed, locks in
    force) or all: the subject (plate or person code), kind, rule, count, time, the station, and
    each alert's step-by-step history. Viewers look; operators review (a note) and unlock (a
    reason and a ticked confirmation). New alerts and steps arrive live (inspection_api.py).
``/ops/stations`` and ``/ops/stations/<id>``
    The stations in scope; one station's lanes (online/offline, mode and barrier from the gates'
    heartbeats), inspection results as they come, what is locked there now, and the monthly pass
    rates of every station in scope with the peer band and the anomaly flag (cloud/intruders.py).

Both audit trails record every action: the alert's own (``inspection_audit``, through
:class:`~cloud.intruders.InspectionAreas`) and the operator audit trail (``audit(...)``), refusals
in the latter too. After an unlock the collectors are asked to re-publish the station's lists at
once (dashboard/inspection_feed.py), so the lanes stop refusing the subject within a second.

The actions live here once (:func:`review_alert`, :func:`unlock_alert`) for the JSON API and for
the pages' plain forms (which work without JavaScript; the page script sends the same forms
through the API instead and updates the card in place).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from cloud.config import CollectorConfig, StationConfig
from cloud.intruders import (
    IN_FORCE,
    AlertNotFound,
    AlertRow,
    AlertStateError,
    AuditRow,
    Change,
    InspectionAreas,
    MonthRate,
    ResultRow,
)
from dashboard import live_state, site_config
from dashboard.auth import audit, operator, require_station, role_required
from dashboard.inspection_feed import InspectionWatch, inspection_watch, last_step_id
from dashboard.opendata import database
from dashboard.users import User, can_see_station, role_at_least
from protocol import GateStatus
from protocol.messages import utc_now

bp = Blueprint("inspection", __name__, url_prefix="/ops")
T = TypeVar("T")

AREAS_KEY = "parkgate.inspection.areas"
_AREAS_LOCK = threading.Lock()
TEXT_MAX = 400  # a note or reason: the inspection audit's `why` column
ALERTS_SHOWN = 200  # alerts on one page (newest first)
RESULTS_SHOWN = 20  # results on a station page
RATE_MONTHS = 12  # months of pass rates shown
OPEN_STATUSES = ("open", "locked")


# -- the site's stations, and the inspection module on the collector's database --------------------
def stations() -> dict[str, StationConfig]:
    """Every configured station by id (the collector's ``[[stations]]``); empty without a site."""
    site = site_config(current_app)
    return {st.id: st for st in site.stations} if site else {}


def visible_stations(user: User) -> list[StationConfig]:
    return [st for st in sorted(stations().values(), key=lambda x: x.id) if can_see_station(user, st.id)]


def engine() -> Engine:
    found = database(current_app)
    if found is None:  # the /ops guard answers 503 before any view runs without a database
        abort(503)
    return found


def areas() -> InspectionAreas:
    """The app's InspectionAreas (made once; needs the site config with stations); 503 without."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with _AREAS_LOCK:
        found: InspectionAreas | None = app.extensions.get(AREAS_KEY)
        if found is None:
            site: CollectorConfig | None = site_config(app)
            if site is None or not site.stations:
                abort(503, description="no inspection stations: set collector_config in the dashboard config")
            try:
                found = app.extensions[AREAS_KEY] = InspectionAreas(engine(), site)
            except SQLAlchemyError as err:
                current_app.logger.warning("inspection stations: database error: %s", err)
                abort(503, description="the collector's database cannot be used right now")
    return found


def station_of_lane_ids() -> dict[str, str]:
    """The station id for each id a lane may name its station by: the station id or its lane lot."""
    return {key: st.id for st in stations().values() for key in (st.id, st.lane_lot)}


def watch() -> InspectionWatch:
    return inspection_watch(current_app._get_current_object(), station_of_lane_ids(), engine())  # type: ignore[attr-defined]


def station_or_404(station_id: str) -> StationConfig:
    st = stations().get(station_id)
    if st is None:
        abort(404, description=f"no inspection station {station_id[:80]!r}")
    return st


# -- alerts as pages and the API show them ------------------------------------------------------------
def _aware(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


@dataclass(frozen=True)
class StepView:
    id: int
    action: str  # warn | lock | flag | review | unlock
    actor: str
    at: datetime
    why: str
    status: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "action": self.action, "actor": self.actor, "at": self.at.isoformat(),
            "why": self.why, "status": self.status,
        }  # fmt: skip


@dataclass(frozen=True)
class AlertView:
    id: int
    station_id: str
    station_name: str
    subject_kind: str  # plate | person
    subject: str
    kind: str  # warn | lock | flag
    rule: str  # entries | person_multi_vehicle
    count: int
    ts: datetime  # the entry that crossed the threshold
    detail: str
    status: str
    created_at: datetime
    history: list[StepView] = field(default_factory=list)

    @property
    def in_force(self) -> bool:
        """A lock the lanes still enforce."""
        return self.kind == "lock" and self.status in IN_FORCE

    @property
    def is_open(self) -> bool:
        """Still needs an operator: not reviewed yet, or a lock in force."""
        return self.status in OPEN_STATUSES or self.in_force

    @property
    def can_review(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def can_unlock(self) -> bool:
        return self.in_force

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "station_id": self.station_id, "station_name": self.station_name,
            "subject_kind": self.subject_kind, "subject": self.subject, "kind": self.kind,
            "rule": self.rule, "count": self.count, "ts": self.ts.isoformat(), "detail": self.detail,
            "status": self.status, "created_at": self.created_at.isoformat(), "in_force": self.in_force,
            "open": self.is_open, "history": [s.to_json() for s in self.history],
        }  # fmt: skip


def _view(row: AlertRow, history: list[StepView]) -> AlertView:
    st = stations().get(row.station_id)
    return AlertView(
        row.id, row.station_id, st.name if st else row.station_id, row.subject_kind, row.subject,
        row.kind, row.rule, row.count, _aware(row.ts), row.detail, row.status, _aware(row.created_at),
        history,
    )  # fmt: skip


def find_alerts(station_ids: list[str], *, show: str = "open", limit: int = ALERTS_SHOWN) -> list[AlertView]:
    """Alerts of these stations, newest first, each with its history; ``show`` open or all."""
    if not station_ids:
        return []
    query = select(AlertRow).where(AlertRow.station_id.in_(station_ids))
    if show == "open":
        in_force = and_(AlertRow.kind == "lock", AlertRow.status.in_(IN_FORCE))
        query = query.where(or_(AlertRow.status.in_(OPEN_STATUSES), in_force))
    with Session(engine()) as s:
        rows = list(s.scalars(query.order_by(AlertRow.id.desc()).limit(limit)))
        history = _histories(s, [r.id for r in rows])
    return [_view(r, history.get(r.id, [])) for r in rows]


def find_alert(alert_id: int) -> AlertView | None:
    with Session(engine()) as s:
        row = s.get(AlertRow, alert_id)
        return _view(row, _histories(s, [alert_id]).get(alert_id, [])) if row else None


def _histories(s: Session, alert_ids: list[int]) -> dict[int, list[StepView]]:
    out: dict[int, list[StepView]] = defaultdict(list)
    if alert_ids:
        query = select(AuditRow).where(AuditRow.alert_id.in_(alert_ids)).order_by(AuditRow.id)
        for r in s.scalars(query):
            out[r.alert_id].append(StepView(r.id, r.action, r.actor, _aware(r.at), r.why, r.status))
    return out


def visible_alert(alert_id: int) -> AlertView:
    """The alert, if it exists (404) and its station is in the user's scope (403, audited)."""
    alert = find_alert(alert_id)
    if alert is None:
        abort(404, description=f"no alert {alert_id}")
    require_station(alert.station_id)
    return alert


# -- actions (shared by the JSON API and the pages' forms) ----------------------------------------
class ActionRefused(Exception):
    """An action that cannot be done as asked. ``code`` picks the page's (translated) sentence,
    ``message`` is the API's (English, for programs)."""

    def __init__(self, status: int, code: str, message: str, **values: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.values = status, code, message, values

    def text(self) -> str:
        status = self.values.get("alert_status", "")
        texts = {
            "note": _("Write a note for the review."),
            "reason": _("Give a reason for the unlock."),
            "confirm": _("Tick the box to confirm the unlock."),
            "too_long": _("The text is too long: at most %(n)s characters.", n=TEXT_MAX),
            "state": _("This alert has already been handled (it is %(status)s).", status=status),
            "gone": _("There is no such alert."),
            "database": _("The database cannot be reached right now. Try again in a moment."),
        }  # fmt: skip
        return texts.get(self.code, self.message)


@dataclass(frozen=True)
class Unlocked:
    alert: AlertView
    locked: list[str]  # the station's plates locked after the unlock
    locked_persons: list[str]
    lanes_notified: bool  # the collectors were asked to re-publish the lists now


def _text(value: object, what: str, missing: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise ActionRefused(400, missing, f"{what}: required, 1-{TEXT_MAX} characters")
    if len(text) > TEXT_MAX:
        raise ActionRefused(400, "too_long", f"{what}: at most {TEXT_MAX} characters, got {len(text)}")
    return text


def _subject(alert: AlertView) -> str:
    return f"{alert.station_id} {alert.subject_kind} {alert.subject}"


def _refused(action: str, alert_id: int, err: ActionRefused) -> ActionRefused:
    audit(action, target=f"alert:{alert_id}", detail=err.message, result="failed")
    return err


def _guarded(action: str, alert: AlertView, work: Callable[[], T], wanted: str) -> T:
    """Run an action on an alert; every refusal becomes an ActionRefused, audited as failed."""
    try:
        return work()
    except ActionRefused as err:
        raise _refused(action, alert.id, err) from None
    except AlertStateError:
        status = f"{alert.status} {alert.kind}"
        message = f"alert {alert.id} is {status}: {wanted}"
        raise _refused(action, alert.id, ActionRefused(409, "state", message, alert_status=status)) from None
    except AlertNotFound:
        raise _refused(action, alert.id, ActionRefused(404, "gone", f"no alert {alert.id}")) from None
    except SQLAlchemyError as err:
        current_app.logger.warning("%s of alert %s: database error: %s", action, alert.id, err)
        refusal = ActionRefused(503, "database", "the database is unavailable")
        raise _refused(action, alert.id, refusal) from None


def review_alert(alert_id: int, note: object) -> AlertView:
    """An operator has looked at an open alert or a lock (which holds); both trails record it."""
    action = "alert.review"
    alert = visible_alert(alert_id)

    def work() -> str:
        text = _text(note, "note", "note")
        areas().review(alert_id, operator().name, text)
        return text

    text = _guarded(action, alert, work, "only open or locked alerts can be reviewed")
    audit(action, target=f"alert:{alert_id}", detail=f"{_subject(alert)}: {text}")
    reviewed = find_alert(alert_id)
    assert reviewed is not None
    return reviewed


def unlock_alert(alert_id: int, reason: object, confirm: object) -> Unlocked:
    """Lift a lock (a reason and an explicit confirmation needed), record it in both trails and
    ask the collectors to send the station's lanes the new lists now."""
    action = "alert.unlock"
    alert = visible_alert(alert_id)

    def work() -> tuple[str, Change]:
        text = _text(reason, "reason", "reason")
        if confirm is not True:
            raise ActionRefused(400, "confirm", "confirm: send true to confirm the unlock")
        return text, areas().unlock(alert_id, operator().name, text)

    text, change = _guarded(action, alert, work, "only a lock in force can be unlocked")
    notified = watch().request_refresh([change.lot_id])
    lanes = "lanes notified" if notified else "lanes get it at the next re-publish"
    audit(action, target=f"alert:{alert_id}", detail=f"{_subject(alert)}: {text} ({lanes})")
    unlocked = find_alert(alert_id)
    assert unlocked is not None
    lists = change.lists
    return Unlocked(unlocked, lists.locked if lists else [], lists.locked_persons if lists else [], notified)


def republish_s() -> float:
    site = site_config(current_app)
    return site.republish_s if site else 30.0


# -- stations: lanes, results, locks, pass rates ----------------------------------------------------
@dataclass(frozen=True)
class ResultView:
    id: str
    ts: datetime
    gate_id: str
    plate: str
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "ts": self.ts.isoformat(), "gate_id": self.gate_id, "plate": self.plate,
            "result": "pass" if self.passed else "fail",
        }  # fmt: skip


def lanes(st: StationConfig) -> list[GateStatus]:
    """The station's lanes as their heartbeats last said (gates whose lot is the lane lot)."""
    gates = live_state(current_app).gates.values()
    return sorted((g for g in gates if g.lot_id == st.lane_lot), key=lambda g: g.gate_id)


def recent_results(station_id: str, limit: int = RESULTS_SHOWN) -> list[ResultView]:
    query = (
        select(ResultRow)
        .where(ResultRow.station_id == station_id)
        .order_by(ResultRow.ts.desc(), ResultRow.id.desc())
        .limit(limit)
    )
    with Session(engine()) as s:
        return [ResultView(r.id, _aware(r.ts), r.gate_id, r.plate, r.passed) for r in s.scalars(query)]


def locks(station_id: str) -> list[AlertView]:
    """The locks in force at a station (one per subject), oldest first."""
    alerts = find_alerts([station_id], show="open", limit=1000)
    return sorted((a for a in alerts if a.in_force), key=lambda a: a.id)


def lane_json(g: GateStatus) -> dict[str, Any]:
    return g.model_dump(mode="json")


@dataclass(frozen=True)
class RateRow:
    station: StationConfig
    cells: list[MonthRate | None]  # one per month of the table, None: no results that month

    @property
    def flagged(self) -> bool:
        return any(c is not None and c.flagged for c in self.cells)


@dataclass(frozen=True)
class PassRates:
    months: list[str]  # YYYY-MM, oldest first
    rows: list[RateRow]
    bands: list[MonthRate | None]  # per month: a rated row carrying the peer band (median, low, high)
    settings: Any  # cloud.config.PassRateConfig

    def chart(self) -> dict[str, Any]:
        """Data for the page's chart: rates in percent, null where a station had no results."""

        def pct(value: float | None) -> float | None:
            return None if value is None else round(value * 100, 1)

        return {
            "months": self.months,
            "median": [pct(b.median) if b else None for b in self.bands],
            "band_high": [pct(b.band_high) if b else None for b in self.bands],
            "stations": [
                {
                    "id": row.station.id,
                    "name": row.station.name,
                    "rates": [pct(c.rate) if c else None for c in row.cells],
                    "above": [bool(c and c.above) for c in row.cells],
                    "flagged": [bool(c and c.flagged) for c in row.cells],
                }
                for row in self.rows
            ],
        }


def months_back(n: int, zone: str) -> list[str]:
    """The last ``n`` months (YYYY-MM) up to this one in ``zone``, oldest first."""
    now = utc_now().astimezone(ZoneInfo(zone))
    year, month = now.year, now.month
    out = []
    for _step in range(n):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return out[::-1]


def pass_rates(visible: list[StationConfig], months: int = RATE_MONTHS) -> PassRates:
    """The monthly pass rates of the stations in scope. The peer band is the module's, from every
    station's results: a scoped user sees the band, not the other stations' rates."""
    found = areas()
    settings = found.cfg.pass_rates
    span = months_back(months, settings.timezone)
    # from further back than shown: a run of months above the band may begin before the table does
    rates = found.pass_rates(since=months_back(months + settings.months, settings.timezone)[0])
    by_key = {(r.station_id, r.month): r for r in rates}
    bands: list[MonthRate | None] = []
    for month in span:
        band = next((r for r in rates if r.month == month and r.median is not None), None)
        bands.append(band)
    rows = [RateRow(st, [by_key.get((st.id, m)) for m in span]) for st in visible]
    used = [i for i, m in enumerate(span) if any(row.cells[i] for row in rows)]
    first = used[0] if used else len(span) - 1  # leave out the months before the first results
    return PassRates(
        span[first:], [RateRow(r.station, r.cells[first:]) for r in rows], bands[first:], settings
    )


# -- pages ------------------------------------------------------------------------------------------
def _configured() -> bool:
    return bool(stations())


@bp.get("/alerts")
def alerts() -> ResponseReturnValue:
    user = operator()
    visible = visible_stations(user)
    station = request.args.get("station") or None
    if station is not None:
        station_or_404(station)
        require_station(station)
    show = "all" if request.args.get("show") == "all" else "open"
    if not _configured():
        return render_template("ops/alerts.html", configured=False, stations=[], alerts=[], station=None,
                               show=show, can_act=False, cursor=0)  # fmt: skip
    ids = [station] if station else [st.id for st in visible]
    try:
        found = find_alerts(ids, show=show)
        cursor = last_step_id(engine())
    except SQLAlchemyError as err:
        current_app.logger.warning("alerts page: database error: %s", err)
        abort(503, description="the collector's database cannot be read right now")
    watch()  # started now, so steps from here on are followed
    return render_template(
        "ops/alerts.html",
        configured=True,
        stations=visible,
        alerts=found,
        station=station,
        show=show,
        can_act=role_at_least(user, "operator"),
        cursor=cursor,
        counts={
            "warn": sum(1 for a in found if a.is_open and a.kind == "warn"),
            "flag": sum(1 for a in found if a.is_open and a.kind == "flag"),
            "lock": sum(1 for a in found if a.in_force),
        },
        stream_url=url_for("inspection_api.stream", station=station),
    )


@bp.get("/alerts/<int:alert_id>/card")
def alert_card(alert_id: int) -> str:
    """One alert's card (the page's script swaps it in when the alert changes)."""
    alert = visible_alert(alert_id)
    return render_template("ops/alert_card.html", alert=alert, can_act=role_at_least(operator(), "operator"))


def _back_to_alerts(alert: AlertView) -> ResponseReturnValue:
    station = request.form.get("station") or None
    show = request.form.get("show") or None
    target = url_for("inspection.alerts", station=station, show=show if show == "all" else None)
    return redirect(f"{target}#alert-{alert.id}")


@bp.post("/alerts/<int:alert_id>/review")
@role_required("operator")
def review_form(alert_id: int) -> ResponseReturnValue:
    alert = visible_alert(alert_id)
    try:
        done = review_alert(alert_id, request.form.get("note"))
    except ActionRefused as err:
        flash(err.text(), "error")
        return _back_to_alerts(alert)
    flash(_("Alert %(id)s marked as reviewed.", id=done.id), "ok")
    return _back_to_alerts(alert)


@bp.post("/alerts/<int:alert_id>/unlock")
@role_required("operator")
def unlock_form(alert_id: int) -> ResponseReturnValue:
    alert = visible_alert(alert_id)
    try:
        done = unlock_alert(alert_id, request.form.get("reason"), request.form.get("confirm") == "yes")
    except ActionRefused as err:
        flash(err.text(), "error")
        return _back_to_alerts(alert)
    flash(unlocked_text(done), "ok")
    return _back_to_alerts(alert)


def unlocked_text(done: Unlocked) -> str:
    if done.lanes_notified:
        return _(
            "%(subject)s unlocked. Every lane of %(station)s has been sent the new list.",
            subject=done.alert.subject, station=done.alert.station_name,
        )  # fmt: skip
    return _(
        "%(subject)s unlocked. The lanes of %(station)s get the new list within %(s)s seconds.",
        subject=done.alert.subject, station=done.alert.station_name, s=int(republish_s()),
    )  # fmt: skip


@bp.get("/stations")
def station_list() -> str:
    user = operator()
    visible = visible_stations(user)
    summaries = []
    rates = None
    if visible:
        try:
            open_alerts = find_alerts([st.id for st in visible], show="open", limit=1000)
            rates = pass_rates(visible, months=1)
        except SQLAlchemyError as err:
            current_app.logger.warning("stations page: database error: %s", err)
            abort(503, description="the collector's database cannot be read right now")
        for i, st in enumerate(visible):
            mine = [a for a in open_alerts if a.station_id == st.id]
            gates = lanes(st)
            this_month = rates.rows[i].cells[-1] if rates.rows and rates.rows[i].cells else None
            summaries.append(
                {
                    "station": st,
                    "lanes": len(gates),
                    "online": sum(1 for g in gates if g.state == "online"),
                    "locks": sum(1 for a in mine if a.in_force),
                    "open": sum(1 for a in mine if a.is_open),
                    "rate": this_month,
                }
            )
    return render_template("ops/stations.html", configured=_configured(), summaries=summaries)


@bp.get("/stations/<station_id>")
def station(station_id: str) -> str:
    st = station_or_404(station_id)
    require_station(st.id)
    user = operator()
    try:
        results = recent_results(st.id)
        locked = locks(st.id)
        open_alerts = [a for a in find_alerts([st.id], show="open") if a.is_open]
        rates = pass_rates(visible_stations(user))
    except SQLAlchemyError as err:
        current_app.logger.warning("station page: database error: %s", err)
        abort(503, description="the collector's database cannot be read right now")
    watch()
    gates = lanes(st)
    row = next((r for r in rates.rows if r.station.id == st.id), None)
    return render_template(
        "ops/station.html",
        st=st,
        lanes=gates,
        online=sum(1 for g in gates if g.state == "online"),
        results=results,
        locked_plates=[a for a in locked if a.subject_kind == "plate"],
        locked_persons=[a for a in locked if a.subject_kind == "person"],
        open_alerts=len(open_alerts),
        rates=rates,
        this_month=row.cells[-1] if row and row.cells else None,
        chart=rates.chart(),
        results_shown=RESULTS_SHOWN,
        stream_url=url_for("inspection_api.stream", station=st.id),
        api_url=url_for("inspection_api.station", station_id=st.id),
    )
