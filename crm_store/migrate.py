"""Run the Alembic migrations programmatically.

The Alembic configuration is built in code and points at ``crm_store/migrations``, so
no ``alembic.ini`` is needed at runtime and Alembic never touches logging
configuration. For hand use during development, ``alembic -c`` with a small ini that
sets ``script_location = crm_store/migrations`` and ``sqlalchemy.url`` also works.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ._engine import create_engine, probe_sqlite_file, unavailable_reason, writer
from .exceptions import StoreUnavailable

__all__ = ["MIGRATIONS_DIR", "downgrade", "head_revision", "upgrade"]

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The newest revision shipped with this code."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migration found in crm_store/migrations")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database behind ``connection`` is at (``None``: unmigrated)."""
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (default: the head).

    Runs in one transaction on both databases (SQLite and PostgreSQL both have
    transactional DDL), so a failed or cancelled upgrade leaves the schema as it was.
    """
    await _run(url, "upgrade", revision)


async def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"`` drops all).

    Same transaction and cancellation behaviour as :func:`upgrade`.
    """
    await _run(url, "downgrade", revision)


async def _run(url: str, direction: str, revision: str) -> None:
    await probe_sqlite_file(url)
    engine = create_engine(url, pool_size=1, for_migrations=True)
    config = _config()

    def run(connection: Connection) -> None:
        # env.py picks the connection up from here instead of opening its own.
        config.attributes["connection"] = connection
        before = current_revision(connection)
        if direction == "upgrade":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)
        log.info(
            "schema_migrated",
            direction=direction,
            from_revision=before,
            to_revision=current_revision(connection),
        )

    try:
        async with writer(engine).begin() as connection:
            await connection.run_sync(run)
    except (DBAPIError, OSError) as exc:
        raise StoreUnavailable(unavailable_reason(exc)) from exc
    finally:
        await engine.dispose()
