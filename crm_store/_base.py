"""Plumbing shared by the repositories: connections, audit rows, row → DTO."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import bindparam, literal, literal_column, null, select, union_all
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import _models as m
from ._engine import SqliteWriter, unavailable_reason, writer
from ._types import utcnow
from .dto import (
    Address,
    ApiToken,
    AuditEntry,
    Call,
    CallerMatch,
    CallList,
    CallListItem,
    Client,
    Lead,
    Phone,
    Task,
    User,
)
from .exceptions import Conflict, StoreUnavailable
from .ids import new_id

Actor = uuid.UUID | None
"""Who makes a change: a user id, or ``None`` for the system itself."""

SYSTEM_ACTOR = "system"

_D = TypeVar("_D")
T = TypeVar("T")


class Database:
    """The engine pair every repository shares: plain reads and write transactions."""

    def __init__(self, engine: AsyncEngine, region: str) -> None:
        self.engine = engine
        self.writer = writer(engine)
        self.region = region
        #: Set by the store when it answers caller lookups faster than a read on
        #: ``engine`` would (SQLite: its reader threads); takes an E.164 number.
        self.lookup_hook: Callable[[str], Awaitable[CallerMatch | None]] | None = None
        #: Set by the store on a SQLite file: runs :meth:`run_write` transactions.
        self.sqlite_writer: SqliteWriter | None = None

    def read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for reads; its implicit transaction is rolled back on exit.
        A database that cannot answer raises :class:`StoreUnavailable`."""
        return _operational(self.engine.connect())

    def write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction committed on normal exit and rolled back on any exception,
        including cancellation. A database that cannot answer (or cannot write: a
        full disk) raises :class:`StoreUnavailable`."""
        return _operational(self.writer.begin())

    async def run_write(self, fn: Callable[[Connection], T]) -> T:
        """``fn(connection)`` in one write transaction, committed when it returns and
        rolled back when it raises: for the writes on a call's critical path.

        On a SQLite file it runs on the store's writer thread in one hand-off
        (:class:`SqliteWriter`; a cancelled caller does not stop it), elsewhere on
        the async engine (``run_sync``: one implementation of ``fn`` for both). A
        database that cannot answer raises :class:`StoreUnavailable`.
        """
        if self.sqlite_writer is not None:
            try:
                return await self.sqlite_writer.run(fn)
            except BaseException as exc:
                if is_operational(exc):
                    raise StoreUnavailable(unavailable_reason(exc)) from exc
                raise
        async with self.write() as conn:
            return await conn.run_sync(fn)


def is_operational(exc: BaseException) -> bool:
    """True if ``exc`` says the database could not do its job (unreachable, lost
    connection, full disk, pool exhausted) rather than anything about the data."""
    if isinstance(exc, IntegrityError):
        return False
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated)
    # asyncpg's connect lets a refused or reset socket through unwrapped.
    return isinstance(exc, OSError)


@asynccontextmanager
async def _operational(
    manager: AbstractAsyncContextManager[AsyncConnection],
) -> AsyncIterator[AsyncConnection]:
    # Driver errors that are about the database's health, not the data, become
    # StoreUnavailable: callers handle StoreError, and a lost connection must not
    # escape them as an unexpected exception that ends their task.
    try:
        async with manager as conn:
            yield conn
    except StoreUnavailable:
        raise
    except Exception as exc:
        if is_operational(exc):
            raise StoreUnavailable(unavailable_reason(exc)) from exc
        raise


def jsonable(value: Any) -> Any:
    """Convert a value for the JSON ``changes`` column of the audit log."""
    if value is None or isinstance(value, bool | int | float | str):
        if isinstance(value, enum.Enum):
            return value.value
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, Iterable):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return str(value)


async def audit(
    conn: AsyncConnection,
    *,
    actor: Actor,
    entity_type: str,
    entity_id: uuid.UUID | str,
    action: str,
    changes: Mapping[Any, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Append one audit row inside the caller's transaction, so that the change and
    its record commit or roll back together."""
    await conn.run_sync(
        audit_sync,
        actor=actor,
        entity_type=entity_type,
        entity_id=entity_id,
        action=action,
        changes=changes,
        at=at,
    )


