"""Inspection stations on the dashboard (Flask test client, real SQLite database, the real
cloud/intruders.py raising the alerts): scopes by station, roles, CSRF, a reason and a
confirmation for every unlock, both audit trails, escaping, the live stream, pass rates; and the
public "lots near me" page (typed places, coordinates, its geolocation permission)."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import ValidationError
from sqlalchemy.orm import Session
from ulid import ULID
from werkzeug.test import TestResponse

from cloud.config import CollectorConfig
from cloud.events_store import open_engine
from cloud.intruders import SYSTEM, AlertRow, AuditRow, InspectionAreas, ResultRow
from dashboard import create_app, live_state, stop_background
from dashboard.config import DashboardConfig
from dashboard.inspection_feed import WATCH_KEY, InspectionWatch
from dashboard.near import Spot, normalize, resolve
from dashboard.users import UserStore
from parkgate.demo import write_toml
from protocol import (
    Action,
    Decision,
    Direction,
    GateEvent,
    GateStatus,
    InspectionResult,
    LotAvailability,
    Reason,
)
from protocol.messages import utc_now

PASSWORDS = {"olga": "olga-password-1", "vera": "vera-password-1", "boss": "boss-password-1"}
EVIL = "<script>alert(1)</script>"
PLATE_A, PLATE_B = "冀F12345", "鄂A11111"
SITE = {
    "lots": [
        {"id": "L1", "name": "江汉路停车场", "capacity": 10, "lat": 30.5800, "lon": 114.2900},
        {"id": "L2", "name": "汉街停车场", "capacity": 10, "lat": 30.5600, "lon": 114.3400},
    ],
    "stations": [
        {"id": "ST1", "name": "保定检测站"},
        {"id": "ST2", "name": "武汉检测站"},
        {"id": "ST3", "name": "石家庄检测站"},
        {"id": "ST4", "name": "唐山检测站"},
    ],
}
PLACES = [
    {"name": "江汉路步行街", "lat": 30.5810, "lon": 114.2880},
    {"name": "汉口火车站", "lat": 30.6180, "lon": 114.2550},
]
_seq = iter(range(1, 1_000_000))


def entries(station: str, plate: str, n: int, start: datetime) -> list[GateEvent]:
    return [
        GateEvent(
            id=str(ULID()), epoch="EPOCH0001", seq=next(_seq), ts=start + timedelta(minutes=10 * i),
            lot_id=station, gate_id=f"{station}-L1", direction=Direction.ENTRY, plate=plate, confidence=0.9,
            decision=Decision(action=Action.OPEN, reason=Reason.SPACE_FREE),
        )
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Accounts (an operator and a viewer of ST1, an admin of all) and, through the real module,
    a warning and a lock at ST1 and at ST2; plus an alert whose subject is a script (a database
    row is not checked the way a message on the wire is)."""
    folder = tmp_path_factory.mktemp("inspection")
    url = f"sqlite:///{folder / 'events.sqlite'}"
    store = UserStore(url)
    store.add_user("olga", PASSWORDS["olga"], "operator", stations="ST1")
    store.add_user("vera", PASSWORDS["vera"], "viewer", stations="ST1")
    store.add_user("boss", PASSWORDS["boss"], "admin")
    store.close()
    engine = open_engine(url)
    areas = InspectionAreas(engine, CollectorConfig.model_validate({**SITE, "database": url}))
    start = utc_now() - timedelta(hours=2)
    areas.on_events(entries("ST1", PLATE_A, 3, start))
    areas.on_events(entries("ST2", PLATE_B, 3, start))
    long_ago = start - timedelta(days=400)  # before any month a station page shows
    with Session(engine) as s, s.begin():  # rows as a careless tool could have written them
        row = AlertRow(
            station_id="ST1", subject_kind="plate", subject=EVIL, kind="warn", rule="entries", count=2,
            ts=start, event_id="E" * 26, detail=f"2 entries of plate {EVIL}", status="open", created_at=start,
        )  # fmt: skip
        s.add(row)
        s.flush()
        s.add(
            AuditRow(
                alert_id=row.id, station_id="ST1", subject_kind="plate", subject=EVIL, action="warn",
                actor=SYSTEM, at=start, why=f"why {EVIL}", status="open",
            )
        )  # fmt: skip
        s.add(
            ResultRow(
                id="R" * 26, station_id="ST1", gate_id="ST1-L1", ts=long_ago, month=long_ago.strftime("%Y-%m"),
                plate=EVIL, booking=None, person=None, passed=False,
            )
        )  # fmt: skip
    engine.dispose()
    return folder


