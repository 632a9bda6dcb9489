"""Operator pages for lots, vehicles and gates (dashboard/lots.py, lots_api.py, lot_data.py, live.py):
scope on every page, endpoint and stream, escaping of plates, the history series and hourly flows
from seeded data, gate warnings, the live feed's rings and crops. The Flask app on a real SQLite
database written by the real event store; vehicles enter the live feed as real encoded GateEvents."""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from ulid import ULID
from werkzeug.test import TestResponse

from cloud.config import LotConfig
from cloud.events_store import EventRow, EventStore
from cloud.history import write_samples
from dashboard import create_app, live_state
from dashboard.config import DashboardConfig
from dashboard.live import CROPS_KEPT, PER_LOT, LiveFeed, LiveState
from dashboard.lot_data import bucket_starts, sparkline
from dashboard.users import UserStore
from parkgate.settings import MqttSettings
from protocol import (
    Action,
    Decision,
    Direction,
    GateEvent,
    GateStatus,
    LotAvailability,
    Reason,
    Topics,
    encode,
)
from protocol.messages import utc_now

PASSWORDS = {"boss": "boss-password-1", "olga": "olga-password-1", "vera": "vera-password-1"}
EVIL = "<script>alert(1)</script>"
JPEG = b"\xff\xd8\xff\xe0" + b"crop" * 10  # a JPEG as far as the magic bytes go
ROOT = "tops"
TOPICS = Topics(ROOT)


# -- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Schema, lots L1 and L2, and three accounts, made once (argon2 is slow on purpose)."""
    path = tmp_path_factory.mktemp("seeded") / "events.sqlite"
    store = EventStore(f"sqlite:///{path}")
    store.sync_lots(
        [LotConfig(id="L1", name="江汉路", capacity=400), LotConfig(id="L2", name="汉街", capacity=50)]
    )
    store.close()
    users = UserStore(f"sqlite:///{path}")
    users.add_user("boss", PASSWORDS["boss"], "admin")
    users.add_user("olga", PASSWORDS["olga"], "operator", lots="L1")
    users.add_user("vera", PASSWORDS["vera"], "viewer", lots="L1")
    users.close()
    return path


@pytest.fixture
def db(tmp_path: Path, seeded: Path) -> str:
    shutil.copy(seeded, tmp_path / "events.sqlite")
    return f"sqlite:///{tmp_path / 'events.sqlite'}"


@pytest.fixture
def app(tmp_path: Path, db: str) -> Flask:
    cfg = DashboardConfig(
        database=db, secret_key_file=tmp_path / "secret.key", mqtt=MqttSettings(topic_root=ROOT)
    )
    app = create_app(
        {
            "PARKGATE": cfg,
            "LIVE_FEED": False,
            "TESTING": True,
            "SSE_KEEPALIVE_S": 0.05,
            "OPS_STREAM_BATCH_S": 0,
        }
    )
    state = live_state(app)
    state.put(availability("L1", "江汉路", 400, 120))
    state.put(availability("L2", "汉街", 50, 10))
    state.put(gate("L1-in", "L1"))
    state.put(gate("L2-in", "L2"))
    return app


@pytest.fixture
def feed(app: Flask) -> LiveFeed:
    """The dashboard's MQTT feed, not connected: its message handler is what the broker calls."""
    return LiveFeed(MqttSettings(topic_root=ROOT), live_state(app), client_id="test-feed")


def availability(lot_id: str, name: str, capacity: int, occupied: int) -> LotAvailability:
    return LotAvailability(
        lot_id=lot_id, name=name, capacity=capacity, occupied=occupied, free=capacity - occupied, ts=utc_now(),
        data_age_s=2.0, stale_after_s=120.0,
    )  # fmt: skip


def gate(gate_id: str, lot_id: str, **health: Any) -> GateStatus:
    fields: dict[str, Any] = {
        "mode": "normal", "barrier": "CLOSED", "backlog": 0, "backlog_age_s": None, "camera": "ok", "fps": 5.0,
        "cpu_temp_c": 51.0, "disk_free_mb": 12_000.0, "state": "online", "ts": utc_now(),
    }  # fmt: skip
    fields.update(health)
    return GateStatus(gate_id=gate_id, lot_id=lot_id, **fields)


