"""Real peers for the dialer tests: the lab (Kamailio, SIPp customers, agent
phones), a SQLite store, the bus, the SIP pool and the dialer."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import bus
from config import Config, parse_config
from crm_store import Store, upgrade
from dialer import Dialer
from lab import free_port_block

# The lab's fixtures (Kamailio on free ports); pytest_plugins is allowed only in
# the root conftest, so they are imported here.
from lab.pytest_plugin import lab, lab_extensions, lab_phones  # noqa: F401
from lab.runner import Lab
from sip.pool import SipPool
from tests.sip.conftest import BusLog

AGENTS = {"alice": ("1001", "2001"), "bob": ("1002", "2002")}

CONFIG = """\
[site]
id = "t"
default_region = "DE"
timezone = "Europe/Berlin"
working_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
working_hours = "{hours}"

[pbx]
host = "{pbx_host}"
port = {pbx_port}
transport = "udp"
domain = "{domain}"
register_expires = 120

[sip]
bind_address = "127.0.0.1"
port_range_start = {sip_base}
max_workers = {max_workers}
rtp_port_range = [{rtp_first}, {rtp_last}]
restart_backoff_max = 5

{lines}

{agents}

[recording]
enabled = true
directory = "recordings"
retention_days = 0

[store]
url = "sqlite+aiosqlite:///{db}"

[dialer]
{dialer}
"""


def dialer_config_text(
    running: Lab,
    tmp_path: Path,
    *,
    agents: Mapping[str, tuple[str, str]] = AGENTS,
    hours: str = "00:00-23:59",
    **dialer: Any,
) -> str:
    """The TOML of a daemon for the lab ``running``; ``dialer`` sets ``[dialer]`` keys."""
    lines = "\n".join(
        f'[[lines]]\nextension = "{line}"\nrole = "agent"\nsecret = "{running.extensions[line]}"\n'
        for _phone, line in agents.values()
    )
    agent_text = "\n".join(
        f'[[agents]]\nname = "{user.title()}"\nextension = "{phone}"\nline = "{line}"\n'
        f'user = "{user}"\n'
        for user, (phone, line) in agents.items()
    )
    settings = {"ring_timeout": 10, "max_attempts": 1, **dialer}
    dialer_text = "\n".join(
        f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"'
        for key, value in settings.items()
    )
    max_workers = 4
    rtp_first = random.randrange(32000, 39000, 100)
    return CONFIG.format(
        hours=hours,
        pbx_host=running.pbx_host,
        pbx_port=running.pbx_port,
        domain=running.domain,
        sip_base=free_port_block(max_workers),
        max_workers=max_workers,
        rtp_first=rtp_first,
        rtp_last=rtp_first + 799,
        lines=lines,
        agents=agent_text,
        db=tmp_path / "store.sqlite3",
        dialer=dialer_text,
    )


def dialer_config(running: Lab, tmp_path: Path, **options: Any) -> Config:
    return parse_config(dialer_config_text(running, tmp_path, **options), base_dir=tmp_path)


async def prepare_store(config: Config) -> Store:
    """The migrated store of ``config``, with its agents as users."""
    url = config.store.url_with_secret()
    await upgrade(url)
    store = await Store.open(url, default_region=config.site.default_region)
    for agent in config.agents:
        if agent.user is not None and await store.users.by_username(agent.user) is None:
            await store.users.add(agent.user, agent.name, extension=agent.extension)
    return store


@dataclass
class DialerEnv:
    config: Config
    store: Store
    bus: bus.Bus
    log: BusLog
    pool: SipPool
    dialer: Dialer


@pytest.fixture
async def dialer_env() -> AsyncIterator[Callable[..., Awaitable[DialerEnv]]]:
    """Factory: store, bus, started pool (lines registered) and dialer."""
    stack = contextlib.AsyncExitStack()

    async def make(
        config: Config, *, clock: Callable[[], datetime] | None = None, **options: Any
    ) -> DialerEnv:
        store = await prepare_store(config)
        stack.push_async_callback(store.aclose)
        events = bus.Bus(config.site.id)
        stack.callback(events.close)
        log = BusLog(events)
        pool = SipPool(config, bus=events, store=store, stable_after=5.0)
        await stack.enter_async_context(pool)
        for agent in config.agents:
            await log.wait_for(
                bus.RegistrationChanged,
                lambda e, line=agent.line: e.line == line and e.state == "registered",
            )
        if clock is not None:
            options["clock"] = clock
        dialer = Dialer(pool, config=config, bus=events, store=store, **options)
        await stack.enter_async_context(dialer)
        return DialerEnv(config, store, events, log, pool, dialer)

    async with stack:
        yield make
