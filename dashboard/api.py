"""The JSON API (v1): availability for drivers' apps and screens, and a live change stream.

Availability is what apps and signs poll, thousands of times a second in a city, and it changes
only when a retained message arrives. So both availability answers are bytes made once per
change of the live state (:class:`AvailabilityCache`: each lot's JSON is the collector's own wire
encoding, the list is those joined) with an ETag (a hash of the bytes, so equal answers have equal
tags in every process and after a restart) and a short ``Cache-Control`` max-age that lets a proxy
or an app absorb polling. :class:`FastAvailability`, a WSGI layer in front of Flask, answers a
plain ``GET`` or ``HEAD`` of them straight from those bytes: no routing, no session, no CSRF,
no language, the security headers from a list made once — nothing a public availability read
needs. Anything else (a query string, an unknown lot) goes through Flask as usual, where the views
answer from the same cache, so both paths send the same bytes and headers.

``parkgate dashboard`` goes one step further (:func:`waitress_server`): waitress's I/O thread
answers those reads itself the moment they are parsed, as whole HTTP responses, so they never
wait for or cost a worker thread (:class:`InlineChannel`). ``python -m bench.api_load`` measures it.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from pydantic import BaseModel, ConfigDict, Field
from waitress.channel import ClientDisconnected, HTTPChannel
from waitress.task import ThreadedTaskDispatcher
from werkzeug.exceptions import HTTPException

from dashboard import live_state
from dashboard.live import LiveState
from dashboard.openapi import header, operation
from protocol import GateStatus, LotAvailability, ScreenContent, encode

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

bp = Blueprint("api", __name__, url_prefix="/api/v1")

AVAILABILITY = "/api/v1/availability"
CACHE_CONTROL = "public, max-age=2"  # counts change within seconds; 2 s lets a proxy or app absorb polling
CACHE_KEY = "parkgate.availability"
SSE_ID = re.compile(r"[0-9]{1,18}")


class QueryError(ValueError):
    """A query parameter that cannot be used; the message names it (answered 400)."""


def strict_params(allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each at most once, none unknown or empty, stripped."""
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        known = ", ".join(allowed) if allowed else "none"
        raise QueryError(f"unknown query parameter(s): {', '.join(unknown)} (accepted: {known})")
    out = {}
    for name in request.args:
        values = request.args.getlist(name)
        if len(values) > 1:
            raise QueryError(f"{name} given {len(values)} times; give it once")
        if not values[0].strip():
            raise QueryError(f"{name} is empty")
        out[name] = values[0].strip()
    return out


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


class Availability(BaseModel):
    """Every lot's availability, by lot id, and the city's totals."""

    model_config = ConfigDict(extra="forbid")

    lots: list[LotAvailability]
    total_free: int = Field(ge=0, description="free spaces over every lot")
    total_capacity: int = Field(ge=0, description="spaces over every lot")


