"""Real peers for the SIP worker tests: SIPp customers and pjsua2 workers.

Every wait is on an event with a timeout; the only sleeps are talk time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

import bus
from config import Config, InboundConfig, parse_config
from crm_store import Store, upgrade
from lab import free_port_block

# The lab's fixtures (Kamailio on free ports); pytest_plugins is allowed only in
# the root conftest, so they are imported here.
from lab.pytest_plugin import lab, lab_extensions, lab_phones  # noqa: F401
from lab.runner import Lab
from sip import protocol as p
from sip.calls import CallService
from sip.client import WorkerClient
from sip.inbound import InboundService, PresenceBook
from sip.pool import SipPool
from tests._toml import toml_keys

SCENARIOS = Path(__file__).parent / "scenarios"
E = TypeVar("E", bound=p.Event)

if shutil.which("sipp") is None:  # pragma: no cover - the CI image has it
    pytest.skip("SIPp (Debian sip-tester) is not installed", allow_module_level=True)

_rtp_ports = itertools.count(31000, 200)


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """Return a port free on 127.0.0.1 right now (UDP and TCP)."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def settings(**overrides: Any) -> p.WorkerSettings:
    """Worker settings for loopback tests; each worker gets its own RTP ports."""
    base: dict[str, Any] = {
        "bind_address": "127.0.0.1",
        "sip_port": 0,
        "rtp_port_start": next(_rtp_ports),
        "rtp_port_count": 100,
        "allowed_sources": ("127.0.0.1/32",),
        "log_level": "warning",
    }
    base.update(overrides)
    return p.WorkerSettings(**base)


@dataclass
class Worker:
    """A started WorkerClient plus an event log the tests can wait on."""

    client: WorkerClient
    seen: list[p.Event] = field(default_factory=list)

    async def send(self, cls: type[p.Command], *, within: float = 5.0, **fields: Any) -> p.Ok:
        return await self.client.command(
            cls(cmd_id=self.client.next_cmd_id(), **fields), timeout=within
        )

    async def wait_for(
        self,
        kind: type[E],
        predicate: Callable[[E], bool] = lambda _e: True,
        *,
        within: float = 10.0,
    ) -> E:
        """Return the first event (seen or future) of ``kind`` matching ``predicate``."""
        for event in self.seen:
            if isinstance(event, kind) and predicate(event):
                return event
        async with asyncio.timeout(within):
            while True:
                event = await self.client.next_event(timeout=within)
                self.seen.append(event)
                if isinstance(event, kind) and predicate(event):
                    return event

    async def call_state(self, call_id: str, state: str, *, within: float = 10.0) -> p.CallState:
        return await self.wait_for(
            p.CallState, lambda e: e.call_id == call_id and e.state == state, within=within
        )


