"""Allow and deny lists that operators keep, each entry with an optional validity window.

The collector config's ``[[lots]]`` ``allow``/``deny`` are fixed at deployment; day-to-day
changes — a contractor's van admitted for the week, a plate barred after an incident — are
entries in the collector's database (``plate_list_entries``, revision 0006), made from the
dashboard (``/ops/lists``, one by one or as a CSV file). An entry names a lot, a list (``allow``
or ``deny``), a plate, and optionally when it starts (``valid_from``, included) and ends
(``valid_until``, excluded); who added it and why. Removing an entry marks it removed (who, when)
rather than deleting it, so the table keeps the history beside the operator audit trail.

What a gate gets. A lot's retained ``LotLists`` (``lots/{id}/lists``) is the config's lists plus
the entries valid *now*. Gates decide offline from their last copy, so the collector must
re-publish when an entry's window opens or closes, not only when an operator acts:
:class:`ListWatch` answers "which lots changed?" every tick of the collector's periodic loop from
one cheap query (the newest id and the number of removals, which change on every add and remove)
and the next window boundary it saw, and reads the entries again only then. A ``collectors/refresh``
(the dashboard sends one after each change) makes the collector ask at once. A plate on both
lists of a lot is refused at the gate: deny wins (edge/decision.py).

CSV (:func:`read_csv`, :func:`write_csv`): columns ``lot_id, list, plate, valid_from, valid_until,
note``; times as ISO 8601 with an offset, or a local date/time in the site's time zone
(``2026-12-01``, ``2026/12/1 08:00``). A date alone means the start of that day in
``valid_from`` and the end of that day in ``valid_until`` (``valid_until = 2026-12-31`` includes
the 31st). Files from Excel in UTF-8 (with BOM) or GB18030 are read; the export is UTF-8 with a
BOM so that Excel shows Chinese plates correctly.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal, cast, get_args

from sqlalchemy import DateTime, Index, Integer, String, func, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from cloud.events_store import Base, write_session
from cloud.visits import normalise_plate
from protocol import LotLists
from protocol.messages import utc_now
from protocol.topics import ID_PATTERN

logger = logging.getLogger(__name__)

ListKind = Literal["allow", "deny"]
KINDS: tuple[ListKind, ...] = get_args(ListKind)
NOTE_MAX = 200
BY_MAX = 64
CSV_COLUMNS = ("lot_id", "list", "plate", "valid_from", "valid_until", "note")
CSV_EXTRA = ("added_by", "added_at")  # written by the export, ignored by the import
CSV_MAX_ROWS = 10_000
_ID_RE = re.compile(ID_PATTERN)
# A date, or a date and time with an optional offset: "2026-12-01", "2026/12/1 08:00", "2026-12-01T08:00:00+08:00".
TIME_RE = re.compile(
    r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})"
    r"(?:[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?(Z|[+-]\d{2}:\d{2})?)?$"
)


# -- errors ------------------------------------------------------------------------------------------
class ListsError(Exception):
    """Base of this module's errors."""


class BadEntry(ListsError, ValueError):
    """An entry that cannot be listed: ``field`` names the part that is wrong, ``code`` the
    problem (for a translated message: see :data:`PROBLEMS`)."""

    def __init__(self, field: str, code: str, message: str, value: str = "") -> None:
        self.field, self.code, self.value = field, code, value
        super().__init__(f"{field}: {message}")


class UnknownEntry(ListsError, LookupError):
    def __init__(self, entry_id: int) -> None:
        self.entry_id = entry_id
        super().__init__(f"no list entry {entry_id} (or it was removed already)")


