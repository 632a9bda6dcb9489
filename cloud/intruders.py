"""Inspection areas: repeat entries are warned, then locked out at every lane of the station;
operators review and unlock, every step audited; monthly pass rates are watched against the peers.

Entries. Every vehicle seen at an entry lane of a station (a gate event whose ``lot_id`` is the
station's lane lot, direction ``entry``; refused attempts count too unless ``count_refused`` is
off) is an entry of its plate and, when the lane verified a credential, of its person code.

Rules, per station and separately for plates and person codes: the entries of one subject are
counted in a sliding window of ``window_h`` hours (default 24). Reaching ``warn_at`` raises a
warning, reaching ``lock_at`` a lock. A sliding window, not the calendar day, so that midnight is
no loophole (23:50 and 00:10 are two visits in one day) and no time zone is involved. A person
code seen in ``person_vehicles_flag_at`` different plates within the window is flagged
(``person_multi_vehicle``) for review. Only entries after the subject's last unlock count, so an
unlocked plate starts again from zero.

Alerts: ``warn`` and ``flag`` start ``open`` and become ``reviewed``; a ``lock`` starts
``locked``, may be ``reviewed`` (the lock holds) and ends ``unlocked``. While a lock holds, its
plate (or person code) is in the station's retained :class:`~protocol.LotLists` and every lane
refuses it. Each step (automatic warn, flag and lock; an operator's review and unlock) writes an
audit row: who, what, when, why.

Pass rates: per station and calendar month (in ``pass_rates.timezone``) from the
:class:`~protocol.InspectionResult` messages. A month's peer band is the median of the rated
stations' rates ± ``k`` scaled MADs (at least ``min_spread``); a station above the band, or above
``max_rate``, for ``months`` consecutive months is flagged: too good to be true.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, case, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from cloud.config import CollectorConfig, EntryRule, StationConfig
from cloud.events_store import Base
from protocol import Action, Direction, GateEvent, InspectionResult, LotLists
from protocol.messages import utc_now

logger = logging.getLogger(__name__)

SYSTEM = "system"  # the actor of automatic steps in the audit trail
MAD_SCALE = 1.4826  # scales the median absolute deviation to a standard deviation for normal data
IN_FORCE = ("locked", "reviewed")  # statuses of a lock alert that still locks

SubjectKind = Literal["plate", "person"]
AlertKind = Literal["warn", "lock", "flag"]


class IntrudersError(Exception):
    """Base of this module's errors."""


class UnknownStation(IntrudersError, LookupError):
    def __init__(self, station_id: str) -> None:
        self.station_id = station_id
        super().__init__(f"no inspection station {station_id!r} is configured")


class AlertNotFound(IntrudersError, LookupError):
    def __init__(self, alert_id: int) -> None:
        self.alert_id = alert_id
        super().__init__(f"no alert {alert_id}")


class AlertStateError(IntrudersError, ValueError):
    def __init__(self, alert_id: int, status: str, wanted: str) -> None:
        self.alert_id, self.status = alert_id, status
        super().__init__(f"alert {alert_id} is {status}: {wanted}")


# -- tables (on the event store's Base; made by cloud/migrations, revision 0002) --------------------
class StationRow(Base):
    """One row per configured station; locked while its entries are judged (several collectors)."""

    __tablename__ = "inspection_stations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    lot_id: Mapped[str] = mapped_column(String(64))


class EntryRow(Base):
    """A vehicle seen at an entry lane of a station, once per gate event."""

    __tablename__ = "inspection_entries"
    __table_args__ = (
        Index("inspection_entries_plate", "station_id", "plate", "ts"),
        Index("inspection_entries_person", "station_id", "person", "ts"),
    )

    event_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    station_id: Mapped[str] = mapped_column(String(64))
    gate_id: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    plate: Mapped[str | None] = mapped_column(String(16), nullable=True)
    person: Mapped[str | None] = mapped_column(String(64), nullable=True)
    admitted: Mapped[bool] = mapped_column(Boolean)


