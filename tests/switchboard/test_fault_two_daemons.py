"""Fault: two daemons on one PostgreSQL dial one shared list; one of them is killed.

Two real ``switchboard run`` processes ("east" with agent alice on phone 1001, "west"
with agent bob on phone 1002) share one PostgreSQL database (the session's server,
tests/_services.py) and the lab's PBX. Each agent dials the same call list from its own
daemon. What was dialed is read from the lab's side — the INVITEs the SIPp customers
received — never from the store's word.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from websockets.asyncio.client import ClientConnection, connect

from lab.customers import Behaviour, customer_number
from lab.pytest_plugin import lab, lab_extensions
from lab.runner import Lab
from tests._services import postgres_admin_dsn
from tests.sip.conftest import EVERY_DAY, lab_config_text

from .conftest import DaemonProcess, free_tcp_port, run_cli

__all__ = ["lab", "lab_extensions"]

pytestmark = [pytest.mark.postgres, pytest.mark.fault]

StartDaemon = Callable[..., DaemonProcess]
TIMEOUT = 30.0


@pytest.fixture
def lab_phones() -> list[str]:
    return ["1001", "1002"]


@pytest.fixture
async def store_url() -> AsyncIterator[str]:
    """A fresh database on the session's PostgreSQL, dropped after the test."""
    admin = postgres_admin_dsn()
    name = f"sb_two_daemons_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(admin)
    try:
        yield urlunsplit(("postgresql+asyncpg", parts.netloc, f"/{name}", "", ""))
    finally:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


class Agent:
    """One agent's daemon, and a websocket client logged in as that agent."""

    def __init__(
        self, daemon: DaemonProcess, config: Path, ws: ClientConnection, token: str
    ) -> None:
        self.daemon = daemon
        self.config = config
        self.ws = ws
        self.token = token
        self.events: list[dict[str, Any]] = []

    async def event(self, type_: str, *, after: int = 0) -> dict[str, Any]:
        """The first event of ``type_`` this client saw, skipping ``after`` of them."""
        seen = 0
        index = 0
        async with asyncio.timeout(TIMEOUT * 4):
            while True:
                while index < len(self.events):
                    event = self.events[index]
                    index += 1
                    if event["type"] == type_:
                        if seen == after:
                            return event
                        seen += 1
                message = json.loads(await self.ws.recv(decode=True))
                if message.get("type") == "event":
                    self.events.append(message["event"])


async def _agent(
    stack: AsyncExitStack,
    lab: Lab,
    directory: Path,
    start_daemon: StartDaemon,
    store_url: str,
    *,
    site: str,
    user: str,
    phone: str,
    line: str,
    gap: float,
    lease: float,
) -> Agent:
    await asyncio.to_thread(directory.mkdir)
    config = directory / "switchboard.toml"
    config.write_text(
        lab_config_text(
            lab,
            directory,
            agents={user: (phone, line)},
            site_id=site,
            site=EVERY_DAY,
            max_workers=2,
            dialer={"gap_seconds": gap, "max_attempts": 1, "claim_lease_seconds": lease},
            outbound='allowed_countries = ["DE"]',  # the lab's customers are in Berlin
            store={"url": store_url, "auto_migrate": False},
            websocket_port=(ws_port := free_tcp_port()),
        )
    )
    added = run_cli("--config", str(config), "users", "add", user, "--name", user.title())
    assert added.returncode == 0, added.stderr
    token = run_cli("--config", str(config), "users", "token", user).stdout.strip()
    daemon = start_daemon(config)
    daemon.wait_for("READY=1", timeout=TIMEOUT)
    ws = await stack.enter_async_context(connect(f"ws://127.0.0.1:{ws_port}", open_timeout=10))
    await ws.send(json.dumps({"type": "auth", "token": token}))
    assert json.loads(await ws.recv(decode=True))["type"] == "auth.ok"
    return Agent(daemon, config, ws, token)


async def _start_dialing(agent: Agent, list_id: str) -> None:
    started = await asyncio.to_thread(
        run_cli,
        "--config",
        str(agent.config),
        "dialer",
        "start",
        list_id,
        "--token",
        agent.token,
    )
    assert started.returncode == 0, started.stderr


