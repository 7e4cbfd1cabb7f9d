"""Inbound calls against the lab: a reception line registered once, calls moved by 302.

Real Kamailio (parallel forking to the workers' registrations), real SIPp customers
calling in with G.711 audio, real pjsua2 agent phones answering and recording. Every
wait is on a bus event, the store or a peer, with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import statistics
import uuid
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import bus
from config import Config
from crm_store import CallEndReason, ClientKind, LeadSource, LeadStatus, NotFound
from lab import audio
from lab.customers import CUSTOMER_TONE_HZ, Behaviour, customer_number
from lab.phones import PhoneSpec
from lab.pytest_plugin import TEST_EXTENSIONS
from lab.runner import Lab
from sip.control import CallControl, InboundLegs
from sip.exceptions import CallNotReady, UnknownCall
from sip.inbound import InboundPhase, PresenceBook, losing_branch_code
from sip.legs import CallLegs
from tests.sip.conftest import InboundEnv, lab_config, with_inbound

MakeInbound = Callable[..., Awaitable[InboundEnv]]

_AUDIBLE = 0.01
_TONE_PRESENT = 0.02
#: Seconds of conversation whose audio a test then measures.
_TALK = 1.5
RECEPTION = "2100"
AGENTS = {
    "alice": ("1001", "2001"),
    "bob": ("1002", "2002"),
    "carol": ("1003", "2003"),
    "dave": ("1004", "2004"),
}


@pytest.fixture
def lab_extensions() -> dict[str, str]:
    return {**TEST_EXTENSIONS, "1004": "lab-phone-1004", "2004": "lab-line-2004"}


@pytest.fixture
def lab_phones() -> list[str | PhoneSpec]:
    """alice and bob answer, carol never answers, dave rejects (603)."""
    return [
        "1001",
        "1002",
        PhoneSpec("1003", mode="never"),
        PhoneSpec("1004", mode="reject", reject_code=603),
    ]


def _config(lab: Lab, tmp_path: Path, **inbound: object) -> Config:
    config = lab_config(lab, tmp_path, agents=AGENTS, reception=(RECEPTION,))
    return with_inbound(config, **inbound) if inbound else config


async def _ready(ie: InboundEnv, lab: Lab) -> None:
    """Every line registered; the reception line once, by its own worker only."""
    for line in ("2001", "2002", "2003", "2004", RECEPTION):
        await ie.env.log.wait_for(
            bus.RegistrationChanged, lambda e, line=line: e.line == line and e.state == "registered"
        )
    assert len(await lab.pbx.contacts(RECEPTION)) == 1


@pytest.fixture
async def ready(
    lab: Lab, tmp_path: Path, inbound_env: MakeInbound
) -> Callable[..., Awaitable[InboundEnv]]:
    async def make(**inbound: object) -> InboundEnv:
        ie = await inbound_env(_config(lab, tmp_path, **inbound))
        await _ready(ie, lab)
        return ie

    return make


async def _created_from(ie: InboundEnv, number: str, start: int = 0) -> bus.CallCreated:
    return await ie.env.log.wait_for(
        bus.CallCreated,
        lambda e: e.direction == "inbound" and e.from_number == number,
        start=start,
    )


def _alice_available_with_control(ie: InboundEnv, **settings: float) -> CallControl:
    """Alice available, and call control over the inbound calls."""
    ie.presence.set_available("alice")
    env = ie.env
    directory = InboundLegs(ie.inbound, env.pool)
    return CallControl(
        env.pool, config=env.config, bus=env.bus, directories=[directory], **settings
    )


def _legs(ie: InboundEnv, call_id: uuid.UUID) -> CallLegs:
    legs = ie.inbound.legs(call_id)
    assert legs is not None, f"the inbound service does not hold {call_id}"
    return legs


def _of(call_id: uuid.UUID) -> Callable[[bus.Event], bool]:
    return lambda e: getattr(e, "call_id", None) == call_id


def test_presence_book_offers_free_agents_by_strategy() -> None:
    now = [100.0]
    book = PresenceBook(["alice", "bob", "carol"], clock=lambda: now[0])
    changes: list[str] = []
    remove = book.add_listener(lambda: changes.append("x"))
    assert book.offer_order() == []
    assert book.state("alice") == "offline"
    for agent in ("carol", "alice", "bob"):
        now[0] += 1
        book.set_available(agent)
    assert book.offer_order() == ["carol", "alice", "bob"]  # idle longest first
    book.call_started("carol")
    assert (book.state("carol"), book.idle_since("carol")) == ("busy", None)
    assert book.offer_order() == ["alice", "bob"]
    now[0] += 1
    book.set_paused("carol", "lunch")  # during the call: paused once it ends
    book.call_ended("carol")
    assert (book.state("carol"), book.reason("carol")) == ("paused", "lunch")
    book.set_available("carol")
    assert book.offer_order() == ["alice", "bob", "carol"]  # idle only since now
    book.call_ended("carol")  # an extra end is ignored
    book.strategy = "in_order"
    book.set_offline("alice")
    assert book.offer_order() == ["bob", "carol"]
    book.set_available("dave")  # unknown agents are added at the end
    assert book.offer_order() == ["bob", "carol", "dave"]
    assert len(changes) == 9
    remove()
    book.set_offline("dave")
    assert len(changes) == 9


@pytest.mark.parametrize(
    ("reject_code", "loser"), [(480, 486), (404, 486), (486, 486), (487, 487), (603, 486)]
)
def test_losing_branches_never_beat_the_reject_code(reject_code: int, loser: int) -> None:
    assert losing_branch_code(reject_code) == loser


@pytest.mark.parametrize("lab_pbx_mode", ["proxy", "b2bua"])
async def test_call_is_offered_to_the_longest_idle_agent_bridged_and_recorded_in_its_worker(
    ready: Callable[..., Awaitable[InboundEnv]], lab: Lab
) -> None:
    ie = await ready(agent_ring_seconds=10)
    env = ie.env
    ie.presence.set_available("bob")
    ie.presence.set_available("alice")  # bob has been idle longer
    number = "+33612340001"
    customer = await lab.customers.call(RECEPTION, number, talk_seconds=4)

    created = await _created_from(ie, number)
    call_id = created.call_id
    assert (created.to_number, created.line, created.agent) == (RECEPTION, RECEPTION, None)
    ringing = await env.log.wait_for(
        bus.CallRinging, lambda e: e.call_id == call_id and e.leg == "customer"
    )
    assert (ringing.agent, ringing.direction, ringing.from_number, ringing.to_number) == (
        None,
        "inbound",
        number,
        RECEPTION,
    )
    card = ringing.card
    assert card is not None
    assert (card["kind"], card["created"], card["phone"]) == ("lead", True, number)
    assert (card["source"], card["status"], card["owner_user_id"], card["tags"]) == (
        "incoming_call",
        "unprocessed",
        None,
        [],
    )
    offered = await env.log.wait_for(
        bus.CallRinging, lambda e: e.call_id == call_id and e.leg == "agent"
    )
    assert (offered.agent, offered.card, offered.direction) == ("bob", card, "inbound")
    dialing = env.log.events(bus.CallDialing, _of(call_id))
    assert [(d.leg, d.agent) for d in dialing] == [("agent", "bob")]

    bridged = await env.log.wait_for(bus.CallBridged, _of(call_id))
    assert (bridged.agent, bridged.recording) == ("bob", True)
    legs = _legs(ie, call_id)
    bob_worker = env.pool.worker_for_line("2002")
    assert legs.worker_id == bob_worker
    assert legs.agent == "bob"
    (snapshot,) = ie.inbound.active_calls()
    assert (snapshot.call_id, snapshot.state, snapshot.agent) == (
        call_id,
        InboundPhase.BRIDGED,
        "bob",
    )
    assert ie.presence.state("bob") == "busy"
    assert ie.presence.offer_order() == ["alice"]

    ended = await env.log.wait_for(bus.CallEnded, _of(call_id), within=10)
    assert (ended.reason, ended.agent, ended.leg) == ("completed", "bob", "customer")
    assert ended.talk_seconds is not None
    assert abs(ended.talk_seconds - 4.0) < 0.8
    ready_ = await env.log.wait_for(bus.RecordingReady, _of(call_id))
    assert await customer.wait(timeout=5), "the customer's call did not end cleanly"
    await lab.phones["1002"].wait_call_ended(timeout=5)

    # Only bob's phone rang; the other workers' branches were refused.
    assert not [e for e in lab.phones["1001"].events if e.kind == "incoming"]
    answered = env.log.events(bus.CallAnswered, _of(call_id))
    assert [(a.leg, a.agent) for a in answered] == [("agent", "bob"), ("customer", "bob")]

    # The recording: named by the call id, not silent, with caller and agent in it.
    path = Path(ready_.path)
    assert path == Path(env.config.recording.directory) / f"{call_id}.wav"
    with wave.open(str(path), "rb") as wav:
        duration = wav.getnframes() / wav.getframerate()
    assert abs(duration - 4.0) <= 0.8, duration
    assert audio.rms(path) > _AUDIBLE, "the recording is silent"
    assert audio.tone_level(path, CUSTOMER_TONE_HZ) > _TONE_PRESENT, "no caller in it"
    assert audio.tone_level(path, lab.phones["1002"].tone_hz) > _TONE_PRESENT, "no agent in it"

    record = await env.store.calls.get(call_id)
    bob = await env.store.users.by_username("bob")
    assert bob is not None
    assert record.direction == "inbound"
    assert (record.from_number, record.to_number, record.line) == (number, RECEPTION, RECEPTION)
    assert (record.worker_id, record.agent_user_id) == (bob_worker, bob.id)
    assert record.lead_id == uuid.UUID(card["id"])
    assert record.answered_at is not None
    assert record.end_reason is CallEndReason.COMPLETED
    assert record.recording_path == str(path)
    if lab.b2bua is None:
        assert record.sip_call_id == customer.call_id
    else:  # the Call-ID of the dialog the B2BUA placed to the reception line
        assert record.sip_call_id == lab.b2bua.branch_call_ids(customer.call_id)[0]
    lead = await env.store.leads.get(uuid.UUID(card["id"]))
    assert (lead.source, lead.owner_user_id) == (LeadSource.INCOMING_CALL, bob.id)
    assert lead.status is LeadStatus.UNPROCESSED
    assert ie.presence.state("bob") == "available"
    assert ie.presence.offer_order() == ["alice", "bob"]  # bob idle only since now
    assert ie.inbound.active_calls() == []


async def test_one_lead_per_number_even_for_two_calls_at_once_and_client_cards(
    ready: Callable[..., Awaitable[InboundEnv]], lab: Lab
) -> None:
    # Nobody available: every call is missed after 2 s, which is all this test needs.
    ie = await ready(no_agent_timeout=2)
    env = ie.env
    alice = await env.store.users.by_username("alice")
    assert alice is not None
    client = await env.store.clients.create(
        ClientKind.COMPANY,
        name="Known SARL",
        phones=["+33612340003"],
        tags=["vip"],
        responsible_user_id=alice.id,
    )
    number = "+33612340002"
    calls = await asyncio.gather(
        lab.customers.call(RECEPTION, number, expect_code=480),
        lab.customers.call(RECEPTION, number, expect_code=480),
        lab.customers.call(RECEPTION, "+33612340003", expect_code=480),
    )
    first = await _created_from(ie, number)
    second = await env.log.wait_for(
        bus.CallCreated,
        lambda e: e.from_number == number and e.call_id != first.call_id,
    )
    cards = []
    for created in (first, second):
        ringing = await env.log.wait_for(
            bus.CallRinging, lambda e, c=created: e.call_id == c.call_id and e.leg == "customer"
        )
        assert ringing.card is not None
        cards.append(ringing.card)
    assert cards[0]["id"] == cards[1]["id"]
    assert sorted(c["created"] for c in cards) == [False, True]
    assert {c["kind"] for c in cards} == {"lead"}

    known = await _created_from(ie, "+33612340003")
    ringing = await env.log.wait_for(
        bus.CallRinging, lambda e: e.call_id == known.call_id and e.leg == "customer"
    )
    assert ringing.card == {
        "kind": "client",
        "id": str(client.id),
        "display_name": "Known SARL",
        "phone": "+33612340003",
        "created": False,
        "client_kind": "company",
        "company": "Known SARL",
        "tags": ["vip"],
        "responsible_user_id": str(alice.id),
    }
    for call in calls:
        assert await call.wait(timeout=10), "a caller was not refused with 480"
    # The record is written after the ringing is announced; the call's end follows it.
    await env.log.wait_for(bus.CallEnded, _of(known.call_id), within=5)
    assert (await env.store.calls.get(known.call_id)).client_id == client.id

    # A third call from the number later: the same lead, not created.
    mark = env.log.mark()
    again = await lab.customers.call(RECEPTION, number, expect_code=480)
    third = await _created_from(ie, number, start=mark)
    ringing = await env.log.wait_for(
        bus.CallRinging, lambda e: e.call_id == third.call_id and e.leg == "customer"
    )
    assert ringing.card is not None
    assert (ringing.card["id"], ringing.card["created"]) == (cards[0]["id"], False)
    assert await again.wait(timeout=10)
    leads = [lead for lead in await env.store.leads.pool() if lead.source == "incoming_call"]
    assert [str(lead.id) for lead in leads] == [cards[0]["id"]]


@pytest.mark.parametrize("lab_pbx_mode", ["proxy", "b2bua"])
async def test_agent_not_answering_then_rejecting_passes_the_call_on(
    ready: Callable[..., Awaitable[InboundEnv]], lab: Lab
) -> None:
    ie = await ready(strategy="in_order", agent_ring_seconds=2)
    env = ie.env
    # in_order follows [[agents]]: alice, bob, carol, dave; alice and bob are away.
    for agent in ("carol", "dave", "alice"):
        ie.presence.set_available(agent)
    ie.presence.set_paused("alice", "lunch")
    ie.presence.set_available("alice")  # back: still after carol and dave in order
    assert ie.presence.offer_order() == ["alice", "carol", "dave"]
    ie.presence.set_offline("alice")
    ie.presence.set_available("alice")
    ie.presence.set_paused("alice")
    assert ie.presence.offer_order() == ["carol", "dave"]

    number = "+33612340004"
    customer = await lab.customers.call(RECEPTION, number, talk_seconds=3)
    created = await _created_from(ie, number)
    call_id = created.call_id
    carol_rings = await env.log.wait_for(
        bus.CallRinging, lambda e: e.call_id == call_id and e.leg == "agent"
    )
    assert carol_rings.agent == "carol"
    # Carol's phone rings out after 2 s, then dave's rejects; alice comes back then
    # (in_order would have offered it to her before dave).
    await lab.phones["1003"].wait_incoming(timeout=5)
    await lab.phones["1004"].wait_incoming(timeout=6)
    ie.presence.set_available("alice")
    bridged = await env.log.wait_for(bus.CallBridged, _of(call_id), within=10)
    assert bridged.agent == "alice"
    assert [d.agent for d in env.log.events(bus.CallDialing, _of(call_id))] == [
        "carol",
        "dave",
        "alice",
    ]
    # The call moved (a 302 each time) to the worker of each agent offered it, and
    # was carried by alice's in the end.
    alice_worker = env.pool.worker_for_line("2001")
    assert _legs(ie, call_id).worker_id == alice_worker
    assert ie.inbound.stats.moves == 3
    ended = await env.log.wait_for(bus.CallEnded, _of(call_id), within=10)
    assert (ended.reason, ended.agent) == ("completed", "alice")
    await lab.phones["1003"].wait_call_ended(timeout=5)
    assert await customer.wait(timeout=5)
    record = await env.store.calls.get(call_id)
    alice = await env.store.users.by_username("alice")
    assert alice is not None
    assert (record.worker_id, record.agent_user_id) == (alice_worker, alice.id)
    ready_ = await env.log.wait_for(bus.RecordingReady, _of(call_id))
    path = Path(ready_.path)
    assert audio.tone_level(path, CUSTOMER_TONE_HZ) > _TONE_PRESENT
    assert audio.tone_level(path, lab.phones["1001"].tone_hz) > _TONE_PRESENT
    assert {a: ie.presence.state(a) for a in ("carol", "dave", "alice")} == {
        "carol": "available",
        "dave": "available",
        "alice": "available",
    }


async def test_an_agent_answers_from_the_widget_and_their_phone_answers_by_itself(
    ready: Callable[..., Awaitable[InboundEnv]], lab: Lab
) -> None:
    ie = await ready(strategy="in_order", agent_ring_seconds=10)
    env = ie.env
    number = "+33612340009"
    customer = await lab.customers.call(RECEPTION, number, talk_seconds=3)
    created = await _created_from(ie, number)
    call_id = created.call_id
    # Nobody is available: the call waits and rings at no phone; nothing to answer.
    await env.log.wait_for(bus.CallRinging, lambda e: e.call_id == call_id)
    with pytest.raises(CallNotReady):
        await ie.inbound.answer(call_id, ["carol"])
    # Carol's phone (never answers by itself) is offered the call and rings.
    ie.presence.set_available("carol")
    await env.log.wait_for(
        bus.CallRinging, lambda e: e.call_id == call_id and e.leg == "agent", within=5
    )
    first = await lab.phones["1003"].wait_incoming(timeout=5)
    assert first.data["auto_answer"] is None
    with pytest.raises(CallNotReady, match="another agent"):
        await ie.inbound.answer(call_id, ["bob"])
    with pytest.raises(UnknownCall):
        await ie.inbound.answer(uuid.uuid4(), ["carol"])
    # Carol answers from her widget: the ringing leg is replaced by one her phone
    # answers by itself, and the call goes on as if she had picked up.
    assert await ie.inbound.answer(call_id, ["carol", "someone-else"]) == "carol"
    bridged = await env.log.wait_for(bus.CallBridged, _of(call_id), within=10)
    assert bridged.agent == "carol"
    answered = await lab.phones["1003"].wait_call_answered(timeout=5)
    auto = await lab.phones["1003"].wait_for(
        lambda e: e.kind == "incoming" and e.call_id == answered.call_id, timeout=1
    )
    assert auto.data["auto_answer"] == 0
    assert answered.call_id != first.call_id
    # Asked again once connected: answered already, by her.
    assert await ie.inbound.answer(call_id, ["carol"]) == "carol"
    assert [d.agent for d in env.log.events(bus.CallDialing, _of(call_id))] == ["carol", "carol"]
    ended = await env.log.wait_for(bus.CallEnded, _of(call_id), within=10)
    assert (ended.reason, ended.agent) == ("completed", "carol")
    assert await customer.wait(timeout=5)
    assert ie.presence.state("carol") == "available"


async def test_an_inbound_caller_is_blind_transferred_to_a_colleague(
    ready: Callable[..., Awaitable[InboundEnv]], lab: Lab
) -> None:
    ie = await ready()
    env = ie.env
    control = _alice_available_with_control(ie)
    # Dave's desk phone calls the reception line, as a customer's phone would: unlike
    # SIPp, it follows a REFER.
    caller = lab.phones["1004"]
    placed = await caller.call(lab.uri(RECEPTION))
    created = await env.log.wait_for(
        bus.CallCreated, lambda e: e.direction == "inbound" and e.from_number == "1004"
    )
    call_id = created.call_id
    bridged = await env.log.wait_for(bus.CallBridged, _of(call_id), within=10)
    assert bridged.agent == "alice"

    bob = lab.phones["1002"]
    mark = len(bob.events)
    await control.transfer_blind(call_id, "1002")
    transfer = await caller.wait_transfer(timeout=10)
    outcome = await env.log.wait_for(
        bus.CallTransferred, lambda e: e.call_id == call_id and e.state != "started", within=10
    )
    assert (outcome.state, outcome.target, outcome.agent, outcome.kind) == (
        "completed",
        "1002",
        "alice",
        "blind",
    )
    started = env.log.events(bus.CallTransferred, lambda e: e.call_id == call_id)[0]
    assert (started.state, started.target) == ("started", "1002")
    ended = await env.log.wait_for(bus.CallEnded, _of(call_id), within=10)
    assert (ended.reason, ended.agent) == ("transferred", "alice")
    # The caller now talks to bob, on the call the REFER made it place.
    answered = await bob.wait_call_answered(timeout=10, start=mark)
    assert transfer.answered
    assert transfer.call_id == answered.call_id
    async with asyncio.timeout(10):
        await placed.ended.wait()  # the transferred call itself is over
    await caller.hangup(transfer)
    await bob.wait_call_ended(timeout=10, call_id=answered.call_id)
    record = await env.store.calls.get(call_id)
    assert record.end_reason is CallEndReason.TRANSFERRED


async def test_an_inbound_caller_is_transferred_after_a_consultation(
    ready: Callable[..., Awaitable[InboundEnv]], lab: Lab
) -> None:
    ie = await ready()
    env = ie.env
    control = _alice_available_with_control(ie, consult_timeout=3)
    caller, alice, bob = lab.phones["1004"], lab.phones["1001"], lab.phones["1002"]
    placed = await caller.call(lab.uri(RECEPTION))
    created = await env.log.wait_for(
        bus.CallCreated, lambda e: e.direction == "inbound" and e.from_number == "1004"
    )
    call_id = created.call_id
    await env.log.wait_for(bus.CallBridged, _of(call_id), within=10)
    here = _legs(ie, call_id)
    customer_leg, agent_leg = here.customer_leg, here.agent_leg
    await asyncio.sleep(_TALK)  # the caller and alice talk: the audio measured below

    def transfers() -> list[tuple[str, str, str | None]]:
        return [
            (e.state, e.target, e.reason)
            for e in env.log.events(bus.CallTransferred, _of(call_id))
            if e.kind == "attended"
        ]

    # Carol's phone never answers: the consultation fails, the caller stays with alice.
    with pytest.raises(TimeoutError):
        await control.transfer_attended(call_id, "1003")
    assert transfers() == [("started", "1003", None), ("failed", "1003", "no_answer")]
    assert _legs(ie, call_id).agent_leg == agent_leg
    # Bob answers; alice talks with him, then thinks better of it.
    await control.transfer_attended(call_id, "1002")
    bob_first = await bob.wait_call_answered(timeout=5)
    with pytest.raises(CallNotReady, match="already under way"):
        await control.transfer_attended(call_id, "1002")
    await control.transfer_cancel(call_id)
    await bob.wait_call_ended(timeout=5, call_id=bob_first.call_id)
    assert transfers()[2:] == [
        ("started", "1002", None),
        ("consulting", "1002", None),
        ("failed", "1002", "cancelled"),
    ]
    with pytest.raises(CallNotReady):
        await control.transfer_complete(call_id)
    # Again, and this time the caller goes to bob; alice's phone is hung up.
    mark = len(bob.events)
    await control.transfer_attended(call_id, "1002")
    bob_call = await bob.wait_call_answered(timeout=5, start=mark)
    await control.transfer_complete(call_id)
    assert transfers()[-1] == ("completed", "1002", None)
    await alice.wait_call_ended(timeout=5)
    legs = _legs(ie, call_id)
    assert (legs.customer_leg, legs.agent) == (customer_leg, "alice")
    assert legs.agent_leg != agent_leg
    assert not env.log.events(bus.CallEnded, _of(call_id))  # alice leaving ends nothing
    # The caller and bob talk (the audio measured below) until the caller hangs up;
    # then the call ends.
    talk_from = len(caller.events)
    await asyncio.sleep(_TALK)
    await caller.hangup(placed)
    ended = await env.log.wait_for(bus.CallEnded, _of(call_id), within=10)
    assert (ended.reason, ended.agent) == ("completed", "alice")
    await bob.wait_call_ended(timeout=5, call_id=bob_call.call_id)
    finished = await caller.wait_for(
        lambda e: e.kind == "ended" and e.call_id == placed.call_id, timeout=10, start=talk_from
    )
    # The caller heard bob (connected to him only by the transfer) and alice before.
    heard = Path(str(finished.data["recording"]))
    assert audio.tone_level(heard, bob.tone_hz) > _TONE_PRESENT
    assert audio.tone_level(heard, alice.tone_hz) > _TONE_PRESENT
    record = await env.store.calls.get(call_id)
    assert record.end_reason is CallEndReason.COMPLETED


async def test_the_ringing_comes_before_the_record_and_a_note_can_wait_for_it(
    ready: Callable[..., Awaitable[InboundEnv]], lab: Lab
) -> None:
    ie = await ready(no_agent_timeout=3)
    env = ie.env
    number = "+33612340011"
    # A known caller: a read identifies them; the call record is the only write.
    client = await env.store.clients.create(
        ClientKind.PERSON, first_name="Lucie", last_name="Moreau", phones=[number]
    )
    # Another connection holds the database's write lock, as a long write would.
    path = env.store.engine.url.database
    assert path is not None
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        customer = await lab.customers.call(RECEPTION, number, expect_code=480)
        created = await _created_from(ie, number)
        ringing = await env.log.wait_for(
            bus.CallRinging, lambda e: e.call_id == created.call_id and e.leg == "customer"
        )
        assert ringing.card is not None
        assert ringing.card["id"] == str(client.id)
        # Announced, not yet recorded: a note would find no call; waiting for the
        # record does not return while the write cannot happen.
        with pytest.raises(NotFound):
            await env.store.calls.get(created.call_id)
        waiting = asyncio.create_task(ie.inbound.record_ready(created.call_id))
        done, _ = await asyncio.wait({waiting}, timeout=0.5)
        assert not done
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await waiting
    await env.store.calls.set_note(created.call_id, "asked for a callback")
    record = await env.store.calls.get(created.call_id)
    assert (record.client_id, record.note) == (client.id, "asked for a callback")
    # A call that is not in progress (ended, or never inbound) does not wait.
    await ie.inbound.record_ready(uuid.uuid4())
    assert await customer.wait(timeout=10)


@pytest.mark.parametrize("code", [480, 603])
async def test_no_agent_rejects_after_the_timeout_with_the_reject_code(
    ready: Callable[..., Awaitable[InboundEnv]], lab: Lab, code: int
) -> None:
    ie = await ready(no_agent_timeout=2, reject_code=code)
    env = ie.env
    number = "+33612340005"
    customer = await lab.customers.call(RECEPTION, number, expect_code=code)
    created = await _created_from(ie, number)
    await env.log.wait_for(
        bus.CallRinging, lambda e: e.call_id == created.call_id and e.leg == "customer"
    )
    # Announced at once, then queued (the record is written in between): not ended.
    assert ie.inbound.active_calls()[0].state in (InboundPhase.NEW, InboundPhase.WAITING)
    ended = await env.log.wait_for(bus.CallEnded, _of(created.call_id), within=5)
    assert (ended.reason, ended.sip_code, ended.agent, ended.talk_seconds) == (
        "no_answer",
        code,
        None,
        None,
    )
    assert await customer.wait(timeout=5), f"the caller did not see {code}"
    record = await env.store.calls.get(created.call_id)
    assert record.direction == "inbound"
    assert record.answered_at is None
    assert record.end_reason is CallEndReason.NO_ANSWER
    assert record.agent_user_id is None
    waited = (record.ended_at - record.created_at).total_seconds()  # type: ignore[operator]
    assert 1.8 <= waited < 3.0, waited
    assert not env.log.events(bus.CallDialing, _of(created.call_id))
    assert ie.inbound.stats.missed == 1


@pytest.mark.parametrize("lab_pbx_mode", ["proxy", "b2bua"])
async def test_an_agent_becoming_available_gets_the_waiting_call(
    ready: Callable[..., Awaitable[InboundEnv]], lab: Lab
) -> None:
    ie = await ready(no_agent_timeout=20)
    env = ie.env
    number = "+33612340006"
    customer = await lab.customers.call(RECEPTION, number, talk_seconds=2)
    created = await _created_from(ie, number)
    await env.log.wait_for(
        bus.CallRinging, lambda e: e.call_id == created.call_id and e.leg == "customer"
    )
    ie.presence.set_available("alice")  # pokes the service
    bridged = await env.log.wait_for(bus.CallBridged, _of(created.call_id), within=10)
    assert bridged.agent == "alice"
    # Kept on the reception line's worker if its branch was chosen before alice came
    # back (nobody available), else on alice's: either way one worker carries it all.
    worker = _legs(ie, created.call_id).worker_id
    assert worker in (env.pool.worker_for_line(RECEPTION), env.pool.worker_for_line("2001"))
    assert (await env.store.calls.get(created.call_id)).worker_id == worker
    ended = await env.log.wait_for(bus.CallEnded, _of(created.call_id), within=10)
    assert (ended.reason, ended.agent) == ("completed", "alice")
    assert await customer.wait(timeout=5)


@pytest.mark.parametrize("lab_pbx_mode", ["proxy", "b2bua"])
async def test_no_agent_forwards_to_the_overflow_number(
    ready: Callable[..., Awaitable[InboundEnv]], lab: Lab
) -> None:
    overflow = customer_number(Behaviour.ANSWER, ring=1, talk=0, suffix=41)
    ie = await ready(no_agent_timeout=2, no_agent_action="forward", overflow_number=overflow)
    env = ie.env
    number = "+33612340007"
    customer = await lab.customers.call(RECEPTION, number, talk_seconds=3)
    created = await _created_from(ie, number)
    call_id = created.call_id
    bridged = await env.log.wait_for(bus.CallBridged, _of(call_id), within=8)
    assert (bridged.agent, bridged.recording) == (None, True)
    assert [d.leg for d in env.log.events(bus.CallDialing, _of(call_id))] == ["overflow"]
    assert [i.number for i in lab.customers.invites()] == [overflow]
    assert _legs(ie, call_id).agent_leg is not None
    ended = await env.log.wait_for(bus.CallEnded, _of(call_id), within=10)
    assert (ended.reason, ended.agent, ended.leg) == ("completed", None, "customer")
    assert await customer.wait(timeout=5)
    ready_ = await env.log.wait_for(bus.RecordingReady, _of(call_id))
    assert audio.tone_level(Path(ready_.path), CUSTOMER_TONE_HZ) > _TONE_PRESENT
    record = await env.store.calls.get(call_id)
    assert record.answered_at is not None
    assert record.agent_user_id is None
    assert record.end_reason is CallEndReason.COMPLETED
    # The overflow leg was hung up when the caller left.
    assert [c.number for c in lab.customers.cancels()] == []


@pytest.mark.parametrize("lab_pbx_mode", ["proxy", "b2bua"])
async def test_one_caller_is_one_call_on_a_forking_proxy_and_on_a_b2bua(
    ready: Callable[..., Awaitable[InboundEnv]], lab: Lab, lab_pbx_mode: str
) -> None:
    # In b2bua mode the lab PBX places one dialog per registration of 2100, each with
    # its own Call-ID, and follows a 302 with a new Call-ID, as Asterisk does.
    ie = await ready(agent_ring_seconds=20)
    env = ie.env
    assert lab.pbx_mode == lab_pbx_mode

    # An unknown caller, nobody available, hangs up while ringing: one call, one
    # pop-up, one missed-call record, one lead.
    lonely = "+33612340101"
    customer = await lab.customers.call(RECEPTION, lonely, cancel_after=1.5)
    created = await _created_from(ie, lonely)
    ended = await env.log.wait_for(bus.CallEnded, _of(created.call_id), within=10)
    assert (ended.reason, ended.agent) == ("cancelled", None)
    assert await customer.wait(timeout=5), "the caller's CANCEL was not answered"

    # Two agents available: one caller rings exactly one phone, and is one call.
    ie.presence.set_available("alice")
    ie.presence.set_available("bob")
    marks = {key: len(lab.phones[key].events) for key in ("1001", "1002")}
    known = "+33612340102"
    talker = await lab.customers.call(RECEPTION, known, talk_seconds=1)
    answered = await _created_from(ie, known)
    bridged = await env.log.wait_for(bus.CallBridged, _of(answered.call_id), within=10)
    rang = {"1001": "alice", "1002": "bob"}
    phone = next(key for key, agent in rang.items() if agent == bridged.agent)
    other = next(key for key in rang if key != phone)
    await lab.phones[phone].wait_incoming(timeout=5, start=marks[phone])
    finished = await env.log.wait_for(bus.CallEnded, _of(answered.call_id), within=10)
    assert finished.reason == "completed"
    assert await talker.wait(timeout=5)
    assert not [e for e in lab.phones[other].events[marks[other] :] if e.kind == "incoming"]

    for number, call_id in ((lonely, created.call_id), (known, answered.call_id)):
        assert [e.call_id for e in env.log.events(bus.CallCreated) if e.from_number == number] == [
            call_id
        ]
        ringing = env.log.events(
            bus.CallRinging, lambda e, n=number: e.from_number == n and e.leg == "customer"
        )
        assert [e.call_id for e in ringing] == [call_id]
        assert len(env.log.events(bus.CallEnded, _of(call_id))) == 1
        records = [c for c in await env.store.calls.list_recent() if c.from_number == number]
        assert [c.id for c in records] == [call_id]
    missed = await env.store.calls.get(created.call_id)
    assert (missed.end_reason, missed.answered_at) == (CallEndReason.CANCELLED, None)
    leads = [
        lead
        for lead in await env.store.leads.pool(limit=100)
        if any(phone.number_e164 == lonely for phone in lead.phones)
    ]
    assert len(leads) == 1
    if lab_pbx_mode == "b2bua":
        assert lab.b2bua is not None
        # Two callers went through the lab PBX's B2BUA; the answered one was moved
        # (302, followed with a new dialog) to the worker of the agent it rang; the
        # first waited on the reception worker, with nobody to move it to.
        assert lab.b2bua.calls_handled == 2
        assert lab.b2bua.redirects_followed == 1


@pytest.mark.parametrize("lab_pbx_mode", ["proxy", "b2bua"])
async def test_caller_hanging_up_while_an_agent_rings_is_a_missed_call(
    ready: Callable[..., Awaitable[InboundEnv]], lab: Lab
) -> None:
    ie = await ready(agent_ring_seconds=20)
    env = ie.env
    ie.presence.set_available("carol")  # her phone never answers
    number = "+33612340008"
    customer = await lab.customers.call(RECEPTION, number, cancel_after=2.0)
    created = await _created_from(ie, number)
    call_id = created.call_id
    await env.log.wait_for(
        bus.CallRinging, lambda e: e.call_id == call_id and e.leg == "agent", within=5
    )
    incoming = await lab.phones["1003"].wait_incoming(timeout=5)
    ended = await env.log.wait_for(bus.CallEnded, _of(call_id), within=8)
    assert (ended.reason, ended.agent, ended.leg, ended.talk_seconds) == (
        "cancelled",
        None,
        "customer",
        None,
    )
    assert await customer.wait(timeout=5), "the caller's CANCEL was not answered 487"
    # Carol's phone stopped ringing.
    await lab.phones["1003"].wait_call_ended(timeout=5, call_id=incoming.call_id)
    record = await env.store.calls.get(call_id)
    assert record.end_reason is CallEndReason.CANCELLED
    assert record.answered_at is None
    assert ie.presence.state("carol") == "available"
    assert ie.inbound.active_calls() == []


async def test_a_crash_of_the_carrying_worker_interrupts_the_call_and_frees_the_agent(
    ready: Callable[..., Awaitable[InboundEnv]], lab: Lab
) -> None:
    ie = await ready()
    env = ie.env
    ie.presence.set_available("bob")
    number = "+33612340009"
    customer = await lab.customers.call(RECEPTION, number, talk_seconds=30)
    created = await _created_from(ie, number)
    call_id = created.call_id
    await env.log.wait_for(bus.CallBridged, _of(call_id), within=10)
    worker = _legs(ie, call_id).worker_id
    assert worker == env.pool.worker_for_line("2002")
    pid = env.pool.status()[worker].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    ended = await env.log.wait_for(bus.CallEnded, _of(call_id), within=3)
    assert (ended.reason, ended.agent) == ("interrupted", "bob")
    crashed = await env.log.wait_for(bus.WorkerCrashed, within=3)
    assert crashed.interrupted_calls == (call_id,)
    # The call's task stops by itself (hangup() just waits for that here).
    with contextlib.suppress(UnknownCall):
        await ie.inbound.hangup(call_id, timeout=3)
    assert ie.inbound.active_calls() == []
    assert ie.presence.state("bob") == "available"
    assert len(env.log.events(bus.CallEnded, _of(call_id))) == 1
    assert (await env.store.calls.get(call_id)).end_reason is CallEndReason.INTERRUPTED
    await customer.abort()


async def test_ringing_latency_of_calls_in_a_warm_service(
    ready: Callable[..., Awaitable[InboundEnv]], lab: Lab
) -> None:
    # Four waves of three simultaneous callers (first unknown numbers, then the
    # same numbers, known as leads), nobody available, missed after 1 s.
    ie = await ready(no_agent_timeout=1)
    numbers = [f"+3361234010{n}" for n in range(3)]
    for _wave in range(4):
        calls = [await lab.customers.call(RECEPTION, n, expect_code=480) for n in numbers]
        for call in calls:
            assert await call.wait(timeout=10)
    created = ie.env.log.events(bus.CallCreated)
    assert len(created) == 12
    for call in created:
        ended = await ie.env.log.wait_for(bus.CallEnded, _of(call.call_id))
        assert (ended.reason, ended.sip_code) == ("no_answer", 480)
    stats = ie.inbound.stats
    assert (stats.calls, stats.missed) == (12, 12)
    assert len(stats.ringing_latency) == 12
    warm = sorted(list(stats.ringing_latency)[3:])  # the known callers
    print(
        f"\nwarm service, known callers: p50 {statistics.median(warm) * 1000:.1f} ms, "
        f"max {warm[-1] * 1000:.1f} ms"
    )
