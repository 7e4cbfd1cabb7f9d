from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from crm_store import (
    SchemaOutOfDate,
    Store,
    StoreUnavailable,
    downgrade,
    head_revision,
    upgrade,
)
from crm_store._engine import create_engine
from crm_store._models import metadata


async def _inspect(url: str, fn: Any) -> Any:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_upgrade_creates_the_models_schema_and_downgrade_removes_it(
    empty_url: str,
) -> None:
    assert await _inspect(empty_url, _tables) == set()

    await upgrade(empty_url)
    assert await _inspect(empty_url, _tables) == set(metadata.tables) | {"alembic_version"}
    assert await _inspect(empty_url, _diff) == []

    await downgrade(empty_url, "base")
    assert await _inspect(empty_url, _tables) <= {"alembic_version"}


async def test_schema_check_reports_unmigrated_database(empty_url: str) -> None:
    async with await Store.open(empty_url) as store:
        assert await store.schema_revision() is None
        with pytest.raises(SchemaOutOfDate):
            await store.check_schema()
        await upgrade(empty_url)
        assert await store.schema_revision() == head_revision()
        await store.check_schema()


async def test_upgrade_twice_is_a_no_op(empty_url: str) -> None:
    await upgrade(empty_url)
    await upgrade(empty_url)
    assert await _inspect(empty_url, _diff) == []


async def test_unreachable_database_is_store_unavailable(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'dir' / 'db.sqlite3'}"
    with pytest.raises(StoreUnavailable, match="unable to open database file"):
        await upgrade(url)
    with pytest.raises(StoreUnavailable, match="unable to open database file"):
        await Store.open(url)


async def test_refused_postgres_connection_is_store_unavailable() -> None:
    # Port 9 (discard) has no PostgreSQL: the connection is refused at once.
    with pytest.raises(StoreUnavailable) as refused:
        await Store.open("postgresql+asyncpg://switchboard:hunter2@127.0.0.1:9/none")
    assert "hunter2" not in str(refused.value)
