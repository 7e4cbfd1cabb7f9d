"""The call log through the HTTP API: history, detail, recordings, notes, wrap-up."""

from __future__ import annotations

import uuid
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bus import CallCreated
from bus.events import Envelope
from crm_store import Call, CallDirection, CallEndReason, ClientKind
from tests.web.conftest import Env

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


async def _call(
    env: Env,
    user: str | None,
    *,
    minutes: int,
    direction: CallDirection = CallDirection.INBOUND,
    answered: bool = True,
    client_id: uuid.UUID | None = None,
) -> Call:
    at = T0 + timedelta(minutes=minutes)
    agent = env.users[user].id if user is not None else None
    call = await env.store.calls.create(
        direction, "+33612345678", "2001", agent_user_id=agent, client_id=client_id, at=at
    )
    if answered:
        await env.store.calls.mark_answered(call.id, at + timedelta(seconds=3))
    reason = CallEndReason.COMPLETED if answered else CallEndReason.NO_ANSWER
    return await env.store.calls.end(call.id, reason, at + timedelta(seconds=43))


def _wav(path: Path, seconds: float = 1.0) -> bytes:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes(range(256)) * int(8000 * 2 * seconds / 256))
    return path.read_bytes()


async def test_history_is_mine_newest_first_filtered_and_paged(env: Env) -> None:
    mine = [await _call(env, "alice", minutes=i) for i in range(5)]
    missed = await _call(env, "alice", minutes=10, answered=False)
    out = await _call(env, "alice", minutes=11, direction=CallDirection.OUTBOUND)
    theirs = await _call(env, "bob", minutes=12)

    got = await env.client.get("/api/calls", params={"limit": 3}, headers=env.auth("alice"))
    assert got.status_code == 200
    page = got.json()
    assert [c["id"] for c in page["calls"]] == [str(out.id), str(missed.id), str(mine[4].id)]
    seen = [c["id"] for c in page["calls"]]
    while page["next"] is not None:
        page = (
            await env.client.get(
                "/api/calls", params={"limit": 3, "before": page["next"]}, headers=env.auth("alice")
            )
        ).json()
        seen += [c["id"] for c in page["calls"]]
    assert seen == [str(c.id) for c in (out, missed, *reversed(mine))]
    assert str(theirs.id) not in seen

    only_missed = (
        await env.client.get("/api/calls", params={"missed": "true"}, headers=env.auth("alice"))
    ).json()["calls"]
    assert [(c["id"], c["missed"]) for c in only_missed] == [(str(missed.id), True)]
    outbound = (
        await env.client.get(
            "/api/calls", params={"direction": "outbound"}, headers=env.auth("alice")
        )
    ).json()["calls"]
    assert [c["id"] for c in outbound] == [str(out.id)]
    window = (
        await env.client.get(
            "/api/calls",
            params={
                "since": (T0 + timedelta(minutes=2)).isoformat(),
                "until": (T0 + timedelta(minutes=4)).isoformat(),
            },
            headers=env.auth("alice"),
        )
    ).json()["calls"]
    assert [c["id"] for c in window] == [str(mine[3].id), str(mine[2].id)]

    everyone = (await env.client.get("/api/calls", headers=env.auth("sue"))).json()["calls"]
    assert everyone[0]["id"] == str(theirs.id)
    assert everyone[0]["agent"] == "bob"
    bobs = (
        await env.client.get("/api/calls", params={"agent": "bob"}, headers=env.auth("sue"))
    ).json()["calls"]
    assert [c["id"] for c in bobs] == [str(theirs.id)]
    refused = await env.client.get("/api/calls", params={"agent": "bob"}, headers=env.auth("alice"))
    assert refused.status_code == 403


async def test_bad_history_queries_get_a_stable_code(env: Env) -> None:
    for params in (
        {"before": "not-a-cursor"},
        {"limit": "0"},
        {"missed": "perhaps"},
        {"since": "yesterday"},
        {"direction": "sideways"},
    ):
        reply = await env.client.get("/api/calls", params=params, headers=env.auth("alice"))
        assert reply.status_code == 400, params
        assert reply.json()["error"]["code"] == "bad_request"
    anonymous = await env.client.get("/api/calls")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthenticated"


