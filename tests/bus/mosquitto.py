"""A private Mosquitto for tests that must stop, restart or reconfigure a broker.

The shared broker at 127.0.0.1:1883 is never touched: each :class:`PrivateBroker`
runs its own ``mosquitto`` on a free loopback port, with its data in the test's
directory, optionally with a TLS listener.
"""

from __future__ import annotations

import asyncio
import getpass
import shutil
import signal
import socket
from pathlib import Path

import pytest

HOST = "127.0.0.1"
TIMEOUT = 10.0

requires_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None,
    reason="the mosquitto binary is not installed (Debian package mosquitto)",
)


def answers(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class PrivateBroker:
    """A mosquitto of our own on a free port, which tests can stop and restart.

    ``listener`` replaces the plain listener's configuration lines (a TLS
    listener names its files there).
    """

    def __init__(self, directory: Path, *, listener: str | None = None) -> None:
        self.port = free_port()
        self._conf = directory / "mosquitto.conf"
        (directory / "data").mkdir(exist_ok=True)
        self._conf.write_text(
            (listener or f"listener {self.port} {HOST}\n").replace("{port}", str(self.port))
            + "allow_anonymous true\n"
            # Run as root, mosquitto switches to the user named here (by default
            # "mosquitto", who could not write the test's directory).
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {directory / 'data'}/\n"
            "log_dest none\n"
        )
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            "mosquitto", "-c", str(self._conf), stdin=asyncio.subprocess.DEVNULL
        )
        async with asyncio.timeout(TIMEOUT):
            while not answers(HOST, self.port):
                if self._proc.returncode is not None:
                    raise RuntimeError(f"mosquitto exited with {self._proc.returncode}")
                await asyncio.sleep(0.02)  # polling the port: the state we wait for

    async def stop(self) -> None:
        """SIGTERM (mosquitto saves its sessions) and wait until it has exited."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(TIMEOUT):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
