"""The dashboard in a real browser (Debian's Chromium driven by Playwright): a car entering a lot
changes the free count on the open page without a reload; the guidance sign shows it too.

Whole chain: GateEvent on the real broker -> collector (SQLite) -> retained availability ->
dashboard's MQTT feed -> server-sent events -> the page.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ulid import ULID

from cloud.collector import Collector
from cloud.config import CollectorConfig, LotConfig, ScreenConfig, ScreenLot
from dashboard import create_app
from dashboard.config import DashboardConfig
from parkgate.settings import MqttSettings
from protocol import Action, Decision, Direction, GateEvent, Reason, Topics, encode
from protocol.messages import utc_now
from tests.browser_helpers import ARTIFACTS, BROWSER_MARKS, chromium_page, serve
from tests.mqtt_helpers import publish_raw

pytestmark = BROWSER_MARKS
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture
def system(tmp_path: Path, mqtt_settings: MqttSettings) -> Iterator[tuple[str, MqttSettings]]:
    """Collector and dashboard (waitress on a free port) on the test's broker; yields the base URL."""
    collector = Collector(
        CollectorConfig(
            name="c1",
            database=f"sqlite:///{tmp_path / 'events.sqlite'}",
            mqtt=mqtt_settings,
            lots=[
                LotConfig(id="L1", name="江汉路停车场", capacity=10),
                LotConfig(id="L2", name="汉街", capacity=5),
            ],
            screens=[
                ScreenConfig(id="S1", name="解放大道诱导屏", lots=[ScreenLot(lot_id="L1", arrow="left")])
            ],
        )
    )
    collector.start()
    app = create_app({"PARKGATE": DashboardConfig(mqtt=mqtt_settings)})
    try:
        with serve(app) as url:
            yield url, mqtt_settings
    finally:
        collector.close()


@pytest.fixture
def page() -> Iterator[sync_api.Page]:
    with chromium_page(1280, 860) as page:
        yield page


def car_enters(settings: MqttSettings, seq: int) -> None:
    event = GateEvent(
        epoch="TESTEPOCH01", id=str(ULID()), seq=seq, ts=utc_now(), lot_id="L1", gate_id="L1-in",
        direction=Direction.ENTRY, plate="鄂A12345", confidence=0.95,
        decision=Decision(action=Action.OPEN, reason=Reason.SPACE_FREE),
    )  # fmt: skip
    publish_raw(settings, Topics(settings.topic_root).gate_events("L1-in"), encode(event))


def test_free_count_changes_live_without_reload(
    system: tuple[str, MqttSettings], page: sync_api.Page
) -> None:
    url, settings = system
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(url + "/")
    free = page.locator("#lot-L1 .free")
    sync_api.expect(free).to_have_text("10", timeout=5000)
    sync_api.expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)
    page.evaluate("window.__notReloaded = true")

    car_enters(settings, 1)
    sync_api.expect(free).to_have_text("9", timeout=2000)  # the issue: within 2 s
    assert page.evaluate("window.__notReloaded") is True
    sync_api.expect(page.locator("#sum-free")).to_have_text("14")
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

    page.goto(url + "/screens/S1")
    sync_api.expect(page.locator("#row-L1 .free")).to_have_text("9", timeout=5000)
    car_enters(settings, 2)
    sync_api.expect(page.locator("#row-L1 .free")).to_have_text("8", timeout=2000)
    page.screenshot(path=str(ARTIFACTS / "screen-S1.png"))
