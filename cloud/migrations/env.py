"""Alembic's environment for the collector's database.

Used two ways: by ``cloud.migrations.upgrade`` (``EventStore(url)``), which hands in a connection
that already holds the migration lock, and by the ``alembic`` command line with
``-c cloud/migrations/alembic.ini -x db=URL`` (or ``$PARKGATE_DATABASE``).
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy.engine import Connection

from cloud.migrations import include_name, locked, target_metadata

config = context.config


def database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("db") or os.environ.get("PARKGATE_DATABASE")
    if not url:
        raise SystemExit("which database? pass -x db=URL (a SQLAlchemy URL) or set PARKGATE_DATABASE")
    return url


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata(),
        include_name=include_name,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    if context.is_offline_mode():  # `alembic upgrade head --sql`: print the SQL
        context.configure(
            url=database_url(),
            target_metadata=target_metadata(),
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    given = config.attributes.get("connection")
    if given is not None:
        run_on(given)
        return
    from cloud.events_store import open_engine

    engine = open_engine(database_url())
    try:
        with locked(engine) as connection:
            run_on(connection)
    finally:
        engine.dispose()


run()
