"""Guidance screens that never lie: what a sign shows, how stale data is caught, operator overrides.

A sign shows ``text``, worked out per row from the lot's count and the screen's ``format``:

- **mode** (operator override, below): ``full``, ``closed`` and ``blank`` show the full text, the
  closed text or nothing, whatever the data says; ``auto`` lets the data decide.
- **stale** (mode auto): when no gate of the lot has been heard (an event or a heartbeat) for the
  lot's ``stale_after_s``, the row shows the stale text ("--"), never the last number: a count
  nobody confirms may be wrong by any amount, and a driver sent to a full lot by a frozen "12"
  is exactly what a guidance sign must not do.
- **number**: ``free - offset`` (spaces held back, e.g. reserved), the full text at 0, clamped to
  ``clamp`` and to the ``digits`` the sign has ("999" or "99+"), padded to ``digits``.

Freshness. The age of a lot's data is the time since a gate of the lot last confirmed it: the
newest event stored, or the newest heartbeat (its ``ts`` minus the age of the oldest event still
in its outbox, since those are not counted yet). Times are the gates' own (the same clocks the
event times come from); a heartbeat the broker kept while the collector was away is as old as it
says, not as new as its arrival. A heartbeat counts only once the batch it came in is stored:
while the database is away, nothing is confirmed and the lots go stale on the signs.

Overrides live in the database (``screen_overrides``, revision 0004), one row per change with who,
why, when and an optional expiry, so the table is also the audit trail. The newest row of a screen
(``lot_id`` NULL) or of one row of it decides; ``auto`` ends an override, and so does its expiry.
A screen-wide mode other than auto wins over the rows' own (a blanked sign shows nothing at all).
Set them with :func:`set_override` or ``parkgate screens override``; the collector re-reads them
every second and re-publishes the screens they change.

With several collectors on a shared subscription, events stored by any of them count (the lot's
``last_event_ts`` in the shared database dates it whenever a collector reads the lot), but each
hears only its share of the heartbeats, so a quiet lot is judged from fewer of them: give
``stale_after_s`` room for that, several heartbeat intervals (the gates' default is 30 s).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import DateTime, Index, Integer, String, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from cloud.config import CollectorConfig, LotConfig, ScreenConfig, ScreenFormat, ScreenLot
from cloud.events_store import Base, LotState
from protocol import GateEvent, GateStatus, ScreenRow
from protocol.messages import ScreenMode, ScreenState, utc_now

logger = logging.getLogger(__name__)

MODES: tuple[ScreenMode, ...] = ("auto", "full", "closed", "blank")
ARROW_CHARS = {"left": "←", "right": "→", "up": "↑", "down": "↓", "none": ""}
MAX_REASON = 200


class ScreenError(Exception):
    """Base of this module's errors."""


class UnknownScreen(ScreenError, LookupError):
    def __init__(self, screen_id: str) -> None:
        self.screen_id = screen_id
        super().__init__(f"no screen {screen_id!r} is configured")


class LotNotOnScreen(ScreenError, LookupError):
    def __init__(self, screen_id: str, lot_id: str) -> None:
        self.screen_id, self.lot_id = screen_id, lot_id
        super().__init__(f"screen {screen_id!r} has no row for lot {lot_id!r}")


class OverrideError(ScreenError, ValueError):
    """An override that cannot be set as asked (bad mode, reason, expiry)."""


# -- table (on the event store's Base; made by cloud/migrations, revision 0004) -------------------------
class ScreenOverrideRow(Base):
    """One operator change of a screen's (``lot_id`` NULL) or a row's mode; the newest per key decides."""

    __tablename__ = "screen_overrides"
    __table_args__ = (Index("screen_overrides_key", "screen_id", "lot_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    screen_id: Mapped[str] = mapped_column(String(64))
    lot_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # NULL: the whole screen
    mode: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(MAX_REASON))
    set_by: Mapped[str] = mapped_column(String(64))
    set_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True)
class Override:
    id: int
    screen_id: str
    lot_id: str | None
    mode: ScreenMode
    reason: str
    set_by: str
    set_at: datetime
    until: datetime | None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "screen": self.screen_id,
            "lot": self.lot_id,
            "mode": self.mode,
            "reason": self.reason,
            "set_by": self.set_by,
            "set_at": self.set_at.isoformat(),
            "until": self.until.isoformat() if self.until else None,
        }


OverrideKey = tuple[str, str | None]  # (screen_id, lot_id or None for the whole screen)


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)  # SQLite gives naive UTC back


def _override(row: ScreenOverrideRow) -> Override:
    mode = cast(ScreenMode, row.mode if row.mode in MODES else "auto")
    return Override(
        row.id, row.screen_id, row.lot_id, mode,
        row.reason, row.set_by, _aware(row.set_at), _aware(row.until) if row.until else None,
    )  # fmt: skip


