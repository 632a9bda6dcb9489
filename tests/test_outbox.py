"""The durable outbox: sequence numbers, ordering, and survival of a hard kill."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.outbox import Outbox


def build(tag: str):  # type: ignore[no-untyped-def]
    return lambda seq: (f"id-{tag}-{seq:04d}-xxxxxxxxxx", "t/events", f"{tag}:{seq}".encode())


def test_sequence_is_monotonic_across_reopen_and_removal(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    assert [box.append(build("a")) for _ in range(3)] == [1, 2, 3]
    box.remove(3)
    box.close()
    box = Outbox(tmp_path / "o.sqlite")
    assert box.append(build("b")) == 4  # never reuses a number, even after the newest left
    assert [p.seq for p in box.pending()] == [1, 2, 4]
    box.close()


def test_pending_is_in_order_and_skips_in_flight(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    for _ in range(5):
        box.append(build("a"))
    assert [p.seq for p in box.pending(2)] == [1, 2]
    assert [p.seq for p in box.pending(2, exclude={1, 2})] == [3, 4]
    box.remove(1)
    count, age = box.backlog()
    assert count == 4 and age is not None and age >= 0
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
    assert [p.seq for p in box.pending(100)] == list(range(1, 51))
    box.close()
