"""A dialer session when PostgreSQL stops under it: the call in progress goes on, the
session stops between calls, the dialer lives on, and nobody is dialed twice.

A private PostgreSQL cluster (never the shared server), the lab's Kamailio, SIPp
customers and agent phones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

import bus
from config import parse_config
from crm_store import CallEndReason
from lab.customers import Behaviour, customer_number
from lab.runner import Lab
from tests.crm_store.faults import PrivatePostgres, running_private_postgres
from tests.dialer.conftest import DialerEnv, dialer_config_text

MakeEnv = Callable[..., Awaitable[DialerEnv]]


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    with running_private_postgres() as server:
        yield server


async def test_postgres_stopping_mid_call_stops_the_session_between_calls_not_the_call(
    lab: Lab, tmp_path: Path, private_postgres: PrivatePostgres, dialer_env: MakeEnv
) -> None:
    text = dialer_config_text(lab, tmp_path, gap_seconds=1.0).replace(
        f'url = "sqlite+aiosqlite:///{tmp_path / "store.sqlite3"}"',
        f'url = "{private_postgres.url()}"',
    )
    assert private_postgres.url() in text
    env = await dialer_env(parse_config(text, base_dir=tmp_path))
    talks = customer_number(Behaviour.ANSWER, ring=1, talk=6, suffix=81)
    second = customer_number(Behaviour.ANSWER, ring=1, talk=1, suffix=82)
    call_list, _ = await env.dialer.create_list("outage", [talks, second])
    info = await env.dialer.start_session("alice", call_list.id)

    answered = await env.log.wait_for(bus.CallAnswered, lambda e: e.agent == "alice", within=20)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, private_postgres.stop)

    ended = await env.log.wait_for(
        bus.CallEnded, lambda e: e.call_id == answered.call_id, within=20
    )
    assert ended.reason == "completed"
    assert ended.talk_seconds is not None
    assert ended.talk_seconds > 5.0
    stopped = await env.log.wait_for(
        bus.DialerSessionStopped, lambda e: e.session_id == info.session_id, within=20
    )
    assert stopped.reason == "store_unavailable"
    await env.dialer.wait_session("alice", timeout=10)
    assert [i.number for i in lab.customers.invites()] == [talks]

    await loop.run_in_executor(None, private_postgres.start)
    await _wait_until(lambda: env.store.journal.pending == 0, timeout=60)
    record = await env.store.calls.get(answered.call_id)
    assert record.end_reason is CallEndReason.COMPLETED
    # The dialer lived on: the agent starts again and the list is finished, the
    # number already called is not called again.
    again = await env.dialer.start_session("alice", call_list.id)
    await env.log.wait_for(
        bus.DialerSessionFinished, lambda e: e.session_id == again.session_id, within=30
    )
    assert [i.number for i in lab.customers.invites()] == [talks, second]


async def _wait_until(check: Callable[[], bool], *, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"not done within {timeout} s"
        await asyncio.sleep(0.05)
