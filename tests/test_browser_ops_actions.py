"""Operator actions in a real browser (Debian's Chromium driven by Playwright), against the real
parts: Mosquitto, the collector on SQLite, the dashboard behind waitress, and an edge node with
simulated pins (gpiozero MockFactory) that answers commands.

- Log in, open a barrier remotely with a reason: the confirmation step, then the command goes
  through the broker to the gate, which lifts its arm (the relay pin pulses) and answers "done".
- Plate search with the visit history of cars that went through the collector; the lists page
  adds an entry that reaches the gate's own lists; the signs page closes a sign and the collector's
  new content comes back to the page.

Screenshots: tests/artifacts/ops-open.png, ops-plates.png, ops-lists.png, ops-signs.png.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from ulid import ULID

from cloud.collector import Collector
from cloud.config import CollectorConfig
from dashboard import create_app, live_state
from dashboard.config import DashboardConfig
from dashboard.users import UserStore
from edge.config import EdgeConfig
from edge.pipeline import EdgeNode
from parkgate.demo import write_toml
from parkgate.settings import MqttSettings
from protocol import Action, Decision, Direction, GateEvent, Reason, Topics, encode
from protocol.messages import utc_now
from tests.browser_helpers import ARTIFACTS, BROWSER_MARKS, add_operator, chromium_page, log_in, serve
from tests.mqtt_helpers import publish_raw
from tests.waiting import wait_until

REASONS = {Direction.ENTRY: Reason.SPACE_FREE, Direction.EXIT: Reason.EXIT}
pytestmark = BROWSER_MARKS
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@dataclass
class System:
    url: str
    app: Flask
    collector: Collector
    node: EdgeNode
    mqtt: MqttSettings


@pytest.fixture
def system(tmp_path: Path, mqtt_settings: MqttSettings) -> Iterator[System]:
    database = f"sqlite:///{tmp_path / 'events.sqlite'}"
    site = {
        "name": "c1", "database": database, "mqtt": mqtt_settings.model_dump(mode="json", exclude_none=True),
        "lots": [{"id": "L1", "name": "江汉路停车场", "capacity": 10}, {"id": "L2", "name": "汉街", "capacity": 5}],
        "screens": [{"id": "S1", "name": "解放大道诱导屏", "lots": [{"lot_id": "L1", "arrow": "left"},
                                                              {"lot_id": "L2", "arrow": "right"}]}],
    }  # fmt: skip
    add_operator(database, lots="L1,L2")
    collector = Collector(CollectorConfig.model_validate(site))
    collector.start()
    node = EdgeNode.build(
        EdgeConfig.model_validate(
            {
                "gate_id": "G1",
                "lot_id": "L1",
                "direction": "exit",
                "outbox": tmp_path / "outbox.sqlite",
                "mqtt": mqtt_settings.model_dump(),
                "camera": {"kind": "synthetic", "render": False},
                "ocr": {"engine": "truth"},
                "simulation": {"enabled": True},
                "gate": {"travel_s": 0.1, "close_delay_s": 0.1, "open_timeout_s": 1.0},
            }
        )
    )
    assert node.link is not None
    node.link.start()
    cfg = DashboardConfig(
        database=database, secret_key_file=tmp_path / "secret.key", mqtt=mqtt_settings,
        collector_config=write_toml(tmp_path / "collector.toml", site),
    )  # fmt: skip
    app = create_app({"PARKGATE": cfg})
    try:
        with serve(app) as url:
            wait_until(lambda: "G1" in live_state(app).gates, what="the gate's status at the dashboard")
            wait_until(lambda: "L1" in live_state(app).lots, what="the lot's availability at the dashboard")
            yield System(url, app, collector, node, mqtt_settings)
    finally:
        node.close()
        collector.close()


@pytest.fixture
def page() -> Iterator[sync_api.Page]:
    with chromium_page(1280, 900) as page:
        page.console_messages = []  # type: ignore[attr-defined]
        page.on("console", lambda msg: page.console_messages.append(msg.text))  # type: ignore[attr-defined]
        yield page


def no_csp_violations(page: sync_api.Page) -> None:
    messages: list[str] = page.console_messages  # type: ignore[attr-defined]
    assert not [m for m in messages if "Content Security Policy" in m], messages


def audit(app: Flask, action: str) -> list[tuple[str, str, str]]:
    store: UserStore = app.extensions["parkgate.users"]
    return [(r.user, r.target, r.result) for r in store.audit_trail(action=action)]


def test_log_in_and_open_a_barrier_remotely_with_a_reason(system: System, page: sync_api.Page) -> None:
    expect = sync_api.expect
    ARTIFACTS.mkdir(exist_ok=True)
    node = system.node
    assert node.pin_factory is not None
    open_pin = node.pin_factory.pin(node.cfg.gate.open_pin)
    log_in(page, system.url, "/ops/open")
    expect(page.locator("h1")).to_have_text("远程开闸")
    expect(page.locator("#open-gate-G1")).to_contain_text("在线")
    page.click("#open-gate-G1 a.btn")
    page.fill("#open-reason", "司机在出口来电：缴费机故障")
    page.click("#open-ask button[type=submit]")
    expect(page.locator("#confirm-reason")).to_have_text("司机在出口来电：缴费机故障")
    assert not any(s.state for s in open_pin.states), "the barrier moved before the confirmation"
    page.click("#open-confirm-button")
    result = page.locator("#open-result")
    expect(result).to_have_attribute("data-result", "done", timeout=15_000)
    expect(result).to_contain_text("完成：道闸已打开。")
    expect(result).to_contain_text("barrier opened")  # the gate's own words
    page.screenshot(path=str(ARTIFACTS / "ops-open.png"), full_page=True)
    assert any(s.state for s in open_pin.states), "the open relay never switched on"
    wait_until(lambda: node.stats.events == 1, what="the remote open on the gate's record")
    assert audit(system.app, "gate.open.request") == [("olga", "gate:G1", "ok")]
    assert audit(system.app, "gate.open") == [("olga", "gate:G1", "ok")]
    no_csp_violations(page)


def car(settings: MqttSettings, seq: int, direction: Direction, plate: str, ago: timedelta) -> None:
    gate = f"L1-{direction.value}"
    event = GateEvent(
        epoch="BROWSER0001", id=str(ULID()), seq=seq, ts=utc_now() - ago, lot_id="L1", gate_id=gate,
        direction=direction, plate=plate, confidence=0.93,
        decision=Decision(action=Action.OPEN, reason=REASONS[direction]),
    )  # fmt: skip
    publish_raw(settings, Topics(settings.topic_root).gate_events(gate), encode(event))


def test_plate_search_lists_and_signs(system: System, page: sync_api.Page) -> None:
    expect = sync_api.expect
    ARTIFACTS.mkdir(exist_ok=True)
    car(system.mqtt, 1, Direction.ENTRY, "鄂A12345", timedelta(hours=2, minutes=15))
    car(system.mqtt, 1, Direction.EXIT, "鄂A12345", timedelta(minutes=20))
    car(system.mqtt, 2, Direction.ENTRY, "鄂BA1239", timedelta(minutes=5))
    wait_until(lambda: system.collector.stored == 3, what="the collector to store the cars")

    log_in(page, system.url, "/ops/plates")
    page.fill("#plate-q", "a123")
    page.press("#plate-q", "Enter")
    expect(page.locator("#plate-matches .match")).to_have_count(2)
    page.click("#plate-matches a >> text=鄂A12345")
    expect(page.locator("#visits-table tbody tr")).to_have_count(1)
    expect(page.locator("#visits-table tbody tr")).to_contain_text("已离场")
    expect(page.locator("#visits-table tbody tr")).to_contain_text("1 小时 55 分")
    expect(page.locator("#events-table tbody tr")).to_have_count(2)
    page.screenshot(path=str(ARTIFACTS / "ops-plates.png"), full_page=True)

    page.click("nav.nav >> text=黑白名单")
    expect(page.locator("h1")).to_have_text("黑白名单")
    page.fill("#add-plate", "鄂A88888")
    page.select_option("#add-list", "allow")
    page.fill("#add-until", "2099-12-31T18:00")
    page.fill("#add-note", "施工方货车")
    page.click("#add-form button[type=submit]")
    expect(page.locator("#list-added")).to_be_visible()
    expect(page.locator("#entries-table tbody tr")).to_have_count(1)
    expect(page.locator("#count-allow")).to_have_text("1")
    page.screenshot(path=str(ARTIFACTS / "ops-lists.png"), full_page=True)
    wait_until(lambda: "鄂A88888" in system.node.policy.allow, what="the gate to get the new allow list")

    page.click("nav.nav >> text=诱导屏")
    expect(page.locator("#sign-mode-S1")).to_have_text("自动")
    page.select_option("#target-S1", "L2")
    page.select_option("#mode-S1", "closed")
    page.fill("#reason-S1", "汉街车场清洁")
    page.click("#sign-form-S1 button[type=submit]")
    expect(page.locator("#sign-done")).to_be_visible()
    expect(page.locator("#override-log tbody tr")).to_have_count(1)
    deadline = time.monotonic() + 10
    row = page.locator('#sign-S1 .mini-row[data-lot="L2"] .mini-text')
    while row.inner_text() != "关闭" and time.monotonic() < deadline:  # the collector re-publishes the sign
        time.sleep(0.3)
        page.goto(system.url + "/ops/signs")
    expect(row).to_have_text("关闭")
    page.screenshot(path=str(ARTIFACTS / "ops-signs.png"), full_page=True)
    assert [a[1:] for a in audit(system.app, "list.add")] == [("lot:L1", "ok")]
    assert [a[1:] for a in audit(system.app, "sign.override")] == [("screen:S1/L2", "ok")]
    no_csp_violations(page)
