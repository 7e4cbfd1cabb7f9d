"""The clients' workspace in the store: who sees a client, the filtered list, notes,
merging duplicates and the fields and tags admins define (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from crm_store import CallDirection, ClientKind, Conflict, PhoneKind, Role, Store, Visibility
from crm_store._types import utcnow
from crm_store.enums import CustomFieldType
from crm_store.repos.client_defs import FieldValueError, check_field_values
from crm_store.repos.clients import ClientFilter, FieldCondition


async def _names(store: Store, where: ClientFilter, **kwargs: object) -> list[str]:
    page = await store.clients.page(where, viewer=None, sees_all=True, **kwargs)  # type: ignore[arg-type]
    return [c.display_name for c in page.clients]


async def test_private_clients_are_seen_by_their_responsible_and_the_users_shared_with(
    store: Store,
) -> None:
    alice = await store.users.add("alice", "Alice", Role.AGENT)
    bob = await store.users.add("bob", "Bob", Role.AGENT)
    chloe = await store.users.add("chloe", "Chloé", Role.AGENT)
    secret = await store.clients.create(
        ClientKind.PERSON,
        first_name="Marc",
        last_name="Secret",
        phones=["0611223344"],
        responsible_user_id=alice.id,
        visibility=Visibility.PRIVATE,
        shared_with=[chloe.id],
    )
    await store.clients.create(ClientKind.PERSON, first_name="Marc", last_name="Public")
    assert await store.clients.shared_with(secret.id) == (chloe.id,)

    for who, sees in ((alice, True), (bob, False), (chloe, True)):
        page = await store.clients.page(ClientFilter(), viewer=who.id, sees_all=False)
        assert ("Marc Secret" in [c.display_name for c in page.clients]) is sees
        assert page.total == (2 if sees else 1)
        hits = await store.contacts.search("3344", viewer=who.id, sees_all=False)
        assert [h.display_name for h in hits] == (["Marc Secret"] if sees else [])
    batches = [
        b async for b in store.clients.iter_visible(ClientFilter(), viewer=bob.id, sees_all=False)
    ]
    assert [[c.display_name for c in b] for b in batches] == [["Marc Public"]]

    # Sharing is replaced as a whole, and audited.
    await store.clients.update(secret.id, shared_with=[bob.id], actor=alice.id)
    page = await store.clients.page(ClientFilter(), viewer=chloe.id, sees_all=False)
    assert [c.display_name for c in page.clients] == ["Marc Public"]
    entries = await store.audit.for_entity("client", secret.id)
    assert entries[-1].changes["shared_with"] == [str(bob.id)]


async def test_the_list_filters_sorts_and_pages(store: Store) -> None:
    alice = await store.users.add("alice", "Alice", Role.AGENT)
    await store.definitions.define_field("budget", "Budget", CustomFieldType.NUMBER)
    await store.definitions.define_field(
        "stage", "Stage", CustomFieldType.CHOICE, choices=["new", "won"]
    )
    await store.definitions.define_field("renewal", "Renewal", CustomFieldType.DATE)
    acme = await store.clients.create(ClientKind.COMPANY, name="Acme", tags=["vip"])
    ana = await store.clients.create(
        ClientKind.PERSON,
        first_name="Ana",
        last_name="Brun",
        company_id=acme.id,
        phones=[("0612345678", PhoneKind.WORK)],
        tags=["vip", "north"],
        custom_fields={"budget": 1200, "stage": "won", "renewal": "2027-03-01"},
        responsible_user_id=alice.id,
    )
    await store.clients.create(
        ClientKind.PERSON,
        first_name="Zoé",
        last_name="Abel",
        custom_fields={"budget": 300, "stage": "new"},
    )
    await store.calls.create(CallDirection.INBOUND, "+33612345678", "100", client_id=ana.id)
    await store.tasks.create("Call back", client_id=ana.id)

    everyone = ClientFilter()
    assert await _names(store, everyone) == ["Acme", "Ana Brun", "Zoé Abel"]
    assert await _names(store, everyone, sort="-name") == ["Zoé Abel", "Ana Brun", "Acme"]
    assert await _names(store, everyone, sort="-last_contact") == ["Ana Brun", "Acme", "Zoé Abel"]
    assert await _names(store, everyone, offset=1, limit=1) == ["Ana Brun"]
    assert await _names(store, ClientFilter(text="5678")) == ["Ana Brun"]
    assert await _names(store, ClientFilter(tags=("vip", "north"))) == ["Ana Brun"]
    assert await _names(store, ClientFilter(tags=("vip",))) == ["Acme", "Ana Brun"]
    assert await _names(store, ClientFilter(kind=ClientKind.COMPANY)) == ["Acme"]
    assert await _names(store, ClientFilter(responsible_user_id=alice.id)) == ["Ana Brun"]
    assert await _names(store, ClientFilter(company_id=acme.id)) == ["Ana Brun"]
    assert await _names(store, ClientFilter(has_open_tasks=True)) == ["Ana Brun"]
    assert await _names(store, ClientFilter(has_open_tasks=False)) == ["Acme", "Zoé Abel"]
    now = utcnow()
    recent = ClientFilter(contact_from=now - timedelta(hours=1))
    assert await _names(store, recent) == ["Ana Brun"]
    assert await _names(store, ClientFilter(contact_until=now - timedelta(hours=1))) == []
    assert await _names(store, ClientFilter(created_until=now - timedelta(days=1))) == []

    def field(key: str, kind: CustomFieldType, op: str, value: str | float) -> ClientFilter:
        return ClientFilter(fields=(FieldCondition(key, kind, op, value),))  # type: ignore[arg-type]

    assert await _names(store, field("budget", CustomFieldType.NUMBER, "ge", 500)) == ["Ana Brun"]
    assert await _names(store, field("budget", CustomFieldType.NUMBER, "le", 500)) == ["Zoé Abel"]
    assert await _names(store, field("stage", CustomFieldType.CHOICE, "eq", "new")) == ["Zoé Abel"]
    renewal = field("renewal", CustomFieldType.DATE, "ge", "2027-01-01")
    assert await _names(store, renewal) == ["Ana Brun"]

    page = await store.clients.page(everyone, viewer=None, sees_all=True)
    assert page.total == 3
    assert page.open_tasks == {ana.id: 1}
    assert set(page.last_contact) == {ana.id}


async def test_merge_keeps_phones_tags_and_history(store: Store) -> None:
    keep = await store.clients.create(
        ClientKind.PERSON,
        first_name="Paul",
        last_name="Martin",
        phones=["0611111111"],
        tags=["vip"],
        emails=["paul@example.com"],
    )
    drop = await store.clients.create(
        ClientKind.PERSON,
        first_name="Paul",
        last_name="Martin",
        phones=["0611111111", ("0622222222", PhoneKind.HOME)],
        tags=["north"],
        emails=["pm@example.org"],
        website="https://martin.example",
        custom_fields={"budget": 5},
    )
    call = await store.calls.create(
        CallDirection.OUTBOUND, "100", "+33622222222", client_id=drop.id
    )
    await store.clients.add_note(drop.id, "Met at the fair", author=None)
    merged = await store.clients.merge(keep.id, drop.id)
    assert [p.number_e164 for p in merged.phones] == ["+33611111111", "+33622222222"]
    assert merged.tags == ("north", "vip")
    assert merged.emails == ("paul@example.com", "pm@example.org")
    assert merged.website == "https://martin.example"
    assert merged.custom_fields == {"budget": 5}
    page = await store.contacts.history(client_id=keep.id)
    assert [e.call.id for e in page.entries] == [call.id]
    assert [n.text for n in await store.clients.notes(keep.id)] == ["Met at the fair"]
    assert [
        h.display_name for h in await store.contacts.search("2222", viewer=None, sees_all=True)
    ] == ["Paul Martin"]
    actions = [e.action for e in await store.audit.for_entity("client", keep.id)]
    assert actions[-1] == "merge"
    with pytest.raises(ValueError, match="itself"):
        await store.clients.merge(keep.id, keep.id)


async def test_definitions_check_values(store: Store) -> None:
    await store.definitions.define_field("size", "Size", CustomFieldType.NUMBER)
    await store.definitions.define_field("tier", "Tier", CustomFieldType.CHOICE, choices=["a", "b"])
    with pytest.raises(Conflict):
        await store.definitions.define_field("size", "Again", CustomFieldType.TEXT)
    with pytest.raises(ValueError, match="key"):
        await store.definitions.define_field("Bad Key", "x", CustomFieldType.TEXT)
    with pytest.raises(ValueError, match="choices"):
        await store.definitions.define_field("tier2", "x", CustomFieldType.CHOICE)
    defs = await store.definitions.fields()
    assert [d.key for d in defs] == ["size", "tier"]
    assert check_field_values(defs, {"size": "12", "tier": "b"}) == {"size": 12, "tier": "b"}
    for bad in ({"size": "many"}, {"tier": "c"}, {"nope": "1"}):
        with pytest.raises(FieldValueError):
            check_field_values(defs, bad)
    assert await store.definitions.define_tag(" vip ") == "vip"
    assert await store.definitions.define_tag("vip") == "vip"
    assert await store.definitions.tags() == ["vip"]