@pytest.fixture
def app(tmp_path: Path, seeded: Path) -> Iterator[Flask]:
    shutil.copy(seeded / "events.sqlite", tmp_path / "events.sqlite")
    url = f"sqlite:///{tmp_path / 'events.sqlite'}"
    site = write_toml(tmp_path / "collector.toml", {**SITE, "database": url})
    cfg = DashboardConfig(
        database=url, collector_config=site, secret_key_file=tmp_path / "secret.key", places=PLACES
    )
    app = create_app(
        {
            "PARKGATE": cfg,
            "LIVE_FEED": False,
            "TESTING": True,
            "SSE_KEEPALIVE_S": 0.3,
            "INSPECTION_POLL_S": 0.05,
        }
    )
    app.extensions["test.areas"] = InspectionAreas(
        open_engine(url), CollectorConfig.model_validate({**SITE, "database": url})
    )
    yield app
    app.extensions["test.areas"].engine.dispose()
    stop_background(app)


def areas_of(app: Flask) -> InspectionAreas:
    """The inspection module as the collector runs it, on the test's database."""
    areas: InspectionAreas = app.extensions["test.areas"]
    return areas


def logged_in(app: Flask, name: str) -> FlaskClient:
    client = app.test_client()
    html = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert token
    data = {"name": name, "password": PASSWORDS[name], "csrf_token": token.group(1)}
    assert client.post("/login", data=data).status_code == 302
    return client


def csrf(client: FlaskClient) -> str:
    found = re.search(
        r'<meta name="csrf-token" content="([^"]+)">', client.get("/ops/alerts").get_data(as_text=True)
    )
    assert found
    return found.group(1)


def lock_of(app: Flask, plate: str) -> int:
    return next(a.id for a in areas_of(app).alerts(subject=plate) if a.kind == "lock")


def post(client: FlaskClient, path: str, body: object, token: str | None) -> TestResponse:
    return client.post(path, json=body, headers={"X-CSRFToken": token} if token else {})


def unlock(client: FlaskClient, alert_id: int, body: object, token: str | None) -> TestResponse:
    return post(client, f"/api/v1/ops/inspection/alerts/{alert_id}/unlock", body, token)


def operator_trail(app: Flask, user: str) -> list[tuple[str, str, str, str]]:
    store: UserStore = app.extensions["parkgate.users"]
    return [(r.action, r.target, r.result, r.detail) for r in store.audit_trail(user=user)]


# -- scope ------------------------------------------------------------------------------------------
def test_a_user_scoped_to_station_a_cannot_see_station_b(app: Flask) -> None:
    client = logged_in(app, "olga")
    page = client.get("/ops/alerts").get_data(as_text=True)
    assert PLATE_A in page and PLATE_B not in page and "武汉检测站" not in page
    listed = client.get("/api/v1/ops/inspection/alerts").get_json()["alerts"]
    assert {a["station_id"] for a in listed} == {"ST1"}
    b_lock = lock_of(app, PLATE_B)
    for path in (
        "/ops/alerts?station=ST2", "/ops/stations/ST2", f"/ops/alerts/{b_lock}/card",
        "/api/v1/ops/inspection/stations/ST2", f"/api/v1/ops/inspection/alerts/{b_lock}",
        "/api/v1/ops/inspection/alerts?station=ST2", "/api/v1/ops/inspection/stream?station=ST2",
    ):  # fmt: skip
        assert client.get(path).status_code == 403, path
    resp = client.get(f"/api/v1/ops/inspection/alerts/{b_lock}")
    assert resp.get_json() == {"error": {"status": 403, "message": "station 'ST2' is outside your scope"}}
    assert unlock(client, b_lock, {"reason": "try", "confirm": True}, csrf(client)).status_code == 403
    assert areas_of(app).locked("ST2") == ([PLATE_B], [])
    stations = client.get("/api/v1/ops/inspection/stations").get_json()["stations"]
    assert [s["id"] for s in stations] == ["ST1"]
    assert "ST2" not in client.get("/ops/stations").get_data(as_text=True)
    denied = [r for r in operator_trail(app, "olga") if r[2] == "denied"]
    assert ("access", "station:ST2", "denied", "/ops/stations/ST2") in denied

    boss = logged_in(app, "boss")
    both = boss.get("/ops/alerts").get_data(as_text=True)
    assert PLATE_A in both and PLATE_B in both
    assert boss.get("/ops/stations/ST2").status_code == 200
    assert client.get("/ops/stations/NOPE").status_code == 404


