"""A site larger than a PBX forks to: 60 agents behind one reception line.

Kamailio keeps ``max_branches`` at its default (12): under the old design (every
agent worker registering the reception line) most agents could never be offered a
call. Now the line has one registration, and each call moves (``302``) to the worker
of the agent it is offered to, so every agent can take calls. The agents' phones are
lab customers (``00…`` numbers: SIPp answers after 1 s and talks until hung up), so
the site costs 61 SIP workers and no phone processes.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import bus
from config import parse_config
from lab.customers import CustomerCall
from lab.pytest_plugin import TEST_EXTENSIONS
from lab.runner import Lab
from tests.sip.conftest import InboundEnv, lab_config_text

RECEPTION = "2100"
AGENTS = {f"agent{n:02d}": (f"004930197{n:03d}", f"3{n:03d}") for n in range(60)}
CALLERS = 40
# The lab's callers take turns over 20 blocks of RTP ports: at most 10 at a time.
AT_ONCE = 10


@pytest.fixture
def lab_extensions() -> dict[str, str]:
    lines = {line: f"lab-line-{line}" for _phone, line in AGENTS.values()}
    return {**TEST_EXTENSIONS, **lines}


@pytest.fixture
def lab_phones() -> list[str]:
    return []


async def test_sixty_agents_take_forty_callers_in_a_row_on_a_default_kamailio(
    lab: Lab, tmp_path: Path, inbound_env: Callable[..., Awaitable[InboundEnv]]
) -> None:
    text = lab_config_text(lab, tmp_path, agents=AGENTS, reception=(RECEPTION,), max_workers=64)
    # 64 workers need 16 RTP ports each (four calls, RTP and RTCP, room to skip).
    text = re.sub(
        r"rtp_port_range = \[(\d+), \d+\]",
        lambda m: f"rtp_port_range = [{m.group(1)}, {int(m.group(1)) + 64 * 16 - 1}]",
        text,
    )
    ie = await inbound_env(parse_config(text, base_dir=tmp_path))
    env = ie.env
    lines = [line for _phone, line in AGENTS.values()] + [RECEPTION]
    async with asyncio.timeout(90):
        for line in lines:
            await env.log.wait_for(
                bus.RegistrationChanged,
                lambda e, line=line: e.line == line and e.state == "registered",
                within=90,
            )
    # One contact for the reception line, far below Kamailio's 12 branches.
    assert len(await lab.pbx.contacts(RECEPTION)) == 1
    for user in AGENTS:
        ie.presence.set_available(user)

    callers: list[CustomerCall] = []
    call_ids = []
    for n in range(CALLERS):
        if n >= AT_ONCE:
            await env.log.wait_for(
                bus.CallEnded,
                lambda e, call_id=call_ids[n - AT_ONCE]: e.call_id == call_id,
                within=20,
            )
        number = f"+3361299{n:04d}"
        callers.append(await lab.customers.call(RECEPTION, number, talk_seconds=2))
        created = await env.log.wait_for(
            bus.CallCreated,
            lambda e, number=number: e.direction == "inbound" and e.from_number == number,
            within=10,
        )
        call_ids.append(created.call_id)
        # The next caller comes as soon as this one rings at an agent's phone.
        await env.log.wait_for(
            bus.CallDialing,
            lambda e, call_id=created.call_id: e.call_id == call_id and e.leg == "agent",
            within=10,
        )

    bridged = {}
    for call_id in call_ids:
        event = await env.log.wait_for(
            bus.CallBridged, lambda e, call_id=call_id: e.call_id == call_id, within=20
        )
        bridged[call_id] = event.agent
    for call_id in call_ids:
        ended = await env.log.wait_for(
            bus.CallEnded, lambda e, call_id=call_id: e.call_id == call_id, within=20
        )
        assert ended.reason == "completed", ended
    # Every caller was answered (no 480/486 while agents were free) and hung up cleanly.
    outcomes = await asyncio.gather(*(caller.wait(timeout=20) for caller in callers))
    assert all(outcomes), [n for n, ok in enumerate(outcomes) if not ok]
    assert all(agent is not None for agent in bridged.values())
    # Offered to the longest idle agents: 40 callers, 40 different agents.
    assert len(set(bridged.values())) == CALLERS
    # Each call was carried by its agent's own worker, after one move.
    for call_id, agent in bridged.items():
        record = await env.store.calls.get(call_id)
        assert record.worker_id == env.pool.worker_of_agent(agent or "")
    assert ie.inbound.stats.moves == CALLERS
    assert ie.inbound.stats.moves_lost == 0
    # One caller, one call: one record per caller, one ringing pop-up each.
    ringing = Counter(
        e.call_id for e in env.log.events(bus.CallRinging, lambda e: e.leg == "customer")
    )
    assert ringing == Counter({call_id: 1 for call_id in call_ids})
