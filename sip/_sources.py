"""Which sources may reach a SIP worker, enforced in the kernel and checked again.

The worker's SIP socket gets a kernel filter (:mod:`sip._sockfilter`) for the
configured ``allowed_sources``; the drops it counts are logged at most every
second; and an INVITE that still comes from elsewhere is refused by the engine
(:meth:`SourceGuard.allowed`).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable

from sip import _sockfilter
from sip._pj import EngineError, log

__all__ = ["SourceGuard"]

# How often the SIP socket's drop counter is read for the "not allowed" log line.
_DROPS_EVERY = 1.0


class SourceGuard:
    """The allowed sources of one worker (networks, as configured)."""

    def __init__(self, allowed_sources: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(s, strict=False) for s in allowed_sources]
        self._udp_fd: int | None = None
        self._drops = 0
        self._drops_checked = 0.0

    def attach(self, port: int, wake: tuple[str, int] | None = None) -> None:
        """Attach the kernel filter for ``allowed_sources`` (and the worker's own
        wake-up socket at address ``wake``) to the SIP socket(s).

        pjsip would parse (and answer) any packet before Python sees it; with the
        filter a packet from elsewhere never reaches it. Raises :class:`EngineError`
        when no socket could be filtered: the worker must not run unfiltered.
        """
        filtered = 0
        for fd, kind in _sockfilter.sockets_bound_to(port):
            try:
                _sockfilter.attach(fd, self._networks, wake)
            except OSError as exc:
                raise EngineError("configure_failed", f"socket filter: {exc}") from None
            filtered += 1
            if kind == socket.SOCK_DGRAM:
                self._udp_fd = fd
        if not filtered:
            raise EngineError("configure_failed", "socket filter: the SIP socket was not found")
        if self._udp_fd is not None:
            self._drops = _sockfilter.udp_drops(self._udp_fd) or 0
        log("info", "SIP socket filtered", allowed=",".join(map(str, self._networks)) or "none")

    def report_drops(self) -> None:
        """Log (at most every second) how many datagrams the kernel dropped."""
        if self._udp_fd is None:
            return
        now = time.monotonic()
        if now - self._drops_checked < _DROPS_EVERY:
            return
        self._drops_checked = now
        drops = _sockfilter.udp_drops(self._udp_fd)
        if drops is not None and drops > self._drops:
            log(
                "warning",
                "SIP datagrams dropped before the SIP stack (source not allowed, or a full "
                "receive buffer)",
                count=drops - self._drops,
            )
            self._drops = drops

    def allowed(self, host: str) -> bool:
        """Whether ``host`` (a bare address) is one of the allowed sources."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self._networks)