def set_override(
    engine: Engine,
    cfg: CollectorConfig,
    screen_id: str,
    mode: str,
    *,
    reason: str,
    set_by: str,
    lot_id: str | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
) -> Override:
    """Record an operator's mode for a screen (or one lot's row of it). ``auto`` ends an override.
    Raises UnknownScreen, LotNotOnScreen or OverrideError, each saying what is wrong."""
    now = now or utc_now()
    screen = next((s for s in cfg.screens if s.id == screen_id), None)
    if screen is None:
        raise UnknownScreen(screen_id)
    if lot_id is not None and all(item.lot_id != lot_id for item in screen.lots):
        raise LotNotOnScreen(screen_id, lot_id)
    if mode not in MODES:
        raise OverrideError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON:
        raise OverrideError(f"reason must be 1-{MAX_REASON} characters (say why, for the audit trail)")
    set_by = set_by.strip()
    if not set_by or len(set_by) > 64:
        raise OverrideError("set_by must be 1-64 characters (who sets it)")
    if until is not None:
        if until.tzinfo is None:
            raise OverrideError("until must carry a time zone (e.g. 2026-11-26T18:00:00+08:00)")
        if until <= now:
            raise OverrideError(f"until {until.isoformat()} is not in the future")
        if mode == "auto":
            raise OverrideError("until makes no sense with mode auto (auto already ends the override)")
    row = ScreenOverrideRow(
        screen_id=screen_id, lot_id=lot_id, mode=mode, reason=reason, set_by=set_by, set_at=now,
        until=until.astimezone(UTC) if until else None,
    )  # fmt: skip
    with Session(engine) as s, s.begin():
        s.add(row)
        s.flush()
        made = _override(row)
    logger.info(
        "screen %s%s: mode %s by %s (%s)%s", screen_id, f" lot {lot_id}" if lot_id else "", mode, set_by,
        reason, f" until {until.isoformat()}" if until else "",
    )  # fmt: skip
    return made


def active_overrides(engine: Engine, now: datetime | None = None) -> dict[OverrideKey, Override]:
    """The overrides in force: per screen and per row, the newest change if it is not ``auto`` and
    has not expired."""
    now = now or utc_now()
    newest = (
        select(func.max(ScreenOverrideRow.id))
        .group_by(ScreenOverrideRow.screen_id, ScreenOverrideRow.lot_id)
        .scalar_subquery()
    )
    with Session(engine) as s:
        rows = s.scalars(select(ScreenOverrideRow).where(ScreenOverrideRow.id.in_(newest))).all()
        found = [_override(r) for r in rows]
    return {
        (o.screen_id, o.lot_id): o for o in found if o.mode != "auto" and (o.until is None or o.until > now)
    }


def override_log(engine: Engine, screen_id: str | None = None, limit: int = 100) -> list[Override]:
    """The newest changes first (the audit trail), of one screen or all."""
    query = select(ScreenOverrideRow).order_by(ScreenOverrideRow.id.desc()).limit(limit)
    if screen_id is not None:
        query = query.where(ScreenOverrideRow.screen_id == screen_id)
    with Session(engine) as s:
        return [_override(r) for r in s.scalars(query)]


# -- what a row shows ------------------------------------------------------------------------------
def number_text(fmt: ScreenFormat, shown: int, clamp: int | None) -> str:
    """``shown`` (> 0) written for the sign: clamped to ``clamp`` and to the digits, padded."""
    limit = clamp
    if fmt.digits is not None:
        fits = 10**fmt.digits - 1 if fmt.clamp_style == "cap" else 10 ** (fmt.digits - 1) - 1
        limit = fits if limit is None else min(limit, fits)
    if limit is not None and shown > limit:
        text = str(limit) if fmt.clamp_style == "cap" else f"{limit}+"
    else:
        text = str(shown)
    if fmt.digits is not None:
        text = text.rjust(fmt.digits, "0" if fmt.pad == "zero" else " ")
    return text


def row_text(
    fmt: ScreenFormat, item: ScreenLot, free: int, *, mode: ScreenMode, stale: bool
) -> tuple[str, ScreenState]:
    """What one row shows and why. An operator's mode wins over the data; then stale data shows
    the stale text; then the number (after the offset) or the full text."""
    if mode == "full":
        return fmt.full_text, "full"
    if mode == "closed":
        return fmt.closed_text, "closed"
    if mode == "blank":
        return "", "blank"
    if stale:
        return fmt.stale_text, "stale"
    shown = free - item.offset
    if shown <= 0:
        return fmt.full_text, "full"
    return number_text(fmt, shown, item.clamp), "ok"


