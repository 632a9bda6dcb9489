"""Inspection stations and the public pages in a real browser (Debian's Chromium, Playwright), on
the real broker, collector and dashboard (waitress):

- an operator logs in; a scripted inspection morning (three entries of one plate at a lane,
  published on the broker) makes the collector lock the plate at the station's lanes
  (InspectionAreas' thresholds: warn at 2, lock at 3); the alert appears on the open alerts page
  without a reload; the station page shows the lane's heartbeat, results as the lane publishes
  them and the monthly pass rates with a flagged station; the operator unlocks with a reason and
  the station's retained lock list on the broker no longer holds the plate;
- a driver finds lots near a typed place, and on a phone near their location (geolocation
  granted), with free spaces, distance and data age, updating live; a guidance-screen page.

Every page built here is saved as a PNG in tests/artifacts/. No page may trip the
Content-Security-Policy or throw a script error.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from ulid import ULID

from cloud.collector import Collector
from cloud.config import CollectorConfig
from dashboard import create_app
from dashboard.config import DashboardConfig
from parkgate.demo import write_toml
from parkgate.settings import MqttSettings
from protocol import (
    Action,
    Decision,
    Direction,
    GateEvent,
    GateStatus,
    InspectionResult,
    LotLists,
    Reason,
    Topics,
    decode,
    encode,
)
from protocol.messages import utc_now
from tests.browser_helpers import ARTIFACTS, BROWSER_MARKS, add_operator, chromium, log_in, serve
from tests.mqtt_helpers import publish_raw, retained
from tests.waiting import wait_until

pytestmark = BROWSER_MARKS
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect

PLATE = "冀F12345"
SITE = {
    "name": "c1",
    "republish_s": 600,  # so only the refresh after the unlock can bring the new list this soon
    "lots": [
        {"id": "L1", "name": "江汉路停车场", "capacity": 120, "lat": 30.5800, "lon": 114.2900},
        {"id": "L2", "name": "吉庆街停车场", "capacity": 60, "lat": 30.5850, "lon": 114.2820},
        {"id": "L3", "name": "江汉关停车场", "capacity": 40, "lat": 30.5775, "lon": 114.2950},
        {"id": "ST01", "name": "保定检测站", "capacity": 50},  # the station's lanes count its cars too
    ],
    "screens": [
        {
            "id": "S1",
            "name": "江汉路诱导屏",
            "lots": [{"lot_id": "L1", "arrow": "left"}, {"lot_id": "L2", "arrow": "right"}],
        }
    ],
    "stations": [
        {"id": "ST01", "name": "保定检测站"},
        {"id": "ST02", "name": "石家庄检测站"},
        {"id": "ST03", "name": "唐山检测站"},
        {"id": "ST04", "name": "邯郸检测站"},
    ],
}
PLACES = [{"name": "江汉路步行街", "lat": 30.5810, "lon": 114.2880}]


@dataclass
class System:
    url: str
    settings: MqttSettings
    collector: Collector
    topics: Topics


@pytest.fixture
def system(tmp_path: Path, mqtt_settings: MqttSettings) -> Iterator[System]:
    """Collector and dashboard (waitress on a free port) on the test's broker, one operator."""
    database = f"sqlite:///{tmp_path / 'events.sqlite'}"
    cfg = CollectorConfig.model_validate({**SITE, "database": database, "mqtt": mqtt_settings.model_dump()})
    collector = Collector(cfg)
    collector.start()
    add_operator(database)
    seed_pass_rates(collector)
    dashboard = DashboardConfig(
        mqtt=mqtt_settings, database=database, secret_key_file=tmp_path / "secret.key",
        collector_config=write_toml(tmp_path / "collector.toml", {**SITE, "database": database}), places=PLACES,
    )  # fmt: skip
    app = create_app({"PARKGATE": dashboard})
    try:
        with serve(app) as url:
            topics = Topics(mqtt_settings.topic_root)
            for gate, lot in (("L1-in", "L1"), ("L2-in", "L2"), ("ST01-L1", "ST01"), ("ST01-L2", "ST01")):
                heartbeat(mqtt_settings, topics, gate, lot)
            wait_until(lambda: collector.connected.is_set(), what="collector connected")
            yield System(url, mqtt_settings, collector, topics)
    finally:
        collector.close()


def heartbeat(settings: MqttSettings, topics: Topics, gate: str, lot: str, mode: str = "normal") -> None:
    status = GateStatus(
        gate_id=gate, lot_id=lot, state="online", ts=utc_now(), mode=mode, barrier="closed", backlog=0,
        backlog_age_s=0.0, camera="ok", fps=12.0,
    )  # fmt: skip
    publish_raw(settings, topics.gate_status(gate), encode(status), retain=True)


