"""Plate search with visit history (``/ops/plates``), and correcting a misread.

Search: what is typed is normalised like a stored plate (capitals, no separators: ``鄂a·123``
finds ``鄂A123..``) and matched anywhere in the plates of the events in the operator's lots —
the exact plate first, then plates that start with it, then the rest, most recently seen first.
A substring match reads the plate index of the whole events table, so it needs two characters.

A plate's history: its visits (cloud/visits.py: lot, entry and exit, dwell, the gates, the crops
the gates sent) and its events, newest first, each marked when an operator corrected it; also
the events that *used to* read this plate before a correction, so a search for the misread
still explains where its events went.

Correcting a misread (operator role, the event's lot in scope): the right plate and why ->
:meth:`cloud.visits.Visits.correct_plate` (the original is kept in ``plate_corrections``; the
visits of both plates in the lot are paired again from their events; a lot that reconciles may be
re-based, audited in the occupancy audit) -> the operator audit trail -> ``collectors/refresh``
so the lot's count and its screens are re-published. The page then shows the re-paired visits.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from cloud.events_store import EventRow, SnapshotRow
from cloud.visits import CorrectionRow, EventNotFound, InvalidPlate, Visit, VisitsError
from dashboard import site_config
from dashboard.auth import audit, operator, require_lot, role_required
from dashboard.ops_services import ActionRefused, engine, refresh, scope_lots, visits
from dashboard.users import LIMITS, User, can_see_lot, role_at_least

logger = logging.getLogger(__name__)

bp = Blueprint("plates", __name__, url_prefix="/ops")

SEARCH_MIN = 2
MATCHES_SHOWN = 50
HISTORY_ROWS = 200
REASON_MAX = LIMITS["detail"] - 40  # the audit row also names the plates
EVENT_ID = re.compile(r"^[0-9A-Za-z_-]{16,40}$")  # protocol.messages.EventId
QUERY_RE = re.compile(r"^[0-9A-Z\u4e00-\u9fff]+$")
_SEPARATORS = re.compile(r"[\s·•.\-_]")
JPEG_MAGIC = b"\xff\xd8\xff"


# -- searching ------------------------------------------------------------------------------------------
def normalise_query(text: str) -> str:
    """The search text as plates are stored, or :class:`ActionRefused` (400) saying what is wrong."""
    q = _SEPARATORS.sub("", text).upper()
    if len(q) < SEARCH_MIN:
        raise ActionRefused(
            400,
            f"type at least {SEARCH_MIN} characters of the plate",
            _("Type at least %(n)s characters of the plate.", n=SEARCH_MIN),
        )
    if len(q) > 12 or not QUERY_RE.match(q):
        raise ActionRefused(
            400,
            "a plate has 2-12 capital letters, digits and Chinese characters",
            _("A plate has only letters, digits and Chinese characters (2 to 12 of them)."),
        )
    return q


@dataclass(frozen=True)
class PlateMatch:
    plate: str
    events: int
    last_seen: datetime
    lots: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"plate": self.plate, "events": self.events, "last_seen": self.last_seen.isoformat(),
                "lots": list(self.lots)}  # fmt: skip


def _aware(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def find_plates(
    db: Engine, q: str, lots: frozenset[str] | None, limit: int = MATCHES_SHOWN
) -> list[PlateMatch]:
    """Plates of the events in ``lots`` (None: every lot) that contain ``q`` (normalised), and the
    plates that events read before an operator corrected them (with 0 events)."""
    t = EventRow
    last = func.max(t.ts)
    query = select(t.plate, func.count(), last).where(t.plate.like(f"%{q}%")).group_by(t.plate)
    if lots is not None:
        query = query.where(t.lot_id.in_(sorted(lots)))
    c = CorrectionRow  # plates read wrongly once: the operator still finds where the events went
    away = (
        select(c.old_plate, func.count(), func.max(c.ts))
        .where(c.old_plate.is_not(None), c.old_plate.like(f"%{q}%"))
        .group_by(c.old_plate)
    )
    if lots is not None:
        away = away.where(c.lot_id.in_(sorted(lots)))
    with Session(db) as s:
        found = {
            str(r[0]): (int(r[1]), _aware(r[2]))
            for r in s.execute(query.order_by(last.desc()).limit(limit * 4))
        }
        for plate, _n, ts in s.execute(away.limit(limit * 4)):
            found.setdefault(str(plate), (0, _aware(ts)))
        rows = [(p, n, ts) for p, (n, ts) in found.items()]
        ranked = sorted(rows, key=lambda r: (r[0] != q, not r[0].startswith(q), -r[2].timestamp()))[:limit]
        where = select(t.plate, t.lot_id).where(t.plate.in_([r[0] for r in ranked])).distinct()
        if lots is not None:
            where = where.where(t.lot_id.in_(sorted(lots)))
        lots_of: dict[str, set[str]] = {}
        for plate, lot_id in s.execute(where):
            lots_of.setdefault(str(plate), set()).add(lot_id)
    return [PlateMatch(p, n, last_seen, tuple(sorted(lots_of.get(p, ())))) for p, n, last_seen in ranked]


# -- a plate's history ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EventLine:
    id: str
    ts: datetime
    lot_id: str
    gate_id: str
    direction: str  # entry | exit
    plate: str | None
    confidence: float
    action: str  # open | deny
    reason: str
    crop: bool
    corrected_from: str | None = None  # the plate read before an operator's correction ("" : none read)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id, "ts": self.ts.isoformat(), "lot_id": self.lot_id, "gate_id": self.gate_id,
            "direction": self.direction, "plate": self.plate, "confidence": round(self.confidence, 3),
            "action": self.action, "reason": self.reason, "crop": self.crop,
            "corrected_from": self.corrected_from,
        }  # fmt: skip


@dataclass(frozen=True)
class VisitLine:
    visit: Visit
    entry: EventLine | None
    exit: EventLine | None

    @property
    def dwell(self) -> timedelta | None:
        return self.visit.dwell

    def to_json(self) -> dict[str, object]:
        v = self.visit

        def iso(ts: datetime | None) -> str | None:
            return ts.isoformat() if ts else None

        return {
            "id": v.id, "lot_id": v.lot_id, "plate": v.plate, "status": v.status, "note": v.note,
            "entry": {"event_id": v.entry_event_id, "ts": iso(v.entry_ts),
                      "gate_id": self.entry.gate_id if self.entry else None,
                      "crop": bool(self.entry and self.entry.crop)},
            "exit": {"event_id": v.exit_event_id, "ts": iso(v.exit_ts),
                     "gate_id": self.exit.gate_id if self.exit else None,
                     "crop": bool(self.exit and self.exit.crop)},
            "dwell_s": v.dwell.total_seconds() if v.dwell else None, "closed_at": iso(v.closed_at),
        }  # fmt: skip


@dataclass(frozen=True)
class CorrectionLine:
    event_id: str
    lot_id: str
    old_plate: str | None
    new_plate: str
    actor: str
    reason: str
    ts: datetime

    def to_json(self) -> dict[str, object]:
        return {"event_id": self.event_id, "lot_id": self.lot_id, "old_plate": self.old_plate,
                "new_plate": self.new_plate, "actor": self.actor, "reason": self.reason,
                "ts": self.ts.isoformat()}  # fmt: skip


@dataclass(frozen=True)
class History:
    plate: str
    visits: list[VisitLine]
    events: list[EventLine]
    corrected_away: list[CorrectionLine]  # events that read this plate before a correction

    def to_json(self) -> dict[str, object]:
        return {
            "plate": self.plate,
            "visits": [v.to_json() for v in self.visits],
            "events": [e.to_json() for e in self.events],
            "corrected_away": [c.to_json() for c in self.corrected_away],
        }


def _event_lines(s: Session, rows: Iterable[EventRow]) -> list[EventLine]:
    rows = list(rows)
    ids = [r.id for r in rows]
    crops = (
        set(s.scalars(select(SnapshotRow.event_id).where(SnapshotRow.event_id.in_(ids)))) if ids else set()
    )
    before: dict[str, str | None] = {}
    if ids:
        for c in s.scalars(
            select(CorrectionRow).where(CorrectionRow.event_id.in_(ids)).order_by(CorrectionRow.id)
        ):
            before.setdefault(c.event_id, c.old_plate)  # the first correction holds what the gate read
    return [_line(r, r.id in crops, (before[r.id] or "") if r.id in before else None) for r in rows]


def _line(r: EventRow, crop: bool, corrected_from: str | None) -> EventLine:
    return EventLine(
        r.id, _aware(r.ts), r.lot_id, r.gate_id, r.direction, r.plate, r.confidence, r.action, r.reason, crop,
        corrected_from,
    )  # fmt: skip


def event_line(db: Engine, event_id: str) -> EventLine | None:
    if not EVENT_ID.match(event_id):
        return None
    with Session(db) as s:
        row = s.get(EventRow, event_id)
        return _event_lines(s, [row])[0] if row else None


def plate_history(db: Engine, plate: str, lots: frozenset[str] | None, limit: int = HISTORY_ROWS) -> History:
    """A plate's visits and events in ``lots`` (None: every lot), newest first."""
    found = [v for v in visits().visits(plate, limit=limit) if lots is None or v.lot_id in lots]
    with Session(db) as s:
        query = select(EventRow).where(EventRow.plate == plate)
        if lots is not None:
            query = query.where(EventRow.lot_id.in_(sorted(lots)))
        events = _event_lines(
            s, s.scalars(query.order_by(EventRow.ts.desc(), EventRow.id.desc()).limit(limit))
        )
        by_id = {e.id: e for e in events}
        wanted = {i for v in found for i in (v.entry_event_id, v.exit_event_id) if i and i not in by_id}
        if wanted:
            by_id.update(
                {e.id: e for e in _event_lines(s, s.scalars(select(EventRow).where(EventRow.id.in_(wanted))))}
            )
        away_query = select(CorrectionRow).where(CorrectionRow.old_plate == plate)
        if lots is not None:
            away_query = away_query.where(CorrectionRow.lot_id.in_(sorted(lots)))
        away = [
            CorrectionLine(c.event_id, c.lot_id, c.old_plate, c.new_plate, c.actor, c.reason, _aware(c.ts))
            for c in s.scalars(away_query.order_by(CorrectionRow.id.desc()).limit(limit))
        ]
    lines = [VisitLine(v, by_id.get(v.entry_event_id or ""), by_id.get(v.exit_event_id or "")) for v in found]
    return History(plate, lines, events, away)


