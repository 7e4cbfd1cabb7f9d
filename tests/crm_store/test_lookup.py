from __future__ import annotations

import pytest

from crm_store import ClientKind, InvalidPhone, LeadStatus, PhoneKind, Store


async def test_french_local_number_finds_same_client(store: Store) -> None:
    client = await store.clients.create(
        ClientKind.PERSON, first_name="Ada", last_name="Martin", phones=["06 12 34 56 78"]
    )
    local = await store.lookup_caller("06 12 34 56 78")
    international = await store.lookup_caller("+33612345678")
    assert local is not None
    assert international is not None
    assert local.kind == international.kind == "client"
    assert local.id == international.id == client.id
    assert local.phone == "+33612345678"
    assert local.client == client
    assert local.display_name == "Ada Martin"


async def test_lookup_finds_leads(store: Store) -> None:
    lead = await store.leads.create(first_name="Noor", phones=[("01 42 68 53 00", PhoneKind.WORK)])
    match = await store.lookup_caller("+33142685300")
    assert match is not None
    assert match.kind == "lead"
    assert match.id == lead.id
    assert match.lead == lead
    assert match.client is None


async def test_clients_win_over_leads(store: Store) -> None:
    await store.leads.create(first_name="Early lead", phones=["0612345678"])
    client = await store.clients.create(
        ClientKind.COMPANY, name="Acme", phones=["0612345678"], tags=["vip"]
    )
    await store.leads.create(first_name="Late lead", phones=["0612345678"])
    match = await store.lookup_caller("0612345678")
    assert match is not None
    assert (match.kind, match.id) == ("client", client.id)
    assert match.client is not None
    assert match.client.tags == ("vip",)


async def test_open_lead_wins_over_newer_closed_lead(store: Store) -> None:
    open_lead = await store.leads.create(first_name="Open", phones=["0612345678"])
    closed = await store.leads.create(first_name="Closed", phones=["0612345678"])
    await store.leads.update_status(closed.id, LeadStatus.UNSUITABLE)
    match = await store.lookup_caller("0612345678")
    assert match is not None
    assert match.id == open_lead.id


async def test_most_recent_open_lead_wins(store: Store) -> None:
    await store.leads.create(first_name="Older", phones=["0612345678"])
    newer = await store.leads.create(first_name="Newer", phones=["0612345678"])
    match = await store.lookup_caller("0612345678")
    assert match is not None
    assert match.id == newer.id


async def test_unknown_number_finds_nobody(store: Store) -> None:
    await store.clients.create(ClientKind.PERSON, last_name="Other", phones=["0612345678"])
    assert await store.lookup_caller("0698765432") is None


async def test_invalid_number_is_rejected_with_reason(store: Store) -> None:
    with pytest.raises(InvalidPhone) as caught:
        await store.lookup_caller("07 00 00 00 00")
    assert caught.value.reason == "not a valid number for region FR"
    with pytest.raises(InvalidPhone) as caught:
        await store.clients.create(ClientKind.PERSON, last_name="X", phones=["12"])
    assert caught.value.reason == "too short"


async def test_client_phones_tags_and_search(store: Store) -> None:
    company = await store.clients.create(ClientKind.COMPANY, name="Acme SA", tags=["b2b"])
    person = await store.clients.create(
        ClientKind.PERSON,
        first_name="Lea",
        last_name="Roux",
        company_id=company.id,
        phones=["0612345678", ("01 42 68 53 00", PhoneKind.WORK)],
        tags=["vip", "b2b"],
        timezone="Europe/Paris",
    )
    assert [p.number_e164 for p in person.phones] == ["+33612345678", "+33142685300"]
    assert person.tags == ("b2b", "vip")
    assert [c.id for c in await store.clients.with_tag("b2b")] == [company.id, person.id]
    assert [c.id for c in await store.clients.search("roux")] == [person.id]
    await store.clients.remove_phone(person.phones[0].id)
    assert await store.lookup_caller("0612345678") is None
    renamed = await store.clients.update(person.id, last_name="Roux-Blanc")
    assert renamed.display_name == "Lea Roux-Blanc"
    with pytest.raises(ValueError, match="time zone"):
        await store.clients.update(person.id, timezone="Mars/Olympus")
