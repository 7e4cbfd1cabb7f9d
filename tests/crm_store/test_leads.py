from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from crm_store import (
    ClientKind,
    Conflict,
    Lead,
    LeadSource,
    LeadStatus,
    Role,
    Store,
)
from crm_store._models import leads as leads_table


async def test_pool_lists_unowned_unprocessed_leads_oldest_first(store: Store) -> None:
    agent = await store.users.add("ada", "Ada", Role.AGENT)
    first = await store.leads.create(first_name="First")
    await store.leads.create(first_name="Owned", owner_user_id=agent.id)
    done = await store.leads.create(first_name="Done")
    await store.leads.update_status(done.id, LeadStatus.DONE)
    second = await store.leads.create(first_name="Second")
    assert [lead.id for lead in await store.leads.pool()] == [first.id, second.id]


async def test_lead_pool_take_is_atomic(store: Store) -> None:
    ada = await store.users.add("ada", "Ada")
    bob = await store.users.add("bob", "Bob")
    lead = await store.leads.create(first_name="Prospect", phones=["0612345678"])
    results = await asyncio.gather(
        store.leads.take(lead.id, ada.id),
        store.leads.take(lead.id, bob.id),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Lead)]
    losers = [r for r in results if isinstance(r, Conflict)]
    assert len(winners) == 1
    assert len(losers) == 1
    stored = await store.leads.get(lead.id)
    assert stored.owner_user_id == winners[0].owner_user_id
    assert stored.status is LeadStatus.IN_PROGRESS
    assert await store.leads.pool() == []


async def test_unknown_caller_becomes_lead(store: Store) -> None:
    match, created = await store.leads.find_or_create_for_number(
        "06 12 34 56 78", LeadSource.INCOMING_CALL
    )
    assert created
    assert match.kind == "lead"
    assert match.lead is not None
    assert match.lead.source is LeadSource.INCOMING_CALL
    assert match.display_name == "+33 6 12 34 56 78"
    again, created_again = await store.leads.find_or_create_for_number(
        "+33612345678", LeadSource.INCOMING_CALL
    )
    assert not created_again
    assert again.id == match.id


async def test_known_client_is_returned_not_a_new_lead(store: Store) -> None:
    client = await store.clients.create(ClientKind.PERSON, last_name="Known", phones=["0612345678"])
    match, created = await store.leads.find_or_create_for_number(
        "0612345678", LeadSource.INCOMING_CALL
    )
    assert not created
    assert (match.kind, match.id) == ("client", client.id)


async def test_concurrent_find_or_create_creates_exactly_one_lead(store: Store) -> None:
    results = await asyncio.gather(
        *(
            store.leads.find_or_create_for_number("0612345678", LeadSource.INCOMING_CALL)
            for _ in range(8)
        )
    )
    assert sum(created for _, created in results) == 1
    assert len({match.id for match, _ in results}) == 1
    async with store.engine.connect() as conn:
        count = await conn.scalar(select(func.count()).select_from(leads_table))
    assert count == 1


async def test_convert_lead_to_client(store: Store) -> None:
    agent = await store.users.add("ada", "Ada")
    lead = await store.leads.create(
        first_name="Lea",
        last_name="Roux",
        company_name="Acme",
        emails=["lea@example.org"],
        phones=["0612345678"],
        owner_user_id=agent.id,
    )
    client = await store.leads.convert_to_client(lead.id)
    assert client.kind is ClientKind.PERSON
    assert client.display_name == "Lea Roux"
    assert client.emails == ("lea@example.org",)
    assert client.responsible_user_id == agent.id
    assert [p.number_e164 for p in client.phones] == ["+33612345678"]
    converted = await store.leads.get(lead.id)
    assert converted.converted_client_id == client.id
    assert converted.status is LeadStatus.DONE
    match = await store.lookup_caller("0612345678")
    assert match is not None
    assert (match.kind, match.id) == ("client", client.id)
    with pytest.raises(Conflict):
        await store.leads.convert_to_client(lead.id)


async def test_a_lead_made_from_a_number_is_named_once_and_given_to_its_namer(
    store: Store,
) -> None:
    alice = await store.users.add("alice", "Alice", Role.AGENT)
    bob = await store.users.add("bob", "Bob", Role.AGENT)
    match, _ = await store.leads.find_or_create_for_number("+33612340099", LeadSource.INCOMING_CALL)
    named = await store.leads.name_unnamed(
        match.id, first_name="Maëlle Guyot", owner_user_id=alice.id, note="wants a quote"
    )
    assert named is not None
    assert (named.display_name, named.owner_user_id, named.note) == (
        "Maëlle Guyot",
        alice.id,
        "wants a quote",
    )
    assert named.source is LeadSource.INCOMING_CALL
    found = await store.contacts.search("maelle", viewer=None, sees_all=True)
    assert [hit.lead.id for hit in found if hit.lead is not None] == [match.id]
    # Named already: left as it is, for a new lead to be made instead.
    again = await store.leads.name_unnamed(match.id, first_name="Other", owner_user_id=bob.id)
    assert again is None
    kept = await store.leads.get(match.id)
    assert (kept.display_name, kept.owner_user_id) == ("Maëlle Guyot", alice.id)