def vehicle(
    lot_id: str,
    gate_id: str,
    *,
    plate: str | None = "鄂A12345",
    direction: Direction = Direction.ENTRY,
    action: Action = Action.OPEN,
    ts: datetime | None = None,
    crop: bytes | None = None,
    seq: int = 1,
) -> GateEvent:
    reason = Reason.SPACE_FREE if action is Action.OPEN else Reason.DENY_LISTED
    if direction is Direction.EXIT and action is Action.OPEN:
        reason = Reason.EXIT
    return GateEvent(
        id=str(ULID()), epoch="EPOCH0001", seq=seq, ts=ts or utc_now(), lot_id=lot_id, gate_id=gate_id,
        direction=direction, plate=plate, confidence=0.93 if plate else 0.0,
        decision=Decision(action=action, reason=reason),
        crop_jpeg=base64.b64encode(crop).decode() if crop else None,
    )  # fmt: skip


def arrive(feed: LiveFeed, ev: GateEvent) -> None:
    """A vehicle through the feed's message handler, as the broker delivers it."""
    assert feed.take_event(TOPICS.gate_events(ev.gate_id), encode(ev)) is not None


def login(app: Flask, name: str) -> FlaskClient:
    client = app.test_client()
    html = client.get("/login").get_data(as_text=True)
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert found
    data = {"name": name, "password": PASSWORDS[name], "csrf_token": found.group(1)}
    assert client.post("/login", data=data).status_code == 302
    return client


def sse(
    resp: TestResponse, done: Callable[[list[tuple[str, Any]]], bool], timeout: float = 5.0
) -> list[tuple[str, Any]]:
    """Read server-sent events from a streaming response until ``done(events)`` holds."""
    got: list[tuple[str, Any]] = []
    buffer = ""
    deadline = time.monotonic() + timeout
    chunks: Iterator[bytes] = iter(resp.response)
    while not done(got):
        if time.monotonic() > deadline:
            raise AssertionError(f"stream did not deliver in time; got {got}")
        buffer += next(chunks).decode()
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            fields = dict(
                line.split(": ", 1)
                for line in block.splitlines()
                if not line.startswith(":") and ": " in line
            )
            if "event" in fields:
                got.append((fields["event"], json.loads(fields["data"])))
    return got


PAGES = ["/ops/lots/L1", "/ops/live", "/ops/live?lot=L1", "/ops/gates", "/ops/gates?lot=L1",
         "/ops/events/01JDZZZZZZZZZZZZZZZZZZZZZZ/crop.jpg"]  # fmt: skip
API = ["/api/v1/ops/lots/L1/occupancy", "/api/v1/ops/lots/L1/flows", "/api/v1/ops/gates", "/api/v1/ops/events",
       "/api/v1/ops/stream"]  # fmt: skip


# -- who may see what ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PAGES)
def test_anonymous_pages_redirect_to_login(app: Flask, path: str) -> None:
    resp = app.test_client().get(path)
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("path", API)
def test_anonymous_api_and_stream_get_json_401(app: Flask, path: str) -> None:
    resp = app.test_client().get(path)
    assert resp.status_code == 401
    assert resp.get_json() == {"error": {"status": 401, "message": "login required"}}


def test_user_scoped_to_lot_a_cannot_see_lot_b_anywhere(app: Flask, feed: LiveFeed, db: str) -> None:
    arrive(feed, vehicle("L1", "L1-in", plate="鄂A11111", crop=JPEG))
    b_event = vehicle("L2", "L2-in", plate="鄂B22222", crop=JPEG)
    arrive(feed, b_event)
    store = EventStore(db, migrate=False)
    stored_b = vehicle("L2", "L2-in", plate="鄂B33333", crop=JPEG, seq=2)
    store.record_batch([stored_b])
    store.close()
    olga = login(app, "olga")

    refused = ["/ops/lots/L2", "/ops/live?lot=L2", "/ops/gates?lot=L2", f"/ops/events/{b_event.id}/crop.jpg",
               f"/ops/events/{stored_b.id}/crop.jpg"]  # fmt: skip
    for path in refused:
        assert olga.get(path).status_code == 403, path
    for path in ("/api/v1/ops/lots/L2/occupancy", "/api/v1/ops/lots/L2/flows", "/api/v1/ops/gates?lot=L2",
                 "/api/v1/ops/events?lot=L2", "/api/v1/ops/stream?lot=L2"):  # fmt: skip
        resp = olga.get(path)
        assert resp.status_code == 403, path
        assert resp.get_json() == {"error": {"status": 403, "message": "lot 'L2' is outside your scope"}}, (
            path
        )
    store_users = UserStore(db, migrate=False)
    denied = [r.target for r in store_users.audit_trail(user="olga", action="access") if r.result == "denied"]
    store_users.close()
    assert denied.count("lot:L2") == len(refused) + 5

    # ... and what olga may see holds nothing of L2
    for path in ("/ops/", "/ops/live", "/ops/gates", "/ops/lots/L1"):
        html = olga.get(path).get_data(as_text=True)
        assert "汉街" not in html and "L2-in" not in html and "鄂B" not in html, path
    assert [g["gate_id"] for g in olga.get("/api/v1/ops/gates").get_json()["gates"]] == ["L1-in"]
    assert {e["lot_id"] for e in olga.get("/api/v1/ops/events").get_json()["events"]} == {"L1"}
    boss = login(app, "boss")
    assert {e["plate"] for e in boss.get("/api/v1/ops/events").get_json()["events"]} == {
        "鄂A11111", "鄂B22222", "鄂B33333"
    }  # fmt: skip
    assert boss.get(f"/ops/events/{b_event.id}/crop.jpg").data == JPEG


