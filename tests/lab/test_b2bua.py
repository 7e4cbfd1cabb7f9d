"""The lab's b2bua mode: Kamailio hands the reception line's calls to the B2BUA, which
rings every registered contact in a dialog of its own, as Asterisk does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from lab import PhoneSpec, audio
from lab.b2bua import COMPLETED_ELSEWHERE
from lab.customers import CUSTOMER_TONE_HZ
from lab.runner import Lab, PbxMode

from ._sipp_contact import Kind, SippContact, header, register, start_contact

CALLER = "+33612345678"


@pytest.fixture
def lab_pbx_mode() -> PbxMode:
    return "b2bua"


@pytest.fixture
async def contacts(lab: Lab) -> AsyncIterator[Callable[..., Awaitable[SippContact]]]:
    """Factory: a SIPp contact, registered for a line unless ``line=None``."""
    started: list[SippContact] = []

    async def start(
        name: str, kind: Kind, *, line: str | None = "2100", redirect_to: str | None = None
    ) -> SippContact:
        contact = await start_contact(lab, name, kind, redirect_to=redirect_to)
        started.append(contact)
        if line is not None:
            assert await register(lab, line, contact.uri) == 200
        return contact

    yield start
    for contact in started:
        await contact.stop()


class TestTwoPhonesAndARingingContact:
    @pytest.fixture
    def lab_phones(self) -> list[str | PhoneSpec]:
        return [
            PhoneSpec("2100", name="desk", mode="never"),
            PhoneSpec("2100", name="mobile", answer_delay=0.5),
        ]

    async def test_each_contact_gets_its_own_dialog_and_the_others_hear_completed_elsewhere(
        self, lab: Lab, contacts: Callable[..., Awaitable[SippContact]]
    ) -> None:
        sipp = await contacts("wire", "ring")
        assert len(await lab.pbx.contacts("2100")) == 3
        desk, mobile = lab.phones["desk"], lab.phones["mobile"]
        customer = await lab.customers.call("2100", CALLER, talk_seconds=1.5)
        desk_ring = await desk.wait_incoming(timeout=5)
        mobile_ring = await mobile.wait_incoming(timeout=5)
        await mobile.wait_call_answered(timeout=5, call_id=mobile_ring.call_id)
        cancelled = await desk.wait_call_ended(timeout=5, call_id=desk_ring.call_id)
        assert cancelled.data["code"] == 487
        assert await customer.wait(timeout=10)  # answered, talked, BYE answered
        ended = await mobile.wait_call_ended(timeout=5, call_id=mobile_ring.call_id)
        assert ended.data["reason"] == "Normal call clearing"
        # Media went end to end: the phone heard the customer.
        recording = Path(str(ended.data["recording"]))
        assert audio.tone_level(recording, CUSTOMER_TONE_HZ) > 0.05

        # On the wire: one INVITE per contact, each its own Call-ID, the caller's From.
        (invite,) = sipp.received("INVITE")
        wire_call_id = header(invite, "Call-ID")
        call_ids = {desk_ring.call_id, mobile_ring.call_id, wire_call_id}
        assert len(call_ids) == 3
        assert customer.call_id not in call_ids
        for ring in (desk_ring, mobile_ring):
            assert f"sip:{CALLER}@" in str(ring.data["remote"])
        from_ = header(invite, "From")
        assert from_ is not None
        assert f"<sip:{CALLER}@{lab.host}>;tag=" in from_
        assert header(invite, "To") == f"<{lab.uri('2100')}>"
        assert invite.startswith(f"INVITE {sipp.uri} SIP/2.0")
        # The contacts that did not answer are CANCELed, "completed elsewhere".
        (cancel,) = sipp.received("CANCEL")
        assert header(cancel, "Call-ID") == wire_call_id
        assert header(cancel, "Reason") == COMPLETED_ELSEWHERE

        assert lab.b2bua is not None
        record = lab.b2bua.call(customer.call_id)
        assert set(lab.b2bua.branch_call_ids(customer.call_id)) == call_ids
        assert record.answered_by == mobile_ring.call_id
        assert record.branch(str(desk_ring.call_id)).cancel_reason == COMPLETED_ELSEWHERE
        assert record.ended_by == "caller"
        assert lab.b2bua.redirects_followed == 0


class TestTwoPhonesThatNeverAnswer:
    @pytest.fixture
    def lab_phones(self) -> list[str | PhoneSpec]:
        return [
            PhoneSpec("2100", name="desk", mode="never"),
            PhoneSpec("2100", name="mobile", mode="never"),
        ]

    async def test_a_caller_hanging_up_while_ringing_cancels_every_branch(self, lab: Lab) -> None:
        desk, mobile = lab.phones["desk"], lab.phones["mobile"]
        customer = await lab.customers.call("2100", CALLER, cancel_after=0.5)
        rings = [await phone.wait_incoming(timeout=5) for phone in (desk, mobile)]
        assert await customer.wait(timeout=10)  # the caller got 487
        for phone, ring in zip((desk, mobile), rings, strict=True):
            ended = await phone.wait_call_ended(timeout=5, call_id=ring.call_id)
            assert ended.data["code"] == 487
        assert lab.b2bua is not None
        record = lab.b2bua.call(customer.call_id)
        assert record.final_code == 487
        assert record.answered_by is None
        assert [b.cancelled for b in record.branches] == [True, True]
        assert [b.cancel_reason for b in record.branches] == [None, None]


class TestCalleeHangsUp:
    @pytest.fixture
    def lab_phones(self) -> list[str | PhoneSpec]:
        return [PhoneSpec("2100", name="desk", answer_delay=0.2)]

    async def test_the_callees_bye_reaches_the_caller(self, lab: Lab) -> None:
        desk = lab.phones["desk"]
        customer = await lab.customers.call("2100", CALLER, talk_seconds=30)
        ring = await desk.wait_incoming(timeout=5)
        await desk.wait_media_state("active", call_id=ring.call_id, timeout=5)
        await desk.hangup_call_id(str(ring.call_id))
        assert await customer.wait(timeout=5)  # the caller got the BYE and answered it
        assert lab.b2bua is not None
        record = await lab.b2bua.wait_call(customer.call_id, lambda c: c.over, timeout=5)
        assert record.ended_by == "callee"


class TestRefusals:
    @pytest.fixture
    def lab_phones(self) -> list[str | PhoneSpec]:
        return [
            PhoneSpec("2100", name="busy", mode="reject", reject_code=486),
            PhoneSpec("2100", name="decline", mode="reject", reject_code=603),
        ]

    async def test_the_caller_gets_the_lowest_4xx_when_every_contact_refuses(
        self, lab: Lab
    ) -> None:
        customer = await lab.customers.call("2100", CALLER, expect_code=486)
        assert await customer.wait(timeout=10)
        assert lab.b2bua is not None
        record = lab.b2bua.call(customer.call_id)
        assert sorted(b.final_code or 0 for b in record.branches) == [486, 603]
        assert record.final_code == 486


async def test_a_line_without_registration_is_unavailable(lab: Lab) -> None:
    customer = await lab.customers.call("2100", CALLER, expect_code=480)
    assert await customer.wait(timeout=10)
    assert lab.b2bua is not None
    assert lab.b2bua.calls == []  # Kamailio answered: nothing to ring


class TestRedirect:
    @pytest.fixture
    def lab_phones(self) -> list[str | PhoneSpec]:
        return ["1001"]

    async def test_a_302_is_followed_with_a_new_call_id(
        self, lab: Lab, contacts: Callable[..., Awaitable[SippContact]]
    ) -> None:
        # The line is registered once, by a contact that moves every call to a phone
        # that is not registered for the line, as Switchboard's reception does.
        (target,) = await lab.pbx.contacts("1001")
        mover = await contacts("mover", "redirect", redirect_to=target)
        assert await lab.pbx.contacts("2100") == [mover.uri]
        phone = lab.phones["1001"]
        customer = await lab.customers.call("2100", CALLER, talk_seconds=1.0)
        ring = await phone.wait_incoming(timeout=5)
        assert await customer.wait(timeout=10)
        await phone.wait_call_ended(timeout=5, call_id=ring.call_id)

        (invite,) = mover.received("INVITE")
        moved_call_id = header(invite, "Call-ID")
        assert len(mover.received("ACK")) == 1  # the 302 was acknowledged
        assert len({customer.call_id, moved_call_id, ring.call_id}) == 3
        assert f"sip:{CALLER}@" in str(ring.data["remote"])
        assert lab.b2bua is not None
        record = lab.b2bua.call(customer.call_id)
        assert lab.b2bua.redirects_followed == 1
        assert [(b.call_id, b.target, b.redirected_from) for b in record.branches] == [
            (moved_call_id, mover.uri, None),
            (ring.call_id, target, moved_call_id),
        ]
        assert record.answered_by == ring.call_id

    async def test_redirects_stop_after_three(
        self, lab: Lab, contacts: Callable[..., Awaitable[SippContact]]
    ) -> None:
        # A contact that redirects every call to itself.
        looper = await contacts("looper", "redirect", redirect_to="sip:x@[local_ip]:[local_port]")
        customer = await lab.customers.call("2100", CALLER, expect_code=482)
        assert await customer.wait(timeout=10)
        invites = looper.received("INVITE")
        assert len(invites) == 4  # the first, then three redirects followed
        assert len({header(invite, "Call-ID") for invite in invites}) == 4
        assert lab.b2bua is not None
        assert lab.b2bua.call(customer.call_id).redirects == 3


class TestReinvite:
    async def test_a_hold_from_the_callee_is_relayed_to_the_caller_and_answered(
        self, lab: Lab, contacts: Callable[..., Awaitable[SippContact]]
    ) -> None:
        holder = await contacts("holder", "reinvite")
        customer = await lab.customers.call("2100", CALLER, talk_seconds=1.5)
        assert await customer.wait(timeout=10)
        assert lab.b2bua is not None
        record = await lab.b2bua.wait_call(customer.call_id, lambda c: c.over, timeout=5)
        assert record.ended_by == "caller"
        # The hold came back answered by the customer (its SDP, version 2), the
        # customer got the ACK (else it would not have hung up), and its BYE came.
        (answer,) = [m for m in holder.received() if m.startswith("SIP/2.0 200")]
        assert header(answer, "CSeq") == "1 INVITE"
        assert "o=customer 1 2 IN IP4" in answer
        assert len(holder.received("BYE")) == 1
