"""Guidance screens that never lie: formats, overrides, and stale data caught on the real broker.

The rendering rules are checked directly; the stale and override paths run the real collector
against a real Mosquitto and a SQLite file, and read the retained screen topic as a sign would.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import pytest
from flask import Flask
from pydantic import ValidationError
from ulid import ULID

from cloud.availability import lot_availability, screen_content
from cloud.collector import Collector
from cloud.config import CollectorConfig, LotConfig, ScreenConfig, ScreenFormat, ScreenLot
from cloud.events_store import EventStore, LotState
from cloud.history import load_samples
from cloud.screens import (
    Freshness,
    LotNotOnScreen,
    Override,
    OverrideError,
    UnknownScreen,
    active_overrides,
    number_text,
    override_log,
    row_text,
    set_override,
)
from parkgate.mqtt import make_client
from parkgate.settings import MqttSettings
from protocol import (
    Action,
    Decision,
    Direction,
    GateEvent,
    GateStatus,
    LotAvailability,
    Reason,
    ScreenContent,
    Topics,
    decode,
    encode,
)
from protocol.messages import utc_now
from tests.browser_helpers import CHROMIUM, chromium_page, serve
from tests.mqtt_helpers import publish_raw
from tests.waiting import wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO = Path(__file__).resolve().parent.parent


def lot(lot_id: str = "L1", occupied: int = 3, capacity: int = 10, name: str = "江汉路") -> LotState:
    return LotState(lot_id, name, capacity, occupied, None)


# -- what a row shows ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fmt", "shown", "clamp", "text"),
    [
        ({}, 7, None, "7"),
        ({}, 1500, 999, "999"),
        ({"clamp_style": "plus"}, 150, 99, "99+"),
        ({"digits": 3}, 7, None, "  7"),
        ({"digits": 3, "pad": "zero"}, 7, None, "007"),
        ({"digits": 3}, 5000, None, "999"),  # the sign has three digits
        ({"digits": 3, "clamp_style": "plus"}, 5000, None, "99+"),
        ({"digits": 4}, 5000, 999, " 999"),  # the row's clamp is below what the digits hold
    ],
)
def test_numbers_are_clamped_and_padded(
    fmt: dict[str, object], shown: int, clamp: int | None, text: str
) -> None:
    assert number_text(ScreenFormat.model_validate(fmt), shown, clamp) == text


def test_offset_holds_spaces_back_and_full_shows_the_full_text() -> None:
    fmt = ScreenFormat()
    item = ScreenLot(lot_id="L1", offset=5)
    assert row_text(fmt, item, 12, mode="auto", stale=False) == ("7", "ok")
    assert row_text(fmt, item, 5, mode="auto", stale=False) == ("满", "full")  # 5 free, all reserved
    assert row_text(fmt, item, 0, mode="auto", stale=False) == ("满", "full")


def test_stale_shows_the_stale_text_never_the_number() -> None:
    fmt = ScreenFormat(stale_text="----")
    assert row_text(fmt, ScreenLot(lot_id="L1"), 42, mode="auto", stale=True) == ("----", "stale")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("full", ("FULL", "full")), ("closed", ("CLOSED", "closed")), ("blank", ("", "blank"))],
)
def test_an_operator_mode_wins_over_the_data(mode: str, expected: tuple[str, str]) -> None:
    fmt = ScreenFormat(full_text="FULL", closed_text="CLOSED")
    for stale in (False, True):
        assert row_text(fmt, ScreenLot(lot_id="L1"), 42, mode=mode, stale=stale) == expected  # type: ignore[arg-type]


def test_plus_style_needs_room_for_the_plus() -> None:
    with pytest.raises(ValidationError, match='clamp_style "plus" needs digits >= 2'):
        ScreenFormat(digits=1, clamp_style="plus")


def test_content_carries_text_state_and_data_age() -> None:
    screen = ScreenConfig(
        id="S1", name="路口",
        lots=[ScreenLot(lot_id="L1", arrow="left"), ScreenLot(lot_id="L2", label="汉街", arrow="right")],
    )  # fmt: skip
    lots = {"L1": lot("L1", occupied=3), "L2": lot("L2", occupied=10)}
    content = screen_content(screen, lots, ages={"L1": 4.0, "L2": 10.0}, limits={"L1": 120.0, "L2": 120.0})
    assert [(r.text, r.state, r.full, r.data_age_s) for r in content.rows] == [
        ("7", "ok", False, 4.0),
        ("满", "full", True, 10.0),
    ]
    assert content.state == "ok" and content.data_age_s == 10.0
    assert content.text == "江汉路 ←7 | 汉街 →满"
    stale = screen_content(screen, lots, ages={"L1": 121.0, "L2": None}, limits={"L1": 120.0, "L2": 120.0})
    assert [(r.text, r.state) for r in stale.rows] == [("--", "stale"), ("--", "stale")]
    assert stale.state == "stale"
    # the wire format keeps the old fields and decodes again
    assert decode(ScreenContent, encode(stale)) == stale


def test_availability_carries_position_age_and_staleness() -> None:
    cfg = LotConfig(id="L1", name="江汉路", capacity=10, lat=30.58, lon=114.29, stale_after_s=60)
    message = lot_availability(lot(), cfg, data_age_s=75.04, stale=True)
    assert (message.stale, message.data_age_s, message.stale_after_s, message.lat, message.lon) == (
        True, 75.0, 60.0, 30.58, 114.29,
    )  # fmt: skip
    assert decode(LotAvailability, encode(message)) == message
    plain = lot_availability(lot())  # without a config: the fields a v1 receiver knows, and stale
    assert set(plain.model_dump(mode="json")) == {
        "v", "lot_id", "name", "capacity", "occupied", "free", "ts", "last_event_ts", "stale",
    }  # fmt: skip


# -- freshness -----------------------------------------------------------------------------------------
def status(
    gate: str = "L1-in", lot_id: str = "L1", ts: datetime | None = None, **extra: object
) -> GateStatus:
    return GateStatus(gate_id=gate, lot_id=lot_id, state="online", ts=ts or utc_now(), **extra)  # type: ignore[arg-type]


def event(seq: int, lot_id: str = "L1", gate: str = "L1-in", ts: datetime | None = None) -> GateEvent:
    return GateEvent(
        id=str(ULID()), epoch="EPOCHTEST1", seq=seq, ts=ts or utc_now(), lot_id=lot_id, gate_id=gate,
        direction=Direction.ENTRY, plate="鄂A12345", confidence=0.9,
        decision=Decision(action=Action.OPEN, reason=Reason.SPACE_FREE),
    )  # fmt: skip


def test_freshness_counts_a_heartbeat_only_once_its_batch_is_stored() -> None:
    fresh = Freshness([LotConfig(id="L1", name="a", capacity=1, stale_after_s=60)])
    now = utc_now()
    assert fresh.is_stale("L1", now) and fresh.age("L1", now) is None  # never heard: stale
    fresh.note_status(status(ts=now - timedelta(seconds=10)))
    assert fresh.is_stale("L1", now)  # noted, not committed: the database may be away
    fresh.commit([])
    assert fresh.age("L1", now) == pytest.approx(10, abs=0.5) and not fresh.is_stale("L1", now)
    assert fresh.is_stale("L1", now + timedelta(seconds=51))


def test_freshness_dates_a_heartbeat_by_its_backlog_and_ignores_offline() -> None:
    fresh = Freshness([LotConfig(id="L1", name="a", capacity=1, stale_after_s=60)])
    now = utc_now()
    fresh.note_status(status(ts=now, backlog=3, backlog_age_s=100.0))  # events of 100 s ago not counted yet
    fresh.note_status(GateStatus(gate_id="L1-out", lot_id="L1", state="offline", ts=now))
    fresh.note_status(status(gate="X-in", lot_id="X", ts=now))  # a lot this collector does not know
    fresh.commit([])
    assert fresh.age("L1", now) == pytest.approx(100, abs=0.5) and fresh.is_stale("L1", now)
    fresh.commit([event(1, ts=now - timedelta(seconds=5))])
    assert fresh.age("L1", now) == pytest.approx(5, abs=0.5)


def test_freshness_reports_lots_that_flipped_since_published() -> None:
    fresh = Freshness([LotConfig(id="L1", name="a", capacity=1, stale_after_s=60)])
    now = utc_now()
    fresh.published("L1", True)
    assert fresh.flipped(now) == set()
    fresh.commit([event(1, ts=now)])
    assert fresh.flipped(now) == {"L1"}
    fresh.published("L1", False)
    assert fresh.flipped(now) == set()
    assert fresh.flipped(now + timedelta(seconds=61)) == {"L1"}


# -- overrides in the database -------------------------------------------------------------------------
@pytest.fixture
def cfg(tmp_path: Path) -> CollectorConfig:
    return CollectorConfig(
        name="c1",
        database=f"sqlite:///{tmp_path / 'events.sqlite'}",
        lots=[LotConfig(id="L1", name="江汉路停车场", capacity=10), LotConfig(id="L2", name="汉街", capacity=5)],
        screens=[
            ScreenConfig(
                id="S1", name="路口屏",
                lots=[ScreenLot(lot_id="L1", arrow="left"), ScreenLot(lot_id="L2", arrow="right")],
            )
        ],
    )  # fmt: skip


@pytest.fixture
def store(cfg: CollectorConfig) -> Iterator[EventStore]:
    s = EventStore(cfg.database)
    yield s
    s.close()


def test_the_newest_override_decides_and_auto_or_expiry_ends_it(
    cfg: CollectorConfig, store: EventStore
) -> None:
    engine = store.engine
    now = utc_now()
    set_override(engine, cfg, "S1", "closed", reason="roadworks", set_by="ops1", lot_id="L1", now=now)
    set_override(
        engine, cfg, "S1", "blank", reason="sign repair", set_by="ops2", until=now + timedelta(hours=1)
    )
    active = active_overrides(engine, now)
    assert {key: o.mode for key, o in active.items()} == {("S1", "L1"): "closed", ("S1", None): "blank"}
    assert active[("S1", None)].set_by == "ops2" and active[("S1", None)].reason == "sign repair"
    assert ("S1", None) not in active_overrides(engine, now + timedelta(hours=2))  # expired
    set_override(engine, cfg, "S1", "auto", reason="roadworks done", set_by="ops1", lot_id="L1")
    assert ("S1", "L1") not in active_overrides(engine)
    log = override_log(engine, "S1")
    assert [o.mode for o in log] == ["auto", "blank", "closed"]  # the audit trail, newest first


def test_a_screen_wide_mode_wins_over_a_row(cfg: CollectorConfig, store: EventStore) -> None:
    set_override(store.engine, cfg, "S1", "full", reason="event traffic", set_by="ops", lot_id="L2")
    set_override(store.engine, cfg, "S1", "blank", reason="maintenance", set_by="ops")
    lots = {"L1": lot("L1"), "L2": lot("L2", capacity=5, occupied=0)}
    content = screen_content(cfg.screens[0], lots, overrides=active_overrides(store.engine))
    assert [(r.text, r.state, r.mode) for r in content.rows] == [("", "blank", "blank")] * 2
    assert (content.state, content.mode, content.text) == ("blank", "blank", "")
    set_override(store.engine, cfg, "S1", "auto", reason="done", set_by="ops")
    content = screen_content(cfg.screens[0], lots, overrides=active_overrides(store.engine))
    assert [(r.text, r.state, r.mode) for r in content.rows] == [("7", "ok", "auto"), ("满", "full", "full")]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"screen_id": "S9"}, UnknownScreen, "no screen 'S9' is configured"),
        ({"lot_id": "L7"}, LotNotOnScreen, "screen 'S1' has no row for lot 'L7'"),
        ({"mode": "dark"}, OverrideError, "mode 'dark' is not one of auto, full, closed, blank"),
        ({"reason": "  "}, OverrideError, "reason must be 1-200 characters"),
        ({"set_by": ""}, OverrideError, "set_by must be 1-64 characters"),
        ({"until": datetime(2030, 1, 1)}, OverrideError, "until must carry a time zone"),
        ({"until": datetime(2000, 1, 1, tzinfo=UTC)}, OverrideError, "is not in the future"),
        ({"mode": "auto", "until": datetime(2099, 1, 1, tzinfo=UTC)}, OverrideError, "makes no sense"),
    ],
)
def test_bad_overrides_are_refused_with_the_reason(
    cfg: CollectorConfig, store: EventStore, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    args: dict[str, object] = {"screen_id": "S1", "mode": "closed", "reason": "why", "set_by": "ops"} | kwargs
    with pytest.raises(error, match=match):
        set_override(store.engine, cfg, **args)  # type: ignore[arg-type]
    assert override_log(store.engine) == []


# -- through the real broker ---------------------------------------------------------------------------
class Watcher:
    """Subscribes to topics and keeps the newest payload of each, as a sign or an app would."""

    def __init__(self, settings: MqttSettings, *topics: str) -> None:
        self.latest: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.client = make_client(settings, f"watch-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, *_a: c.subscribe([(t, 1) for t in topics])
        self.client.on_message = self._on_message
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.latest[msg.topic] = bytes(msg.payload)

    def screen(self, topic: str) -> ScreenContent | None:
        with self._lock:
            payload = self.latest.get(topic)
        return decode(ScreenContent, payload) if payload else None

    def availability(self, topic: str) -> LotAvailability | None:
        with self._lock:
            payload = self.latest.get(topic)
        return decode(LotAvailability, payload) if payload else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def running(
    tmp_path: Path, mqtt_settings: MqttSettings
) -> Iterator[tuple[Collector, Watcher, CollectorConfig]]:
    cfg = CollectorConfig(
        name="c1",
        database=f"sqlite:///{tmp_path / 'events.sqlite'}",
        mqtt=mqtt_settings,
        lots=[
            LotConfig(id="L1", name="江汉路停车场", capacity=10, stale_after_s=2),
            LotConfig(id="L2", name="汉街", capacity=5, stale_after_s=600),
        ],
        screens=[
            ScreenConfig(
                id="S1", name="路口屏",
                lots=[ScreenLot(lot_id="L1", arrow="left"), ScreenLot(lot_id="L2", arrow="right", offset=1)],
                format=ScreenFormat(digits=3, stale_text="--", closed_text="关闭"),
            )
        ],
    )  # fmt: skip
    topics = Topics(mqtt_settings.topic_root)
    watcher = Watcher(mqtt_settings, topics.screen("S1"), topics.all_lot_availability())
    collector = Collector(cfg)
    collector.start()
    try:
        wait_until(collector.connected.is_set, what="collector connection")
        yield collector, watcher, cfg
    finally:
        collector.close()
        watcher.close()


def rows(watcher: Watcher, topics: Topics) -> list[tuple[str | None, str | None]]:
    content = watcher.screen(topics.screen("S1"))
    return [(r.text, r.state) for r in content.rows] if content else []


def test_a_lot_whose_gates_go_silent_shows_stale_then_recovers(
    running: tuple[Collector, Watcher, CollectorConfig], mqtt_settings: MqttSettings
) -> None:
    collector, watcher, _cfg = running
    topics = Topics(mqtt_settings.topic_root)
    # nothing heard from any gate yet: no number on the sign
    wait_until(lambda: rows(watcher, topics) == [("--", "stale"), ("--", "stale")], what="stale at start")

    publish_raw(mqtt_settings, topics.gate_status("L2-in"), encode(status("L2-in", "L2")), retain=True)
    publish_raw(mqtt_settings, topics.gate_events("L1-in"), encode(event(1)))
    wait_until(lambda: rows(watcher, topics) == [("  9", "ok"), ("  4", "ok")], what="both lots fresh")
    availability = watcher.availability(topics.lot_availability("L1"))
    assert availability is not None and availability.free == 9 and availability.stale is False
    assert availability.data_age_s is not None and availability.data_age_s < 2

    # L1's gates go silent: after stale_after_s (2 s) the sign shows "--", not the last 9
    wait_until(lambda: rows(watcher, topics)[:1] == [("--", "stale")], 10, "L1 to turn stale")
    content = watcher.screen(topics.screen("S1"))
    assert content is not None and content.state == "stale" and content.rows[0].free == 9  # the data, kept
    assert rows(watcher, topics)[1] == ("  4", "ok")  # L2 is still heard from (limit 600 s)
    wait_until(
        lambda: (a := watcher.availability(topics.lot_availability("L1"))) is not None and a.stale,
        5,
        "L1's availability to say stale",
    )

    # a heartbeat from the gate brings it back, without any car moving
    publish_raw(mqtt_settings, topics.gate_status("L1-in"), encode(status()), retain=True)
    wait_until(lambda: rows(watcher, topics) == [("  9", "ok"), ("  4", "ok")], 5, "L1 to recover")
    recovered = watcher.availability(topics.lot_availability("L1"))
    assert recovered is not None and recovered.stale is False
    assert collector.signs.freshness.flipped(utc_now()) == set()
    # the upkeep also keeps the history: this 5-minute slot is done for both lots (sampled if the
    # lot was fresh when the slot came up, passed over if stale; tests/test_forecast.py has the rules)
    wait_until(lambda: collector.history.due(utc_now()) == [], 5, "the history slot to be handled")
    samples = load_samples(collector.store.engine, "L2", utc_now() - timedelta(minutes=10), utc_now())
    assert {s.occupied for s in samples} <= {0}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parkgate", "screens", *args],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip


def write_config(path: Path, cfg: CollectorConfig) -> Path:
    """The collector's config as TOML, for the command line."""
    lines = [f'name = "{cfg.name}"', f'database = "{cfg.database}"', ""]
    for lot_cfg in cfg.lots:
        lines += [
            "[[lots]]",
            f'id = "{lot_cfg.id}"',
            f'name = "{lot_cfg.name}"',
            f"capacity = {lot_cfg.capacity}",
            "",
        ]
    for screen in cfg.screens:
        items = ", ".join(f'{{ lot_id = "{i.lot_id}" }}' for i in screen.lots)
        lines += ["[[screens]]", f'id = "{screen.id}"', f'name = "{screen.name}"', f"lots = [{items}]", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_an_override_from_the_command_line_reaches_the_sign_and_expires(
    running: tuple[Collector, Watcher, CollectorConfig], mqtt_settings: MqttSettings, tmp_path: Path
) -> None:
    _collector, watcher, cfg = running
    topics = Topics(mqtt_settings.topic_root)
    toml = write_config(tmp_path / "collector.toml", cfg)
    publish_raw(mqtt_settings, topics.gate_status("L2-in"), encode(status("L2-in", "L2")), retain=True)
    wait_until(lambda: rows(watcher, topics)[1:] == [("  4", "ok")], what="L2 fresh")

    done = cli("override", "--config", str(toml), "S1", "--lot", "L2", "--mode", "closed",
               "--reason", "flooded ramp", "--by", "ops1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert (printed["screen"], printed["lot"], printed["mode"], printed["set_by"]) == (
        "S1",
        "L2",
        "closed",
        "ops1",
    )
    wait_until(lambda: rows(watcher, topics)[1:] == [("关闭", "closed")], 10, "the row to show closed")
    content = watcher.screen(topics.screen("S1"))
    assert content is not None and content.rows[1].mode == "closed" and content.mode == "auto"

    until = (utc_now() + timedelta(seconds=8)).isoformat()
    done = cli(
        "override", "--config", str(toml), "S1", "--mode", "full", "--reason", "match day", "--until", until
    )
    assert done.returncode == 0, done.stderr
    wait_until(lambda: rows(watcher, topics) == [("满", "full"), ("满", "full")], 10, "the whole screen full")
    # the screen-wide override expires; the row's own (closed) is still in force
    wait_until(lambda: rows(watcher, topics)[1:] == [("关闭", "closed")], 20, "the expiry to end it")

    done = cli(
        "override", "--config", str(toml), "S1", "--lot", "L2", "--mode", "auto", "--reason", "pumped dry"
    )
    assert done.returncode == 0, done.stderr
    wait_until(lambda: rows(watcher, topics)[1:] == [("  4", "ok")], 10, "back to the data")
    listed = cli("list", "--config", str(toml), "--log", "10")
    assert [json.loads(x)["mode"] for x in listed.stdout.splitlines()] == ["auto", "full", "closed"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["S9", "--mode", "full", "--reason", "x"], "no screen 'S9' is configured"),
        (["S1", "--lot", "L9", "--mode", "full", "--reason", "x"], "screen 'S1' has no row for lot 'L9'"),
        (["S1", "--mode", "full", "--reason", "x", "--until", "2030-01-01T00:00"], "needs a time zone"),
        (["S1", "--mode", "dark", "--reason", "x"], "invalid choice: 'dark'"),
    ],
)
def test_the_command_refuses_bad_overrides(
    tmp_path: Path, cfg: CollectorConfig, args: list[str], message: str
) -> None:
    toml = write_config(tmp_path / "collector.toml", cfg)
    done = cli("override", "--config", str(toml), *args)
    assert done.returncode == 2 and message in done.stderr and done.stdout == ""


