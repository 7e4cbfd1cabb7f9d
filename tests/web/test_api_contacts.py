"""Contact search and cards through the HTTP API, with the rights of the websocket."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from crm_store import CallDirection, CallEndReason, ClientKind, Visibility
from tests.web.conftest import Env


async def _seed(env: Env) -> dict[str, str]:
    store, alice = env.store, env.users["alice"]
    shared = await store.clients.create(
        ClientKind.PERSON,
        first_name="Claire",
        last_name="Fontaine",
        emails=["claire@fontaine.example"],
        phones=["06 12 34 56 78"],
        tags=["vip"],
    )
    company = await store.clients.create(ClientKind.COMPANY, name="Boulangerie Dupont")
    private = await store.clients.create(
        ClientKind.PERSON,
        first_name="Paul",
        last_name="Secret",
        phones=["+33 6 11 22 33 44"],
        responsible_user_id=alice.id,
        visibility=Visibility.PRIVATE,
    )
    lead = await store.leads.create(first_name="Léa", last_name="Moreau", phones=["0491234567"])
    return {
        "shared": str(shared.id),
        "company": str(company.id),
        "private": str(private.id),
        "lead": str(lead.id),
    }


async def _search(env: Env, user: str, q: str) -> list[dict[str, object]]:
    reply = await env.client.get("/api/contacts/search", params={"q": q}, headers=env.auth(user))
    assert reply.status_code == 200, reply.text
    results: list[dict[str, object]] = reply.json()["results"]
    return results


async def test_search_finds_by_name_company_email_and_any_digits(env: Env) -> None:
    ids = await _seed(env)
    assert [r["id"] for r in await _search(env, "bob", "fontaine")] == [ids["shared"]]
    assert [r["id"] for r in await _search(env, "bob", "DUPONT")] == [ids["company"]]
    assert [r["id"] for r in await _search(env, "bob", "claire@")] == [ids["shared"]]
    # The last four digits of a number, and digits typed with spaces.
    assert [r["id"] for r in await _search(env, "bob", "5678")] == [ids["shared"]]
    hit = (await _search(env, "bob", "91 23"))[0]
    assert hit["id"] == ids["lead"]
    assert hit["kind"] == "lead"
    assert hit["phones"] == [{"number": "+33491234567", "kind": "mobile"}]
    full = (await _search(env, "bob", "Claire"))[0]
    assert full == {
        "kind": "client",
        "id": ids["shared"],
        "display_name": "Claire Fontaine",
        "company": None,
        "phones": [{"number": "+33612345678", "kind": "mobile"}],
        "emails": ["claire@fontaine.example"],
        "responsible": None,
    }


async def test_private_client_is_found_and_opened_only_by_its_responsible(env: Env) -> None:
    ids = await _seed(env)
    assert await _search(env, "bob", "Secret") == []
    assert await _search(env, "bob", "2233") == []
    mine = await _search(env, "alice", "Secret")
    assert [r["id"] for r in mine] == [ids["private"]]
    assert mine[0]["responsible"] == {"id": str(env.users["alice"].id), "display_name": "Alice"}
    assert [r["id"] for r in await _search(env, "sue", "Secret")] == [ids["private"]]

    refused = await env.client.get(f"/api/clients/{ids['private']}", headers=env.auth("bob"))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert "Secret" not in refused.text
    opened = await env.client.get(f"/api/clients/{ids['private']}", headers=env.auth("alice"))
    assert opened.status_code == 200
    assert opened.json()["visibility"] == "private"


async def test_search_with_sql_or_html_is_data_and_changes_nothing(env: Env) -> None:
    await _seed(env)
    before = len(await env.store.clients.search("", limit=1000))
    for q in ("'; DROP TABLE clients; --", "<script>alert(1)</script>", "%", "_", "\\"):
        results = await _search(env, "sue", q)
        assert results == [], q
    assert len(await env.store.clients.search("", limit=1000)) == before
    too_long = await env.client.get(
        "/api/contacts/search", params={"q": "x" * 101}, headers=env.auth("bob")
    )
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "bad_request"
    assert "xxxx" not in too_long.text


async def test_card_shows_tags_last_calls_and_open_tasks(env: Env) -> None:
    ids = await _seed(env)
    store, alice, bob = env.store, env.users["alice"], env.users["bob"]
    client_id = uuid.UUID(ids["shared"])
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    mine = await store.calls.create(
        CallDirection.INBOUND,
        "+33612345678",
        "2001",
        agent_user_id=alice.id,
        client_id=client_id,
        at=start,
    )
    await store.calls.mark_answered(mine.id, start + timedelta(seconds=5))
    await store.calls.end(mine.id, CallEndReason.COMPLETED, start + timedelta(seconds=65))
    theirs = await store.calls.create(
        CallDirection.OUTBOUND,
        "2002",
        "+33612345678",
        agent_user_id=bob.id,
        client_id=client_id,
        at=start + timedelta(hours=1),
    )
    await store.tasks.create(
        "Send the quote", client_id=client_id, due_at=start + timedelta(days=1)
    )
    done = await store.tasks.create("Old task", client_id=client_id)
    await store.tasks.complete(done.id)

    card = (await env.client.get(f"/api/clients/{client_id}", headers=env.auth("alice"))).json()
    assert card["tags"] == ["vip"]
    assert card["visibility"] == "shared"
    # Bob's call is not Alice's to open: not on her card either.
    assert [c["id"] for c in card["last_calls"]] == [str(mine.id)]
    assert card["last_calls"][0]["talk_seconds"] == 60
    assert card["last_calls"][0]["contact"] == {
        "kind": "client",
        "id": str(client_id),
        "display_name": "Claire Fontaine",
    }
    assert [t["title"] for t in card["open_tasks"]] == ["Send the quote"]
    sue = (await env.client.get(f"/api/clients/{client_id}", headers=env.auth("sue"))).json()
    assert [c["id"] for c in sue["last_calls"]] == [str(theirs.id), str(mine.id)]

    lead = (await env.client.get(f"/api/leads/{ids['lead']}", headers=env.auth("bob"))).json()
    assert (lead["status"], lead["source"], lead["visibility"]) == (
        "unprocessed",
        "manual",
        "shared",
    )
    missing = await env.client.get(f"/api/leads/{uuid.uuid4()}", headers=env.auth("bob"))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


async def test_create_client_and_lead(env: Env) -> None:
    made = await env.client.post(
        "/api/clients",
        json={
            "display_name": "Marc Petit",
            "phone": "06 98 76 54 32",
            "email": "marc@petit.example",
        },
        headers=env.auth("bob"),
    )
    assert made.status_code == 201, made.text
    card = made.json()
    assert card["display_name"] == "Marc Petit"
    assert card["phones"] == [{"number": "+33698765432", "kind": "mobile"}]
    assert card["responsible"]["id"] == str(env.users["bob"].id)
    assert [r["id"] for r in await _search(env, "alice", "5432")] == [card["id"]]

    lead = await env.client.post(
        "/api/leads",
        json={"name": "Nina Roux", "phone": "+33 4 91 00 00 01"},
        headers=env.auth("bob"),
    )
    assert lead.status_code == 201
    assert lead.json()["kind"] == "lead"
    assert lead.json()["status"] == "unprocessed"


async def test_bad_contact_input_is_refused_and_stores_nothing(env: Env) -> None:
    bad_phone = await env.client.post(
        "/api/clients", json={"display_name": "Bad Phone", "phone": "12ab"}, headers=env.auth("bob")
    )
    assert bad_phone.status_code == 400
    assert bad_phone.json()["error"]["code"] == "bad_request"
    huge_note = await env.client.post(
        "/api/leads", json={"name": "Long Note", "note": "x" * 10_001}, headers=env.auth("bob")
    )
    assert huge_note.status_code == 413
    assert huge_note.json()["error"]["code"] == "too_large"
    unknown_field = await env.client.post(
        "/api/clients", json={"display_name": "X", "visibility": "private"}, headers=env.auth("bob")
    )
    assert unknown_field.status_code == 400
    assert await _search(env, "sue", "Bad Phone") == []
    assert await _search(env, "sue", "Long Note") == []
    assert await env.store.clients.search("X") == []


async def test_a_person_at_a_company_shows_the_companys_name(env: Env) -> None:
    company = await env.store.clients.create(ClientKind.COMPANY, name="Atelier Roux SARL")
    person = await env.store.clients.create(
        ClientKind.PERSON, first_name="Inès", last_name="Roux", company_id=company.id
    )
    hits = {r["id"]: r["company"] for r in await _search(env, "bob", "roux")}
    assert hits == {str(person.id): "Atelier Roux SARL", str(company.id): "Atelier Roux SARL"}
    card = await env.client.get(f"/api/clients/{person.id}", headers=env.auth("bob"))
    assert card.status_code == 200, card.text
    assert card.json()["company"] == "Atelier Roux SARL"