def audit_sync(
    conn: Connection,
    *,
    actor: Actor,
    entity_type: str,
    entity_id: uuid.UUID | str,
    action: str,
    changes: Mapping[Any, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """:func:`audit` inside a synchronous transaction (:meth:`Database.run_write`)."""
    conn.execute(
        m.audit_log.insert().values(
            id=new_id(),
            at=at or utcnow(),
            actor=str(actor) if actor is not None else SYSTEM_ACTOR,
            entity_type=entity_type,
            entity_id=str(entity_id),
            action=action,
            changes=jsonable(changes or {}),
        )
    )


def is_unique_violation(exc: IntegrityError) -> bool:
    """True if ``exc`` is a unique-constraint violation (not a foreign key or check)."""
    text = str(exc.orig).lower()
    return "unique" in text or "duplicate key" in text


def conflict_from(exc: IntegrityError, message: str) -> Conflict:
    return Conflict(f"{message}: {exc.orig}")


def _build(cls: type[_D], row: Mapping[Any, Any], **extra: Any) -> _D:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(
            f.name
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        )
    values = {name: row[name] for name in names if name not in extra}
    return cls(**values, **extra)


_FIELDS: dict[type[Any], tuple[str, ...]] = {}


def user_from(row: Mapping[Any, Any]) -> User:
    return _build(User, row)


def token_from(row: Mapping[Any, Any]) -> ApiToken:
    return _build(ApiToken, row)


def phone_from(row: Mapping[Any, Any]) -> Phone:
    return _build(Phone, row)


def client_from(row: Mapping[Any, Any], phones: Sequence[Phone], tags: Sequence[str]) -> Client:
    return _build(
        Client,
        row,
        emails=tuple(row["emails"] or ()),
        phones=tuple(phones),
        tags=tuple(tags),
        custom_fields=dict(row["custom_fields"] or {}),
        address=Address(
            street=row["address_street"],
            postcode=row["address_postcode"],
            city=row["address_city"],
            region=row["address_region"],
            country=row["address_country"],
        ),
    )


def lead_from(row: Mapping[Any, Any], phones: Sequence[Phone]) -> Lead:
    return _build(Lead, row, emails=tuple(row["emails"] or ()), phones=tuple(phones))


def call_from(row: Mapping[Any, Any]) -> Call:
    return _build(Call, row)


def task_from(row: Mapping[Any, Any]) -> Task:
    return _build(Task, row)


def call_list_from(row: Mapping[Any, Any]) -> CallList:
    return _build(CallList, row, settings=dict(row["settings"] or {}))


def item_from(row: Mapping[Any, Any]) -> CallListItem:
    return _build(CallListItem, row)


def audit_from(row: Mapping[Any, Any]) -> AuditEntry:
    return _build(AuditEntry, row, changes=dict(row["changes"] or {}))


async def load_client(conn: AsyncConnection, client_id: uuid.UUID) -> Client | None:
    row = (
        (await conn.execute(select(m.clients).where(m.clients.c.id == client_id)))
        .mappings()
        .one_or_none()
    )
    if row is None:
        return None
    return await hydrate_client(conn, row)


async def hydrate_client(conn: AsyncConnection, row: Mapping[Any, Any]) -> Client:
    """Build a Client DTO from its row plus one round trip for phones and tags."""
    client_id = row["id"]
    children = await conn.execute(_CLIENT_CHILDREN, {"client_id": client_id})
    phones: list[Phone] = []
    tags: list[str] = []
    for kind, phone_id, value, phone_kind in children:
        if kind == "p":
            phones.append(
                Phone(
                    id=phone_id,
                    number_e164=value,
                    kind=phone_kind,
                    client_id=client_id,
                    lead_id=None,
                )
            )
        else:
            tags.append(value)
    return client_from(row, phones, sorted(tags))


async def load_lead(conn: AsyncConnection, lead_id: uuid.UUID) -> Lead | None:
    row = (
        (await conn.execute(select(m.leads).where(m.leads.c.id == lead_id)))
        .mappings()
        .one_or_none()
    )
    if row is None:
        return None
    return await hydrate_lead(conn, row)


async def hydrate_lead(conn: AsyncConnection, row: Mapping[Any, Any]) -> Lead:
    result = await conn.execute(_LEAD_PHONES, {"lead_id": row["id"]})
    return lead_from(row, [phone_from(p) for p in result.mappings()])


async def hydrate_clients(conn: AsyncConnection, rows: Sequence[Mapping[Any, Any]]) -> list[Client]:
    """:func:`hydrate_client` for many rows in two round trips (phones, tags),
    in the order of ``rows``."""
    ids = [r["id"] for r in rows]
    if not ids:
        return []
    phones: dict[uuid.UUID, list[Phone]] = {i: [] for i in ids}
    tags: dict[uuid.UUID, list[str]] = {i: [] for i in ids}
    for p in (
        await conn.execute(
            select(m.phones).where(m.phones.c.client_id.in_(ids)).order_by(m.phones.c.id)
        )
    ).mappings():
        phones[p["client_id"]].append(phone_from(p))
    for client_id, tag in await conn.execute(
        select(m.client_tags.c.client_id, m.client_tags.c.tag).where(
            m.client_tags.c.client_id.in_(ids)
        )
    ):
        tags[client_id].append(tag)
    return [client_from(r, phones[r["id"]], sorted(tags[r["id"]])) for r in rows]


async def hydrate_leads(conn: AsyncConnection, rows: Sequence[Mapping[Any, Any]]) -> list[Lead]:
    """:func:`hydrate_lead` for many rows in one round trip, in the order of ``rows``."""
    ids = [r["id"] for r in rows]
    if not ids:
        return []
    phones: dict[uuid.UUID, list[Phone]] = {i: [] for i in ids}
    for p in (
        await conn.execute(
            select(m.phones).where(m.phones.c.lead_id.in_(ids)).order_by(m.phones.c.id)
        )
    ).mappings():
        phones[p["lead_id"]].append(phone_from(p))
    return [lead_from(r, phones[r["id"]]) for r in rows]


def _client_children() -> Any:
    phones_part = select(
        literal("p").label("k"),
        m.phones.c.id,
        m.phones.c.number_e164.label("value"),
        m.phones.c.kind,
    ).where(m.phones.c.client_id == bindparam("client_id"))
    tags_part = select(
        literal("t").label("k"),
        null().label("id"),
        m.client_tags.c.tag.label("value"),
        null().label("kind"),
    ).where(m.client_tags.c.client_id == bindparam("client_id"))
    return union_all(phones_part, tags_part).order_by(literal_column("k"), literal_column("id"))


# Built once: SQLAlchemy caches the compiled form of a statement object, so reusing
# the same object skips statement construction and cache-key work on hot paths.
_CLIENT_CHILDREN = _client_children()
_LEAD_PHONES = (
    select(m.phones).where(m.phones.c.lead_id == bindparam("lead_id")).order_by(m.phones.c.id)
)
