"""Click-to-call against the lab: the agent's phone, then the customer, bridged and recorded.

Real Kamailio, real SIPp customers with real G.711 audio, real pjsua2 agent phones.
"""

from __future__ import annotations

import asyncio
import uuid
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import bus
from config import LeadsConfig
from crm_store import CallEndReason, ClientKind
from lab import audio
from lab.customers import CUSTOMER_TONE_HZ, Behaviour, customer_number
from lab.phones import PhoneSpec
from lab.pytest_plugin import TEST_EXTENSIONS
from lab.runner import Lab
from sip.exceptions import InvalidNumber, NoCapacity, UnknownAgent, UnknownCall
from tests.sip.conftest import PoolEnv, lab_config

MakeEnv = Callable[..., Awaitable[PoolEnv]]

# Full scale is 1.0; the customers' tone is sent at half scale, a silent WAV is 0.
_AUDIBLE = 0.01
_TONE_PRESENT = 0.02


@pytest.fixture
def lab_extensions() -> dict[str, str]:
    return {**TEST_EXTENSIONS, "1004": "lab-phone-1004", "2004": "lab-line-2004"}


@pytest.fixture
def lab_phones() -> list[str | PhoneSpec]:
    """alice answers, bob answers, carol never answers, dave rejects."""
    return [
        "1001",
        "1002",
        PhoneSpec("1003", mode="never"),
        PhoneSpec("1004", mode="reject", reject_code=603),
    ]


AGENTS = {
    "alice": ("1001", "2001"),
    "bob": ("1002", "2002"),
    "carol": ("1003", "2003"),
    "dave": ("1004", "2004"),
}


@pytest.fixture
async def env(lab: Lab, tmp_path: Path, pool_env: MakeEnv) -> PoolEnv:
    e = await pool_env(lab_config(lab, tmp_path, agents=AGENTS), agent_timeout=3.0)
    for line in ("2001", "2002", "2003", "2004"):
        await e.log.wait_for(bus.RegistrationChanged, _registered(line))
    return e


def _registered(line: str) -> Callable[[bus.RegistrationChanged], bool]:
    return lambda e: e.line == line and e.state == "registered"


def _ended(call_id: uuid.UUID) -> Callable[[bus.CallEnded], bool]:
    return lambda e: e.call_id == call_id


async def test_lines_register_on_the_pbx(env: PoolEnv, lab: Lab) -> None:
    for line in ("2001", "2002", "2003", "2004"):
        assert await lab.pbx.contacts(line), f"line {line} has no contact on the PBX"
    status = env.pool.status()
    assert set(status) == {"t/agent-2001", "t/agent-2002", "t/agent-2003", "t/agent-2004"}
    assert all(s.alive and s.registrations == {s.lines[0]: "registered"} for s in status.values())
    started = env.log.events(bus.WorkerStarted)
    assert {e.worker_id for e in started} == set(status)
    assert len({e.pid for e in started}) == 4


async def test_click_to_call_bridges_and_records(env: PoolEnv, lab: Lab) -> None:
    number = customer_number(Behaviour.ANSWER, ring=1, talk=3, suffix=1)
    call_id = await env.calls.click_to_call(agent="alice", number=number)

    created = await env.log.wait_for(bus.CallCreated, lambda e: e.call_id == call_id)
    assert (created.to_number, created.line, created.agent) == (number, "2001", "alice")
    await lab.phones["1001"].wait_call_answered(timeout=5)
    customer_dialed = await env.log.wait_for(
        bus.CallDialing, lambda e: e.call_id == call_id and e.leg == "customer"
    )
    await env.log.wait_for(bus.CallRinging, lambda e: e.call_id == call_id and e.leg == "customer")
    bridged = await env.log.wait_for(bus.CallBridged, lambda e: e.call_id == call_id)
    assert bridged.recording
    ended = await env.log.wait_for(bus.CallEnded, _ended(call_id), within=10)
    assert (ended.reason, ended.leg) == ("completed", "customer")
    assert ended.talk_seconds is not None
    assert abs(ended.talk_seconds - 3.0) < 0.6
    ready = await env.log.wait_for(bus.RecordingReady, lambda e: e.call_id == call_id)

    # The agent's phone was hung up too.
    await lab.phones["1001"].wait_call_ended(timeout=5)

    # The recording: named by the call id, the talk time long, and not silent.
    path = Path(ready.path)
    assert path == Path(env.config.recording.directory) / f"{call_id}.wav"
    with wave.open(str(path), "rb") as wav:
        duration = wav.getnframes() / wav.getframerate()
    assert abs(duration - 3.0) <= 0.5, duration
    assert abs(ready.duration_seconds - duration) < 0.05
    assert audio.rms(path) > _AUDIBLE, "the recording is silent"
    assert audio.tone_level(path, CUSTOMER_TONE_HZ) > _TONE_PRESENT, "no customer in it"
    assert audio.tone_level(path, lab.phones["1001"].tone_hz) > _TONE_PRESENT, "no agent in it"

    record = await env.store.calls.get(call_id)
    assert record.direction == "outbound"
    assert (record.from_number, record.to_number, record.line) == ("2001", number, "2001")
    assert (record.origin, record.worker_id) == ("t", "t/agent-2001")
    alice = await env.store.users.by_username("alice")
    assert alice is not None
    assert record.agent_user_id == alice.id
    assert record.ringing_at is not None
    assert record.answered_at is not None
    assert record.ended_at is not None
    assert record.ended_at > record.answered_at
    assert record.end_reason is CallEndReason.COMPLETED
    assert record.recording_path == str(path)
    assert record.recording_duration == pytest.approx(duration, abs=0.05)

    # The benchmark hook: the customer's INVITE came after the originate was sent.
    invite = next(i for i in lab.customers.invites() if i.number == number)
    latency = invite.at - customer_dialed.dialed_at.timestamp()
    assert 0 <= latency < 0.5, latency
    assert env.pool.stats.originate_of(str(call_id)) is not None