@pytest.fixture
async def start_worker() -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Factory starting workers; all are closed at teardown."""
    started: list[WorkerClient] = []

    async def start(**overrides: Any) -> Worker:
        client = await WorkerClient.start(
            worker_id=f"w{len(started)}", config=settings(**overrides)
        )
        started.append(client)
        return Worker(client)

    yield start
    for client in started:
        await client.aclose()


@dataclass
class Sipp:
    """One SIPp process running a scenario from tests/sip/scenarios."""

    process: asyncio.subprocess.Process
    port: int
    transport: str

    def uri(self, user: str = "100") -> str:
        suffix = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{user}@127.0.0.1:{self.port}{suffix}"

    async def wait(self, within: float = 15.0) -> int:
        async with asyncio.timeout(within):
            return await self.process.wait()


@pytest.fixture
async def sipp(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Sipp]]]:
    """Factory running SIPp scenarios; kills leftovers at teardown."""
    running: list[Sipp] = []

    async def run(
        scenario: str, *, calls: int = 1, remote: str | None = None, local_ip: str = "127.0.0.1"
    ) -> Sipp:
        port = free_port()
        args = [
            "sipp",
            "-sf",
            str(SCENARIOS / scenario),
            "-i",
            local_ip,
            "-p",
            str(port),
            "-mi",
            local_ip,
            "-mp",
            str(free_port() & ~1),
            "-m",
            str(calls),
            "-nostdin",
            "-timeout",
            "60",
            "-trace_err",
        ]
        if remote is not None:
            args.append(remote)
        process = await asyncio.create_subprocess_exec(
            *args,
            cwd=tmp_path,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        peer = Sipp(process, port, "udp")
        running.append(peer)
        if remote is None:
            await _bound(port, process)
        return peer

    yield run
    for peer in running:
        if peer.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                peer.process.kill()
        await peer.process.wait()


async def _bound(port: int, process: asyncio.subprocess.Process, within: float = 5.0) -> None:
    """Wait until something listens on UDP ``port`` (SIPp has started)."""
    async with asyncio.timeout(within):
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"SIPp exited with {process.returncode}: see its error log")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    return
            await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- pool harness

E2 = TypeVar("E2", bound="bus.Event")


class BusLog:
    """Every envelope published on a bus, with waits on them."""

    def __init__(self, bus_: bus.Bus) -> None:
        self._sub = bus_.subscribe("tests", maxsize=100_000)
        self.seen: list[bus.Envelope] = []

    def _pull(self) -> None:
        while (envelope := self._sub.get_nowait()) is not None:
            self.seen.append(envelope)

    def events(self, kind: type[E2], predicate: Callable[[E2], bool] = lambda _e: True) -> list[E2]:
        self._pull()
        return [e.event for e in self.seen if isinstance(e.event, kind) and predicate(e.event)]

    async def wait_for(
        self,
        kind: type[E2],
        predicate: Callable[[E2], bool] = lambda _e: True,
        *,
        within: float = 10.0,
        start: int = 0,
    ) -> E2:
        """The first event of ``kind`` matching ``predicate`` from index ``start`` on."""
        async with asyncio.timeout(within):
            index = start
            while True:
                self._pull()
                for envelope in self.seen[index:]:
                    event = envelope.event
                    if isinstance(event, kind) and predicate(event):
                        return event
                index = len(self.seen)
                self.seen.append(await self._sub.get())

    def mark(self) -> int:
        """An index for ``wait_for(start=...)``: only events published from now on."""
        self._pull()
        return len(self.seen)


LAB_CONFIG = """\
[site]
id = "{site_id}"
default_region = "{region}"
{site}
[pbx]
host = "{pbx_host}"
port = {pbx_port}
transport = "{transport}"
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
{store}

[dialer]
{dialer}

[outbound]
{outbound}
{daemon}{extra}"""

# What a ``switchboard run`` process adds: its listening ports, and logs the tests read.
DAEMON_SECTIONS = """
[websocket]
port = {websocket_port}

[http]
port = {http_port}

