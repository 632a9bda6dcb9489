"""Schema migrations (Alembic, cloud/migrations) on SQLite and on a real PostgreSQL server: a new
database and one made before migrations both end at the models' schema, with nothing left for
autogenerate; collectors starting together do not race."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert, inspect, text
from sqlalchemy.engine import Engine
from ulid import ULID

from cloud.events_store import Base, EventStore, open_engine
from cloud.migrations import BASELINE, alembic_config, current, target_metadata
from protocol import Action, Decision, Direction, GateEvent, Reason
from protocol.messages import utc_now

BASELINE_TABLES = ("events", "lots", "snapshots", "gate_progress")  # what create_all made before


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind (PostgreSQL: skipped when the server is not installed)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.sqlite'}"
    return str(request.getfixturevalue("postgres"))


def schema(engine: Engine) -> dict[str, tuple[set[str], set[str]]]:
    """table -> (column names, index names) as the database has them."""
    insp = inspect(engine)
    return {
        table: (
            {c["name"] for c in insp.get_columns(table)},
            {str(i["name"]) for i in insp.get_indexes(table)},
        )
        for table in insp.get_table_names()
        if table != "alembic_version"
    }


def model_schema() -> dict[str, tuple[set[str], set[str]]]:
    return {
        name: ({c.name for c in table.columns}, {str(i.name) for i in table.indexes})
        for name, table in target_metadata().tables.items()
    }


def no_pending_changes(engine: Engine) -> None:
    """`alembic check`: autogenerate finds nothing between the models and the database."""
    with engine.connect() as conn:
        command.check(alembic_config(conn))


def _values(ev: GateEvent) -> dict[str, object]:
    return {
        "id": ev.id, "epoch": ev.epoch, "seq": ev.seq, "gate_id": ev.gate_id, "lot_id": ev.lot_id, "ts": ev.ts,
        "direction": ev.direction.value, "plate": ev.plate, "confidence": ev.confidence,
        "action": ev.decision.action.value, "reason": ev.decision.reason.value, "received_at": utc_now(),
    }  # fmt: skip


def event(seq: int) -> GateEvent:
    return GateEvent(
        id=str(ULID()), epoch="EPOCH00001", seq=seq, ts=utc_now(), lot_id="L1", gate_id="G1",
        direction=Direction.ENTRY, decision=Decision(action=Action.OPEN, reason=Reason.SPACE_FREE),
    )  # fmt: skip


def test_an_empty_database_is_migrated_to_the_models(db_url: str) -> None:
    store = EventStore(db_url)
    try:
        assert schema(store.engine) == model_schema()
        no_pending_changes(store.engine)
        with store.engine.connect() as conn:
            assert current(conn) is not None
        assert store.record(event(1)).stored
    finally:
        store.close()


def test_migrating_again_changes_nothing(db_url: str) -> None:
    EventStore(db_url).close()
    store = EventStore(db_url)
    try:
        with store.engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        assert len(versions) == 1
    finally:
        store.close()


def test_a_database_made_before_migrations_is_stamped_and_upgraded(db_url: str) -> None:
    """Tables from the old create_all, no alembic_version: kept with their rows, then upgraded."""
    engine = open_engine(db_url)
    first = event(1)
    try:
        with engine.connect() as conn:  # the baseline schema as it was, without its version row
            command.upgrade(alembic_config(conn), BASELINE)
            conn.commit()
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE alembic_version"))
            assert set(inspect(conn).get_table_names()) == set(BASELINE_TABLES)
            columns = {c["name"] for c in inspect(conn).get_columns("events")}
            conn.execute(
                insert(Base.metadata.tables["events"]),
                [{k: v for k, v in _values(first).items() if k in columns}],
            )
    finally:
        engine.dispose()

    store = EventStore(db_url)
    try:
        assert schema(store.engine) == model_schema()
        no_pending_changes(store.engine)
        assert store.count_events(first.id) == 1
        assert store.record(first).stored is False
    finally:
        store.close()


def test_downgrade_to_nothing_and_up_again(db_url: str) -> None:
    store = EventStore(db_url)
    try:
        with store.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        assert schema(store.engine) == {}
        with store.engine.begin() as conn:
            command.upgrade(alembic_config(conn), BASELINE)
        assert set(schema(store.engine)) == set(BASELINE_TABLES)
        with store.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        no_pending_changes(store.engine)
    finally:
        store.close()


OPEN_STORE = """
import sys
from cloud.events_store import EventStore
print("ready", flush=True)
sys.stdin.readline()  # all processes start migrating at the same moment
EventStore(sys.argv[1]).close()
print("done", flush=True)
"""


def test_collectors_starting_together_migrate_once(db_url: str) -> None:
    """Collector processes opening one new database at once (bench ingest --collectors K): one
    creates the schema, the others wait for its lock and find it done."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_STORE, db_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [(p.returncode, out.strip()) for p, (out, _err) in zip(procs, results, strict=True)] == [
        (0, "done")
    ] * 3, [err[-2000:] for _out, err in results]
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            assert len(conn.execute(text("SELECT version_num FROM alembic_version")).all()) == 1
        assert schema(engine) == model_schema()
    finally:
        engine.dispose()