@pytest.mark.parametrize(
    ("behaviour", "ring", "reason", "code"),
    [
        (Behaviour.BUSY, 1, "busy", 486),
        (Behaviour.NEVER_ANSWER, 0, "no_answer", 0),
        (Behaviour.REJECT, 1, "rejected", 603),
        (Behaviour.UNREACHABLE, 0, "unreachable", 480),
    ],
)
async def test_customer_not_reached_ends_with_its_reason(
    env: PoolEnv, lab: Lab, behaviour: Behaviour, ring: int, reason: str, code: int
) -> None:
    number = customer_number(behaviour, ring=ring, suffix=2)
    call_id = await env.calls.click_to_call(agent="alice", number=number, ring_timeout=2.0)
    ended = await env.log.wait_for(bus.CallEnded, _ended(call_id), within=10)
    assert (ended.reason, ended.sip_code, ended.leg) == (reason, code, "customer")
    assert ended.talk_seconds is None
    # The agent, who had answered, is hung up on.
    agent_end = await lab.phones["1001"].wait_call_ended(timeout=5)
    assert agent_end.data["code"] == 200
    record = await env.store.calls.get(call_id)
    assert record.end_reason == CallEndReason(reason)
    assert record.answered_at is None
    assert record.recording_path is None
    assert not env.log.events(bus.CallBridged)
    assert [i.number for i in lab.customers.invites()] == [number]


async def test_agent_not_answering_never_dials_the_customer(env: PoolEnv, lab: Lab) -> None:
    number = customer_number(Behaviour.ANSWER, talk=3, suffix=3)
    call_id = await env.calls.click_to_call(agent="carol", number=number)
    await env.log.wait_for(bus.CallRinging, lambda e: e.call_id == call_id and e.leg == "agent")
    ended = await env.log.wait_for(bus.CallEnded, _ended(call_id), within=6)
    assert (ended.reason, ended.leg) == ("no_answer", "agent")
    await lab.phones["1003"].wait_call_ended(timeout=5)
    record = await env.store.calls.get(call_id)
    assert record.end_reason is CallEndReason.NO_ANSWER
    assert record.ringing_at is None
    assert record.answered_at is None
    assert lab.customers.invites() == []


async def test_agent_rejecting_ends_the_call(env: PoolEnv, lab: Lab) -> None:
    number = customer_number(Behaviour.ANSWER, talk=3, suffix=4)
    call_id = await env.calls.click_to_call(agent="dave", number=number)
    ended = await env.log.wait_for(bus.CallEnded, _ended(call_id), within=6)
    assert (ended.reason, ended.sip_code, ended.leg) == ("rejected", 603, "agent")
    assert (await env.store.calls.get(call_id)).end_reason is CallEndReason.REJECTED
    assert lab.customers.invites() == []


async def test_agent_hanging_up_ends_the_customer_leg(env: PoolEnv, lab: Lab) -> None:
    number = customer_number(Behaviour.ANSWER, talk=0, suffix=5)  # talks until hung up
    phone = lab.phones["1002"]
    call_id = await env.calls.click_to_call(agent="bob", number=number)
    await env.log.wait_for(bus.CallBridged, lambda e: e.call_id == call_id)
    answered = await phone.wait_call_answered(timeout=5)
    assert answered.call_id is not None
    await phone.hangup_call_id(answered.call_id)
    ended = await env.log.wait_for(bus.CallEnded, _ended(call_id), within=5)
    assert (ended.reason, ended.leg) == ("completed", "agent")
    await env.log.wait_for(bus.RecordingReady, lambda e: e.call_id == call_id)