def test_stream_carries_only_the_scopes_lots_gates_and_vehicles(app: Flask, feed: LiveFeed) -> None:
    olga = login(app, "olga")
    resp = olga.get("/api/v1/ops/stream?kinds=lot,gate,event", buffered=False)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    first = sse(resp, lambda got: {k for k, _ in got} >= {"lot", "gate"})
    assert [(k, d.get("lot_id")) for k, d in first] == [("lot", "L1"), ("gate", "L1")]

    state = live_state(app)
    state.put(availability("L2", "汉街", 50, 11))
    state.put(gate("L2-out", "L2"))
    arrive(feed, vehicle("L2", "L2-in", plate="鄂B22222"))
    state.put(availability("L1", "江汉路", 400, 121))
    arrive(feed, vehicle("L1", "L1-in", plate="鄂A11111"))
    later = sse(resp, lambda got: any(k == "event" for k, _ in got))
    resp.close()
    assert [(k, d["lot_id"]) for k, d in later] == [("lot", "L1"), ("event", "L1")]
    assert later[0][1]["occupied"] == 121 and later[1][1]["plate"] == "鄂A11111"


def test_stream_resumes_vehicles_after_the_pages_number_and_ends_with_the_session(
    app: Flask, feed: LiveFeed, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrive(feed, vehicle("L1", "L1-in", plate="鄂A00001"))
    after = live_state(app).event_seq
    arrive(feed, vehicle("L1", "L1-in", plate="鄂A00002"))
    olga = login(app, "olga")
    resp = olga.get(f"/api/v1/ops/stream?kinds=event&after={after}", buffered=False)
    got = sse(resp, lambda got: any(k == "event" for k, _ in got))
    assert [d["plate"] for k, d in got if k == "event"] == ["鄂A00002"]  # the one the page did not have

    monkeypatch.setattr("dashboard.lots_api.SESSION_CHECK_S", 0.0)
    users = UserStore(db, migrate=False)
    users.set_password("olga", "a-new-password-9")
    users.close()
    assert sse(resp, lambda got: any(k == "end" for k, _ in got))[-1] == ("end", {})
    resp.close()


def test_a_busy_batch_is_capped_and_says_how_many_were_left_out(app: Flask, feed: LiveFeed) -> None:
    boss = login(app, "boss")
    resp = boss.get("/api/v1/ops/stream?kinds=event", buffered=False)  # from the vehicle numbered now
    for n in range(130):
        arrive(feed, vehicle("L1", "L1-in", plate=f"鄂A{n:05d}", seq=n + 1))
    got = sse(resp, lambda got: sum(k == "event" for k, _ in got) >= 100)
    resp.close()
    assert got[0] == ("skipped", {"count": 30})
    assert [d["plate"] for k, d in got if k == "event"] == [f"鄂A{n:05d}" for n in range(30, 130)]


# -- escaping -----------------------------------------------------------------------------------------
def test_a_script_plate_is_rendered_escaped_on_every_page(app: Flask, feed: LiveFeed, db: str) -> None:
    """No gate can send such a plate (the protocol refuses it), but the database may hold anything:
    what is shown is escaped, from the database and from the live feed alike."""
    store = EventStore(db, migrate=False)
    ev = vehicle("L1", "L1-in", plate="鄂A99999")
    store.record_batch([ev])
    with Session(store.engine) as s, s.begin():
        s.get(EventRow, ev.id).plate = "<script>x"  # type: ignore[union-attr]
    store.close()
    state = live_state(app)
    state.put(availability("L1", EVIL, 400, 120))
    state.put(gate("L1-x", "L1", mode=EVIL[:16], barrier=EVIL))
    boss = login(app, "boss")
    for path in ("/ops/live", "/ops/live?lot=L1", "/ops/lots/L1", "/ops/gates", "/ops/"):
        html = boss.get(path).get_data(as_text=True)
        assert "<script>x" not in html and EVIL not in html, path
        assert "&lt;script&gt;" in html or "\\u003cscript\\u003e" in html, path
    live = boss.get("/ops/live").get_data(as_text=True)
    assert '<span class="plate-text">&lt;script&gt;x</span>' in live
    rejected = vehicle("L1", "L1-in").model_dump(mode="json") | {"plate": EVIL}
    assert feed.take_event(TOPICS.gate_events("L1-in"), json.dumps(rejected).encode()) is None
    assert feed.rejected["event_schema"] == 1


# -- series and flows ---------------------------------------------------------------------------------
def test_occupancy_series_from_seeded_history(app: Flask, db: str) -> None:
    from sqlalchemy import create_engine

    now = utc_now()
    step = timedelta(minutes=5)
    slots = bucket_starts(now, timedelta(hours=24), step)
    engine = create_engine(db)
    # a sample per 5-minute slot, 100 + the slot's index, except a silent hour (12 slots) in the middle
    samples = [(ts, 100 + i, 400) for i, ts in enumerate(slots) if not 100 <= i < 112]
    # and a week back: every 5 minutes, occupancy = the minute of the hour
    week_start = bucket_starts(now, timedelta(days=7), timedelta(hours=1))[0]
    samples += [(week_start + i * step, (i % 12) * 5, 400) for i in range(12 * 24)]  # its first day
    write_samples(engine, "L1", samples)
    write_samples(engine, "L2", [(slots[-1], 7, 50)])  # another lot's sample is not L1's
    engine.dispose()
    boss = login(app, "boss")

    day = boss.get("/api/v1/ops/lots/L1/occupancy?range=24h").get_json()
    assert day["step_s"] == 300 and len(day["buckets"]) == 288
    for i, b in enumerate(day["buckets"]):
        assert datetime.fromisoformat(b["ts"]) == slots[i]
        if 100 <= i < 112:
            assert b["occupied"] is None and b["pct"] is None and b["samples"] == 0, i
        else:
            assert (b["occupied"], b["free"], b["capacity"], b["samples"]) == (100 + i, 300 - i, 400, 1), i
            assert b["pct"] == round(100 * (100 + i) / 400, 1)

    week = boss.get("/api/v1/ops/lots/L1/occupancy?range=7d").get_json()
    assert week["step_s"] == 3600 and len(week["buckets"]) == 168
    first_day = week["buckets"][:24]
    assert all(b["samples"] == 12 and b["occupied"] == 27.5 for b in first_day)  # mean of 0, 5, ... 55
    assert all(b["samples"] == 0 for b in week["buckets"][24:140])  # nothing sampled in between

    html = boss.get("/ops/").get_data(as_text=True)  # the sparkline of the last 6 hours, drawn here
    row = re.search(r'<tr id="ops-lot-L1".*?</tr>', html, re.S)
    assert row and row.group(0).count("<polyline") >= 1
    assert "/api/v1/ops/lots/L1/occupancy?range=24h" in boss.get("/ops/lots/L1").get_data(as_text=True)


def test_entries_and_exits_per_hour_from_stored_events(app: Flask, db: str) -> None:
    now = utc_now()
    hour = timedelta(hours=1)
    this_hour = datetime.fromtimestamp(int(now.timestamp()) // 3600 * 3600, UTC)
    events = []
    for h, (ins, outs, refused) in enumerate([(3, 1, 0), (0, 2, 1), (5, 0, 2)]):  # 2 h ago, 1 h ago, now
        start = this_hour - (2 - h) * hour
        events += [vehicle("L1", "L1-in", ts=start + timedelta(seconds=1 + k), seq=1) for k in range(ins)]
        events += [vehicle("L1", "L1-out", direction=Direction.EXIT, ts=start + timedelta(seconds=2 + k))
                   for k in range(outs)]  # fmt: skip
        events += [vehicle("L1", "L1-in", action=Action.DENY, ts=start + timedelta(seconds=3 + k))
                   for k in range(refused)]  # fmt: skip
    events.append(vehicle("L1", "L1-in", ts=this_hour - 30 * hour))  # older than the day shown
    events.append(vehicle("L2", "L2-in", ts=this_hour))  # another lot
    store = EventStore(db, migrate=False)
    store.record_batch(events)
    store.close()
    boss = login(app, "boss")
    hours = boss.get("/api/v1/ops/lots/L1/flows").get_json()["hours"]
    assert len(hours) == 24 and datetime.fromisoformat(hours[-1]["hour"]) == this_hour
    assert [(h["entries"], h["exits"], h["refused"]) for h in hours[-3:]] == [(3, 1, 0), (0, 2, 1), (5, 0, 2)]
    assert sum(h["entries"] + h["exits"] + h["refused"] for h in hours[:-3]) == 0
    assert len(boss.get("/api/v1/ops/lots/L1/flows?hours=48").get_json()["hours"]) == 48
    assert sum(h["entries"] for h in boss.get("/api/v1/ops/lots/L1/flows?hours=48").get_json()["hours"]) == 9


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/v1/ops/lots/L1/occupancy?range=1y", "range must be one of 24h, 7d"),
        ("/api/v1/ops/lots/L1/flows?hours=0", "hours must be"),
        ("/api/v1/ops/lots/L1/flows?hours=24&hours=12", "hours given 2 times"),
        ("/api/v1/ops/events?limit=100000", "limit must be"),
        ("/api/v1/ops/events?color=red", "unknown query parameter(s): color"),
        ("/api/v1/ops/stream?kinds=lot,screen", "kinds"),
        ("/api/v1/ops/gates?lot=", "lot is empty"),
    ],
)
def test_bad_query_parameters_are_a_400_naming_them(app: Flask, path: str, message: str) -> None:
    resp = login(app, "boss").get(path)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert message in resp.get_json()["error"]["message"]


