"""The durable outbox: sequence numbers, ordering, and survival of a hard kill."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.outbox import Outbox


def build(tag: str):  # type: ignore[no-untyped-def]
    return lambda seq: (f"id-{tag}-{seq:04d}-xxxxxxxxxx", "t/events", f"{tag}:{seq}".encode())


def test_sequence_and_epoch_survive_reopen_and_confirmation(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    epoch = box.epoch
    assert [box.append(build("a")) for _ in range(3)] == [1, 2, 3]
    assert box.confirm(3) == 3
    box.close()
    box = Outbox(tmp_path / "o.sqlite")
    assert box.epoch == epoch
    assert box.append(build("b")) == 4  # never reuses a number, even after everything left
    assert [p.seq for p in box.unsent()] == [4]
    box.close()
    assert Outbox(tmp_path / "other.sqlite").epoch != epoch  # a new outbox counts afresh


def test_event_leaves_only_when_confirmed_and_is_resent_if_not(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    for _ in range(5):
        box.append(build("a"))
    assert [p.seq for p in box.unsent(2)] == [1, 2]
    assert [p.seq for p in box.unsent(2, exclude={1, 2})] == [3, 4]
    for seq in (1, 2, 3):
        box.mark_sent(seq)  # PUBACK
    assert [p.seq for p in box.unsent()] == [4, 5]
    assert box.backlog()[0] == 5  # still held: the collector has not confirmed
    assert box.confirm(1) == 1
    assert box.requeue(older_than_s=0.0, limit=10) == 2  # 2 and 3 were sent but never confirmed
    assert [p.seq for p in box.unsent()] == [2, 3, 4, 5]
    count, age = box.backlog()
    assert count == 4 and age is not None and age >= 0
    assert box.first_seq() == 2
    box.close()


def test_live_events_can_be_taken_ahead_of_a_backlog(tmp_path: Path) -> None:
    import time

    box = Outbox(tmp_path / "o.sqlite")
    for _ in range(3):
        box.append(build("old"))
    cut = time.time()
    box.append(build("new"))
    assert [p.seq for p in box.unsent(since=cut)] == [4]
    box.close()


def test_full_outbox_drops_oldest_and_counts_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_events=3)
    for _ in range(5):
        box.append(build("a"))
    assert [p.seq for p in box.unsent()] == [3, 4, 5]
    assert box.dropped == 2 and box.first_seq() == 3
    assert "ALARM outbox full" in caplog.text
    box.close()


def test_failed_build_stores_nothing_and_uses_no_number(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")

    def broken(seq: int) -> tuple[str, str, bytes]:
        raise ValueError("bad event")

    with pytest.raises(ValueError, match="bad event"):
        box.append(broken)
    assert box.backlog()[0] == 0
    assert box.append(build("a")) == 1
    box.close()


def test_committed_events_survive_a_hard_kill(tmp_path: Path) -> None:
    """The process dies with os._exit right after appending (no close, no flush): nothing is lost."""
    path = tmp_path / "o.sqlite"
    code = (
        "import os, sys; from edge.outbox import Outbox\n"
        f"box = Outbox({str(path)!r})\n"
        "for i in range(50): box.append(lambda s: (f'id-{s:06d}-xxxxxxxxxxxx', 't', b'p'))\n"
        "os._exit(9)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert run.returncode == 9, run.stderr
    box = Outbox(path)
    assert [p.seq for p in box.unsent(100)] == list(range(1, 51))
    box.close()
