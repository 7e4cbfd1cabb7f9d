from __future__ import annotations

import pytest

from crm_store import ClientKind, Conflict, LeadSource, Role, Store


async def test_mutations_write_audit_rows(store: Store) -> None:
    admin = await store.users.add("root", "Admin", Role.ADMIN)
    client = await store.clients.create(
        ClientKind.PERSON, last_name="Audited", phones=["0612345678"], actor=admin.id
    )
    await store.clients.add_tag(client.id, "vip", actor=admin.id)
    await store.clients.update(client.id, first_name="Max", actor=admin.id)

    entries = await store.audit.for_entity("client", client.id)
    assert [e.action for e in entries] == ["create", "add_tag", "update"]
    assert {e.actor for e in entries} == {str(admin.id)}
    assert entries[0].changes["phones"] == ["+33612345678"]
    assert entries[2].changes == {"first_name": "Max"}

    [user_entry] = await store.audit.for_entity("user", admin.id)
    assert (user_entry.action, user_entry.actor) == ("create", "system")


async def test_failed_mutation_leaves_no_audit_row(store: Store) -> None:
    await store.users.add("ada", "Ada")
    before = await store.audit.recent()
    with pytest.raises(Conflict):
        await store.users.add("ada", "Ada again")
    assert await store.audit.recent() == before


async def test_lead_created_for_caller_is_audited_as_system(store: Store) -> None:
    match, _ = await store.leads.find_or_create_for_number("0612345678", LeadSource.INCOMING_CALL)
    [entry] = await store.audit.for_entity("lead", match.id)
    assert (entry.action, entry.actor) == ("create", "system")
    assert entry.changes["source"] == "incoming_call"