def test_unknown_lot_is_404_and_a_scoped_but_silent_lot_still_has_a_page(app: Flask, db: str) -> None:
    boss = login(app, "boss")
    assert boss.get("/ops/lots/NOPE").status_code == 404
    resp = boss.get("/api/v1/ops/lots/NOPE/flows")
    assert resp.status_code == 404 and resp.get_json()["error"]["message"] == "no lot 'NOPE'"
    users = UserStore(db, migrate=False)
    users.add_user("sam", "sam-password-1", "viewer", lots="L1,L9")
    users.close()
    PASSWORDS["sam"] = "sam-password-1"
    html = login(app, "sam").get("/ops/lots/L9").get_data(as_text=True)
    assert "暂无数据" in html and "暂无车辆" in html


# -- gate health ----------------------------------------------------------------------------------------
def test_gate_warnings_are_judged_and_highlighted(app: Flask) -> None:
    state = live_state(app)
    old = utc_now() - timedelta(seconds=200)
    state.put(gate("L1-late", "L1", ts=old))
    state.put(gate("L1-backlog", "L1", backlog=40, backlog_age_s=75.0))
    state.put(
        gate("L1-sick", "L1", camera="down", disk_free_mb=120.0, cpu_temp_c=83.5, barrier="FAULT", dropped=3)
    )
    state.put(GateStatus(gate_id="L1-off", lot_id="L1", state="offline", ts=utc_now()))
    boss = login(app, "boss")
    body = boss.get("/api/v1/ops/gates?lot=L1").get_json()
    warned = {g["gate_id"]: g["warnings"] for g in body["gates"]}
    assert warned == {
        "L1-late": ["heartbeat_late"], "L1-backlog": ["backlog_old"],
        "L1-sick": ["camera_down", "disk_low", "hot", "barrier_fault", "dropped"], "L1-off": ["offline"],
        "L1-in": [],
    }  # fmt: skip
    assert [g["gate_id"] for g in body["gates"]][-1] == "L1-in"  # those needing attention first
    assert body["limits"] == {
        "heartbeat_late_s": 90.0,
        "backlog_age_s": 60.0,
        "disk_low_mb": 500.0,
        "cpu_hot_c": 80.0,
    }
    late = next(g for g in body["gates"] if g["gate_id"] == "L1-late")
    assert 199 <= late["heartbeat_age_s"] < 230
    html = boss.get("/ops/gates").get_data(as_text=True)
    assert re.search(r'<tr id="gate-L1-off" class="gate-row has-warn is-off"', html)
    assert re.search(r'<tr id="gate-L1-in" class="gate-row"', html)
    assert "摄像头故障" in html and "磁盘空间不足" in html and "无心跳" in html
    assert re.search(r'id="gates-warned">4<', html) and re.search(r'id="gates-offline">1<', html)
    lot_page = boss.get("/ops/lots/L1").get_data(as_text=True)
    assert 'id="gate-L1-sick"' in lot_page and 'id="gate-L2-in"' not in lot_page


