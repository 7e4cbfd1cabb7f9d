"""Fixtures running every store test on SQLite and on PostgreSQL.

PostgreSQL tests use a database created for this test session (and dropped at its
end), so they never touch data of other users of the server. If nothing answers at
127.0.0.1:5432 they are skipped with the reason shown in the summary.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from crm_store import Store, open_store, upgrade
from crm_store._models import metadata

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN_DSN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"


def _pg_url(database: str) -> str:
    return f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{database}"


def _postgres_answers() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1.0):
            return True
    except OSError:
        return False


async def create_pg_database() -> str:
    name = f"sb_test_{os.getpid()}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_server() -> None:
    if not _postgres_answers():
        pytest.skip(f"PostgreSQL tests skipped: nothing answers at {PG_HOST}:{PG_PORT}")


@pytest.fixture(scope="session")
def migrated_pg_url(postgres_server: None) -> Iterator[str]:
    """A PostgreSQL database migrated to head, shared by the session's tests."""
    name = asyncio.run(create_pg_database())
    url = _pg_url(name)
    try:
        asyncio.run(upgrade(url))
        yield url
    finally:
        asyncio.run(drop_pg_database(name))


_TRUNCATE = "TRUNCATE " + ", ".join(t.name for t in metadata.sorted_tables) + " CASCADE"

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL per backend: a fresh SQLite file, or the session's PostgreSQL
    database. A plain fixture, so that PostgreSQL set-up runs outside the test loop."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'crm.sqlite3'}"
    url: str = request.getfixturevalue("migrated_pg_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An open store on a migrated, empty database of each backend."""
    postgres = store_url.startswith("postgresql")
    if not postgres:
        await upgrade(store_url)
    async with open_store(store_url, default_region="FR", pool_size=10) as opened:
        if postgres:
            async with opened.engine.begin() as conn:
                await conn.execute(text(_TRUNCATE))
        yield opened


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of each backend, never migrated."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    request.getfixturevalue("postgres_server")
    name = asyncio.run(create_pg_database())
    try:
        yield _pg_url(name)
    finally:
        asyncio.run(drop_pg_database(name))
