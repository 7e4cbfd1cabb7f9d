"""The clients' workspace through the HTTP API (SQLite and PostgreSQL): the list
with its filters, create / edit / delete / merge, notes and the timeline, admins'
fields and tags, and a private client hidden from another agent everywhere."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from crm_store import (
    Address,
    CallDirection,
    CallerMatch,
    Client,
    ClientKind,
    Role,
    Visibility,
)
from sip.inbound.card import caller_card
from tests.web.conftest import Env


async def _admin(env: Env) -> dict[str, str]:
    user = await env.store.users.add("ada", "Ada", Role.ADMIN)
    _, token = await env.store.users.issue_token(user.id, label="test")
    return {"Authorization": f"Bearer {token}"}


async def _define(env: Env) -> None:
    admin = await _admin(env)
    for body in (
        {"key": "budget", "label": "Budget", "type": "number"},
        {"key": "stage", "label": "Stage", "type": "choice", "choices": ["new", "won"]},
    ):
        reply = await env.client.post("/api/client-fields", json=body, headers=admin)
        assert reply.status_code == 201, reply.text
    reply = await env.client.post("/api/client-tags", json={"name": "vip"}, headers=admin)
    assert reply.status_code == 201, reply.text


async def _list(env: Env, user: str, **params: Any) -> dict[str, Any]:
    params.setdefault("total", "true")
    reply = await env.client.get("/api/clients", params=params, headers=env.auth(user))
    assert reply.status_code == 200, reply.text
    found: dict[str, Any] = reply.json()
    return found


async def test_create_a_company_and_a_person_then_filter_edit_merge_and_delete(env: Env) -> None:
    await _define(env)
    alice = env.auth("alice")
    reply = await env.client.post(
        "/api/clients/full", json={"kind": "company", "company_name": "Acme"}, headers=alice
    )
    assert reply.status_code == 201, reply.text
    acme = reply.json()
    person = {
        "kind": "person",
        "first_name": "Ana",
        "last_name": "Brun",
        "company_id": acme["id"],
        "phones": [
            {"number": "06 12 34 56 78", "kind": "mobile"},
            {"number": "01 44 55 66 77", "kind": "work"},
        ],
        "emails": ["ana@acme.example"],
        "website": "https://acme.example",
        "address": {"street": "1 rue Haute", "city": "Lyon", "country": "FR"},
        "tags": ["vip"],
        "custom_fields": {"budget": "1200", "stage": "won"},
    }
    reply = await env.client.post("/api/clients/full", json=person, headers=alice)
    assert reply.status_code == 201, reply.text
    ana = reply.json()
    assert ana["company"] == "Acme"
    assert ana["phones"] == [
        {"number": "+33612345678", "kind": "mobile"},
        {"number": "+33144556677", "kind": "work"},
    ]
    assert ana["custom_fields"] == {"budget": 1200, "stage": "won"}
    assert ana["responsible"]["display_name"] == "Alice"
    assert ana["address"]["city"] == "Lyon"

    # The one search box: the last four digits of the second phone.
    found = await _list(env, "bob", q="6677")
    assert [c["id"] for c in found["clients"]] == [ana["id"]]
    assert found["total"] == 1
    assert [c["id"] for c in (await _list(env, "bob", tag="vip"))["clients"]] == [ana["id"]]
    assert [c["id"] for c in (await _list(env, "bob", field="budget:ge:1000"))["clients"]] == [
        ana["id"]
    ]
    assert (await _list(env, "bob", field="stage:eq:new"))["clients"] == []
    assert (await _list(env, "bob", scope="my"))["clients"] == []
    assert len((await _list(env, "alice", scope="my"))["clients"]) == 2
    assert [c["display_name"] for c in (await _list(env, "bob", sort="-name"))["clients"]] == [
        "Ana Brun",
        "Acme",
    ]
    assert [c["display_name"] for c in (await _list(env, "bob", kind="company"))["clients"]] == [
        "Acme"
    ]
    page = await _list(env, "bob", per_page=1, page=2)
    assert [c["display_name"] for c in page["clients"]] == ["Ana Brun"]
    assert (page["total"], page["more"]) == (2, False)
    page = await _list(env, "bob", per_page=1, total="false")
    assert (page["total"], page["more"]) == (None, True)

    # Edit: a field, the phones; bad input names its field and changes nothing.
    reply = await env.client.patch(
        f"/api/clients/{ana['id']}",
        json={"last_name": "Brun-Roux", "phones": [{"number": "0612345678", "kind": "home"}]},
        headers=alice,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["display_name"] == "Ana Brun-Roux"
    assert reply.json()["phones"] == [{"number": "+33612345678", "kind": "home"}]
    for bad, path in (
        ({"phones": [{"number": "12ab", "kind": "home"}]}, "phones.0.number"),
        ({"tags": ["unknown"]}, "tags.0"),
        ({"custom_fields": {"budget": "lots"}}, "custom_fields.budget"),
        ({"custom_fields": {"nope": "1"}}, "custom_fields.nope"),
        ({"emails": ["not-an-email"]}, "emails.0"),
        ({"company_id": ana["id"]}, "company_id"),
    ):
        reply = await env.client.patch(f"/api/clients/{ana['id']}", json=bad, headers=alice)
        assert reply.status_code == 400, (bad, reply.text)
        assert reply.json()["error"]["details"]["path"] == path, reply.text
    card = (await env.client.get(f"/api/clients/{ana['id']}", headers=alice)).json()
    assert card["display_name"] == "Ana Brun-Roux"
    assert card["custom_fields"] == {"budget": 1200, "stage": "won"}

    # A duplicate merged in: its phone and its call are kept.
    dup = await env.store.clients.create(
        ClientKind.PERSON, first_name="Ana", last_name="Brun", phones=["0699887766"]
    )
    call = await env.store.calls.create(
        CallDirection.OUTBOUND, "1001", "+33699887766", client_id=dup.id
    )
    reply = await env.client.post(
        f"/api/clients/{ana['id']}/merge", json={"duplicate_id": str(dup.id)}, headers=alice
    )
    assert reply.status_code == 200, reply.text
    assert "+33699887766" in [p["number"] for p in reply.json()["phones"]]
    sue = env.auth("sue")
    reply = await env.client.get(f"/api/clients/{ana['id']}/timeline", headers=sue)
    items = reply.json()["items"]
    assert [i["call"]["id"] for i in items if i["type"] == "call"] == [str(call.id)]
    assert {i["change"]["action"] for i in items if i["type"] == "change"} >= {
        "create",
        "update",
        "merge",
    }
    assert (await env.client.get(f"/api/clients/{dup.id}", headers=alice)).status_code == 404

    reply = await env.client.post(
        f"/api/clients/{ana['id']}/notes", json={"text": "Wants a demo"}, headers=alice
    )
    assert reply.status_code == 201, reply.text
    items = (await env.client.get(f"/api/clients/{ana['id']}/timeline", headers=alice)).json()
    assert items["items"][0]["type"] == "note"
    assert items["items"][0]["note"]["text"] == "Wants a demo"

    reply = await env.client.delete(f"/api/clients/{ana['id']}", headers=alice)
    assert reply.status_code == 204
    assert (await env.client.get(f"/api/clients/{ana['id']}", headers=alice)).status_code == 404
    entries = await env.store.audit.for_entity("client", ana["id"])
    assert entries[-1].action == "delete"
    assert entries[-1].actor == str(env.users["alice"].id)


async def test_only_admins_define_fields_and_tags(env: Env) -> None:
    bob = env.auth("bob")
    reply = await env.client.post(
        "/api/client-fields", json={"key": "size", "label": "Size", "type": "text"}, headers=bob
    )
    assert reply.status_code == 403
    admin = await _admin(env)
    reply = await env.client.post(
        "/api/client-fields", json={"key": "Bad Key", "label": "x", "type": "text"}, headers=admin
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["details"]["path"] == "key"
    reply = await env.client.post(
        "/api/client-fields", json={"key": "tier", "label": "Tier", "type": "choice"}, headers=admin
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["details"]["path"] == "choices"
    assert (await env.client.get("/api/client-fields", headers=bob)).json() == []


async def test_a_private_client_is_invisible_to_another_agent(env: Env) -> None:
    alice, bob, sue = env.auth("alice"), env.auth("bob"), env.auth("sue")
    secret = await env.store.clients.create(
        ClientKind.PERSON,
        first_name="Paul",
        last_name="Secret",
        phones=["+33 6 11 22 33 44"],
        responsible_user_id=env.users["alice"].id,
        visibility=Visibility.PRIVATE,
    )
    for user, sees in (("alice", True), ("bob", False), ("sue", True)):
        names = [c["display_name"] for c in (await _list(env, user))["clients"]]
        assert ("Paul Secret" in names) is sees
        assert bool((await _list(env, user, q="3344"))["clients"]) is sees
        reply = await env.client.get(
            "/api/contacts/search", params={"q": "Secret"}, headers=env.auth(user)
        )
        assert bool(reply.json()["results"]) is sees
    for method, path, body in (
        ("GET", f"/api/clients/{secret.id}", None),
        ("GET", f"/api/clients/{secret.id}/timeline", None),
        ("PATCH", f"/api/clients/{secret.id}", {"first_name": "Pierre"}),
        ("POST", f"/api/clients/{secret.id}/notes", {"text": "peek"}),
        ("DELETE", f"/api/clients/{secret.id}", None),
    ):
        reply = await env.client.request(method, path, json=body, headers=bob)
        assert reply.status_code == 403, (method, path, reply.text)
    assert (await env.store.clients.get(secret.id)).first_name == "Paul"

    # Shared with Bob by Alice: now he sees it; sharing is kept on the card.
    reply = await env.client.patch(
        f"/api/clients/{secret.id}", json={"shared_with": [str(env.users["bob"].id)]}, headers=alice
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["shared_with"] == [str(env.users["bob"].id)]
    assert (await env.client.get(f"/api/clients/{secret.id}", headers=bob)).status_code == 200
    assert [c["display_name"] for c in (await _list(env, "bob", q="secret"))["clients"]] == [
        "Paul Secret"
    ]
    assert (await env.client.get(f"/api/clients/{secret.id}", headers=sue)).status_code == 200


async def test_bad_filters_are_refused_with_their_path(env: Env) -> None:
    await _define(env)
    for params, path in (
        ({"field": "nope:eq:1"}, "field.0"),
        ({"field": "budget:ge:lots"}, "field.0"),
        ({"sort": "shoe_size"}, "sort"),
        ({"created_from": "yesterday"}, "created_from"),
        ({"per_page": "1000"}, "per_page"),
    ):
        reply = await env.client.get("/api/clients", params=params, headers=env.auth("bob"))
        assert reply.status_code == 400, (params, reply.text)
        assert reply.json()["error"]["details"]["path"].endswith(path), reply.text


def test_the_ringing_card_of_a_private_client_names_no_one() -> None:
    client = _client(Visibility.PRIVATE)
    match = CallerMatch("client", client.id, client.display_name, "+33611223344", client=client)
    card = caller_card(match)
    assert card == {
        "kind": "client",
        "id": str(client.id),
        "display_name": "",
        "phone": "+33611223344",
        "created": False,
        "private": True,
        "tags": [],
    }
    shared = replace(client, visibility=Visibility.SHARED)
    open_card = caller_card(replace(match, client=shared))
    assert open_card is not None
    assert (open_card["display_name"], open_card["tags"]) == ("Paul Secret", ["vip"])


def _client(visibility: Visibility) -> Client:
    now = datetime.now(UTC)
    return Client(
        id=uuid.uuid4(),
        kind=ClientKind.PERSON,
        display_name="Paul Secret",
        first_name="Paul",
        last_name="Secret",
        company_name=None,
        company_id=None,
        emails=(),
        phones=(),
        tags=("vip",),
        address=Address(),
        custom_fields={},
        responsible_user_id=uuid.uuid4(),
        visibility=visibility,
        timezone=None,
        created_at=now,
        updated_at=now,
    )