def _numbers(count: int, base: int) -> list[str]:
    """Quick outcomes: busy or rejected at once, one in four answered for a second."""
    numbers = []
    for n in range(count):
        if n % 4 == 0:
            numbers.append(customer_number(Behaviour.ANSWER, ring=0, talk=1, suffix=base + n))
        elif n % 2:
            numbers.append(customer_number(Behaviour.BUSY, ring=0, suffix=base + n))
        else:
            numbers.append(customer_number(Behaviour.REJECT, ring=0, suffix=base + n))
    return numbers


def _create_list(config: Path, name: str, numbers: list[str]) -> str:
    created = run_cli("--config", str(config), "lists", "create", name, *numbers)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


async def _prepare(store_url: str, tmp_path: Path) -> None:
    probe = tmp_path / "migrate.toml"
    probe.write_text(
        f'[pbx]\nhost = "127.0.0.1"\ndomain = "switchboard.lab"\n[store]\nurl = "{store_url}"\n'
    )
    upgraded = await asyncio.to_thread(run_cli, "--config", str(probe), "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr


async def test_two_daemons_on_one_postgres_dial_each_number_of_a_shared_list_once(
    lab: Lab, tmp_path: Path, start_daemon: StartDaemon, store_url: str
) -> None:
    await _prepare(store_url, tmp_path)
    numbers = _numbers(16, 100)
    async with AsyncExitStack() as stack:
        common = {"gap": 1, "lease": 30}
        east = await _agent(
            stack, lab, tmp_path / "east", start_daemon, store_url,
            site="east", user="alice", phone="1001", line="2001", **common,
        )  # fmt: skip
        west = await _agent(
            stack, lab, tmp_path / "west", start_daemon, store_url,
            site="west", user="bob", phone="1002", line="2002", **common,
        )  # fmt: skip
        list_id = _create_list(east.config, "shared", numbers)
        await asyncio.gather(_start_dialing(east, list_id), _start_dialing(west, list_id))
        finished = await asyncio.gather(
            east.event("dialer.session.finished"), west.event("dialer.session.finished")
        )

    seen = Counter(i.number for i in lab.customers.invites())
    assert set(seen) == set(numbers)
    assert max(seen.values()) == 1, [n for n, c in seen.items() if c > 1]
    dialed = [f["data"]["dialed"] for f in finished]
    assert all(d > 0 for d in dialed), dialed
    assert sum(dialed) == len(numbers)


async def test_a_daemon_killed_mid_list_leaves_its_claim_to_the_other_after_the_lease(
    lab: Lab, tmp_path: Path, start_daemon: StartDaemon, store_url: str
) -> None:
    await _prepare(store_url, tmp_path)
    numbers = _numbers(12, 200)
    gap, lease = 20.0, 25.0
    async with AsyncExitStack() as stack:
        # East pauses long between calls, holding its next number claimed meanwhile:
        # killed then, it leaves a claim behind that no call was made for.
        east = await _agent(
            stack, lab, tmp_path / "east", start_daemon, store_url,
            site="east", user="alice", phone="1001", line="2001", gap=gap, lease=lease,
        )  # fmt: skip
        west = await _agent(
            stack, lab, tmp_path / "west", start_daemon, store_url,
            site="west", user="bob", phone="1002", line="2002", gap=1, lease=lease,
        )  # fmt: skip
        list_id = _create_list(east.config, "shared", numbers)
        await _start_dialing(east, list_id)
        await east.event("dialer.result")
        await _start_dialing(west, list_id)
        # After an unanswered call east claims its next number, then announces its
        # gap: that number is held a whole gap before its dial.
        gap_event = await east.event("dialer.gap")
        east.daemon.proc.kill()
        before = east.events[: east.events.index(gap_event)]
        left = [e for e in before if e["type"] == "dialer.item.claimed"][-1]
        east.daemon.proc.wait(timeout=TIMEOUT)
        left_number = left["data"]["number"]
        claimed_at = datetime.fromisoformat(left["at"]).timestamp()
        assert left_number not in {i.number for i in lab.customers.invites()}, "killed too late"

        finished = await west.event("dialer.session.finished")

    seen = Counter(i.number for i in lab.customers.invites())
    assert max(seen.values()) == 1, [n for n, c in seen.items() if c > 1]
    assert set(seen) == set(numbers)
    # The number east held when it died was dialed by west, once its lease ran out.
    [invite] = [i for i in lab.customers.invites() if i.number == left_number]
    assert invite.at >= claimed_at + lease - 0.5
    assert finished["data"]["remaining"] == 0
