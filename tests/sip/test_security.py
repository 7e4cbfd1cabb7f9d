"""The SIP workers hear the PBX only; a stranger's packets leave no trace.

pjsip has had parser bugs, so ``pbx.allowed_sources`` is enforced in the kernel on
each worker's SIP socket (a socket filter): a packet from anywhere else, whatever its
method, is dropped before pjsip reads it, nothing answers it, and the worker logs how
many it dropped. Here the stranger is 127.0.0.2 while the PBX (and the only allowed
source) is 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog

import bus
from lab.runner import Lab
from sip import protocol as p
from sip.exceptions import WorkerCommandError
from tests.sip.conftest import InboundEnv, Worker, lab_config
from tests.sip.udp_peer import UdpPeer, request

MakeInbound = Callable[..., Awaitable[InboundEnv]]
StartWorker = Callable[..., Awaitable[Worker]]
# What the stranger sends; none of it may reach a log line.
_PAYLOAD = ("INVITE sip:", "v=0", "m=audio", "o=stranger", "Call-ID", "probe@")
_DROPPED = "SIP datagrams dropped before the SIP stack"
_METHODS = ("INVITE", "OPTIONS", "MESSAGE", "SUBSCRIBE", "REGISTER", "NOTIFY")
_SDP = "v=0\r\no=stranger 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n" + (
    "m=audio 40000 RTP/AVP 8\r\n"
)


async def _stranger_knocks(stranger: UdpPeer, port: int) -> None:
    """Send every method to ``port``, then make sure the worker has read them all:
    an OPTIONS from the allowed source sent after them is answered (pjsip answers
    in the order it reads), so an answer to the stranger would have come by then."""
    for method in _METHODS:
        body = _SDP if method == "INVITE" else ""
        kind = "application/sdp" if method == "INVITE" else "text/plain"
        stranger.send(
            request(
                method,
                to=("127.0.0.1", port),
                local=stranger.address,
                headers=("Event: presence",) if method in ("SUBSCRIBE", "NOTIFY") else (),
                body=body,
                content_type=kind,
            ),
            ("127.0.0.1", port),
        )
    pbx = await UdpPeer.open("127.0.0.1")
    try:
        assert await pbx.ask("OPTIONS", ("127.0.0.1", port)) == 200
    finally:
        pbx.close()


async def test_every_method_from_a_stranger_is_dropped_unanswered_and_logged(
    start_worker: StartWorker,
) -> None:
    with _watch_logs() as logs:
        worker = await start_worker(allowed_sources=("127.0.0.1/32",))
        port = worker.client.sip_port
        stranger = await UdpPeer.open("127.0.0.2")
        try:
            await _stranger_knocks(stranger, port)
            assert stranger.received == [], "a stranger got an answer"
        finally:
            stranger.close()
        await logs.wait_for(lambda e: any(_DROPPED in str(x["event"]) for x in e))
    dropped = [e for e in logs.entries if _DROPPED in str(e["event"])]
    assert dropped[0]["log_level"] == "warning"
    assert sum(int(str(e["event"]).rsplit("count=", 1)[1]) for e in dropped) >= len(_METHODS)
    for entry in logs.entries:
        for fragment in _PAYLOAD:
            assert fragment not in str(entry["event"]), entry
    # Nothing reached the daemon: no event is queued before this command's reply.
    with pytest.raises(WorkerCommandError, match="unknown_call"):
        await worker.send(p.Hangup, call_id="no-such-call")
    assert not [e for e in worker.seen if isinstance(e, p.IncomingCall)]
    assert await _drain(worker) == []


async def test_worker_listens_on_the_pbx_transport_only(start_worker: StartWorker) -> None:
    import socket

    udp = await start_worker(pbx_transport="udp")
    tcp = await start_worker(pbx_transport="tcp")
    for worker, refused in ((udp, socket.SOCK_STREAM), (tcp, socket.SOCK_DGRAM)):
        with socket.socket(socket.AF_INET, refused) as probe:
            # The port is free for the other transport: nothing listens there.
            probe.bind(("127.0.0.1", worker.client.sip_port))
    pbx = await UdpPeer.open("127.0.0.1")
    try:
        assert await pbx.ask("OPTIONS", ("127.0.0.1", udp.client.sip_port)) == 200
    finally:
        pbx.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp.client.sip_port)
    writer.close()
    await writer.wait_closed()
    del reader


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


async def test_stranger_gets_no_answer_from_any_worker_and_creates_nothing(
    lab: Lab,
    tmp_path: Path,
    inbound_env: MakeInbound,
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
        stranger = await UdpPeer.open("127.0.0.2")
        try:
            for port in ports:
                await _stranger_knocks(stranger, port)
            assert stranger.received == [], "a stranger got an answer"
        finally:
            stranger.close()
        # Each worker's own line about it, relayed from its stderr by the client.
        await logs.wait_for(
            lambda e: (
                {x.get("worker_id") for x in e if _DROPPED in str(x["event"])}
                == {plan.worker_id for plan in env.pool.plans}
            )
        )

    for entry in logs.entries:
        if _DROPPED in str(entry["event"]):
            assert entry["log_level"] == "warning"
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


async def _drain(worker: Worker) -> list[p.Event]:
    """Events queued right now, except the error echo of a failed call command."""
    events: list[p.Event] = []
    while True:
        try:
            event = await worker.client.next_event(timeout=0.2)
        except TimeoutError:
            return [e for e in events if not isinstance(e, p.Error | p.Ready)]
        events.append(event)
