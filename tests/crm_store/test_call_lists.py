from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from crm_store import (
    CallDirection,
    CallEndReason,
    CallListEntry,
    CallListItem,
    CallListItemState,
    Conflict,
    Role,
    Store,
)

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def _numbers(count: int) -> list[str]:
    return [f"06 12 34 {n // 100:02d} {n % 100:02d}" for n in range(count)]


async def test_list_creation_reports_invalid_numbers_and_merges_duplicates(store: Store) -> None:
    owner = await store.users.add("sup", "Supervisor", Role.SUPERVISOR)
    call_list, report = await store.call_lists.create_list(
        "November",
        owner.id,
        [
            "06 12 34 56 78",
            "+33612345678",  # the same number written differently
            "12",
            CallListEntry("01 42 68 53 00"),
            "not a number",
            "0612345678",
        ],
    )
    assert (report.total, report.added, report.duplicates) == (6, 4, 2)
    assert report.invalid == (("12", "too short"), ("not a number", "not a number"))

    items = await store.call_lists.items(call_list.id)
    assert [(i.position, i.number_e164, i.state) for i in items] == [
        (0, "+33612345678", CallListItemState.PENDING),
        (1, None, CallListItemState.INVALID),
        (2, "+33142685300", CallListItemState.PENDING),
        (3, None, CallListItemState.INVALID),
    ]
    assert items[1].invalid_reason == "too short"
    assert items[1].raw_number == "12"


async def test_claim_next_never_hands_an_item_to_two_claimers(store: Store) -> None:
    agents = [await store.users.add(f"agent{n}", f"Agent {n}") for n in range(8)]
    call_list, _ = await store.call_lists.create_list("Big", None, _numbers(40))

    async def claimer(user_id: uuid.UUID) -> list[CallListItem]:
        claimed = []
        while (item := await store.call_lists.claim_next(call_list.id, user_id, NOW)) is not None:
            claimed.append(item)
        return claimed

    per_claimer = await asyncio.gather(*(claimer(agent.id) for agent in agents))
    claimed_ids = Counter(item.id for batch in per_claimer for item in batch)
    assert len(claimed_ids) == 40
    assert set(claimed_ids.values()) == {1}
    assert await store.call_lists.progress(call_list.id) == {CallListItemState.CLAIMED: 40}
    for agent, batch in zip(agents, per_claimer, strict=True):
        assert all(item.claimed_by == agent.id for item in batch)


async def test_claim_follows_position_and_retry_time(store: Store) -> None:
    call_list, _ = await store.call_lists.create_list("Small", None, _numbers(2))
    first = await store.call_lists.claim_next(call_list.id, None, NOW)
    assert first is not None
    assert first.position == 0
    await store.call_lists.mark_dialing(first.id)
    retry = await store.call_lists.record_result(
        first.id, CallEndReason.BUSY, None, retry_at=NOW + timedelta(minutes=30)
    )
    assert (retry.state, retry.attempts) == (CallListItemState.PENDING, 1)

    second = await store.call_lists.claim_next(call_list.id, None, NOW)
    assert second is not None
    assert second.position == 1
    assert await store.call_lists.claim_next(call_list.id, None, NOW) is None
    again = await store.call_lists.claim_next(call_list.id, None, NOW + timedelta(minutes=31))
    assert again is not None
    assert again.id == first.id


async def test_results_finish_items(store: Store) -> None:
    call_list, _ = await store.call_lists.create_list("Results", None, _numbers(2))
    answered = await store.call_lists.claim_next(call_list.id, None, NOW)
    busy = await store.call_lists.claim_next(call_list.id, None, NOW)
    assert answered is not None
    assert busy is not None
    call = await store.calls.create(
        CallDirection.OUTBOUND, "1001", "0612340000", dialer_item_id=answered.id
    )
    done = await store.call_lists.record_result(answered.id, CallEndReason.COMPLETED, call.id)
    failed = await store.call_lists.record_result(busy.id, CallEndReason.BUSY, None)
    assert (done.state, done.last_call_id, done.last_result) == (
        CallListItemState.DONE,
        call.id,
        "completed",
    )
    assert failed.state is CallListItemState.FAILED
    with pytest.raises(Conflict):
        await store.call_lists.record_result(answered.id, CallEndReason.COMPLETED, call.id)


async def test_release_claimed_returns_undialed_items_only(store: Store) -> None:
    call_list, _ = await store.call_lists.create_list("Restart", None, _numbers(3))
    dialing = await store.call_lists.claim_next(call_list.id, None, NOW)
    assert dialing is not None
    await store.call_lists.mark_dialing(dialing.id)
    await store.call_lists.claim_next(call_list.id, None, NOW)
    assert await store.call_lists.release_claimed(call_list.id) == 1
    assert await store.call_lists.progress(call_list.id) == {
        CallListItemState.DIALING: 1,
        CallListItemState.PENDING: 2,
    }
