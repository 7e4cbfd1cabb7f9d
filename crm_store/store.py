"""The :class:`Store`: one engine, its repositories, and caller lookup."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Self

import phonenumbers
import structlog
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ._base import Database
from ._engine import SqliteWriter, create_engine, probe_sqlite_file, unavailable_reason
from ._journal import CallJournal, StoreHealth
from ._lookup import SqliteLookup, lookup_e164
from .dto import CallerMatch
from .exceptions import SchemaOutOfDate, StoreUnavailable
from .migrate import current_revision, head_revision
from .phones import normalize_phone
from .repos import (
    AuditRepository,
    CallListRepository,
    CallRepository,
    ClientRepository,
    DialerRepository,
    ImportRepository,
    LeadRepository,
    PresenceRepository,
    SessionRepository,
    TaskRepository,
    UserRepository,
)
from .repos.client_defs import DefinitionRepository
from .repos.contacts import ContactRepository
from .repos.exports import ExportRepository

__all__ = ["Store", "open_store"]

log = structlog.get_logger(__name__)

# Caller lookups run concurrently for simultaneous inbound calls; two threads
# match the two cores and bound the reader's connections.
_READER_THREADS = 2


class Store:
    """The CRM store: repositories over one connection pool.

    Open it with :meth:`open` (or :func:`open_store`) and close it with
    :meth:`aclose` or ``async with``. Every repository method runs in its own
    transaction and returns plain DTOs. Cancelling a call mid-transaction rolls the
    transaction back and returns the connection to the pool.
    """

    def __init__(self, engine: AsyncEngine, region: str) -> None:
        self.engine = engine
        self.region = region
        db = Database(engine, region)
        self._db = db
        path = engine.url.database
        self._reader = (
            SqliteLookup(path, engine.dialect)
            if engine.dialect.name == "sqlite" and path not in (None, "", ":memory:")
            else None
        )
        self._reader_pool = (
            ThreadPoolExecutor(_READER_THREADS, thread_name_prefix="store-lookup")
            if self._reader is not None
            else None
        )
        self._closed = False
        db.lookup_hook = self._lookup_e164
        if self._reader is not None and path is not None:
            db.sqlite_writer = SqliteWriter(path)
        self.sessions = SessionRepository(db)
        self.users = UserRepository(db, sessions=self.sessions)
        self.clients = ClientRepository(db)
        self.leads = LeadRepository(db)
        self.journal = CallJournal(db)
        self.calls = CallRepository(db, self.journal)
        self.tasks = TaskRepository(db)
        self.call_lists = CallListRepository(db)
        self.audit = AuditRepository(db)
        self.dialer = DialerRepository(db)
        self.presence = PresenceRepository(db)
        self.contacts = ContactRepository(db)
        self.definitions = DefinitionRepository(db)
        self.imports = ImportRepository(db)
        self.exports = ExportRepository(db)

    @classmethod
    async def open(cls, url: str, *, default_region: str = "FR", pool_size: int = 5) -> Store:
        """Connect to ``url`` (``sqlite+aiosqlite:///path`` or
        ``postgresql+asyncpg://...``) and return a ready store.

        ``default_region`` (ISO 3166 alpha-2) is used to read numbers written without
        an international prefix. One connection is opened and checked so that a wrong
        URL fails here, at start-up. The schema is not migrated; call
        :func:`crm_store.upgrade` first and :meth:`check_schema` to verify.
        """
        region = default_region.upper()
        if phonenumbers.country_code_for_region(region) == 0:
            raise ValueError(f"unknown phone region {default_region!r}")
        await probe_sqlite_file(url)
        engine = create_engine(url, pool_size=pool_size)
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (DBAPIError, OSError) as exc:
            await engine.dispose()
            raise StoreUnavailable(unavailable_reason(exc)) from exc
        except BaseException:
            await engine.dispose()
            raise
        log.info(
            "store_opened",
            backend=engine.dialect.name,
            # render_as_string hides the password.
            url=make_url(url).render_as_string(hide_password=True),
            region=region,
        )
        return cls(engine, region)

    async def aclose(self) -> None:
        """Close every pooled connection. Idempotent; the store is unusable after."""
        if self._closed:
            return
        self._closed = True
        # Queued call record steps get a last chance while the connections exist.
        await self.journal.aclose()
        if self._reader_pool is not None and self._reader is not None:
            # Lookups in flight finish in their thread before the reader goes.
            await asyncio.to_thread(self._reader_pool.shutdown, wait=True)
            self._reader.close()
        if self._db.sqlite_writer is not None:
            await self._db.sqlite_writer.aclose()
        await self.engine.dispose()
        log.info("store_closed")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def lookup_caller(self, number: str) -> CallerMatch | None:
        """Who owns ``number``: a client, a lead, or nobody (``None``).

        ``number`` may be written in any form the default region understands; it is
        normalised first, and :class:`InvalidPhone` is raised if it cannot be (callers
        handling withheld numbers should check before). Clients win over leads; see
        :mod:`crm_store._lookup` for the full rule. One indexed statement answers,
        with the owner's phones and tags. Cancellation releases the connection (on
        SQLite the lookup already running in its thread completes; its answer is
        dropped).
        """
        return await self._lookup_e164(normalize_phone(number, self.region))

    async def _lookup_e164(self, e164: str) -> CallerMatch | None:
        if self._reader is not None and self._reader_pool is not None:
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self._reader_pool, self._reader.lookup, e164)
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(str(exc)) from exc
        async with self._db.read() as conn:
            return await lookup_e164(conn, e164)

    async def check_health(self, *, timeout: float = 5.0) -> StoreHealth:
        """Whether the database answers (one ``SELECT 1`` within ``timeout`` seconds)
        and how many call record steps wait for it.

        Never raises for the database's sake: a failure is the answer, with its
        reason. The store is *degraded* while it does not answer or steps wait
        (they are written as soon as it does; see :mod:`crm_store._journal`).
        Cancellation stops the probe.
        """
        try:
            async with asyncio.timeout(timeout):
                async with self._db.read() as conn:
                    await conn.execute(text("SELECT 1"))
        except StoreUnavailable as exc:
            self.journal.failed(exc)
        except TimeoutError:
            self.journal.failed(StoreUnavailable(f"no answer within {timeout} s"))
        else:
            self.journal.recovered()
        return self.journal.health()

    async def schema_revision(self) -> str | None:
        """The Alembic revision of the database, ``None`` if it was never migrated."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(current_revision)

    async def check_schema(self) -> None:
        """Raise :class:`SchemaOutOfDate` unless the database is at the code's head."""
        current = await self.schema_revision()
        head = head_revision()
        if current != head:
            raise SchemaOutOfDate(current, head)


@asynccontextmanager
async def open_store(
    url: str, *, default_region: str = "FR", pool_size: int = 5
) -> AsyncIterator[Store]:
    """``async with open_store(url) as store:`` — :meth:`Store.open` then
    :meth:`Store.aclose` on exit, including on error or cancellation."""
    store = await Store.open(url, default_region=default_region, pool_size=pool_size)
    try:
        yield store
    finally:
        await store.aclose()
