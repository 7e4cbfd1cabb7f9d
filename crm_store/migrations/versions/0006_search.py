"""Contact search terms, and an index for one agent's call history.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 21:00:00.000000
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crm_store._search import phone_terms, text_terms
from crm_store.ids import new_id

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 5000


def upgrade() -> None:
    op.create_table(
        "search_terms",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "term",
            sa.String(length=101).with_variant(sa.String(length=101, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("client_id", sa.Uuid(), nullable=True),
        sa.Column("lead_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "(client_id IS NOT NULL AND lead_id IS NULL)"
            " OR (client_id IS NULL AND lead_id IS NOT NULL)",
            name=op.f("ck_search_terms_one_owner"),
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_search_terms_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
            name=op.f("fk_search_terms_lead_id_leads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_terms")),
    )
    op.create_index("ix_search_terms_term", "search_terms", ["term", "client_id", "lead_id"])
    op.create_index("ix_search_terms_client", "search_terms", ["client_id", "term"])
    op.create_index("ix_search_terms_lead", "search_terms", ["lead_id", "term"])
    op.create_index("ix_calls_agent_created", "calls", ["agent_user_id", "created_at"])
    _backfill()


def _backfill() -> None:
    conn = op.get_bind()
    meta = sa.MetaData()
    clients = sa.Table(
        "clients",
        meta,
        sa.Column("id", sa.Uuid()),
        sa.Column("display_name", sa.String()),
        sa.Column("company_name", sa.String()),
        sa.Column("emails", sa.JSON()),
    )
    leads = sa.Table(
        "leads",
        meta,
        sa.Column("id", sa.Uuid()),
        sa.Column("display_name", sa.String()),
        sa.Column("company_name", sa.String()),
        sa.Column("emails", sa.JSON()),
    )
    phones = sa.Table(
        "phones",
        meta,
        sa.Column("number_e164", sa.String()),
        sa.Column("client_id", sa.Uuid()),
        sa.Column("lead_id", sa.Uuid()),
    )
    terms = sa.Table(
        "search_terms",
        meta,
        sa.Column("id", sa.Uuid()),
        sa.Column("term", sa.String()),
        sa.Column("client_id", sa.Uuid()),
        sa.Column("lead_id", sa.Uuid()),
    )
    for table, key in ((clients, "client_id"), (leads, "lead_id")):
        numbers: defaultdict[object, list[str]] = defaultdict(list)
        owner = phones.c[key]
        for number, owner_id in conn.execute(
            sa.select(phones.c.number_e164, owner).where(owner.is_not(None))
        ):
            numbers[owner_id].append(number)
        rows: list[dict[str, object]] = []
        for row in conn.execute(
            sa.select(table.c.id, table.c.display_name, table.c.company_name, table.c.emails)
        ):
            found = text_terms((row.display_name, row.company_name), row.emails or ())
            found |= phone_terms(numbers.get(row.id, ()))
            rows.extend(
                {"id": new_id(), "term": t, "client_id": None, "lead_id": None, key: row.id}
                for t in sorted(found)
            )
            if len(rows) >= _BATCH:
                conn.execute(terms.insert(), rows)
                rows = []
        if rows:
            conn.execute(terms.insert(), rows)


def downgrade() -> None:
    op.drop_index("ix_calls_agent_created", table_name="calls")
    op.drop_table("search_terms")
