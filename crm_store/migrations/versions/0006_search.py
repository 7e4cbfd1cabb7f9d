"""Call history: an index for one agent's calls, newest first.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 21:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_calls_agent_created", "calls", ["agent_user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_calls_agent_created", table_name="calls")
