"""The RFC 4475 torture messages, each sent as one datagram from the PBX's address.

The corpus is in tests/sip/torture/ (its README lists each message and what it
tests). From the allowed source a packet does reach pjsip's parser (the socket filter
only keeps strangers out), so this is the parser's and the worker's own test: after
every message the worker is still the same process and answers a well-formed OPTIONS,
and no call slot stays taken once ``inbound.no_agent_timeout`` is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import bus
from lab.phones import PhoneSpec
from lab.runner import Lab
from sip import protocol as p
from sip.exceptions import WorkerCommandError
from tests.sip.conftest import InboundEnv, Sipp, Worker, lab_config, with_inbound
from tests.sip.udp_peer import UdpPeer, request

MakeInbound = Callable[..., Awaitable[InboundEnv]]
StartWorker = Callable[..., Awaitable[Worker]]
RunSipp = Callable[..., Awaitable[Sipp]]
CORPUS = Path(__file__).parent / "torture"
MESSAGES = sorted(CORPUS.glob("*.dat"))
NO_AGENT_TIMEOUT = 3


@pytest.fixture
def lab_phones() -> list[str | PhoneSpec]:
    """No agent phones: nobody answers, every INVITE that gets in waits for the timeout."""
    return []


def test_the_corpus_is_complete() -> None:
    assert len(MESSAGES) == 49
    assert (CORPUS / "README.md").is_file()
    # Byte for byte: CRLF line ends, and the raw NUL in intmeth.
    assert b"\r\n" in (CORPUS / "wsinv.dat").read_bytes()
    assert b"\x00" in (CORPUS / "intmeth.dat").read_bytes()


async def test_every_torture_message_leaves_the_workers_up_answering_and_free(
    lab: Lab, tmp_path: Path, inbound_env: MakeInbound
) -> None:
    config = lab_config(lab, tmp_path, agents={"alice": ("1001", "2001")}, reception=("2100",))
    config = with_inbound(config, no_agent_timeout=NO_AGENT_TIMEOUT)
    ie = await inbound_env(config)
    env = ie.env
    for line in ("2001", "2100"):
        await env.log.wait_for(
            bus.RegistrationChanged, lambda e, line=line: e.line == line and e.state == "registered"
        )
    pids = {w: s.pid for w, s in env.pool.status().items()}
    ports = [plan.settings.sip_port for plan in env.pool.plans]
    pbx = await UdpPeer.open(lab.pbx_host)  # the allowed source
    try:
        for message in MESSAGES:
            data = message.read_bytes()
            for port in ports:
                pbx.send(data, ("127.0.0.1", port))
                status = await pbx.ask("OPTIONS", ("127.0.0.1", port), within=5.0)
                assert status == 200, f"{message.name}: OPTIONS answered {status}"
    finally:
        pbx.close()

    status = env.pool.status()
    assert {w: s.pid for w, s in status.items()} == pids, "a worker was restarted"
    assert all(s.alive and s.crashes == 0 for s in status.values())
    assert not env.log.events(bus.WorkerCrashed)

    # Every call a torture INVITE opened (they reach the workers' local identity,
    # which no line owns) has been refused by the pool: no leg is left.
    assert all(s.calls == 0 for s in env.pool.status().values())
    assert ie.inbound.active_calls() == []
    # The lines are still registered and the events could all be encoded.
    for s in env.pool.status().values():
        assert set(s.registrations.values()) == {"registered"}, s
    env.log.mark()
    for envelope in env.log.seen:
        bus.decode(bus.encode(envelope))


async def test_torture_invites_leave_every_call_slot_free_within_no_agent_timeout(
    start_worker: StartWorker, sipp: RunSipp
) -> None:
    # The worker alone, driven as the daemon drives it: each incoming call is
    # refused when no agent took it within inbound.no_agent_timeout.
    worker = await start_worker(max_calls=4)
    port = worker.client.sip_port
    pbx = await UdpPeer.open("127.0.0.1")
    try:
        for message in MESSAGES:
            pbx.send(message.read_bytes(), ("127.0.0.1", port))
            assert await pbx.ask("OPTIONS", ("127.0.0.1", port)) == 200, message.name
    finally:
        pbx.close()
    incoming = await _more(worker, p.IncomingCall)
    assert incoming, "no torture INVITE was taken as a call"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + NO_AGENT_TIMEOUT
    for call in incoming:
        with contextlib.suppress(WorkerCommandError):  # it may have ended already
            await worker.send(p.Reject, call_id=call.call_id, code=480)
    for call in incoming:
        await worker.call_state(call.call_id, "ended", within=NO_AGENT_TIMEOUT)
    assert loop.time() <= deadline + 1.0

    # All four slots take real calls again.
    customer = await sipp("uas_ring_forever.xml", calls=4)
    calls = [str(uuid.uuid4()) for _ in range(4)]
    for call in calls:
        await worker.send(p.Originate, call_id=call, line=None, to_uri=customer.uri())
    for call in calls:
        await worker.call_state(call, "ringing")


async def _more(worker: Worker, kind: type[p.IncomingCall]) -> list[p.IncomingCall]:
    """Every event of ``kind`` the worker sent before the reply to a command sent now
    (its error event is queued after them)."""
    marker = f"drain-{uuid.uuid4()}"
    with contextlib.suppress(WorkerCommandError):
        await worker.send(p.Hangup, call_id=marker)
    await worker.wait_for(p.Error, lambda e: e.call_id == marker)
    return [e for e in worker.seen if isinstance(e, kind)]


async def test_header_text_that_is_not_unicode_or_has_controls_is_cleaned_into_the_event(
    start_worker: StartWorker,
) -> None:
    worker = await start_worker()
    port = worker.client.sip_port
    pbx = await UdpPeer.open("127.0.0.1")
    try:
        invite = request(
            "INVITE",
            to=("127.0.0.1", port),
            local=pbx.address,
            user="2001",
            headers=("X-Note: a\x01b\x1b[31mred", "Subject: bell\x07"),
        )
        # A display name with a BEL and bytes that are not UTF-8, as a peer may send.
        invite = invite.replace(
            b"From: <sip:probe@", b'From: "Eve\x07 \xff\xfe\xc3(" <sip:probe@', 1
        )
        pbx.send(invite, ("127.0.0.1", port))
        call = await worker.wait_for(p.IncomingCall)
    finally:
        pbx.close()
    texts = [call.from_uri, call.from_number, call.to_number, *call.headers, *call.headers.values()]
    for text in texts:
        text.encode("utf-8")  # valid Unicode scalar values only
        assert all(ch.isprintable() for ch in text), repr(text)
    assert call.from_uri.startswith('"Eve')
    assert "\ufffd" in call.from_uri
    assert call.headers["X-Note"].startswith("ab")
    # The worker is still up and the call can be handled.
    await worker.send(p.Reject, call_id=call.call_id, code=480)
    await worker.call_state(call.call_id, "ended")