# -- roles, CSRF, reasons ---------------------------------------------------------------------------
def test_viewer_can_look_but_cannot_review_or_unlock(app: Flask) -> None:
    client = logged_in(app, "vera")
    lock = lock_of(app, PLATE_A)
    page = client.get("/ops/alerts").get_data(as_text=True)
    assert PLATE_A in page
    assert 'data-action="unlock"' not in page and 'data-action="review"' not in page
    token = csrf(client)
    resp = unlock(client, lock, {"reason": "I am only a viewer", "confirm": True}, token)
    assert resp.status_code == 403
    assert resp.get_json()["error"]["message"] == "this needs the operator role; vera is viewer"
    assert (
        post(client, f"/api/v1/ops/inspection/alerts/{lock}/review", {"note": "x"}, token).status_code == 403
    )
    form = {"csrf_token": token, "reason": "no", "confirm": "yes"}
    assert client.post(f"/ops/alerts/{lock}/unlock", data=form).status_code == 403
    assert PLATE_A in areas_of(app).locked("ST1")[0]
    assert [a.action for a in areas_of(app).audit(alert_id=lock)] == ["lock"]
    refused = [(r[0], r[2]) for r in operator_trail(app, "vera") if r[0] != "login"]
    assert refused == [("access", "denied")] * 3


def test_unlock_needs_a_reason_a_confirmation_and_the_csrf_token(app: Flask) -> None:
    client = logged_in(app, "olga")
    lock = lock_of(app, PLATE_A)
    assert unlock(client, lock, {"reason": "checked", "confirm": True}, None).status_code == 400  # no token
    token = csrf(client)
    for body, message in [
        ({"confirm": True}, "reason: required, 1-400 characters"),
        ({"reason": "   ", "confirm": True}, "reason: required, 1-400 characters"),
        ({"reason": "x" * 401, "confirm": True}, "reason: at most 400 characters, got 401"),
        ({"reason": "owner explained", "confirm": "yes"}, "confirm: send true to confirm the unlock"),
        ({"reason": "owner explained"}, "confirm: send true to confirm the unlock"),
        ("not an object", 'send a JSON object: {"reason": "...", "confirm": true}'),
    ]:
        resp = unlock(client, lock, body, token)
        assert resp.status_code == 400, body
        assert resp.get_json() == {"error": {"status": 400, "message": message}}
    assert PLATE_A in areas_of(app).locked("ST1")[0]
    assert [a.action for a in areas_of(app).audit(alert_id=lock)] == ["lock"]
    failed = [(r[0], r[2]) for r in operator_trail(app, "olga") if r[0] == "alert.unlock"]
    assert failed == [("alert.unlock", "failed")] * 6
    assert (
        post(client, f"/api/v1/ops/inspection/alerts/{lock}/review", {"note": ""}, token).status_code == 400
    )


def test_review_then_unlock_are_written_to_both_audit_trails(app: Flask) -> None:
    client = logged_in(app, "olga")
    token = csrf(client)
    lock = lock_of(app, PLATE_A)
    resp = post(client, f"/api/v1/ops/inspection/alerts/{lock}/review", {"note": "video checked"}, token)
    assert resp.status_code == 200 and resp.get_json()["status"] == "reviewed"
    assert PLATE_A in areas_of(app).locked("ST1")[0]  # a review does not lift the lock

    resp = unlock(client, lock, {"reason": "owner's repeat visits explained", "confirm": True}, token)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["alert"]["status"] == "unlocked" and body["alert"]["in_force"] is False
    assert body["locked"] == [] and body["locked_persons"] == []
    assert body["lanes_notified"] is False  # no broker here: the collector's re-publish carries it
    steps = [(s["action"], s["actor"], s["why"]) for s in body["alert"]["history"]]
    assert steps[1:] == [
        ("review", "olga", "video checked"),
        ("unlock", "olga", "owner's repeat visits explained"),
    ]
    trail = [(t.action, t.actor, t.status) for t in areas_of(app).audit(alert_id=lock)]
    assert trail == [
        ("lock", SYSTEM, "locked"),
        ("review", "olga", "reviewed"),
        ("unlock", "olga", "unlocked"),
    ]
    assert PLATE_A not in areas_of(app).locked("ST1")[0]

    ops = [r for r in operator_trail(app, "olga") if r[0].startswith("alert.")]
    assert ops[0][:3] == ("alert.unlock", f"alert:{lock}", "ok")
    assert f"ST1 plate {PLATE_A}: owner's repeat visits explained" in ops[0][3]
    assert ops[1] == ("alert.review", f"alert:{lock}", "ok", f"ST1 plate {PLATE_A}: video checked")

    again = unlock(client, lock, {"reason": "twice", "confirm": True}, token)
    assert again.status_code == 409
    assert (
        again.get_json()["error"]["message"]
        == f"alert {lock} is unlocked lock: only a lock in force can be unlocked"
    )
    assert operator_trail(app, "olga")[0][:3] == ("alert.unlock", f"alert:{lock}", "failed")
    assert client.get("/api/v1/ops/inspection/alerts/999999").status_code == 404