def seed_pass_rates(collector: Collector) -> None:
    """Three past months of results at four stations; ST03 passes nearly everyone every month."""
    month = utc_now().replace(day=1, hour=2, minute=0, second=0, microsecond=0)
    rates = {"ST01": 0.78, "ST02": 0.74, "ST03": 0.99, "ST04": 0.81}
    for _n in range(3):
        month = (month - timedelta(days=1)).replace(day=1)
        results = []
        for station, rate in rates.items():
            for i in range(100):
                results.append(
                    InspectionResult(
                        id=str(ULID()), ts=month + timedelta(minutes=i), station=station,
                        gate_id=f"{station}-L1", plate="冀A00001", result="pass" if i < rate * 100 else "fail",
                    )
                )  # fmt: skip
        collector.areas.on_results(results)


_seq = iter(range(1, 1_000_000))


def lane_entry(system: System, plate: str, minutes_ago: float) -> None:
    event = GateEvent(
        epoch="LANEEPOCH1", id=str(ULID()), seq=next(_seq), ts=utc_now() - timedelta(minutes=minutes_ago),
        lot_id="ST01", gate_id="ST01-L1", direction=Direction.ENTRY, plate=plate, confidence=0.93,
        decision=Decision(action=Action.OPEN, reason=Reason.SPACE_FREE),
    )  # fmt: skip
    publish_raw(system.settings, system.topics.gate_events("ST01-L1"), encode(event))


def car_enters(system: System, lot: str, plate: str) -> None:
    event = GateEvent(
        epoch="LOTEPOCH01", id=str(ULID()), seq=next(_seq), ts=utc_now(), lot_id=lot, gate_id=f"{lot}-in",
        direction=Direction.ENTRY, plate=plate, confidence=0.95,
        decision=Decision(action=Action.OPEN, reason=Reason.SPACE_FREE),
    )  # fmt: skip
    publish_raw(system.settings, system.topics.gate_events(f"{lot}-in"), encode(event))


def inspection(system: System, plate: str, result: str) -> None:
    message = InspectionResult(
        id=str(ULID()), ts=utc_now(), station="ST01", gate_id="ST01-L2", plate=plate, result=result
    )  # type: ignore[arg-type]
    publish_raw(system.settings, system.topics.gate_inspections("ST01-L2"), encode(message))


def locked_on_broker(system: System) -> list[str]:
    payload = retained(system.settings, system.topics.lot_lists("ST01"), timeout=2.0)
    return decode(LotLists, payload).locked if payload else []


