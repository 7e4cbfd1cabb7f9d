"""The whole daemon against the lab, driven the way a widget drives it.

A real ``switchboard run`` process registers its line on the lab's Kamailio; a
real websocket client authenticates with a token issued by the CLI, sets the
agent available, places a click-to-call and hangs it up, and sees each step as
events; the lab's phone and customer see the calls.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from lab import audio
from lab.customers import Behaviour, customer_number
from lab.pytest_plugin import lab, lab_extensions
from lab.runner import Lab
from tests.sip.conftest import EVERY_DAY, lab_config_text

from .conftest import DaemonProcess, free_tcp_port, run_cli

__all__ = ["lab", "lab_extensions"]

StartDaemon = Callable[..., DaemonProcess]


@pytest.fixture
def lab_phones() -> list[str]:
    # Alice's phone, and a colleague's (1002) to transfer calls to.
    return ["1001", "1002"]


class Widget:
    """A websocket client speaking the protocol, as the agent widget does."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []
        self._ids = 0

    async def recv(self, timeout: float = 15) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            message: dict[str, Any] = json.loads(await self.ws.recv(decode=True))
        self.seen.append(message)
        return message

    async def command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        self._ids += 1
        cid = f"c{self._ids}"
        await self.ws.send(json.dumps({"type": "command", "id": cid, "name": name, "args": args}))
        while True:
            message = await self.recv()
            if message["type"] in ("result", "error") and message.get("id") == cid:
                return message

    async def event(self, type_: str, **match: Any) -> dict[str, Any]:
        """The next event of ``type_`` whose data has ``match`` (earlier ones kept in seen)."""
        for message in self.seen:
            if _matches(message, type_, match):
                self.seen.remove(message)
                return message
        while True:
            message = await self.recv()
            if _matches(message, type_, match):
                self.seen.remove(message)
                return message


def _matches(message: dict[str, Any], type_: str, match: dict[str, Any]) -> bool:
    if message.get("type") != "event" or message["event"]["type"] != type_:
        return False
    data = message["event"]["data"]
    return all(data.get(k) == v for k, v in match.items())


async def _start(
    lab: Lab, tmp_path: Path, start_daemon: StartDaemon
) -> tuple[DaemonProcess, int, str]:
    """A daemon on the lab with agent alice (phone 1001); returns it, its
    websocket port and alice's API token."""
    config = tmp_path / "switchboard.toml"
    config.write_text(
        lab_config_text(
            lab,
            tmp_path,
            agents={"alice": ("1001", "2001")},
            names={"alice": "Alice Martin"},
            site_id="e2e",
            site=EVERY_DAY,
            max_workers=2,
            # One attempt per number, so the session finishes instead of waiting to retry.
            dialer={"gap_seconds": 1, "max_attempts": 1},
            # The lab's customers have Berlin numbers; 1002 is a colleague's phone (no
            # agent here).
            outbound='allowed_countries = ["DE"]\nextensions = ["1002"]',
            websocket_port=(ws_port := free_tcp_port()),
        )
    )
    assert run_cli("--config", str(config), "db", "upgrade").returncode == 0
    added = run_cli("--config", str(config), "users", "add", "alice", "--name", "Alice Martin")
    assert added.returncode == 0, added.stderr
    token = run_cli("--config", str(config), "users", "token", "alice").stdout.strip()

    daemon = start_daemon(config)
    daemon.wait_for("READY=1", timeout=30)
    assert await lab.pbx.contacts("2001"), "the line registered on the PBX"

    return daemon, ws_port, token


async def _login(ws: ClientConnection, token: str) -> Widget:
    widget = Widget(ws)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    ok = await widget.recv()
    assert (ok["type"], ok["user"], ok["agents"]) == ("auth.ok", "alice", ["alice"])
    snapshot = await widget.recv()
    assert snapshot["type"] == "snapshot"
    return widget


