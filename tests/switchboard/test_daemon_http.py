"""The daemon serves the web app on its ``[http]`` port, from its own loop."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from .conftest import DaemonProcess, run_cli, write_config

StartDaemon = Callable[..., DaemonProcess]


async def _ws_command(port: int, token: str, reason: str) -> Any:
    async with connect(f"ws://127.0.0.1:{port}", open_timeout=10) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        assert json.loads(await ws.recv())["type"] == "auth.ok"
        args = {"agent": "Alice Martin", "state": "paused", "reason": reason}
        await ws.send(
            json.dumps({"type": "command", "id": "c1", "name": "agent.state.set", "args": args})
        )
        async with asyncio.timeout(10):
            while True:
                message = json.loads(await ws.recv())
                if message.get("id") == "c1":
                    return message


def _http_port(config: Path) -> int:
    port: int = tomllib.loads(config.read_text())["http"]["port"]
    return port


def test_daemon_serves_health_and_readiness_on_its_http_port(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    cfg = write_config(tmp_path / "switchboard.toml")
    port = _http_port(cfg)
    daemon = start_daemon(cfg)
    daemon.wait_for("READY=1")
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz", timeout=5)
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    refused = httpx.get(f"{base}/api/calls", timeout=5)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthenticated"
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    events = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    listening = [e for e in events if e["event"] == "http.listening"]
    assert [e["url"] for e in listening] == [base]
    names = [e["event"] for e in events]
    assert names.index("http.listening") < names.index("daemon.ready")


def test_http_port_in_use_is_a_clear_startup_error(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    cfg = write_config(tmp_path / "switchboard.toml")
    with socket.create_server(("127.0.0.1", _http_port(cfg))):
        daemon = start_daemon(cfg)
        assert daemon.wait_exit(timeout=60) == 1
    log = daemon.log()
    assert "http.port: cannot listen on 127.0.0.1:" in log
    assert "READY=1" not in daemon.seen


def test_agent_state_over_http_takes_the_websocket_command_path(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    cfg = write_config(tmp_path / "switchboard.toml")
    assert run_cli("--config", str(cfg), "db", "upgrade").returncode == 0
    assert run_cli("--config", str(cfg), "users", "add", "ada", "--role", "admin").returncode == 0
    issued = run_cli("--config", str(cfg), "users", "token", "ada")
    assert issued.returncode == 0, issued.stderr
    auth = {"Authorization": f"Bearer {issued.stdout.strip()}"}
    daemon = start_daemon(cfg)
    daemon.wait_for("READY=1")
    url = f"http://127.0.0.1:{_http_port(cfg)}/api/agents/Alice%20Martin/state"
    refused = httpx.put(url, json={"state": "paused", "reason": "nap"}, headers=auth, timeout=5)
    assert refused.status_code == 400
    assert refused.json()["error"]["details"]["allowed"][0] == "lunch"
    # The websocket's command checks the same list.
    ws_port = tomllib.loads(cfg.read_text())["websocket"]["port"]
    ws_reply = asyncio.run(_ws_command(ws_port, issued.stdout.strip(), "nap"))
    assert (ws_reply["type"], ws_reply["code"]) == ("error", "bad_request")
    paused = httpx.put(url, json={"state": "paused", "reason": "lunch"}, headers=auth, timeout=5)
    assert paused.status_code == 200, paused.text
    assert (paused.json()["state"], paused.json()["reason"]) == ("paused", "lunch")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    # Stored: the next start gives it back.
    restarted = start_daemon(cfg)
    restarted.wait_for("READY=1")
    colleagues = httpx.get(
        f"http://127.0.0.1:{_http_port(cfg)}/api/colleagues", headers=auth, timeout=5
    ).json()
    assert [(c["agent"], c["state"]) for c in colleagues] == [("Alice Martin", "paused")]
    restarted.signal(signal.SIGTERM)
    assert restarted.wait_exit() == 0
