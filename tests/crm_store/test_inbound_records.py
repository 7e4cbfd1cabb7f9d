"""Repository methods the inbound call service uses: the answering agent, the carrying
worker, and a lead created by a call given to the agent who answered it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from crm_store import (
    CallDirection,
    CallEndReason,
    Conflict,
    Lead,
    LeadSource,
    LeadStatus,
    NotFound,
    Store,
    new_id,
)

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


async def test_mark_answered_by_sets_the_time_and_the_agent(store: Store) -> None:
    ada = await store.users.add("ada", "Ada", extension="1001")
    call = await store.calls.create(
        CallDirection.INBOUND, "0612345678", "2100", worker_id="t/reception-2100", at=T0
    )
    assert call.agent_user_id is None
    answered = await store.calls.mark_answered_by(call.id, ada.id, T0 + timedelta(seconds=4))
    assert answered.answered_at == T0 + timedelta(seconds=4)
    assert answered.agent_user_id == ada.id
    assert await store.calls.get(call.id) == answered

    # No agent (a forwarded call): the time only.
    other = await store.calls.create(CallDirection.INBOUND, "0612345678", "2100", at=T0)
    forwarded = await store.calls.mark_answered_by(other.id, None)
    assert forwarded.answered_at is not None
    assert forwarded.agent_user_id is None

    await store.calls.end(call.id, CallEndReason.COMPLETED)
    with pytest.raises(Conflict):
        await store.calls.mark_answered_by(call.id, ada.id)
    with pytest.raises(NotFound):
        await store.calls.mark_answered_by(new_id(), ada.id)


async def test_set_worker_moves_an_open_call_and_its_crash_closes_it(store: Store) -> None:
    call = await store.calls.create(
        CallDirection.INBOUND, "0612345678", "2100", worker_id="t/reception-2100", at=T0
    )
    moved = await store.calls.set_worker(call.id, "t/agent-2001")
    assert moved.worker_id == "t/agent-2001"
    assert await store.calls.close_worker_calls("t/reception-2100") == []
    closed = await store.calls.close_worker_calls("t/agent-2001")
    assert [c.id for c in closed] == [call.id]
    assert closed[0].end_reason is CallEndReason.INTERRUPTED
    with pytest.raises(Conflict):
        await store.calls.set_worker(call.id, "t/agent-2002")
    with pytest.raises(NotFound):
        await store.calls.set_worker(new_id(), "t/agent-2002")


async def test_give_if_unowned_gives_once_and_keeps_the_status(store: Store) -> None:
    ada = await store.users.add("ada", "Ada")
    bob = await store.users.add("bob", "Bob")
    match, created = await store.leads.find_or_create_for_number(
        "0612345678", LeadSource.INCOMING_CALL
    )
    assert created
    results = await asyncio.gather(
        store.leads.give_if_unowned(match.id, ada.id),
        store.leads.give_if_unowned(match.id, bob.id),
    )
    given = [r for r in results if isinstance(r, Lead)]
    assert len(given) == 1
    assert results.count(None) == 1
    lead = await store.leads.get(match.id)
    assert lead.owner_user_id == given[0].owner_user_id
    assert lead.owner_user_id in (ada.id, bob.id)
    assert lead.status is LeadStatus.UNPROCESSED
    assert lead.source is LeadSource.INCOMING_CALL
    assert await store.leads.pool() == []  # owned: out of the pool
    entries = await store.audit.for_entity("lead", match.id)
    assert [e.action for e in entries].count("owner") == 1
    with pytest.raises(NotFound):
        await store.leads.give_if_unowned(new_id(), ada.id)