# -- correcting a misread ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Corrected:
    correction: CorrectionLine
    lot_occupied: int | None  # the lot's count afterwards
    rebased: str | None  # the occupancy audit's reason, when the correction re-based the lot
    refreshed: bool  # the collectors were asked to re-publish

    def to_json(self) -> dict[str, object]:
        return {**self.correction.to_json(), "lot_occupied": self.lot_occupied, "rebased": self.rebased,
                "refreshed": self.refreshed}  # fmt: skip


def check_reason(reason: str, limit: int = REASON_MAX) -> str:
    reason = reason.strip()
    if not reason or len(reason) > limit:
        raise ActionRefused(
            400, f"reason: say why in 1-{limit} characters", _("Say why (1 to %(n)s characters).", n=limit)
        )
    return reason


def correct(user: User, ev: EventLine, new_plate: str, reason: str) -> Corrected:
    """Correct an event's plate (the caller checked the role and the event's lot); audited.
    :class:`ActionRefused` when it cannot be done, also audited."""
    target = f"event:{ev.id}"
    try:
        reason = check_reason(reason)
        if site_config(current_app) is None:
            raise ActionRefused(
                503,
                "correcting plates needs the site's lots: set collector_config in the dashboard config",
                _("Correcting plates needs the site configuration (collector_config) on this dashboard."),
            )
        result = visits().correct_plate(ev.id, new_plate, user.name, reason)
    except ActionRefused as err:
        audit("plate.correct", target=target, detail=f"{new_plate[:16]}: {err.message}", result="failed")
        raise
    except InvalidPlate as err:
        audit("plate.correct", target=target, detail=str(err), result="failed")
        already = "already reads" in str(err)
        text = (
            _("This event already reads %(plate)s.", plate=ev.plate or "")
            if already
            else _(
                "%(text)s is not a plate: use letters, digits and Chinese characters (e.g. 鄂A12345).",
                text=new_plate,
            )
        )
        raise ActionRefused(400, str(err), text) from None
    except EventNotFound as err:
        raise ActionRefused(404, str(err), _("There is no such event.")) from None
    except (VisitsError, ValueError) as err:
        audit("plate.correct", target=target, detail=str(err), result="failed")
        raise ActionRefused(400, str(err)) from None
    audit(
        "plate.correct", target=target,
        detail=f"{result.old_plate or '-'} -> {result.new_plate} in {result.lot_id}: {reason}",
    )  # fmt: skip
    refreshed = refresh(lot_ids=[result.lot_id])
    line = CorrectionLine(
        ev.id, result.lot_id, result.old_plate, result.new_plate, user.name, reason, result.ts
    )
    return Corrected(
        line,
        result.lot.occupied if result.lot else None,
        result.adjustment.reason if result.adjustment else None,
        refreshed,
    )


