"""Fault: the MQTT broker is down for 60 s under a running daemon.

A real ``switchboard run`` publishes its events through its MQTT bridge to a private
Mosquitto (tests/_services.py). The broker is stopped for 60 s; meanwhile a supervisor's
websocket commands change an agent's state every few seconds, so real events go through
the daemon's bus (the websocket sees each one at once). When the broker returns, a
subscriber whose persistent session was registered before the outage receives every one
of those events, in order, once; and the daemon never reported a drop. (An overflowing
buffer is counted and announced by an ``events.dropped`` event: tests/bus/test_mqtt.py.)
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests._services import PrivateMosquitto

from .conftest import DaemonProcess, run_cli, write_config

pytestmark = [pytest.mark.mqtt, pytest.mark.fault]

StartDaemon = Callable[..., DaemonProcess]

OUTAGE = 60.0  # the figure: the point of the test, not a wait for a state
EVERY = 5.0
TIMEOUT = 20.0
AGENT = "Alice Martin"


class Supervisor:
    """A websocket client with a supervisor's token: sets the agent's state and sees
    the resulting events as the daemon's bus delivers them."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = 0

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            message: dict[str, Any] = json.loads(await self.ws.recv(decode=True))
        return message

    async def set_reason(self, reason: str) -> None:
        """Pause the agent with ``reason``; return once the command succeeded and the
        bus delivered the agent.state event carrying it."""
        self._ids += 1
        cid = f"c{self._ids}"
        args = {"agent": AGENT, "state": "paused", "reason": reason}
        command = {"type": "command", "id": cid, "name": "agent.state.set", "args": args}
        await self.ws.send(json.dumps(command))
        replied = published = False
        while not (replied and published):
            message = await self.recv()
            if message.get("id") == cid:
                assert message["type"] == "result", message
                replied = True
            elif message.get("type") == "event":
                event = message["event"]
                published = published or (
                    event["type"] == "agent.state" and event["data"].get("reason") == reason
                )


# Every reason the test pauses with: agent.state.set refuses one outside the list.
REASONS = ["outage-before", "outage-after", *(f"outage-{n:02d}" for n in range(100))]


async def _reasons(
    client: aiomqtt.Client, topic: str, until: str, *, within: float = TIMEOUT
) -> list[str]:
    """The reasons of the agent's ``agent.state`` events on ``topic``, up to ``until``."""
    seen: list[str] = []
    async with asyncio.timeout(within):
        async for message in client.messages:
            if message.topic.value != topic or not isinstance(message.payload, bytes):
                continue
            data = json.loads(message.payload)["data"]
            if data.get("agent") != AGENT or not data.get("reason", "").startswith("outage-"):
                continue
            seen.append(data["reason"])
            if data["reason"] == until:
                return seen
    raise AssertionError(f"the subscription ended after {seen}")


async def test_events_published_while_the_broker_is_down_for_a_minute_all_arrive_in_order(
    tmp_path: Path, start_daemon: StartDaemon, private_broker: PrivateMosquitto
) -> None:
    prefix = f"sbfault{secrets.token_hex(4)}"
    topic = f"{prefix}/test-site/events/agent.state"
    cfg = write_config(
        tmp_path / "switchboard.toml",
        extra=f'\n[bus]\nmqtt_url = "{private_broker.url}"\ntopic_prefix = "{prefix}"\n'
        f"\n[widget]\npause_reasons = {json.dumps(REASONS)}\n",
    )
    found = re.search(r"^\[websocket\]\nport = (\d+)$", cfg.read_text(), re.MULTILINE)
    assert found is not None
    ws_port = int(found.group(1))
    assert run_cli("--config", str(cfg), "db", "upgrade").returncode == 0
    added = run_cli("--config", str(cfg), "users", "add", "sue", "--role", "supervisor")
    assert added.returncode == 0, added.stderr
    token = run_cli("--config", str(cfg), "users", "token", "sue").stdout.strip()

    observer = {"identifier": f"{prefix}-observer", "clean_session": False, "timeout": TIMEOUT}
    daemon = start_daemon(cfg)
    daemon.wait_for("READY=1")
    async with connect(f"ws://127.0.0.1:{ws_port}", open_timeout=10) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        supervisor = Supervisor(ws)
        assert (await supervisor.recv())["type"] == "auth.ok"

        # The subscriber's persistent session exists, and the bridge is connected: an
        # event set now reaches it.
        async with aiomqtt.Client(private_broker.host, private_broker.port, **observer) as client:
            await client.subscribe(topic, qos=1)
            await supervisor.set_reason("outage-before")
            assert await _reasons(client, topic, "outage-before") == ["outage-before"]

        await private_broker.astop()
        during: list[str] = []
        loop = asyncio.get_running_loop()
        back_at = loop.time() + OUTAGE
        while loop.time() < back_at:
            during.append(f"outage-{len(during):02d}")
            await supervisor.set_reason(during[-1])
            await asyncio.sleep(min(EVERY, max(0.0, back_at - loop.time())))
        assert len(during) >= OUTAGE / EVERY
        assert daemon.proc.poll() is None, "the daemon runs on without its broker"
        await private_broker.astart()

        async with aiomqtt.Client(private_broker.host, private_broker.port, **observer) as client:
            # After a minute of failures the bridge's reconnect delay is at its ceiling
            # (MqttBridge reconnect_max, 30 s, half of it random): it may wait that
            # long before it tries again.
            assert await _reasons(client, topic, during[-1], within=TIMEOUT + 30) == during
            # Live again: the next event follows the backlog, and nothing came twice.
            await supervisor.set_reason("outage-after")
            assert await _reasons(client, topic, "outage-after") == ["outage-after"]

    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    log = daemon.log()
    assert "mqtt.dropped" not in log
    assert "events.dropped" not in log
