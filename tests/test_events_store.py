"""The event store: stored once, occupancy in the same transaction, per-gate gap tracking."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
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


def test_rows_written_in_bulk_read_back_like_orm_rows(store: EventStore) -> None:
    """The SQLite bulk path converts values as the ORM does: times come back equal and in the
    same text form, so range queries over ``ts`` compare like with like."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from cloud.events_store import EventRow

    batch = [ev(1), ev(2, direction=Direction.EXIT)]
    batch[0] = batch[0].model_copy(update={"plate": "鄂A12345", "confidence": 0.91})
    assert len(store.record_batch(batch).stored) == 2
    with Session(store.engine) as s:
        rows = {r.id: r for r in s.scalars(select(EventRow))}
        raw = s.connection().exec_driver_sql("SELECT ts FROM events ORDER BY seq").scalars().all()
    first = rows[batch[0].id]
    assert first.ts.replace(tzinfo=batch[0].ts.tzinfo) == batch[0].ts
    assert (first.plate, first.confidence, first.direction, first.action) == (
        "鄂A12345",
        0.91,
        "entry",
        "open",
    )
    assert raw[0] == batch[0].ts.strftime("%Y-%m-%d %H:%M:%S.%f")


def test_two_writers_on_one_sqlite_file_both_count(tmp_path: Path) -> None:
    """Two stores (two collectors) writing the same file concurrently: every event stored and
    counted once."""
    import threading

    url = f"sqlite:///{tmp_path / 'events.sqlite'}"
    stores = [EventStore(url), EventStore(url)]
    stores[0].sync_lots([LotConfig(id="L1", name="lot", capacity=100_000)])
    errors: list[BaseException] = []

    def write(store: EventStore, epoch: str) -> None:
        try:
            for start in range(1, 2001, 100):
                store.record_batch([ev(n, epoch=epoch) for n in range(start, start + 100)])
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(s, f"EPOCH{k:05d}")) for k, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert stores[0].count_events() == 4000
    assert stores[1].lot("L1").occupied == 4000  # type: ignore[union-attr]


# -- the occupancy ledger: counted in time order whatever order events arrive in --------------------
def at(event: GateEvent, ts: datetime) -> GateEvent:
    return event.model_copy(update={"ts": ts})


def in_time_order(events: list[GateEvent], capacity: int) -> list[int]:
    """The count after each event, counting them one by one in (ts, id) order."""
    n, after = 0, []
    for e in sorted(events, key=lambda e: (e.ts, e.id)):
        if e.decision.action is Action.OPEN:
            n = min(max(n + (1 if e.direction is Direction.ENTRY else -1), 0), capacity)
        after.append(n)
    return after


def counts_after(store: EventStore) -> list[int | None]:
    """Each stored event's occupied_after, in (ts, id) order."""
    with store.engine.connect() as conn:
        return list(conn.execute(text("SELECT occupied_after FROM events ORDER BY ts, id")).scalars())


def test_a_late_exit_at_a_full_lot_is_counted_where_it_happened(store: EventStore) -> None:
    t = utc_now()
    entries = [at(ev(n), t + timedelta(seconds=n)) for n in (1, 2, 3)]  # capacity 3: full
    later_entry = at(ev(5), t + timedelta(seconds=5))
    store.record_batch([*entries, later_entry])  # the fourth entry is clamped: 3
    assert store.lot("L1").occupied == 3  # type: ignore[union-attr]
    late_exit = at(ev(4, direction=Direction.EXIT), t + timedelta(seconds=4))
    store.record_batch([late_exit])
    # in time order: 1, 2, 3, exit 2, entry 3 (counted in arrival order it would say 2)
    assert store.lot("L1").occupied == 3  # type: ignore[union-attr]
    assert counts_after(store) == [1, 2, 3, 2, 3]


@pytest.mark.parametrize("seed", range(6))
def test_any_split_and_order_of_batches_counts_as_time_order_does(tmp_path: Path, seed: int) -> None:
    """Events of one lot, split into batches of random sizes and stored in random order (late
    backlogs, several collectors): the count and every event's count after it are those of
    counting in time order."""
    rng = random.Random(seed)
    store = EventStore(f"sqlite:///{tmp_path / 'events.sqlite'}")
    store.sync_lots([LotConfig(id="L1", name="lot", capacity=3)])
    t = utc_now()
    kinds = (
        [(Direction.ENTRY, Action.OPEN)] * 5
        + [(Direction.EXIT, Action.OPEN)] * 4
        + [(Direction.ENTRY, Action.DENY)]
    )
    events = []
    for n in range(1, 81):
        direction, action = rng.choice(kinds)
        events.append(
            at(ev(n, direction=direction, action=action), t + timedelta(seconds=rng.randint(0, 40)))
        )
    shuffled = events[:]
    rng.shuffle(shuffled)
    while shuffled:
        size = rng.randint(1, 8)
        store.record_batch(shuffled[:size])
        shuffled = shuffled[size:]
    expected = in_time_order(events, capacity=3)
    assert store.lot("L1").occupied == expected[-1]  # type: ignore[union-attr]
    assert counts_after(store) == expected
    store.close()


def test_a_re_base_holds_against_events_from_before_it(store: EventStore) -> None:
    from sqlalchemy.orm import Session

    from cloud.events_store import LotRow, rebase

    t = utc_now()
    store.record_batch([at(ev(1), t + timedelta(seconds=1)), at(ev(2), t + timedelta(seconds=2))])
    with Session(store.engine) as s, s.begin():  # an operator counted 0 at t + 10 s
        row = s.get(LotRow, "L1")
        assert row is not None
        rebase(row, 0, t + timedelta(seconds=10))
    store.record_batch([at(ev(3), t + timedelta(seconds=5))])  # from before the count: already in it
    assert store.lot("L1").occupied == 0  # type: ignore[union-attr]
    store.record_batch([at(ev(5), t + timedelta(seconds=12))])
    store.record_batch([at(ev(4), t + timedelta(seconds=11))])  # after the count, arriving late
    assert store.lot("L1").occupied == 2  # type: ignore[union-attr]
