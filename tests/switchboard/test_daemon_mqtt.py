"""The daemon's MQTT bridge, wired in its lifespan, against the session's broker."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests._services import mqtt_address

from .conftest import DaemonProcess, run_cli, write_config

StartDaemon = Callable[..., DaemonProcess]


pytestmark = pytest.mark.mqtt


async def _next(messages: Any, topic: str, **data: Any) -> dict[str, Any]:
    """The next message on ``topic`` whose payload holds ``data`` (in ``data`` or at top)."""
    async with asyncio.timeout(15):
        async for message in messages:
            if message.topic.value != topic:
                continue
            payload: dict[str, Any] = json.loads(message.payload)
            inner = payload.get("data", payload)
            if all(inner.get(k) == v for k, v in data.items()):
                return payload
    raise AssertionError("subscription ended")


async def test_daemon_publishes_events_and_runs_token_checked_commands_over_mqtt(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    host, port = mqtt_address()
    prefix = f"sbtest{secrets.token_hex(4)}"
    base = f"{prefix}/test-site"
    cfg = write_config(
        tmp_path / "switchboard.toml",
        extra=f'\n[bus]\nmqtt_url = "mqtt://{host}:{port}"\ntopic_prefix = "{prefix}"\n',
    )
    assert run_cli("--config", str(cfg), "db", "upgrade").returncode == 0
    added = run_cli("--config", str(cfg), "users", "add", "sue", "--role", "supervisor")
    assert added.returncode == 0, added.stderr
    token = run_cli("--config", str(cfg), "users", "token", "sue").stdout.strip()

    async with aiomqtt.Client(host, port) as client:
        await client.subscribe(f"{base}/#", qos=1)
        daemon = start_daemon(cfg)
        daemon.wait_for("READY=1")
        await _next(client.messages, f"{base}/events/agent.state", agent="Alice Martin")

        command = {
            "id": "c1",
            "token": token,
            "name": "agent.state.set",
            "args": {"agent": "Alice Martin", "state": "paused", "reason": "training"},
        }
        await client.publish(f"{base}/commands", json.dumps(command), qos=1)
        reply = await _next(client.messages, f"{base}/replies/c1")
        assert reply["type"] == "result", reply
        changed = await _next(
            client.messages, f"{base}/events/agent.state", agent="Alice Martin", state="paused"
        )
        assert changed["origin"] == "test-site"
        assert changed["data"]["reason"] == "training"

        forged = {**command, "id": "c2", "token": "sbt_not-a-token"}
        await client.publish(f"{base}/commands", json.dumps(forged), qos=1)
        refused = await _next(client.messages, f"{base}/replies/c2")
        assert refused["type"] == "error"
        assert refused["error"]["code"] == "unauthorized"

    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert token not in daemon.log()
