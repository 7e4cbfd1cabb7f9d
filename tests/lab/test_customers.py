"""Simulated customers: the number chooses the behaviour; what they saw is logged."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from crm_store import normalize_phone
from lab import audio
from lab._ports import free_port
from lab.customers import CUSTOMER_TONE_HZ, Behaviour, customer_number
from lab.runner import Lab

from ._helpers import place, wait_progress


@pytest.mark.parametrize(
    ("behaviour", "final", "rings"),
    [
        (Behaviour.BUSY, 486, True),
        (Behaviour.REJECT, 603, True),
        (Behaviour.UNREACHABLE, 480, False),
    ],
)
async def test_customer_number_chooses_the_final_response(
    lab: Lab, behaviour: Behaviour, final: int, rings: bool
) -> None:
    call = await place(lab.phones["1001"], lab.uri(customer_number(behaviour, suffix=1)))
    assert call.final_code == final
    assert not call.answered
    assert (180 in call.progress) is rings


async def test_busy_customer_rings_for_the_given_seconds_first(lab: Lab) -> None:
    phone = lab.phones["1001"]
    call = await phone.call(lab.uri(customer_number(Behaviour.BUSY, ring=2, suffix=2)))
    ringing_at = await wait_progress(phone, call, 180)
    ended = await phone.wait_call_ended(timeout=5)
    assert ended.data["code"] == 486
    assert 1.9 <= float(ended.data["at"]) - ringing_at <= 2.5


async def test_answering_customer_talks_with_audio_then_hangs_up(lab: Lab) -> None:
    phone = lab.phones["1001"]
    number = customer_number(Behaviour.ANSWER, ring=1, talk=2, suffix=3)
    call = await phone.call(lab.uri(number))
    ringing_at = await wait_progress(phone, call, 180)
    answered_at = await wait_progress(phone, call, 200)
    ended = await phone.wait_call_ended(timeout=6)
    assert 0.9 <= answered_at - ringing_at <= 1.5
    assert 1.9 <= float(ended.data["at"]) - answered_at <= 2.6
    assert ended.data["reason"] == "Normal call clearing"
    recording = Path(str(ended.data["recording"]))
    assert audio.rms(recording) > 0.05
    assert audio.tone_level(recording, CUSTOMER_TONE_HZ) > 0.05


async def test_never_answering_customer_rings_until_cancelled(lab: Lab) -> None:
    phone = lab.phones["1001"]
    call = await phone.call(lab.uri(customer_number(Behaviour.NEVER_ANSWER, suffix=4)))
    await wait_progress(phone, call, 180)
    with pytest.raises(TimeoutError):
        await phone.wait_call_ended(timeout=2.0)
    await phone.hangup(call)
    ended = await phone.wait_call_ended(timeout=5)
    assert ended.data["code"] == 487


async def test_caller_may_cancel_an_answering_customer_while_it_rings(lab: Lab) -> None:
    phone = lab.phones["1001"]
    call = await phone.call(lab.uri(customer_number(Behaviour.ANSWER, ring=5, suffix=5)))
    await wait_progress(phone, call, 180)
    await phone.hangup(call)
    ended = await phone.wait_call_ended(timeout=2)
    assert ended.data["code"] == 487


async def test_customer_talking_until_bye_is_hung_up_by_the_caller(lab: Lab) -> None:
    phone = lab.phones["1001"]
    call = await phone.call(lab.uri(customer_number(Behaviour.ANSWER, talk=0, suffix=6)))
    await wait_progress(phone, call, 200)
    with pytest.raises(TimeoutError):
        await phone.wait_call_ended(timeout=1.5)
    await phone.hangup(call)
    ended = await phone.wait_call_ended(timeout=5)
    assert ended.data["code"] == 200
    assert audio.tone_level(Path(str(ended.data["recording"])), CUSTOMER_TONE_HZ) > 0.05


async def test_invites_log_lists_each_number_once_with_arrival_times(lab: Lab) -> None:
    phone = lab.phones["1001"]
    numbers = [customer_number(Behaviour.UNREACHABLE, suffix=n) for n in range(10, 14)]
    sent = []
    for number in numbers:
        sent.append(time.time())
        await place(phone, lab.uri(number))
    seen = lab.customers.invites()
    assert [s.number for s in seen] == numbers
    assert len({s.call_id for s in seen}) == len(numbers)
    for at_sent, invite in zip(sent, seen, strict=True):
        # Sent through Kamailio after a 407 round trip: a few ms on loopback.
        assert 0.0 <= invite.at - at_sent < 0.2


async def test_unplanned_external_number_is_answered_and_talks_until_bye(lab: Lab) -> None:
    phone = lab.phones["1001"]
    call = await phone.call(lab.uri("+4915112345678"))
    await wait_progress(phone, call, 200)
    await phone.hangup(call)
    ended = await phone.wait_call_ended(timeout=5)
    assert ended.data["code"] == 200
    assert lab.customers.invites()[-1].number == "+4915112345678"


async def test_customer_calls_an_extension_with_its_number(lab: Lab) -> None:
    phone = lab.phones["1002"]
    customer = await lab.customers.call("1002", "+33612345678", talk_seconds=1.5)
    incoming = await phone.wait_incoming(timeout=5)
    assert incoming.call_id == customer.call_id
    assert "+33612345678" in str(incoming.data["remote"])
    assert await customer.wait(timeout=10)
    ended = await phone.wait_call_ended(timeout=5, call_id=customer.call_id)
    recording = Path(str(ended.data["recording"]))
    assert audio.tone_level(recording, CUSTOMER_TONE_HZ) > 0.05


async def test_customers_carry_a_hundred_simultaneous_calls(lab: Lab) -> None:
    # One SIPp UAC places 100 calls through Kamailio to a customer who talks until BYE;
    # the UAC hangs up after 3 s, so all 100 overlap.
    argv = [
        "sipp", f"{lab.pbx_host}:{lab.pbx_port}",
        "-sf", str(lab.run_dir / "customers-uac.xml"),
        "-i", lab.pbx_host, "-p", str(free_port()),
        "-mi", lab.pbx_host, "-mp", str(free_port()),
        "-nostdin", "-m", "100", "-r", "100", "-l", "100",
        "-au", "trunk", "-ap", lab.trunk_password,
        "-set", "to", customer_number(Behaviour.ANSWER, suffix=99),
        "-set", "from", "+33100000000",
        "-set", "talk", "3000",
        "-timeout", "30",
    ]  # fmt: skip
    load = await asyncio.create_subprocess_exec(
        *argv,
        cwd=lab.run_dir,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(30):
        assert await load.wait() == 0  # SIPp exits 0 only if every call succeeded
    seen = lab.customers.invites()
    assert len(seen) == 100
    assert len({s.call_id for s in seen}) == 100
    assert seen[-1].at - seen[0].at < 3.0


def test_every_plan_number_is_a_valid_e164_number() -> None:
    # The store and the dialer refuse numbers phonenumbers deems invalid.
    for behaviour in Behaviour:
        for suffix in ("", 7, "07", 12345):
            number = customer_number(behaviour, ring=2, talk=10, suffix=suffix)
            assert normalize_phone(number, "FR") == number
