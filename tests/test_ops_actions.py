"""Operator actions (dashboard/plates.py, lists.py, commands.py, signs.py, ops_actions_api.py) on a
real SQLite database with the Flask test client: CSRF on every form, viewers refused, scopes,
plate search with `<script>` escaped, a corrected misread re-pairing the visits, CSV import of
good and bad files, sign overrides; and with a real Mosquitto: list entries reaching the
collector's retained lists (also when a window opens later), remote open answered or timing out."""

from __future__ import annotations

import base64
import csv
import io
import re
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from ulid import ULID
from werkzeug.test import TestResponse

import cloud.collector
from cloud.collector import Collector
from cloud.config import CollectorConfig
from cloud.events_store import EventStore
from cloud.lists import ListEntry, PlateLists
from cloud.screens import active_overrides
from cloud.visits import CLOSED, OPEN, ORPHAN, Visits
from dashboard import create_app, live_state
from dashboard.config import DashboardConfig
from dashboard.users import UserStore
from parkgate.demo import write_toml
from parkgate.settings import MqttSettings
from protocol import (
    Action,
    Decision,
    Direction,
    GateEvent,
    GateStatus,
    LotAvailability,
    LotLists,
    Reason,
    Topics,
    decode,
)
from protocol.messages import utc_now
from tests.mqtt_helpers import retained
from tests.waiting import wait_until

PASSWORDS = {"boss": "boss-password-1", "olga": "olga-password-1", "vera": "vera-password-1"}
EVIL = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
SHANGHAI = ZoneInfo("Asia/Shanghai")
REASONS = {Direction.ENTRY: Reason.SPACE_FREE, Direction.EXIT: Reason.EXIT}
SITE = {
    "name": "c1",
    "lots": [
        {"id": "L1", "name": "江汉路停车场", "capacity": 10, "allow": ["鄂A00001"]},
        {"id": "L2", "name": "汉街", "capacity": 5},
    ],
    "screens": [
        {"id": "S1", "name": "解放大道", "lots": [{"lot_id": "L1", "arrow": "left"}]},
        {"id": "S2", "name": "中山大道", "lots": [{"lot_id": "L1"}, {"lot_id": "L2", "arrow": "right"}]},
    ],
}


# -- set-up ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The schema and three accounts, made once (argon2 is slow on purpose): an admin (every lot),
    an operator and a viewer scoped to lot L1."""
    path = tmp_path_factory.mktemp("seeded") / "events.sqlite"
    store = UserStore(
        f"sqlite:///{path}", hasher=PasswordHasher(time_cost=1, memory_cost=8192)
    )  # quick logins
    store.add_user("boss", PASSWORDS["boss"], "admin")
    store.add_user("olga", PASSWORDS["olga"], "operator", lots="L1")
    store.add_user("vera", PASSWORDS["vera"], "viewer", lots="L1")
    store.close()
    return path


def site_config(tmp_path: Path, mqtt: MqttSettings | None = None) -> tuple[Path, CollectorConfig]:
    data: dict[str, Any] = {**SITE, "database": f"sqlite:///{tmp_path / 'events.sqlite'}"}
    if mqtt is not None:
        data["mqtt"] = mqtt.model_dump(mode="json", exclude_none=True)
    path = write_toml(tmp_path / "collector.toml", data)
    return path, CollectorConfig.model_validate(data)


def make_app(tmp_path: Path, seeded: Path, mqtt: MqttSettings | None = None, **config: object) -> Flask:
    shutil.copy(seeded, tmp_path / "events.sqlite")
    path, _ = site_config(tmp_path, mqtt)
    cfg = DashboardConfig(
        database=f"sqlite:///{tmp_path / 'events.sqlite'}",
        secret_key_file=tmp_path / "state" / "secret.key",
        collector_config=path,
        mqtt=mqtt or MqttSettings(port=1),  # nothing listens on port 1: a refresh fails at once
    )
    app = create_app({"PARKGATE": cfg, "LIVE_FEED": False, "TESTING": True, **config})
    state = live_state(app)
    for lot_id, name, capacity in (("L1", "江汉路停车场", 10), ("L2", "汉街", 5)):
        state.put(
            LotAvailability(
                lot_id=lot_id, name=name, capacity=capacity, occupied=0, free=capacity, ts=utc_now()
            )
        )
    for gate_id, lot_id in (("G1", "L1"), ("G2", "L2")):
        state.put(GateStatus(gate_id=gate_id, lot_id=lot_id, state="online", ts=utc_now(), barrier="CLOSED"))
    return app


@pytest.fixture
def app(tmp_path: Path, seeded: Path) -> Iterator[Flask]:
    app = make_app(tmp_path, seeded)
    yield app
    link = app.extensions.get("parkgate.ops.commands")
    if link is not None:
        link.stop()


class Site:
    """The collector's side of the database: events stored and paired as the collector does."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = EventStore(f"sqlite:///{tmp_path / 'events.sqlite'}")
        cfg = CollectorConfig.model_validate(SITE)
        self.store.sync_lots(cfg.lots)
        self.visits = Visits(self.store, cfg)
        self.seq = 0

    def car(
        self, direction: Direction, plate: str | None, ago: timedelta, lot: str = "L1", crop: bool = False
    ) -> GateEvent:
        self.seq += 1
        event = GateEvent(
            id=str(ULID()), epoch="EPOCH00001", seq=self.seq, ts=utc_now() - ago, lot_id=lot,
            gate_id=f"{lot}-{direction.value}", direction=direction, plate=plate, confidence=0.9 if plate else 0.0,
            decision=Decision(action=Action.OPEN, reason=REASONS[direction]),
            crop_jpeg=jpeg_b64() if crop else None,
        )  # fmt: skip
        assert self.store.record(event).stored
        return event

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def site(app: Flask, tmp_path: Path) -> Iterator[Site]:
    found = Site(tmp_path)
    yield found
    found.close()


