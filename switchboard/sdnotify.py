"""The systemd notification protocol (``sd_notify``), without libsystemd.

With ``Type=notify`` systemd passes a datagram socket in ``NOTIFY_SOCKET``;
the daemon writes ``READY=1`` once it serves, ``WATCHDOG=1`` while healthy and
``STOPPING=1`` when it begins to shut down. Outside systemd the variable is
unset and every call is a no-op, so the same code runs in a terminal.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

import structlog

__all__ = ["Notifier"]

log = structlog.get_logger(__name__)


class Notifier:
    """Sends state lines to the service manager, if there is one.

    Sending never raises: a service manager that went away must not take the
    daemon down with it.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # A leading "@" names a socket in the abstract namespace.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_for_us = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval: float | None = int(usec) / 1e6 / 2 if watchdog_for_us else None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """True when a service manager listens."""
        return bool(self._address)

    def notify(self, *states: str) -> bool:
        """Send ``states`` (``"READY=1"``, ``"STATUS=…"``) in one datagram.

        Never blocks: it runs on the event loop's thread, and a receiver that
        stopped reading (its buffer full) must not freeze the daemon. Such a
        message is dropped and False returned; a missed WATCHDOG=1 is what
        systemd is there to notice.
        """
        if not self._address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._sock.sendto("\n".join(states).encode(), self._address)
        except OSError:
            return False
        return True

    async def watchdog(
        self,
        health: Callable[[], Awaitable[object]],
        *,
        failures: tuple[type[Exception], ...],
        event: str,
    ) -> None:
        """Send WATCHDOG=1 every half ``WatchdogSec`` while ``health()`` answers in time.

        A ``health`` check that times out or raises one of ``failures`` is logged
        as ``event`` and no ping is sent: if the loop or what ``health`` checks
        is stuck, systemd stops hearing from us and restarts the service. Runs
        until cancelled; returns at once when systemd asked for no watchdog.
        """
        interval = self.watchdog_interval
        if interval is None:
            return
        unhealthy: tuple[type[Exception], ...] = (TimeoutError, *failures)
        while True:
            try:
                async with asyncio.timeout(interval):
                    await health()
            except unhealthy as exc:
                log.error(event, error=str(exc) or type(exc).__name__)
            else:
                self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def close(self) -> None:
        """Close the socket; idempotent."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