# -- availability encoded once per change -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Encoded:
    """One answer: its bytes and their ETag."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, body: bytes) -> Encoded:
        return cls(body, f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"')

    def matches(self, if_none_match: str | None) -> bool:
        """Whether an If-None-Match header names this answer (weak comparison, as RFC 9110 says)."""
        if not if_none_match:
            return False
        tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
        return "*" in tags or self.etag in tags


@dataclass(frozen=True, slots=True)
class _Snapshot:
    version: int
    every: Encoded
    lots: dict[str, tuple[LotAvailability, Encoded]]


class AvailabilityCache:
    """The availability answers of a live state as bytes, remade when the state's version moves.

    Remaking costs only what changed: a lot's JSON is kept while its message is the same object,
    and the whole list is joined again only when a lot changed (gate heartbeats and screens move
    the version too). Readers never wait unless the state changed since the last answer."""

    def __init__(self, state: LiveState) -> None:
        self.state = state
        self._lock = threading.Lock()
        # before the first lot arrives the answer is an empty list (never an empty body)
        self._snap = _Snapshot(-1, Encoded.of(b'{"lots":[],"total_free":0,"total_capacity":0}'), {})

    def current(self) -> _Snapshot:
        snap = self._snap
        if snap.version != self.state.version:
            snap = self._remake()
        return snap

    def every(self) -> Encoded:
        return self.current().every

    def lot(self, lot_id: str) -> Encoded | None:
        found = self.current().lots.get(lot_id)
        return found[1] if found else None

    def _remake(self) -> _Snapshot:
        with self._lock:
            old = self._snap
            version = self.state.version  # read before the lots: a change in between remakes again
            if old.version == version:
                return old
            lots = sorted(self.state.lots.items())  # one C-level copy, safe against the MQTT thread
            unchanged = len(lots) == len(old.lots) and all(
                (seen := old.lots.get(lot_id)) is not None and seen[0] is lot for lot_id, lot in lots
            )
            if unchanged:
                snap = _Snapshot(version, old.every, old.lots)
            else:
                fresh = {}
                for lot_id, lot in lots:
                    seen = old.lots.get(lot_id)
                    fresh[lot_id] = (
                        seen if seen is not None and seen[0] is lot else (lot, Encoded.of(encode(lot)))
                    )
                free = sum(lot.free for _, lot in lots)
                capacity = sum(lot.capacity for _, lot in lots)
                body = b'{"lots":[%b],"total_free":%d,"total_capacity":%d}' % (
                    b",".join(item[1].body for item in fresh.values()),
                    free,
                    capacity,
                )
                snap = _Snapshot(version, Encoded.of(body), fresh)
            self._snap = snap
            return snap


def availability_cache(app: Flask) -> AvailabilityCache:
    cache: AvailabilityCache | None = app.extensions.get(CACHE_KEY)
    if cache is None:
        cache = app.extensions[CACHE_KEY] = AvailabilityCache(live_state(app))
    return cache


_date = (0, "")


def http_date() -> str:
    """The Date header's value, made once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True))
    return _date[1]


def _answer(encoded: Encoded) -> Response:
    if encoded.matches(request.headers.get("If-None-Match")):
        response = Response(status=304)
    else:
        response = Response(encoded.body, mimetype="application/json")
    response.headers["ETag"] = encoded.etag
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


class FastAvailability:
    """WSGI layer: a plain ``GET``/``HEAD`` of the availability of every lot or of a known lot,
    with no query string, answered from the cache without entering Flask (see the module
    docstring). ``headers`` are the security headers every response carries (dashboard/security.py),
    made once."""

    def __init__(self, app: WSGIApplication, cache: AvailabilityCache, headers: Iterable[tuple[str, str]]):
        self.app = app
        self.cache = cache
        self.headers = [*headers, ("Cache-Control", CACHE_CONTROL)]
        self.header_lines = [f"{name}: {value}" for name, value in self.headers]
        self.one_prefix = AVAILABILITY + "/"

    def _find(self, method: str, path: str, query: str) -> Encoded | None:
        if (method != "GET" and method != "HEAD") or query:
            return None
        if path == AVAILABILITY:
            return self.cache.every()
        if path.startswith(self.one_prefix):
            return self.cache.lot(path[len(self.one_prefix) :])
        return None

    def http_response(
        self,
        method: str,
        path: str,
        query: str,
        version: str,
        if_none_match: str | None,
        connection: str,
        ident: str,
    ) -> tuple[bytes, bool] | None:
        """(the whole HTTP/1.x response, close the connection after it) for a request this layer
        answers, else None: what waitress sends for the WSGI answer, for :class:`InlineChannel`
        (``connection``: the request's Connection header; ``ident``: the Server header)."""
        encoded = self._find(method, path, query)
        if encoded is None:
            return None
        keep = connection.lower()
        close = keep == "close" if version == "1.1" else keep != "keep-alive"
        not_modified = encoded.matches(if_none_match)
        lines = [
            f"HTTP/{version} {'304 Not Modified' if not_modified else '200 OK'}", *self.header_lines,
            f"ETag: {encoded.etag}", f"Date: {http_date()}", f"Server: {ident}",
        ]  # fmt: skip
        if not not_modified:
            lines += ["Content-Type: application/json", f"Content-Length: {len(encoded.body)}"]
        if close and version == "1.1":
            lines.append("Connection: close")
        elif not close and version == "1.0":
            lines.append("Connection: Keep-Alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return (head if not_modified or method == "HEAD" else head + encoded.body), close

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        encoded = self._find(method, environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""))
        if encoded is None:
            return self.app(environ, start_response)
        return self._send(encoded, method == "HEAD", environ.get("HTTP_IF_NONE_MATCH"), start_response)

    def _send(
        self, encoded: Encoded, head: bool, if_none_match: str | None, start_response: StartResponse
    ) -> list[bytes]:
        if encoded.matches(if_none_match):
            start_response("304 Not Modified", [("ETag", encoded.etag), *self.headers])
            return []
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Content-Length", str(len(encoded.body))),
             ("ETag", encoded.etag), *self.headers],
        )  # fmt: skip
        return [] if head else [encoded.body]


