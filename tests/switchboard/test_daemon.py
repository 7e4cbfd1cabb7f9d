"""The daemon's lifespan, observed from outside as systemd would."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from crm_store import CallDirection, CallEndReason, Store, upgrade

from .conftest import LINE_SECRET, DaemonProcess, run_cli, write_config

StartDaemon = Callable[..., DaemonProcess]


def _events(daemon: DaemonProcess) -> list[dict[str, object]]:
    events = []
    for line in daemon.log().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def test_daemon_notifies_ready_watchdog_and_stopping(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    cfg = write_config(tmp_path / "switchboard.toml")
    daemon = start_daemon(cfg)
    daemon.wait_for("READY=1")
    daemon.wait_for("WATCHDOG=1")
    daemon.signal(signal.SIGTERM)
    daemon.wait_for("STOPPING=1")
    assert daemon.wait_exit() == 0
    names = [e["event"] for e in _events(daemon)]
    assert (
        names.index("daemon.ready") < names.index("daemon.stopping") < names.index("daemon.stopped")
    )
    assert (tmp_path / "recordings").is_dir()


def test_sigint_stops_cleanly(tmp_path: Path, start_daemon: StartDaemon) -> None:
    daemon = start_daemon(write_config(tmp_path / "switchboard.toml"))
    daemon.wait_for("READY=1")
    daemon.signal(signal.SIGINT)
    assert daemon.wait_exit() == 0


def test_calls_open_after_a_crash_are_closed_as_interrupted(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    cfg = write_config(tmp_path / "switchboard.toml")
    url = f"sqlite+aiosqlite:///{tmp_path / 'switchboard.sqlite3'}"

    async def leave_open_call() -> object:
        await upgrade(url)
        store = await Store.open(url, default_region="FR")
        try:
            call = await store.calls.create(
                direction=CallDirection.OUTBOUND,
                from_number="2001",
                to_number="+33612345678",
                origin="test-site",
                at=datetime.now(UTC),
            )
            return call.id
        finally:
            await store.aclose()

    call_id = asyncio.run(leave_open_call())
    daemon = start_daemon(cfg)
    daemon.wait_for("READY=1")

    async def read_call() -> object:
        store = await Store.open(url, default_region="FR")
        try:
            return await store.calls.get(call_id)  # type: ignore[arg-type]
        finally:
            await store.aclose()

    call = asyncio.run(read_call())
    assert call.end_reason == CallEndReason.INTERRUPTED  # type: ignore[attr-defined]
    assert call.ended_at is not None  # type: ignore[attr-defined]
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    closed = [e for e in _events(daemon) if e["event"] == "store.closed_interrupted_calls"]
    assert len(closed) == 1
    assert closed[0]["count"] == 1


def test_sighup_applies_log_level_and_names_what_needs_restart(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    cfg = write_config(tmp_path / "switchboard.toml", level="info")
    daemon = start_daemon(cfg)
    daemon.wait_for("READY=1")
    text = cfg.read_text()
    cfg.write_text(
        text.replace('level = "info"', 'level = "debug"').replace(
            'host = "127.0.0.1"', 'host = "127.0.0.2"'
        )
    )
    daemon.signal(signal.SIGHUP)
    daemon.wait_for("RELOADING=1")
    daemon.wait_for("READY=1")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    events = _events(daemon)
    done = next(e for e in events if e["event"] == "reload.done")
    assert done["applied"] == ["logging"]
    assert done["restart_needed"] == ["pbx"]
    # debug is now on: the shutdown path's debug lines, absent before, appear.
    assert any(e["level"] == "debug" for e in events[events.index(done) :])
    assert not any(e["level"] == "debug" for e in events[: events.index(done)])


def test_sighup_with_invalid_config_changes_nothing(
    tmp_path: Path, start_daemon: StartDaemon
) -> None:
    cfg = write_config(tmp_path / "switchboard.toml")
    daemon = start_daemon(cfg)
    daemon.wait_for("READY=1")
    cfg.write_text(cfg.read_text().replace('extension = "1001"', 'extension = "10x1"'))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for("RELOADING=1")
    daemon.wait_for("READY=1")
    assert daemon.proc.poll() is None
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    events = _events(daemon)
    issues = [e["issue"] for e in events if e["event"] == "reload.invalid_config"]
    assert any("agents[0].extension" in str(i) for i in issues)
    assert any(e["event"] == "reload.rejected" for e in events)
    assert not any(e["event"] == "reload.done" for e in events)


def test_secrets_never_reach_the_log(tmp_path: Path, start_daemon: StartDaemon) -> None:
    cfg = write_config(tmp_path / "switchboard.toml", level="debug")
    daemon = start_daemon(cfg)
    daemon.wait_for("READY=1")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for("RELOADING=1")
    daemon.wait_for("READY=1")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    events = _events(daemon)
    assert any(e["level"] == "debug" for e in events)
    # An unchanged file reloads to nothing: secrets compare by value.
    done = next(e for e in events if e["event"] == "reload.done")
    assert done["applied"] == []
    assert done["restart_needed"] == []
    assert LINE_SECRET not in daemon.log()
    shown = run_cli("check-config", "--show", str(cfg))
    assert shown.returncode == 0, shown.stderr
    assert LINE_SECRET not in shown.stdout + shown.stderr
    assert json.loads(shown.stdout)["lines"][0]["extension"] == "2001"


def test_unopenable_store_fails_start_with_reason(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "switchboard.toml")
    cfg.write_text(
        cfg.read_text().replace(
            str(tmp_path / "switchboard.sqlite3"), str(tmp_path / "missing" / "dir" / "x.sqlite3")
        )
    )
    result = run_cli("--config", str(cfg), "run")
    assert result.returncode == 1
    assert "store: cannot open" in result.stderr


def test_sighup_applies_changed_agents(tmp_path: Path, start_daemon: StartDaemon) -> None:
    cfg = write_config(tmp_path / "switchboard.toml")
    daemon = start_daemon(cfg)
    daemon.wait_for("READY=1")
    cfg.write_text(
        cfg.read_text().replace('line = "2001"\n', 'line = "2001"\nuser = "amartin"\n', 1)
    )
    daemon.signal(signal.SIGHUP)
    daemon.wait_for("RELOADING=1")
    daemon.wait_for("READY=1")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    events = _events(daemon)
    done = next(e for e in events if e["event"] == "reload.done")
    assert done["applied"] == ["agents"]
    ready = next(i for i, e in enumerate(events) if e["event"] == "daemon.ready")
    announced = [
        i for i, e in enumerate(events) if e["event"] == "agent.state" and e["agent"] == "amartin"
    ]
    # The agent, now known by its CRM user, is announced by the reload (not at
    # start), offline until it logs in.
    assert announced
    assert announced[0] > ready
    assert events[announced[0]]["state"] == "offline"
