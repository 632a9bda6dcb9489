"""Operator actions as JSON (``/api/v1/ops/...``): plate search and history, plate correction,
allow/deny list entries (with CSV export and import), remote open, sign overrides. The same
checks, audit rows and refreshes as the pages (the functions live with them); errors in the API's
one shape ``{"error": {"status", "message"}}`` (messages in English), import problems listed
under ``error.problems``. POSTs need the CSRF token (``X-CSRFToken``, see parkgate.js).

=================================================  =========  =================================
``GET  /api/v1/ops/plates?q=``                     viewer     plates containing q
``GET  /api/v1/ops/plates/<plate>``                viewer     visits, events, corrections
``POST /api/v1/ops/events/<id>/correct``           operator   ``{"plate", "reason"}``
``GET  /api/v1/ops/lists?lot_id=&all=1``           viewer     entries of the lots in scope
``POST /api/v1/ops/lists``                         operator   ``{"lot_id", "list", "plate",
                                                              "valid_from", "valid_until", "note"}``
``DELETE /api/v1/ops/lists/<id>``                  operator   remove an entry
``GET  /api/v1/ops/lists.csv?lot_id=``             viewer     CSV export
``POST /api/v1/ops/lists/import``                  operator   CSV upload (multipart ``file``)
``POST /api/v1/ops/gates/<id>/open``               operator   ``{"reason", "confirm": true}``
``GET  /api/v1/ops/signs``                         viewer     screens in scope, modes, log
``POST /api/v1/ops/signs/<screen_id>``             operator   ``{"mode", "reason", "lot_id",
                                                              "until"}``
=================================================  =========  =================================
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypeVar

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud.lists import TIME_RE
from dashboard.api import error_response
from dashboard.auth import audit, operator, require_lot, role_required
from dashboard.commands import gate_status, open_gate
from dashboard.lists import (
    ImportRefused,
    add_entry,
    csv_response,
    export_csv,
    import_csv,
    remove_entry,
    upload,
)
from dashboard.openapi import operation, path, query
from dashboard.ops_services import ActionRefused, engine, form_time, plate_lists, scope_lots
from dashboard.plates import correct, event_line, find_plates, normalise_query, plate_history
from dashboard.signs import scoped_log, screen_in_scope, set_mode, sign_views
from dashboard.users import can_see_lot
from protocol import ScreenContent
from protocol.messages import utc_now
from protocol.topics import ID_PATTERN

bp = Blueprint("ops_actions_api", __name__, url_prefix="/api/v1/ops")

Reply = Response | tuple[Response, int]
M = TypeVar("M", bound=BaseModel)
# A plate as typed: 2-12 of letters, digits and CJK characters, separators (spaces, dots, dashes) allowed.
PLATE_TYPED = r"^[\s·•.\-_]*(?:[0-9A-Za-z\u4e00-\u9fff][\s·•.\-_]*){2,12}$"
SAID = r"\S"  # a reason: something besides spaces
# A time as cloud.lists.parse_time reads it: a date, or a date and time with an optional offset.
TIME_TEXT = TIME_RE.pattern
PATTERN_TEXTS = {
    PLATE_TYPED: "is not a plate: 2-12 letters, digits and CJK characters (e.g. 鄂A12345)",
    SAID: "says nothing: give a reason",
    ID_PATTERN: "is not an id (1-64 of A-Z a-z 0-9 _ . -)",
    TIME_TEXT: "is not a date or time (e.g. 2026-12-01, 2026-12-01 08:00, 2026-12-01T08:00:00+08:00)",
}


# -- shapes of the answers and bodies, for the OpenAPI description (dashboard/openapi.py) --------------
class PlateMatchOut(BaseModel):
    plate: str
    events: int = Field(description="events of the plate in the operator's lots")
    last_seen: datetime
    lots: list[str]


class PlateSearch(BaseModel):
    query: str = Field(description="the text as plates are stored: capitals, no separators")
    plates: list[PlateMatchOut] = Field(description="exact match first, then prefix, then newest")


class EventOut(BaseModel):
    id: str
    ts: datetime
    lot_id: str
    gate_id: str
    direction: Literal["entry", "exit"]
    plate: str | None
    confidence: float
    action: str
    reason: str
    crop: bool = Field(description="the gate sent a plate crop (GET /ops/plates/crops/<id>.jpg)")
    corrected_from: str | None = Field(description='the plate read before a correction ("": none), or null')


class VisitEnd(BaseModel):
    event_id: str | None
    ts: datetime | None
    gate_id: str | None
    crop: bool


class VisitOut(BaseModel):
    id: int
    lot_id: str
    plate: str
    status: Literal["open", "closed", "presumed_exited", "orphan_exit"]
    note: str | None
    entry: VisitEnd
    exit: VisitEnd
    dwell_s: float | None
    closed_at: datetime | None


class CorrectionOut(BaseModel):
    event_id: str
    lot_id: str
    old_plate: str | None
    new_plate: str
    actor: str
    reason: str
    ts: datetime


class PlateHistoryOut(BaseModel):
    plate: str
    visits: list[VisitOut] = Field(description="newest first")
    events: list[EventOut] = Field(description="newest first")
    corrected_away: list[CorrectionOut] = Field(description="events that read this plate before a correction")


class CorrectRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    plate: str = Field(pattern=PLATE_TYPED, description="the right plate (separators, lower case accepted)")
    reason: str = Field(pattern=SAID, max_length=360, description="why, for the audit trail")


class CorrectedInfo(CorrectionOut):
    lot_occupied: int | None = Field(description="the lot's count afterwards")
    rebased: str | None = Field(description="the occupancy audit's reason when the lot was re-based")
    refreshed: bool = Field(description="the collectors were asked to re-publish the lot")


class CorrectedOut(BaseModel):
    correction: CorrectedInfo
    visits: list[VisitOut] = Field(description="the new plate's visits in the lot, paired again")
    old_plate_visits: list[VisitOut] = Field(description="the old plate's visits left in the lot")


class ListEntryOut(BaseModel):
    id: int
    lot_id: str
    list: Literal["allow", "deny"]
    plate: str
    valid_from: datetime | None
    valid_until: datetime | None
    note: str
    added_by: str
    added_at: datetime
    removed_by: str | None
    removed_at: datetime | None
    status: Literal["scheduled", "active", "expired", "removed"]


class ListEntries(BaseModel):
    entries: list[ListEntryOut]


class ListEntryRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    lot_id: str = Field(pattern=ID_PATTERN)
    list: Literal["allow", "deny"]
    plate: str = Field(pattern=PLATE_TYPED)
    valid_from: str | None = Field(
        None,
        pattern=TIME_TEXT,
        description="ISO 8601, or a local date or date and time in the site's time zone",
    )
    valid_until: str | None = Field(
        None, pattern=TIME_TEXT, description="excluded; a local date alone includes that day"
    )
    note: str | None = Field(None, max_length=200)


class ImportRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    csv: str = Field(
        max_length=2 * 1024 * 1024, description="the file's text (or multipart/form-data: 'file')"
    )
    filename: str | None = Field(None, max_length=200, description="for the audit trail")


class ProblemOut(BaseModel):
    line: int = Field(description="1 is the header; 0 the whole file")
    column: str
    code: str = Field(
        description="what is wrong: lot_id, lot, list, plate, time, window_order, window_past, ..."
    )
    message: str
    value: str = Field(description="the text found")


class ImportOut(BaseModel):
    imported: bool = Field(description="false: the file had problems and nothing of it was imported")
    added: list[ListEntryOut]
    already_listed: int = Field(description="rows already on the lists (skipped)")
    repeated: int = Field(description="rows repeated within the file (skipped)")
    rows: int
    encoding: str
    problems: list[ProblemOut] = Field(description="every problem of every row (at most 1000 listed)")


class OpenRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    reason: str = Field(
        pattern=SAID, max_length=200, description="why, sent to the gate and kept in the audit trail"
    )
    confirm: Literal[True] = Field(description="must be true: the API's confirmation step")


class OpenOut(BaseModel):
    gate_id: str
    lot_id: str
    command_id: str
    result: Literal["done", "refused", "timeout"]
    detail: str = Field(description="the gate's reason, or why there was no answer")
    sent_at: datetime
    expires_at: datetime
    answered_at: datetime | None


class OverrideOut(BaseModel):
    id: int
    screen: str
    lot: str | None
    mode: Literal["auto", "full", "closed", "blank"]
    reason: str
    set_by: str
    set_at: datetime
    until: datetime | None


class SignOut(BaseModel):
    screen_id: str
    name: str
    lots: list[str]
    content: ScreenContent | None = Field(description="what the collector last published for it")
    override: OverrideOut | None = Field(description="the whole sign's mode in force")
    row_overrides: dict[str, OverrideOut] = Field(description="lot id: the row's mode in force")


class SignsOut(BaseModel):
    screens: list[SignOut]
    log: list[OverrideOut] = Field(description="the newest changes first")


class SignRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    mode: Literal["auto", "full", "closed", "blank"]
    reason: str = Field(pattern=SAID, max_length=200)
    lot_id: str | None = Field(
        None, pattern=ID_PATTERN, description="one row of the sign; null: the whole sign"
    )
    until: str | None = Field(
        None, pattern=TIME_TEXT, description="when the mode ends (ISO 8601, or local time); null: never"
    )


def _refused(err: ActionRefused) -> tuple[Response, int]:
    return error_response(err.status, err.message)


def _parsed(model: type[M]) -> M:
    """The JSON body checked against the model the description declares; ActionRefused (400)
    naming the first field that does not fit and what was sent."""
    try:
        return model.model_validate_json(request.get_data(cache=True) or b"null")
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        value = repr(first.get("input"))[:80]
        if first["type"] == "string_pattern_mismatch":
            pattern = str((first.get("ctx") or {}).get("pattern", ""))
            message = f"{where}: {value} {PATTERN_TEXTS.get(pattern, first['msg'])}"
        elif first["type"] in ("missing", "json_invalid", "model_type", "model_attributes_type"):
            message = f"{where}: {first['msg']}"
        else:
            message = f"{where}: {first['msg']}, not {value}"
        raise ActionRefused(400, message) from None


# -- plates -----------------------------------------------------------------------------------------------
@bp.get("/plates")
@operation(
    PlateSearch,
    params=(
        query("q", description="a plate or part of one", required=True, maxLength=64, pattern=PLATE_TYPED),
    ),
)
def plates() -> Reply:
    user = operator()
    try:
        q = normalise_query(request.args.get("q", ""))
    except ActionRefused as err:
        return _refused(err)
    return jsonify(query=q, plates=[m.to_json() for m in find_plates(engine(), q, user.lots)])


@bp.get("/plates/<plate>")
@operation(PlateHistoryOut, params=(path("plate", "the plate", maxLength=64, pattern=PLATE_TYPED),))
def plate(plate: str) -> Reply:
    user = operator()
    try:
        q = normalise_query(plate)
    except ActionRefused as err:
        return _refused(err)
    return jsonify(plate_history(engine(), q, user.lots).to_json())


@bp.post("/events/<event_id>/correct")
@operation(CorrectedOut, body=CorrectRequest, errors=(403, 404, 503))
@role_required("operator")
def correct_event(event_id: str) -> Reply:
    user = operator()
    ev = event_line(engine(), event_id)
    if ev is None:
        return error_response(404, f"no event {event_id!r}")
    require_lot(ev.lot_id)
    try:
        body = _parsed(CorrectRequest)
        done = correct(user, ev, body.plate, body.reason)
    except ActionRefused as err:
        return _refused(err)
    history = plate_history(engine(), done.correction.new_plate, frozenset([ev.lot_id]))
    before = done.correction.old_plate
    old = plate_history(engine(), before, frozenset([ev.lot_id])) if before else None
    return jsonify(
        correction=done.to_json(),
        visits=[v.to_json() for v in history.visits],
        old_plate_visits=[v.to_json() for v in old.visits] if old else [],
    )


# -- lists --------------------------------------------------------------------------------------------------
@bp.get("/lists")
@operation(
    ListEntries,
    params=(
        query("lot_id", description="one lot (in scope); default: every lot in scope", pattern=ID_PATTERN),
        query("all", description="1: also ended and removed entries", enum=["0", "1"]),
    ),
    errors=(403,),
)
def lists() -> Reply:
    user = operator()
    wanted = request.args.get("lot_id", "")
    if wanted:
        require_lot(wanted)
    lot_ids = [wanted] if wanted else list(scope_lots(user))
    now = utc_now()
    entries = plate_lists().entries(lot_ids, removed=request.args.get("all") == "1") if lot_ids else []
    return jsonify(entries=[e.to_json(now) for e in entries])


@bp.post("/lists")
@operation(ListEntryOut, status=201, body=ListEntryRequest, errors=(403, 404))
@role_required("operator")
def add_list_entry() -> Reply:
    try:
        body = _parsed(ListEntryRequest)
        made = add_entry(
            operator(), body.lot_id, body.list, body.plate, body.valid_from or "", body.valid_until or "",
            body.note or "",
        )  # fmt: skip
    except ActionRefused as err:
        return _refused(err)
    return jsonify(made.to_json()), 201


@bp.delete("/lists/<int:entry_id>")
@operation(ListEntryOut, errors=(403,))
@role_required("operator")
def remove_list_entry(entry_id: int) -> Reply:
    try:
        removed = remove_entry(operator(), entry_id)
    except ActionRefused as err:
        return _refused(err)
    return jsonify(removed.to_json())


@bp.get("/lists.csv")
@operation(
    None, params=(query("lot_id", description="one lot (in scope)", pattern=ID_PATTERN),), errors=(403,)
)
def lists_csv() -> Response:
    user = operator()
    wanted = request.args.get("lot_id", "")
    lot_ids = [wanted] if wanted else list(scope_lots(user))
    return csv_response(export_csv(user, lot_ids), lot_ids)


@bp.post("/lists/import")
@operation(ImportOut, body=ImportRequest, errors=(403,))
@role_required("operator")
def lists_import() -> Reply:
    """Import a CSV file of entries, whole or nothing: as JSON (``{"csv": "...", "filename": "..."}``)
    or as multipart/form-data (field ``file``). The answer is a report: ``imported: true`` and the
    entries added, or ``imported: false`` and every problem of every row, nothing imported (the
    request was understood, the file was not good enough)."""
    user = operator()
    try:
        if request.is_json:
            _parsed(ImportRequest)
        data, filename = upload()
        done = import_csv(user, data, filename)
    except ImportRefused as err:
        return jsonify(
            imported=False, added=[], already_listed=0, repeated=0, rows=err.rows, encoding=err.encoding,
            problems=[e.to_json() for e in err.errors[:1000]],
        )  # fmt: skip
    except ActionRefused as err:
        audit("list.import", detail=err.message, result="failed")
        return _refused(err)
    return jsonify(imported=True, problems=[], **done.to_json(utc_now()))


# -- remote open --------------------------------------------------------------------------------------------
@bp.post("/gates/<gate_id>/open")
@operation(OpenOut, body=OpenRequest, errors=(403, 404, 503))
@role_required("operator")
def open_barrier(gate_id: str) -> Reply:
    user = operator()
    status = gate_status(gate_id)
    try:
        body = _parsed(OpenRequest)
        outcome = open_gate(user, status, body.reason)
    except ActionRefused as err:
        return _refused(err)
    return jsonify(outcome.to_json())


# -- signs ----------------------------------------------------------------------------------------------------
@bp.get("/signs")
@operation(SignsOut)
def signs() -> Reply:
    user = operator()
    return jsonify(
        screens=[v.to_json() for v in sign_views(user)], log=[o.as_json() for o in scoped_log(user)]
    )


@bp.post("/signs/<screen_id>")
@operation(OverrideOut, status=201, body=SignRequest, errors=(403, 404))
@role_required("operator")
def set_sign(screen_id: str) -> Reply:
    user = operator()
    screen = screen_in_scope(user, screen_id)
    try:
        body = _parsed(SignRequest)
        if body.lot_id is not None and not can_see_lot(user, body.lot_id):
            raise ActionRefused(403, f"lot {body.lot_id!r} is outside your scope")
        until = form_time(body.until or "", "until")
        made = set_mode(user, screen, body.mode, body.reason, lot_id=body.lot_id, until=until)
    except ActionRefused as err:
        return _refused(err)
    return jsonify(made.as_json()), 201