class AlertRow(Base):
    __tablename__ = "inspection_alerts"
    __table_args__ = (
        Index("inspection_alerts_subject", "station_id", "subject_kind", "subject"),
        Index("inspection_alerts_status", "station_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    station_id: Mapped[str] = mapped_column(String(64))
    subject_kind: Mapped[str] = mapped_column(String(8))  # plate | person
    subject: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))  # warn | lock | flag
    rule: Mapped[str] = mapped_column(String(32))
    count: Mapped[int] = mapped_column(Integer)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the entry that crossed the line
    event_id: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(String(400))
    status: Mapped[str] = mapped_column(String(10))  # open | locked | reviewed | unlocked
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditRow(Base):
    """Every step taken on an alert, automatic or by an operator, in the order taken."""

    __tablename__ = "inspection_audit"
    __table_args__ = (Index("inspection_audit_station", "station_id", "subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("inspection_alerts.id"), index=True)
    station_id: Mapped[str] = mapped_column(String(64))
    subject_kind: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(8))  # warn | lock | flag | review | unlock
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    why: Mapped[str] = mapped_column(String(400))
    status: Mapped[str] = mapped_column(String(10))  # the alert's status after the step


class ResultRow(Base):
    __tablename__ = "inspection_results"
    __table_args__ = (Index("inspection_results_month", "station_id", "month"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    station_id: Mapped[str] = mapped_column(String(64))
    gate_id: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM in the configured time zone
    plate: Mapped[str] = mapped_column(String(16))
    booking: Mapped[str | None] = mapped_column(String(64), nullable=True)
    person: Mapped[str | None] = mapped_column(String(64), nullable=True)
    passed: Mapped[bool] = mapped_column(Boolean)


# -- what callers get back -------------------------------------------------------------------------
@dataclass(frozen=True)
class Alert:
    id: int
    station_id: str
    subject_kind: str
    subject: str
    kind: str
    rule: str  # entries | person_multi_vehicle
    count: int  # entries (or distinct plates, for a flag) in the window
    ts: datetime  # time of the entry that crossed the threshold
    event_id: str
    detail: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class AuditEntry:
    id: int
    alert_id: int
    station_id: str
    subject_kind: str
    subject: str
    action: str
    actor: str
    at: datetime
    why: str
    status: str


@dataclass(frozen=True)
class Change:
    """What one call changed at a station: alerts raised or moved on, and, when its locks changed,
    the station's lists for the collector to publish (retained) on ``topics.lot_lists(lot_id)``."""

    station_id: str
    lot_id: str
    alerts: list[Alert]
    lists: LotLists | None


@dataclass(frozen=True)
class MonthRate:
    station_id: str
    month: str  # YYYY-MM
    results: int
    passed: int
    rate: float
    rated: bool  # enough results to be judged (pass_rates.min_results)
    median: float | None  # of the month's rated stations; None without enough peers
    band_low: float | None
    band_high: float | None
    above: bool  # above the band or above max_rate
    run: int  # consecutive months above, up to and including this one
    flagged: bool  # run >= pass_rates.months


def _aware(ts: datetime) -> datetime:
    """SQLite hands datetimes back naive; every stored time is UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _text(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if not value or len(value) > limit:
        raise ValueError(f"{what} must be 1..{limit} characters")
    return value


def _alert(row: AlertRow) -> Alert:
    return Alert(
        row.id, row.station_id, row.subject_kind, row.subject, row.kind, row.rule, row.count,
        _aware(row.ts), row.event_id, row.detail, row.status, _aware(row.created_at),
    )  # fmt: skip


def _audit(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        row.id, row.alert_id, row.station_id, row.subject_kind, row.subject, row.action, row.actor,
        _aware(row.at), row.why, row.status,
    )  # fmt: skip


class InspectionAreas:
    """Entries, alerts, locks, audit and pass rates of the configured inspection stations.

    The tables are the event store's: ``EventStore(url)`` brings the schema up to date (Alembic,
    cloud/migrations) before this is made on its engine. ``clock`` gives the time of automatic
    steps in the audit trail (tests pass a scripted one)."""

    def __init__(
        self, engine: Engine, cfg: CollectorConfig, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.engine = engine
        self.cfg = cfg
        self.clock = clock
        self.stations = {st.id: st for st in cfg.stations}
        self._by_lot = {st.lane_lot: st for st in cfg.stations}
        self._zone = ZoneInfo(cfg.pass_rates.timezone)
        with Session(engine) as s, s.begin():
            for st in cfg.stations:
                s.merge(StationRow(id=st.id, name=st.name, lot_id=st.lane_lot))

    # -- entries -> alerts ---------------------------------------------------------------------
    def on_events(self, events: Sequence[GateEvent]) -> list[Change]:
        """Record the stations' lane entries among ``events`` and apply the rules. Idempotent by
        event id: pass every validated event of a batch (repeats included) before acknowledging."""
        entries = [ev for ev in events if self._is_entry(ev)]
        if not entries:
            return []
        station_ids = sorted({self._by_lot[ev.lot_id].id for ev in entries})
        changes: list[Change] = []
        with Session(self.engine) as s, s.begin():
            fresh = self._insert_entries(s, entries)  # writes first: SQLite takes its write lock here
            s.scalars(  # one judge per station at a time, in id order (several collectors)
                select(StationRow.id)
                .where(StationRow.id.in_(station_ids))
                .order_by(StationRow.id)
                .with_for_update()
            ).all()
            for station_id in station_ids:
                new = [ev for ev in fresh if self._by_lot[ev.lot_id].id == station_id]
                alerts = self._judge(s, self.stations[station_id], new)
                if alerts:
                    changes.append(Change(station_id, self.stations[station_id].lane_lot, alerts, None))
        return [self._with_lists(c) if any(a.kind == "lock" for a in c.alerts) else c for c in changes]

    def _is_entry(self, ev: GateEvent) -> bool:
        return (
            ev.lot_id in self._by_lot
            and ev.direction is Direction.ENTRY
            and (ev.plate is not None or ev.person is not None)
        )

    def _insert_entries(self, s: Session, events: list[GateEvent]) -> list[GateEvent]:
        """INSERT ... ON CONFLICT DO NOTHING: the events not recorded before, in time order."""
        insert = sqlite_insert if self.engine.dialect.name == "sqlite" else pg_insert
        rows = {
            ev.id: {
                "event_id": ev.id, "station_id": self._by_lot[ev.lot_id].id, "gate_id": ev.gate_id,
                "ts": ev.ts, "plate": ev.plate, "person": ev.person,
                "admitted": ev.decision.action is Action.OPEN,
            }
            for ev in events
        }  # fmt: skip
        stmt = (
            insert(EntryRow).on_conflict_do_nothing(index_elements=["event_id"]).returning(EntryRow.event_id)
        )
        inserted = set(s.execute(stmt, list(rows.values())).scalars().all())
        fresh = {ev.id: ev for ev in events if ev.id in inserted}
        return sorted(fresh.values(), key=lambda ev: (ev.ts, ev.id))

    def _judge(self, s: Session, st: StationConfig, new: list[GateEvent]) -> list[Alert]:
        subjects: dict[tuple[SubjectKind, str], datetime] = {}
        for ev in new:
            keys: list[tuple[SubjectKind, str | None]] = [("plate", ev.plate), ("person", ev.person)]
            for kind, subject in keys:
                if subject is not None:
                    subjects[kind, subject] = min(subjects.get((kind, subject), ev.ts), ev.ts)
        alerts: list[Alert] = []
        for (kind, subject), since in sorted(subjects.items()):
            alerts += self._sweep(s, st, kind, subject, since)
        return alerts

    def _sweep(
        self, s: Session, st: StationConfig, kind: SubjectKind, subject: str, since: datetime
    ) -> list[Alert]:
        """Slide the window over the subject's entries from the first new one on; raise each
        threshold the first time a window reaches it (once per window, never while locked)."""
        rule: EntryRule = st.plates if kind == "plate" else st.persons
        window = timedelta(hours=st.window_h)
        reset = self._last_unlock(s, st.id, kind, subject)
        entries = self._entries(s, st, kind, subject, since - window, reset)
        earlier = self._alerts_of(s, st.id, kind, subject, reset)
        locked = any(a.kind == "lock" and a.status in IN_FORCE for a in earlier)
        raised: dict[str, list[datetime]] = {
            k: [_aware(a.ts) for a in earlier if a.kind == k] for k in ("warn", "flag")
        }
        out: list[Alert] = []
        left = 0
        for i, entry in enumerate(entries):
            ts = _aware(entry.ts)
            while _aware(entries[left].ts) <= ts - window:
                left += 1
            if ts < since:
                continue
            count = i - left + 1
            if count >= rule.lock_at and not locked:
                out.append(self._raise(s, st, kind, subject, "lock", count, entry))
                locked = True
            elif count >= rule.warn_at and not locked and not _near(raised["warn"], ts, window):
                out.append(self._raise(s, st, kind, subject, "warn", count, entry))
                raised["warn"].append(ts)
            if kind == "person":
                plates = sorted({e.plate for e in entries[left : i + 1] if e.plate is not None})
                if len(plates) >= st.person_vehicles_flag_at and not _near(raised["flag"], ts, window):
                    out.append(self._raise(s, st, kind, subject, "flag", len(plates), entry, plates))
                    raised["flag"].append(ts)
        return out

    def _entries(
        self,
        s: Session,
        st: StationConfig,
        kind: SubjectKind,
        subject: str,
        start: datetime,
        reset: datetime | None,
    ) -> list[EntryRow]:
        column = EntryRow.plate if kind == "plate" else EntryRow.person
        query = select(EntryRow).where(
            EntryRow.station_id == st.id, column == subject, EntryRow.ts > start.astimezone(UTC)
        )
        if reset is not None:
            query = query.where(EntryRow.ts > reset)
        if not st.count_refused:
            query = query.where(EntryRow.admitted.is_(True))
        return list(s.scalars(query.order_by(EntryRow.ts, EntryRow.event_id)))

    @staticmethod
    def _last_unlock(s: Session, station_id: str, kind: str, subject: str) -> datetime | None:
        last = s.scalar(
            select(func.max(AuditRow.at)).where(
                AuditRow.station_id == station_id,
                AuditRow.subject_kind == kind,
                AuditRow.subject == subject,
                AuditRow.action == "unlock",
            )
        )
        return _aware(last) if last is not None else None

    @staticmethod
    def _alerts_of(
        s: Session, station_id: str, kind: str, subject: str, reset: datetime | None
    ) -> list[AlertRow]:
        query = select(AlertRow).where(
            AlertRow.station_id == station_id, AlertRow.subject_kind == kind, AlertRow.subject == subject
        )
        if reset is not None:
            query = query.where(AlertRow.created_at > reset)
        return list(s.scalars(query))

    def _raise(
        self,
        s: Session,
        st: StationConfig,
        kind: SubjectKind,
        subject: str,
        what: AlertKind,
        count: int,
        entry: EntryRow,
        plates: Sequence[str] = (),
    ) -> Alert:
        when = _aware(entry.ts).isoformat(timespec="seconds")
        rule = "person_multi_vehicle" if what == "flag" else "entries"
        if what == "flag":
            why = (
                f"{kind} {subject} arrived in {count} vehicles ({', '.join(plates)}) within {st.window_h:g} h"
            )
            why += f" (flag at {st.person_vehicles_flag_at})"
        else:
            threshold = getattr(st.plates if kind == "plate" else st.persons, f"{what}_at")
            why = f"{count} entries of {kind} {subject} within {st.window_h:g} h ({what} at {threshold})"
        why += f" at station {st.id}, the last at {when} on lane {entry.gate_id}"
        now = self.clock().astimezone(UTC)
        status = "locked" if what == "lock" else "open"
        row = AlertRow(
            station_id=st.id, subject_kind=kind, subject=subject, kind=what, rule=rule, count=count,
            ts=_aware(entry.ts), event_id=entry.event_id, detail=why[:400], status=status, created_at=now,
        )  # fmt: skip
        s.add(row)
        s.flush()
        self._note(s, row, what, SYSTEM, now, why)
        logger.warning("inspection %s %s: %s", what, row.id, why)
        return _alert(row)

    @staticmethod
    def _note(s: Session, row: AlertRow, action: str, actor: str, at: datetime, why: str) -> None:
        s.add(
            AuditRow(
                alert_id=row.id, station_id=row.station_id, subject_kind=row.subject_kind,
                subject=row.subject, action=action, actor=actor, at=at, why=why[:400], status=row.status,
            )
        )  # fmt: skip

    # -- operators -----------------------------------------------------------------------------
    def review(self, alert_id: int, operator: str, note: str, *, at: datetime | None = None) -> Alert:
        """An operator has looked at an open or locked alert. A lock stays in force (status
        ``reviewed``) until :meth:`unlock`."""
        operator, note = _text(operator, "operator", 64), _text(note, "note", 400)
        with Session(self.engine) as s, s.begin():
            row = self._alert_row(s, alert_id)
            if row.status not in ("open", "locked"):
                raise AlertStateError(alert_id, row.status, "only open or locked alerts can be reviewed")
            row.status = "reviewed"
            self._note(s, row, "review", operator, (at or utc_now()).astimezone(UTC), note)
            return _alert(row)

    def unlock(self, alert_id: int, operator: str, reason: str, *, at: datetime | None = None) -> Change:
        """Lift a lock; entries before now no longer count for its subject. Returns the station's
        new lists for the collector to publish (it also re-publishes them every ``republish_s``)."""
        operator, reason = _text(operator, "operator", 64), _text(reason, "reason", 400)
        with Session(self.engine) as s, s.begin():
            row = self._alert_row(s, alert_id)
            if row.kind != "lock" or row.status not in IN_FORCE:
                raise AlertStateError(
                    alert_id, f"{row.status} {row.kind}", "only a lock in force can be unlocked"
                )
            row.status = "unlocked"
            self._note(s, row, "unlock", operator, (at or utc_now()).astimezone(UTC), reason)
            alert = _alert(row)
        logger.warning("inspection lock %s lifted by %s: %s", alert_id, operator, reason)
        return self._with_lists(
            Change(alert.station_id, self._station(alert.station_id).lane_lot, [alert], None)
        )

    @staticmethod
    def _alert_row(s: Session, alert_id: int) -> AlertRow:
        row = s.get(AlertRow, alert_id, with_for_update=True)
        if row is None:
            raise AlertNotFound(alert_id)
        return row

    # -- lists for the lanes -------------------------------------------------------------------
    def locked(self, station_id: str) -> tuple[list[str], list[str]]:
        """The plates and the person codes locked at a station now, sorted."""
        self._station(station_id)
        with Session(self.engine) as s:
            rows = s.execute(
                select(AlertRow.subject_kind, AlertRow.subject)
                .where(
                    AlertRow.station_id == station_id, AlertRow.kind == "lock", AlertRow.status.in_(IN_FORCE)
                )
                .distinct()
            ).all()
        plates = sorted(subject for kind, subject in rows if kind == "plate")
        persons = sorted(subject for kind, subject in rows if kind == "person")
        return plates, persons

    def station_lists(self, station_id: str) -> LotLists:
        """The retained lists for every lane of the station: the lane lot's configured lists (if
        it is also a ``[[lots]]`` entry) plus every lock in force."""
        st = self._station(station_id)
        plates, persons = self.locked(station_id)
        lot = next((lot for lot in self.cfg.lots if lot.id == st.lane_lot), None)
        return LotLists(
            lot_id=st.lane_lot,
            ts=utc_now(),
            allow=lot.allow if lot else [],
            deny=lot.deny if lot else [],
            locked=sorted(set(plates) | set(lot.locked if lot else ())),
            locked_persons=persons,
        )

    @property
    def lane_lots(self) -> set[str]:
        """The lot ids whose lists this module publishes (the stations' lane lots)."""
        return set(self._by_lot)

    def all_lists(self) -> list[LotLists]:
        """Every station's lists (on connect and on the periodic re-publish)."""
        return [self.station_lists(station_id) for station_id in sorted(self.stations)]

    def _with_lists(self, change: Change) -> Change:
        return Change(change.station_id, change.lot_id, change.alerts, self.station_lists(change.station_id))

    def _station(self, station_id: str) -> StationConfig:
        try:
            return self.stations[station_id]
        except KeyError:
            raise UnknownStation(station_id) from None

    # -- reading -------------------------------------------------------------------------------
    def alerts(
        self,
        station_id: str | None = None,
        *,
        status: Iterable[str] | None = None,
        subject: str | None = None,
    ) -> list[Alert]:
        """Alerts, oldest first, optionally of one station, with given statuses, or of one subject."""
        query = select(AlertRow)
        if station_id is not None:
            query = query.where(AlertRow.station_id == station_id)
        if status is not None:
            query = query.where(AlertRow.status.in_(list(status)))
        if subject is not None:
            query = query.where(AlertRow.subject == subject)
        with Session(self.engine) as s:
            return [_alert(r) for r in s.scalars(query.order_by(AlertRow.id))]

    def audit(
        self, station_id: str | None = None, *, subject: str | None = None, alert_id: int | None = None
    ) -> list[AuditEntry]:
        """The audit trail in the order the steps were taken."""
        query = select(AuditRow)
        if station_id is not None:
            query = query.where(AuditRow.station_id == station_id)
        if subject is not None:
            query = query.where(AuditRow.subject == subject)
        if alert_id is not None:
            query = query.where(AuditRow.alert_id == alert_id)
        with Session(self.engine) as s:
            return [_audit(r) for r in s.scalars(query.order_by(AuditRow.id))]

    # -- inspection results and pass rates -----------------------------------------------------
    def on_results(self, results: Sequence[InspectionResult]) -> int:
        """Store inspection results once by id; returns how many were new. ``station`` may name
        the station or its lane lot."""
        if not results:
            return 0
        rows = {r.id: self._result_row(r) for r in results}
        insert = sqlite_insert if self.engine.dialect.name == "sqlite" else pg_insert
        stmt = insert(ResultRow).on_conflict_do_nothing(index_elements=["id"]).returning(ResultRow.id)
        with Session(self.engine) as s, s.begin():
            return len(s.execute(stmt, list(rows.values())).scalars().all())

    def on_result(self, result: InspectionResult) -> bool:
        return self.on_results([result]) == 1

    def _result_row(self, r: InspectionResult) -> dict[str, object]:
        st = self.stations.get(r.station) or self._by_lot.get(r.station)
        return {
            "id": r.id, "station_id": st.id if st else r.station, "gate_id": r.gate_id, "ts": r.ts,
            "month": r.ts.astimezone(self._zone).strftime("%Y-%m"), "plate": r.plate,
            "booking": r.booking, "person": r.person, "passed": r.result == "pass",
        }  # fmt: skip

    def pass_rates(self, since: str | None = None, until: str | None = None) -> list[MonthRate]:
        """Per station and month (``YYYY-MM``, inclusive bounds): the pass rate, the month's peer
        band and whether the station has sat above it for ``pass_rates.months`` months running.
        A month without a rated result breaks a station's run."""
        query = select(
            ResultRow.station_id,
            ResultRow.month,
            func.count(),
            func.sum(case((ResultRow.passed.is_(True), 1), else_=0)),
        ).group_by(ResultRow.station_id, ResultRow.month)
        if since is not None:
            query = query.where(ResultRow.month >= since)
        if until is not None:
            query = query.where(ResultRow.month <= until)
        with Session(self.engine) as s:
            counts = {(st, month): (int(n), int(p or 0)) for st, month, n, p in s.execute(query)}
        out: list[MonthRate] = []
        runs: dict[str, tuple[str, int]] = {}  # station -> (last month above, run length)
        for month in sorted({month for _st, month in counts}):
            out += self._month(month, {st: c for (st, m), c in counts.items() if m == month}, runs)
        return out

    def _month(
        self, month: str, counts: dict[str, tuple[int, int]], runs: dict[str, tuple[str, int]]
    ) -> list[MonthRate]:
        cfg = self.cfg.pass_rates
        rates = {st: p / n for st, (n, p) in counts.items()}
        rated = sorted(st for st, (n, _p) in counts.items() if n >= cfg.min_results)
        median = low = high = None
        if len(rated) >= cfg.min_stations:
            values = [rates[st] for st in rated]
            median = statistics.median(values)
            spread = max(
                cfg.k * MAD_SCALE * statistics.median(abs(v - median) for v in values), cfg.min_spread
            )
            low, high = max(median - spread, 0.0), min(median + spread, 1.0)
        out = []
        for st in sorted(counts):
            rate = rates[st]
            is_rated = st in rated
            above = is_rated and (
                (high is not None and rate > high) or (cfg.max_rate is not None and rate > cfg.max_rate)
            )
            run = 0
            if above:
                last, length = runs.get(st, ("", 0))
                run = length + 1 if last == _previous_month(month) else 1
                runs[st] = (month, run)
            n, p = counts[st]
            out.append(
                MonthRate(st, month, n, p, rate, is_rated, median, low, high, above, run, run >= cfg.months)
            )
        return out


def _near(times: Iterable[datetime], ts: datetime, window: timedelta) -> bool:
    """One of ``times`` lies within ``window`` of ``ts`` (that window already has its alert)."""
    return any(abs(t - ts) < window for t in times)


def _previous_month(month: str) -> str:
    year, mon = int(month[:4]), int(month[5:7])
    return f"{year - 1}-12" if mon == 1 else f"{year:04d}-{mon - 1:02d}"
