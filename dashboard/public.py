"""Pages for everyone: the city overview of free spaces and the guidance-screen pages."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template, url_for

from dashboard import live_state

bp = Blueprint("public", __name__)


@bp.get("/")
def index() -> str:
    state = live_state(current_app)
    return render_template(
        "index.html",
        lots=[lot.model_dump(mode="json") for lot in sorted(state.lots.values(), key=lambda x: x.lot_id)],
        screens=[{"screen_id": s.screen_id, "name": s.name} for s in state.screens.values()],
        stream_url=url_for("api.stream"),
        api_url=url_for("api.availability"),
    )


@bp.get("/screens/<screen_id>")
def screen(screen_id: str) -> str:
    state = live_state(current_app)
    content = state.screens.get(screen_id)
    if content is None and len(screen_id) > 64:
        abort(404)
    return render_template(
        "screen.html",
        screen=content.model_dump(mode="json") if content else None,
        screen_id=screen_id,
        stream_url=url_for("api.stream"),
    )


@bp.get("/healthz")
def healthz() -> dict[str, object]:
    state = live_state(current_app)
    return {"status": "ok", "lots": len(state.lots), "screens": len(state.screens), "version": state.version}
