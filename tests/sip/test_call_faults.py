"""Calls through faults under them: the recording disk full, PostgreSQL stopped mid-call.

Real Kamailio, real SIPp customers, real agent phones; a real tmpfs that the test
fills, and a private PostgreSQL cluster that the test stops for 30 s (never the
shared server).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

import bus
from config import parse_config
from crm_store import CallEndReason, StoreUnavailable
from lab.customers import Behaviour, customer_number
from lab.runner import Lab
from tests.crm_store.faults import PrivatePostgres, SmallFilesystem, running_private_postgres
from tests.sip.conftest import InboundEnv, PoolEnv, lab_config, lab_config_text

MakeEnv = Callable[..., Awaitable[PoolEnv]]

AGENTS = {"alice": ("1001", "2001")}
RECEPTION = "2100"
OUTAGE_SECONDS = 30.0


def _ended(call_id: uuid.UUID) -> Callable[[bus.CallEnded], bool]:
    return lambda e: e.call_id == call_id


async def _registered(env: PoolEnv) -> PoolEnv:
    await env.log.wait_for(
        bus.RegistrationChanged, lambda e: e.line == "2001" and e.state == "registered"
    )
    return env


@pytest.fixture
def recordings_disk(tmp_path: Path) -> Iterator[SmallFilesystem]:
    """The recording directory (``recordings`` under the config's base) on a 2 MiB
    tmpfs of its own."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = SmallFilesystem(tmp_path / "recordings", 2 * 1024 * 1024)
    try:
        yield disk
    finally:
        disk.close()


async def test_recording_disk_full_before_the_call_the_call_goes_on_and_its_record_says_why(
    lab: Lab, tmp_path: Path, recordings_disk: SmallFilesystem, pool_env: MakeEnv
) -> None:
    env = await _registered(await pool_env(lab_config(lab, tmp_path, agents=AGENTS)))
    recordings_disk.fill()
    number = customer_number(Behaviour.ANSWER, ring=1, talk=2, suffix=71)
    call_id = await env.calls.click_to_call(agent="alice", number=number)

    bridged = await env.log.wait_for(bus.CallBridged, lambda e: e.call_id == call_id)
    assert not bridged.recording
    ended = await env.log.wait_for(bus.CallEnded, _ended(call_id), within=15)
    assert ended.reason == "completed"
    assert ended.talk_seconds is not None
    assert ended.talk_seconds > 1.5
    assert ended.recording_failed == "no space left on device"

    record = await env.store.calls.get(call_id)
    assert record.end_reason is CallEndReason.COMPLETED
    assert (record.recording_status, record.recording_error) == (
        "failed",
        "no space left on device",
    )
    assert record.recording_path is None
    assert not env.log.events(bus.RecordingReady)


async def test_recording_disk_filling_during_the_call_the_call_goes_on_and_its_record_says_why(
    lab: Lab, tmp_path: Path, recordings_disk: SmallFilesystem, pool_env: MakeEnv
) -> None:
    env = await _registered(await pool_env(lab_config(lab, tmp_path, agents=AGENTS)))
    number = customer_number(Behaviour.ANSWER, ring=1, talk=5, suffix=72)
    call_id = await env.calls.click_to_call(agent="alice", number=number)

    bridged = await env.log.wait_for(bus.CallBridged, lambda e: e.call_id == call_id)
    assert bridged.recording
    recordings_disk.fill()
    ended = await env.log.wait_for(bus.CallEnded, _ended(call_id), within=20)
    assert ended.reason == "completed"
    assert ended.talk_seconds is not None
    assert ended.talk_seconds > 4.0
    ready = await env.log.wait_for(bus.RecordingReady, lambda e: e.call_id == call_id)
    assert ready.recording_failed is not None
    assert ready.recording_failed.startswith("no space left on device"), ready
    assert (ready.path, ready.duration_seconds) == ("", 0.0)

    record = await env.store.calls.get(call_id)
    assert record.end_reason is CallEndReason.COMPLETED
    assert record.recording_status == "failed"
    assert record.recording_error == ready.recording_failed
    assert record.recording_path is None
    # The partial file was removed: the space is given back, nothing half-written stays.
    recordings_disk.free()
    assert [p.name for p in recordings_disk.path.iterdir() if p.suffix == ".wav"] == []


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    with running_private_postgres() as server:
        yield server


async def test_postgres_stopped_30_s_mid_call_the_call_goes_on_and_its_record_lands_once(
    lab: Lab, tmp_path: Path, private_postgres: PrivatePostgres, pool_env: MakeEnv
) -> None:
    text = lab_config_text(lab, tmp_path, agents=AGENTS).replace(
        f'url = "sqlite+aiosqlite:///{tmp_path / "store.sqlite3"}"',
        f'url = "{private_postgres.url()}"',
    )
    assert private_postgres.url() in text
    env = await _registered(await pool_env(parse_config(text, base_dir=tmp_path)))
    loop = asyncio.get_running_loop()
    number = customer_number(Behaviour.ANSWER, ring=1, talk=12, suffix=73)
    call_id = await env.calls.click_to_call(agent="alice", number=number)
    await env.log.wait_for(bus.CallRinging, lambda e: e.call_id == call_id and e.leg == "customer")
    await env.log.wait_for(bus.CallBridged, lambda e: e.call_id == call_id)

    await loop.run_in_executor(None, private_postgres.stop)
    stopped = time.monotonic()
    # A new call needs the agent's user from the store: refused before anything is
    # dialed, and the call in progress is not disturbed.
    refused = customer_number(Behaviour.ANSWER, ring=1, talk=2, suffix=74)
    with pytest.raises(StoreUnavailable):
        await env.calls.click_to_call(agent="alice", number=refused)
    # The call ends during the outage: its end and recording wait in the journal.
    ended = await env.log.wait_for(bus.CallEnded, _ended(call_id), within=25)
    assert ended.reason == "completed"
    assert ended.talk_seconds is not None
    assert ended.talk_seconds > 11.0
    ready = await env.log.wait_for(bus.RecordingReady, lambda e: e.call_id == call_id)
    assert ready.recording_failed is None
    while time.monotonic() - stopped < OUTAGE_SECONDS:
        health = await env.store.check_health(timeout=2)
        assert health.degraded
        assert health.pending >= 2
        await asyncio.sleep(1)
    assert env.pool.status()["t/agent-2001"].alive

    await loop.run_in_executor(None, private_postgres.start)
    await _wait_until(lambda: env.store.journal.pending == 0, timeout=60)
    assert not (await env.store.check_health()).degraded
    assert env.store.journal.dropped == 0

    record = await env.store.calls.get(call_id)
    assert record.ringing_at is not None
    assert record.answered_at is not None
    assert record.end_reason is CallEndReason.COMPLETED
    assert record.ended_at is not None
    assert record.ended_at > record.answered_at
    assert record.recording_status == "ok"
    assert record.recording_path == ready.path
    actions = Counter(e.action for e in await env.store.audit.for_entity("call", call_id))
    assert actions == Counter(create=1, ringing=1, answered=1, end=1, recording=1)
    assert [c.id for c in await env.store.calls.list_recent()] == [call_id]
    assert not [i for i in lab.customers.invites() if i.number == refused]


async def _wait_until(check: Callable[[], bool], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not done within {timeout} s"
        await asyncio.sleep(0.05)


async def test_inbound_call_while_postgres_is_down_is_answered_and_recorded_once_it_returns(
    lab: Lab,
    tmp_path: Path,
    private_postgres: PrivatePostgres,
    inbound_env: Callable[..., Awaitable[InboundEnv]],
) -> None:
    text = lab_config_text(lab, tmp_path, agents=AGENTS, reception=(RECEPTION,)).replace(
        f'url = "sqlite+aiosqlite:///{tmp_path / "store.sqlite3"}"',
        f'url = "{private_postgres.url()}"',
    )
    assert private_postgres.url() in text
    ie = await inbound_env(parse_config(text, base_dir=tmp_path))
    env = ie.env
    await _registered(env)
    async with asyncio.timeout(15):
        while not await lab.pbx.contacts(RECEPTION):
            await env.log.wait_for(
                bus.RegistrationChanged, lambda e: e.line == RECEPTION, start=env.log.mark()
            )
    ie.presence.set_available("alice")
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, private_postgres.stop)

    number = "+33612340077"
    customer = await lab.customers.call(RECEPTION, number, talk_seconds=2)
    created = await env.log.wait_for(
        bus.CallCreated, lambda e: e.direction == "inbound" and e.from_number == number
    )
    ringing = await env.log.wait_for(
        bus.CallRinging, lambda e: e.call_id == created.call_id and e.leg == "customer"
    )
    assert ringing.card is None  # the caller's card needs the store
    bridged = await env.log.wait_for(bus.CallBridged, lambda e: e.call_id == created.call_id)
    assert bridged.agent == "alice"
    ended = await env.log.wait_for(bus.CallEnded, lambda e: e.call_id == created.call_id, within=15)
    assert ended.reason == "completed"
    await env.log.wait_for(bus.RecordingReady, lambda e: e.call_id == created.call_id)
    assert await customer.wait(timeout=5), "the customer's call did not end cleanly"
    assert env.store.journal.pending >= 3

    await loop.run_in_executor(None, private_postgres.start)
    await _wait_until(lambda: env.store.journal.pending == 0, timeout=60)
    assert env.store.journal.dropped == 0
    record = await env.store.calls.get(created.call_id)
    assert (record.direction, record.from_number, record.to_number) == (
        "inbound",
        number,
        RECEPTION,
    )
    assert record.answered_at is not None
    assert record.end_reason is CallEndReason.COMPLETED
    assert record.recording_status == "ok"
    actions = Counter(e.action for e in await env.store.audit.for_entity("call", created.call_id))
    assert actions == Counter(create=1, answered=1, end=1, recording=1)