class Watched:
    """Script errors and Content-Security-Policy reports of every page of a browser context."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def attach(self, page: sync_api.Page) -> sync_api.Page:
        page.on("pageerror", lambda err: self.problems.append(f"script error: {err}"))
        page.on(
            "console",
            lambda msg: self.problems.append(msg.text) if "Content Security Policy" in msg.text else None,
        )
        return page


@pytest.fixture
def browser() -> Iterator[sync_api.Browser]:
    with chromium() as browser:
        yield browser


def test_operator_sees_a_lock_arrive_then_unlocks_it_and_the_lanes_hear(
    system: System, browser: sync_api.Browser
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    watched = Watched()
    page = watched.attach(browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN"))
    log_in(page, system.url, "/ops/alerts")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)
    expect(page.locator("#alerts-empty")).to_be_visible()
    page.evaluate("window.__notReloaded = true")

    # the morning at lane ST01-L1: the same plate three times within the window
    for n, minutes_ago in enumerate((95, 50, 5)):
        lane_entry(system, PLATE, minutes_ago)
        wait_until(lambda n=n: system.collector.stored == n + 1, what=f"entry {n + 1} stored")
    card = page.locator(".alert-card.kind-lock", has_text=PLATE)
    expect(card).to_be_visible(timeout=5000)  # live, no reload
    expect(page.locator(".alert-card.kind-warn", has_text=PLATE)).to_be_visible()
    assert page.evaluate("window.__notReloaded") is True
    expect(page.locator("#count-lock")).to_have_text("1")
    wait_until(lambda: PLATE in locked_on_broker(system), what="the lock on the broker", timeout=5)
    lock = next(a for a in system.collector.areas.alerts("ST01") if a.kind == "lock")

    # the station: lanes from heartbeats, results as the lane sends them, locks, pass rates
    page.goto(system.url + "/ops/stations/ST01")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)
    expect(page.locator("#lane-ST01-L1.is-online")).to_be_visible()
    expect(page.locator("#locked-plates .chip", has_text=PLATE)).to_be_visible()
    for plate, result in (("冀A55501", "pass"), ("冀A55502", "fail"), ("冀A55503", "pass")):
        inspection(system, plate, result)
    expect(page.locator("#results-body tr").first).to_contain_text("冀A55503", timeout=5000)
    expect(page.locator("#results-body tr.result-fail").first).to_contain_text("冀A55502")
    heartbeat(system.settings, system.topics, "ST01-L2", "ST01", mode="closed")
    expect(page.locator("#lane-ST01-L2 .lane-mode")).to_have_text("关闭", timeout=5000)
    expect(page.locator("#rates-ST03.is-flagged")).to_be_visible()
    page.wait_for_function("window.Chart && Chart.getChart(document.getElementById('rates-chart'))")
    wait_until(  # the collector stored them too: they count in this month's pass rate
        lambda: any(r.station_id == "ST01" and r.results == 3 for r in system.collector.areas.pass_rates()),
        what="the results stored",
    )
    page.screenshot(path=str(ARTIFACTS / "ops-station.png"), full_page=True)

    # back to the alert: review, then unlock with a reason and the confirmation
    page.goto(f"{system.url}/ops/alerts#alert-{lock.id}")
    card = page.locator(f"#alert-{lock.id}")
    card.locator(".action:not(.action-danger) > summary").click()
    card.locator("textarea[name=note]").fill("录像核实：同一车辆，无预约")
    card.locator(".action:not(.action-danger) button[type=submit]").click()
    expect(card).to_have_attribute("data-status", "reviewed", timeout=5000)
    card = page.locator(f"#alert-{lock.id}")
    card.locator(".action-danger > summary").click()
    card.locator("textarea[name=reason]").fill("车主说明了多次进站的原因")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "ops-alerts.png"), full_page=True)
    card.locator(".action-danger button[type=submit]").click()  # the box is not ticked yet
    assert card.get_attribute("data-status") == "reviewed"  # the browser asks for the box first
    card.locator("input[name=confirm]").check()
    card.locator(".action-danger button[type=submit]").click()
    expect(page.locator(f"#alert-{lock.id}")).to_have_attribute("data-status", "unlocked", timeout=5000)
    expect(page.locator("#alerts-notice")).to_contain_text("每条车道都已收到新名单")
    expect(page.locator("#count-lock")).to_have_text("0")

    wait_until(lambda: PLATE not in locked_on_broker(system), what="the unlock on the broker", timeout=5)
    steps = [(s.action, s.actor) for s in system.collector.areas.audit("ST01", subject=PLATE)]
    assert steps == [("warn", "system"), ("lock", "system"), ("review", "olga"), ("unlock", "olga")]
    page.locator(f"#alert-{lock.id} .alert-history > summary").click()
    expect(page.locator(f"#alert-{lock.id} .step-unlock")).to_contain_text("车主说明了多次进站的原因")
    assert watched.problems == []


def test_driver_finds_lots_near_a_place_and_near_their_location(
    system: System, browser: sync_api.Browser
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    watched = Watched()
    for lot in ("L1", "L2"):  # a few cars: the numbers are not all the capacity
        car_enters(system, lot, f"鄂A{lot}001")
    page = watched.attach(browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN"))
    page.goto(system.url + "/")
    page.click("#near-link")
    expect(page).to_have_url(system.url + "/near")
    page.fill("#near-q", "江汉路步行街")
    page.press("#near-q", "Enter")
    items = page.locator("#near-list .near-item")
    expect(items).to_have_count(3, timeout=5000)
    expect(items.nth(0)).to_have_attribute("data-lot", "L1")  # 221 m; L2 726 m; L3 775 m
    expect(items.nth(2)).to_have_attribute("data-lot", "L3")
    expect(page.locator("#near-L1 .near-free")).to_have_text("119")
    expect(page.locator("#near-L1 .near-distance")).to_have_text("220 米")
    expect(page.locator("#near-L3")).to_have_class("near-item lvl-stale is-stale")  # no gate heard
    expect(page.locator("#near-L3 .near-free")).to_have_text("—")
    expect(page.locator("#near-L1 .near-age")).to_contain_text("数据时间")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)
    car_enters(system, "L1", "鄂A99999")
    expect(page.locator("#near-L1 .near-free")).to_have_text("118", timeout=5000)  # live
    page.screenshot(path=str(ARTIFACTS / "public-near.png"), full_page=True)

    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True,
        locale="zh-CN", geolocation={"latitude": 30.5848, "longitude": 114.2826}, permissions=["geolocation"],
    )  # fmt: skip
    mobile = watched.attach(phone.new_page())
    mobile.goto(system.url + "/near")
    mobile.click("#near-locate")
    expect(mobile.locator("#results-title")).to_have_text("您的位置 附近", timeout=10000)
    assert "lat=30.584800" in mobile.url
    expect(mobile.locator("#near-list .near-item").first).to_have_attribute("data-lot", "L2")
    expect(mobile.locator("#near-list .near-item")).to_have_count(3)
    mobile.screenshot(path=str(ARTIFACTS / "public-near-mobile.png"), full_page=True)
    phone.close()

    page.goto(system.url + "/screens/S1")
    expect(page.locator("#row-L1 .free")).to_have_text("118", timeout=5000)
    car_enters(system, "L2", "鄂A88888")
    expect(page.locator("#row-L2 .free")).to_have_text("58", timeout=5000)
    page.screenshot(path=str(ARTIFACTS / "screen-page.png"))
    time.sleep(0.2)
    assert watched.problems == []