# -- answering them without a worker thread (waitress) ----------------------------------------------
class InlineChannel(HTTPChannel):
    """A waitress connection whose fast availability reads are answered where they are parsed.

    Waitress hands every request to a worker thread and back (a condition wakes the worker, a pipe
    wakes the I/O loop) and builds a WSGI environ and the response headers in Python: for an
    answer that already is bytes that costs several times the answer. Here the request is answered
    as soon as the parser completes it (:meth:`InlineDispatcher.add_task`): the response bytes from
    :meth:`FastAvailability.http_response`, sent on the socket at once (what it does not take yet
    goes through the channel's own ``write_soon``). Only when nothing of this connection is still
    waiting to be sent, so the order holds and this never waits for output; anything else, and
    an error, goes to the worker threads as usual."""

    fast: FastAvailability | None = None  # set on the subclass made per server
    requests: list[Any]  # waitress's, declared for the type checker
    close_when_flushed: bool
    total_outbufs_len: int
    connected: bool

    def answer_first(self) -> bool:
        """Answer and drop the first queued request if it is a fast read; called with
        ``requests_lock`` held (by the parser, or by a worker that finished the request before)."""
        if self.fast is None or self.total_outbufs_len or self.close_when_flushed or not self.connected:
            return False
        request = self.requests[0]
        if request.error or request.version not in ("1.0", "1.1"):
            return False
        answer = self.fast.http_response(
            request.command, request.path, request.query, request.version,
            request.headers.get("IF_NONE_MATCH"), request.headers.get("CONNECTION", ""), self.adj.ident,
        )  # fmt: skip
        if answer is None:
            return False
        data, close = answer
        sent = self.send(data, do_close=False)  # straight to the socket: nothing is queued before it
        if sent < len(data):
            try:
                self.write_soon(data[sent:] if sent else data)  # the rest when the socket takes it
            except ClientDisconnected:
                close = True
        request.close()
        self.requests.pop(0)
        if close:
            self.close_when_flushed = True
            for rest in self.requests:
                rest.close()
            self.requests = []
        self.last_activity = time.time()
        return True


class InlineDispatcher(ThreadedTaskDispatcher):
    """Waitress's worker threads, except for the requests an :class:`InlineChannel` answers itself."""

    def add_task(self, task: Any) -> None:
        if isinstance(task, InlineChannel):
            # after an answer that closes the connection, what was pipelined behind it is dropped
            if task.close_when_flushed:
                for request in task.requests:
                    request.close()
                task.requests = []
            while task.requests and task.answer_first():
                pass
            if not task.requests:
                return
        super().add_task(task)


