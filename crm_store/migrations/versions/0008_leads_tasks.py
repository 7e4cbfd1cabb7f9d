"""Leads: why and when one was closed. Tasks: duration, kanban status, reminders
before the due time and their delivery. Users: an e-mail for reminders.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("leads") as batch:
        batch.add_column(sa.Column("close_reason", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("duration_minutes", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column(
                "status",
                sa.Enum(
                    "todo",
                    "in_progress",
                    "done",
                    name="task_status",
                    native_enum=False,
                    create_constraint=True,
                    length=11,
                ),
                server_default="todo",
                nullable=False,
            )
        )
        batch.add_column(sa.Column("remind_minutes", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reminder_seen_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_tasks_remind", ["done", "reminded_at", "remind_at"])
    # Tasks done before this revision are in the kanban's last column; reminders
    # whose time has passed are not sent again.
    op.execute("UPDATE tasks SET status = 'done' WHERE done")
    op.execute("UPDATE tasks SET reminded_at = remind_at WHERE remind_at IS NOT NULL")
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email", sa.String(length=254), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_index("ix_tasks_remind")
        batch.drop_constraint(op.f("ck_tasks_task_status"), type_="check")
        batch.drop_column("reminder_seen_at")
        batch.drop_column("reminded_at")
        batch.drop_column("remind_minutes")
        batch.drop_column("status")
        batch.drop_column("duration_minutes")
    with op.batch_alter_table("leads") as batch:
        batch.drop_column("closed_at")
        batch.drop_column("close_reason")