async def test_widget_places_and_hangs_up_a_call_through_the_daemon(
    lab: Lab, tmp_path: Path, start_daemon: StartDaemon
) -> None:
    daemon, ws_port, token = await _start(lab, tmp_path, start_daemon)
    async with connect(f"ws://127.0.0.1:{ws_port}", open_timeout=10) as ws:
        widget = await _login(ws, token)
        reply = await widget.command("agent.state.set", {"state": "available"})
        assert reply["type"] == "result", reply
        await widget.event("agent.state", agent="alice", state="available")

        # A customer who answers after a second and talks until hung up on.
        number = customer_number(Behaviour.ANSWER, ring=1, talk=0, suffix=42)
        reply = await widget.command("call.originate", {"to": number})
        assert reply["type"] == "result", reply
        call_id = reply["data"]["call_id"]
        await widget.event("call.created", call_id=call_id, agent="alice")
        await widget.event("call.answered", call_id=call_id, leg="agent")
        await widget.event("call.answered", call_id=call_id, leg="customer")
        await widget.event("call.bridged", call_id=call_id)

        reply = await widget.command("call.hangup", {"call_id": call_id})
        assert reply["type"] == "result", reply
        ended = await widget.event("call.ended", call_id=call_id)
        assert ended["event"]["data"]["reason"] == "completed"
        ready = await widget.event("recording.ready", call_id=call_id)
        assert await asyncio.to_thread(Path(ready["event"]["data"]["path"]).is_file)

        reply = await widget.command("call.note", {"call_id": call_id, "text": "wants a demo"})
        assert reply["type"] == "result", reply

        # The command line places the same kind of call through the same daemon.
        again = customer_number(Behaviour.ANSWER, ring=0, talk=1, suffix=43)
        placed = await asyncio.to_thread(
            run_cli, "--config", str(tmp_path / "switchboard.toml"), "call", again,
            "--token", token,
        )  # fmt: skip
        assert placed.returncode == 0, placed.stderr
        second = json.loads(placed.stdout)["call_id"]
        await widget.event("call.created", call_id=second, agent="alice")
        ended = await widget.event("call.ended", call_id=second)
        assert ended["event"]["data"]["reason"] == "completed"

    # The lab saw each customer called once, and the agent's phone rang.
    assert [i.number for i in lab.customers.invites()] == [number, again]
    assert await lab.phones["1001"].wait_call_ended(timeout=5)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0


async def test_widget_transfers_a_call_after_consulting_a_colleague(
    lab: Lab, tmp_path: Path, start_daemon: StartDaemon
) -> None:
    daemon, ws_port, token = await _start(lab, tmp_path, start_daemon)
    colleague = lab.phones["1002"]
    async with connect(f"ws://127.0.0.1:{ws_port}", open_timeout=10) as ws:
        widget = await _login(ws, token)
        number = customer_number(Behaviour.ANSWER, ring=0, talk=0, suffix=61)
        reply = await widget.command("call.originate", {"to": number})
        assert reply["type"] == "result", reply
        call_id = reply["data"]["call_id"]
        await widget.event("call.bridged", call_id=call_id)

        # Alice consults her colleague: the result comes once the colleague answered.
        reply = await widget.command(
            "call.transfer", {"call_id": call_id, "to": "1002", "mode": "attended"}
        )
        assert reply["type"] == "result", reply
        await widget.event("call.transferred", call_id=call_id, state="started", target="1002")
        await widget.event("call.transferred", call_id=call_id, state="consulting")
        consult = await colleague.wait_call_answered(timeout=5)

        reply = await widget.command("call.transfer.complete", {"call_id": call_id})
        assert reply["type"] == "result", reply
        done = await widget.event("call.transferred", call_id=call_id, state="completed")
        assert (done["event"]["data"]["kind"], done["event"]["data"]["target"]) == (
            "attended",
            "1002",
        )
        # Alice's phone is released; the customer talks with the colleague (the
        # audio measured below) until the call is hung up.
        assert await lab.phones["1001"].wait_call_ended(timeout=5)
        await asyncio.sleep(1.5)
        reply = await widget.command("call.hangup", {"call_id": call_id})
        assert reply["type"] == "result", reply
        ended = await widget.event("call.ended", call_id=call_id)
        assert (ended["event"]["data"]["reason"], ended["event"]["data"]["agent"]) == (
            "completed",
            "alice",
        )
        await colleague.wait_call_ended(timeout=5, call_id=consult.call_id)
        ready = await widget.event("recording.ready", call_id=call_id)

        # Nothing left to complete or cancel.
        refused = await widget.command("call.transfer.cancel", {"call_id": call_id})
        assert (refused["type"], refused["code"]) == ("error", "conflict"), refused

    # The call's recording (the customer's side, mixed with whom they talk to) holds
    # the colleague after the transfer.
    recording = Path(ready["event"]["data"]["path"])
    assert await asyncio.to_thread(audio.tone_level, recording, colleague.tone_hz) > 0.02
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0