# -- table (on the event store's Base; made by cloud/migrations, revision 0006) -----------------------
class ListEntryRow(Base):
    """One plate on one lot's allow or deny list, for a window; removed entries stay, marked."""

    __tablename__ = "plate_list_entries"
    __table_args__ = (
        Index("plate_list_entries_lot", "lot_id", "kind", "plate"),
        Index("plate_list_entries_plate", "plate"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lot_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))  # allow | deny
    plate: Mapped[str] = mapped_column(String(16))
    valid_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    note: Mapped[str] = mapped_column(String(NOTE_MAX))
    added_by: Mapped[str] = mapped_column(String(BY_MAX))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    removed_by: Mapped[str | None] = mapped_column(String(BY_MAX), nullable=True)
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# -- what callers get back ------------------------------------------------------------------------------
Status = Literal["scheduled", "active", "expired", "removed"]


@dataclass(frozen=True)
class NewEntry:
    """An entry as asked for (checked by :func:`check_entry`), before it is stored."""

    lot_id: str
    kind: ListKind
    plate: str
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    note: str = ""

    def key(self) -> tuple[str, str, str, datetime | None, datetime | None]:
        return (self.lot_id, self.kind, self.plate, self.valid_from, self.valid_until)


@dataclass(frozen=True)
class ListEntry:
    id: int
    lot_id: str
    kind: ListKind
    plate: str
    valid_from: datetime | None
    valid_until: datetime | None
    note: str
    added_by: str
    added_at: datetime
    removed_by: str | None
    removed_at: datetime | None

    def status(self, now: datetime) -> Status:
        if self.removed_at is not None:
            return "removed"
        if self.valid_from is not None and now < self.valid_from:
            return "scheduled"
        if self.valid_until is not None and now >= self.valid_until:
            return "expired"
        return "active"

    def key(self) -> tuple[str, str, str, datetime | None, datetime | None]:
        return (self.lot_id, self.kind, self.plate, self.valid_from, self.valid_until)

    def to_json(self, now: datetime | None = None) -> dict[str, object]:
        def iso(ts: datetime | None) -> str | None:
            return ts.isoformat() if ts else None

        return {
            "id": self.id, "lot_id": self.lot_id, "list": self.kind, "plate": self.plate,
            "valid_from": iso(self.valid_from), "valid_until": iso(self.valid_until), "note": self.note,
            "added_by": self.added_by, "added_at": iso(self.added_at), "removed_by": self.removed_by,
            "removed_at": iso(self.removed_at), "status": self.status(now or utc_now()),
        }  # fmt: skip


