"""A bare UDP SIP peer for the tests: sends raw datagrams, collects what comes back.

Used where SIPp cannot send what a test needs (an RFC 4475 torture message as it is,
several methods from one stranger) or where the test must see every byte a worker
sends (a challenger checking that no credentials come back).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

__all__ = ["UdpPeer", "reply_to", "request"]

_counter = itertools.count(1)


def request(
    method: str,
    *,
    to: tuple[str, int],
    local: tuple[str, int],
    user: str = "probe",
    headers: tuple[str, ...] = (),
    body: str = "",
    content_type: str = "text/plain",
) -> bytes:
    """A well-formed out-of-dialog request ``method`` from ``local`` to ``to``."""
    host, port = to
    lhost, lport = local
    n = next(_counter)
    lines = [
        f"{method} sip:{user}@{host}:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP {lhost}:{lport};branch=z9hG4bK-{uuid.uuid4().hex}",
        "Max-Forwards: 70",
        f"From: <sip:probe@{lhost}:{lport}>;tag={uuid.uuid4().hex[:10]}",
        f"To: <sip:{user}@{host}:{port}>",
        f"Call-ID: {uuid.uuid4().hex}@{lhost}",
        f"CSeq: {n} {method}",
        f"Contact: <sip:probe@{lhost}:{lport}>",
        *headers,
    ]
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def reply_to(data: bytes, status: str, *, headers: tuple[str, ...] = ()) -> bytes:
    """A response ``status`` (``"401 Unauthorized"``) to request ``data``."""
    copied = []
    for line in data.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            copied.append(line)
        elif name in ("to", "t"):
            copied.append(line if ";tag=" in line else line + ";tag=peer")
    lines = [f"SIP/2.0 {status}", *copied, *headers, "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


Responder = Callable[[bytes], bytes | None]


@dataclass
class _Inbox(asyncio.DatagramProtocol):
    respond: Responder | None = None
    received: list[bytes] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)
        self.arrived.set()
        if self.respond is not None and self.transport is not None:
            answer = self.respond(data)
            if answer is not None:
                self.transport.sendto(answer, addr)


class UdpPeer:
    """One UDP socket on ``host``; every datagram it receives is kept, in order."""

    def __init__(self, transport: asyncio.DatagramTransport, inbox: _Inbox) -> None:
        self._transport = transport
        self._inbox = inbox
        self.address: tuple[str, int] = transport.get_extra_info("sockname")[:2]

    @classmethod
    async def open(cls, host: str = "127.0.0.1", *, respond: Responder | None = None) -> UdpPeer:
        """A peer on a free port of ``host``; ``respond`` answers each datagram
        received (its result is sent back unless None)."""
        loop = asyncio.get_running_loop()
        transport, inbox = await loop.create_datagram_endpoint(
            lambda: _Inbox(respond), local_addr=(host, 0)
        )
        return cls(transport, inbox)

    @property
    def received(self) -> list[bytes]:
        """Everything received so far."""
        return list(self._inbox.received)

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self._transport.sendto(data, to)

    async def wait_for(self, predicate: object, *, within: float = 5.0, start: int = 0) -> bytes:
        """The first datagram from index ``start`` on for which ``predicate`` is true."""
        assert callable(predicate)
        async with asyncio.timeout(within):
            index = start
            while True:
                for data in self._inbox.received[index:]:
                    if predicate(data):
                        return data
                index = len(self._inbox.received)
                self._inbox.arrived.clear()
                await self._inbox.arrived.wait()

    async def ask(
        self, method: str, to: tuple[str, int], *, within: float = 5.0, **kwargs: object
    ) -> int:
        """Send a well-formed ``method`` and return the status of its final answer."""
        data = request(method, to=to, local=self.address, **kwargs)  # type: ignore[arg-type]
        call_id = next(line for line in data.split(b"\r\n") if line.lower().startswith(b"call-id:"))
        start = len(self._inbox.received)
        self.send(data, to)

        def final(reply: bytes) -> bool:
            return call_id in reply and reply[:8] == b"SIP/2.0 " and reply[8:9] != b"1"

        reply = await self.wait_for(final, within=within, start=start)
        return int(reply[8:11])

    def close(self) -> None:
        self._transport.close()
