"""Two agents dialing one list at once: every number dialed exactly once,
as the lab's customers saw it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import bus
from crm_store import CallListItemState
from lab.customers import Behaviour, customer_number
from lab.runner import Lab
from tests.dialer.conftest import DialerEnv, dialer_config

MakeEnv = Callable[..., Awaitable[DialerEnv]]


def forty_numbers() -> list[str]:
    """Mostly quick outcomes: busy and reject at once or after 1 s, a few short answers."""
    numbers = []
    for n in range(40):
        if n % 8 == 0:
            numbers.append(customer_number(Behaviour.ANSWER, ring=0, talk=1, suffix=100 + n))
        elif n % 2:
            numbers.append(customer_number(Behaviour.BUSY, ring=n % 3 // 2, suffix=100 + n))
        else:
            numbers.append(customer_number(Behaviour.REJECT, ring=0, suffix=100 + n))
    return numbers


async def test_two_agents_dial_each_number_exactly_once(
    lab: Lab, tmp_path: Path, dialer_env: MakeEnv
) -> None:
    env = await dialer_env(dialer_config(lab, tmp_path, gap_seconds=0.5))
    numbers = forty_numbers()
    call_list, report = await env.dialer.create_list("shared", numbers)
    assert report.added == 40
    alice = await env.dialer.start_session("alice", call_list.id)
    bob = await env.dialer.start_session("bob", call_list.id)
    for info in (alice, bob):
        await env.log.wait_for(
            bus.DialerSessionFinished, lambda e, i=info: e.session_id == i.session_id, within=120
        )

    seen = Counter(i.number for i in lab.customers.invites())
    assert set(seen) == set(numbers)
    assert max(seen.values()) == 1, [n for n, c in seen.items() if c > 1]

    # Both agents took part, and the store agrees with the lab.
    results = env.log.events(bus.DialerResult)
    by_agent = Counter(r.agent for r in results)
    assert by_agent["alice"] > 5
    assert by_agent["bob"] > 5
    assert sum(by_agent.values()) == 40
    progress = await env.dialer.progress(call_list.id)
    assert progress == {CallListItemState.DONE: 5, CallListItemState.FAILED: 35}
