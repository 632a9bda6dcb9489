"""The operator pages for lots, vehicles and gates in a real browser (Debian's Chromium driven by
Playwright): log in through the form; the overview and a lot's page follow a car entering without a
reload (within 2 s); the live feed shows it with its plate crop; gate health highlights a gate
whose backlog waits. Screenshots of every page: tests/artifacts/ops-{overview,lot,live,gates}.png.

Whole chain: GateEvent (with the crop an edge makes) on the real broker -> real collector (SQLite)
-> retained availability -> the dashboard's MQTT feed -> its operator stream -> the page; the
vehicle itself reaches the live feed over the dashboard's own subscription to gate events.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from ulid import ULID

from cloud.collector import Collector
from cloud.config import CollectorConfig, LotConfig
from cloud.events_store import EventStore
from cloud.history import write_samples
from dashboard import create_app
from dashboard.config import DashboardConfig
from edge.snapshots import crop_for_event
from edge.synthetic import render_plate
from parkgate.settings import MqttSettings
from protocol import Action, Decision, Direction, GateEvent, GateStatus, Reason, Topics, encode
from protocol.messages import utc_now
from tests.browser_helpers import ARTIFACTS, BROWSER_MARKS, add_operator, chromium_page, log_in, serve
from tests.mqtt_helpers import publish_raw
from tests.waiting import wait_until

pytestmark = BROWSER_MARKS
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def event(gate_id: str, seq: int, ts: datetime, *, plate: str, direction: Direction, epoch: str,
          crop: bool = False) -> GateEvent:  # fmt: skip
    reason = Reason.SPACE_FREE if direction is Direction.ENTRY else Reason.EXIT
    return GateEvent(
        id=str(ULID()), epoch=epoch, seq=seq, ts=ts, lot_id=gate_id.split("-")[0], gate_id=gate_id,
        direction=direction, plate=plate, confidence=0.96, decision=Decision(action=Action.OPEN, reason=reason),
        crop_jpeg=crop_for_event(render_plate(plate)) if crop else None,
    )  # fmt: skip


def seed(database: str) -> None:
    """A week of occupancy history for L1 and a day of its vehicles (9 in, 6 out: 3 parked)."""
    store = EventStore(database)
    store.sync_lots(
        [LotConfig(id="L1", name="江汉路停车场", capacity=10), LotConfig(id="L2", name="汉街", capacity=5)]
    )
    now = utc_now()
    start = now - timedelta(days=7)
    samples = []
    for i in range(7 * 24 * 12):  # every 5 minutes: a working-day curve
        ts = start + timedelta(minutes=5 * i)
        hour = ts.hour + ts.minute / 60
        busy = 0.2 + 0.7 * math.exp(-(((hour - 5) % 24 - 3) ** 2) / 8)  # UTC+8 midday peak
        samples.append((ts, min(10, max(0, round(10 * busy + 0.8 * math.sin(i / 5)))), 10))
    write_samples(store.engine, "L1", samples)
    events, seq = [], {"L1-in": 0, "L1-out": 0}
    for h in range(9):
        at = now - timedelta(hours=20 - 2 * h)
        seq["L1-in"] += 1
        plate = f"鄂A1{h:04d}"
        events.append(
            event("L1-in", seq["L1-in"], at, plate=plate, direction=Direction.ENTRY, epoch="SEEDIN01")
        )
        if h < 6:
            seq["L1-out"] += 1
            exit_at = at + timedelta(minutes=50)
            events.append(
                event(
                    "L1-out", seq["L1-out"], exit_at, plate=plate, direction=Direction.EXIT, epoch="SEEDOUT1"
                )
            )
    store.record_batch(events)
    store.close()


@pytest.fixture
def system(tmp_path: Path, mqtt_settings: MqttSettings) -> Iterator[tuple[str, MqttSettings]]:
    """Collector and dashboard (waitress) on the test's broker and one database; yields the URL."""
    database = f"sqlite:///{tmp_path / 'events.sqlite'}"
    seed(database)
    add_operator(database, lots="L1")
    collector = Collector(
        CollectorConfig(
            name="c1", database=database, mqtt=mqtt_settings,
            lots=[LotConfig(id="L1", name="江汉路停车场", capacity=10), LotConfig(id="L2", name="汉街", capacity=5)],
        )
    )  # fmt: skip
    collector.start()
    topics = Topics(mqtt_settings.topic_root)
    now = utc_now()
    statuses = [
        GateStatus(gate_id="L1-in", lot_id="L1", state="online", ts=now, mode="normal", barrier="CLOSED", backlog=0,
                   camera="ok", fps=6.2, last_read_ts=now, cpu_temp_c=54.0, disk_free_mb=23_400.0),
        GateStatus(gate_id="L1-out", lot_id="L1", state="online", ts=now, mode="normal", barrier="OPEN", backlog=12,
                   backlog_age_s=95.0, camera="ok", fps=5.8, cpu_temp_c=61.0, disk_free_mb=18_100.0),
        GateStatus(gate_id="L2-in", lot_id="L2", state="offline", ts=now),
    ]  # fmt: skip
    for status in statuses:
        publish_raw(mqtt_settings, topics.gate_status(status.gate_id), encode(status), retain=True)
    cfg = DashboardConfig(database=database, secret_key_file=tmp_path / "secret.key", mqtt=mqtt_settings)
    app = create_app({"PARKGATE": cfg})
    try:
        with serve(app) as url:
            yield url, mqtt_settings
    finally:
        collector.close()


@pytest.fixture
def page() -> Iterator[sync_api.Page]:
    with chromium_page(1360, 900) as page:
        yield page


