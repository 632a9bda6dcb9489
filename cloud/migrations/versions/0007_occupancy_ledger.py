"""occupancy ledger: each event's count after it, lots' newest event and re-base anchor (cloud/events_store.py)

Clamped counts depend on the order events are counted in; events of a lot arrive out of order
when a backlog drains late or when several collectors share the stream. Each counted event now
keeps the lot's count after it (events.occupied_after), so a late event is counted from the one
before it and the ones after are counted again (EventStore._fold), reading a lot's events in time
order through events_lot_ts (which replaces the lot_id index). A lot's re-base (recalibration,
reconciliation, sensors) is its anchor: events up to it no longer count. Existing lots are
anchored at their newest event with their current count.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 16:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("events", sa.Column("occupied_after", sa.Integer(), nullable=True))
    op.drop_index("ix_events_lot_id", table_name="events")
    op.create_index("events_lot_ts", "events", ["lot_id", "ts"], unique=False)
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_event_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("anchor_ts", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("anchor_event_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("anchor_occupied", sa.Integer(), nullable=True))
    newest = "(SELECT max(e.id) FROM events e WHERE e.lot_id = lots.id AND e.ts = lots.last_event_ts)"
    op.execute(
        f"UPDATE lots SET last_event_id = {newest}, anchor_ts = last_event_ts, "
        f"anchor_event_id = {newest}, anchor_occupied = occupied WHERE last_event_ts IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_column("anchor_occupied")
        batch_op.drop_column("anchor_event_id")
        batch_op.drop_column("anchor_ts")
        batch_op.drop_column("last_event_id")
    op.drop_index("events_lot_ts", table_name="events")
    op.create_index("ix_events_lot_id", "events", ["lot_id"], unique=False)
    op.drop_column("events", "occupied_after")
