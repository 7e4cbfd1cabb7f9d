"""Clients and leads imported from spreadsheets: every bad row reported before
anything is written, duplicates skipped, updated or created, one transaction, undo."""

from __future__ import annotations

import pytest
from sqlalchemy import Table, func, select

from crm_store import ClientKind, Conflict, Store
from crm_store import _models as m
from crm_store.contact_import import check_mapping, read_drafts, suggest_mapping
from crm_store.importing import ImportRejected, read_table

from ._import_files import cyrillic_clients


async def _count(store: Store, table: Table) -> int:
    async with store.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


async def test_cyrillic_windows_1251_file_is_checked_whole_then_imported_and_undone(
    store: Store,
) -> None:
    sheet = cyrillic_clients(1000)
    table = read_table(sheet.data)
    assert (table.encoding, table.delimiter) == ("windows-1251", ";")
    header = table.rows[0][1]
    assert header[0] == "Фамилия"
    mapping = suggest_mapping(header)
    assert mapping == {0: "last_name", 1: "first_name", 2: "phone", 3: "email", 4: "city"}
    assert check_mapping(mapping, table.width, "clients") == []
    drafts, errors = read_drafts(table, mapping, region=store.region)
    assert {e.line: e.message for e in errors}.keys() == sheet.bad.keys()
    reasons = {e.line: e.message for e in errors}
    for line, kind in sheet.bad.items():
        assert reasons[line].startswith(
            {"phone": "phone '12-34'", "name": "no name", "email": "email"}[kind]
        ), reasons[line]
    assert len(drafts) == sheet.good == 997
    # Nothing is written by checking or planning.
    plan = await store.imports.plan("clients", drafts, "skip")
    assert (len(plan.create), len(plan.update), len(plan.skip)) == (997, 0, 0)
    assert await _count(store, m.clients) == 0

    outcome = await store.imports.run("clients", drafts, "skip", filename="base.csv", rows=1000)
    assert (outcome.record.created, outcome.record.skipped) == (997, 0)
    assert await _count(store, m.clients) == 997
    two_phones = [p for p in sheet.phones if len(p) == 2]
    assert await _count(store, m.phones) == 997 + len(two_phones)
    # Both numbers of a multi-phone cell reach the same client, searchable by digits.
    first, second = two_phones[5]
    match = await store.lookup_caller(second)
    assert match is not None
    assert match.client is not None
    assert {p.number_e164 for p in match.client.phones} == {first, second}
    assert match.client.address.city == "Москва"
    hits = await store.contacts.search(second[-10:], viewer=None, sees_all=True)
    assert [h.client.id for h in hits if h.client] == [match.client.id]
    [record] = await store.imports.history()
    assert record.id == outcome.record.id
    assert record.undone_at is None

    # Importing the same file again finds every row a duplicate.
    again = await store.imports.plan("clients", drafts, "skip")
    assert (len(again.create), len(again.skip)) == (0, 997)

    undone = await store.imports.undo(record.id)
    assert undone.undone_at is not None
    assert await _count(store, m.clients) == 0
    assert await _count(store, m.phones) == 0
    assert await _count(store, m.search_terms) == 0
    with pytest.raises(Conflict):
        await store.imports.undo(record.id)


async def test_duplicates_are_skipped_updated_or_created_and_undo_restores_updates(
    store: Store,
) -> None:
    kept = await store.clients.create(
        ClientKind.PERSON,
        first_name="Léa",
        last_name="Roux",
        phones=["06 12 34 56 78"],
        emails=["lea@example.fr"],
        tags=["vip"],
    )
    data = (
        "name,phone,email,tags\n"
        'Léa Roux-Martin,"0612345678 / 0698765432",,client\n'
        "Paul Roux,0756223344,LEA@example.fr,\n"
        "Nouveau Client,0761334455,,\n"
        "Nouveau Bis,0761334455,,\n"
    ).encode("latin-1")
    table = read_table(data)
    assert table.encoding == "latin-1"
    mapping = suggest_mapping(table.rows[0][1])
    assert mapping == {0: "full_name", 1: "phone", 2: "email", 3: "tags"}
    drafts, errors = read_drafts(table, mapping, region="FR")
    assert errors == []

    skip = await store.imports.plan("clients", drafts, "skip")
    assert [d.line for d in skip.create] == [4]
    assert [(s.line, s.existing_id) for s in skip.skip] == [(2, kept.id), (3, kept.id), (5, None)]
    assert skip.skip[2].reason == "same phone or email as line 4"
    create = await store.imports.plan("clients", drafts, "create")
    assert len(create.create) == 4

    outcome = await store.imports.run("clients", drafts, "update")
    assert (outcome.record.created, outcome.record.updated, outcome.record.skipped) == (1, 1, 2)
    updated = await store.clients.get(kept.id)
    assert updated.display_name == "Léa Roux-Martin"
    assert {p.number_e164 for p in updated.phones} == {"+33612345678", "+33698765432"}
    assert updated.tags == ("client", "vip")
    assert await _count(store, m.clients) == 2

    await store.imports.undo(outcome.record.id)
    restored = await store.clients.get(kept.id)
    assert restored.display_name == "Léa Roux"
    assert restored.first_name == "Léa"
    assert restored.last_name == "Roux"
    assert [p.number_e164 for p in restored.phones] == ["+33612345678"]
    assert restored.tags == ("vip",)
    assert restored.emails == ("lea@example.fr",)
    assert await _count(store, m.clients) == 1
    hits = await store.contacts.search("98765432", viewer=None, sees_all=True)
    assert hits == []


async def test_leads_land_in_the_pool_with_the_import_source(store: Store) -> None:
    table = read_table(
        "Imię i nazwisko;Telefon;Notatka\nŁukasz Wałęsa;+48 512 345 678;pilne\n".encode(
            "windows-1250"
        )
    )
    assert table.encoding == "windows-1250"
    mapping = suggest_mapping(table.rows[0][1], "leads")
    assert mapping == {0: "full_name", 1: "phone", 2: "note"}
    drafts, errors = read_drafts(table, mapping, region="FR")
    assert errors == []
    await store.imports.run("leads", drafts, "skip")
    [lead] = await store.leads.pool()
    assert (lead.display_name, lead.source.value, lead.note) == ("Łukasz Wałęsa", "import", "pilne")
    assert lead.owner_user_id is None


def test_mapping_problems_are_named_by_column() -> None:
    assert check_mapping({0: "phone"}, 2, "clients") == [
        "mapping: map a column to a name (full name, first or last name) or a company"
    ]
    assert check_mapping({0: "full_name", 5: "phone", 1: "note", 2: "colour"}, 3, "clients") == [
        "1: clients have no field 'note'",
        "2: unknown field 'colour'",
        "5: the file has no column 6",
    ]
    assert check_mapping({0: "full_name", 1: "full_name"}, 2, "leads") == [
        "1: 'full_name' is already column 1"
    ]


def test_a_file_in_no_known_encoding_or_over_a_limit_is_refused_with_the_limit() -> None:
    with pytest.raises(ImportRejected) as rejected:
        read_table(b"name\n\x81\x98\n", encoding="windows-1251")
    assert [(e.line, e.message) for e in rejected.value.errors] == [(2, "not windows-1251 text")]
    from crm_store.importing import ImportLimits

    with pytest.raises(ImportRejected) as rejected:
        read_table(b"a,b,c\n1,2,3\n", limits=ImportLimits(max_columns=2))
    assert [(e.line, e.message) for e in rejected.value.errors] == [
        (1, "more than 2 columns"),
        (2, "more than 2 columns"),
    ]
