"""The JSON API (v1): availability for drivers' apps and screens, and a live change stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from dashboard import live_state

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def error_response(status: int, message: str) -> tuple[Response, int]:
    """The one JSON error shape: ``{"error": {"status": N, "message": "..."}}``."""
    return jsonify(error={"status": status, "message": message}), status


def http_error(err: HTTPException) -> tuple[Response, int]:
    """JSON errors for the API (and clients that ask for JSON); a page in the site's layout and
    language otherwise (templates/error.html). Headers the error carries (Allow on a 405,
    Retry-After on a 429) are kept."""
    wants_json = request.path.startswith(bp.url_prefix or "/api") or (
        request.accept_mimetypes.best_match(["application/json", "text/html"]) == "application/json"
    )
    status = err.code or 500
    if wants_json:
        response, _ = error_response(status, err.description or err.name)
    else:
        from dashboard.errors import error_page

        response = error_page(err)
    for name, value in err.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response, status


@bp.get("/availability")
def availability() -> Response:
    """Every lot's free spaces, with the time each count was computed."""
    state = live_state(current_app)
    lots = [lot.model_dump(mode="json") for lot in sorted(state.lots.values(), key=lambda x: x.lot_id)]
    return jsonify(
        lots=lots, total_free=sum(x["free"] for x in lots), total_capacity=sum(x["capacity"] for x in lots)
    )


@bp.get("/availability/<lot_id>")
def lot_availability(lot_id: str) -> Response | tuple[Response, int]:
    lot = live_state(current_app).lots.get(lot_id)
    if lot is None:
        return error_response(404, f"no availability for lot {lot_id!r}")
    return jsonify(lot.model_dump(mode="json"))


@bp.get("/screens/<screen_id>")
def screen(screen_id: str) -> Response | tuple[Response, int]:
    content = live_state(current_app).screens.get(screen_id)
    if content is None:
        return error_response(404, f"no content for screen {screen_id!r}")
    return jsonify(content.model_dump(mode="json"))


@bp.get("/stream")
def stream() -> Response:
    """Server-sent events: ``lot``, ``screen`` and ``gate`` changes as they happen.

    A new stream first gets the current state of everything; a reconnecting browser sends
    ``Last-Event-ID`` and gets only what it missed, if that is still kept.
    """
    state = live_state(current_app)
    keepalive = float(current_app.config["SSE_KEEPALIVE_S"])
    last = request.headers.get("Last-Event-ID", "")
    resume = last.isdigit() and int(last) <= state.version

    def events() -> Iterator[str]:
        yield "retry: 2000\n\n"
        if resume:
            version = int(last)
        else:
            version, current = state.snapshot()
            for change in current:
                yield _sse(change.kind, change.version, change.data)
        while True:
            changes = state.changes_since(version, keepalive)
            if not changes:
                yield ": keepalive\n\n"
                continue
            for change in changes:
                version = change.version
                yield _sse(change.kind, change.version, change.data)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(events(), mimetype="text/event-stream", headers=headers)


def _sse(kind: str, version: int, data: dict[str, Any]) -> str:
    return f"id: {version}\nevent: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
