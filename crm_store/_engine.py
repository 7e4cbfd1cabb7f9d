"""Engine construction for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from .exceptions import StoreUnavailable

__all__ = [
    "IMMEDIATE",
    "SqliteWriter",
    "create_engine",
    "is_sqlite",
    "probe_sqlite_file",
    "writer",
]

# Execution options read by the SQLite "begin" listener below.
IMMEDIATE = "crm_store_begin_immediate"

BUSY_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 5.0


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def create_engine(url: str, *, pool_size: int = 5, for_migrations: bool = False) -> AsyncEngine:
    """Create the async engine for ``url`` with the store's connection settings.

    SQLite connections get WAL (readers never block the writer), ``foreign_keys=ON``
    (off by default in SQLite), a busy timeout (writers queue instead of failing at
    once) and ``synchronous=NORMAL`` (safe with WAL, one fsync per checkpoint instead
    of per commit). Migrations run with foreign keys off because SQLite's batch mode
    rebuilds tables by copy-and-rename, which foreign keys would block or cascade.
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    sqlite = parsed.get_backend_name() == "sqlite"
    memory = sqlite and parsed.database in (None, "", ":memory:")
    if not memory:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size * 2)
    if parsed.get_backend_name() == "postgresql":
        # asyncpg waits 60 s for a server that does not answer (a cut network):
        # callers must learn within seconds that the store is away.
        kwargs.update(connect_args={"timeout": CONNECT_TIMEOUT_S})
    engine = create_async_engine(parsed, **kwargs)
    if sqlite:
        _configure_sqlite(engine.sync_engine, foreign_keys=not for_migrations)
    return engine


T = TypeVar("T")


class SqliteWriter:
    """Write transactions on a SQLite file in one hand-off each.

    Through aiosqlite every statement costs several hand-offs between the event
    loop and the driver's thread, so a transaction of five statements waits for
    about twenty thread wake-ups, each slow on a busy machine. Here a whole
    transaction — a synchronous function of a SQLAlchemy :class:`Connection` —
    runs on one dedicated thread with its own plain ``sqlite3`` connection (the
    same pragmas, ``BEGIN IMMEDIATE``): the loop pays one hand-off. It queues with
    the async engine's writers on SQLite's write lock like any other connection.
    A caller cancelled while its transaction runs does not stop it: it commits (or
    rolls back) in its thread, and only the answer is dropped.
    """

    def __init__(self, path: str) -> None:
        engine = create_sync_engine(
            f"sqlite:///{path}",
            pool_size=1,
            max_overflow=0,
            # Opened, used and closed by the writer thread only; dispose() may run
            # on another thread once that thread is done.
            connect_args={"check_same_thread": False},
        )
        _configure_sqlite(engine, foreign_keys=True)
        self._engine = engine
        self._writer = engine.execution_options(**{IMMEDIATE: True})
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="store-writer")

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """``fn(connection)`` in one transaction, committed when it returns."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._transaction, fn)

    def _transaction(self, fn: Callable[[Connection], T]) -> T:
        with self._writer.begin() as conn:
            return fn(conn)

    async def aclose(self) -> None:
        """Let the transactions in flight finish, then close the connection."""
        await asyncio.to_thread(self._thread.shutdown, wait=True)
        self._engine.dispose()


async def probe_sqlite_file(url: str) -> None:
    """Open and close a file-backed SQLite database once with the plain driver.

    Raises :class:`StoreUnavailable` when the file cannot be opened (missing directory,
    no permission). Checking here, before aiosqlite, matters because aiosqlite's
    clean-up after a failed connect finishes on its worker thread *after* the error
    has reached the caller; a caller whose event loop ends at once (a CLI run, a
    test) would then see that thread fail on the closed loop. Other URLs are left to
    the engine.
    """
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        return
    if parsed.query.get("uri") or str(database).startswith("file:"):
        return

    def probe() -> None:
        sqlite3.connect(str(database)).close()

    try:
        await asyncio.to_thread(probe)
    except sqlite3.Error as exc:
        raise StoreUnavailable(str(exc)) from exc


def writer(engine: AsyncEngine) -> AsyncEngine:
    """The engine to use for read-write transactions.

    On SQLite, a deferred transaction that reads and then writes can fail with
    ``SQLITE_BUSY`` without waiting when another connection wrote in between (the
    busy timeout does not apply to a lock upgrade). Starting write transactions with
    ``BEGIN IMMEDIATE`` takes the write lock first, so writers queue on the busy
    timeout and a read-then-write sequence is atomic.
    """
    if is_sqlite(engine):
        return engine.execution_options(**{IMMEDIATE: True})
    return engine


def _configure_sqlite(sync_engine: Engine, *, foreign_keys: bool) -> None:

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the sqlite3 module, which otherwise
        # issues its own deferred BEGIN lazily; the "begin" listener emits ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(IMMEDIATE, False) else "BEGIN")


def unavailable_reason(exc: BaseException) -> str:
    """Say why a connection failed, from the driver's own error.

    SQLAlchemy's message embeds the statement and a link; the driver's (``orig``)
    is the useful part, and neither carries the URL's password.
    """
    return str(getattr(exc, "orig", None) or exc)