def effective_mode(overrides: Mapping[OverrideKey, Override], screen_id: str, lot_id: str) -> ScreenMode:
    """A screen-wide mode other than auto wins; then the row's own; else auto."""
    whole = overrides.get((screen_id, None))
    if whole is not None and whole.mode != "auto":
        return whole.mode
    row = overrides.get((screen_id, lot_id))
    return row.mode if row is not None else "auto"


def screen_row(
    screen: ScreenConfig,
    item: ScreenLot,
    lot: LotState,
    *,
    mode: ScreenMode,
    data_age_s: float | None,
    stale: bool,
    stale_after_s: float | None,
) -> ScreenRow:
    text, state = row_text(screen.format, item, lot.free, mode=mode, stale=stale)
    return ScreenRow(
        lot_id=lot.id,
        label=item.label or lot.name[:40],
        arrow=item.arrow,
        free=lot.free,  # the data; a sign shows ``text``
        capacity=lot.capacity,
        full=state == "full",
        text=text,
        state=state,
        mode=mode,
        data_age_s=None if data_age_s is None else round(data_age_s, 1),
        stale_after_s=stale_after_s,
    )


def screen_summary(rows: list[ScreenRow], mode: ScreenMode) -> tuple[str, ScreenState]:
    """The whole screen as one line (for one-line signs) and its state: the operator's mode if
    not auto, else stale if any row is, else the rows' common state, else ok."""
    line = " | ".join(
        f"{row.label} {ARROW_CHARS.get(row.arrow, '')}{row.text}".strip()
        for row in rows
        if row.state != "blank"
    )
    if mode != "auto":
        return ("" if mode == "blank" else line), mode
    states = {row.state or "ok" for row in rows}
    if "stale" in states:
        return line, "stale"
    return line, states.pop() if len(states) == 1 else "ok"


# -- freshness ---------------------------------------------------------------------------------------
class Freshness:
    """When each lot was last confirmed by one of its gates, and which lots turned stale or fresh
    since their availability was last published. Thread-safe (writer, upkeep and MQTT threads)."""

    def __init__(self, lots: Iterable[LotConfig]) -> None:
        self.limits = {lot.id: lot.stale_after_s for lot in lots}
        self._heard: dict[str, datetime] = {}
        self._pending: dict[str, datetime] = {}
        self._published: dict[str, bool] = {}  # lot -> stale, as last published
        self._lock = threading.Lock()

    @staticmethod
    def _newer(into: dict[str, datetime], lot_id: str, at: datetime) -> None:
        if lot_id not in into or into[lot_id] < at:
            into[lot_id] = at

    def seed(self, lots: Iterable[LotState]) -> None:
        """Events stored before a restart: the newest one still dates its lot's count."""
        with self._lock:
            for lot in lots:
                if lot.last_event_ts is not None and lot.id in self.limits:
                    self._newer(self._heard, lot.id, min(_aware(lot.last_event_ts), utc_now()))

    def note_status(self, status: GateStatus) -> None:
        """A gate's heartbeat, counted once the batch it came in is stored (:meth:`commit`)."""
        if status.state != "online" or status.lot_id not in self.limits:
            return
        at = min(status.ts, utc_now()) - timedelta(seconds=status.backlog_age_s or 0.0)
        with self._lock:
            self._newer(self._pending, status.lot_id, at)

    def commit(self, events: Iterable[GateEvent]) -> None:
        """The batch is stored: its events and the heartbeats noted with it confirm their lots."""
        now = utc_now()
        with self._lock:
            for ev in events:
                if ev.lot_id in self.limits:
                    self._newer(self._heard, ev.lot_id, min(ev.ts, now))
            for lot_id, at in self._pending.items():
                self._newer(self._heard, lot_id, at)
            self._pending.clear()

    def age(self, lot_id: str, now: datetime) -> float | None:
        """Seconds since the lot was last confirmed; None if never."""
        with self._lock:
            heard = self._heard.get(lot_id)
        return None if heard is None else max((now - heard).total_seconds(), 0.0)

    def is_stale(self, lot_id: str, now: datetime) -> bool:
        age = self.age(lot_id, now)
        limit = self.limits.get(lot_id)
        return age is None or (limit is not None and age > limit)

    def published(self, lot_id: str, stale: bool) -> None:
        with self._lock:
            self._published[lot_id] = stale

    def flipped(self, now: datetime) -> set[str]:
        """Lots whose staleness differs from what was last published for them."""
        with self._lock:
            published = dict(self._published)
        return {lot_id for lot_id, stale in published.items() if self.is_stale(lot_id, now) != stale}