def _aware(ts: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; every stored time is UTC."""
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _entry(row: ListEntryRow) -> ListEntry:
    return ListEntry(
        row.id, row.lot_id, cast(ListKind, row.kind), row.plate, _aware(row.valid_from),
        _aware(row.valid_until), row.note, row.added_by, cast(datetime, _aware(row.added_at)),
        row.removed_by, _aware(row.removed_at),
    )  # fmt: skip


# -- checking an entry (pure) ---------------------------------------------------------------------------
def check_entry(
    lot_id: str,
    kind: str,
    plate: str,
    *,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
    note: str = "",
    now: datetime | None = None,
) -> NewEntry:
    """The entry, normalised (plate without separators, times in UTC), or :class:`BadEntry`
    naming the first field that is wrong."""
    entry, problems = _checked(lot_id, kind, plate, valid_from, valid_until, note, now or utc_now())
    if entry is None:
        first = problems[0]
        raise BadEntry(first.field, first.code, first.message, first.value)
    return entry


@dataclass(frozen=True)
class Problem:
    """What is wrong with one field: ``code`` is one of :data:`PROBLEMS`, ``value`` the text given."""

    field: str
    code: str
    message: str  # in English, for logs and the JSON API
    value: str = ""


# Problem codes (a page translates them; the message says the same in English).
PROBLEMS = (
    "by", "lot_id", "lot", "list", "plate", "time", "window_order", "window_past", "note", "column_unknown",
    "column_missing", "column_twice", "encoding", "empty", "not_csv", "too_many_rows", "cells",
)  # fmt: skip


def _checked(
    lot_id: str,
    kind: str,
    plate: str,
    valid_from: datetime | None,
    valid_until: datetime | None,
    note: str,
    now: datetime,
) -> tuple[NewEntry | None, list[Problem]]:
    """The entry, or every problem with it."""
    problems: list[Problem] = []
    lot_id, kind, note = lot_id.strip(), kind.strip().lower(), note.strip()
    if not _ID_RE.match(lot_id):
        problems.append(Problem("lot_id", "lot_id", f"{lot_id!r} is not a lot id", lot_id))
    if kind not in KINDS:
        problems.append(Problem("list", "list", f"{kind!r} is not a list: use allow or deny", kind))
    given = plate
    try:
        plate = normalise_plate(plate)
    except ValueError as err:
        problems.append(Problem("plate", "plate", str(err), given))
    for name, ts in (("valid_from", valid_from), ("valid_until", valid_until)):
        if ts is not None and ts.tzinfo is None:
            problems.append(Problem(name, "time", "a time must carry its time zone", ts.isoformat()))
    start = valid_from.astimezone(UTC) if valid_from and valid_from.tzinfo else None
    end = valid_until.astimezone(UTC) if valid_until and valid_until.tzinfo else None
    if start and end and end <= start:
        message = f"{end.isoformat()} is not after valid_from {start.isoformat()}"
        problems.append(Problem("valid_until", "window_order", message, end.isoformat()))
    elif end is not None and end <= now:
        message = f"{end.isoformat()} is in the past: the entry would never apply"
        problems.append(Problem("valid_until", "window_past", message, end.isoformat()))
    if len(note) > NOTE_MAX:
        problems.append(
            Problem("note", "note", f"at most {NOTE_MAX} characters, not {len(note)}", str(len(note)))
        )
    if problems:
        return None, problems
    return NewEntry(lot_id, cast(ListKind, kind), plate, start, end, note), []


def parse_time(text: str, zone: tzinfo, *, end_of_day: bool = False) -> datetime | None:
    """A time from a form or a CSV cell (:data:`TIME_RE`): empty -> None; with an offset as it says;
    a local date or date and time (``2026-12-01``, ``2026/12/1 08:00``, ``2026-12-01T08:00``) in ``zone``.
    A date alone is the day's start, or with ``end_of_day`` the next day's start (the window's end
    is excluded, so the whole day is in). ValueError says what was expected."""
    text = text.strip()
    if not text:
        return None
    found = TIME_RE.match(text)
    try:
        if not found:
            raise ValueError(text)
        y, mo, d, h, mi, sec, frac, offset = found.groups()
        day = date(int(y), int(mo), int(d))
        if h is None:
            start = datetime.combine(day, time(0), zone)
            return start + timedelta(days=1) if end_of_day else start
        tz: tzinfo = zone
        if offset:
            tz = UTC if offset == "Z" else datetime.strptime(offset.replace(":", ""), "%z").tzinfo or zone
        micro = int((frac or "0").ljust(6, "0"))
        return datetime(day.year, day.month, day.day, int(h), int(mi), int(sec or 0), micro, tzinfo=tz)
    except ValueError:
        raise ValueError(f"{text!r} is not a date or time (e.g. 2026-12-01 or 2026-12-01 08:00)") from None


# -- the store -------------------------------------------------------------------------------------------
class PlateLists:
    """The entries in the collector's database (the dashboard writes, the collector reads)."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.engine = engine
        self.clock = clock

    def add(self, entry: NewEntry, added_by: str) -> ListEntry:
        return self.add_many([entry], added_by)[0]

    def add_many(self, entries: Sequence[NewEntry], added_by: str) -> list[ListEntry]:
        """Store checked entries in one transaction (a CSV import is all or nothing)."""
        added_by = _by(added_by)
        now = self.clock().astimezone(UTC)
        rows = [ListEntryRow(added_by=added_by, added_at=now, **_columns(e)) for e in entries]
        with write_session(self.engine) as s:
            s.add_all(rows)
            s.flush()
            made = [_entry(r) for r in rows]
        for e in made:
            logger.info(
                "list entry %d: %s %s in lot %s added by %s", e.id, e.plate, e.kind, e.lot_id, added_by
            )
        return made

    def remove(self, entry_id: int, removed_by: str) -> ListEntry:
        """Mark an entry removed (it stays in the table, with who and when)."""
        removed_by = _by(removed_by)
        with write_session(self.engine) as s:
            row = s.get(ListEntryRow, entry_id)
            if row is None or row.removed_at is not None:
                raise UnknownEntry(entry_id)
            row.removed_by, row.removed_at = removed_by, self.clock().astimezone(UTC)
            s.flush()
            entry = _entry(row)
        logger.info("list entry %d (%s %s, lot %s) removed by %s", entry_id, entry.plate, entry.kind,
                    entry.lot_id, removed_by)  # fmt: skip
        return entry

    def get(self, entry_id: int) -> ListEntry | None:
        with Session(self.engine) as s:
            row = s.get(ListEntryRow, entry_id)
            return _entry(row) if row else None

    def entries(
        self,
        lot_ids: Iterable[str] | None = None,
        *,
        plate: str | None = None,
        current: bool = False,
        removed: bool = False,
        limit: int = 10_000,
    ) -> list[ListEntry]:
        """Entries by lot, list and plate. ``current``: only those active or still to come;
        ``removed``: also the removed ones."""
        query = select(ListEntryRow)
        if lot_ids is not None:
            query = query.where(ListEntryRow.lot_id.in_(sorted(set(lot_ids))))
        if plate is not None:
            query = query.where(ListEntryRow.plate == plate)
        if not removed:
            query = query.where(ListEntryRow.removed_at.is_(None))
        if current:
            now = self.clock().astimezone(UTC)
            query = query.where(or_(ListEntryRow.valid_until.is_(None), ListEntryRow.valid_until > now))
        query = query.order_by(ListEntryRow.lot_id, ListEntryRow.kind, ListEntryRow.plate, ListEntryRow.id)
        with Session(self.engine) as s:
            return [_entry(r) for r in s.scalars(query.limit(max(1, limit)))]

    def valid(
        self, now: datetime | None = None
    ) -> tuple[dict[str, tuple[frozenset[str], frozenset[str]]], datetime | None]:
        """Per lot the plates allowed and denied at ``now``, and the next time a window opens or closes."""
        now = (now or self.clock()).astimezone(UTC)
        t = ListEntryRow
        query = select(t.lot_id, t.kind, t.plate, t.valid_from, t.valid_until).where(t.removed_at.is_(None))
        found: dict[str, tuple[set[str], set[str]]] = {}
        boundary: datetime | None = None
        with Session(self.engine) as s:
            for lot_id, kind, plate, start, end in s.execute(query):
                start, end = _aware(start), _aware(end)
                for edge in (start, end):
                    if edge is not None and edge > now and (boundary is None or edge < boundary):
                        boundary = edge
                if (start is None or start <= now) and (end is None or now < end):
                    allow, deny = found.setdefault(lot_id, (set(), set()))
                    (allow if kind == "allow" else deny).add(plate)
        return {lot: (frozenset(a), frozenset(d)) for lot, (a, d) in found.items()}, boundary

    def marker(self) -> tuple[int, int]:
        """Changes on every add and every removal: (newest id, number removed)."""
        with Session(self.engine) as s:
            newest, removed = s.execute(
                select(func.max(ListEntryRow.id), func.count(ListEntryRow.removed_at))
            ).one()
        return int(newest or 0), int(removed or 0)


def _columns(e: NewEntry) -> dict[str, object]:
    return {"lot_id": e.lot_id, "kind": e.kind, "plate": e.plate, "valid_from": e.valid_from,
            "valid_until": e.valid_until, "note": e.note}  # fmt: skip


def _by(name: str) -> str:
    name = name.strip()
    if not name or len(name) > BY_MAX:
        raise BadEntry("by", "by", f"who made the change: 1-{BY_MAX} characters")
    return name


# -- the collector's side -----------------------------------------------------------------------------------
class ListWatch:
    """What the collector adds to each lot's lists, and which lots changed since it last looked.

    Thread-safe: the collector's main loop, writer thread and connect callback all use it."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.lists = PlateLists(engine, clock=clock)
        self.clock = clock
        self._lock = threading.Lock()
        self._valid: dict[str, tuple[frozenset[str], frozenset[str]]] | None = None
        self._marker: tuple[int, int] | None = None
        self._boundary: datetime | None = None

    def changed(self) -> set[str]:
        """The lots whose valid entries differ from the last read (an entry added or removed, a
        window opened or closed); one small query when nothing did. Database errors are logged
        and answered with nothing changed (the next tick asks again)."""
        with self._lock:
            try:
                return self._reload(force=False)
            except Exception:
                logger.exception("could not read the plate list entries; keeping the last ones")
                return set()

    def merge(self, lists: LotLists) -> LotLists:
        """``lists`` (the config's, or a station's with its locks) plus the lot's valid entries."""
        with self._lock:
            if self._valid is None:
                try:
                    self._reload(force=True)
                except Exception:
                    logger.exception("could not read the plate list entries; publishing the config's lists")
                    return lists
            allow, deny = (self._valid or {}).get(lists.lot_id, (frozenset(), frozenset()))
        if not allow and not deny:
            return lists
        return lists.model_copy(
            update={"allow": sorted(set(lists.allow) | allow), "deny": sorted(set(lists.deny) | deny)}
        )

    def _reload(self, *, force: bool) -> set[str]:
        now = self.clock().astimezone(UTC)
        marker = self.lists.marker()
        due = self._boundary is not None and now >= self._boundary
        if not force and self._valid is not None and marker == self._marker and not due:
            return set()
        valid, boundary = self.lists.valid(now)
        before = self._valid
        self._valid, self._marker, self._boundary = valid, marker, boundary
        if before is None:
            return set()  # the first read: everything is published with it anyway
        return {lot for lot in before.keys() | valid.keys() if before.get(lot) != valid.get(lot)}


# -- CSV --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowError:
    """One problem in an uploaded file: the line (1 is the header; 0 the whole file), the column,
    the problem's code (:data:`PROBLEMS`), what is wrong in English, and the text found."""

    line: int
    column: str
    code: str
    message: str
    value: str = ""

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", {self.column}" if self.column else "")
        return f"{where}: {self.message}"

    def to_json(self) -> dict[str, object]:
        return {"line": self.line, "column": self.column, "code": self.code, "message": self.message,
                "value": self.value}  # fmt: skip


