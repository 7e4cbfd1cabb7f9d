"""The lab's b2bua mode: Kamailio hands the reception line's calls to the B2BUA, which
rings every registered contact in a dialog of its own, as Asterisk does."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from lab import PhoneSpec, audio
from lab.b2bua import COMPLETED_ELSEWHERE, B2bua, Settings
from lab.customers import CUSTOMER_TONE_HZ
from lab.pytest_plugin import TEST_EXTENSIONS
from lab.runner import Lab, PbxMode

from ._sipp_contact import Kind, Responses, SippContact, header, register, start_contact

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


@pytest.mark.parametrize("lab_pbx_mode", ["proxy", "b2bua"])
async def test_the_lab_tells_its_mode_and_its_b2bua_lines(lab: Lab, lab_pbx_mode: PbxMode) -> None:
    assert lab.pbx_mode == lab_pbx_mode
    config = lab.pbx.cfg_path.read_text()
    if lab_pbx_mode == "proxy":
        assert lab.b2bua is None
        assert lab.b2bua_lines == ()
        assert "route[B2BUA]" not in config
        return
    assert lab.b2bua is not None
    assert lab.b2bua_lines == ("2100",)
    assert '$rU =~ "^(2100)$"' in config
    pid = lab.b2bua.pid
    assert pid is not None
    await lab.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize(
    ("mode", "lines", "error"),
    [
        ("b2b", ("2100",), "pbx_mode must be"),
        ("b2bua", ("4242",), "not an extension"),
        ("b2bua", (), "at least one line"),
        ("b2bua", "2100", "not one string"),
    ],
)
async def test_bad_mode_settings_are_refused_before_anything_starts(
    tmp_path: Path, mode: Any, lines: Any, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        await Lab.start(
            tmp_path / "lab", extensions=TEST_EXTENSIONS, pbx_mode=mode, b2bua_lines=lines
        )
    assert not (tmp_path / "lab").exists()


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
        (cancel,) = await sipp.wait_received("CANCEL")
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

    @pytest.mark.parametrize("lab_pbx_mode", ["proxy", "b2bua"])
    async def test_a_302_is_followed_in_both_modes(
        self,
        lab: Lab,
        lab_pbx_mode: PbxMode,
        contacts: Callable[..., Awaitable[SippContact]],
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
        assert f"sip:{CALLER}@" in str(ring.data["remote"])
        (invite,) = mover.received("INVITE")
        moved_call_id = header(invite, "Call-ID")
        assert len(await mover.wait_received("ACK")) == 1  # the 302 was acknowledged
        if lab_pbx_mode == "proxy":
            # Kamailio follows it within the caller's transaction: one Call-ID.
            assert moved_call_id == ring.call_id == customer.call_id
            assert lab.b2bua is None
            return
        # The B2BUA places a new dialog, with a Call-ID of its own, as Asterisk does.
        assert len({customer.call_id, moved_call_id, ring.call_id}) == 3
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
        assert len(await holder.wait_received("BYE")) == 1


class TestRobustness:
    async def test_unreadable_datagrams_are_dropped_and_calls_go_on(
        self, lab: Lab, contacts: Callable[..., Awaitable[SippContact]]
    ) -> None:
        assert lab.b2bua is not None
        errors: list[dict[str, object]] = []

        def third_error(event: dict[str, object]) -> bool:
            if event["event"] == "error":
                errors.append(event)
            return len(errors) == 3

        async with _RawPeer(lab) as peer:
            peer.send(b"hello")
            peer.send(b"INVITE sip:2100@127.0.0.1 SIP/2.0\r\nContent-Length: 12\r\n\r\n")
            peer.send(peer.request("INVITE", "sip:x@127.0.0.1:9").replace(b"CSeq:", b"CSq:"))
            await lab.b2bua.wait_for(third_error, timeout=5)
        assert lab.b2bua.running
        holder = await contacts("holder", "reinvite")
        customer = await lab.customers.call("2100", CALLER, talk_seconds=0.5)
        assert await customer.wait(timeout=10)
        assert len(await holder.wait_received("BYE")) == 1

    async def test_a_retransmitted_invite_is_absorbed(
        self, lab: Lab, contacts: Callable[..., Awaitable[SippContact]]
    ) -> None:
        ringer = await contacts("ringer", "ring", line=None)
        assert lab.b2bua is not None
        async with _RawPeer(lab) as peer:
            invite = peer.request("INVITE", ringer.uri)
            peer.send(invite)
            await peer.response(180)
            peer.send(invite)  # as if the answers had been lost: the 180 comes again
            await peer.response(180)
            assert lab.b2bua.calls_handled == 1
            assert len(ringer.received("INVITE")) == 1
            peer.send(peer.request("CANCEL", ringer.uri))
            await peer.response(200, method="CANCEL")
            terminated = await peer.response(487)
            peer.send(peer.ack(terminated))
        record = await lab.b2bua.wait_call(peer.call_id, lambda c: c.over, timeout=5)
        assert record.final_code == 487
        (cancel,) = await ringer.wait_received("CANCEL")
        assert header(cancel, "Reason") is None  # the caller gave up: no reason given


class TestTimers:
    """A B2BUA of the test's own, with short timers, in the test's process."""

    @pytest.fixture
    async def b2bua(self, lab: Lab) -> AsyncIterator[B2bua]:
        b2bua = B2bua(Settings(lab.host, ring_timeout=1.0, timer_b=1.0))
        await b2bua.start()
        yield b2bua
        b2bua.close()

    async def test_a_contact_that_never_answers_is_cancelled_after_the_ring_timeout(
        self, lab: Lab, b2bua: B2bua, contacts: Callable[..., Awaitable[SippContact]]
    ) -> None:
        ringer = await contacts("ringer", "ring", line=None)
        async with _RawPeer(lab, b2bua.port) as peer:
            peer.send(peer.request("INVITE", ringer.uri))
            await peer.response(180)
            started = time.monotonic()
            final = await peer.response(480, timeout=3)
            assert 0.8 < time.monotonic() - started < 1.5
            peer.send(peer.ack(final))
        (cancel,) = await ringer.wait_received("CANCEL")
        assert header(cancel, "Reason") is None
        (invite,) = ringer.received("INVITE")
        assert str(header(invite, "From")).startswith(f'"Raw" <sip:{CALLER}@{lab.host}>;tag=')

    async def test_a_contact_that_never_responds_fails_after_timer_b(
        self, lab: Lab, b2bua: B2bua
    ) -> None:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never read
        silent.bind((lab.host, 0))
        try:
            target = f"sip:silent@{lab.host}:{silent.getsockname()[1]}"
            async with _RawPeer(lab, b2bua.port) as peer:
                peer.send(peer.request("INVITE", target))
                await peer.response(100)
                final = await peer.response(408, timeout=3)
                peer.send(peer.ack(final))
        finally:
            silent.close()


class _RawPeer(Responses):
    """A caller speaking to the B2BUA directly over UDP, one INVITE transaction."""

    def __init__(self, lab: Lab, port: int | None = None) -> None:
        """Toward the lab's B2BUA, or another one on ``port``."""
        super().__init__()
        assert lab.b2bua is not None
        self._lab = lab
        self._target = (lab.host, port or lab.b2bua.port)
        self.call_id = f"raw-{secrets.token_hex(6)}"
        self._branch = f"z9hG4bK{secrets.token_hex(8)}"
        self._tag = secrets.token_hex(4)
        self._transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def __aenter__(self) -> _RawPeer:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self._lab.host, 0)
        )
        self.port = int(self._transport.get_extra_info("sockname")[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._transport is not None:
            self._transport.close()

    def send(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.sendto(data, self._target)

    def request(self, method: str, contact: str) -> bytes:
        """The INVITE (to 2100, ringing ``contact``) or its CANCEL."""
        host = self._lab.host
        body = f"v=0\r\no=raw 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        body += "m=audio 9 RTP/AVP 8\r\n"
        lines = [
            f"{method} {self._lab.uri('2100')} SIP/2.0",
            f"Via: SIP/2.0/UDP {host}:{self.port};branch={self._branch};rport",
            "Max-Forwards: 70",
            f'From: "Raw" <sip:{CALLER}@{host}>;tag={self._tag}',
            f"To: <{self._lab.uri('2100')}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: 1 {method}",
        ]
        if method == "INVITE":
            lines += [
                f"Contact: <sip:raw@{host}:{self.port}>",
                f"X-Lab-Contacts: <{contact}>",
                "Content-Type: application/sdp",
                f"Content-Length: {len(body)}",
                "",
                body,
            ]
        else:
            lines += ["Content-Length: 0", "", ""]
        return "\r\n".join(lines).encode()

    def ack(self, final: str) -> bytes:
        """The ACK of a non-2xx final answer to our INVITE."""
        to = header(final, "To")
        lines = [
            f"ACK {self._lab.uri('2100')} SIP/2.0",
            f"Via: SIP/2.0/UDP {self._lab.host}:{self.port};branch={self._branch};rport",
            "Max-Forwards: 70",
            f'From: "Raw" <sip:{CALLER}@{self._lab.host}>;tag={self._tag}',
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            "CSeq: 1 ACK",
            "Content-Length: 0",
            "",
            "",
        ]
        return "\r\n".join(lines).encode()

    async def response(self, code: int, *, method: str = "INVITE", timeout: float = 5) -> str:
        """The next response ``code`` to our ``method`` (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.queue.get()
                if (
                    message.startswith(f"SIP/2.0 {code} ")
                    and header(message, "CSeq") == f"1 {method}"
                ):
                    return message