async def test_hangup_through_the_service(env: PoolEnv, lab: Lab) -> None:
    number = customer_number(Behaviour.ANSWER, talk=0, suffix=6)
    call_id = await env.calls.click_to_call(agent="bob", number=number)
    await env.log.wait_for(bus.CallBridged, lambda e: e.call_id == call_id)
    await env.calls.hangup(call_id)
    ended = await env.log.wait_for(bus.CallEnded, _ended(call_id))
    assert (ended.reason, ended.leg) == ("completed", None)
    await lab.phones["1002"].wait_call_ended(timeout=5)
    assert env.calls.active_calls() == []


async def test_refusals_before_anything_is_dialed(env: PoolEnv, lab: Lab) -> None:
    with pytest.raises(UnknownAgent):
        await env.calls.click_to_call(agent="nobody", number="+33123456789")
    with pytest.raises(InvalidNumber):
        await env.calls.click_to_call(agent="alice", number="not a number")
    with pytest.raises(UnknownCall):
        await env.calls.hangup(uuid.uuid4())
    with pytest.raises(UnknownCall):
        await env.pool.hangup("no-such-leg")
    # carol never answers: two calls hold all four slots of her worker.
    numbers = [customer_number(Behaviour.ANSWER, suffix=n) for n in (71, 72, 73)]
    first = await env.calls.click_to_call(agent="carol", number=numbers[0])
    second = await env.calls.click_to_call(agent="carol", number=numbers[1])
    with pytest.raises(NoCapacity):
        await env.calls.click_to_call(agent="carol", number=numbers[2])
    await asyncio.gather(env.calls.hangup(first), env.calls.hangup(second))
    assert env.pool.free_slots("t/agent-2003") == 4
    assert len(await env.store.calls.list_recent()) == 2


async def test_an_answered_unknown_number_becomes_the_agents_lead(env: PoolEnv, lab: Lab) -> None:
    number = customer_number(Behaviour.ANSWER, ring=0, talk=1, suffix=81)
    busy = customer_number(Behaviour.BUSY, suffix=82)
    answered = await env.calls.click_to_call(agent="alice", number=number)
    await env.log.wait_for(bus.CallEnded, _ended(answered), within=10)
    not_answered = await env.calls.click_to_call(agent="alice", number=busy)
    await env.log.wait_for(bus.CallEnded, _ended(not_answered), within=10)

    match = await env.store.lookup_caller(number)
    assert match is not None
    assert match.kind == "lead"
    assert match.lead is not None
    alice = await env.store.users.by_username("alice")
    assert alice is not None
    assert (match.lead.source, match.lead.owner_user_id) == ("outgoing_call", alice.id)
    assert (await env.store.calls.get(answered)).lead_id == match.id
    # A number nobody answered stays unknown.
    assert await env.store.lookup_caller(busy) is None
    assert (await env.store.calls.get(not_answered)).lead_id is None


async def test_an_answered_known_client_is_linked_not_duplicated(env: PoolEnv, lab: Lab) -> None:
    number = customer_number(Behaviour.ANSWER, ring=0, talk=1, suffix=83)
    client = await env.store.clients.create(ClientKind.PERSON, first_name="Known", phones=[number])
    call_id = await env.calls.click_to_call(agent="bob", number=number)
    await env.log.wait_for(bus.CallEnded, _ended(call_id), within=10)
    record = await env.store.calls.get(call_id)
    assert (record.client_id, record.lead_id) == (client.id, None)
    assert await env.store.leads.pool() == []


async def test_outgoing_leads_can_be_switched_off(
    lab: Lab, tmp_path: Path, pool_env: MakeEnv
) -> None:
    config = lab_config(lab, tmp_path, agents={"alice": AGENTS["alice"]})
    config = config.model_copy(update={"leads": LeadsConfig(from_outgoing_calls=False)})
    e = await pool_env(config, agent_timeout=3.0)
    await e.log.wait_for(bus.RegistrationChanged, _registered("2001"))
    number = customer_number(Behaviour.ANSWER, ring=0, talk=1, suffix=84)
    call_id = await e.calls.click_to_call(agent="alice", number=number)
    ended = await e.log.wait_for(bus.CallEnded, _ended(call_id), within=10)
    assert ended.reason == "completed"
    assert await e.store.lookup_caller(number) is None
    assert (await e.store.calls.get(call_id)).lead_id is None
