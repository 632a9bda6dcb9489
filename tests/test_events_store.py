"""The event store: stored once, occupancy in the same transaction, per-gate gap tracking."""

from __future__ import annotations

from pathlib import Path

import pytest
from ulid import ULID

from cloud.config import LotConfig
from cloud.events_store import EventStore
from protocol import Action, Decision, Direction, GateEvent, Reason
from protocol.messages import utc_now


def ev(
    seq: int,
    *,
    epoch: str = "EPOCH00001",
    direction: Direction = Direction.ENTRY,
    action: Action = Action.OPEN,
):
    reason = Reason.SPACE_FREE if action is Action.OPEN else Reason.LOT_FULL
    return GateEvent(
        id=str(ULID()), epoch=epoch, seq=seq, ts=utc_now(), lot_id="L1", gate_id="G1", direction=direction,
        decision=Decision(action=action, reason=reason),
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    s = EventStore(f"sqlite:///{tmp_path / 'events.sqlite'}")
    s.sync_lots([LotConfig(id="L1", name="lot", capacity=3)])
    return s


def test_occupancy_counts_opened_entries_and_exits_with_clamps(store: EventStore) -> None:
    for n, (direction, action) in enumerate(
        [(Direction.ENTRY, Action.OPEN)] * 4
        + [(Direction.ENTRY, Action.DENY)]
        + [(Direction.EXIT, Action.OPEN)] * 5,
        start=1,
    ):
        store.record(ev(n, direction=direction, action=action))
        lot = store.lot("L1")
        assert lot is not None and 0 <= lot.occupied <= 3
    assert store.lot("L1").occupied == 0  # type: ignore[union-attr]


def test_repeat_changes_nothing_and_reports_progress(store: EventStore) -> None:
    first = ev(1)
    assert store.record(first).stored
    again = store.record(first)
    assert not again.stored and again.lot is None
    assert again.progress is not None and again.progress.upto == 1
    assert store.count_events() == 1 and store.lot("L1").occupied == 1  # type: ignore[union-attr]


def test_contiguous_run_advances_over_out_of_order_arrivals(store: EventStore) -> None:
    assert store.record(ev(1)).progress.upto == 1  # type: ignore[union-attr]
    gap = store.record(ev(3)).progress
    assert gap is not None and gap.upto == 1 and gap.max_seq == 3 and gap.gap
    assert store.record(ev(4)).progress.upto == 1  # type: ignore[union-attr]
    filled = store.record(ev(2)).progress
    assert filled is not None and filled.upto == 4 and not filled.gap


def test_new_epoch_starts_a_new_run(store: EventStore) -> None:
    store.record(ev(1))
    store.record(ev(2))
    after = store.record(ev(1, epoch="EPOCH00002")).progress
    assert after is not None and after.epoch == "EPOCH00002" and after.upto == 1


def test_events_the_gate_no_longer_holds_are_recorded_unrecoverable(store: EventStore) -> None:
    store.record(ev(1))
    store.record(ev(4))  # 2 and 3 missing
    progress, lost = store.note_first_seq("G1", "EPOCH00001", first_seq=3)  # the gate dropped 2
    assert lost == 1 and progress.upto == 1 + 1  # moved past 2; 3 may still come
    assert store.record(ev(3)).progress.upto == 4  # type: ignore[union-attr]
    _, lost_again = store.note_first_seq("G1", "EPOCH00001", first_seq=3)
    assert lost_again == 0
