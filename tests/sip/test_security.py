"""The SIP workers take calls from the PBX only; a stranger's INVITE leaves no trace.

pjsip has had parser bugs, so ``pbx.allowed_sources`` is enforced inside each worker:
an INVITE from anywhere else is answered ``403`` and never reaches the daemon. Here
SIPp sends one straight to every worker's SIP port from 127.0.0.2 while the PBX (and
the only allowed source) is 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import structlog

import bus
from lab.runner import Lab
from tests.sip.conftest import InboundEnv, Sipp, lab_config

MakeInbound = Callable[..., Awaitable[InboundEnv]]
# What the stranger's INVITE carries (tests/sip/scenarios/uac_expect_403.xml); none
# of it may reach a log line.
_PAYLOAD = ("INVITE sip:", "v=0", "m=audio", "o=stranger", "666@", "SIPpTag", "Call-ID")
_REFUSED = "INVITE from a source not allowed"


class _LogWatch:
    """Every structlog entry logged meanwhile, and an event set on each new one."""

    def __init__(self) -> None:
        self.entries: list[MutableMapping[str, Any]] = []
        self.changed = asyncio.Event()

    def __call__(self, _logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        event["log_level"] = method
        self.entries.append(event)
        self.changed.set()
        raise structlog.DropEvent

    async def wait_for(self, predicate: Callable[[list[MutableMapping[str, Any]]], bool]) -> None:
        async with asyncio.timeout(5):
            while not predicate(self.entries):
                self.changed.clear()
                await self.changed.wait()


@contextlib.contextmanager
def _watch_logs() -> Iterator[_LogWatch]:
    """Like ``structlog.testing.capture_logs``: the processor list is changed in place,
    so loggers bound before (each worker client's) are captured too."""
    watch = _LogWatch()
    processors = structlog.get_config()["processors"]
    saved = list(processors)
    processors.clear()
    processors.append(watch)
    structlog.configure(processors=processors)
    try:
        yield watch
    finally:
        processors.clear()
        processors.extend(saved)
        structlog.configure(processors=processors)


async def test_invite_from_a_stranger_is_refused_403_and_creates_nothing(
    lab: Lab,
    tmp_path: Path,
    inbound_env: MakeInbound,
    sipp: Callable[..., Awaitable[Sipp]],
) -> None:
    config = lab_config(lab, tmp_path, agents={"alice": ("1001", "2001")}, reception=("2100",))
    assert config.pbx.allowed_sources == ("127.0.0.1",)
    ie = await inbound_env(config)
    env = ie.env
    for line in ("2001", "2100"):
        await env.log.wait_for(
            bus.RegistrationChanged, lambda e, line=line: e.line == line and e.state == "registered"
        )
    ie.presence.set_available("alice")  # a call that got in would be offered to her
    ports = [plan.settings.sip_port for plan in env.pool.plans]
    assert len(ports) == 2
    mark = env.log.mark()

    with _watch_logs() as logs:
        strangers = [
            await sipp("uac_expect_403.xml", remote=f"127.0.0.1:{port}", local_ip="127.0.0.2")
            for port in ports
        ]
        for stranger in strangers:
            assert await stranger.wait() == 0, "the INVITE was not answered 403"
        # The worker's own line about it, relayed from its stderr by the client.
        await logs.wait_for(lambda e: sum(_REFUSED in str(x["event"]) for x in e) == len(ports))

    refused = [e for e in logs.entries if _REFUSED in str(e["event"])]
    assert {e["worker_id"] for e in refused} == {plan.worker_id for plan in env.pool.plans}
    for entry in refused:
        assert entry["log_level"] == "warning"
        assert "source=127.0.0.2" in entry["event"]
    worker_lines = [str(e) for e in logs.entries if "worker_id" in e]
    for line in worker_lines:
        for fragment in _PAYLOAD:
            assert fragment not in line, f"{fragment!r} logged: {line}"

    # Nothing reached the daemon: no event, no call record, no lead, no leg.
    env.log.mark()  # pulls everything published so far
    published = [
        e.event for e in env.log.seen[mark:] if not isinstance(e.event, bus.RegistrationChanged)
    ]
    assert published == []
    assert await env.store.calls.list_recent() == []
    assert await env.store.leads.pool() == []
    assert ie.inbound.active_calls() == []
    assert ie.inbound.stats.calls == 0
    assert all(status.calls == 0 for status in env.pool.status().values())
    assert ie.presence.state("alice") == "available"
