"""The dashboard's pages and JSON API, fed from a real broker."""

from __future__ import annotations

import json
import time

import pytest
from flask import Flask

from dashboard import create_app, live_state, stop_background
from dashboard.config import DashboardConfig
from parkgate.settings import MqttSettings
from protocol import LotAvailability, ScreenContent, ScreenRow, Topics, encode
from protocol.messages import utc_now
from tests.mqtt_helpers import publish_raw


def lot(lot_id: str = "L1", occupied: int = 3, capacity: int = 10, name: str = "江汉路") -> LotAvailability:
    return LotAvailability(
        lot_id=lot_id,
        name=name,
        capacity=capacity,
        occupied=occupied,
        free=max(capacity - occupied, 0),
        ts=utc_now(),
    )


@pytest.fixture
def app() -> Flask:
    return create_app({"TESTING": True, "LIVE_FEED": False, "SSE_KEEPALIVE_S": 0.2})


def test_availability_before_any_lot_is_an_empty_list(app: Flask) -> None:
    """Right after start, before the broker's retained counts arrive: JSON, not an empty body."""
    from dashboard.api import availability_cache

    body = availability_cache(app).every().body
    assert json.loads(body) == {"lots": [], "total_free": 0, "total_capacity": 0}
    resp = app.test_client().get("/api/v1/availability")
    assert resp.status_code == 200 and resp.get_json()["lots"] == []


def test_availability_endpoint(app: Flask) -> None:
    live_state(app).put(lot("L2", 20, 20))
    live_state(app).put(lot("L1"))
    body = app.test_client().get("/api/v1/availability").get_json()
    assert [x["lot_id"] for x in body["lots"]] == ["L1", "L2"]
    assert body["lots"][0]["free"] == 7 and body["lots"][1]["free"] == 0
    assert body["total_free"] == 7 and body["total_capacity"] == 30
    assert app.test_client().get("/api/v1/availability/L1").get_json()["occupied"] == 3


def test_unknown_lot_is_a_json_404(app: Flask) -> None:
    resp = app.test_client().get("/api/v1/availability/nope")
    assert resp.status_code == 404
    assert resp.get_json() == {"error": {"status": 404, "message": "no availability for lot 'nope'"}}
    assert app.test_client().get("/api/v1/nothing-here").get_json()["error"]["status"] == 404


def test_pages_render_and_escape_names(app: Flask) -> None:
    live_state(app).put(lot(name="<script>alert(1)</script>"))
    live_state(app).put(
        ScreenContent(
            screen_id="S1", name="路口", ts=utc_now(),
            rows=[ScreenRow(lot_id="L1", label="江汉路", arrow="left", free=7, capacity=10, full=False)],
        )
    )  # fmt: skip
    client = app.test_client()
    index = client.get("/").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index and "<script>alert(1)" not in index
    assert 'id="lot-L1"' in index
    screen = client.get("/screens/S1").get_data(as_text=True)
    assert 'id="row-L1"' in screen and "江汉路" in screen
    assert client.get("/screens/unknown").status_code == 200  # a sign waiting for data still renders


def test_stream_sends_current_state_then_changes(app: Flask) -> None:
    state = live_state(app)
    state.put(lot("L9", occupied=1))
    resp = app.test_client().get("/api/v1/stream", buffered=False)
    chunks = iter(resp.response)
    assert next(chunks).startswith(b"retry:")
    assert next(chunks).decode().startswith('id: 1\nevent: lot\ndata: {"v": 1, "lot_id": "L9"')
    state.put(lot(occupied=4))
    text = next(chunks).decode()
    assert text.startswith("id: 2\nevent: lot\ndata: {")
    assert '"free": 6' in text
    resp.close()


def test_stream_resumes_after_last_event_id(app: Flask) -> None:
    state = live_state(app)
    for n in range(3):
        state.put(lot(occupied=n))
    resp = app.test_client().get("/api/v1/stream", buffered=False, headers={"Last-Event-ID": "2"})
    chunks = iter(resp.response)
    next(chunks)
    assert next(chunks).decode().startswith("id: 3\nevent: lot")
    resp.close()


def test_live_feed_follows_the_broker(mqtt_settings: MqttSettings) -> None:
    app = create_app({"PARKGATE": DashboardConfig(mqtt=mqtt_settings)})
    topics = Topics(mqtt_settings.topic_root)
    try:
        publish_raw(mqtt_settings, topics.lot_availability("L1"), encode(lot()), retain=True)
        publish_raw(mqtt_settings, topics.lot_availability("L2"), b"garbage", retain=True)
        state = live_state(app)
        deadline = time.monotonic() + 5
        feed = app.extensions["parkgate.feed"]
        while ("L1" not in state.lots or not feed.rejected["json"]) and time.monotonic() < deadline:
            time.sleep(0.05)  # the broker hands retained messages over in no set order
        assert state.lots["L1"].free == 7
        assert feed.rejected["json"] == 1
        assert "L2" not in state.lots
    finally:
        stop_background(app)
