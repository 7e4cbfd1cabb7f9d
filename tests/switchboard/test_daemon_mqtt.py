"""The daemon's MQTT bridge, wired in its lifespan, against the session's broker."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from bus import Bus
from bus.mqtt import BridgeHealth, MqttBridge, sign_assertion
from config import load_config
from crm_store import Store
from switchboard.daemon import (
    STATUS_MQTT_DISCONNECTED,
    STATUS_MQTT_STOPPED,
    STATUS_SERVING,
    Daemon,
)
from tests._services import PrivateMosquitto, mqtt_address

from .conftest import DaemonProcess, run_cli, write_config

StartDaemon = Callable[..., DaemonProcess]


pytestmark = pytest.mark.mqtt

HOST, PORT = mqtt_address()


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

        # A new token in a reply would be published on the broker: refused.
        admin = run_cli("--config", str(cfg), "users", "add", "root", "--role", "admin")
        assert admin.returncode == 0, admin.stderr
        admin_token = run_cli("--config", str(cfg), "users", "token", "root").stdout.strip()
        issue = {
            "id": "t1",
            "token": admin_token,
            "name": "admin.users.token",
            "args": {"username": "sue", "label": "over mqtt"},
        }
        await client.publish(f"{base}/commands", json.dumps(issue), qos=1)
        no_token = await _next(client.messages, f"{base}/replies/t1")
        assert no_token["type"] == "error", no_token
        assert no_token["error"]["code"] == "forbidden"
        assert "sbt_" not in json.dumps(no_token)

        forged = {**command, "id": "c2", "token": "sbt_not-a-token"}
        await client.publish(f"{base}/commands", json.dumps(forged), qos=1)
        refused = await _next(client.messages, f"{base}/replies/c2")
        assert refused["type"] == "error"
        assert refused["error"]["code"] == "unauthorized"

    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert token not in daemon.log()


def _status_becomes(daemon: DaemonProcess, status: str, timeout: float = 20.0) -> None:
    """Block until the daemon's latest ``STATUS=`` line is ``status``."""
    latest = [line for line in daemon.seen if line.startswith("STATUS=")][-1:]
    if latest != [status]:
        daemon.wait_for(status, timeout)


async def test_broker_loss_shows_as_degraded_status_and_the_watchdog_keeps_being_pinged(
    tmp_path: Path, start_daemon: StartDaemon, private_broker: PrivateMosquitto
) -> None:
    cfg = write_config(
        tmp_path / "switchboard.toml",
        extra=f'\n[bus]\nmqtt_url = "{private_broker.url}"\n',
    )
    assert run_cli("--config", str(cfg), "db", "upgrade").returncode == 0
    daemon = start_daemon(cfg)
    await asyncio.to_thread(daemon.wait_for, "READY=1")
    await asyncio.to_thread(_status_becomes, daemon, STATUS_SERVING)

    await private_broker.astop()
    await asyncio.to_thread(_status_becomes, daemon, STATUS_MQTT_DISCONNECTED)
    # Degraded, not unhealthy: calls go on, so systemd must not restart us.
    await asyncio.to_thread(daemon.wait_for, "WATCHDOG=1")
    await asyncio.to_thread(daemon.wait_for, "WATCHDOG=1")

    await private_broker.astart()
    await asyncio.to_thread(_status_becomes, daemon, STATUS_SERVING, 40.0)
    daemon.signal(signal.SIGTERM)
    assert await asyncio.to_thread(daemon.wait_exit) == 0
    assert '"daemon.degraded"' in daemon.log()
    assert "daemon.unhealthy" not in daemon.log()


async def test_daemon_runs_a_gateway_signed_command_with_the_users_current_rights(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    prefix = f"sbtest{secrets.token_hex(4)}"
    base = f"{prefix}/test-site"
    key = secrets.token_hex(32)
    cfg = write_config(
        tmp_path / "switchboard.toml",
        extra=f'\n[bus]\nmqtt_url = "mqtt://{HOST}:{PORT}"\ntopic_prefix = "{prefix}"\n'
        f'gateway_secret = "{key}"\n',
    )
    assert run_cli("--config", str(cfg), "db", "upgrade").returncode == 0
    for name, role in (("sue", "supervisor"), ("ann", "agent")):
        added = run_cli("--config", str(cfg), "users", "add", name, "--role", role)
        assert added.returncode == 0, added.stderr
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'switchboard.sqlite3'}")
    try:
        sue, ann = [await store.users.by_username(n) for n in ("sue", "ann")]
    finally:
        await store.aclose()
    assert sue is not None
    assert ann is not None

    def signed(cid: str, user_id: object, args: dict[str, Any]) -> str:
        assertion = sign_assertion(
            key.encode(),
            user_id=str(user_id),
            site="test-site",
            command_id=cid,
            expires=int(time.time()) + 30,
        )
        command = {"id": cid, "assertion": assertion, "name": "agent.state.set", "args": args}
        return json.dumps(command)

    pause = {"agent": "Alice Martin", "state": "paused", "reason": "training"}
    async with aiomqtt.Client(HOST, PORT) as client:
        await client.subscribe(f"{base}/#", qos=1)
        daemon = start_daemon(cfg)
        await asyncio.to_thread(daemon.wait_for, "READY=1")
        await _next(client.messages, f"{base}/events/agent.state", agent="Alice Martin")

        await client.publish(f"{base}/commands", signed("g1", sue.id, pause), qos=1)
        reply = await _next(client.messages, f"{base}/replies/g1")
        assert reply["type"] == "result", reply
        # An agent vouched for by the gateway has an agent's rights, not more.
        await client.publish(f"{base}/commands", signed("g2", ann.id, pause), qos=1)
        reply = await _next(client.messages, f"{base}/replies/g2")
        assert reply["error"]["code"] == "forbidden", reply

    daemon.signal(signal.SIGTERM)
    assert await asyncio.to_thread(daemon.wait_exit) == 0
    assert key not in daemon.log()


async def test_a_bridge_nothing_supervises_makes_the_daemon_unhealthy(tmp_path: Path) -> None:
    path = write_config(tmp_path / "switchboard.toml")
    daemon = Daemon(path, load_config(path, environ={}))
    bridge: MqttBridge[object] = MqttBridge(
        Bus("test-site"),
        url=f"mqtt://{HOST}:{PORT}",
        site="test-site",
        topic_prefix=f"sbtest{secrets.token_hex(4)}",
        authenticate=_nobody,
        handler=_nothing,
        on_health=daemon._bridge_health,
    )
    daemon.bridge = bridge
    async with bridge:
        await bridge.wait_connected(timeout=15)
        await daemon._health()  # connected: healthy
        assert daemon._status() == STATUS_SERVING
        [supervisor] = [t for t in asyncio.all_tasks() if t.get_name() == "mqtt-bridge"]
        supervisor.cancel()
        await bridge._wait_until(lambda: bridge.health is BridgeHealth.STOPPED, 15)
        assert daemon._status() == STATUS_MQTT_STOPPED
        with pytest.raises(Exception, match="the MQTT bridge has stopped"):
            await daemon._health()


async def _nobody(token: str) -> None:
    return None


async def _nothing(principal: object, name: str, args: object) -> None:
    return None
