"""Inbound calls through the whole daemon, seen and driven from websocket clients.

A real ``switchboard run`` registers agent lines and a reception line on the lab's
Kamailio; a SIPp customer with an unknown number calls the reception line; the
agent's widget gets the ringing pop-up with the lead created for the number, the
agent answers from the widget (their phone, which never answers by itself, is asked
to answer), the supervisor sees the call and listens in from their own phone, then
the agent hangs up from the widget. A second call, from a desk phone (which, unlike
SIPp, answers re-INVITEs and speaks RFC 4733), is held, resumed and exchanges DTMF
both ways, all from the widget.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from crm_store import open_store
from lab.phones import PhoneSpec
from lab.pytest_plugin import lab, lab_extensions
from lab.runner import Lab
from tests.sip.conftest import lab_config_text

from .conftest import DaemonProcess, free_tcp_port, run_cli
from .test_daemon_lab import StartDaemon, Widget

__all__ = ["lab", "lab_extensions"]


@pytest.fixture
def lab_phones() -> list[str | PhoneSpec]:
    # Alice's phone only answers when asked to (auto-answer): her widget answers.
    # 1003 is a customer's desk phone, for what SIPp customers cannot do (hold, DTMF).
    return [PhoneSpec("1001", mode="never"), "1002", "1003"]


async def _login(port: int, token: str, user: str) -> tuple[Widget, ClientConnection]:
    ws = await connect(f"ws://127.0.0.1:{port}", open_timeout=10)
    widget = Widget(ws)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    ok = await widget.recv()
    assert (ok["type"], ok["user"]) == ("auth.ok", user), ok
    assert (await widget.recv())["type"] == "snapshot"
    return widget, ws


async def _start(
    lab: Lab, tmp_path: Path, start_daemon: StartDaemon
) -> tuple[DaemonProcess, int, dict[str, str]]:
    """A daemon on the lab with agent alice and supervisor sam; returns it, its
    websocket port and the users' API tokens."""
    config = tmp_path / "switchboard.toml"
    config.write_text(
        lab_config_text(
            lab,
            tmp_path,
            agents={"alice": ("1001", "2001"), "sam": ("1002", "2002")},
            names={"alice": "Alice Martin", "sam": "Sam Chef"},
            supervisors=("sam",),
            reception=("2100",),
            site_id="e2e",
            region="DE",
            max_workers=3,
            dialer={},
            outbound="",
            websocket_port=(ws_port := free_tcp_port()),
            extra="\n[inbound]\nno_agent_timeout = 20\n",
        )
    )
    assert run_cli("--config", str(config), "db", "upgrade").returncode == 0
    tokens = {}
    for user, role in (("alice", "agent"), ("sam", "supervisor")):
        added = run_cli(
            "--config", str(config), "users", "add", user, "--name", user.title(), "--role", role
        )
        assert added.returncode == 0, added.stderr
        tokens[user] = run_cli("--config", str(config), "users", "token", user).stdout.strip()
    daemon = start_daemon(config)
    daemon.wait_for("READY=1", timeout=30)

    return daemon, ws_port, tokens


