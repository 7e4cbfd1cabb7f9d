"""The write path of a call's critical steps (``Database.run_write``).

On a SQLite file it runs on the store's writer thread (one hand-off per
transaction), on PostgreSQL on the async engine; both must commit a transaction
whole or not at all, and a caller cancelled mid-way must not lose a write that
was already under way.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import Connection

from crm_store import CallDirection, Conflict, LeadSource, Store, open_store, upgrade
from crm_store._base import audit_sync


class _Boom(Exception):
    pass


async def test_a_failing_transaction_leaves_nothing(store: Store) -> None:
    entity = str(uuid.uuid4())

    def half(conn: Connection) -> None:
        audit_sync(conn, actor=None, entity_type="test", entity_id=entity, action="one")
        raise _Boom

    with pytest.raises(_Boom):
        await store._db.run_write(half)
    assert await store.audit.for_entity("test", entity) == []

    def whole(conn: Connection) -> str:
        audit_sync(conn, actor=None, entity_type="test", entity_id=entity, action="one")
        audit_sync(conn, actor=None, entity_type="test", entity_id=entity, action="two")
        return "done"

    assert await store._db.run_write(whole) == "done"
    entries = await store.audit.for_entity("test", entity)
    assert sorted(e.action for e in entries) == ["one", "two"]


async def test_a_call_announced_under_an_id_is_recorded_under_it_once(store: Store) -> None:
    call_id = uuid.uuid4()
    call = await store.calls.create(CallDirection.INBOUND, "+33612345678", "100", call_id=call_id)
    assert call.id == call_id
    assert (await store.calls.get(call_id)).from_number == "+33612345678"
    with pytest.raises(Conflict):
        await store.calls.create(CallDirection.INBOUND, "+33612345678", "100", call_id=call_id)
    assert [e.action for e in await store.audit.for_entity("call", call_id)] == ["create"]


async def test_a_new_lead_is_returned_as_stored(store: Store) -> None:
    match, created = await store.leads.find_or_create_for_number(
        "06 12 34 56 79", LeadSource.INCOMING_CALL
    )
    assert created
    assert match.lead is not None
    # What the write returned without reading back is what a read gives.
    assert await store.leads.get(match.id) == match.lead
    assert await store.lookup_caller("+33612345679") == match


async def test_a_cancelled_caller_does_not_undo_a_write_under_way(tmp_path: Path) -> None:
    # SQLite's writer thread only: on PostgreSQL a cancelled transaction rolls back.
    url = f"sqlite+aiosqlite:///{tmp_path / 'writer.sqlite3'}"
    await upgrade(url)
    entity = str(uuid.uuid4())
    started, release = threading.Event(), threading.Event()

    def slow(conn: Connection) -> None:
        audit_sync(conn, actor=None, entity_type="test", entity_id=entity, action="kept")
        started.set()
        release.wait(10)

    async with open_store(url) as store:
        task = asyncio.create_task(store._db.run_write(slow))
        assert await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        # The next transaction on the writer thread runs after it: it was committed.
        assert await store._db.run_write(lambda conn: "after") == "after"
        assert [e.action for e in await store.audit.for_entity("test", entity)] == ["kept"]
