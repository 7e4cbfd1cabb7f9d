"""Agents' presence survives the daemon: stored on each change, given back at start."""

from __future__ import annotations

import asyncio
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from .conftest import DaemonProcess, run_cli, write_config

StartDaemon = Callable[..., DaemonProcess]

ALICE = {"name": "Alice Martin", "extension": "1001", "line": "2001", "user": "alice"}


def _setup(tmp_path: Path) -> tuple[Path, int, str]:
    """A config with agent alice, its store migrated, and alice's token."""
    cfg = write_config(tmp_path / "switchboard.toml", agents=[ALICE])
    port = tomllib.loads(cfg.read_text())["websocket"]["port"]
    assert run_cli("--config", str(cfg), "db", "upgrade").returncode == 0
    added = run_cli("--config", str(cfg), "users", "add", "alice", "--role", "agent")
    assert added.returncode == 0, added.stderr
    issued = run_cli("--config", str(cfg), "users", "token", "alice")
    assert issued.returncode == 0, issued.stderr
    return cfg, port, issued.stdout.strip()


async def _session(port: int, token: str, *commands: dict[str, Any]) -> list[dict[str, Any]]:
    """Log in as the widget does, run ``commands`` (``agent.state.set`` args) in
    turn, each answered ``result``; returns the agents of the login snapshot."""
    async with asyncio.timeout(20), connect(f"ws://127.0.0.1:{port}", open_timeout=10) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        assert json.loads(await ws.recv())["type"] == "auth.ok"
        snapshot = json.loads(await ws.recv())
        assert snapshot["type"] == "snapshot", snapshot
        for n, args in enumerate(commands):
            cid = f"state-{n}"
            await ws.send(
                json.dumps({"type": "command", "id": cid, "name": "agent.state.set", "args": args})
            )
            while True:
                reply = json.loads(await ws.recv())
                if reply.get("id") == cid:
                    assert reply["type"] == "result", reply
                    break
        agents: list[dict[str, Any]] = snapshot["agents"]
        return agents


def _alice(agents: list[dict[str, Any]]) -> tuple[str, str | None]:
    [alice] = [a for a in agents if a["agent"] == "alice"]
    return alice["state"], alice["reason"]


def _crash_and_restart(
    daemon: DaemonProcess, cfg: Path, start_daemon: StartDaemon
) -> DaemonProcess:
    daemon.proc.kill()  # kill -9: nothing is saved on the way out
    daemon.proc.wait(timeout=10)
    again = start_daemon(cfg)
    again.wait_for("READY=1", timeout=30)
    return again


def test_agent_available_before_kill_9_is_available_after_the_restart(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    cfg, port, token = _setup(tmp_path)
    daemon = start_daemon(cfg)
    daemon.wait_for("READY=1", timeout=30)
    assert _alice(asyncio.run(_session(port, token, {"state": "available"}))) == (
        "offline",
        None,
    )

    daemon = _crash_and_restart(daemon, cfg, start_daemon)

    assert _alice(asyncio.run(_session(port, token))) == ("available", None)
    assert '"event": "agent.state.restored"' in daemon.log()


def test_agent_who_logged_out_before_a_restart_stays_offline_after_it(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    cfg, port, token = _setup(tmp_path)
    daemon = start_daemon(cfg)
    daemon.wait_for("READY=1", timeout=30)
    asyncio.run(
        _session(port, token, {"state": "available"}, {"state": "paused", "reason": "lunch"})
    )

    daemon = _crash_and_restart(daemon, cfg, start_daemon)
    # Paused, with its reason, then logged out.
    assert _alice(asyncio.run(_session(port, token, {"state": "offline"}))) == ("paused", "lunch")

    daemon = _crash_and_restart(daemon, cfg, start_daemon)

    assert _alice(asyncio.run(_session(port, token))) == ("offline", None)


def test_agent_state_from_the_cli_is_the_widgets_and_survives_a_restart(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    cfg, port, token = _setup(tmp_path)
    daemon = start_daemon(cfg)
    daemon.wait_for("READY=1", timeout=30)
    paused = run_cli("--config", str(cfg), "agent", "state", "paused", "lunch", "--token", token)
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout) is not None
    # A reason outside [widget] pause_reasons is refused and changes nothing.
    odd = run_cli("--config", str(cfg), "agent", "state", "paused", "<b>nap</b>", "--token", token)
    assert odd.returncode == 1
    assert "bad_request" in odd.stderr

    daemon = _crash_and_restart(daemon, cfg, start_daemon)

    assert _alice(asyncio.run(_session(port, token))) == ("paused", "lunch")