async def test_another_agents_call_and_recording_are_forbidden(env: Env) -> None:
    call = await _call(env, "alice", minutes=0)
    path = env.recordings / "2026" / f"{call.id}.wav"
    path.parent.mkdir()
    _wav(path)
    await env.store.calls.attach_recording(call.id, str(path), 1.0)
    for url in (f"/api/calls/{call.id}", f"/api/calls/{call.id}/recording"):
        reply = await env.client.get(url, headers=env.auth("bob"))
        assert reply.status_code == 403, url
        assert reply.json()["error"]["code"] == "forbidden"
    note = await env.client.put(
        f"/api/calls/{call.id}/note", json={"text": "mine now"}, headers=env.auth("bob")
    )
    assert note.status_code == 403
    assert (await env.store.calls.get(call.id)).note is None
    missing = await env.client.get(f"/api/calls/{uuid.uuid4()}", headers=env.auth("alice"))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


async def test_recording_is_served_with_ranges_and_no_path(env: Env) -> None:
    call = await _call(env, "alice", minutes=0)
    path = env.recordings / f"{call.id}.wav"
    data = _wav(path, seconds=2.0)
    await env.store.calls.attach_recording(call.id, str(path), 2.0)

    detail = await env.client.get(f"/api/calls/{call.id}", headers=env.auth("alice"))
    body = detail.json()
    assert body["recording"] is True
    assert body["recording_url"] == f"/api/calls/{call.id}/recording"
    assert body["recording_duration"] == 2.0
    assert str(env.recordings) not in detail.text

    whole = await env.client.get(body["recording_url"], headers=env.auth("alice"))
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "audio/wav"
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.content == data
    middle = len(data) // 2
    part = await env.client.get(
        body["recording_url"],
        headers={**env.auth("alice"), "Range": f"bytes={middle}-{middle + 99}"},
    )
    assert part.status_code == 206
    assert part.content == data[middle : middle + 100]
    assert part.headers["content-range"] == f"bytes {middle}-{middle + 99}/{len(data)}"
    for reply in (whole, part):
        assert str(env.recordings) not in str(reply.headers)
        assert "private" in reply.headers["cache-control"]


async def test_recording_outside_the_directory_or_gone_is_not_found(
    env: Env, tmp_path: Path
) -> None:
    outside = await _call(env, "alice", minutes=0)
    elsewhere = tmp_path / "elsewhere.wav"
    _wav(elsewhere)
    await env.store.calls.attach_recording(outside.id, str(elsewhere), 1.0)
    gone = await _call(env, "alice", minutes=1)
    await env.store.calls.attach_recording(gone.id, str(env.recordings / "gone.wav"), 1.0)
    never = await _call(env, "alice", minutes=2)
    for call in (outside, gone, never):
        reply = await env.client.get(f"/api/calls/{call.id}/recording", headers=env.auth("alice"))
        assert reply.status_code == 404
        assert reply.json()["error"]["code"] == "not_found"
        assert str(tmp_path) not in reply.text


async def test_note_is_saved_and_a_huge_one_refused(env: Env) -> None:
    call = await _call(env, "alice", minutes=0)
    saved = await env.client.put(
        f"/api/calls/{call.id}/note",
        json={"text": "<b>wants</b> a callback"},
        headers=env.auth("alice"),
    )
    assert saved.status_code == 200
    assert saved.json()["note"] == "<b>wants</b> a callback"
    over = await env.client.put(
        f"/api/calls/{call.id}/note", json={"text": "x" * 10_001}, headers=env.auth("alice")
    )
    assert over.status_code == 413
    assert over.json()["error"]["code"] == "too_large"
    ten_mb = await env.client.put(
        f"/api/calls/{call.id}/note", json={"text": "x" * 10_000_000}, headers=env.auth("alice")
    )
    assert ten_mb.status_code == 413
    assert ten_mb.json()["error"]["code"] == "too_large"
    assert len(ten_mb.content) < 1000
    assert (await env.store.calls.get(call.id)).note == "<b>wants</b> a callback"


