"""The daemon serves the web app on its ``[http]`` port, from its own loop."""

from __future__ import annotations

import json
import signal
import socket
import tomllib
from collections.abc import Callable
from pathlib import Path

import httpx

from .conftest import DaemonProcess, write_config

StartDaemon = Callable[..., DaemonProcess]


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