def jpeg_b64() -> str:
    out = io.BytesIO()
    Image.new("RGB", (90, 30), (20, 60, 200)).save(out, "JPEG", quality=60)
    return base64.b64encode(out.getvalue()).decode()


def login(client: FlaskClient, name: str) -> None:
    html = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert token
    resp = client.post(
        "/login", data={"name": name, "password": PASSWORDS[name], "csrf_token": token.group(1)}
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)


def logged_in(app: Flask, name: str) -> tuple[FlaskClient, str]:
    """A client of ``name`` and the session's CSRF token (from a page's meta tag)."""
    client = app.test_client()
    login(client, name)
    html = client.get("/ops/plates").get_data(as_text=True)
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert found
    return client, found.group(1)


def audit_rows(app: Flask, action: str) -> list[tuple[str, str, str, str]]:
    store: UserStore = app.extensions["parkgate.users"]
    return [(r.user, r.target, r.result, r.detail) for r in store.audit_trail(action=action)]


def entries(app: Flask, **kwargs: Any) -> list[ListEntry]:
    return PlateLists(app.extensions["parkgate.users"].engine).entries(**kwargs)


def upload(client: FlaskClient, token: str | None, content: bytes, name: str = "lists.csv") -> TestResponse:
    data: dict[str, Any] = {"file": (io.BytesIO(content), name), "lot": "L1"}
    if token:
        data["csrf_token"] = token
    return client.post("/ops/lists/import", data=data, content_type="multipart/form-data")


def csv_bytes(rows: list[list[str]], encoding: str = "utf-8-sig") -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode(encoding)


# -- CSRF, roles, scopes ------------------------------------------------------------------------------
def test_every_form_and_api_post_without_csrf_token_gets_400(app: Flask, site: Site) -> None:
    ev = site.car(Direction.ENTRY, "鄂A12345", timedelta(hours=1))
    client, token = logged_in(app, "boss")
    made = client.post(
        "/ops/lists/add", data={"csrf_token": token, "lot_id": "L1", "list": "deny", "plate": "鄂B22222"}
    )
    assert made.status_code == 303
    entry_id = entries(app)[0].id
    forms = {
        f"/ops/plates/events/{ev.id}/correct": {"plate": "鄂A12346", "reason": "crop"},
        "/ops/lists/add": {"lot_id": "L1", "list": "allow", "plate": "鄂A99999"},
        f"/ops/lists/{entry_id}/remove": {},
        "/ops/gates/G1/open": {"step": "send", "reason": "driver called"},
        "/ops/signs/S1": {"mode": "closed", "reason": "cleaning"},
    }
    for path, data in forms.items():
        resp = client.post(path, data=data)
        assert resp.status_code == 400, path
        assert "表单已失效" in resp.get_data(as_text=True), path
    assert (
        upload(
            client, None, csv_bytes([["lot_id", "list", "plate"], ["L1", "allow", "鄂A77777"]])
        ).status_code
        == 400
    )
    api = {
        f"/api/v1/ops/events/{ev.id}/correct": {"plate": "鄂A12346", "reason": "crop"},
        "/api/v1/ops/lists": {"lot_id": "L1", "list": "allow", "plate": "鄂A99999"},
        "/api/v1/ops/gates/G1/open": {"reason": "driver called", "confirm": True},
        "/api/v1/ops/signs/S1": {"mode": "closed", "reason": "cleaning"},
    }
    for path, body in api.items():
        resp = client.post(path, json=body)
        assert resp.status_code == 400 and resp.get_json()["error"]["status"] == 400, path
    assert client.delete(f"/api/v1/ops/lists/{entry_id}").status_code == 400
    # nothing happened
    assert [(e.plate, e.removed_at) for e in entries(app, removed=True)] == [("鄂B22222", None)]
    assert site.visits.corrections() == []
    assert active_overrides(site.store.engine) == {}
    assert "parkgate.ops.commands" not in app.extensions  # no command was ever sent
    assert audit_rows(app, "gate.open.request") == []