@dataclass(frozen=True)
class CsvRead:
    entries: list[NewEntry]  # good rows, in file order, without repeats
    errors: list[RowError]
    rows: int  # data rows read (blank lines not counted)
    repeats: int  # rows that repeat an earlier row of the file
    encoding: str


def decode_csv(data: bytes) -> tuple[str, str]:
    """The text of an uploaded file and the encoding it was read in (UTF-8, else GB18030, which
    Excel on Chinese Windows writes). ValueError if it is neither."""
    for encoding, name in (("utf-8-sig", "UTF-8"), ("gb18030", "GB18030")):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "\x00" not in text:  # a binary file (a spreadsheet, an image) decodes, with NULs
            return text, name
    raise ValueError("the file is not text in UTF-8 or GB18030: save it as CSV (UTF-8)")


def read_csv(
    data: bytes,
    zone: tzinfo,
    lot_problem: Callable[[str], str | None],
    *,
    now: datetime | None = None,
) -> CsvRead:
    """Check every row of an uploaded file and report every problem of every row.
    ``lot_problem(lot_id)`` says why a lot may not be used (unknown, outside the operator's
    scope) or None. Nothing is stored here."""
    now = now or utc_now()
    try:
        text, encoding = decode_csv(data)
    except ValueError as err:
        return CsvRead([], [RowError(0, "", "encoding", str(err))], 0, 0, "")
    reader = csv.reader(io.StringIO(text, newline=""))
    entries: list[NewEntry] = []
    errors: list[RowError] = []
    seen: set[tuple[object, ...]] = set()
    rows = repeats = 0
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        if not any(header):
            return CsvRead(
                [], [RowError(1, "", "empty", "the first line must name the columns")], 0, 0, encoding
            )
        errors += _check_header(header)
        if errors:
            return CsvRead([], errors, 0, 0, encoding)
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue  # blank lines (Excel leaves some at the end)
            rows += 1
            if rows > CSV_MAX_ROWS:
                errors.append(
                    RowError(line, "", "too_many_rows", f"more than {CSV_MAX_ROWS} rows: split the file")
                )
                break
            if len(cells) > len(header):
                message = f"{len(cells)} cells, but the first line names {len(header)} columns"
                errors.append(RowError(line, "", "cells", message, str(len(cells))))
                continue
            row = dict(zip(header, cells + [""] * (len(header) - len(cells)), strict=True))
            entry = _check_row(line, row, zone, lot_problem, now, errors)
            if entry is not None:
                if entry.key() in seen:
                    repeats += 1
                    continue
                seen.add(entry.key())
                entries.append(entry)
    except csv.Error as err:
        errors.append(RowError(reader.line_num, "", "not_csv", f"not a CSV file: {err}"))
    return CsvRead(entries, errors, rows, repeats, encoding)


