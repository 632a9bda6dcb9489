"""initial schema: events, lots, snapshots, gate progress

The tables exactly as ``Base.metadata.create_all`` made them before migrations existed, so a
database from then is stamped at this revision (``cloud.migrations.BASELINE``) and upgraded from
here. Do not change it: add a revision.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 11:43:16.954397
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("epoch", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("gate_id", sa.String(length=64), nullable=False),
        sa.Column("lot_id", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("plate", sa.String(length=16), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("events_gate_epoch_seq", "events", ["gate_id", "epoch", "seq"], unique=False)
    op.create_index(op.f("ix_events_lot_id"), "events", ["lot_id"], unique=False)
    op.create_index(op.f("ix_events_plate"), "events", ["plate"], unique=False)
    op.create_index(op.f("ix_events_ts"), "events", ["ts"], unique=False)
    op.create_table(
        "gate_progress",
        sa.Column("gate_id", sa.String(length=64), nullable=False),
        sa.Column("epoch", sa.String(length=40), nullable=False),
        sa.Column("upto", sa.Integer(), nullable=False),
        sa.Column("max_seq", sa.Integer(), nullable=False),
        sa.Column("unrecoverable", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("gate_id"),
    )
    op.create_table(
        "lots",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("occupied", sa.Integer(), nullable=False),
        sa.Column("last_event_ts", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "snapshots",
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("jpeg", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )


def downgrade() -> None:
    op.drop_table("snapshots")
    op.drop_table("lots")
    op.drop_table("gate_progress")
    op.drop_index(op.f("ix_events_ts"), table_name="events")
    op.drop_index(op.f("ix_events_plate"), table_name="events")
    op.drop_index(op.f("ix_events_lot_id"), table_name="events")
    op.drop_index("events_gate_epoch_seq", table_name="events")
    op.drop_table("events")
