"""Waking a SIP worker's pj thread out of ``libHandleEvents`` from another thread.

An idle worker waits in ``libHandleEvents`` for as long as nothing is due (seconds),
instead of returning every 10 ms to look for commands: that polling alone cost an
idle worker about 1 % of a core. A command read by the reader thread must not wait
for the timeout, and pjsua2 offers no way to interrupt the wait, so the reader
thread sends a SIP keep-alive (an empty line pair, RFC 5626 4.4.1) to the worker's
own SIP socket: pjsip's wait returns to read it, and pjsip ignores it (over TCP it
answers with one empty line, read and dropped here).

The packet comes from a socket of this process bound on this host (the bind address,
or loopback when that is a wildcard) on the last port of the worker's RTP block
(``sip._pj.wake_port``), whose address and port the SIP socket's kernel
filter lets in (:mod:`sip._sockfilter`); nothing else from that address passes. Over
UDP it is a datagram; over TCP one connection to the worker's listener, made again
(from the same port) if pjsip closed it.
"""

from __future__ import annotations

import ipaddress
import socket
import threading

from sip._pj import log

__all__ = ["Waker"]

_PING = b"\r\n\r\n"


class Waker:
    """The wake-up socket of one worker (UDP or TCP, as its SIP transport)."""

    def __init__(self, bind_address: str, transport: str, port: int = 0) -> None:
        ip = ipaddress.ip_address(bind_address)
        if ip.is_unspecified:
            ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
        self._family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        self._stream = transport == "tcp"
        self._host = str(ip)
        self._sock = self._first_free(port)
        #: The (address, port) the packets come from: let in by the SIP socket's filter.
        self.address: tuple[str, int] = (self._host, int(self._sock.getsockname()[1]))
        self._target: tuple[str, int] | None = None
        self._lock = threading.Lock()

    def _first_free(self, port: int) -> socket.socket:
        """A socket on ``port``, else on the next odd ports below it (still the
        worker's RTP block, whose pairs start even), else on any port."""
        for candidate in range(port, max(port - 20, 0), -2) if port else ():
            try:
                return self._socket(candidate)
            except OSError:
                continue
        return self._socket(0)

    def _socket(self, port: int) -> socket.socket:
        kind = socket.SOCK_STREAM if self._stream else socket.SOCK_DGRAM
        sock = socket.socket(self._family, kind)
        if self._stream:
            # Bind the same port again after pjsip closed the connection.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, port))
        except OSError:
            sock.close()
            raise
        return sock

    def start(self, sip_port: int) -> None:
        """Aim at the worker's SIP port (listening by now); raises OSError."""
        self._target = (self._host, sip_port)
        if self._stream:
            # The kernel completes the handshake; pjsip accepts it at its next poll.
            self._sock.connect(self._target)
            self._sock.setblocking(False)

    def wake(self) -> None:
        """Make the pj thread's current (or next) wait return. Any thread."""
        with self._lock:
            if self._target is None:
                return
            try:
                self._send()
            except OSError as exc:
                if not self._stream:
                    log("warning", "wake-up failed", error=str(exc))
                    return
                self._reconnect(exc)

    def _send(self) -> None:
        if not self._stream:
            assert self._target is not None
            self._sock.sendto(_PING, self._target)
            return
        try:
            while self._sock.recv(4096):  # pjsip's answers to earlier pings
                pass
            raise ConnectionResetError("closed by the SIP stack")
        except BlockingIOError:
            pass
        self._sock.send(_PING)

    def _reconnect(self, error: OSError) -> None:
        assert self._target is not None
        self._sock.close()
        try:
            self._sock = self._socket(self.address[1])
            self._sock.connect(self._target)
            self._sock.setblocking(False)
            # The connection itself wakes the listener; the ping keeps the usual path.
            self._sock.send(_PING)
        except OSError as exc:
            log("warning", "wake-up connection lost", error=str(error), reconnect=str(exc))

    def close(self) -> None:
        with self._lock:
            self._target = None
            self._sock.close()
