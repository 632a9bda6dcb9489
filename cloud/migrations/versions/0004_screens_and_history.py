"""screen overrides and occupancy history (cloud/screens.py, cloud/history.py)

Placeholder in the revision chain, filled when those tables are written (regenerate with
--rev-id 0004 as cloud/migrations/__init__.py describes, keeping this revision id).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 12:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