# -- the live feed: rings, crops, bad messages ------------------------------------------------------
def test_live_feed_keeps_bounded_rings_and_serves_crops_from_them_or_the_database(
    app: Flask, feed: LiveFeed, db: str
) -> None:
    with_crop = vehicle("L1", "L1-in", crop=JPEG)
    arrive(feed, with_crop)  # not stored: the collector has not written it yet
    boss = login(app, "boss")
    resp = boss.get(f"/ops/events/{with_crop.id}/crop.jpg")
    assert resp.status_code == 200 and resp.mimetype == "image/jpeg" and resp.data == JPEG
    stored = vehicle("L1", "L1-in", crop=JPEG + b"db", seq=2)
    not_jpeg = vehicle("L1", "L1-in", crop=b"<svg onload=alert(1)>", seq=3)
    store = EventStore(db, migrate=False)
    store.record_batch([stored, not_jpeg])
    store.close()
    assert boss.get(f"/ops/events/{stored.id}/crop.jpg").data == JPEG + b"db"
    assert boss.get(f"/ops/events/{not_jpeg.id}/crop.jpg").status_code == 404
    assert boss.get("/ops/events/01JDZZZZZZZZZZZZZZZZZZZZZZ/crop.jpg").status_code == 404
    assert boss.get("/ops/events/not-an-id/crop.jpg").status_code == 404

    live = boss.get("/ops/live").get_data(as_text=True)
    assert live.index(f'id="ev-{not_jpeg.id}"') < live.index(f'id="ev-{with_crop.id}"')  # newest first
    assert f'src="/ops/events/{with_crop.id}/crop.jpg"' in live

    state = LiveState()
    small = LiveFeed(MqttSettings(topic_root=ROOT), state, client_id="rings")
    events = [
        vehicle("L1" if n % 2 else "L2", "L1-in" if n % 2 else "L2-in", crop=JPEG, seq=n + 1)
        for n in range(CROPS_KEPT + 5)
    ]
    for ev in events:
        assert small.take_event(TOPICS.gate_events(ev.gate_id), encode(ev)) is not None
    assert (
        state.crop(events[0].id) is None
        and state.crop(events[-1].id) is not None
        and len(state._crops) == CROPS_KEPT
    )
    assert len(state.recent_events(["L1"], 10_000)) == PER_LOT
    assert len(state.recent_events(None, 10_000)) == 2 * PER_LOT


def test_live_feed_refuses_what_a_gate_may_not_say(feed: LiveFeed) -> None:
    ev = vehicle("L1", "L1-in")
    assert feed.take_event(TOPICS.gate_events("L1-out"), encode(ev)) is None  # another gate's prefix
    assert feed.take_event(TOPICS.gate_events("L1-in"), b"{not json") is None
    assert feed.take_event(TOPICS.gate_events("L1-in"), b"x" * 300_000) is None
    assert dict(feed.rejected) == {"event_gate_mismatch": 1, "event_schema": 1, "event_too_large": 1}
    assert feed.take_event(TOPICS.gate_events("L1-in"), encode(ev)) is not None


def test_sparkline_breaks_at_gaps() -> None:
    trend = sparkline([0.0, 50.0, None, 100.0, None, 25.0, 25.0])
    assert trend.lines == ("0,26 20,14", "100,20 120,20") and trend.dots == ((60.0, 2.0),)
    assert (trend.first, trend.last) == (0.0, 25.0) and not trend.empty
    assert sparkline([None, None]).empty
