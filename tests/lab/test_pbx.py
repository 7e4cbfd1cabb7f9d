"""Kamailio as the PBX: authentication, routing between extensions, forking, restart."""

from __future__ import annotations

import pytest

from lab import PhoneSpec
from lab.runner import Lab

from ._helpers import place
from ._sip_probe import final_status


async def test_register_without_credentials_is_challenged(lab: Lab) -> None:
    status = await final_status(lab.pbx_host, lab.pbx_port, "REGISTER", "1001", timeout=2)
    assert status == 401


async def test_invite_from_a_stranger_is_challenged(lab: Lab) -> None:
    status = await final_status(lab.pbx_host, lab.pbx_port, "INVITE", "1001", timeout=2)
    assert status == 407


async def test_unregistered_extension_is_unavailable_and_unknown_one_not_found(
    lab: Lab,
) -> None:
    phone = lab.phones["1001"]
    assert (await place(phone, lab.uri("2001"))).final_code == 480
    assert (await place(phone, lab.uri("4242"))).final_code == 404


class TestParallelForking:
    @pytest.fixture
    def lab_phones(self) -> list[str | PhoneSpec]:
        return [
            PhoneSpec("1001", name="desk", mode="never"),
            PhoneSpec("1001", name="mobile", answer_delay=0.5),
            "1002",
        ]

    async def test_all_registrations_ring_and_the_first_answer_wins(self, lab: Lab) -> None:
        assert len(await lab.pbx.contacts("1001")) == 2
        desk, mobile = lab.phones["desk"], lab.phones["mobile"]
        call = await lab.phones["1002"].call(lab.uri("1001"))
        desk_ring = await desk.wait_incoming(timeout=5)
        mobile_ring = await mobile.wait_incoming(timeout=5)
        assert desk_ring.call_id == mobile_ring.call_id  # one forked INVITE
        await mobile.wait_call_answered(timeout=5)
        cancelled = await desk.wait_call_ended(timeout=5)
        assert cancelled.data["code"] == 487
        await lab.phones["1002"].hangup(call)
        await mobile.wait_call_ended(timeout=5)


async def test_pbx_restarts_on_the_same_port_with_the_same_credentials(lab: Lab) -> None:
    port = lab.pbx_port
    await lab.pbx.stop()
    assert not lab.pbx.running
    await lab.pbx.start()
    assert lab.pbx_port == port
    assert await lab.pbx.contacts("1001") == []  # registrations are in memory only
    for key in ("1001", "1002"):
        mark = len(lab.phones[key].events)
        await lab.phones[key].register()
        await lab.phones[key].wait_registered(timeout=5, start=mark)
    assert len(await lab.pbx.contacts("1001")) == 1
    call = await lab.phones["1002"].call(lab.uri("1001"))
    await lab.phones["1001"].wait_call_answered(timeout=5)
    await lab.phones["1002"].hangup(call)
    await lab.phones["1002"].wait_call_ended(timeout=5)
