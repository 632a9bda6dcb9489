"""Remote commands at the gate: expiry first, each acts once, every one answered; lists on disk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.commands import CommandHandler
from edge.lists import ListsCache
from protocol import CommandName, GateCommand, GateMode, LotLists

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def command(
    name: CommandName = CommandName.OPEN, *, age_s: float = 1, ttl_s: float = 30, **kw: object
) -> GateCommand:
    issued = NOW - timedelta(seconds=age_s)
    return GateCommand(
        id=kw.pop("id", "01JD5XCOMMAND0000000000001"), gate_id="G1", command=name, issuer="operator:li",  # type: ignore[arg-type]
        ts=issued, expires_at=issued + timedelta(seconds=ttl_s), reason="visitor at the intercom", **kw,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def handler(calls: list[str]) -> CommandHandler:
    return CommandHandler(
        "G1",
        open_barrier=lambda reason: calls.append(f"open:{reason}"),
        set_mode=lambda mode: calls.append(f"mode:{mode.value}"),
        reload_lists=lambda: calls.append("reload"),
        clock=lambda: NOW,
    )


def test_open_acts_once(handler: CommandHandler, calls: list[str]) -> None:
    result = handler.handle(command())
    assert (result.result, result.command_id) == ("done", "01JD5XCOMMAND0000000000001")
    assert calls == ["open:remote open by operator:li: visitor at the intercom"]
    again = handler.handle(command())  # redelivered
    assert again.result == "refused" and "duplicate" in again.reason
    assert len(calls) == 1


def test_stale_open_never_lifts_the_barrier(handler: CommandHandler, calls: list[str]) -> None:
    result = handler.handle(command(age_s=3 * 3600, ttl_s=30))
    assert result.result == "refused" and result.reason.startswith("expired 10770 s ago")
    assert calls == []


@pytest.mark.parametrize(
    ("name", "extra", "call"),
    [
        (CommandName.SET_MODE, {"mode": GateMode.LOCKDOWN}, "mode:lockdown"),
        (CommandName.RELOAD_LISTS, {}, "reload"),
    ],
)
def test_other_commands(
    handler: CommandHandler, calls: list[str], name: CommandName, extra: dict, call: str
) -> None:  # type: ignore[type-arg]
    assert handler.handle(command(name, **extra)).result == "done"
    assert calls == [call]


def test_set_mode_needs_a_mode() -> None:
    with pytest.raises(ValueError, match="set_mode needs mode"):
        command(CommandName.SET_MODE)


def test_lists_survive_a_restart_and_older_copies_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "lists.json"
    cache = ListsCache(path)
    assert cache.lists is None
    assert cache.update(LotLists(lot_id="L1", ts=NOW, allow=["鄂A00001"], locked=["鄂A77777"]))
    assert not cache.update(LotLists(lot_id="L1", ts=NOW - timedelta(hours=1)))
    reopened = ListsCache(path)
    assert reopened.lists is not None and reopened.lists.locked == ["鄂A77777"]
    assert reopened.sizes() == (1, 0, 1)


def test_a_corrupt_lists_file_is_reported_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "lists.json"
    path.write_text("{half a file")
    assert ListsCache(path).lists is None
    assert "ignoring unreadable lists cache" in caplog.text
