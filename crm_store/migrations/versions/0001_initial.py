"""Initial schema: users, clients, leads, phones, calls, tasks, call lists, audit log.

Indexes are dropped with their tables on downgrade.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 15:24:07.822394
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("entity_type", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    op.create_index("ix_audit_log_entity", "audit_log", ["entity_type", "entity_id"])

    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "agent",
                "supervisor",
                "admin",
                name="role",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("extension", sa.String(length=32), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"])

    op.create_table(
        "call_lists",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner_user_id", sa.Uuid(), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_user_id"],
            ["users.id"],
            name=op.f("fk_call_lists_owner_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_lists")),
    )
    op.create_index(op.f("ix_call_lists_owner_user_id"), "call_lists", ["owner_user_id"])

    op.create_table(
        "clients",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "person", "company", name="client_kind", native_enum=False, create_constraint=True
            ),
            nullable=False,
        ),
        sa.Column("first_name", sa.String(length=100), nullable=True),
        sa.Column("last_name", sa.String(length=100), nullable=True),
        sa.Column("company_name", sa.String(length=200), nullable=True),
        sa.Column("display_name", sa.String(length=300), nullable=False),
        sa.Column("company_id", sa.Uuid(), nullable=True),
        sa.Column("emails", sa.JSON(), nullable=False),
        sa.Column("address_street", sa.String(length=300), nullable=True),
        sa.Column("address_postcode", sa.String(length=20), nullable=True),
        sa.Column("address_city", sa.String(length=100), nullable=True),
        sa.Column("address_region", sa.String(length=100), nullable=True),
        sa.Column("address_country", sa.String(length=2), nullable=True),
        sa.Column("custom_fields", sa.JSON(), nullable=False),
        sa.Column("responsible_user_id", sa.Uuid(), nullable=True),
        sa.Column(
            "visibility",
            sa.Enum(
                "private", "shared", name="visibility", native_enum=False, create_constraint=True
            ),
            nullable=False,
        ),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["clients.id"],
            name=op.f("fk_clients_company_id_clients"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["responsible_user_id"],
            ["users.id"],
            name=op.f("fk_clients_responsible_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clients")),
    )
    op.create_index(op.f("ix_clients_company_id"), "clients", ["company_id"])
    op.create_index(op.f("ix_clients_display_name"), "clients", ["display_name"])
    op.create_index(op.f("ix_clients_responsible_user_id"), "clients", ["responsible_user_id"])

    op.create_table(
        "client_tags",
        sa.Column("client_id", sa.Uuid(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_client_tags_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", "tag", name=op.f("pk_client_tags")),
    )
    op.create_index(op.f("ix_client_tags_tag"), "client_tags", ["tag"])

    op.create_table(
        "leads",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("first_name", sa.String(length=100), nullable=True),
        sa.Column("last_name", sa.String(length=100), nullable=True),
        sa.Column("company_name", sa.String(length=200), nullable=True),
        sa.Column("display_name", sa.String(length=300), nullable=False),
        sa.Column("emails", sa.JSON(), nullable=False),
        sa.Column(
            "source",
            sa.Enum(
                "manual",
                "import",
                "incoming_call",
                "outgoing_call",
                "dialer",
                "web_form",
                name="lead_source",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "unprocessed",
                "in_progress",
                "done",
                "unsuitable",
                name="lead_status",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("owner_user_id", sa.Uuid(), nullable=True),
        sa.Column("converted_client_id", sa.Uuid(), nullable=True),
        sa.Column("origin_number", sa.String(length=20), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["converted_client_id"],
            ["clients.id"],
            name=op.f("fk_leads_converted_client_id_clients"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["owner_user_id"],
            ["users.id"],
            name=op.f("fk_leads_owner_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leads")),
        sa.UniqueConstraint("origin_number", name=op.f("uq_leads_origin_number")),
    )
    op.create_index(op.f("ix_leads_converted_client_id"), "leads", ["converted_client_id"])
    op.create_index(op.f("ix_leads_display_name"), "leads", ["display_name"])
    op.create_index("ix_leads_pool", "leads", ["owner_user_id", "status", "created_at"])

    op.create_table(
        "calls",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "direction",
            sa.Enum(
                "inbound",
                "outbound",
                "internal",
                name="call_direction",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("from_number", sa.String(length=64), nullable=False),
        sa.Column("to_number", sa.String(length=64), nullable=False),
        sa.Column("agent_user_id", sa.Uuid(), nullable=True),
        sa.Column("client_id", sa.Uuid(), nullable=True),
        sa.Column("lead_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ringing_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "end_reason",
            sa.Enum(
                "completed",
                "busy",
                "no_answer",
                "rejected",
                "cancelled",
                "unreachable",
                "failed",
                "transferred",
                "interrupted",
                name="call_end_reason",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=True,
        ),
        sa.Column("disposition", sa.String(length=64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("recording_path", sa.String(length=500), nullable=True),
        sa.Column("recording_duration", sa.Float(), nullable=True),
        sa.Column("origin", sa.String(length=64), nullable=True),
        sa.Column("worker_id", sa.String(length=64), nullable=True),
        sa.Column("line", sa.String(length=32), nullable=True),
        sa.Column("dialer_item_id", sa.Uuid(), nullable=True),
        sa.Column("sip_call_id", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_user_id"],
            ["users.id"],
            name=op.f("fk_calls_agent_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_calls_client_id_clients"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_calls_lead_id_leads"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
    )
    op.create_index(op.f("ix_calls_agent_user_id"), "calls", ["agent_user_id"])
    op.create_index(op.f("ix_calls_client_id"), "calls", ["client_id"])
    op.create_index(op.f("ix_calls_created_at"), "calls", ["created_at"])
    op.create_index(op.f("ix_calls_dialer_item_id"), "calls", ["dialer_item_id"])
    op.create_index(op.f("ix_calls_ended_at"), "calls", ["ended_at"])
    op.create_index(op.f("ix_calls_lead_id"), "calls", ["lead_id"])
    op.create_index(op.f("ix_calls_sip_call_id"), "calls", ["sip_call_id"])
    op.create_index(op.f("ix_calls_origin"), "calls", ["origin"])
    op.create_index(op.f("ix_calls_worker_id"), "calls", ["worker_id"])

    op.create_table(
        "phones",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("number_e164", sa.String(length=20), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "work",
                "mobile",
                "home",
                "fax",
                "other",
                name="phone_kind",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("client_id", sa.Uuid(), nullable=True),
        sa.Column("lead_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "(client_id IS NOT NULL AND lead_id IS NULL)"
            " OR (client_id IS NULL AND lead_id IS NOT NULL)",
            name=op.f("ck_phones_one_owner"),
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_phones_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_phones_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_phones")),
        sa.UniqueConstraint(
            "client_id", "number_e164", name=op.f("uq_phones_client_id_number_e164")
        ),
        sa.UniqueConstraint("lead_id", "number_e164", name=op.f("uq_phones_lead_id_number_e164")),
    )
    op.create_index(op.f("ix_phones_number_e164"), "phones", ["number_e164"])

    op.create_table(
        "tasks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "call",
                "email",
                "meeting",
                "other",
                name="task_kind",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("remind_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("assignee_user_id", sa.Uuid(), nullable=True),
        sa.Column("client_id", sa.Uuid(), nullable=True),
        sa.Column("lead_id", sa.Uuid(), nullable=True),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["assignee_user_id"],
            ["users.id"],
            name=op.f("fk_tasks_assignee_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_tasks_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_tasks_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    op.create_index(op.f("ix_tasks_client_id"), "tasks", ["client_id"])
    op.create_index("ix_tasks_due", "tasks", ["assignee_user_id", "done", "due_at"])
    op.create_index(op.f("ix_tasks_lead_id"), "tasks", ["lead_id"])

    op.create_table(
        "call_list_items",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("list_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("number_e164", sa.String(length=20), nullable=True),
        sa.Column("raw_number", sa.String(length=64), nullable=False),
        sa.Column("invalid_reason", sa.String(length=200), nullable=True),
        sa.Column("client_id", sa.Uuid(), nullable=True),
        sa.Column("lead_id", sa.Uuid(), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                "pending",
                "claimed",
                "dialing",
                "done",
                "failed",
                "skipped",
                "invalid",
                name="call_list_item_state",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.Uuid(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_result", sa.String(length=32), nullable=True),
        sa.Column("last_call_id", sa.Uuid(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("skip_reason", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["claimed_by"],
            ["users.id"],
            name=op.f("fk_call_list_items_claimed_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_call_list_items_client_id_clients"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["last_call_id"],
            ["calls.id"],
            name=op.f("fk_call_list_items_last_call_id_calls"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
            name=op.f("fk_call_list_items_lead_id_leads"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["call_lists.id"],
            name=op.f("fk_call_list_items_list_id_call_lists"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_list_items")),
        sa.UniqueConstraint(
            "list_id", "number_e164", name=op.f("uq_call_list_items_list_id_number_e164")
        ),
        sa.UniqueConstraint(
            "list_id", "position", name=op.f("uq_call_list_items_list_id_position")
        ),
    )
    op.create_index("ix_call_list_items_claim", "call_list_items", ["list_id", "state", "position"])


def downgrade() -> None:
    op.drop_table("call_list_items")
    op.drop_table("tasks")
    op.drop_table("phones")
    op.drop_table("calls")
    op.drop_table("leads")
    op.drop_table("client_tags")
    op.drop_table("clients")
    op.drop_table("call_lists")
    op.drop_table("api_tokens")
    op.drop_table("users")
    op.drop_table("audit_log")
