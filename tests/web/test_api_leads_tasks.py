"""The leads pool and tasks through the HTTP API, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from crm_store import ClientKind, LeadSource, Visibility
from tests.web.conftest import Env


async def test_pool_newest_first_take_race_and_my_leads(env: Env) -> None:
    store = env.store
    old = await store.leads.create(first_name="Old", phones=["0491000001"])
    new = await store.leads.create(
        first_name="New", phones=["0491000002"], source=LeadSource.WEB_FORM
    )
    pool = await env.client.get("/api/leads", headers=env.auth("alice"))
    assert pool.status_code == 200, pool.text
    rows = pool.json()["leads"]
    assert [r["display_name"] for r in rows] == ["New", "Old"]
    assert rows[0]["source"] == "web_form"

    # Both agents press Take at once: one wins, the other is told who did.
    a, b = await asyncio.gather(
        env.client.post(f"/api/leads/{new.id}/take", headers=env.auth("alice")),
        env.client.post(f"/api/leads/{new.id}/take", headers=env.auth("bob")),
    )
    assert sorted([a.status_code, b.status_code]) == [200, 409]
    winner, loser = (a, b) if a.status_code == 200 else (b, a)
    err = loser.json()["error"]
    assert err["code"] == "conflict"
    assert err["message"] == f"{winner.json()['owner']['display_name']} took this lead first"
    assert str((await store.leads.get(new.id)).owner_user_id) == winner.json()["owner"]["id"]
    owner = "alice" if a.status_code == 200 else "bob"
    mine = await env.client.get("/api/leads", params={"view": "mine"}, headers=env.auth(owner))
    assert [r["id"] for r in mine.json()["leads"]] == [str(new.id)]
    left = await env.client.get("/api/leads", headers=env.auth("alice"))
    assert [r["id"] for r in left.json()["leads"]] == [str(old.id)]


async def test_close_unsuitable_needs_a_reason_and_only_the_owner_closes(env: Env) -> None:
    lead = await env.store.leads.create(first_name="Léa", phones=["0491000003"])
    await env.client.post(f"/api/leads/{lead.id}/take", headers=env.auth("alice"))
    refused = await env.client.post(
        f"/api/leads/{lead.id}/close", json={"outcome": "unsuitable"}, headers=env.auth("alice")
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["details"]["path"] == "reason"
    not_his = await env.client.post(
        f"/api/leads/{lead.id}/close",
        json={"outcome": "unsuitable", "reason": "x"},
        headers=env.auth("bob"),
    )
    assert not_his.status_code == 403
    assert (await env.store.leads.get(lead.id)).status.is_open
    done = await env.client.post(
        f"/api/leads/{lead.id}/close",
        json={"outcome": "unsuitable", "reason": "wrong number"},
        headers=env.auth("alice"),
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "unsuitable"
    assert done.json()["close_reason"] == "wrong number"
    again = await env.client.post(
        f"/api/leads/{lead.id}/close",
        json={"outcome": "done"},
        headers=env.auth("alice"),
    )
    assert again.status_code == 409
    changes = await env.client.get(f"/api/leads/{lead.id}/changes", headers=env.auth("bob"))
    assert [c["action"] for c in changes.json()] == ["close", "take", "create"]


async def test_close_done_converts_or_links_to_a_client(env: Env) -> None:
    lead = await env.store.leads.create(
        first_name="Anna",
        last_name="Nowak",
        phones=["0491000004"],
        owner_user_id=env.users["alice"].id,
    )
    converted = await env.client.post(
        f"/api/leads/{lead.id}/close",
        json={"outcome": "done", "convert": True},
        headers=env.auth("alice"),
    )
    assert converted.status_code == 200, converted.text
    client_id = converted.json()["converted_client_id"]
    client = await env.store.clients.get(__import__("uuid").UUID(client_id))
    assert client.display_name == "Anna Nowak"
    assert [p.number_e164 for p in client.phones] == ["+33491000004"]

    other = await env.store.leads.create(
        first_name="Anna", phones=["0491000005"], owner_user_id=env.users["alice"].id
    )
    linked = await env.client.post(
        f"/api/leads/{other.id}/close",
        json={"outcome": "done", "client_id": client_id},
        headers=env.auth("alice"),
    )
    assert linked.status_code == 200, linked.text
    client = await env.store.clients.get(client.id)
    assert sorted(p.number_e164 for p in client.phones) == ["+33491000004", "+33491000005"]
    private = await env.store.clients.create(
        ClientKind.PERSON,
        first_name="P",
        responsible_user_id=env.users["bob"].id,
        visibility=Visibility.PRIVATE,
    )
    third = await env.store.leads.create(first_name="T", owner_user_id=env.users["alice"].id)
    hidden = await env.client.post(
        f"/api/leads/{third.id}/close",
        json={"outcome": "done", "client_id": str(private.id)},
        headers=env.auth("alice"),
    )
    assert hidden.status_code == 403
    assert (await env.store.leads.get(third.id)).status.is_open


async def test_manual_lead_to_the_pool_or_mine(env: Env) -> None:
    bad = await env.client.post(
        "/api/leads/manual", json={"phones": ["12"]}, headers=env.auth("alice")
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["details"]["path"] == "phones"
    empty = await env.client.post("/api/leads/manual", json={}, headers=env.auth("alice"))
    assert empty.status_code == 400
    made = await env.client.post(
        "/api/leads/manual",
        json={"first_name": "Jan", "company": "Kowalski SA", "phones": ["+48 22 123 45 67"]},
        headers=env.auth("alice"),
    )
    assert made.status_code == 201, made.text
    assert made.json()["owner"] is None
    mine = await env.client.post(
        "/api/leads/manual", json={"first_name": "Ola", "to_pool": False}, headers=env.auth("alice")
    )
    assert mine.json()["owner"]["display_name"] == "Alice"
    assert mine.json()["status"] == "in_progress"


async def test_tasks_lists_board_calendar_and_rights(env: Env) -> None:
    now = datetime.now(UTC)
    client = await env.store.clients.create(
        ClientKind.PERSON, first_name="Zoé", phones=["0612345678"]
    )

    async def make(title: str, due: datetime | None, **extra: object) -> dict[str, object]:
        body = {"title": title, "due_at": None if due is None else due.isoformat(), **extra}
        reply = await env.client.post("/api/tasks", json=body, headers=env.auth("alice"))
        assert reply.status_code == 201, reply.text
        result: dict[str, object] = reply.json()
        return result

    late = await make("late", now - timedelta(hours=30), client_id=str(client.id))
    later = await make("later", now + timedelta(days=3), kind="meeting", duration_minutes=45)
    assert late["overdue"] is True
    assert late["contact"] == {"kind": "client", "id": str(client.id), "display_name": "Zoé"}

    async def view(name: str, user: str = "alice") -> list[str]:
        r = await env.client.get("/api/tasks", params={"view": name}, headers=env.auth(user))
        assert r.status_code == 200, r.text
        return [t["title"] for t in r.json()["tasks"]]

    assert await view("overdue") == ["late"]
    assert await view("upcoming") == ["later"]
    assert await view("mine") == ["late", "later"]
    assert await view("mine", "bob") == []
    assert await view("all", "sue") == ["late", "later"]

    bob_reads = await env.client.get(f"/api/tasks/{late['id']}", headers=env.auth("bob"))
    assert bob_reads.status_code == 403
    give = await env.client.post(
        "/api/tasks",
        json={"title": "x", "assignee_id": str(env.users["bob"].id)},
        headers=env.auth("alice"),
    )
    assert give.status_code == 403

    moved = await env.client.post(
        f"/api/tasks/{later['id']}/status",
        json={"status": "in_progress"},
        headers=env.auth("alice"),
    )
    assert moved.json()["status"] == "in_progress"
    board = (await env.client.get("/api/tasks/board", headers=env.auth("alice"))).json()
    assert [t["title"] for t in board["in_progress"]] == ["later"]
    assert [t["title"] for t in board["todo"]] == ["late"]
    done = await env.client.post(
        f"/api/tasks/{late['id']}/status", json={"status": "done"}, headers=env.auth("alice")
    )
    assert done.json()["done"] is True

    start = now + timedelta(days=2)
    cal = await env.client.get(
        "/api/calendar",
        params={"start": start.isoformat(), "end": (start + timedelta(days=7)).isoformat()},
        headers=env.auth("alice"),
    )
    assert [t["title"] for t in cal.json()] == ["later"]
    too_long = await env.client.get(
        "/api/calendar",
        params={"start": start.isoformat(), "end": (start + timedelta(days=90)).isoformat()},
        headers=env.auth("alice"),
    )
    assert too_long.status_code == 400


async def test_reminder_bounds_and_moving_the_due_time_moves_the_reminder(env: Env) -> None:
    due = datetime.now(UTC) + timedelta(days=1)
    for minutes in (4, 1441):
        bad = await env.client.post(
            "/api/tasks",
            json={"title": "t", "due_at": due.isoformat(), "remind_minutes": minutes},
            headers=env.auth("alice"),
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["details"]["path"] == "remind_minutes"
    no_due = await env.client.post(
        "/api/tasks", json={"title": "t", "remind_minutes": 10}, headers=env.auth("alice")
    )
    assert no_due.status_code == 400
    made = await env.client.post(
        "/api/tasks",
        json={"title": "t", "due_at": due.isoformat(), "remind_minutes": 15},
        headers=env.auth("alice"),
    )
    task_id = made.json()["id"]
    new_due = due + timedelta(days=2)
    moved = await env.client.patch(
        f"/api/tasks/{task_id}", json={"due_at": new_due.isoformat()}, headers=env.auth("alice")
    )
    assert moved.status_code == 200, moved.text
    task = await env.store.tasks.get(__import__("uuid").UUID(task_id))
    assert task.remind_at == new_due - timedelta(minutes=15)
    naive = await env.client.patch(
        f"/api/tasks/{task_id}", json={"due_at": "2030-01-01T10:00:00"}, headers=env.auth("alice")
    )
    assert naive.status_code == 400
    assert naive.json()["error"]["details"]["path"] == "due_at"
