"""Sign overrides (``/ops/signs``): what each guidance screen of the operator's scope shows now,
the operator modes in force, setting and clearing them, and the log of every change.

A screen is in an operator's scope when the operator can see every lot it shows: a mode set on a
sign changes what drivers see for all of its rows, so it needs the right to all of them (the
same goes for one row, to keep the rule simple to state). Modes are cloud/screens.py's:
``auto`` (the data decides), ``full``, ``closed``, ``blank``, for the whole screen or one row,
with a reason and an optional end. Setting one writes a row of ``screen_overrides`` (the table
is the signs' own audit trail, with who, why, when and until), a row of the operator audit trail,
and asks the collectors to re-publish the screen (they also re-read the overrides every second).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from cloud.config import ScreenConfig
from cloud.screens import (
    MAX_REASON,
    MODES,
    Override,
    ScreenError,
    UnknownScreen,
    active_overrides,
    override_log,
    set_override,
)
from dashboard import live_state, site_config
from dashboard.auth import audit, operator, role_required
from dashboard.ops_services import ActionRefused, engine, form_time, local_input, refresh, scope_lots, zone
from dashboard.plates import check_reason
from dashboard.users import User, can_see_lot, role_at_least
from protocol import ScreenContent
from protocol.messages import utc_now

bp = Blueprint("signs", __name__, url_prefix="/ops")

LOG_ROWS = 50


def screens_in_scope(user: User) -> list[ScreenConfig]:
    site = site_config(current_app)
    if site is None:
        return []
    return [s for s in site.screens if all(can_see_lot(user, item.lot_id) for item in s.lots)]


def screen_in_scope(user: User, screen_id: str) -> ScreenConfig:
    """The screen, if configured (404) and in the user's scope (403, audited)."""
    site = site_config(current_app)
    screen = next((s for s in site.screens if s.id == screen_id), None) if site else None
    if screen is None:
        abort(404, description=f"no screen {screen_id!r} is configured")
    if not all(can_see_lot(user, item.lot_id) for item in screen.lots):
        audit("access", target=f"screen:{screen_id}", detail=request.path, result="denied")
        abort(403, description=f"screen {screen_id!r} shows lots outside your scope")
    return screen


def mode_texts() -> dict[str, str]:
    return {"auto": _("Automatic"), "full": _("Full"), "closed": _("Closed"), "blank": _("Blank")}


def set_mode(
    user: User, screen: ScreenConfig, mode: str, reason: str, *, lot_id: str | None, until: datetime | None
) -> Override:
    """Set (or with ``auto`` end) a screen's or a row's mode; audited, refreshed."""
    target = f"screen:{screen.id}" + (f"/{lot_id}" if lot_id else "")
    try:
        if mode not in MODES:
            raise ActionRefused(
                400, f"mode {mode!r} is not one of {', '.join(MODES)}", _("Choose a mode."),
            )  # fmt: skip
        reason = check_reason(reason, MAX_REASON)
        if lot_id is not None and all(item.lot_id != lot_id for item in screen.lots):
            raise ActionRefused(
                400, f"screen {screen.id} has no row for lot {lot_id}", _("This sign has no such row.")
            )
        if until is not None and until <= utc_now():
            raise ActionRefused(400, "until is not in the future", _("The end must be in the future."))
        if until is not None and mode == "auto":
            raise ActionRefused(
                400, "until makes no sense with mode auto", _("Automatic needs no end: it is the normal state."),
            )  # fmt: skip
        site = site_config(current_app)
        assert site is not None  # screen_in_scope found the screen in it
        made = set_override(
            engine(), site, screen.id, mode, reason=reason, set_by=user.name, lot_id=lot_id, until=until
        )
    except ActionRefused as err:
        audit("sign.override", target=target, detail=f"{mode[:8]}: {err.message}", result="failed")
        raise
    except UnknownScreen as err:
        raise ActionRefused(404, str(err)) from None
    except ScreenError as err:
        audit("sign.override", target=target, detail=f"{mode[:8]}: {err}", result="failed")
        raise ActionRefused(400, str(err)) from None
    ends = f" until {until.isoformat()}" if until else ""
    audit("sign.override", target=target, detail=f"{mode}{ends}: {reason}")
    refresh(screen_ids=[screen.id])
    return made


@dataclass(frozen=True)
class SignView:
    screen: ScreenConfig
    content: ScreenContent | None  # what the collector last published for it
    whole: Override | None  # the screen-wide mode in force
    rows: dict[str, Override]  # lot id -> the row's mode in force

    def to_json(self) -> dict[str, object]:
        return {
            "screen_id": self.screen.id,
            "name": self.screen.name,
            "lots": [item.lot_id for item in self.screen.lots],
            "content": self.content.model_dump(mode="json") if self.content else None,
            "override": self.whole.as_json() if self.whole else None,
            "row_overrides": {lot: o.as_json() for lot, o in self.rows.items()},
        }


def sign_views(user: User) -> list[SignView]:
    screens = screens_in_scope(user)
    if not screens:
        return []
    overrides = active_overrides(engine())
    contents = live_state(current_app).screens
    return [
        SignView(s, contents.get(s.id), overrides.get((s.id, None)), _row_modes(overrides, s.id))
        for s in screens
    ]


def _row_modes(overrides: dict[tuple[str, str | None], Override], screen_id: str) -> dict[str, Override]:
    return {lot: o for (sid, lot), o in overrides.items() if sid == screen_id and lot is not None}


def scoped_log(user: User, limit: int = LOG_ROWS) -> list[Override]:
    ids = {s.id for s in screens_in_scope(user)}
    if not ids:
        return []
    return [o for o in override_log(engine(), limit=limit * 4) if o.screen_id in ids][:limit]


# -- pages --------------------------------------------------------------------------------------------
def _page(status: int = 200, *, error: str | None = None, error_screen: str | None = None,
          form: dict[str, str] | None = None) -> ResponseReturnValue:  # fmt: skip
    user = operator()
    return render_template(
        "ops/signs.html",
        signs=sign_views(user), log=scoped_log(user), modes=mode_texts(), lots=scope_lots(user),
        can_edit=role_at_least(user, "operator"), has_site=site_config(current_app) is not None,
        error=error, error_screen=error_screen, form=form or {}, zone_name=str(zone()), now=utc_now(),
        reason_max=MAX_REASON, done=request.args.get("done", ""), local_input=local_input,
    ), status  # fmt: skip


@bp.get("/signs")
def index() -> ResponseReturnValue:
    return _page()


@bp.post("/signs/<screen_id>")
@role_required("operator")
def set_sign(screen_id: str) -> ResponseReturnValue:
    user = operator()
    screen = screen_in_scope(user, screen_id)
    form = {k: request.form.get(k, "")[: MAX_REASON + 50] for k in ("target", "mode", "reason", "until")}
    try:
        until = form_time(form["until"], "until")
        made = set_mode(
            user, screen, form["mode"], form["reason"], lot_id=form["target"] or None, until=until
        )
    except ActionRefused as err:
        if err.status == 404:
            abort(404, description=err.message)
        return _page(err.status, error=err.text, error_screen=screen_id, form=form)
    return redirect(url_for("signs.index", done=made.screen_id) + f"#sign-{made.screen_id}", code=303)