def stop_server(server: Any, thread: threading.Thread, timeout: float = 5.0) -> None:
    """Stop a waitress server running ``server.run`` in ``thread``: everything it has open is
    closed from its own loop (its trigger), which then ends, and the thread is joined. Closing its
    sockets from another thread left the loop running on descriptor numbers the process then gave
    to other files (seen as "file is not a database" in a later SQLite connection)."""
    from waitress import wasyncore

    server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
    thread.join(timeout)


def waitress_server(app: Flask, **adjustments: Any) -> Any:
    """A waitress server (``create_server`` with these adjustments) for the dashboard ``app`` that
    answers its fast availability reads without a worker thread (:class:`InlineChannel`)."""
    from waitress import create_server

    fast: Any = app.wsgi_app
    while not isinstance(fast, FastAvailability):  # under ProxyFix or any later layer
        fast = getattr(fast, "app", None)
        if fast is None:
            raise TypeError("the app has no FastAvailability layer (dashboard.create_app adds it)")
    dispatcher = InlineDispatcher()
    dispatcher.set_thread_count(int(adjustments.get("threads", 4)))
    server = create_server(app, _dispatcher=dispatcher, **adjustments)
    server.channel_class = type("DashboardChannel", (InlineChannel,), {"fast": fast})
    return server


# -- views -------------------------------------------------------------------------------------------
@bp.get("/availability")
@operation(Availability, cache=CACHE_CONTROL)
def availability() -> Response:
    """Every lot's free spaces, with the time each count was computed."""
    return _answer(availability_cache(current_app).every())


@bp.get("/availability/<lot_id>")
@operation(LotAvailability, cache=CACHE_CONTROL)
def lot_availability(lot_id: str) -> Response | tuple[Response, int]:
    """One lot's free spaces, with the time the count was computed."""
    encoded = availability_cache(current_app).lot(lot_id)
    if encoded is None:
        return error_response(404, f"no availability for lot {lot_id!r}")
    return _answer(encoded)


@bp.get("/screens/<screen_id>")
@operation(ScreenContent)
def screen(screen_id: str) -> Response | tuple[Response, int]:
    """What a guidance screen shows now: each row's text, state and data age."""
    content = live_state(current_app).screens.get(screen_id)
    if content is None:
        return error_response(404, f"no content for screen {screen_id!r}")
    return jsonify(content.model_dump(mode="json"))


@bp.get("/stream")
@operation(
    events={"lot": LotAvailability, "screen": ScreenContent, "gate": GateStatus},
    params=(header("Last-Event-ID", "the id of the last event seen: resume after it if still kept"),),
)
def stream() -> Response:
    """Server-sent events: ``lot``, ``screen`` and ``gate`` changes as they happen.

    A new stream first gets the current state of everything; a reconnecting browser sends
    ``Last-Event-ID`` and gets only what it missed, if that is still kept.
    """
    state = live_state(current_app)
    keepalive = float(current_app.config["SSE_KEEPALIVE_S"])
    last = last_event_id()
    resume_at = last if last is not None and last <= state.version else None

    def events() -> Iterator[str]:
        yield "retry: 2000\n\n"
        if resume_at is not None:
            version = resume_at
        else:
            version, current = state.snapshot()
            for change in current:
                yield sse(change.kind, change.data, change.version)
        while True:
            changes = state.changes_since(version, keepalive)
            if not changes:
                yield ": keepalive\n\n"
                continue
            for change in changes:
                version = change.version
                yield sse(change.kind, change.data, change.version)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(events(), mimetype="text/event-stream", headers=headers)


def sse(kind: str, data: dict[str, Any], event_id: int | None = None) -> str:
    """One server-sent event (every stream of the dashboard frames its events so)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def last_event_id() -> int | None:
    """The request's ``Last-Event-ID`` (a browser resuming a stream), if it is a number."""
    value = request.headers.get("Last-Event-ID", "")
    return int(value) if SSE_ID.fullmatch(value) else None
