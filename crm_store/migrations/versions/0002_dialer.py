"""Auto-dialer: the do-not-call list and persisted dialing sessions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 16:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "do_not_call",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.Column("prefix", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_do_not_call")),
        sa.UniqueConstraint("number", "prefix", name=op.f("uq_do_not_call_number_prefix")),
    )
    op.create_table(
        "dialer_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("agent", sa.String(length=128), nullable=False),
        sa.Column("list_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=64), nullable=True),
        sa.Column("dialed", sa.Integer(), nullable=False),
        sa.Column("answered", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["call_lists.id"],
            name=op.f("fk_dialer_sessions_list_id_call_lists"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dialer_sessions")),
    )
    op.create_index(op.f("ix_dialer_sessions_agent"), "dialer_sessions", ["agent"])
    op.create_index(op.f("ix_dialer_sessions_list_id"), "dialer_sessions", ["list_id"])
    op.create_index("ix_dialer_sessions_active", "dialer_sessions", ["origin", "state"])


def downgrade() -> None:
    op.drop_table("dialer_sessions")
    op.drop_table("do_not_call")
