"""One agent dialing a list against the lab: order, exact gaps, outcomes, leads.

The gaps are measured on the lab's own clock: SIPp logs the arrival of every
INVITE (``lab.customers.invites()``) and of every CANCEL (``cancels()``). A
customer of the number plan sends its final response ``RR`` seconds after the
INVITE (busy, reject); one that never answers is cancelled when our ring timer
gives up. So an unanswered attempt ends at ``INVITE.at + RR`` or at the CANCEL's
arrival, and the gap is the next INVITE's arrival minus that.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import bus
from crm_store import CallEndReason, CallListItemState, LeadSource
from dialer import InvalidState, NoSession, Phase, SessionExists, UnknownList
from lab.customers import Behaviour, customer_number
from lab.runner import Lab
from tests.dialer.conftest import DialerEnv, dialer_config

MakeEnv = Callable[..., Awaitable[DialerEnv]]

_GAP = 5.0
_TOLERANCE = 0.1
_RING_TIMEOUT = 3


def _finished(session_id: uuid.UUID) -> Callable[[bus.DialerSessionFinished], bool]:
    return lambda e: e.session_id == session_id


async def test_list_is_dialed_in_order_with_exact_gaps(
    lab: Lab, tmp_path: Path, dialer_env: MakeEnv
) -> None:
    config = dialer_config(lab, tmp_path, ring_timeout=_RING_TIMEOUT)
    assert config.dialer.gap_seconds == _GAP
    env = await dialer_env(config)
    plan = [
        # (number, ring seconds before the final response or None if answered,
        #  expected result)
        (customer_number(Behaviour.BUSY, ring=1, suffix=11), 1.0, "busy"),
        (customer_number(Behaviour.ANSWER, ring=1, talk=2, suffix=12), None, "completed"),
        (customer_number(Behaviour.NEVER_ANSWER, suffix=13), 0.0, "no_answer"),  # cancelled
        (customer_number(Behaviour.REJECT, ring=1, suffix=14), 1.0, "rejected"),
        (customer_number(Behaviour.BUSY, ring=0, suffix=15), 0.0, "busy"),
        (customer_number(Behaviour.REJECT, ring=2, suffix=16), 2.0, "rejected"),
    ]
    alice = await env.store.users.by_username("alice")
    assert alice is not None
    call_list, report = await env.dialer.create_list("six", [n for n, _r, _x in plan])
    assert report.added == 6

    info = await env.dialer.start_session("alice", call_list.id)
    await env.log.wait_for(bus.DialerSessionFinished, _finished(info.session_id), within=90)

    # Dialed in order, each once (the lab's view).
    invites = lab.customers.invites()
    assert [i.number for i in invites] == [n for n, _r, _x in plan]

    # The gap after each unanswered number, on the lab's clock: from the end of the
    # attempt (final response sent RR s after the INVITE, or our CANCEL's arrival)
    # to the next INVITE's arrival.
    cancelled = {c.call_id: c.at for c in lab.customers.cancels()}
    assert list(cancelled) == [invites[2].call_id]  # the never-answering customer
    gaps = []
    for (_number, ring, _result), invite, following in zip(
        plan, invites, invites[1:], strict=False
    ):
        if ring is None:
            continue
        gaps.append(following.at - cancelled.get(invite.call_id, invite.at + ring))
    assert len(gaps) == 4
    assert all(abs(gap - _GAP) <= _TOLERANCE for gap in gaps), gaps

    # Outcomes stored.
    items = await env.store.call_lists.items(call_list.id)
    assert [i.last_result for i in items] == [x for _n, _r, x in plan]
    assert [i.state for i in items] == [
        CallListItemState.FAILED,
        CallListItemState.DONE,
        CallListItemState.FAILED,
        CallListItemState.FAILED,
        CallListItemState.FAILED,
        CallListItemState.FAILED,
    ]
    for item, (_n, _r, result) in zip(items, plan, strict=True):
        assert item.attempts == 1
        assert item.last_call_id is not None
        call = await env.store.calls.get(item.last_call_id)
        assert call.end_reason is CallEndReason(result)
        assert call.dialer_item_id == item.id
        assert call.agent_user_id == alice.id

    # The answered call was bridged and recorded.
    answered = items[1]
    assert answered.last_call_id is not None
    bridged = await env.log.wait_for(bus.CallBridged, lambda e: e.call_id == answered.last_call_id)
    assert bridged.recording
    await env.log.wait_for(bus.RecordingReady, lambda e: e.call_id == answered.last_call_id)
    record = await env.store.calls.get(answered.last_call_id)
    assert record.recording_path is not None
    assert record.answered_at is not None

    # The unknown number that answered is now a lead owned by the agent.
    match = await env.store.lookup_caller(plan[1][0])
    assert match is not None
    assert match.kind == "lead"
    assert match.lead is not None
    assert match.lead.source is LeadSource.DIALER
    assert match.lead.owner_user_id == alice.id
    assert record.lead_id == match.id
    result = env.log.events(bus.DialerResult, lambda e: e.item_id == answered.id)
    assert result[0].lead_id == match.id

    # Events for every step, with counters and the agent.
    finished = env.log.events(bus.DialerSessionFinished)[0]
    assert (finished.agent, finished.dialed, finished.answered, finished.remaining) == (
        "alice",
        6,
        1,
        0,
    )
    assert len(env.log.events(bus.DialerGap)) == 4
    assert len(env.log.events(bus.DialerItemClaimed)) == 6
    assert len(env.log.events(bus.DialerDialing)) == 6
    # The finished session hangs up the agent's leg and is gone.
    await env.dialer.wait_session("alice", timeout=10)
    assert env.dialer.sessions() == []
    # Stored session state.
    stored = await env.store.dialer.sessions()
    assert [(s.state, s.dialed, s.answered) for s in stored] == [("finished", 6, 1)]
    print("gaps (lab clock):", [round(g, 4) for g in gaps])


async def test_pause_resume_skip_and_stop(lab: Lab, tmp_path: Path, dialer_env: MakeEnv) -> None:
    config = dialer_config(lab, tmp_path, gap_seconds=1.0, ring_timeout=20)
    env = await dialer_env(config)
    never = customer_number(Behaviour.NEVER_ANSWER, suffix=21)
    never2 = customer_number(Behaviour.NEVER_ANSWER, suffix=22)
    busy = customer_number(Behaviour.BUSY, ring=0, suffix=23)
    call_list, _ = await env.dialer.create_list("controls", [never, never2, busy])
    with pytest.raises(NoSession):
        await env.dialer.pause("alice")
    info = await env.dialer.start_session("alice", call_list.id)
    with pytest.raises(SessionExists):
        await env.dialer.start_session("alice", call_list.id)
    with pytest.raises(UnknownList):
        await env.dialer.start_session("bob", uuid.uuid4())

    # Skip while ringing: the customer's call is hung up, the number is not retried.
    await env.log.wait_for(bus.CallRinging, lambda e: e.agent == "alice")
    await env.dialer.skip("alice")
    skipped = await env.log.wait_for(bus.DialerResult, lambda e: e.number == never)
    assert skipped.result == "skipped"

    # Pause during the gap: nothing more is dialed until resumed.
    await env.dialer.pause("alice")
    assert env.dialer.sessions()[0].phase is Phase.PAUSED
    with pytest.raises(InvalidState):
        await env.dialer.skip("alice")
    assert [i.number for i in lab.customers.invites()] == [never]
    await env.dialer.resume("alice")

    # Stop while ringing: the customer is not left ringing.
    dialing = await env.log.wait_for(bus.DialerDialing, lambda e: e.number == never2)
    await env.log.wait_for(
        bus.CallRinging, lambda e: e.call_id == dialing.call_id and e.leg == "customer", start=0
    )
    await env.dialer.stop("alice")
    stopped = await env.log.wait_for(
        bus.DialerSessionStopped, lambda e: e.session_id == info.session_id, within=10
    )
    assert stopped.reason == "agent"
    result = await env.log.wait_for(bus.DialerResult, lambda e: e.number == never2)
    assert result.result == "cancelled"
    await env.dialer.wait_session("alice", timeout=10)
    assert [i.number for i in lab.customers.invites()] == [never, never2]
    items = {i.number_e164: i for i in await env.store.call_lists.items(call_list.id)}
    assert items[busy].state is CallListItemState.PENDING
    stored = await env.store.dialer.sessions()
    assert stored[0].state == "stopped"


async def test_per_call_agent_leg_is_rung_for_each_answered_call(
    lab: Lab, tmp_path: Path, dialer_env: MakeEnv
) -> None:
    config = dialer_config(lab, tmp_path, agent_leg="per_call", gap_seconds=1.0, wrap_up_seconds=30)
    env = await dialer_env(config)
    busy = customer_number(Behaviour.BUSY, ring=0, suffix=51)
    answers = customer_number(Behaviour.ANSWER, ring=0, talk=2, suffix=52)
    after = customer_number(Behaviour.REJECT, ring=0, suffix=53)
    call_list, _ = await env.dialer.create_list("per call", [busy, answers, after])
    phone = lab.phones["1002"]
    await env.dialer.start_session("bob", call_list.id)

    # The agent's phone is not rung for the busy number, only once the customer answers.
    bridged = await env.log.wait_for(bus.CallBridged, lambda e: e.agent == "bob", within=20)
    assert bridged.recording
    incoming = await phone.wait_incoming(timeout=5)
    assert incoming is not None
    assert [i.number for i in lab.customers.invites()] == [busy, answers]
    await env.log.wait_for(bus.DialerResult, lambda e: e.number == answers, within=10)
    await phone.wait_call_ended(timeout=5)

    # Wrap-up lasts until the disposition (here well before its 30 s).
    assert env.dialer.sessions()[0].phase is Phase.WRAP_UP
    await env.dialer.set_disposition("bob", bridged.call_id, "callback")
    await env.log.wait_for(bus.DialerResult, lambda e: e.number == after, within=10)
    assert (await env.store.calls.get(bridged.call_id)).disposition == "callback"
    assert [i.number for i in lab.customers.invites()] == [busy, answers, after]


async def test_busy_number_is_retried_until_the_maximum(
    lab: Lab, tmp_path: Path, dialer_env: MakeEnv
) -> None:
    config = dialer_config(lab, tmp_path, gap_seconds=1.0, max_attempts=2, retry_busy_minutes=0)
    env = await dialer_env(config)
    busy = customer_number(Behaviour.BUSY, ring=0, suffix=61)
    call_list, _ = await env.dialer.create_list("retry", [busy])
    info = await env.dialer.start_session("alice", call_list.id)
    await env.log.wait_for(bus.DialerSessionFinished, _finished(info.session_id), within=20)
    results = env.log.events(bus.DialerResult)
    assert [r.result for r in results] == ["busy", "busy"]
    assert results[0].retry_at is not None
    assert results[1].retry_at is None
    (item,) = await env.store.call_lists.items(call_list.id)
    assert (item.state, item.attempts) == (CallListItemState.FAILED, 2)
    assert [i.number for i in lab.customers.invites()] == [busy, busy]


async def test_worker_crash_mid_call_pauses_without_redialing(
    lab: Lab, tmp_path: Path, dialer_env: MakeEnv
) -> None:
    env = await dialer_env(dialer_config(lab, tmp_path, gap_seconds=1.0, ring_timeout=20))
    ringing = customer_number(Behaviour.NEVER_ANSWER, suffix=71)
    after = customer_number(Behaviour.BUSY, ring=0, suffix=72)
    call_list, _ = await env.dialer.create_list("crash", [ringing, after])
    await env.dialer.start_session("alice", call_list.id)
    await env.log.wait_for(bus.CallRinging, lambda e: e.agent == "alice", within=10)
    pid = env.pool.status()["t/agent-2001"].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    paused = await env.log.wait_for(bus.DialerSessionPaused, within=10)
    assert paused.reason == "worker_crashed"
    result = await env.log.wait_for(bus.DialerResult, lambda e: e.number == ringing)
    assert result.result == "interrupted"
    # The worker comes back and registers; the agent resumes, the list goes on.
    await env.log.wait_for(bus.WorkerStarted, lambda e: e.restarts == 1, within=10)
    registrations = 0

    def registered_again(e: bus.RegistrationChanged) -> bool:
        nonlocal registrations
        registrations += e.line == "2001" and e.state == "registered"
        return registrations == 2

    await env.log.wait_for(bus.RegistrationChanged, registered_again, within=10)
    await env.dialer.resume("alice")
    await env.log.wait_for(bus.DialerResult, lambda e: e.number == after, within=20)
    assert [i.number for i in lab.customers.invites()] == [ringing, after]
