"""Alembic environment for the CRM store.

Normally run through :mod:`crm_store.migrate`, which hands over an open connection in
``config.attributes["connection"]``. Run by the ``alembic`` command instead, it opens
an async engine from ``sqlalchemy.url`` and drives the migration through
``connection.run_sync``. Logging is left alone on purpose: the daemon owns it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from crm_store._engine import create_engine, writer
from crm_store._models import metadata
from crm_store._types import UTCDateTime

config = context.config


def _render_item(kind: str, item: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Migrations must not import application types that may change later; the
    # stored type of UTCDateTime is a plain timezone-aware DateTime.
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    engine = create_engine(url, pool_size=1, for_migrations=True)
    try:
        async with writer(engine).begin() as connection:
            await connection.run_sync(_run_migrations)
    finally:
        await engine.dispose()


def _main() -> None:
    if context.is_offline_mode():
        raise RuntimeError("offline (--sql) migrations are not supported")
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_migrations(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url or use crm_store.migrate")
    asyncio.run(_run_with_own_engine(url))


_main()
