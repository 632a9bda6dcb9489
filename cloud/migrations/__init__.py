"""Schema migrations (Alembic) for the collector's database.

``upgrade(engine)`` brings any database to the newest schema: an empty one, one made by an older
ParkGate, or one made before migrations existed (tables from ``create_all``, no
``alembic_version`` table: it is stamped at ``BASELINE``, the schema ``create_all`` made then, and
upgraded from there). It holds a lock while it works, so collectors starting together against one
new database do not race: ``pg_advisory_xact_lock`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite,
and the whole upgrade is one transaction on both (their DDL is transactional).

Adding a revision after changing or adding models (a new model module goes in ``MODEL_MODULES``)::

    .venv/bin/alembic -c cloud/migrations/alembic.ini -x db=sqlite:////tmp/rev.sqlite upgrade head
    .venv/bin/alembic -c cloud/migrations/alembic.ini -x db=sqlite:////tmp/rev.sqlite \\
        revision --autogenerate --rev-id 0003 -m "what changed"   # the next number
    # read the new file in versions/, then check that nothing is left over:
    .venv/bin/alembic -c cloud/migrations/alembic.ini -x db=sqlite:////tmp/rev.sqlite upgrade head
    .venv/bin/alembic -c cloud/migrations/alembic.ini -x db=sqlite:////tmp/rev.sqlite check

``tests/test_migrations.py`` fails while the models and the revisions disagree.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection, Engine

logger = logging.getLogger(__name__)
# Alembic logs each of its autogenerate plugins at INFO on every run; the revisions it runs stay.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

MIGRATIONS = Path(__file__).resolve().parent
BASELINE = "0001"  # the schema create_all made before migrations existed
# Every module that adds tables to cloud.events_store.Base; the ones not (yet) present are skipped.
MODEL_MODULES = (
    "cloud.events_store",
    "cloud.intruders",
    "cloud.visits",
    "cloud.screens",
    "cloud.history",
    "dashboard.users",
    "cloud.lists",
)
LOCK_KEY = 0x5061726B47617465 & 0x7FFFFFFFFFFFFFFF  # "ParkGate": the advisory lock of migrations
# Day partitions of `events` (deploy/postgres/partitioning.sql) are not models: autogenerate skips them.
PARTITION_TABLE = re.compile(r"^events_(p\d{8}|default)$")
# Alembic keeps the running migration in module globals (alembic.context): one at a time per process.
_ALEMBIC = threading.Lock()


def target_metadata() -> MetaData:
    """The metadata of every model module (``MODEL_MODULES``)."""
    for name in MODEL_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    from cloud.events_store import Base

    return Base.metadata


def include_name(name: str | None, type_: str, _parent_names: object) -> bool:
    """Autogenerate's filter: the day partitions of ``events`` are not tables of their own."""
    return not (type_ == "table" and name is not None and PARTITION_TABLE.match(name))


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's config for these migrations, without an ini file; ``connection`` is used by env.py
    instead of opening its own."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@contextlib.contextmanager
def locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the migration lock; committed on success."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock: a second migrator waits here
        elif engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        yield conn
        conn.commit()


def made_before_migrations(conn: Connection) -> bool:
    """Tables from ``create_all`` but no ``alembic_version``: a database from before migrations."""
    tables = set(inspect(conn).get_table_names())
    return "events" in tables and "alembic_version" not in tables


def current(conn: Connection) -> str | None:
    """The revision the database is at (None: none)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (see the module's docstring)."""
    with _ALEMBIC, locked(engine) as conn:
        cfg = alembic_config(conn)
        if made_before_migrations(conn):
            logger.warning("database made before migrations: stamping it at %s, then upgrading", BASELINE)
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, revision)
