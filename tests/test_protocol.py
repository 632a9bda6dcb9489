"""The wire contract: topic builders and message validation with errors that name the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from protocol import (
    Action,
    Decision,
    Direction,
    GateEvent,
    LotAvailability,
    PayloadError,
    Reason,
    Topics,
    decode,
    encode,
)
from protocol.errors import TopicError


def event(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "v": 1,
        "type": "vehicle",
        "id": "01JD5X7Q3R8M2N4P6S9T0V1W2X",
        "epoch": "01JD5X00000000000000000000",
        "seq": 7,
        "ts": "2026-11-26T10:00:00+08:00",
        "lot_id": "L01",
        "gate_id": "L01-in",
        "direction": "entry",
        "plate": "鄂A12345",
        "confidence": 0.97,
        "decision": {"action": "open", "reason": "space_free"},
    }
    base.update(overrides)
    return base


def test_topics_put_everything_a_gate_sends_under_its_own_prefix() -> None:
    t = Topics("city")
    assert t.gate_events("L01-in") == "city/v1/gates/L01-in/events"
    assert t.gate_status("L01-in") == "city/v1/gates/L01-in/status"
    assert t.gate_commands("L01-in") == "city/v1/gates/L01-in/commands"
    assert all(
        x.startswith(t.gate_prefix("L01-in") + "/")
        for x in (t.gate_events("L01-in"), t.gate_status("L01-in"))
    )
    assert t.lot_availability("L01") == "city/v1/lots/L01/availability"
    assert t.screen("S1") == "city/v1/screens/S1"
    assert t.all_gate_events() == "city/v1/gates/+/events"
    assert t.gate_id_of("city/v1/gates/L01-in/events") == "L01-in"


@pytest.mark.parametrize("bad", ["", "a/b", "lot+", "#", "-lead", "x" * 65, "空格 id"])
def test_ids_that_would_break_topics_are_refused(bad: str) -> None:
    with pytest.raises(TopicError, match="must match"):
        Topics().gate_events(bad)


@pytest.mark.parametrize("topic", ["other/v1/gates/g/events", "parkgate/v1/lots/L1/availability"])
def test_gate_id_of_refuses_foreign_topics(topic: str) -> None:
    with pytest.raises(TopicError):
        Topics().gate_id_of(topic)


def test_event_round_trips_and_normalises_time_to_utc() -> None:
    ev = decode(GateEvent, json.dumps(event()).encode())
    assert ev.ts == datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    assert decode(GateEvent, encode(ev)) == ev
    assert ev.decision == Decision(action=Action.OPEN, reason=Reason.SPACE_FREE)
    assert ev.direction is Direction.ENTRY


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"seq": 0}, "seq"),
        ({"seq": "seven"}, "seq"),
        ({"plate": "鄂A 123"}, "plate"),
        ({"confidence": 1.5}, "confidence"),
        ({"ts": "2026-11-26T10:00:00"}, "ts"),
        ({"direction": "sideways"}, "direction"),
        ({"decision": {"action": "open", "reason": "because"}}, "decision.reason"),
        ({"gate_id": "a/b"}, "gate_id"),
        ({"extra": 1}, "extra"),
        ({"plate": None, "confidence": 0.5}, "confidence must be 0"),
    ],
)
def test_invalid_event_error_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(PayloadError, match=field) as err:
        decode(GateEvent, json.dumps(event(**change)).encode())
    assert err.value.reason == "schema"


def test_missing_field_is_named() -> None:
    payload = event()
    del payload["seq"]
    with pytest.raises(PayloadError, match=r"seq: Field required"):
        decode(GateEvent, json.dumps(payload))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "json"),
        (b"", "json"),
        (b"\xff\xfe", "json"),
        (json.dumps(event(v=2)).encode(), "version"),
        (b"[" + b"1," * 200_000 + b"1]", "too_large"),
    ],
)
def test_undecodable_payloads_get_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as err:
        decode(GateEvent, payload)
    assert err.value.reason == reason


def test_availability_must_be_consistent() -> None:
    ok = {
        "lot_id": "L1",
        "name": "x",
        "capacity": 10,
        "occupied": 12,
        "free": 0,
        "ts": "2026-11-26T00:00:00Z",
    }
    assert decode(LotAvailability, json.dumps(ok)).free == 0
    with pytest.raises(PayloadError, match="free must equal"):
        decode(LotAvailability, json.dumps(ok | {"free": 3}))