[logging]
format = "json"
"""


# ``site`` lines for a daemon that dials: every day, all day, whatever day the test runs.
EVERY_DAY = (
    'working_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n'
    'working_hours = "00:00-23:59"\n'
)

# The lab's customers have Berlin numbers (+49 30 199...), and the dialer's tests
# judge calling hours of numbers abroad: every country, whatever the test's region.
LAB_OUTBOUND = 'allowed_countries = ["*"]'


@dataclass
class PoolEnv:
    """A config for the lab, its store, bus, pool and click-to-call service."""

    config: Config
    store: Store
    bus: bus.Bus
    log: BusLog
    pool: SipPool
    calls: CallService


def lab_config_text(
    running: Lab,
    tmp_path: Path,
    *,
    agents: Mapping[str, tuple[str, str]],
    reception: Sequence[str] = (),
    transport: str = "udp",
    region: str = "FR",
    site_id: str = "t",
    site: str = "",
    names: Mapping[str, str] | None = None,
    supervisors: Collection[str] = (),
    dialer: Mapping[str, Any] | None = None,
    max_workers: int = 8,
    outbound: str = LAB_OUTBOUND,
    store: Mapping[str, Any] | None = None,
    websocket_port: int | None = None,
    extra: str = "",
) -> str:
    """The TOML of a daemon for the lab ``running``: ``agents`` maps a user name to
    (phone, line); ``names`` gives agents' names (default: the user name, titled) and
    ``supervisors`` the users who supervise; ``reception`` lists reception lines;
    ``site`` adds lines to ``[site]``; ``dialer`` sets ``[dialer]`` keys (default
    ``ring_timeout = 10``); ``outbound`` is the body of ``[outbound]`` (default: every
    country allowed); ``store`` sets ``[store]`` keys (default: a SQLite file in
    ``tmp_path``). With ``websocket_port``, the config is a ``switchboard run``
    process's: its websocket on that port, its HTTP on a free one, JSON logs.
    ``extra`` is TOML appended at the end."""
    roles = [(line, "agent") for _phone, line in agents.values()]
    roles += [(line, "reception") for line in reception]
    # No display_name: pjsua puts it in the Contact, and the lab customers' SIPp
    # copies the whole Contact ("Name" <sip:...>) into its BYE's request line,
    # which Kamailio then refuses as unparsable (a lab bug, reported).
    line_text = "\n".join(
        f'[[lines]]\nextension = "{ext}"\nrole = "{role}"\nsecret = "{running.extensions[ext]}"\n'
        for ext, role in roles
    )
    agent_text = "\n".join(
        f'[[agents]]\nname = "{(names or {}).get(user, user.title())}"\nextension = "{phone}"\n'
        f'line = "{line}"\nuser = "{user}"\n'
        + ("supervisor = true\n" if user in supervisors else "")
        for user, (phone, line) in agents.items()
    )
    daemon = ""
    if websocket_port is not None:
        daemon = DAEMON_SECTIONS.format(
            websocket_port=websocket_port, http_port=free_port(socket.SOCK_STREAM)
        )
    rtp_first = random.randrange(32000, 39000, 100)
    return LAB_CONFIG.format(
        site_id=site_id,
        region=region,
        site=site,
        pbx_host=running.pbx_host,
        pbx_port=running.pbx_port,
        transport=transport,
        domain=running.domain,
        sip_base=free_port_block(max_workers),
        max_workers=max_workers,
        rtp_first=rtp_first,
        rtp_last=rtp_first + 799,
        lines=line_text,
        agents=agent_text,
        store=toml_keys(
            store
            if store is not None
            else {"url": f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"}
        ),
        dialer=toml_keys(dialer if dialer is not None else {"ring_timeout": 10}),
        outbound=outbound,
        daemon=daemon,
        extra=extra,
    )


def lab_config(
    running: Lab,
    tmp_path: Path,
    *,
    agents: Mapping[str, tuple[str, str]],
    reception: Sequence[str] = (),
    transport: str = "udp",
    region: str = "FR",
    outbound: str = LAB_OUTBOUND,
) -> Config:
    """:func:`lab_config_text`, parsed."""
    text = lab_config_text(
        running,
        tmp_path,
        agents=agents,
        reception=reception,
        transport=transport,
        region=region,
        outbound=outbound,
    )
    return parse_config(text, base_dir=tmp_path)


@pytest.fixture
async def pool_env(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[PoolEnv]]]:
    """Factory: store (migrated, with the agents as users), bus, started pool and service."""
    stack = contextlib.AsyncExitStack()

    async def make(config: Config, **service_options: Any) -> PoolEnv:
        url = config.store.url_with_secret()
        await upgrade(url)
        store = await Store.open(url, default_region=config.site.default_region)
        stack.push_async_callback(store.aclose)
        for agent in config.agents:
            if agent.user is not None:
                await store.users.add(agent.user, agent.name, extension=agent.extension)
        events = bus.Bus(config.site.id)
        stack.callback(events.close)
        log = BusLog(events)
        pool = SipPool(config, bus=events, store=store, stable_after=5.0)
        await stack.enter_async_context(pool)
        calls = CallService(pool, config=config, bus=events, store=store, **service_options)
        await stack.enter_async_context(calls)
        return PoolEnv(config, store, events, log, pool, calls)

    async with stack:
        yield make


# --------------------------------------------------------------------------- inbound harness


@dataclass
class InboundEnv:
    """A pool environment plus the inbound service and its presence book."""

    env: PoolEnv
    presence: PresenceBook
    inbound: InboundService


def with_inbound(config: Config, **inbound: Any) -> Config:
    """``config`` with its ``[inbound]`` settings replaced by ``inbound`` (validated)."""
    merged = {**config.inbound.model_dump(), **inbound}
    return config.model_copy(update={"inbound": InboundConfig(**merged)})


@pytest.fixture
async def inbound_env(
    pool_env: Callable[..., Awaitable[PoolEnv]],
) -> AsyncIterator[Callable[..., Awaitable[InboundEnv]]]:
    """Factory: ``pool_env`` plus a PresenceBook (every agent offline) and a started
    InboundService poked on every presence change; closed before the pool."""
    stack = contextlib.AsyncExitStack()

    async def make(config: Config, **service_options: Any) -> InboundEnv:
        env = await pool_env(config)
        presence = PresenceBook.from_config(config)
        inbound = InboundService(
            env.pool,
            config=config,
            bus=env.bus,
            store=env.store,
            presence=presence,
            **service_options,
        )
        await stack.enter_async_context(inbound)
        stack.callback(presence.add_listener(inbound.poke))
        return InboundEnv(env, presence, inbound)

    async with stack:
        yield make