def _check_header(header: list[str]) -> list[RowError]:
    known = set(CSV_COLUMNS) | set(CSV_EXTRA)
    errors = [
        RowError(1, h or "?", "column_unknown", f"unknown column {h!r}", h) for h in header if h not in known
    ]
    errors += [
        RowError(1, c, "column_missing", f"column {c} is missing", c)
        for c in ("lot_id", "list", "plate")
        if c not in header
    ]
    repeated = sorted({h for h in header if header.count(h) > 1})
    errors += [RowError(1, h, "column_twice", f"column {h} is named twice", h) for h in repeated]
    return errors


def _check_row(
    line: int,
    row: dict[str, str],
    zone: tzinfo,
    lot_problem: Callable[[str], str | None],
    now: datetime,
    errors: list[RowError],
) -> NewEntry | None:
    """The row's entry, or None with every problem of the row added to ``errors``."""
    found: list[Problem] = []
    times: dict[str, datetime | None] = {}
    for name in ("valid_from", "valid_until"):
        cell = row.get(name, "")
        try:
            times[name] = parse_time(cell, zone, end_of_day=name == "valid_until")
        except ValueError as err:
            found.append(Problem(name, "time", str(err), cell))
            times[name] = None
    lot_id = row.get("lot_id", "").strip()
    entry, problems = _checked(
        lot_id, row.get("list", ""), row.get("plate", ""), times["valid_from"], times["valid_until"],
        row.get("note", ""), now,
    )  # fmt: skip
    problem = lot_problem(lot_id) if _ID_RE.match(lot_id) else None
    if problem:
        found.insert(0, Problem("lot_id", "lot", problem, lot_id))
    found += problems
    errors.extend(RowError(line, p.field, p.code, p.message, p.value) for p in found)
    return entry if not found else None


def write_csv(entries: Iterable[ListEntry], zone: tzinfo) -> str:
    """The entries as CSV (header first; times in ``zone`` with their offset), ready for import."""

    def when(ts: datetime | None) -> str:
        return ts.astimezone(zone).isoformat(timespec="seconds") if ts else ""

    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS + CSV_EXTRA)
    for e in entries:
        writer.writerow(
            [
                e.lot_id,
                e.kind,
                e.plate,
                when(e.valid_from),
                when(e.valid_until),
                e.note,
                e.added_by,
                when(e.added_at),
            ]
        )
    return out.getvalue()
