"""Contact search terms follow every write that changes what is searched."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import insert, select

from crm_store import ClientKind, Store, open_store, upgrade
from crm_store import _models as m
from crm_store._types import utcnow
from crm_store.ids import new_id


async def _names(store: Store, text: str) -> list[str]:
    hits = await store.contacts.search(text, viewer=None, sees_all=True)
    return [h.display_name for h in hits]


async def test_search_follows_updates_phones_conversion_and_deletion(store: Store) -> None:
    client = await store.clients.create(
        ClientKind.PERSON, first_name="Hélène", last_name="Garnier", phones=["0612345678"]
    )
    assert await _names(store, "helene") == ["Hélène Garnier"]
    assert await _names(store, "GARN") == ["Hélène Garnier"]
    assert await _names(store, "345 67") == ["Hélène Garnier"]
    assert await _names(store, "12") == []  # fewer than three digits: no phone search

    await store.clients.update(client.id, last_name="Rousseau")
    assert await _names(store, "garnier") == []
    assert await _names(store, "rousseau helene") == ["Hélène Rousseau"]

    phone = await store.clients.add_phone(client.id, "+33 4 91 55 66 77")
    assert await _names(store, "556677") == ["Hélène Rousseau"]
    await store.clients.remove_phone(phone.id)
    assert await _names(store, "556677") == []

    lead = await store.leads.create(
        company_name="Transports Morel", emails=["contact@morel-transports.example"]
    )
    assert await _names(store, "morel-transports") == ["Transports Morel"]
    assert await _names(store, "contact@morel") == ["Transports Morel"]
    converted = await store.leads.convert_to_client(lead.id)
    kinds = [h.kind for h in await store.contacts.search("morel", viewer=None, sees_all=True)]
    assert sorted(kinds) == ["client", "lead"]

    await store.clients.delete(converted.id)
    await store.clients.delete(client.id)
    async with store.engine.connect() as conn:
        owners = (await conn.execute(select(m.search_terms.c.client_id))).scalars().all()
    assert set(owners) == {None}


async def test_upgrade_indexes_the_contacts_already_stored(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}"
    await upgrade(url, "0004")
    async with open_store(url) as store:
        client_id = new_id()
        now = utcnow()
        async with store.engine.begin() as conn:
            await conn.execute(
                insert(m.clients),
                [
                    {
                        "id": client_id,
                        "kind": "company",
                        "company_name": "Atelier Vidal",
                        "display_name": "Atelier Vidal",
                        "emails": ["vidal@atelier.example"],
                        "custom_fields": {},
                        "visibility": "shared",
                        "created_at": now,
                        "updated_at": now,
                    }
                ],
            )
            await conn.execute(
                insert(m.phones),
                [
                    {
                        "id": new_id(),
                        "number_e164": "+33612345678",
                        "kind": "work",
                        "client_id": client_id,
                    }
                ],
            )
    await upgrade(url)
    async with open_store(url) as store:
        assert await _names(store, "vidal") == ["Atelier Vidal"]
        assert await _names(store, "2345") == ["Atelier Vidal"]
