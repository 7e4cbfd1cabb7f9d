"""``kill -9`` of a dialer process mid-list, twice, then a restart: the list
completes and the lab's customers saw every number exactly once.

The dialer runs in a real process (``python -m switchboard.dialer_runner``); the test follows
it through its JSON log lines on stderr and kills it at two chosen moments:
during a gap, right after the next number was claimed (claimed, never dialed:
it must go back to the queue), and while a customer rings (dialing: its
outcome comes from the call record, it must not be dialed again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from crm_store import CallListItemState, Store
from lab.customers import Behaviour, customer_number
from lab.runner import Lab
from tests.dialer.conftest import dialer_config, dialer_config_text, prepare_store


class RunnerProcess:
    """One ``python -m switchboard.dialer_runner`` process and its log lines."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []

    async def wait_log(
        self, predicate: Callable[[dict[str, Any]], bool], *, within: float = 30.0
    ) -> dict[str, Any]:
        """Read log lines until one matches; fails if the process ends first."""
        stream = self.process.stderr
        assert stream is not None
        async with asyncio.timeout(within):
            while True:
                raw = await stream.readline()
                if not raw:
                    raise AssertionError(f"runner exited: {self.lines[-5:]}")
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                self.lines.append(line)
                if predicate(line):
                    return line

    async def drain(self, *, within: float) -> int:
        """Read until the process exits; returns its status."""
        stream = self.process.stderr
        assert stream is not None
        async with asyncio.timeout(within):
            while raw := await stream.readline():
                with contextlib.suppress(ValueError):
                    self.lines.append(json.loads(raw))
            return await self.process.wait()

    async def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[RunnerProcess] = []

    async def start(config_path: Path, *args: str) -> RunnerProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "switchboard.dialer_runner",
            str(config_path),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=tmp_path,
        )
        proc = RunnerProcess(process)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.process.returncode is None:
            proc.process.kill()
            await proc.process.wait()


def _event(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("event") == name


async def test_list_survives_kill_9_without_dialing_anyone_twice(
    lab: Lab, tmp_path: Path, runner: Callable[..., Any]
) -> None:
    text = dialer_config_text(lab, tmp_path, gap_seconds=1.0)
    config_path = tmp_path / "switchboard.toml"
    config_path.write_text(text)
    config = dialer_config(lab, tmp_path)
    behaviours = [
        (Behaviour.BUSY, 1, 0),
        (Behaviour.REJECT, 1, 0),
        (Behaviour.ANSWER, 1, 1),
    ]
    numbers = [
        customer_number(b, ring=ring, talk=talk, suffix=300 + n)
        for n, (b, ring, talk) in enumerate(behaviours * 4)
    ]
    store = await prepare_store(config)
    try:
        call_list, _ = await store.call_lists.create_list("durable", None, numbers)
    finally:
        await store.aclose()

    # 1. Killed in a gap, just after claiming the 4th number (never dialed).
    first = await runner(config_path, "--start", f"alice={call_list.id}")
    for _ in range(3):
        await first.wait_log(_event("dialer.result"))
    claimed = await first.wait_log(_event("dialer.claimed"))
    await first.kill()
    assert len(lab.customers.invites()) == 3

    # 2. Restarted (the session resumes by itself), killed while a customer rings.
    # (Killed between the INVITE leaving and the customer's 180, the number would
    # count as dialed too, but the lab might never see it: the INVITE may die in
    # the worker or in Kamailio's 407 round trip. Not dialing twice wins.)
    second = await runner(config_path)
    resumed = await second.wait_log(_event("dialer.dialing"), within=30)
    assert resumed["number"] == claimed["number"], "the claimed number was not given back"
    await second.wait_log(_event("dialer.result"))
    ringing = await second.wait_log(_event("dialer.ringing"))
    await second.kill()

    # 3. Restarted again: the list completes, the process exits.
    third = await runner(config_path, "--exit-when-idle")
    assert await third.drain(within=90) == 0

    seen = Counter(i.number for i in lab.customers.invites())
    assert set(seen) == set(numbers)
    assert max(seen.values()) == 1, seen

    async with await Store.open(config.store.url_with_secret(), default_region="DE") as store:
        items = {i.number_e164: i for i in await store.call_lists.items(call_list.id)}
        states = Counter(i.state for i in items.values())
        assert set(states) <= {CallListItemState.DONE, CallListItemState.FAILED}, states
        # The number ringing at the kill: outcome from its call record, not redialed.
        killed = items[ringing["number"]]
        assert killed.last_result == "interrupted"
        assert killed.attempts == 1
        call = await store.calls.get(killed.last_call_id) if killed.last_call_id else None
        assert call is not None
        assert call.end_reason is not None
        sessions = await store.dialer.sessions()
        assert [s.state for s in sessions] == ["finished"]
        assert all(not c.is_open for c in await store.calls.list_recent(limit=50))