def test_plain_form_unlock_works_without_javascript(app: Flask) -> None:
    client = logged_in(app, "olga")
    lock = lock_of(app, PLATE_A)
    page = client.get("/ops/alerts").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token and f'action="/ops/alerts/{lock}/unlock"' in page
    form = {"csrf_token": token.group(1), "reason": "cleared after interview", "station": "ST1"}
    resp = client.post(f"/ops/alerts/{lock}/unlock", data=form)  # the box not ticked
    assert resp.status_code == 302 and resp.headers["Location"] == f"/ops/alerts?station=ST1#alert-{lock}"
    assert "请勾选确认框以确认解锁" in client.get("/ops/alerts").get_data(as_text=True)
    assert PLATE_A in areas_of(app).locked("ST1")[0]
    assert (
        client.post(
            f"/ops/alerts/{lock}/unlock", data={**form, "confirm": "yes", "csrf_token": ""}
        ).status_code
        == 400
    )
    resp = client.post(f"/ops/alerts/{lock}/unlock", data={**form, "confirm": "yes"})
    assert resp.status_code == 302
    shown = client.get("/ops/alerts?show=all").get_data(as_text=True)
    assert f"{PLATE_A} 已解锁" in shown
    assert PLATE_A not in areas_of(app).locked("ST1")[0]


def test_a_script_as_a_plate_is_escaped_everywhere(app: Flask) -> None:
    client = logged_in(app, "olga")
    evil = next(a.id for a in areas_of(app).alerts(subject=EVIL))
    for path in ("/ops/alerts", f"/ops/alerts/{evil}/card", "/ops/stations/ST1"):
        html = client.get(path).get_data(as_text=True)
        assert EVIL not in html, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path
    assert client.get(f"/api/v1/ops/inspection/alerts/{evil}").get_json()["subject"] == EVIL


# -- station page -----------------------------------------------------------------------------------
def results(station: str, month: datetime, passed: int, failed: int) -> list[InspectionResult]:
    return [
        InspectionResult(
            id=str(ULID()), ts=month + timedelta(minutes=i), station=station, gate_id=f"{station}-L1",
            plate=PLATE_A, result="pass" if i < passed else "fail",
        )
        for i in range(passed + failed)
    ]  # fmt: skip


