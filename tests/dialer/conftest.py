"""Real peers for the dialer tests: the lab (Kamailio, SIPp customers, agent
phones), a SQLite store, the bus, the SIP pool and the dialer."""

from __future__ import annotations

import contextlib
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

# The lab's fixtures (Kamailio on free ports); pytest_plugins is allowed only in
# the root conftest, so they are imported here.
from lab.pytest_plugin import lab, lab_extensions, lab_phones  # noqa: F401
from lab.runner import Lab
from sip.pool import SipPool
from tests.sip.conftest import BusLog, lab_config_text

AGENTS = {"alice": ("1001", "2001"), "bob": ("1002", "2002")}


def dialer_config_text(
    running: Lab,
    tmp_path: Path,
    *,
    agents: Mapping[str, tuple[str, str]] = AGENTS,
    hours: str = "00:00-23:59",
    **dialer: Any,
) -> str:
    """The TOML of a daemon for the lab ``running``; ``dialer`` sets ``[dialer]`` keys."""
    return lab_config_text(
        running,
        tmp_path,
        agents=agents,
        region="DE",
        site=(
            'timezone = "Europe/Berlin"\n'
            'working_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n'
            f'working_hours = "{hours}"\n'
        ),
        dialer={"ring_timeout": 10, "max_attempts": 1, **dialer},
        max_workers=4,
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
