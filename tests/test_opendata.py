"""The driver and open-data feed (dashboard/opendata.py): lots near a point, forecasts, DATEX II.

Most tests fill the dashboard's live state with messages as the collector publishes them; the
last one runs the real collector and the dashboard's MQTT feed on a real broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cloud.collector import Collector
from cloud.config import CollectorConfig, LotConfig
from cloud.events_store import EventStore
from cloud.history import write_samples
from dashboard import create_app, live_state, stop_background
from dashboard.config import DashboardConfig
from dashboard.opendata import Datex2Publication, ForecastResponse, LotsResponse, haversine_m
from parkgate.settings import MqttSettings
from protocol import GateStatus, LotAvailability, Topics, encode
from protocol.messages import utc_now
from tests.mqtt_helpers import publish_raw
from tests.waiting import wait_until

HERE = (30.5806, 114.2867)  # 江汉路, Wuhan


def availability(
    lot_id: str,
    *,
    occupied: int = 3,
    capacity: int = 10,
    at: tuple[float, float] | None = HERE,
    age: float | None = 5.0,
    limit: float | None = 120.0,
    stale: bool = False,
    ts: datetime | None = None,
) -> LotAvailability:
    return LotAvailability(
        lot_id=lot_id, name=f"停车场 {lot_id}", capacity=capacity, occupied=occupied,
        free=max(capacity - occupied, 0), ts=ts or utc_now(), stale=stale, data_age_s=age,
        stale_after_s=limit, lat=at[0] if at else None, lon=at[1] if at else None,
    )  # fmt: skip


def north(km: float) -> tuple[float, float]:
    """A point ``km`` north of HERE (a degree of latitude is 111.195 km)."""
    return (HERE[0] + km / 111.19508, HERE[1])


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    cfg = DashboardConfig(secret_key_file=tmp_path / "secret.key")
    return create_app({"TESTING": True, "LIVE_FEED": False, "PARKGATE": cfg})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    state = live_state(app)
    state.put(availability("L1"))
    state.put(availability("L2", at=north(1.0), occupied=10))
    state.put(availability("L3", at=north(10.0)))
    state.put(availability("L4", at=None))  # no position: never "near"
    return app.test_client()


def test_haversine_matches_a_known_distance() -> None:
    assert haversine_m(*HERE, *north(1.0)) == pytest.approx(1000.0, abs=0.5)
    # Wuhan to Beijing (Tiananmen), about 1,053 km as the crow flies
    assert haversine_m(*HERE, 39.9087, 116.3975) / 1000 == pytest.approx(1053, abs=5)


def test_lots_within_the_radius_nearest_first(client: FlaskClient) -> None:
    body = client.get(f"/api/v1/lots?lat={HERE[0]}&lon={HERE[1]}&radius_km=2").get_json()
    LotsResponse.model_validate(body)
    assert [(x["id"], x["distance_m"]) for x in body["lots"]] == [
        ("L1", 0.0),
        ("L2", pytest.approx(1000, abs=1)),
    ]
    assert body["query"] == {"lat": HERE[0], "lon": HERE[1], "radius_km": 2.0} and body["count"] == 2
    first = body["lots"][0]
    assert (first["free"], first["capacity"], first["stale"], first["state"]) == (7, 10, False, "open")
    assert 5.0 <= first["data_age_s"] < 7 and first["stale_after_s"] == 120.0
    assert body["lots"][1]["free"] == 0  # full, and fresh: 0 is the truth
    wide = client.get(f"/api/v1/lots?lat={HERE[0]}&lon={HERE[1]}&radius_km=20").get_json()
    assert [x["id"] for x in wide["lots"]] == ["L1", "L2", "L3"]
    default = client.get(f"/api/v1/lots?lat={HERE[0]}&lon={HERE[1]}").get_json()
    assert default["query"]["radius_km"] == 5.0 and [x["id"] for x in default["lots"]] == ["L1", "L2"]
    every = client.get("/api/v1/lots").get_json()
    assert [(x["id"], x["distance_m"]) for x in every["lots"]] == [(f"L{i}", None) for i in range(1, 5)]
    assert every["query"] is None


def test_a_stale_lot_gives_no_free_count(app: Flask) -> None:
    state = live_state(app)
    state.put(availability("S1", age=200.0))  # the collector's count is 200 s old
    state.put(availability("S2", age=100.0, ts=utc_now() - timedelta(seconds=30)))  # collector silent since
    state.put(availability("S3", age=None, stale=True))  # never heard from a gate
    state.put(availability("S4", age=None, limit=None, ts=utc_now() - timedelta(minutes=10)))  # old collector
    state.put(availability("S5", age=None, limit=None))  # old collector, fresh message
    lots = {x["id"]: x for x in app.test_client().get("/api/v1/lots").get_json()["lots"]}
    for lot_id in ("S1", "S2", "S3", "S4"):
        got = lots[lot_id]
        assert (got["free"], got["stale"], got["state"], got["last_free"]) == (None, True, "nodata", 7), (
            lot_id
        )
    assert lots["S2"]["data_age_s"] == pytest.approx(130, abs=2)
    assert lots["S3"]["data_age_s"] is None and lots["S3"]["last_updated"] is None
    assert (lots["S5"]["free"], lots["S5"]["stale"]) == (7, False)


def test_a_lot_whose_gates_are_all_closed_is_closed(app: Flask) -> None:
    state = live_state(app)
    state.put(availability("L1"))
    for gate, mode in (("L1-in", "closed"), ("L1-out", "lockdown")):
        state.put(GateStatus(gate_id=gate, lot_id="L1", state="online", ts=utc_now(), mode=mode))
    state.put(GateStatus(gate_id="L1-old", lot_id="L1", state="offline", ts=utc_now()))  # not counted
    client = app.test_client()
    assert client.get("/api/v1/lots").get_json()["lots"][0]["state"] == "closed"
    site = client.get("/api/v1/datex2").get_json()["parkingPublicationLight"]["parkingSite"][0]
    assert (site["parkingSiteStatus"], site["isOpenNow"]) == ("closed", False)
    state.put(GateStatus(gate_id="L1-in", lot_id="L1", state="online", ts=utc_now(), mode="normal"))
    assert client.get("/api/v1/lots").get_json()["lots"][0]["state"] == "open"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("lat=30.5", "lon is missing: give lat and lon together"),
        ("lon=114.2", "lat is missing: give lat and lon together"),
        ("radius_km=2", "lat is missing"),
        ("lat=abc&lon=114", "lat must be a number, not 'abc'"),
        ("lat=91&lon=114", "lat must be from -90 to 90; got 91"),
        ("lat=30&lon=-181", "lon must be from -180 to 180; got -181"),
        ("lat=nan&lon=114", "lat must be from -90 to 90; got nan"),
        ("lat=30&lon=114&radius_km=0", "radius_km must be more than 0 up to 50; got 0"),
        ("lat=30&lon=114&radius_km=51", "radius_km must be more than 0 up to 50; got 51"),
        ("lat=30&lon=114&lat=31", "lat given 2 times; give it once"),
        ("lat=&lon=114", "lat is empty"),
        ("lat=30&lon=114&limit=5", "unknown query parameter(s): limit (accepted: lat, lon, radius_km)"),
    ],
)
def test_bad_queries_are_clear_400s(client: FlaskClient, query: str, message: str) -> None:
    resp = client.get(f"/api/v1/lots?{query}")
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["error"]["status"] == 400 and message in body["error"]["message"], body


def test_datex2_parking_publication_light(app: Flask, client: FlaskClient) -> None:
    state = live_state(app)
    state.put(availability("L5", age=300.0))  # stale
    resp = client.get("/api/v1/datex2")
    assert resp.status_code == 200
    body = resp.get_json()
    Datex2Publication.model_validate(body)
    assert body["_modelBaseVersion"] == "3"
    publication = body["parkingPublicationLight"]
    assert set(publication) == {"name", "lang", "publicationTime", "parkingSite"}
    sites = {s["_id"]: s for s in publication["parkingSite"]}
    assert sorted(sites) == ["L1", "L2", "L3", "L4", "L5"]
    l1 = sites["L1"]
    assert l1["locationAndDimension"] == {
        "coordinatesForDisplay": {"latitude": HERE[0], "longitude": HERE[1]}
    }
    assert (l1["type"], l1["numberOfSpaces"], l1["availableSpaces"], l1["parkingSiteStatus"]) == (
        "carPark", 10, 7, "spacesAvailable",
    )  # fmt: skip
    assert l1["parkingOccupancy"] == {"parkingNumberOfOccupiedSpaces": 3, "parkingOccupancy": 30.0}
    age = (utc_now() - datetime.fromisoformat(l1["lastUpdate"])).total_seconds()
    assert 5 <= age < 7  # when a gate last confirmed the count, not when it was published
    assert sites["L2"]["parkingSiteStatus"] == "full" and sites["L2"]["availableSpaces"] == 0
    assert "locationAndDimension" not in sites["L4"]
    stale = sites["L5"]
    assert stale["parkingSiteStatus"] == "unknown"
    assert "availableSpaces" not in stale and "parkingOccupancy" not in stale and "isOpenNow" not in stale
    assert client.get("/api/v1/datex2?format=xml").status_code == 400


# -- forecasts -------------------------------------------------------------------------------------------
@pytest.fixture
def db_app(tmp_path: Path) -> Iterator[tuple[Flask, EventStore]]:
    store = EventStore(f"sqlite:///{tmp_path / 'events.sqlite'}")
    store.sync_lots([LotConfig(id="L1", name="江汉路", capacity=200)])
    cfg = DashboardConfig(database=str(store.engine.url), secret_key_file=tmp_path / "secret.key")
    yield create_app({"TESTING": True, "LIVE_FEED": False, "PARKGATE": cfg}), store
    store.close()


def test_forecast_needs_the_database(client: FlaskClient) -> None:
    resp = client.get("/api/v1/lots/L1/forecast")
    assert (
        resp.status_code == 503
        and "set database in the dashboard config" in resp.get_json()["error"]["message"]
    )


def test_forecast_from_the_history(db_app: tuple[Flask, EventStore]) -> None:
    app, store = db_app
    now = utc_now()
    # this time of day one, two and three weeks ago: 150 cars, then 20 more in 30 minutes, 40 in 60
    samples = []
    for week in range(1, 4):
        base = now - timedelta(weeks=week)
        samples += [
            (base + timedelta(minutes=m), 150 + round(40 * min(max(m, 0), 60) / 60), 200)
            for m in range(-10, 70, 5)
        ]
    write_samples(store.engine, "L1", samples)
    live_state(app).put(availability("L1", occupied=120, capacity=200))
    resp = app.test_client().get("/api/v1/lots/L1/forecast")
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    ForecastResponse.model_validate(body)
    assert (body["free"], body["stale"], body["capacity"]) == (80, False, 200)
    got = [(f["minutes"], f["method"], f["samples"], f["free"]) for f in body["forecasts"]]
    assert got == [(30, "weekly", 3, 60), (60, "weekly", 3, 40)]


def test_forecast_errors_and_unavailable(db_app: tuple[Flask, EventStore]) -> None:
    app, _store = db_app
    client = app.test_client()
    assert client.get("/api/v1/lots/L9/forecast").get_json() == {
        "error": {"status": 404, "message": "no lot 'L9'"}
    }
    bad = client.get("/api/v1/lots/bad%20id/forecast")
    assert bad.status_code == 400 and "malformed" in bad.get_json()["error"]["message"]
    assert client.get("/api/v1/lots/L1/forecast?minutes=90").status_code == 400
    body = client.get("/api/v1/lots/L1/forecast").get_json()  # no count known yet
    assert body["detail"] == "no current count for the lot" and body["free"] is None
    assert {f["method"] for f in body["forecasts"]} == {"unavailable"}
    live_state(app).put(availability("L1", capacity=200, age=500.0))
    body = client.get("/api/v1/lots/L1/forecast").get_json()
    assert (body["detail"], body["stale"]) == ("the lot's data is stale", True)
    assert all(f["free"] is None for f in body["forecasts"])


# -- the whole chain on a real broker ----------------------------------------------------------------------
def test_collector_to_open_data_over_the_broker(tmp_path: Path, mqtt_settings: MqttSettings) -> None:
    database = f"sqlite:///{tmp_path / 'events.sqlite'}"
    collector = Collector(
        CollectorConfig(
            name="c1", database=database, mqtt=mqtt_settings,
            lots=[
                LotConfig(id="L1", name="江汉路停车场", capacity=10, lat=HERE[0], lon=HERE[1]),
                LotConfig(id="L2", name="汉街", capacity=5, lat=north(3)[0], lon=north(3)[1]),
            ],
        )
    )  # fmt: skip
    collector.start()
    cfg = DashboardConfig(mqtt=mqtt_settings, database=database, secret_key_file=tmp_path / "secret.key")
    app = create_app({"TESTING": True, "PARKGATE": cfg})
    client = app.test_client()
    near = f"/api/v1/lots?lat={HERE[0]}&lon={HERE[1]}&radius_km=5"
    try:
        wait_until(lambda: client.get(near).get_json()["count"] == 2, what="both lots in the feed")
        assert [x["state"] for x in client.get(near).get_json()["lots"]] == [
            "nodata",
            "nodata",
        ]  # no gate yet
        status = GateStatus(gate_id="L1-in", lot_id="L1", state="online", ts=utc_now())
        publish_raw(
            mqtt_settings, Topics(mqtt_settings.topic_root).gate_status("L1-in"), encode(status), retain=True
        )
        wait_until(lambda: client.get(near).get_json()["lots"][0]["free"] == 10, what="L1 to be fresh")
        lots = client.get(near).get_json()["lots"]
        assert [(x["id"], x["state"], round(x["distance_m"], -2)) for x in lots] == [
            ("L1", "open", 0), ("L2", "nodata", 3000),
        ]  # fmt: skip
        forecast = client.get("/api/v1/lots/L1/forecast").get_json()
        assert [(f["method"], f["free"]) for f in forecast["forecasts"]] == [("none", 10), ("none", 10)]
    finally:
        stop_background(app)
        collector.close()