def correction_of(db: Engine, event_id: str) -> CorrectionLine | None:
    """The newest correction of an event."""
    with Session(db) as s:
        c = s.scalars(
            select(CorrectionRow).where(CorrectionRow.event_id == event_id).order_by(CorrectionRow.id.desc())
        ).first()
        return (
            CorrectionLine(c.event_id, c.lot_id, c.old_plate, c.new_plate, c.actor, c.reason, _aware(c.ts))
            if c
            else None
        )


# -- texts --------------------------------------------------------------------------------------------------
def duration_text(td: timedelta | None) -> str:
    """ "2 h 05 min", "12 min", "3 d 4 h" in the page's language; "—" without one."""
    if td is None:
        return "—"
    minutes = max(int(td.total_seconds() // 60), 0)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return _("%(d)s d %(h)s h", d=days, h=hours)
    if hours:
        return _("%(h)s h %(m)02d min", h=hours, m=mins)
    return _("%(m)s min", m=mins)


def status_texts() -> dict[str, str]:
    return {
        "open": _("Inside"),
        "closed": _("Left"),
        "presumed_exited": _("Presumed gone"),
        "orphan_exit": _("Exit without entry"),
    }


def note_texts() -> dict[str, str]:
    return {
        "stale": _("no exit seen for too long"),
        "re_entered": _("entered again before an exit was seen"),
        "late_entry": _("entry arrived late"),
        "late_exit": _("exit arrived late"),
    }


# -- pages --------------------------------------------------------------------------------------------------
@bp.get("/plates")
def search() -> ResponseReturnValue:
    user = operator()
    raw = request.args.get("q", "").strip()[:64]
    error, matches, history, plate = None, [], None, None
    status = 200
    if raw:
        try:
            q = normalise_query(raw)
        except ActionRefused as err:
            error, status = err.text, err.status
        else:
            matches = find_plates(engine(), q, user.lots)
            chosen = request.args.get("plate", "")
            picks = [m.plate for m in matches]
            plate = (
                chosen if chosen in picks else (q if q in picks else (picks[0] if len(picks) == 1 else None))
            )
            if plate is not None:
                history = plate_history(engine(), plate, user.lots)
    corrected = None
    corrected_id = request.args.get("corrected", "")
    if corrected_id and EVENT_ID.match(corrected_id):
        found = correction_of(engine(), corrected_id)
        if found is not None and can_see_lot(user, found.lot_id):
            corrected = found
    return render_template(
        "ops/plates.html",
        query=raw,
        error=error,
        matches=matches,
        plate=plate,
        history=history,
        corrected=corrected,
        old_history=plate_history(engine(), corrected.old_plate, frozenset([corrected.lot_id]))
        if corrected and corrected.old_plate
        else None,
        can_correct=role_at_least(user, "operator"),
        lots=scope_lots(user),
        statuses=status_texts(),
        notes=note_texts(),
        duration=duration_text,
        now=datetime.now(UTC),
    ), status


@bp.route("/plates/events/<event_id>/correct", methods=["GET", "POST"])
@role_required("operator")
def correct_page(event_id: str) -> ResponseReturnValue:
    user = operator()
    ev = event_line(engine(), event_id)
    if ev is None:
        abort(404, description=f"no event {event_id!r}")
    require_lot(ev.lot_id)
    form = {"plate": ev.plate or "", "reason": ""}
    error = None
    if request.method == "POST":
        form = {"plate": request.form.get("plate", "")[:32], "reason": request.form.get("reason", "")[:1000]}
        try:
            done = correct(user, ev, form["plate"], form["reason"])
        except ActionRefused as err:
            if err.status == 404:
                abort(404, description=err.message)
            error = err.text
        else:
            return redirect(url_for("plates.search", q=done.correction.new_plate, corrected=ev.id), code=303)
    return render_template(
        "ops/plate_correct.html", ev=ev, form=form, error=error, reason_max=REASON_MAX,
        lots=scope_lots(user), has_site=site_config(current_app) is not None,
    ), (400 if error else 200)  # fmt: skip


@bp.get("/plates/crops/<event_id>.jpg")
def crop(event_id: str) -> Response:
    """The plate crop a gate sent with an event (its lot in scope)."""
    if not EVENT_ID.match(event_id):
        abort(404, description="not an event id")
    with Session(engine()) as s:
        found = s.execute(
            select(EventRow.lot_id, SnapshotRow.jpeg).join(SnapshotRow, SnapshotRow.event_id == EventRow.id)
            .where(EventRow.id == event_id)
        ).first()  # fmt: skip
    if found is None:
        abort(404, description=f"no plate crop for event {event_id!r}")
    require_lot(found[0])
    if not bytes(found[1]).startswith(JPEG_MAGIC):
        abort(404, description=f"the plate crop of event {event_id!r} is not a JPEG image")
    return Response(bytes(found[1]), mimetype="image/jpeg")
