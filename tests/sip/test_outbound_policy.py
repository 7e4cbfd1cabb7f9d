"""The outbound policy on the real call paths: click-to-call and transfers, against the lab.

The daemon's region is Germany here, so the lab's customers (+49 30 199...) are
national numbers and ``[outbound]`` is left at its defaults.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import bus
from crm_store import CallEndReason
from lab.customers import Behaviour, customer_number
from lab.runner import Lab
from sip.control import CallControl
from sip.exceptions import CallForbidden
from tests.sip.conftest import InboundEnv, PoolEnv, lab_config, with_inbound

MakeEnv = Callable[..., Awaitable[PoolEnv]]

AGENTS = {"alice": ("1001", "2001"), "bob": ("1002", "2002")}
DE_PREMIUM = "+499001234567"
DE_SHARED_COST = "0180 12345"


@pytest.fixture
def lab_phones() -> list[str]:
    return ["1001", "1002"]


@pytest.fixture
async def env(lab: Lab, tmp_path: Path, pool_env: MakeEnv) -> PoolEnv:
    config = lab_config(lab, tmp_path, agents=AGENTS, region="DE", outbound="")
    e = await pool_env(config, agent_timeout=5.0)
    for line in ("2001", "2002"):
        await e.log.wait_for(bus.RegistrationChanged, _registered(line))
    return e


def _registered(line: str) -> Callable[[bus.RegistrationChanged], bool]:
    return lambda e: e.line == line and e.state == "registered"


def _of(call_id: uuid.UUID) -> Callable[[bus.Event], bool]:
    return lambda e: getattr(e, "call_id", None) == call_id


async def test_click_to_call_to_a_premium_number_is_forbidden_and_a_national_one_goes_through(
    env: PoolEnv, lab: Lab
) -> None:
    with pytest.raises(CallForbidden) as refused:
        await env.calls.click_to_call(agent="alice", number=DE_PREMIUM)
    assert str(refused.value) == (
        "forbidden: premium-rate numbers are not allowed (outbound.refused_types)"
    )
    with pytest.raises(CallForbidden, match=r"shared-cost .*\(outbound.refused_types\)"):
        await env.calls.click_to_call(agent="alice", number=DE_SHARED_COST)
    # Nothing was stored, published or dialed, and both call slots are free.
    assert await env.store.calls.list_recent() == []
    assert env.log.events(bus.CallCreated) == []
    assert env.pool.free_slots("t/agent-2001") == 4

    number = customer_number(Behaviour.ANSWER, ring=0, talk=1, suffix=71)
    call_id = await env.calls.click_to_call(agent="alice", number=number)
    ended = await env.log.wait_for(bus.CallEnded, _of(call_id), within=15)
    assert ended.reason == "completed"
    assert [i.number for i in lab.customers.invites()] == [number]


async def test_a_transfer_to_an_unknown_extension_or_a_premium_number_is_forbidden(
    env: PoolEnv, lab: Lab
) -> None:
    control = CallControl(env.pool, config=env.config, bus=env.bus, directories=[env.calls])
    async with control:
        number = customer_number(Behaviour.ANSWER, ring=0, talk=0, suffix=72)
        call_id = await env.calls.click_to_call(agent="alice", number=number)
        await env.log.wait_for(bus.CallBridged, _of(call_id), within=15)

        for attempt in (control.transfer_blind, control.transfer_attended):
            with pytest.raises(CallForbidden) as refused:
                await attempt(call_id, "4711")
            assert str(refused.value) == (
                "forbidden: extension 4711 is neither an agent's phone nor a listed "
                "extension (outbound.extensions)"
            )
            with pytest.raises(CallForbidden, match=r"premium-rate"):
                await attempt(call_id, DE_PREMIUM)
        # Nothing started: no transfer event, no extra leg, and the call goes on.
        assert env.log.events(bus.CallTransferred) == []
        assert env.pool.status()["t/agent-2001"].calls == 2
        assert control.legs(call_id).agent == "alice"

        await env.calls.hangup(call_id)
        ended = await env.log.wait_for(bus.CallEnded, _of(call_id), within=15)
        assert ended.reason == CallEndReason.COMPLETED.value


async def test_a_forbidden_overflow_number_is_never_called_and_the_caller_is_rejected(
    lab: Lab, tmp_path: Path, inbound_env: Callable[..., Awaitable[InboundEnv]]
) -> None:
    # The configuration check refuses this file; a Config built in code is guarded
    # at the moment of the forward.
    config = lab_config(lab, tmp_path, agents=AGENTS, reception=("2100",), region="DE", outbound="")
    config = with_inbound(
        config, no_agent_timeout=1, no_agent_action="forward", overflow_number=DE_PREMIUM
    )
    ie = await inbound_env(config)
    env = ie.env
    async with asyncio.timeout(15):
        while not await lab.pbx.contacts("2100"):
            await env.log.wait_for(
                bus.RegistrationChanged, lambda e: e.line == "2100", start=env.log.mark()
            )

    number = "+4930123456"
    customer = await lab.customers.call("2100", number, expect_code=480)
    created = await env.log.wait_for(
        bus.CallCreated, lambda e: e.direction == "inbound" and e.from_number == number
    )
    ended = await env.log.wait_for(bus.CallEnded, _of(created.call_id), within=10)
    assert (ended.reason, ended.sip_code) == ("no_answer", 480)
    assert await customer.wait(timeout=5), "the caller was not rejected with 480"
    assert env.log.events(bus.CallDialing, _of(created.call_id)) == []
    assert lab.customers.invites() == []