class Cars:
    """Cars entering lot L1 through gate L1-in, published as the edge does (with its plate crop)."""

    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings
        self.seq = 0

    def enter(self, plate: str) -> GateEvent:
        self.seq += 1
        ev = event(
            "L1-in", self.seq, utc_now(), plate=plate, direction=Direction.ENTRY, epoch="LIVEIN01", crop=True
        )
        publish_raw(self.settings, Topics(self.settings.topic_root).gate_events("L1-in"), encode(ev))
        return ev


def settled(page: sync_api.Page) -> None:
    """Wait for the flash of a changed number or a new row to end (a still screenshot)."""
    sync_api.expect(page.locator(".flash-up, .flash-down")).to_have_count(0, timeout=5000)


def crop_shown(page: sync_api.Page, ev: GateEvent) -> None:
    """The row's plate crop has loaded (an image the browser decoded). Polled from here: the page's
    CSP (no 'unsafe-eval') refuses Playwright's in-page polling of an expression."""
    script = f"document.querySelector('#ev-{ev.id} img')?.naturalWidth || 0"
    wait_until(lambda: page.evaluate(script) > 0, 5, f"the plate crop of {ev.plate}")


def changes_within(page: sync_api.Page, selector: str, text: str, seconds: float) -> float:
    """Seconds until ``selector`` shows ``text`` (fails after ``seconds``)."""
    start = time.monotonic()
    sync_api.expect(page.locator(selector)).to_have_text(text, timeout=seconds * 1000)
    return time.monotonic() - start


def test_operator_pages_follow_a_car_live(system: tuple[str, MqttSettings], page: sync_api.Page) -> None:
    url, settings = system
    cars = Cars(settings)
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda err: problems.append(str(err)))

    # log in through the form
    log_in(page, url, "/ops/", screenshot=ARTIFACTS / "login.png")

    # the overview: L1 only (olga's scope), its trend, then a car enters
    sync_api.expect(page.locator("#ops-lot-L1 .ops-free")).to_have_text("7", timeout=5000)
    sync_api.expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)
    assert page.locator("#ops-lot-L2").count() == 0
    assert page.locator("#ops-lot-L1 .spark polyline").count() >= 1
    sync_api.expect(page.locator("#ops-lot-L1 .ops-gates")).to_have_text("2 / 2")
    page.evaluate("window.__notReloaded = true")
    cars.enter("鄂A20001")
    took = changes_within(page, "#ops-lot-L1 .ops-free", "6", 2.0)  # the issue: within 2 s
    sync_api.expect(page.locator("#ops-free")).to_contain_text("6")
    assert page.evaluate("window.__notReloaded") is True
    print(f"overview: free count changed {took:.2f} s after the car entered")
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "ops-overview.png"), full_page=True)

    # one lot: live numbers, charts, gates, its latest vehicles
    page.click("#ops-lot-L1 .ops-lot-name")
    page.wait_for_url(url + "/ops/lots/L1")
    sync_api.expect(page.locator("#lot-free")).to_have_text("6")
    sync_api.expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)
    for chart in ("chart-day", "chart-week", "chart-flows"):
        assert page.evaluate(f"Chart.getChart('{chart}') !== undefined"), chart
    assert (
        page.evaluate("Chart.getChart('chart-day').data.datasets[0].data.filter(v => v !== null).length")
        > 200
    )
    entries = "Chart.getChart('chart-flows').data.datasets[0].data.reduce((a, b) => a + b, 0)"
    before = page.evaluate(entries)
    assert before == 10  # 9 seeded in the last 24 h, and the car above
    sync_api.expect(page.locator("#gate-L1-out")).to_have_class("gate-row has-warn")
    sync_api.expect(page.locator("#gate-L1-in")).to_have_class("gate-row")
    car = cars.enter("鄂A20002")
    took = changes_within(page, "#lot-free", "5", 2.0)
    print(f"lot page: free count changed {took:.2f} s after the car entered")
    row = page.locator(f"#ev-{car.id}")
    sync_api.expect(row).to_be_visible(timeout=2000)
    sync_api.expect(row.locator(".plate-text")).to_have_text("鄂A20002")
    crop_shown(page, car)
    assert page.evaluate(entries) == before + 1  # counted in this hour's bar at once
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "ops-lot.png"), full_page=True)

    # the live feed: newest first, with crops; a new car on top without a reload
    page.click("a.nav-link[href='/ops/live']")
    page.wait_for_url(url + "/ops/live")
    sync_api.expect(page.locator("#ev-rows tr").first).to_have_id(f"ev-{car.id}")
    sync_api.expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)
    newest = cars.enter("鄂A20003")
    sync_api.expect(page.locator("#ev-rows tr").first).to_have_id(f"ev-{newest.id}", timeout=2000)
    crop_shown(page, newest)
    assert page.locator("#ev-rows tr").count() == 18  # the 15 seeded vehicles and the 3 cars of this test
    assert page.locator("text=鄂B").count() == 0
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "ops-live.png"), full_page=True)

    # gate health: the waiting backlog is highlighted; L2's gate is not olga's to see
    page.click("a.nav-link[href='/ops/gates']")
    page.wait_for_url(url + "/ops/gates")
    sync_api.expect(page.locator("#gate-L1-out .warn-backlog_old")).to_have_text("积压未上传")
    sync_api.expect(page.locator("#gates-warned")).to_have_text("1")
    assert page.locator("#gate-L2-in").count() == 0
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "ops-gates.png"), full_page=True)

    # the audit trail: olga's own login is on it
    page.goto(url + "/ops/audit")
    sync_api.expect(page.locator("main")).to_contain_text("login")
    settled(page)
    page.screenshot(path=str(ARTIFACTS / "ops-audit.png"), full_page=True)

    assert not problems, problems
