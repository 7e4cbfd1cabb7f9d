from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.exc import StatementError

from crm_store import CallDirection, Store, new_id


def test_new_ids_are_version_7_and_increasing() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert all(i.version == 7 for i in ids)
    assert all(i.variant == "specified in RFC 4122" for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_new_ids_carry_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    stamp = new_id().int >> 80
    assert before <= stamp <= time.time_ns() // 1_000_000 + 1


async def test_times_come_back_as_aware_utc(store: Store) -> None:
    paris = timezone(timedelta(hours=1))
    at = datetime(2026, 11, 22, 10, 30, tzinfo=paris)
    call = await store.calls.create(CallDirection.INBOUND, "0612345678", "1001", at=at)
    fetched = await store.calls.get(call.id)
    assert fetched.created_at == at
    assert fetched.created_at.tzinfo is UTC
    assert fetched.created_at.hour == 9


async def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(StatementError) as caught:
        await store.calls.create(
            CallDirection.INBOUND, "0612345678", "1001", at=datetime(2026, 11, 22, 10, 30)
        )
    assert isinstance(caught.value.orig, ValueError)
