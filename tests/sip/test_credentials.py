"""The lines' digest credentials go to the PBX's realm only, and never into a log.

The lab's Kamailio challenges with its domain as realm (tests/sip/test_registration.py
registers against it). Here a challenger with another realm stands in for any other
server a worker might meet: it must get no digest answer at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest

from lab.phones import PhoneSpec
from lab.pytest_plugin import TEST_EXTENSIONS
from lab.runner import Lab
from sip import protocol as p
from tests.sip.conftest import Worker
from tests.sip.test_security import _watch_logs
from tests.sip.udp_peer import UdpPeer, reply_to

StartWorker = Callable[..., Awaitable[Worker]]
DOMAIN = "switchboard.test"


def _challenger(realm: str) -> Callable[[bytes], bytes | None]:
    def respond(data: bytes) -> bytes | None:
        if not data.startswith(b"REGISTER "):
            return None
        if b"\nAuthorization:" in data:
            return reply_to(data, "403 Forbidden")
        challenge = f'WWW-Authenticate: Digest realm="{realm}", nonce="n0nce", algorithm=MD5'
        return reply_to(data, "401 Unauthorized", headers=(challenge,))

    return respond


async def _register_against(start_worker: StartWorker, realm: str) -> tuple[UdpPeer, Worker]:
    challenger = await UdpPeer.open("127.0.0.1", respond=_challenger(realm))
    worker = await start_worker(
        pbx_host="127.0.0.1",
        pbx_port=challenger.address[1],
        domain=DOMAIN,
        register_retry_seconds=30,  # one attempt is all this test needs
        register_retry_max_seconds=30,
    )
    await worker.send(p.Register, line="l1", extension="2001", password="s3cret", expires=120)
    return challenger, worker


def _failed(e: p.Registration) -> bool:
    return e.line == "l1" and e.state == "failed"


async def test_challenge_from_another_realm_gets_no_credentials(
    start_worker: StartWorker,
) -> None:
    challenger, worker = await _register_against(start_worker, realm="elsewhere.example")
    try:
        failed = await worker.wait_for(p.Registration, _failed)
        assert failed.code == 401
        registers = [d for d in challenger.received if d.startswith(b"REGISTER ")]
        assert registers, "the worker never asked"
        for data in registers:
            assert b"authorization:" not in data.lower(), data
            assert b"response=" not in data
    finally:
        challenger.close()


async def test_challenge_from_the_pbx_realm_is_answered(start_worker: StartWorker) -> None:
    # The same challenger with the domain as realm: the digest is sent (and the
    # test above would have seen it).
    challenger, worker = await _register_against(start_worker, realm=DOMAIN)
    try:
        await worker.wait_for(p.Registration, lambda e: _failed(e) and e.code == 403)
        answered = [d for d in challenger.received if b"\nAuthorization:" in d]
        assert len(answered) == 1
        assert f'realm="{DOMAIN}"'.encode() in answered[0]
    finally:
        challenger.close()


async def test_configured_realm_overrides_the_domain(start_worker: StartWorker) -> None:
    challenger = await UdpPeer.open("127.0.0.1", respond=_challenger("pbx-realm"))
    worker = await start_worker(
        pbx_host="127.0.0.1",
        pbx_port=challenger.address[1],
        domain=DOMAIN,
        realm="pbx-realm",
        register_retry_seconds=30,
        register_retry_max_seconds=30,
    )
    try:
        await worker.send(p.Register, line="l1", extension="2001", password="pw", expires=120)
        await worker.wait_for(p.Registration, lambda e: _failed(e) and e.code == 403)
        assert any(b'realm="pbx-realm"' in d for d in challenger.received)
    finally:
        challenger.close()


@pytest.fixture
def lab_phones() -> list[str | PhoneSpec]:
    """No agent phones: these tests need only the PBX."""
    return []


async def test_debug_logs_carry_no_digest_answer(start_worker: StartWorker, lab: Lab) -> None:
    with _watch_logs() as logs:
        worker = await start_worker(
            pbx_host=lab.pbx_host,
            pbx_port=lab.pbx_port,
            domain=lab.domain,
            allowed_sources=(f"{lab.pbx_host}/32",),
            log_level="debug",
        )
        await worker.send(
            p.Register, line="l1", extension="2001", password=TEST_EXTENSIONS["2001"], expires=120
        )
        await worker.wait_for(p.Registration, lambda e: e.line == "l1" and e.state == "registered")
        # pjsip's dump of the authenticated REGISTER is in the log, redacted.
        await logs.wait_for(lambda e: any("Authorization: <redacted>" in str(x) for x in e))
        # An INVITE through Kamailio is challenged 407: its Proxy-Authorization too.
        call = str(uuid.uuid4())
        await worker.send(
            p.Originate,
            call_id=call,
            line="l1",
            to_uri=f"sip:2999@{lab.pbx_host}:{lab.pbx_port}",
        )
        await worker.wait_for(p.CallState, lambda e: e.call_id == call and e.state == "ended")
        await logs.wait_for(lambda e: any("Proxy-Authorization: <redacted>" in str(x) for x in e))
    text = "\n".join(str(entry) for entry in logs.entries)
    assert "WWW-Authenticate: Digest" in text  # the dumps are there
    assert "response=" not in text
    assert "Digest username=" not in text
    assert TEST_EXTENSIONS["2001"] not in text
