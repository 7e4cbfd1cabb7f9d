"""Agent states, colleagues and call lists through the HTTP API."""

from __future__ import annotations

from crm_store import CallListEntry
from tests.web.conftest import Env


async def test_agent_goes_available_then_paused_with_a_listed_reason(env: Env) -> None:
    mine = await env.client.get("/api/agents/me", headers=env.auth("alice"))
    assert mine.status_code == 200
    assert [(a["agent"], a["state"]) for a in mine.json()] == [("alice", "offline")]

    up = await env.client.put(
        "/api/agents/alice/state", json={"state": "available"}, headers=env.auth("alice")
    )
    assert up.status_code == 200, up.text
    assert (up.json()["state"], up.json()["reason"]) == ("available", None)
    paused = await env.client.put(
        "/api/agents/alice/state",
        json={"state": "paused", "reason": "lunch"},
        headers=env.auth("alice"),
    )
    assert (paused.json()["state"], paused.json()["reason"]) == ("paused", "lunch")
    # Kept in the store: a restarted daemon gives it back.
    stored = (await env.store.presence.load("web-test"))["alice"]
    assert (stored.state, stored.reason) == ("paused", "lunch")

    colleagues = (await env.client.get("/api/colleagues", headers=env.auth("bob"))).json()
    assert colleagues == [
        {
            "agent": "alice",
            "display_name": "Alice Martin",
            "extension": "1001",
            "state": "paused",
            "on_call": False,
        },
        {
            "agent": "bob",
            "display_name": "Bob Durand",
            "extension": "1002",
            "state": "offline",
            "on_call": False,
        },
    ]


async def test_state_changes_outside_the_rules_change_nothing(env: Env) -> None:
    for body in (
        {"state": "paused", "reason": "nap"},
        {"state": "paused"},
        {"state": "busy"},
        {"state": "available", "extra": 1},
    ):
        reply = await env.client.put(
            "/api/agents/alice/state", json=body, headers=env.auth("alice")
        )
        assert reply.status_code == 400, body
        assert reply.json()["error"]["code"] == "bad_request"
    not_mine = await env.client.put(
        "/api/agents/alice/state", json={"state": "available"}, headers=env.auth("bob")
    )
    assert not_mine.status_code == 403
    assert not_mine.json()["error"]["code"] == "forbidden"
    assert await env.store.presence.load("web-test") == {}
    unknown = await env.client.put(
        "/api/agents/nobody/state", json={"state": "available"}, headers=env.auth("sue")
    )
    assert unknown.status_code == 404


async def test_call_lists_show_their_progress(env: Env) -> None:
    entries = [CallListEntry(n) for n in ("0612345678", "0698765432", "not a number")]
    created, _ = await env.store.call_lists.create_list("Spring campaign", None, entries)
    lists = (await env.client.get("/api/call-lists", headers=env.auth("bob"))).json()
    assert lists == [
        {"id": str(created.id), "name": "Spring campaign", "total": 3, "done": 1, "left": 2}
    ]