def test_station_page_lanes_results_locks_and_pass_rates(app: Flask) -> None:
    now = utc_now()
    live_state(app).put(
        GateStatus(gate_id="ST1-L1", lot_id="ST1", state="online", ts=now, mode="free_exit", barrier="closed")
    )
    live_state(app).put(GateStatus(gate_id="ST1-L2", lot_id="ST1", state="offline", ts=now))
    live_state(app).put(GateStatus(gate_id="ST2-L1", lot_id="ST2", state="online", ts=now))
    areas = areas_of(app)
    this_month = now.replace(day=1, hour=2, minute=0, second=0, microsecond=0)
    months = [this_month]
    for _n in range(2):
        months.insert(0, (months[0] - timedelta(days=1)).replace(day=1))
    for month in months:  # ST3 passes everyone, three months running: flagged
        areas.on_results(results("ST1", month, 32, 8) + results("ST2", month, 30, 10))
        areas.on_results(results("ST3", month, 40, 0) + results("ST4", month, 31, 9))

    boss = logged_in(app, "boss")
    html = boss.get("/ops/stations/ST1").get_data(as_text=True)
    assert 'id="lane-ST1-L1"' in html and "自由出场" in html and 'id="lane-ST1-L2"' in html
    assert "ST2-L1" not in html
    assert html.count('class="result result-') == 20  # the newest 20 of 121
    assert f"#alert-{lock_of(app, PLATE_A)}" in html and PLATE_A in html  # the lock, linked to its alert
    assert re.search(r'<tr class="is-flagged" id="rates-ST3">', html)
    assert '<tr class="" id="rates-ST2">' in html
    assert re.search(r'id="rate-now">80\.0', html)  # ST1: 32 of 40

    olga = logged_in(app, "olga")
    mine = olga.get("/ops/stations/ST1").get_data(as_text=True)
    assert 'id="rates-ST1"' in mine and 'id="rates-ST3"' not in mine  # the band, not the others' rates
    rates = olga.get("/api/v1/ops/inspection/pass-rates").get_json()
    assert [s["id"] for s in rates["stations"]] == ["ST1"]
    assert [m["band_high"] is not None for m in rates["stations"][0]["months"]] == [True] * 3
    flagged = boss.get("/api/v1/ops/inspection/pass-rates").get_json()["stations"]
    assert {s["id"]: s["flagged"] for s in flagged} == {"ST1": False, "ST2": False, "ST3": True, "ST4": False}
    listing = boss.get("/ops/stations").get_data(as_text=True)
    assert re.search(r'class="card station-card is-flagged" id="station-ST3"', listing)
    detail = olga.get("/api/v1/ops/inspection/stations/ST1").get_json()
    assert [g["gate_id"] for g in detail["lanes"]] == ["ST1-L1", "ST1-L2"]
    assert len(detail["results"]) == 20 and {r["result"] for r in detail["results"]} == {"pass", "fail"}


# -- the live stream --------------------------------------------------------------------------------
def read_until(chunks: Iterator[bytes], wanted: str, timeout: float = 5.0) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += next(chunks).decode()
        if wanted in seen:
            return seen
    raise AssertionError(f"{wanted!r} not in the stream within {timeout} s: {seen!r}")


def test_stream_sends_steps_results_and_lanes_of_the_stations_in_scope(app: Flask) -> None:
    client = logged_in(app, "olga")
    cursor = re.search(r'data-cursor="(\d+)"', client.get("/ops/alerts").get_data(as_text=True))
    assert cursor
    resp = client.get("/api/v1/ops/inspection/stream", buffered=False)
    chunks = iter(resp.response)
    assert next(chunks).startswith(b"retry:")
    areas = areas_of(app)
    start = utc_now() - timedelta(minutes=30)
    areas.on_events(entries("ST2", "鄂A22222", 2, start))  # another station's warning: not for olga
    areas.on_events(entries("ST1", "冀F77777", 2, start))
    text = read_until(chunks, "冀F77777")
    assert "event: step" in text and '"action": "warn"' in text and "鄂A22222" not in text
    step_id = re.search(r"id: (\d+)\nevent: step", text)
    assert step_id and int(step_id.group(1)) > int(cursor.group(1))

    live_state(app).put(GateStatus(gate_id="ST2-L1", lot_id="ST2", state="online", ts=utc_now()))
    live_state(app).put(GateStatus(gate_id="ST1-L1", lot_id="ST1", state="offline", ts=utc_now()))
    text = read_until(chunks, "ST1-L1")
    assert "event: gate" in text and "ST2-L1" not in text

    watch: InspectionWatch = app.extensions[WATCH_KEY]  # a result as the broker hands it over
    watch.put("result", "ST2", {"id": "r2", "station_id": "ST2"})
    watch.put("result", "ST1", {"id": "r1", "station_id": "ST1", "plate": PLATE_A, "result": "fail"})
    text = read_until(chunks, '"id": "r1"')
    assert "event: result" in text and '"id": "r2"' not in text
    resp.close()

    # a page made before those steps, or a browser coming back, gets what it missed
    resumed = client.get(f"/api/v1/ops/inspection/stream?after={cursor.group(1)}", buffered=False)
    text = read_until(iter(resumed.response), "冀F77777")
    assert "鄂A22222" not in text
    resumed.close()