# -- the sign page in a real browser ---------------------------------------------------------------------
@pytest.fixture
def sign_page(tmp_path: Path) -> Iterator[tuple[Flask, Page, str]]:
    """A dashboard (waitress, free port, live state filled by the test) and a Chromium page."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (deploy/setup.sh --dev)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from dashboard import create_app
    from dashboard.config import DashboardConfig

    cfg = DashboardConfig(secret_key_file=tmp_path / "secret.key")
    app = create_app({"LIVE_FEED": False, "SSE_KEEPALIVE_S": 0.5, "PARKGATE": cfg})
    with (
        serve(app, threads=4) as url,
        chromium_page(1280, 720, args=["--no-sandbox", "--disable-gpu"]) as page,
    ):
        yield app, page, url


def sign_content(age: float | None, limit: float, ts: datetime | None = None) -> ScreenContent:
    """S1 as the collector makes it: L1 with data ``age`` old, L2 never heard, L3 closed by an operator."""
    screen = ScreenConfig(
        id="S1", name="路口屏",
        lots=[ScreenLot(lot_id="L1", arrow="left"), ScreenLot(lot_id="L2"), ScreenLot(lot_id="L3")],
        format=ScreenFormat(digits=3),
    )  # fmt: skip
    lots = {"L1": lot("L1", occupied=1), "L2": lot("L2"), "L3": lot("L3")}
    closed = Override(1, "S1", "L3", "closed", "roadworks", "ops", utc_now(), None)
    return screen_content(
        screen, lots, ages={"L1": age, "L2": None, "L3": 5.0}, limits=dict.fromkeys(lots, limit),
        overrides={("S1", "L3"): closed}, now=ts,
    )  # fmt: skip


def test_the_sign_page_shows_text_and_goes_stale_by_itself(sign_page: tuple[Flask, Page, str]) -> None:
    from playwright.sync_api import expect

    from dashboard import live_state

    app, page, url = sign_page
    state = live_state(app)
    number = re.compile(r"^\s*9$")  # "  9": padded to the sign's three digits
    stale = re.compile(r"\bis-stale\b")
    state.put(sign_content(age=1.0, limit=4.0))  # L1 fresh for about 3 more seconds
    page.goto(url + "/screens/S1")
    l1 = page.locator("#row-L1")
    expect(l1.locator(".free")).to_have_text(number, timeout=3000)
    expect(l1).not_to_have_class(stale)
    expect(page.locator("#row-L2 .free")).to_have_text("--")
    expect(page.locator("#row-L2")).to_have_class(stale)
    expect(page.locator("#row-L3 .free")).to_have_text("关闭")
    # no message comes: the page sees L1's data pass its limit and stops showing the number
    expect(l1.locator(".free")).to_have_text("--", timeout=8000)
    expect(l1).to_have_class(stale)
    expect(page.locator("#sign-age")).to_contain_text("数据过期 STALE")
    # fresh content over the stream brings the number back, without a reload
    state.put(sign_content(age=0.5, limit=60.0))
    expect(l1.locator(".free")).to_have_text(number, timeout=5000)
    # content the collector made long ago (it went silent): every row stale, the operator's mode too
    state.put(sign_content(age=0.5, limit=60.0, ts=utc_now() - timedelta(seconds=90)))
    expect(page.locator("#row-L3 .free")).to_have_text("--", timeout=5000)
    expect(l1.locator(".free")).to_have_text("--")