async def test_cli_builds_a_list_and_starts_the_dialer_the_widget_watches(
    lab: Lab, tmp_path: Path, start_daemon: StartDaemon
) -> None:
    daemon, ws_port, token = await _start(lab, tmp_path, start_daemon)
    config = str(tmp_path / "switchboard.toml")
    busy = customer_number(Behaviour.BUSY, ring=0, suffix=51)
    talks = customer_number(Behaviour.ANSWER, ring=0, talk=1, suffix=52)
    created = run_cli("--config", config, "lists", "create", "today", busy, talks, busy, "12")
    assert created.returncode == 0, created.stderr
    list_id = created.stdout.strip()
    assert "3 numbers added, 1 duplicates merged, 1 invalid" in created.stderr
    assert "invalid: 12:" in created.stderr

    async with connect(f"ws://127.0.0.1:{ws_port}", open_timeout=10) as ws:
        widget = await _login(ws, token)
        started = await asyncio.to_thread(
            run_cli, "--config", config, "dialer", "start", list_id, "--token", token
        )
        assert started.returncode == 0, started.stderr
        await widget.event("dialer.session.started", agent="alice")
        finished = await widget.event("dialer.session.finished", agent="alice")
        data = finished["event"]["data"]
        assert (data["dialed"], data["answered"], data["remaining"]) == (2, 1, 0)
    # The lab's customers saw the list in order, each number once; the invalid
    # number was never dialed.
    assert [i.number for i in lab.customers.invites()] == [busy, talks]
    shown = run_cli("--config", config, "lists", "show", list_id)
    assert "invalid\t1" in shown.stdout
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0


async def test_widget_and_cli_are_refused_what_the_outbound_policy_forbids(
    lab: Lab, tmp_path: Path, start_daemon: StartDaemon
) -> None:
    daemon, ws_port, token = await _start(lab, tmp_path, start_daemon)
    async with connect(f"ws://127.0.0.1:{ws_port}", open_timeout=10) as ws:
        widget = await _login(ws, token)
        # A French premium-rate number (the daemon's own region) and a UK number.
        for to, message in (
            ("0891123456", "premium-rate numbers are not allowed (outbound.refused_types)"),
            ("+442079460000", "numbers in GB are not allowed (outbound.allowed_countries)"),
        ):
            refused = await widget.command("call.originate", {"to": to})
            assert (refused["type"], refused["code"]) == ("error", "forbidden"), refused
            assert refused["message"] == f"forbidden: {message}"

        number = customer_number(Behaviour.ANSWER, ring=0, talk=0, suffix=63)
        reply = await widget.command("call.originate", {"to": number})
        assert reply["type"] == "result", reply
        call_id = reply["data"]["call_id"]
        await widget.event("call.bridged", call_id=call_id)
        for mode in ("blind", "attended"):
            refused = await widget.command(
                "call.transfer", {"call_id": call_id, "to": "4711", "mode": mode}
            )
            assert (refused["type"], refused["code"]) == ("error", "forbidden"), refused
            assert refused["message"].endswith("(outbound.extensions)")
        reply = await widget.command("call.hangup", {"call_id": call_id})
        assert reply["type"] == "result", reply
        ended = await widget.event("call.ended", call_id=call_id)
        assert ended["event"]["data"]["reason"] == "completed"
        assert not [m for m in widget.seen if m.get("event", {}).get("type") == "call.transferred"]

    # A list is screened the same way at import.
    config = str(tmp_path / "switchboard.toml")
    busy = customer_number(Behaviour.BUSY, ring=0, suffix=64)
    created = run_cli("--config", config, "lists", "create", "screened", busy, "0891123456")
    assert created.returncode == 0, created.stderr
    assert "1 numbers added" in created.stderr
    assert "1 refused by the outbound policy" in created.stderr
    assert (
        "refused: 0891123456: forbidden: premium-rate numbers are not allowed "
        "(outbound.refused_types)"
    ) in created.stderr
    # Only the allowed customer was ever called.
    assert [i.number for i in lab.customers.invites()] == [number]
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
