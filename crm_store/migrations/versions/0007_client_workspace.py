"""The clients' workspace: a website, users a private client is shared with, notes,
and the custom fields and tags admins define.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 13:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("website", sa.String(length=300), nullable=True))
    op.create_table(
        "client_access",
        sa.Column("client_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_client_access_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_client_access_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", "user_id", name=op.f("pk_client_access")),
    )
    op.create_index(op.f("ix_client_access_user_id"), "client_access", ["user_id"])
    op.create_table(
        "client_notes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("client_id", sa.Uuid(), nullable=False),
        sa.Column("author_user_id", sa.Uuid(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_client_notes_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["author_user_id"],
            ["users.id"],
            name=op.f("fk_client_notes_author_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_notes")),
    )
    op.create_index(op.f("ix_client_notes_client_id"), "client_notes", ["client_id"])
    op.create_table(
        "custom_field_defs",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column(
            "type",
            sa.Enum(
                "text",
                "number",
                "date",
                "choice",
                name="custom_field_type",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("choices", sa.JSON(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_custom_field_defs")),
    )
    op.create_table(
        "tag_defs",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_tag_defs")),
    )
    op.create_index("ix_calls_client_created", "calls", ["client_id", "created_at"])
    op.create_index(
        "ix_clients_responsible_name", "clients", ["responsible_user_id", "display_name"]
    )
    # The tags already in use become defined ones.
    op.execute(
        "INSERT INTO tag_defs (name, created_at)"
        " SELECT DISTINCT tag, CURRENT_TIMESTAMP FROM client_tags"
    )


def downgrade() -> None:
    op.drop_index("ix_clients_responsible_name", table_name="clients")
    op.drop_index("ix_calls_client_created", table_name="calls")
    op.drop_table("tag_defs")
    op.drop_table("custom_field_defs")
    op.drop_index(op.f("ix_client_notes_client_id"), table_name="client_notes")
    op.drop_table("client_notes")
    op.drop_index(op.f("ix_client_access_user_id"), table_name="client_access")
    op.drop_table("client_access")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("website")