def test_without_stations_the_pages_say_so(tmp_path: Path, seeded: Path) -> None:
    shutil.copy(seeded / "events.sqlite", tmp_path / "events.sqlite")
    cfg = DashboardConfig(
        database=f"sqlite:///{tmp_path / 'events.sqlite'}", secret_key_file=tmp_path / "k.key"
    )
    app = create_app({"PARKGATE": cfg, "LIVE_FEED": False, "TESTING": True})
    client = logged_in(app, "boss")
    assert "没有检测站" in client.get("/ops/alerts").get_data(as_text=True)
    assert "没有检测站" in client.get("/ops/stations").get_data(as_text=True)
    assert client.get("/ops/stations/ST1").status_code == 404
    assert client.get("/api/v1/ops/inspection/alerts").get_json() == {"alerts": [], "count": 0}
    assert client.get("/api/v1/ops/inspection/pass-rates").status_code == 503


# -- lots near me -----------------------------------------------------------------------------------
def test_typed_places_and_lot_names_resolve_without_the_internet() -> None:
    spots = [
        Spot("江汉路步行街", 30.581, 114.288, "place"),
        Spot("江汉路停车场", 30.58, 114.29, "lot", "L1"),
        Spot("汉街停车场", 30.56, 114.34, "lot", "L2"),
    ]
    assert resolve("江汉路步行街", spots).spot == spots[0]
    assert resolve(" 江汉路 步行街 ", spots).spot == spots[0]  # spaces do not matter
    assert resolve("l2", spots).spot == spots[2]  # a lot id
    assert resolve("Ｌ１", spots).spot == spots[1]  # full-width, as a phone keyboard may type it
    assert resolve("汉街", spots).spot == spots[2]  # one partial match
    ambiguous = resolve("江汉路", spots)
    assert ambiguous.spot is None and [s.name for s in ambiguous.choices] == ["江汉路步行街", "江汉路停车场"]
    assert resolve("光谷", spots) == resolve("", spots) == resolve("  ", spots)
    assert normalize("Jiang Han-Lu") == "jianghanlu"


def test_near_page_finds_places_and_may_ask_for_the_location(app: Flask) -> None:
    live_state(app).put(
        LotAvailability(
            lot_id="L1",
            name="江汉路停车场",
            capacity=10,
            occupied=4,
            free=6,
            ts=utc_now(),
            lat=30.58,
            lon=114.29,
        )
    )
    client = app.test_client()
    resp = client.get("/near?q=江汉路步行街&radius_km=2")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert 'data-lat="30.581" data-lon="114.288" data-place="江汉路步行街"' in html
    assert 'data-radius="2"' in html and 'data-api="/api/v1/lots"' in html
    assert "geolocation=(self)" in resp.headers["Permissions-Policy"]
    assert "geolocation=()" in client.get("/").headers["Permissions-Policy"]  # only this page may ask
    assert 'href="/near"' in client.get("/").get_data(as_text=True)  # linked from the overview

    choices = client.get("/near?q=江汉路").get_data(as_text=True)
    assert "您指的是哪一个？" in choices and "data-lat" not in choices
    assert choices.count('class="choice"') == 2
    unknown = client.get(f"/near?q={EVIL}").get_data(as_text=True)
    assert "找不到名为" in unknown and EVIL not in unknown
    for query, message in [
        ("lat=abc&lon=114", "lat 必须是数字。"),
        ("lat=30&lon=200", "lon 必须在 -180 到 180 之间。"),
        ("q=汉街&radius_km=99", "范围必须大于 0 且不超过 50 公里。"),
    ]:
        assert message in client.get(f"/near?{query}").get_data(as_text=True), query
    here = client.get("/near?lat=30.5801&lon=114.2901").get_data(as_text=True)
    assert 'data-place="您的位置"' in here
    lots = client.get("/api/v1/lots?lat=30.581&lon=114.288&radius_km=2").get_json()["lots"]
    assert [lot["id"] for lot in lots] == ["L1"]


def test_places_in_the_config_are_checked() -> None:
    with pytest.raises(ValidationError, match="place names must be unique; repeated: 汉口火车站"):
        DashboardConfig(places=[*PLACES, {"name": "汉口火车站 ", "lat": 30.6, "lon": 114.2}])
    with pytest.raises(ValidationError, match="less than or equal to 90"):
        DashboardConfig(places=[{"name": "北极", "lat": 91, "lon": 0}])
    assert DashboardConfig(places=PLACES).places[1].name == "汉口火车站"
