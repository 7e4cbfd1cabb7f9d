from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from crm_store import CallDirection, CallEndReason, Conflict, NotFound, Role, Store

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


async def test_call_lifecycle(store: Store) -> None:
    agent = await store.users.add("ada", "Ada", Role.AGENT, extension="1001")
    call = await store.calls.create(
        CallDirection.INBOUND,
        "06 12 34 56 78",
        "1001",
        agent_user_id=agent.id,
        worker_id="w1",
        line="1001",
        sip_call_id="abc@pbx",
        at=T0,
    )
    assert call.from_number == "+33612345678"
    assert call.to_number == "1001"  # an extension stays as given
    assert call.is_open

    await store.calls.mark_ringing(call.id, T0 + timedelta(seconds=1))
    await store.calls.mark_answered(call.id, T0 + timedelta(seconds=5))
    await store.calls.set_note(call.id, "wants a quote", actor=agent.id)
    await store.calls.set_disposition(call.id, "callback", actor=agent.id)
    await store.calls.attach_recording(call.id, "/var/rec/abc.wav", 42.5)
    ended = await store.calls.end(call.id, CallEndReason.COMPLETED, T0 + timedelta(seconds=60))

    assert ended.ringing_at == T0 + timedelta(seconds=1)
    assert ended.answered_at == T0 + timedelta(seconds=5)
    assert ended.ended_at == T0 + timedelta(seconds=60)
    assert ended.end_reason is CallEndReason.COMPLETED
    assert (ended.note, ended.disposition) == ("wants a quote", "callback")
    assert (ended.recording_path, ended.recording_duration) == ("/var/rec/abc.wav", 42.5)
    assert await store.calls.get(call.id) == ended
    assert [c.id for c in await store.calls.list_recent(agent=agent.id)] == [call.id]

    with pytest.raises(Conflict):
        await store.calls.end(call.id, CallEndReason.FAILED)
    with pytest.raises(Conflict):
        await store.calls.mark_answered(call.id)


async def test_unknown_call_is_not_found(store: Store) -> None:
    from crm_store import new_id

    with pytest.raises(NotFound):
        await store.calls.end(new_id(), CallEndReason.COMPLETED)


async def test_close_interrupted_closes_every_open_call(store: Store) -> None:
    open_a = await store.calls.create(CallDirection.INBOUND, "0612345678", "1001", at=T0)
    open_b = await store.calls.create(CallDirection.OUTBOUND, "1002", "0698765432", at=T0)
    finished = await store.calls.create(CallDirection.INTERNAL, "1001", "1002", at=T0)
    await store.calls.end(finished.id, CallEndReason.COMPLETED, T0 + timedelta(minutes=1))
    assert {c.id for c in await store.calls.open_calls()} == {open_a.id, open_b.id}

    restart = T0 + timedelta(hours=1)
    assert await store.calls.close_interrupted(restart) == 2

    assert await store.calls.open_calls() == []
    for call_id in (open_a.id, open_b.id):
        call = await store.calls.get(call_id)
        assert call.end_reason is CallEndReason.INTERRUPTED
        assert call.ended_at == restart
    assert (await store.calls.get(finished.id)).end_reason is CallEndReason.COMPLETED
    assert await store.calls.close_interrupted() == 0


async def test_close_interrupted_leaves_other_daemons_calls_open(store: Store) -> None:
    ours = await store.calls.create(CallDirection.INBOUND, "0612345678", "1001", origin="paris")
    theirs = await store.calls.create(CallDirection.INBOUND, "0698765432", "1002", origin="lyon")
    assert await store.calls.close_interrupted(origin="paris") == 1
    assert (await store.calls.get(ours.id)).end_reason is CallEndReason.INTERRUPTED
    assert [c.id for c in await store.calls.open_calls()] == [theirs.id]
    assert (await store.calls.get(theirs.id)).origin == "lyon"


async def test_crashed_worker_calls_are_closed_and_returned(store: Store) -> None:
    mine = await store.calls.create(CallDirection.INBOUND, "0612345678", "1001", worker_id="w1")
    other = await store.calls.create(CallDirection.INBOUND, "0698765432", "1002", worker_id="w2")
    closed = await store.calls.close_worker_calls("w1")
    assert [c.id for c in closed] == [mine.id]
    assert closed[0].end_reason is CallEndReason.INTERRUPTED
    assert [c.id for c in await store.calls.open_calls()] == [other.id]
