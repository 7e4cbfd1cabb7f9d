"""Calls: whether the recording succeeded, and why not.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 17:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("recording_status", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("recording_error", sa.String(length=200), nullable=True))
    # Calls recorded before this revision have their file: say so.
    op.execute("UPDATE calls SET recording_status = 'ok' WHERE recording_path IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("recording_error")
        batch.drop_column("recording_status")
