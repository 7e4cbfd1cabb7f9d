"""Fixtures that run the real ``switchboard`` command in a subprocess.

The daemon is observed the way systemd observes it: through a notification
socket (``NOTIFY_SOCKET``) it writes READY=1, WATCHDOG=1 and STOPPING=1 to.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab import free_port_block
from tests._toml import toml_keys

SWITCHBOARD = [sys.executable, "-m", "switchboard"]
LINE_SECRET = "line-secret-7f3a9c-never-print"

CONFIG_TEMPLATE = """\
[site]
id = "{site_id}"
default_region = "FR"

[pbx]
host = "127.0.0.1"
domain = "switchboard.lab"

{lines}

{agents}

[sip]
{sip}

[recording]
directory = "recordings"

[store]
{store}

[websocket]
{websocket}

[http]
port = {http_port}

[logging]
format = "json"
level = "{level}"
"""

ALICE = {"name": "Alice Martin", "extension": "1001", "line": "2001"}


def write_config(
    path: Path,
    *,
    level: str = "info",
    site_id: str = "test-site",
    agents: Sequence[Mapping[str, str]] = (ALICE,),
    store: Mapping[str, Any] | None = None,
    websocket: Mapping[str, Any] | None = None,
    sip: Mapping[str, Any] | None = None,
    extra: str = "",
) -> Path:
    """Write a small valid configuration (plus ``extra`` TOML) to ``path``: ``agents``
    are the ``[[agents]]`` tables (default: Alice Martin on phone 1001 and line 2001),
    each with an agent line of secret :data:`LINE_SECRET`; ``store``, ``websocket`` and
    ``sip`` add or override keys of those sections (defaults: a SQLite file next to
    ``path``, a free port, a free block of SIP ports so that daemons running at the same
    time never race for the default one)."""
    lines = "\n\n".join(
        f'[[lines]]\nextension = "{agent["line"]}"\nsecret = "{LINE_SECRET}"\nrole = "agent"'
        for agent in agents
    )
    path.write_text(
        CONFIG_TEMPLATE.format(
            site_id=site_id,
            lines=lines,
            agents="\n\n".join(f"[[agents]]\n{toml_keys(agent)}" for agent in agents),
            store=toml_keys(
                {
                    "url": f"sqlite+aiosqlite:///{path.parent / 'switchboard.sqlite3'}",
                    **(store or {}),
                }
            ),
            websocket=toml_keys({"port": free_tcp_port(), **(websocket or {})}),
            sip=toml_keys({"port_range_start": free_port_block(8), **(sip or {})}),
            http_port=free_tcp_port(),
            level=level,
        )
        + extra
    )
    return path


def free_tcp_port() -> int:
    """A TCP port free on 127.0.0.1 right now (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``switchboard ARGS`` to completion and capture its output."""
    return subprocess.run(
        [*SWITCHBOARD, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


@dataclass
class DaemonProcess:
    """A ``switchboard run`` child with the notification socket it reports to."""

    proc: subprocess.Popen[bytes]
    notify: socket.socket
    log_path: Path
    seen: list[str] = field(default_factory=list)

    def wait_for(self, state: str, timeout: float = 20.0) -> None:
        """Block until the daemon sends ``state`` (e.g. ``READY=1``)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {state} within {timeout}s; got {self.seen}; log:\n{self.log()}"
                )
            self.notify.settimeout(remaining)
            try:
                datagram = self.notify.recv(4096).decode()
            except TimeoutError:
                continue
            lines = datagram.split("\n")
            self.seen.extend(lines)
            if state in lines:
                return

    def wait_for_prefix(self, prefix: str, timeout: float = 20.0) -> str:
        """Block until the daemon sends a line starting with ``prefix``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.seen:
                if line.startswith(prefix):
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {prefix}... within {timeout}s; got {self.seen}; log:\n{self.log()}"
                )
            self.notify.settimeout(remaining)
            try:
                self.seen.extend(self.notify.recv(4096).decode().split("\n"))
            except TimeoutError:
                continue

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start ``switchboard -c CONFIG run``; stopped (SIGKILL) if the test did not."""
    started: list[DaemonProcess] = []

    def _start(config: Path, *, watchdog_usec: int = 200_000) -> DaemonProcess:
        sock_path = tmp_path / f"notify-{len(started)}.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(sock_path))
        log_path = tmp_path / f"daemon-{len(started)}.log"
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(sock_path),
            "WATCHDOG_USEC": str(watchdog_usec),
        }
        env.pop("WATCHDOG_PID", None)
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [*SWITCHBOARD, "--config", str(config), "run"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
        daemon = DaemonProcess(proc=proc, notify=notify, log_path=log_path)
        started.append(daemon)
        return daemon

    yield _start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(timeout=10)
        daemon.notify.close()
