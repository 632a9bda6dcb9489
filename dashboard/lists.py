"""Allow and deny lists with validity windows (``/ops/lists``): per lot of the operator's scope,
the entries (cloud/lists.py) and the site config's fixed lists; add and remove (operator role),
CSV export (download) and import (upload). Every change is audited and followed by a
``collectors/refresh``, so the gates get the lot's new lists at once (and the collector's
periodic check re-publishes when an entry's window opens or closes).

CSV import is all or nothing: every row is checked (lot known and in scope, list kind, plate by
the protocol's plate rule, dates, window) and every problem of every row is reported with its
line and column; if any row is bad, nothing is imported. A list half-imported from a file with a
typo would reach the gates as something nobody wrote down, and the operator would have to find
which rows made it; fixing the file and uploading it again is simpler and leaves no doubt. Rows
already on the list (same lot, list, plate and window), and rows repeated in the file, are
skipped and counted, so importing an export again changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from cloud.lists import (
    CSV_COLUMNS,
    CSV_MAX_ROWS,
    NOTE_MAX,
    BadEntry,
    ListEntry,
    RowError,
    UnknownEntry,
    check_entry,
    read_csv,
    write_csv,
)
from dashboard import live_state, site_config
from dashboard.auth import audit, operator, require_lot, role_required
from dashboard.ops_services import ActionRefused, form_time, plate_lists, refresh, scope_lots, zone
from dashboard.users import User, can_see_lot, role_at_least
from protocol.messages import utc_now

logger = logging.getLogger(__name__)

bp = Blueprint("lists", __name__, url_prefix="/ops")

MAX_UPLOAD = 2 * 1024 * 1024  # bytes; CSV_MAX_ROWS rows of a plate list fit many times over


# -- shared with the JSON API ------------------------------------------------------------------------
def site_lots() -> set[str]:
    """Every lot this dashboard knows of (the site config's, those with a live count)."""
    site = site_config(current_app)
    known = {lot.id for lot in site.lots} if site is not None else set()
    return known | set(live_state(current_app).lots)


def lot_problem(user: User) -> Callable[[str], str | None]:
    """Why ``user`` may not list plates for a lot (English), or None."""
    known = site_lots() | set(user.lots or ())

    def problem(lot_id: str) -> str | None:
        if not can_see_lot(user, lot_id):
            return f"lot {lot_id} is outside your scope"
        if lot_id not in known:
            return f"no lot {lot_id} on this site"
        return None

    return problem


def problem_text(code: str, value: str, user: User) -> str:
    """A problem of cloud/lists.py (its code) in the page's language."""
    texts = {
        "lot_id": _("%(value)s is not a lot id.", value=value),
        "list": _("%(value)s is not a list: write allow or deny.", value=value),
        "plate": _(
            "%(value)s is not a plate: 2 to 12 letters, digits and Chinese characters (e.g. 鄂A12345).",
            value=value,
        ),
        "time": _("%(value)s is not a date or time (e.g. 2026-12-01 or 2026-12-01 08:00).", value=value),
        "window_order": _("The end of the window must come after its start."),
        "window_past": _("The window has already ended: the entry would never apply."),
        "note": _("The note is too long (at most %(n)s characters).", n=NOTE_MAX),
        "column_unknown": _("Unknown column %(value)s.", value=value),
        "column_missing": _("Column %(value)s is missing.", value=value),
        "column_twice": _("Column %(value)s is named twice.", value=value),
        "encoding": _("The file is not text in UTF-8 or GB18030: save it as CSV (UTF-8)."),
        "empty": _("The file is empty: its first line names the columns."),
        "not_csv": _("This is not a CSV file."),
        "too_many_rows": _("More than %(n)s rows: split the file.", n=CSV_MAX_ROWS),
        "cells": _("More cells than the first line names columns."),
    }
    if code == "lot":
        if not can_see_lot(user, value):
            return _("Lot %(value)s is outside your scope.", value=value)
        return _("There is no lot %(value)s on this site.", value=value)
    return texts.get(code, code)


def add_entry(
    user: User, lot_id: str, kind: str, plate: str, valid_from: str, valid_until: str, note: str
) -> ListEntry:
    """Add one entry (times as typed, in the site's zone unless they carry an offset); audited,
    refreshed. :class:`ActionRefused` (audited) when it cannot be added."""
    require_lot(lot_id)
    target = f"lot:{lot_id}"
    try:
        problem = lot_problem(user)(lot_id)
        if problem:
            raise ActionRefused(404, problem, problem_text("lot", lot_id, user))
        entry = check_entry(
            lot_id, kind, plate, valid_from=form_time(valid_from, "valid_from"),
            valid_until=form_time(valid_until, "valid_until", end_of_day=True), note=note,
        )  # fmt: skip
        if any(
            e.key() == entry.key() for e in plate_lists().entries([lot_id], plate=entry.plate, current=True)
        ):
            raise ActionRefused(
                400, f"{entry.plate} is already on the {entry.kind} list of {lot_id} for this window",
                _("%(plate)s is already on this list for this window.", plate=entry.plate),
            )  # fmt: skip
    except BadEntry as err:
        audit("list.add", target=target, detail=f"{plate[:16]} {kind[:8]}: {err}", result="failed")
        raise ActionRefused(400, str(err), problem_text(err.code, err.value, user)) from None
    except ActionRefused as err:
        audit("list.add", target=target, detail=f"{plate[:16]} {kind[:8]}: {err.message}", result="failed")
        raise
    made = plate_lists().add(entry, user.name)
    audit("list.add", target=target, detail=_describe(made))
    refresh(lot_ids=[lot_id])
    return made


def _describe(e: ListEntry) -> str:
    start, end = (ts.isoformat() if ts else "…" for ts in (e.valid_from, e.valid_until))
    window = f"{start} – {end}"
    return f"#{e.id} {e.plate} {e.kind} {window}" + (f": {e.note}" if e.note else "")


def remove_entry(user: User, entry_id: int) -> ListEntry:
    """Remove an entry of a lot in scope; audited, refreshed."""
    found = plate_lists().get(entry_id) if 0 < entry_id < 2**62 else None
    if found is None or found.removed_at is not None:
        raise ActionRefused(
            404, f"no list entry {entry_id}", _("This entry does not exist or was removed already.")
        )
    require_lot(found.lot_id)
    try:
        removed = plate_lists().remove(entry_id, user.name)
    except UnknownEntry as err:
        raise ActionRefused(404, str(err), _("This entry does not exist or was removed already.")) from None
    audit("list.remove", target=f"lot:{removed.lot_id}", detail=_describe(removed))
    refresh(lot_ids=[removed.lot_id])
    return removed


@dataclass(frozen=True)
class Imported:
    added: list[ListEntry]
    already: int  # rows already on the lists
    repeats: int  # rows repeated within the file
    rows: int
    encoding: str

    def to_json(self, now: datetime) -> dict[str, object]:
        return {"added": [e.to_json(now) for e in self.added], "already_listed": self.already,
                "repeated": self.repeats, "rows": self.rows, "encoding": self.encoding}  # fmt: skip


class ImportRefused(ActionRefused):
    def __init__(self, errors: list[RowError], rows: int, filename: str, encoding: str) -> None:
        self.errors, self.rows, self.filename, self.encoding = errors, rows, filename, encoding
        first = "; ".join(str(e) for e in errors[:3])
        super().__init__(400, f"{len(errors)} problem(s), nothing imported: {first}")


def import_csv(user: User, data: bytes, filename: str) -> Imported:
    """Import a CSV file whole, or nothing of it (see the module's docstring); audited."""
    name = filename[:80] or "upload"
    read = read_csv(data, zone(), lot_problem(user))
    if read.errors:
        audit("list.import", target=name, detail=f"refused, {len(read.errors)} problem(s): {read.errors[0]}",
              result="failed")  # fmt: skip
        raise ImportRefused(read.errors, read.rows, name, read.encoding)
    lots = sorted({e.lot_id for e in read.entries})
    existing = {e.key() for e in plate_lists().entries(lots, current=True)} if lots else set()
    new = [e for e in read.entries if e.key() not in existing]
    added = plate_lists().add_many(new, user.name) if new else []
    already = len(read.entries) - len(new)
    audit(
        "list.import", target=name,
        detail=f"{len(added)} added ({already} already listed, {read.repeats} repeated) in {', '.join(lots) or '-'}",
    )  # fmt: skip
    refresh(lot_ids={e.lot_id for e in added})
    return Imported(added, already, read.repeats, read.rows, read.encoding)


def export_csv(user: User, lot_ids: Iterable[str]) -> str:
    lots = sorted(set(lot_ids))
    for lot_id in lots:
        require_lot(lot_id)
    entries = plate_lists().entries(lots, current=True)
    audit("list.export", target=",".join(lots)[:200], detail=f"{len(entries)} entries")
    return write_csv(entries, zone())


def csv_response(text: str, lot_ids: list[str]) -> Response:
    stamp = utc_now().astimezone(zone()).strftime("%Y%m%d-%H%M")
    name = f"plate-lists-{'-'.join(lot_ids) if len(lot_ids) <= 3 else 'all'}-{stamp}.csv"
    response = Response("\ufeff" + text, mimetype="text/csv")  # the BOM: Excel then reads UTF-8
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def upload() -> tuple[bytes, str]:
    """The uploaded file's bytes and name (multipart field ``file``, or JSON ``{"csv", "filename"}``
    from the API); :class:`ActionRefused` when there is none or it is too large."""
    if request.content_length is not None and request.content_length > MAX_UPLOAD + 64 * 1024:
        raise ActionRefused(400, f"the file is larger than {MAX_UPLOAD // 1024} KiB",
                            _("The file is larger than %(n)s KiB.", n=MAX_UPLOAD // 1024))  # fmt: skip
    if request.is_json:
        body = request.get_json(silent=True)
        text = body.get("csv") if isinstance(body, dict) else None
        if not isinstance(text, str) or not isinstance(body, dict):
            raise ActionRefused(
                400, 'send {"csv": "<the text of the file>", "filename": "..."} or a multipart file'
            )
        name = body.get("filename")
        return text.encode("utf-8"), name if isinstance(name, str) and name else "upload.csv"
    file = request.files.get("file")
    if file is None or not file.filename:
        raise ActionRefused(
            400, "choose a CSV file to upload (form field 'file')", _("Choose a CSV file to upload.")
        )
    data = file.stream.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise ActionRefused(400, f"the file is larger than {MAX_UPLOAD // 1024} KiB",
                            _("The file is larger than %(n)s KiB.", n=MAX_UPLOAD // 1024))  # fmt: skip
    return data, file.filename


# -- pages --------------------------------------------------------------------------------------------
def _page(
    status: int = 200,
    *,
    lot_id: str | None = None,
    form: dict[str, str] | None = None,
    error: str | None = None,
    imported: Imported | None = None,
    refused: ImportRefused | None = None,
    import_error: str | None = None,
) -> ResponseReturnValue:
    user = operator()
    lots = scope_lots(user)
    chosen = lot_id if lot_id in lots else request.args.get("lot", "")
    if chosen not in lots:
        chosen = next(iter(lots), "")
    show_all = request.args.get("all") == "1"
    now = utc_now()
    entries = plate_lists().entries([chosen], removed=show_all) if chosen else []
    if not show_all:
        entries = [e for e in entries if e.status(now) != "expired"]
    site = site_config(current_app)
    fixed = next((lot for lot in site.lots if lot.id == chosen), None) if site else None
    counts = {s: sum(1 for e in entries if e.status(now) == s) for s in ("active", "scheduled")}
    active = [e for e in entries if e.status(now) == "active"]
    return render_template(
        "ops/lists.html",
        lots=lots, lot_id=chosen, entries=entries, show_all=show_all, now=now, fixed=fixed,
        allowed=len({e.plate for e in active if e.kind == "allow"} | set(fixed.allow if fixed else ())),
        denied=len({e.plate for e in active if e.kind == "deny"} | set(fixed.deny if fixed else ())),
        scheduled=counts["scheduled"], can_edit=role_at_least(user, "operator"),
        form=form or {"list": "allow", "plate": "", "valid_from": "", "valid_until": "", "note": ""},
        error=error, imported=imported, refused=refused, import_error=import_error,
        problem_text=lambda e: problem_text(e.code, e.value, user), columns=CSV_COLUMNS,
        zone_name=str(zone()), note_max=NOTE_MAX, max_rows=CSV_MAX_ROWS, max_kib=MAX_UPLOAD // 1024,
        added=request.args.get("added", type=int), removed_id=request.args.get("removed", type=int),
    ), status  # fmt: skip


@bp.get("/lists")
def index() -> ResponseReturnValue:
    return _page()


@bp.post("/lists/add")
@role_required("operator")
def add() -> ResponseReturnValue:
    user = operator()
    fields = ("lot_id", "list", "plate", "valid_from", "valid_until", "note")
    form = {k: request.form.get(k, "")[: NOTE_MAX + 50] for k in fields}
    try:
        made = add_entry(
            user,
            form["lot_id"],
            form["list"],
            form["plate"],
            form["valid_from"],
            form["valid_until"],
            form["note"],
        )
    except ActionRefused as err:
        return _page(err.status, lot_id=form["lot_id"], form=form, error=err.text)
    return redirect(url_for("lists.index", lot=made.lot_id, added=made.id), code=303)


@bp.post("/lists/<int:entry_id>/remove")
@role_required("operator")
def remove(entry_id: int) -> ResponseReturnValue:
    try:
        removed = remove_entry(operator(), entry_id)
    except ActionRefused as err:
        abort(err.status, description=err.message)
    return redirect(url_for("lists.index", lot=removed.lot_id, removed=removed.id), code=303)


@bp.get("/lists/export.csv")
def export() -> Response:
    user = operator()
    lots = scope_lots(user)
    wanted = request.args.get("lot", "")
    lot_ids = [wanted] if wanted else list(lots)
    return csv_response(export_csv(user, lot_ids), lot_ids)


@bp.post("/lists/import")
@role_required("operator")
def import_file() -> ResponseReturnValue:
    user = operator()
    lot_id = request.form.get("lot", "")
    try:
        data, filename = upload()
        done = import_csv(user, data, filename)
    except ImportRefused as err:
        return _page(400, lot_id=lot_id, refused=err)
    except ActionRefused as err:
        audit("list.import", detail=err.message, result="failed")
        return _page(err.status, lot_id=lot_id, import_error=err.text)
    first = done.added[0].lot_id if done.added else lot_id
    return _page(200, lot_id=first, imported=done)
