"""A claim left behind by a dialer killed between claim and dial comes back to the
queue after its lease, and its late claimer can no longer dial it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from crm_store import CallListItemState, Conflict, Store

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


async def test_a_claim_older_than_its_lease_is_taken_over_and_the_first_claimer_refused(
    store: Store,
) -> None:
    east = (await store.users.add("east", "East")).id
    west = (await store.users.add("west", "West")).id
    call_list, _ = await store.call_lists.create_list("l", None, ["0612345678"])
    left = await store.call_lists.claim_next(call_list.id, east, now=NOW, lease=LEASE)
    assert left is not None

    # Within the lease the claim holds, and the other dialer knows when it may end.
    early = NOW + LEASE - timedelta(seconds=1)
    assert await store.call_lists.claim_next(call_list.id, west, now=early, lease=LEASE) is None
    assert await store.dialer.oldest_claim(call_list.id) == NOW
    assert await store.dialer.next_due(call_list.id) is None

    late = NOW + LEASE + timedelta(seconds=1)
    taken = await store.call_lists.claim_next(call_list.id, west, now=late, lease=LEASE)
    assert taken is not None
    assert (taken.id, taken.state, taken.claimed_by) == (
        left.id,
        CallListItemState.CLAIMED,
        west,
    )

    attempt = {
        "from_number": "2001",
        "to_number": "+33612345678",
        "client_id": None,
        "lead_id": None,
        "origin": "paris",
        "worker_id": "w1",
        "line": "2001",
    }
    with pytest.raises(Conflict, match="not claimed by this agent"):
        await store.dialer.start_attempt(left.id, agent_user_id=east, **attempt)
    call = await store.dialer.start_attempt(left.id, agent_user_id=west, **attempt)
    assert call.dialer_item_id == left.id
    assert await store.dialer.oldest_claim(call_list.id) is None


async def test_without_a_lease_a_claim_is_never_taken_over(store: Store) -> None:
    call_list, _ = await store.call_lists.create_list("l", None, ["0612345678"])
    assert await store.call_lists.claim_next(call_list.id, None, now=NOW) is not None
    much_later = NOW + timedelta(days=1)
    assert await store.call_lists.claim_next(call_list.id, None, now=much_later) is None
