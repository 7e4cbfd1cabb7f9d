"""Fixtures running every store test on SQLite and on PostgreSQL.

PostgreSQL tests use a database created for this test session (and dropped at its
end), so they never touch data of other users of the server. The server is the one
``SWITCHBOARD_TEST_PG_URL`` names, or the session's private PostgreSQL (see
tests/_services.py): they never skip for want of one.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from sqlalchemy import text

from crm_store import Store, open_store, upgrade
from crm_store._models import metadata
from tests._services import postgres_admin_dsn


def _pg_url(database: str) -> str:
    """The SQLAlchemy URL of ``database`` on the session's PostgreSQL server."""
    parts = urlsplit(postgres_admin_dsn())
    return urlunsplit(("postgresql+asyncpg", parts.netloc, f"/{database}", "", ""))


async def create_pg_database() -> str:
    name = f"sb_test_{os.getpid()}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(postgres_admin_dsn())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(postgres_admin_dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of the session's PostgreSQL, started here if it is a private one."""
    return postgres_admin_dsn()


@pytest.fixture(scope="session")
def migrated_pg_url(postgres_server: str) -> Iterator[str]:
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