async def test_an_unknown_caller_pops_up_at_the_agent_and_is_supervised(
    lab: Lab, tmp_path: Path, start_daemon: StartDaemon
) -> None:
    daemon, ws_port, tokens = await _start(lab, tmp_path, start_daemon)
    alice, alice_ws = await _login(ws_port, tokens["alice"], "alice")
    sam, sam_ws = await _login(ws_port, tokens["sam"], "sam")
    try:
        assert (await alice.command("agent.state.set", {"state": "available"}))["type"] == "result"
        await alice.event("agent.state", agent="alice", state="available")

        caller = "+4930555123456"
        customer = await lab.customers.call("2100", caller, talk_seconds=30)

        # The supervisor's feed: the call and its caller, a lead created for them.
        queued = await sam.event("call.ringing", leg="customer", direction="inbound")
        data = queued["event"]["data"]
        assert data["from_number"] == caller
        card = data["card"]
        assert (card["kind"], card["phone"], card["created"]) == ("lead", caller, True)
        call_id = data["call_id"]

        # The agent's pop-up carries the same card; she answers from the widget.
        offered = await alice.event("call.ringing", call_id=call_id, leg="agent")
        assert offered["event"]["data"]["card"]["id"] == card["id"]
        # Sam's phone is not the one ringing: he may not answer it for her.
        refused = await sam.command("call.answer", {"call_id": call_id})
        assert (refused["type"], refused["code"]) == ("error", "conflict"), refused
        answered = await alice.command("call.answer", {"call_id": call_id})
        assert (answered["type"], answered["data"]) == ("result", {"agent": "alice"}), answered
        await alice.event("call.answered", call_id=call_id, leg="customer", agent="alice")
        await alice.event("call.bridged", call_id=call_id)
        # Her phone was rung twice: the offer, then the leg asking it to answer.
        phone = lab.phones["1001"]
        answered = await phone.wait_call_answered(timeout=5)
        incoming = await phone.wait_for(
            lambda e: e.kind == "incoming" and e.call_id == answered.call_id, timeout=1
        )
        assert incoming.data["auto_answer"] == 0

        # The supervisor listens from their own phone.
        reply = await sam.command("supervisor.listen", {"call_id": call_id})
        assert reply["type"] == "result", reply
        await sam.event("call.supervised", call_id=call_id, supervisor="sam", mode="listen")
        assert await lab.phones["1002"].wait_call_answered(timeout=10)

        # Hold, resume and DTMF: the next test, with a desk phone as the caller.
        # An agent may not supervise.
        refused = await alice.command("supervisor.barge", {"call_id": call_id})
        assert (refused["type"], refused["code"]) == ("error", "forbidden")

        assert (await alice.command("call.hangup", {"call_id": call_id}))["type"] == "result"
        ended = await alice.event("call.ended", call_id=call_id)
        assert ended["event"]["data"]["reason"] == "completed"
        await sam.event("call.supervised", call_id=call_id, mode=None)
        assert await customer.wait(timeout=10)
    finally:
        for ws in (alice_ws, sam_ws):
            await ws.close()

    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0

    # The lead of the pop-up, owned by the agent who took the call.
    async with open_store(f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}") as store:
        match = await store.lookup_caller(caller)
        alice_user = await store.users.by_username("alice")
        assert match is not None
        assert match.lead is not None
        assert alice_user is not None
        assert str(match.id) == card["id"]
        assert (match.lead.source, match.lead.owner_user_id) == ("incoming_call", alice_user.id)
        record = await store.calls.get(uuid.UUID(call_id))
        assert (record.direction, record.lead_id) == ("inbound", match.id)
        assert record.agent_user_id == alice_user.id


async def test_the_widget_holds_resumes_and_exchanges_dtmf_with_a_caller(
    lab: Lab, tmp_path: Path, start_daemon: StartDaemon
) -> None:
    daemon, ws_port, tokens = await _start(lab, tmp_path, start_daemon)
    alice, alice_ws = await _login(ws_port, tokens["alice"], "alice")
    try:
        assert (await alice.command("agent.state.set", {"state": "available"}))["type"] == "result"
        await alice.event("agent.state", agent="alice", state="available")
        phone = lab.phones["1003"]
        placed = await phone.call(lab.uri("2100"))
        offered = await alice.event("call.ringing", leg="agent", from_number="1003")
        call_id = offered["event"]["data"]["call_id"]
        assert offered["event"]["data"]["card"] is None  # an extension: no lead
        assert (await alice.command("call.answer", {"call_id": call_id}))["type"] == "result"
        await alice.event("call.bridged", call_id=call_id)

        mark = len(phone.events)
        reply = await alice.command("call.hold", {"call_id": call_id})
        assert reply["type"] == "result", reply
        await alice.event("call.held", call_id=call_id, held=True)
        await phone.wait_media_state("remote_hold", call_id=placed.call_id, start=mark)
        mark = len(phone.events)
        reply = await alice.command("call.resume", {"call_id": call_id})
        assert reply["type"] == "result", reply
        await alice.event("call.held", call_id=call_id, held=False)
        await phone.wait_media_state("active", call_id=placed.call_id, start=mark)

        # Digits both ways (RFC 4733): the widget's reach the caller, the caller's
        # reach the widget.
        reply = await alice.command("call.dtmf", {"call_id": call_id, "digits": "12#"})
        assert reply["type"] == "result", reply
        assert await phone.wait_dtmf(3, call_id=placed.call_id) == "12#"
        await phone.send_dtmf("7*", call=placed)
        for digit in "7*":
            await alice.event("call.dtmf", call_id=call_id, digit=digit, direction="received")

        assert (await alice.command("call.hangup", {"call_id": call_id}))["type"] == "result"
        ended = await alice.event("call.ended", call_id=call_id)
        assert ended["event"]["data"]["reason"] == "completed"
        async with asyncio.timeout(10):
            await placed.ended.wait()
    finally:
        await alice_ws.close()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
