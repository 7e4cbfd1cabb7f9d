"""What a client reads when a command fails: a stable code and a plain message;
the driver's or library's text goes to the daemon's log, with the command id."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

import dialer.exceptions as dialer_errors
import sip.exceptions as sip_errors
from switchboard.commands import refusal

from .conftest import DaemonProcess, run_cli, write_config


async def _reply(ws: ClientConnection, cid: str, name: str, args: dict[str, Any]) -> Any:
    await ws.send(json.dumps({"type": "command", "id": cid, "name": name, "args": args}))
    async with asyncio.timeout(10):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] in ("result", "error") and message["id"] == cid:
                return message


def test_store_errors_reach_the_client_as_stable_codes_without_driver_text(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    cfg = write_config(tmp_path / "switchboard.toml")
    port = tomllib.loads(cfg.read_text())["websocket"]["port"]
    assert run_cli("--config", str(cfg), "db", "upgrade").returncode == 0
    for user, role in (("ada", "admin"), ("alice", "agent")):
        added = run_cli("--config", str(cfg), "users", "add", user, "--role", role)
        assert added.returncode == 0, added.stderr
    issued = run_cli("--config", str(cfg), "users", "token", "ada")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    daemon = start_daemon(cfg)
    daemon.wait_for("READY=1")

    async def session() -> tuple[Any, Any]:
        async with connect(f"ws://127.0.0.1:{port}", open_timeout=10) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            assert json.loads(await ws.recv())["type"] == "auth.ok"
            duplicate = await _reply(
                ws,
                "dup-1",
                "admin.users.add",
                {"username": "alice", "display_name": "Alice", "role": "agent"},
            )
            # The store breaks under the daemon (another connection moves a table).
            with sqlite3.connect(tmp_path / "switchboard.sqlite3") as other:
                other.execute("ALTER TABLE users RENAME TO users_elsewhere")
            broken = await _reply(ws, "list-1", "admin.users.list", {})
            return duplicate, broken

    duplicate, broken = asyncio.run(session())
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0

    assert (duplicate["code"], duplicate["message"]) == (
        "conflict",
        "username 'alice' already exists",
    )
    assert (broken["code"], broken["message"]) == ("internal", "internal error")
    for reply in (duplicate, broken):
        text = json.dumps(reply).lower()
        for driver_word in ("unique", "constraint", "sqlite", "no such table", "select"):
            assert driver_word not in text
    events = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    refused = next(e for e in events if e["event"] == "ws.command_refused")
    assert refused["command_id"] == "dup-1"
    assert "UNIQUE" in refused["cause"]
    failed = next(e for e in events if e["event"] == "ws.command_failed")
    assert failed["command_id"] == "list-1"
    assert "no such table" in json.dumps(failed)


PJSIP_INFO = "INVITE sip:+33612345678@10.0.0.5 SIP/2.0 pjsua_call.c:812 status=171140"


def test_sip_and_dialer_refusals_give_plain_messages_and_their_stable_reason() -> None:
    refusals = [
        (sip_errors.UnknownCall(PJSIP_INFO), "not_found"),
        (sip_errors.NoCapacity(PJSIP_INFO), "conflict"),
        (sip_errors.WorkerUnavailable(PJSIP_INFO), "unavailable"),
        (sip_errors.PoolConfigError(PJSIP_INFO), "unavailable"),
        (sip_errors.InvalidNumber(PJSIP_INFO), "bad_request"),
        (dialer_errors.SessionExists(PJSIP_INFO), "conflict"),
        (dialer_errors.DialerError(PJSIP_INFO), "unavailable"),
    ]
    for exc, code in refusals:
        reply = refusal(exc)
        assert reply.code == code
        assert reply.details == {"reason": exc.error_id}
        assert "sip:" not in reply.message
        assert "pjsua" not in reply.message