async def test_wrap_up_stores_disposition_note_and_follow_up(env: Env) -> None:
    client = await env.store.clients.create(ClientKind.COMPANY, name="Garage Leroy")
    call = await _call(env, "alice", minutes=0, client_id=client.id)
    bad = await env.client.post(
        f"/api/calls/{call.id}/disposition",
        json={"disposition": "bribed"},
        headers=env.auth("alice"),
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["details"]["allowed"] == list(env.config.widget.dispositions)
    assert (await env.store.calls.get(call.id)).disposition is None

    due = (T0 + timedelta(days=2)).isoformat()
    done = await env.client.post(
        f"/api/calls/{call.id}/disposition",
        json={
            "disposition": "callback",
            "note": "call back Friday",
            "follow_up": {"title": "Call back", "due_at": due},
        },
        headers=env.auth("alice"),
    )
    assert done.status_code == 200, done.text
    summary = done.json()
    assert (summary["disposition"], summary["note"]) == ("callback", "call back Friday")
    assert summary["contact"]["display_name"] == "Garage Leroy"
    card = (await env.client.get(f"/api/clients/{client.id}", headers=env.auth("alice"))).json()
    assert [(t["title"], t["kind"]) for t in card["open_tasks"]] == [("Call back", "call")]
    assert card["open_tasks"][0]["due_at"] == due


def _announce(env: Env, call: Call, agent: str) -> None:
    """The gateway's view learns of the call, as from the bus."""
    env.projection.apply(
        Envelope(
            origin="web-test",
            seq=1,
            at=call.created_at,
            event=CallCreated(
                call_id=call.id,
                direction=call.direction.value,
                from_number=call.from_number,
                to_number=call.to_number,
                line="2001",
                agent=agent,
                worker_id="w1",
            ),
        )
    )


async def test_unknown_caller_becomes_a_lead_from_the_call(env: Env) -> None:
    call = await env.store.calls.create(
        CallDirection.INBOUND, "+33655443322", "2001", agent_user_id=env.users["alice"].id
    )
    _announce(env, call, "alice")
    refused = await env.client.post(
        f"/api/calls/{call.id}/lead", json={"name": "Intruder"}, headers=env.auth("bob")
    )
    assert refused.status_code == 403
    made = await env.client.post(
        f"/api/calls/{call.id}/lead", json={"name": "Yann Le Gall"}, headers=env.auth("alice")
    )
    assert made.status_code == 201, made.text
    card = made.json()
    assert (card["kind"], card["display_name"]) == ("lead", "Yann Le Gall")
    assert card["phones"] == [{"number": "+33655443322", "kind": "mobile"}]
    found = await env.client.get(
        "/api/contacts/search", params={"q": "3322"}, headers=env.auth("alice")
    )
    assert [r["id"] for r in found.json()["results"]] == [card["id"]]
    assert (await env.store.contacts.search("Intruder", viewer=None, sees_all=True)) == []


async def test_a_call_ringing_at_an_agent_is_theirs_before_its_record_says_so(env: Env) -> None:
    """An inbound call offered to Alice has no agent on its record until she
    answers; the pop-up's actions are hers already, and still not Bob's."""
    call = await env.store.calls.create(CallDirection.INBOUND, "+33655440011", "2001")
    _announce(env, call, "alice")
    assert (
        await env.client.get(f"/api/calls/{call.id}", headers=env.auth("bob"))
    ).status_code == 403
    refused = await env.client.post(
        f"/api/calls/{call.id}/lead", json={"name": "Intruder"}, headers=env.auth("bob")
    )
    assert refused.status_code == 403
    seen = await env.client.get(f"/api/calls/{call.id}", headers=env.auth("alice"))
    assert seen.status_code == 200, seen.text
    made = await env.client.post(
        f"/api/calls/{call.id}/lead", json={"name": "Maëlle Guyot"}, headers=env.auth("alice")
    )
    assert made.status_code == 201, made.text
    assert made.json()["display_name"] == "Maëlle Guyot"
    assert (await env.store.contacts.search("Intruder", viewer=None, sees_all=True)) == []