def test_viewer_cannot_open_a_barrier_nor_edit_lists(app: Flask, site: Site) -> None:
    ev = site.car(Direction.ENTRY, "鄂A12345", timedelta(hours=1))
    client, token = logged_in(app, "vera")
    refused = [
        client.get("/ops/open"),
        client.get("/ops/gates/G1/open"),
        client.post("/ops/gates/G1/open", data={"csrf_token": token, "step": "send", "reason": "let me out"}),
        client.post(
            "/ops/lists/add", data={"csrf_token": token, "lot_id": "L1", "list": "allow", "plate": "鄂A99999"}
        ),
        upload(client, token, csv_bytes([["lot_id", "list", "plate"], ["L1", "allow", "鄂A77777"]])),
        client.get(f"/ops/plates/events/{ev.id}/correct"),
        client.post("/ops/signs/S1", data={"csrf_token": token, "mode": "closed", "reason": "x"}),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    resp = client.post("/api/v1/ops/gates/G1/open", json={"reason": "let me out", "confirm": True},
                       headers={"X-CSRFToken": token})  # fmt: skip
    assert resp.status_code == 403
    assert resp.get_json() == {
        "error": {"status": 403, "message": "this needs the operator role; vera is viewer"}
    }
    resp = client.post("/api/v1/ops/lists", json={"lot_id": "L1", "list": "allow", "plate": "鄂A99999"},
                       headers={"X-CSRFToken": token})  # fmt: skip
    assert resp.status_code == 403
    denied = [(r[1], r[2]) for r in audit_rows(app, "access")]
    assert ("/api/v1/ops/gates/G1/open", "denied") in denied and ("/ops/gates/G1/open", "denied") in denied
    assert len(denied) == len(refused) + 2
    assert entries(app) == [] and "parkgate.ops.commands" not in app.extensions
    # a viewer still reads: the plate search, the lists, the signs (without the forms)
    assert client.get("/ops/plates?q=A123").status_code == 200
    lists = client.get("/ops/lists").get_data(as_text=True)
    assert 'id="entries-empty"' in lists and 'id="add-form"' not in lists and 'id="import-form"' not in lists
    signs = client.get("/ops/signs").get_data(as_text=True)
    assert 'id="sign-S1"' in signs and 'id="sign-form-S1"' not in signs
    assert "/ops/open" not in client.get("/ops/plates").get_data(as_text=True)  # no nav link either


def test_user_scoped_to_lot_a_does_not_see_or_act_on_lot_b(app: Flask, site: Site) -> None:
    mine = site.car(Direction.ENTRY, "鄂A12345", timedelta(hours=2), lot="L1", crop=True)
    theirs = site.car(Direction.ENTRY, "鄂A12399", timedelta(hours=2), lot="L2", crop=True)
    client, token = logged_in(app, "olga")
    page = client.get("/ops/plates?q=A123").get_data(as_text=True)
    assert "鄂A12345" in page and "鄂A12399" not in page
    found = client.get("/api/v1/ops/plates?q=A123").get_json()
    assert [p["plate"] for p in found["plates"]] == ["鄂A12345"]
    assert client.get("/api/v1/ops/plates/鄂A12399").get_json()["events"] == []
    assert client.get(f"/ops/plates/crops/{mine.id}.jpg").status_code == 200
    assert client.get(f"/ops/plates/crops/{theirs.id}.jpg").status_code == 403
    resp = client.post(
        f"/ops/plates/events/{theirs.id}/correct",
        data={"csrf_token": token, "plate": "鄂A12398", "reason": "x"},
    )
    assert resp.status_code == 403
    lists = client.get("/ops/lists").get_data(as_text=True)
    assert "江汉路停车场" in lists and "汉街" not in lists
    other = client.get("/ops/lists?lot=L2").get_data(as_text=True)  # falls back to a lot in scope
    assert other.count('<a class="tab') == 1 and 'name="lot_id" value="L1"' in other
    resp = client.post("/api/v1/ops/lists", json={"lot_id": "L2", "list": "allow", "plate": "鄂A99999"},
                       headers={"X-CSRFToken": token})  # fmt: skip
    assert resp.status_code == 403 and resp.get_json()["error"]["message"] == "lot 'L2' is outside your scope"
    assert client.get("/api/v1/ops/lists?lot_id=L2").status_code == 403
    assert client.get("/ops/lists/export.csv?lot=L2").status_code == 403
    assert (
        client.post(
            "/ops/gates/G2/open", data={"csrf_token": token, "step": "confirm", "reason": "x"}
        ).status_code
        == 403
    )
    assert 'id="open-gate-G2"' not in client.get("/ops/open").get_data(as_text=True)
    signs = client.get("/ops/signs").get_data(as_text=True)
    assert 'id="sign-S1"' in signs and 'id="sign-S2"' not in signs  # S2 also shows L2
    assert (
        client.post("/ops/signs/S2", data={"csrf_token": token, "mode": "closed", "reason": "x"}).status_code
        == 403
    )
    bad = upload(client, token, csv_bytes([["lot_id", "list", "plate"], ["L2", "allow", "鄂A77777"]]))
    assert bad.status_code == 400 and "车场 L2 不在您的权限范围内" in bad.get_data(as_text=True)
    assert entries(app) == []
    assert {r[1] for r in audit_rows(app, "access")} >= {"lot:L2", "screen:S2"}


# -- plate search and corrections ------------------------------------------------------------------
def test_script_in_a_search_or_a_reason_is_rendered_escaped(app: Flask, site: Site) -> None:
    ev = site.car(Direction.EXIT, "鄂A12346", timedelta(minutes=30))
    client, token = logged_in(app, "olga")
    resp = client.get("/ops/plates", query_string={"q": EVIL})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 400 and "车牌只含字母、数字和汉字" in html
    assert ESCAPED in html  # the query, echoed in the box and the message
    assert EVIL not in html and "<script>alert" not in html.lower()
    resp = client.post(
        f"/ops/plates/events/{ev.id}/correct", data={"csrf_token": token, "plate": EVIL, "reason": EVIL}
    )
    html = resp.get_data(as_text=True)
    assert resp.status_code == 400 and ESCAPED in html and EVIL not in html
    resp = client.post(
        f"/ops/plates/events/{ev.id}/correct", data={"csrf_token": token, "plate": "鄂A12345", "reason": EVIL}
    )
    assert resp.status_code == 303
    html = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert ESCAPED in html and EVIL not in html  # the reason, in the banner
    assert client.get("/ops/audit").get_data(as_text=True).count(ESCAPED) >= 1
    api = client.get("/api/v1/ops/plates", query_string={"q": EVIL})
    assert api.status_code == 400 and api.get_json()["error"]["status"] == 400


def test_plate_search_shows_visits_events_and_crops(app: Flask, site: Site) -> None:
    site.car(Direction.ENTRY, "鄂A12345", timedelta(hours=3), crop=True)
    site.car(Direction.EXIT, "鄂A12345", timedelta(hours=1), crop=True)
    site.car(Direction.ENTRY, "鄂A12345", timedelta(minutes=10))
    site.car(Direction.ENTRY, "鄂AA1234", timedelta(minutes=5))
    site.car(Direction.ENTRY, "鄂A123456", timedelta(minutes=1))
    client, _ = logged_in(app, "vera")
    html = client.get("/ops/plates?q=a·123").get_data(as_text=True)  # lower case and a separator
    matches = re.findall(r'class="plate-text[^"]*">([^<]+)<', html)
    assert matches == ["鄂A123456", "鄂AA1234", "鄂A12345"]  # substrings, the most recently seen first
    assert 'id="plate-history"' not in html  # several plates match: the operator picks one
    html = client.get("/ops/plates?q=鄂a12345").get_data(as_text=True)
    assert re.findall(r'class="plate-text[^"]*">([^<]+)<', html)[:2] == [
        "鄂A12345",
        "鄂A123456",
    ]  # exact first
    visits = re.findall(r'<tr class="visit visit-(\w+)"', html)
    assert visits == ["open", "closed"]  # newest first
    assert "2 小时 00 分" in html  # the dwell of the closed visit
    assert html.count('<img class="crop-img"') == 4  # two crops in the visit, two in the events
    assert 'id="events-table"' in html and html.count('data-event="') == 3
    assert "更正车牌" not in html  # a viewer corrects nothing
    data = client.get("/api/v1/ops/plates/鄂A12345").get_json()
    assert [v["status"] for v in data["visits"]] == ["open", "closed"]
    assert data["visits"][1]["dwell_s"] == pytest.approx(7200, abs=2)
    assert data["visits"][1]["entry"]["gate_id"] == "L1-entry" and data["visits"][1]["exit"]["crop"] is True
    resp = client.get("/ops/plates?q=鄂Z99999")
    assert resp.status_code == 200 and "未找到车牌" in resp.get_data(as_text=True)


def test_correcting_a_misread_re_pairs_the_visits(app: Flask, site: Site) -> None:
    site.car(Direction.ENTRY, "鄂A12345", timedelta(hours=3))
    misread = site.car(Direction.EXIT, "鄂A12846", timedelta(hours=1), crop=True)
    assert [(v.plate, v.status) for v in site.visits.visits()] == [("鄂A12846", ORPHAN), ("鄂A12345", OPEN)]
    client, token = logged_in(app, "olga")
    form = client.get(f"/ops/plates/events/{misread.id}/correct").get_data(as_text=True)
    assert 'value="鄂A12846"' in form and f"/ops/plates/crops/{misread.id}.jpg" in form
    resp = client.post(
        f"/ops/plates/events/{misread.id}/correct",
        data={"csrf_token": token, "plate": "鄂A12345", "reason": ""},
    )
    assert resp.status_code == 400 and "请说明原因" in resp.get_data(as_text=True)
    resp = client.post(
        f"/ops/plates/events/{misread.id}/correct",
        data={"csrf_token": token, "plate": "鄂A12846", "reason": "x"},
    )
    assert resp.status_code == 400 and "该事件已是 鄂A12846" in resp.get_data(as_text=True)

    resp = client.post(
        f"/ops/plates/events/{misread.id}/correct",
        data={"csrf_token": token, "plate": "鄂a 12345", "reason": "the crop shows 12345"},
    )
    assert resp.status_code == 303
    assert resp.headers["Location"] == f"/ops/plates?q=%E9%84%82A12345&corrected={misread.id}"
    html = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert 'id="corrected"' in html and "鄂A12846 在此车场已无停车记录" in html
    assert re.findall(r'<tr class="visit visit-(\w+)"', html) == ["closed"]
    assert "2 小时 00 分" in html and "更正自 鄂A12846" in html
    assert [(v.plate, v.status) for v in site.visits.visits()] == [("鄂A12345", CLOSED)]
    assert [(c.old_plate, c.new_plate, c.actor) for c in site.visits.corrections()] == [
        ("鄂A12846", "鄂A12345", "olga")
    ]
    rows = audit_rows(app, "plate.correct")
    assert rows[0] == (
        "olga",
        f"event:{misread.id}",
        "ok",
        "鄂A12846 -> 鄂A12345 in L1: the crop shows 12345",
    )
    assert [r[2] for r in rows[1:]] == ["failed", "failed"]
    # the misread plate's own search explains where its event went
    away = client.get("/ops/plates?q=鄂A12846").get_data(as_text=True)
    assert 'id="corrected-away-table"' in away and "鄂A12345" in away and "the crop shows 12345" in away

    # the same through the API, for an unread entry that gets its plate
    unread = site.car(Direction.ENTRY, None, timedelta(minutes=20))
    resp = client.post(f"/api/v1/ops/events/{unread.id}/correct", json={"plate": "鄂B77777", "reason": "read by eye"},
                       headers={"X-CSRFToken": token})  # fmt: skip
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["correction"]["old_plate"] is None and body["correction"]["new_plate"] == "鄂B77777"
    assert [v["status"] for v in body["visits"]] == ["open"] and body["correction"]["refreshed"] is False
    resp = client.post(f"/api/v1/ops/events/{unread.id}/correct", json={"plate": "<b>", "reason": "x"},
                       headers={"X-CSRFToken": token})  # fmt: skip
    assert resp.status_code == 400 and resp.get_json()["error"]["message"].startswith(
        "plate: '<b>' is not a plate"
    )
    resp = client.post("/api/v1/ops/events/01JUNKUNKNOWNEVENT00000000/correct", json={"plate": "鄂B1", "reason": "x"},
                       headers={"X-CSRFToken": token})  # fmt: skip
    assert resp.status_code == 404


# -- lists ---------------------------------------------------------------------------------------------
def test_add_and_remove_entries_with_windows(app: Flask) -> None:
    client, token = logged_in(app, "olga")
    resp = client.post("/ops/lists/add", data={
        "csrf_token": token, "lot_id": "L1", "list": "allow", "plate": "鄂a·88888", "valid_from": "",
        "valid_until": "2099-12-31T18:00", "note": "contractor van",
    })  # fmt: skip
    assert resp.status_code == 303
    [entry] = entries(app)
    assert (entry.plate, entry.kind, entry.valid_until) == (
        "鄂A88888",
        "allow",
        datetime(2099, 12, 31, 10, tzinfo=UTC),
    )
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert 'id="list-added"' in page and 'id="entry-' in page and "contractor van" in page
    assert 'id="count-allow">2<' in page  # the entry and 鄂A00001 from the site config
    again = client.post("/ops/lists/add", data={"csrf_token": token, "lot_id": "L1", "list": "allow",
                                                "plate": "鄂A88888", "valid_until": "2099-12-31T18:00"})  # fmt: skip
    assert again.status_code == 400 and "已在此名单中" in again.get_data(as_text=True)
    bad = client.post("/ops/lists/add", data={"csrf_token": token, "lot_id": "L1", "list": "deny", "plate": "鄂A1",
                                              "valid_from": "2099-01-02", "valid_until": "2099-01-01"})  # fmt: skip
    assert bad.status_code == 400 and "鄂A1" in bad.get_data(as_text=True)
    past = client.post("/ops/lists/add", data={"csrf_token": token, "lot_id": "L1", "list": "deny", "plate": "鄂A11111",
                                               "valid_until": "2020-01-01T00:00"})  # fmt: skip
    assert past.status_code == 400 and "有效期已结束" in past.get_data(as_text=True)
    resp = client.post(f"/ops/lists/{entry.id}/remove", data={"csrf_token": token})
    assert resp.status_code == 303
    assert entries(app) == [] and entries(app, removed=True)[0].removed_by == "olga"
    assert client.post(f"/ops/lists/{entry.id}/remove", data={"csrf_token": token}).status_code == 404
    assert [r[2] for r in audit_rows(app, "list.add")] == ["failed", "failed", "failed", "ok"]
    assert audit_rows(app, "list.remove")[0][:3] == ("olga", "lot:L1", "ok")
    api = client.post("/api/v1/ops/lists", json={"lot_id": "L1", "list": "never", "plate": "鄂A12345"},
                      headers={"X-CSRFToken": token})  # fmt: skip
    assert (
        api.status_code == 400
        and api.get_json()["error"]["message"] == "list: Input should be 'allow' or 'deny', not 'never'"
    )
    assert client.delete("/api/v1/ops/lists/999999", headers={"X-CSRFToken": token}).status_code == 404


def test_csv_import_of_a_good_file_then_its_export_again(app: Flask) -> None:
    client, token = logged_in(app, "olga")
    rows = [
        ["lot_id", "list", "plate", "valid_from", "valid_until", "note"],
        ["L1", "allow", "鄂a·12345", "", "2099-12-31", "全年"],
        ["L1", "deny", "鄂B54321", "2099/1/2 08:00", "", ""],
        ["L1", "ALLOW", "京AD12345", "2026-01-01T00:00:00+08:00", "2099-06-01T00:00:00Z", "new energy"],
        ["L1", "allow", "鄂A12345", "", "2099-12-31", "the same again"],
        [],
    ]
    resp = upload(client, token, csv_bytes(rows))
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and 'id="import-done"' in html and "已导入 3 条" in html
    got = {e.plate: e for e in entries(app)}
    assert set(got) == {"鄂A12345", "鄂B54321", "京AD12345"}
    assert got["鄂A12345"].valid_until == datetime(2100, 1, 1, tzinfo=SHANGHAI)  # the whole 31st
    assert got["鄂B54321"].valid_from == datetime(2099, 1, 2, 8, tzinfo=SHANGHAI)
    assert got["京AD12345"].kind == "allow" and got["鄂A12345"].note == "全年"
    exported = client.get("/ops/lists/export.csv?lot=L1")
    assert exported.headers["Content-Type"].startswith("text/csv")
    assert exported.headers["Content-Disposition"].startswith('attachment; filename="plate-lists-L1-')
    data = exported.get_data()
    assert data.startswith("\ufeff".encode()) and len(data.decode("utf-8-sig").strip().splitlines()) == 4
    again = upload(client, token, data, "export.csv")
    assert again.status_code == 200 and "3 条已在名单中" in again.get_data(as_text=True)
    assert len(entries(app)) == 3
    gbk = csv_bytes([["lot_id", "list", "plate", "note"], ["L1", "deny", "鄂C00001", "黑名单"]], "gb18030")
    resp = client.post("/api/v1/ops/lists/import", data={"file": (io.BytesIO(gbk), "excel.csv")},
                       headers={"X-CSRFToken": token}, content_type="multipart/form-data")  # fmt: skip
    assert (
        resp.status_code == 200
        and resp.get_json()["imported"] is True
        and resp.get_json()["encoding"] == "GB18030"
    )
    assert resp.get_json()["added"][0]["note"] == "黑名单"
    assert [r[3].split(" (")[0] for r in audit_rows(app, "list.import")] == ["1 added", "0 added", "3 added"]
    assert audit_rows(app, "list.export")[0][1] == "L1"


def test_csv_import_of_a_bad_file_imports_nothing_and_names_every_problem(app: Flask) -> None:
    client, token = logged_in(app, "boss")
    rows = [
        ["lot_id", "list", "plate", "valid_from", "valid_until", "note"],
        ["L1", "allow", "鄂A12345", "", "", "fine"],
        ["L1", "maybe", EVIL, "2026-13-01", "", ""],
        ["L9", "deny", "鄂B12345", "2099-02-01", "2099-01-01", ""],
        ["L2", "deny", "鄂B12345", "", "2020-01-01", "x" * 201],
        ["L1", "allow", "鄂A12345", "", "", "fine", "extra"],
    ]
    resp = upload(client, token, csv_bytes(rows))
    html = resp.get_data(as_text=True)
    assert resp.status_code == 400 and 'id="import-refused"' in html and "未导入任何条目" in html
    problems = re.findall(r'<tr><td class="num">(\d+)</td><td><code>([\w—]+)</code>', html)
    assert problems == [
        ("3", "valid_from"), ("3", "list"), ("3", "plate"),
        ("4", "lot_id"), ("4", "valid_until"),
        ("5", "valid_until"), ("5", "note"),
        ("6", "—"),
    ]  # fmt: skip
    assert ESCAPED in html and EVIL not in html
    assert "此站点没有车场 L9" in html and "有效期的结束时间必须晚于开始时间" in html
    assert entries(app) == []  # not even the good row
    assert audit_rows(app, "list.import")[0][2] == "failed"
    api = client.post("/api/v1/ops/lists/import", data={"file": (io.BytesIO(csv_bytes(rows)), "bad.csv")},
                      headers={"X-CSRFToken": token}, content_type="multipart/form-data")  # fmt: skip
    assert api.status_code == 200 and api.get_json()["imported"] is False and api.get_json()["added"] == []
    found = api.get_json()["problems"]
    assert [(p["line"], p["column"], p["code"]) for p in found][:3] == [
        (3, "valid_from", "time"), (3, "list", "list"), (3, "plate", "plate"),
    ]  # fmt: skip
    for content, expect in (
        (b"", "文件为空"),
        (csv_bytes([["lot", "list", "plate"]]), "未知列 lot"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "不是 UTF-8 或 GB18030 文本"),
    ):
        resp = upload(client, token, content)
        assert resp.status_code == 400 and expect in resp.get_data(as_text=True), expect
    assert entries(app) == []


# -- signs -------------------------------------------------------------------------------------------------
def test_sign_override_set_shown_logged_and_cleared(app: Flask, site: Site) -> None:
    client, token = logged_in(app, "olga")
    until = (utc_now() + timedelta(hours=2)).astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")
    resp = client.post("/ops/signs/S1", data={"csrf_token": token, "target": "", "mode": "closed",
                                              "reason": "lot cleaning", "until": until})  # fmt: skip
    assert resp.status_code == 303 and resp.headers["Location"] == "/ops/signs?done=S1#sign-S1"
    [(key, override)] = active_overrides(site.store.engine).items()
    assert key == ("S1", None) and (override.mode, override.set_by, override.reason) == (
        "closed",
        "olga",
        "lot cleaning",
    )
    assert (
        override.until is not None and override.until.astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M") == until
    )
    page = client.get("/ops/signs").get_data(as_text=True)
    assert (
        re.search(r'id="sign-mode-S1">关闭<', page) and 'id="override-log"' in page and "lot cleaning" in page
    )
    past = client.post(
        "/ops/signs/S1",
        data={"csrf_token": token, "mode": "full", "reason": "x", "until": "2020-01-01T00:00"},
    )
    assert past.status_code == 400 and "结束时间必须在将来" in past.get_data(as_text=True)
    no_reason = client.post("/ops/signs/S1", data={"csrf_token": token, "mode": "full", "reason": " "})
    assert no_reason.status_code == 400
    api = client.post(
        "/api/v1/ops/signs/S1",
        json={"mode": "auto", "reason": "cleaning done"},
        headers={"X-CSRFToken": token},
    )
    assert api.status_code == 201 and api.get_json()["mode"] == "auto"
    assert active_overrides(site.store.engine) == {}
    data = client.get("/api/v1/ops/signs").get_json()
    assert [s["screen_id"] for s in data["screens"]] == ["S1"] and data["screens"][0]["override"] is None
    assert [o["mode"] for o in data["log"]] == ["auto", "closed"]
    boss, boss_token = logged_in(app, "boss")
    row = boss.post(
        "/ops/signs/S2", data={"csrf_token": boss_token, "target": "L2", "mode": "full", "reason": "event"}
    )
    assert row.status_code == 303 and set(active_overrides(site.store.engine)) == {("S2", "L2")}
    assert [(r[1], r[2]) for r in audit_rows(app, "sign.override")] == [
        ("screen:S2/L2", "ok"), ("screen:S1", "ok"), ("screen:S1", "failed"), ("screen:S1", "failed"),
        ("screen:S1", "ok"),
    ]  # fmt: skip


# -- with a real broker ------------------------------------------------------------------------------
@pytest.mark.integration
def test_list_entries_reach_the_gates_lists_also_when_a_window_opens_later(
    tmp_path: Path, seeded: Path, mqtt_settings: MqttSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cloud.collector, "STATUS_INTERVAL_S", 0.3)  # the collector's periodic loop
    app = make_app(tmp_path, seeded, mqtt_settings)
    _, cfg = site_config(tmp_path, mqtt_settings)
    collector = Collector(cfg)
    stop = threading.Event()
    runner = threading.Thread(target=collector.run, args=(stop,), daemon=True)
    runner.start()
    topic = Topics(mqtt_settings.topic_root).lot_lists("L1")

    def lists() -> LotLists | None:
        payload = retained(mqtt_settings, topic, timeout=2)
        return decode(LotLists, payload) if payload else None

    try:
        wait_until(
            lambda: (found := lists()) is not None and found.allow == ["鄂A00001"], what="the config's lists"
        )
        client, token = logged_in(app, "olga")
        client.post(
            "/ops/lists/add", data={"csrf_token": token, "lot_id": "L1", "list": "deny", "plate": "鄂D44444"}
        )
        wait_until(
            lambda: (found := lists()) is not None and found.deny == ["鄂D44444"], what="the new deny entry"
        )
        soon = (utc_now() + timedelta(seconds=2)).isoformat()
        resp = client.post("/api/v1/ops/lists", json={"lot_id": "L1", "list": "allow", "plate": "鄂E55555",
                                                      "valid_from": soon}, headers={"X-CSRFToken": token})  # fmt: skip
        assert resp.status_code == 201 and resp.get_json()["status"] == "scheduled"
        current = lists()
        assert current is not None and "鄂E55555" not in current.allow
        wait_until(lambda: (found := lists()) is not None and found.allow == ["鄂A00001", "鄂E55555"], timeout=15,
                   what="the entry whose window opened")  # fmt: skip
        entry_id = resp.get_json()["id"]
        assert (
            client.delete(f"/api/v1/ops/lists/{entry_id}", headers={"X-CSRFToken": token}).status_code == 200
        )
        wait_until(lambda: (found := lists()) is not None and found.allow == ["鄂A00001"], what="the removal")
    finally:
        stop.set()
        runner.join(10)


@pytest.mark.integration
def test_remote_open_without_an_answer_times_out_and_is_audited(
    tmp_path: Path, seeded: Path, mqtt_settings: MqttSettings
) -> None:
    app = make_app(tmp_path, seeded, mqtt_settings, OPS_OPEN_TTL_S=0.5, OPS_OPEN_WAIT_S=1.0)
    try:
        client, token = logged_in(app, "olga")
        ask = client.get("/ops/gates/G1/open").get_data(as_text=True)
        assert 'id="open-ask"' in ask
        empty = client.post("/ops/gates/G1/open", data={"csrf_token": token, "step": "confirm", "reason": ""})
        assert empty.status_code == 400 and 'id="open-error"' in empty.get_data(as_text=True)
        confirm = client.post(
            "/ops/gates/G1/open", data={"csrf_token": token, "step": "confirm", "reason": "stuck at exit"}
        )
        html = confirm.get_data(as_text=True)
        assert 'id="open-confirm"' in html and 'id="confirm-reason">stuck at exit<' in html
        assert audit_rows(app, "gate.open.request") == []  # nothing sent before the confirmation
        result = client.post(
            "/ops/gates/G1/open", data={"csrf_token": token, "step": "send", "reason": "stuck at exit"}
        )
        assert 'data-result="timeout"' in result.get_data(as_text=True)
        [request] = audit_rows(app, "gate.open.request")
        assert request[:3] == ("olga", "gate:G1", "ok") and request[3].endswith("(L1): stuck at exit")
        outcome = audit_rows(app, "gate.open")
        assert outcome[0][2] == "failed" and " timeout: no answer within 1 s" in outcome[0][3]
        assert outcome[1][2] == "failed"  # the empty reason
        api = client.post(
            "/api/v1/ops/gates/G1/open", json={"reason": "again"}, headers={"X-CSRFToken": token}
        )
        assert api.status_code == 400 and "confirm" in api.get_json()["error"]["message"]
        assert client.post("/api/v1/ops/gates/G9/open", json={"reason": "x", "confirm": True},
                           headers={"X-CSRFToken": token}).status_code == 404  # fmt: skip
    finally:
        link = app.extensions.get("parkgate.ops.commands")
        if link is not None:
            link.stop()


def test_remote_open_with_the_broker_away_says_nothing_was_sent(app: Flask) -> None:
    app.config["OPS_CONNECT_WAIT_S"] = 0.5
    client, token = logged_in(app, "boss")
    resp = client.post("/ops/gates/G2/open", data={"csrf_token": token, "step": "send", "reason": "test"})
    assert resp.status_code == 503 and "命令未发送" in resp.get_data(as_text=True)
    assert audit_rows(app, "gate.open")[0][2] == "failed" and "not sent" in audit_rows(app, "gate.open")[0][3]
