"""The store under real faults: a full disk under SQLite, PostgreSQL stopped mid-call.

Calls in progress must go on: their record steps are queued while the database is
away and written when it returns, in order, each once. The faults are real: the
SQLite file lives on a tmpfs that the test fills up, and the PostgreSQL server is a
private cluster that the test stops and starts (never the shared one).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from crm_store import (
    Call,
    CallDirection,
    CallEndReason,
    Store,
    StoreUnavailable,
    open_store,
    upgrade,
)
from crm_store._journal import JournalStep
from crm_store.repos.calls import _replay_create, _replay_step

from .faults import PrivatePostgres, SmallFilesystem, running_private_postgres

OUTAGE_SECONDS = 30.0


async def _wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def _at(seconds: int) -> datetime:
    # Whole milliseconds: both backends keep them exactly.
    base = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)
    return base + timedelta(seconds=seconds)


async def _audit_actions(store: Store, call_id: uuid.UUID) -> Counter[str]:
    return Counter(e.action for e in await store.audit.for_entity("call", call_id))


async def _call_steps_through_an_outage(
    store: Store, begin_outage: Callable[[], None], end_outage: Callable[[], None]
) -> tuple[Call, Call]:
    """A call rings before the outage, is answered and ends during it, and a second
    call is created and ends during it; returns both as finally stored."""
    first = await store.calls.create(
        CallDirection.OUTBOUND, "2001", "0612345678", at=_at(0), origin="site-a"
    )
    await store.calls.mark_ringing(first.id, at=_at(1))

    begin_outage()
    answered = await store.calls.mark_answered(first.id, at=_at(2))
    assert answered.answered_at == _at(2)
    assert answered.ringing_at == _at(1)
    health = await store.check_health()
    assert health.degraded
    assert health.pending == 1
    assert health.reason
    second = await store.calls.create(
        CallDirection.INBOUND, "0698765432", "2001", at=_at(3), origin="site-a"
    )
    assert second.from_number == "+33698765432"
    await store.calls.mark_answered(second.id, at=_at(4))
    ended = await store.calls.end(first.id, CallEndReason.COMPLETED, at=_at(5))
    assert ended.end_reason is CallEndReason.COMPLETED
    await store.calls.end(second.id, CallEndReason.CANCELLED, at=_at(6))
    assert store.journal.pending == 5

    end_outage()
    await _wait_until(lambda: store.journal.pending == 0, timeout=60, what="the queue to drain")
    assert not (await store.check_health()).degraded
    assert store.journal.written == 5
    assert store.journal.dropped == 0
    return await store.calls.get(first.id), await store.calls.get(second.id)


def _assert_written_once_in_order(first: Call, second: Call) -> None:
    assert (first.ringing_at, first.answered_at, first.ended_at) == (_at(1), _at(2), _at(5))
    assert first.end_reason is CallEndReason.COMPLETED
    assert (second.created_at, second.answered_at, second.ended_at) == (_at(3), _at(4), _at(6))
    assert second.end_reason is CallEndReason.CANCELLED


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallFilesystem]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = SmallFilesystem(tmp_path / "disk", 16 * 1024 * 1024)
    try:
        yield disk
    finally:
        disk.close()


async def test_call_steps_survive_a_full_sqlite_disk_and_land_once_in_order(
    small_disk: SmallFilesystem,
) -> None:
    url = f"sqlite+aiosqlite:///{small_disk.path / 'crm.sqlite3'}"
    await upgrade(url)
    async with open_store(url, default_region="FR") as store:
        first, second = await _call_steps_through_an_outage(store, small_disk.fill, small_disk.free)
        _assert_written_once_in_order(first, second)
        assert await _audit_actions(store, first.id) == Counter(
            create=1, ringing=1, answered=1, end=1
        )
        assert await _audit_actions(store, second.id) == Counter(create=1, answered=1, end=1)


async def test_new_calls_are_refused_once_the_journal_is_full(
    small_disk: SmallFilesystem,
) -> None:
    url = f"sqlite+aiosqlite:///{small_disk.path / 'crm.sqlite3'}"
    await upgrade(url)
    async with open_store(url, default_region="FR") as store:
        store.journal.max_pending = 2
        carried = await store.calls.create(CallDirection.OUTBOUND, "2001", "0612345678")
        small_disk.fill()
        ringing = await store.calls.mark_ringing(carried.id)
        assert ringing.ringing_at is not None
        await store.calls.create(CallDirection.OUTBOUND, "2001", "0612345679")
        with pytest.raises(StoreUnavailable, match="new calls are refused"):
            await store.calls.create(CallDirection.OUTBOUND, "2001", "0612345670")
        # A call already carried still has its steps kept.
        await store.calls.end(carried.id, CallEndReason.COMPLETED)
        assert store.journal.pending == 3
        small_disk.free()
        await _wait_until(lambda: store.journal.pending == 0, timeout=30, what="the queue")
        assert len(await store.calls.list_recent()) == 2
        assert (await store.calls.get(carried.id)).end_reason is CallEndReason.COMPLETED


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    with running_private_postgres() as server:
        yield server


@pytest.fixture
async def pg_store(private_postgres: PrivatePostgres) -> AsyncIterator[Store]:
    await upgrade(private_postgres.url())
    async with open_store(private_postgres.url(), default_region="FR", pool_size=2) as store:
        yield store


async def test_call_steps_survive_postgres_stopped_for_30_s_and_land_once_in_order(
    private_postgres: PrivatePostgres, pg_store: Store
) -> None:
    loop = asyncio.get_running_loop()
    stopped_at: list[float] = []

    def stop() -> None:
        private_postgres.stop()
        stopped_at.append(time.monotonic())

    def start() -> None:
        private_postgres.start()

    first = await pg_store.calls.create(
        CallDirection.OUTBOUND, "2001", "0612345678", at=_at(0), origin="site-a"
    )
    await pg_store.calls.mark_ringing(first.id, at=_at(1))
    await loop.run_in_executor(None, stop)
    answered = await pg_store.calls.mark_answered(first.id, at=_at(2))
    assert answered.answered_at == _at(2)
    second = await pg_store.calls.create(
        CallDirection.INBOUND, "0698765432", "2001", at=_at(3), origin="site-a"
    )
    await pg_store.calls.mark_answered(second.id, at=_at(4))
    await pg_store.calls.end(first.id, CallEndReason.COMPLETED, at=_at(5))
    await pg_store.calls.end(second.id, CallEndReason.CANCELLED, at=_at(6))
    with pytest.raises(StoreUnavailable):
        await pg_store.calls.get(first.id)
    # The server stays down for the whole outage; the store says so all along and
    # its drainer keeps retrying without losing or reordering anything.
    while time.monotonic() - stopped_at[0] < OUTAGE_SECONDS:
        health = await pg_store.check_health(timeout=2)
        assert health.degraded
        assert health.pending == 5
        await asyncio.sleep(1)
    await loop.run_in_executor(None, start)
    await _wait_until(lambda: pg_store.journal.pending == 0, timeout=60, what="the queue")
    assert not (await pg_store.check_health()).degraded
    assert (pg_store.journal.written, pg_store.journal.dropped) == (5, 0)
    _assert_written_once_in_order(
        await pg_store.calls.get(first.id), await pg_store.calls.get(second.id)
    )
    assert await _audit_actions(pg_store, first.id) == Counter(
        create=1, ringing=1, answered=1, end=1
    )
    assert await _audit_actions(pg_store, second.id) == Counter(create=1, answered=1, end=1)


async def test_a_step_replayed_after_its_write_landed_writes_nothing_twice(
    small_disk: SmallFilesystem,
) -> None:
    # The write of a step can commit while its answer is lost (a connection cut at
    # the wrong moment): the step is then queued and replayed. Replaying is keyed by
    # the call and the step, so the second write finds the row as it should be.
    url = f"sqlite+aiosqlite:///{small_disk.path / 'crm.sqlite3'}"
    await upgrade(url)
    async with open_store(url, default_region="FR") as store:
        call = await store.calls.create(CallDirection.OUTBOUND, "2001", "0612345678", at=_at(0))
        await store.calls.mark_ringing(call.id, at=_at(1))
        await store.calls.end(call.id, CallEndReason.COMPLETED, at=_at(2))
        small_disk.fill()
        # Queued behind a write that fails, then replayed once space is back.
        later = await store.calls.create(CallDirection.OUTBOUND, "2001", "0612345679", at=_at(3))
        for step in _replays_of_landed_writes(call.id):
            store.journal.queue(step)
        small_disk.free()
        await _wait_until(lambda: store.journal.pending == 0, timeout=30, what="the queue")
        assert store.journal.dropped == 0
        stored = await store.calls.get(call.id)
        assert (stored.ringing_at, stored.ended_at) == (_at(1), _at(2))
        assert await _audit_actions(store, call.id) == Counter(create=1, ringing=1, end=1)
        assert (await store.calls.get(later.id)).created_at == _at(3)


def _replays_of_landed_writes(call_id: uuid.UUID) -> list[JournalStep]:
    """The journal steps the repository queues for the three writes above."""
    ended = {"ended_at": _at(2), "end_reason": CallEndReason.COMPLETED}
    return [
        JournalStep(call_id, "create", partial(_replay_create, {"id": call_id}, {}, None)),
        JournalStep(
            call_id, "ringing", partial(_replay_step, call_id, "ringing", {"ringing_at": _at(1)})
        ),
        JournalStep(call_id, "end", partial(_replay_step, call_id, "end", ended)),
    ]
