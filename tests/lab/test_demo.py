"""The demo: its generated configuration (the example, pointed at a lab), its
seeded store, and ``python -m lab demo`` itself serving the pages to log in to."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from config import LineRole, load_config
from lab.demo import EXAMPLE, PASSWORDS_FILE, demo_config, dump_toml


def test_demo_config_is_the_example_pointed_at_the_lab(tmp_path: Path) -> None:
    path = tmp_path / "switchboard.toml"
    path.write_text(dump_toml(demo_config(EXAMPLE, pbx_port=45678, run_dir=tmp_path)))
    cfg = load_config(path)
    example = load_config(EXAMPLE)
    assert cfg.pbx.port == 45678
    assert cfg.store.url == f"sqlite+aiosqlite:///{tmp_path / 'switchboard.sqlite3'}"
    assert Path(cfg.recording.directory) == tmp_path / "recordings"
    assert [line.extension for line in cfg.lines] == [line.extension for line in example.lines]
    assert [line.secret for line in cfg.lines] == [line.secret for line in example.lines]
    assert [a.name for a in cfg.agents] == [a.name for a in example.agents]
    assert len(cfg.lines_by_role(LineRole.AGENT)) == 3
    # The default ports, and origins that follow the HTTP port when it moves.
    assert (cfg.http.port, cfg.websocket.port) == (8080, 8765)
    moved = demo_config(EXAMPLE, pbx_port=1, run_dir=tmp_path, http_port=18080, websocket_port=7)
    assert moved["websocket"]["allowed_origins"] == [
        "http://127.0.0.1:18080",
        "http://localhost:18080",
    ]
    assert moved["websocket"]["port"] == 7


def test_dump_toml_round_trips_through_tomllib() -> None:
    data = {
        "top": 1,
        "section": {"text": 'a "quoted" \\ path', "flag": True, "ratio": 0.5, "items": [1, 2]},
        "rows": [{"name": "x"}, {"name": "y"}],
    }
    assert tomllib.loads(dump_toml(data)) == data


async def test_demo_store_is_seeded_once_with_private_passwords(tmp_path: Path) -> None:
    from crm_store import LoginOutcome, Store
    from lab.demo import prepare_store

    path = tmp_path / "switchboard.toml"
    data = demo_config(EXAMPLE, pbx_port=45678, run_dir=tmp_path)
    path.write_text(dump_toml(data))
    passwords = await prepare_store(path, data, run_dir=tmp_path)
    assert stat.S_IMODE((tmp_path / PASSWORDS_FILE).stat().st_mode) == 0o600
    # A second start on the same run directory keeps the passwords and the data.
    assert await prepare_store(path, data, run_dir=tmp_path) == passwords
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'switchboard.sqlite3'}") as store:
        agents = {a["user"] for a in data["agents"]}
        assert agents <= {u.username for u in await store.users.list()}
        for user in agents:
            login = await store.sessions.login(user, passwords[user], address=None)
            assert login.outcome is LoginOutcome.OK
        assert len(await store.calls.list_recent(limit=50)) == 10


def _read_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> list[str]:
    """Lines of ``proc``'s output up to the first matching ``pattern``."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
            continue
        lines.append(line.rstrip("\n"))
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no {pattern!r} within {timeout} s:\n" + "\n".join(lines))


@pytest.mark.lab
def test_demo_serves_the_login_page_with_the_printed_passwords(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    run_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab", "demo", "--run-dir", str(run_dir), "--caller-every", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        out = _read_until(proc, r"Ctrl-C stops the demo", 120)
        text = "\n".join(out)
        base = re.search(r"Log in at\s+(http://\S+)/login", text)
        assert base is not None, text
        users = dict(re.findall(r"^    (\w+)\s+(\S+)\s+(?:agent|supervisor|admin)", text, re.M))
        assert set(users) == {"alice", "bob", "chloe", "samira", "admin"}
        assert "Reception     extension 2100" in text

        with urllib.request.urlopen(f"{base[1]}/readyz", timeout=5) as reply:
            assert json.load(reply) == {"status": "ready"}
        for password, expected in ((users["alice"], 200), ("not-the-password", 401)):
            request = urllib.request.Request(
                f"{base[1]}/api/auth/login",
                data=json.dumps({"username": "alice", "password": password}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:
                    status, cookie = reply.status, reply.headers.get("Set-Cookie", "")
            except urllib.error.HTTPError as exc:
                status, cookie = exc.code, ""
            assert status == expected
            assert ("sb_session=" in cookie) == (expected == 200)

        # A simulated customer calls reception.
        called = _read_until(proc, r"calls reception 2100", 30)
        number = re.search(r"customer (\+\d+) ", called[-1])
        assert number is not None
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "stopping the lab" in rest

    # The daemon took the customer's call on the reception line (a line the PBX
    # did not route to the daemon's registration would leave it without one).
    assert (number[1], "2100") in asyncio.run(_inbound_callers(run_dir / "switchboard.sqlite3"))


async def _inbound_callers(db: Path) -> set[tuple[str, str | None]]:
    from crm_store import Store

    async with await Store.open(f"sqlite+aiosqlite:///{db}") as store:
        calls = await store.calls.list_recent(limit=50)
    return {(c.from_number, c.line) for c in calls if c.direction == "inbound"}
