"""Caller lookup: which client or lead owns a phone number.

The rule, applied by one indexed query on ``phones.number_e164``:

1. A client wins over a lead (a converted lead keeps its numbers, and the client it
   became is the better answer). Among several clients sharing a number (a company
   switchboard, a family landline) the oldest client wins, so the answer is stable.
2. Among leads, open leads (``unprocessed``, ``in_progress``) win over closed ones,
   and the most recently created wins among equals.

The whole answer, including the owner's phones and tags, comes back from a single
statement: every statement through an async driver costs several hand-offs between
the event loop and the driver, which dominate the latency of an indexed lookup (see
docs/performance.md). The owner's phones and tags are aggregated into JSON by
correlated subqueries that only run for the one winning row.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import JSON, Dialect, bindparam, case, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from . import _models as m
from ._base import client_from, lead_from
from ._engine import BUSY_TIMEOUT_MS
from .dto import CallerMatch, Phone
from .enums import LeadStatus, PhoneKind

__all__ = ["LOOKUP", "SqliteLookup", "lookup_e164"]


class JsonRows(FunctionElement[Any]):
    """Aggregate: a JSON array with one JSON array per row (``[]`` or NULL if none)."""

    type = JSON()
    inherit_cache = True


@compiles(JsonRows, "sqlite")
def _json_rows_sqlite(element: JsonRows, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_group_array(json_array({compiler.process(element.clauses, **kw)}))"


@compiles(JsonRows, "postgresql")
def _json_rows_postgresql(element: JsonRows, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_agg(json_build_array({compiler.process(element.clauses, **kw)}))"


_p, _c, _l = m.phones, m.clients, m.leads
_owned = m.phones.alias("owned")
_tags = m.client_tags

_CLIENT_KEYS = tuple((col.name, f"c_{col.name}") for col in _c.c)
_LEAD_KEYS = tuple((col.name, f"l_{col.name}") for col in _l.c)

# One statement object for the process: SQLAlchemy's compiled cache is keyed on it, so
# the hot path never rebuilds or recompiles SQL.
LOOKUP = (
    select(
        _p.c.client_id.label("p_client_id"),
        *(col.label(key) for col, (_, key) in zip(_c.c, _CLIENT_KEYS, strict=True)),
        *(col.label(key) for col, (_, key) in zip(_l.c, _LEAD_KEYS, strict=True)),
        select(JsonRows(_owned.c.id, _owned.c.number_e164, _owned.c.kind))
        .where(_owned.c.client_id == _c.c.id)
        .scalar_subquery()
        .label("c_phones"),
        select(JsonRows(_tags.c.tag))
        .where(_tags.c.client_id == _c.c.id)
        .scalar_subquery()
        .label("c_tags"),
        select(JsonRows(_owned.c.id, _owned.c.number_e164, _owned.c.kind))
        .where(_owned.c.lead_id == _l.c.id)
        .scalar_subquery()
        .label("l_phones"),
    )
    .select_from(_p.outerjoin(_c, _c.c.id == _p.c.client_id).outerjoin(_l, _l.c.id == _p.c.lead_id))
    .where(_p.c.number_e164 == bindparam("number"))
    .order_by(
        case((_p.c.client_id.is_not(None), 0), else_=1),
        _c.c.created_at.asc(),
        # Two equality branches rather than IN: an IN list is an "expanding"
        # parameter that SQLAlchemy re-renders on every execution.
        case(
            (_l.c.status == LeadStatus.UNPROCESSED, 0),
            (_l.c.status == LeadStatus.IN_PROGRESS, 0),
            else_=1,
        ),
        _l.c.created_at.desc(),
    )
    .limit(1)
)


def _sub(row: Mapping[Any, Any], keys: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return {name: row[key] for name, key in keys}


def _phones(
    rows: list[list[str]] | None,
    *,
    client_id: uuid.UUID | None = None,
    lead_id: uuid.UUID | None = None,
) -> list[Phone]:
    phones = [
        Phone(
            id=uuid.UUID(phone_id),
            number_e164=number,
            kind=PhoneKind(kind),
            client_id=client_id,
            lead_id=lead_id,
        )
        for phone_id, number, kind in rows or ()
    ]
    phones.sort(key=lambda p: p.id)  # ids are time-ordered: creation order
    return phones


async def lookup_e164(conn: AsyncConnection, e164: str) -> CallerMatch | None:
    """Return the owner of the already-normalised number ``e164``, or ``None``."""
    row = (await conn.execute(LOOKUP, {"number": e164})).mappings().first()
    return None if row is None else _match(row, e164)


def lookup_e164_sync(conn: Connection, e164: str) -> CallerMatch | None:
    """:func:`lookup_e164` inside a synchronous transaction."""
    row = conn.execute(LOOKUP, {"number": e164}).mappings().first()
    return None if row is None else _match(row, e164)


class SqliteLookup:
    """:data:`LOOKUP` on plain ``sqlite3`` connections, one per reader thread.

    Through aiosqlite a statement costs several hand-offs between the event loop
    and the driver's thread (cursor, execute, fetch, close, pool reset), and even a
    synchronous SQLAlchemy execution spends most of a lookup's time in per-call
    bookkeeping. Here the statement is compiled once, its constant parameters and
    SQLAlchemy's own type processors (UUIDs, UTC datetimes, enums, JSON) are
    resolved once, and :meth:`lookup` runs in a reader thread: the loop pays one
    hand-off, the thread one ``execute``. The connections are ``query_only``, so a
    stray write from here fails instead of bypassing the store's transactions.
    """

    def __init__(self, path: str, dialect: Dialect) -> None:
        self._path = path
        compiled = LOOKUP.compile(dialect=dialect)
        self._sql = str(compiled)
        order = compiled.positiontup or []
        self._number_at = order.index("number")
        params: list[Any] = []
        for name in order:
            bind = compiled.binds[name]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            params.append(process(bind.value) if process else bind.value)
        self._params = params
        self._keys = tuple(LOOKUP.selected_columns.keys())
        self._processors = tuple(
            col.type.dialect_impl(dialect).result_processor(dialect, None)
            for col in LOOKUP.selected_columns
        )
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread=False only so close() may run on another thread;
            # each connection is used by the one thread that opened it.
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        return conn

    def lookup(self, e164: str) -> CallerMatch | None:
        """Blocking: the owner of ``e164``. Call it from a reader thread."""
        params = list(self._params)
        params[self._number_at] = e164
        raw = self._connection().execute(self._sql, params).fetchone()
        if raw is None:
            return None
        row = {
            key: process(value) if process else value
            for key, process, value in zip(self._keys, self._processors, raw, strict=True)
        }
        return _match(row, e164)

    def close(self) -> None:
        """Close every thread's connection; call once the threads are done."""
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()


def _match(row: Mapping[Any, Any], e164: str) -> CallerMatch:
    if row["p_client_id"] is not None:
        client_id = row["c_id"]
        tags = sorted(tag for (tag,) in row["c_tags"] or ())
        client = client_from(
            _sub(row, _CLIENT_KEYS), _phones(row["c_phones"], client_id=client_id), tags
        )
        return CallerMatch(
            kind="client",
            id=client.id,
            display_name=client.display_name,
            phone=e164,
            client=client,
        )
    lead_id = row["l_id"]
    lead = lead_from(_sub(row, _LEAD_KEYS), _phones(row["l_phones"], lead_id=lead_id))
    return CallerMatch(
        kind="lead", id=lead.id, display_name=lead.display_name, phone=e164, lead=lead
    )
