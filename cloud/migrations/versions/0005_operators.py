"""operators: users and the operator audit trail (dashboard/users.py)

Placeholder in the revision chain, filled when those tables are written (regenerate with
--rev-id 0005 as cloud/migrations/__init__.py describes, keeping this revision id).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 12:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
