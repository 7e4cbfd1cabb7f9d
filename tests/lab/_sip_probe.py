"""A raw SIP request over UDP, for checking what Kamailio answers to strangers."""

from __future__ import annotations

import asyncio
import secrets


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        code = int(data.split(b" ", 2)[1])
        if code >= 200 and not self.status.done():
            self.status.set_result(code)


async def final_status(host: str, port: int, method: str, user: str, *, timeout: float) -> int:
    """Send one unauthenticated ``method`` for ``user`` and return the final status."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _Protocol, local_addr=(host, 0), remote_addr=(host, port)
    )
    try:
        local = int(transport.get_extra_info("sockname")[1])
        uri = f"sip:{user}@{host}:{port}"
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {host}:{local};branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{host}>;tag={secrets.token_hex(4)}",
            f"To: <{uri}>",
            f"Call-ID: {secrets.token_hex(8)}@probe",
            f"CSeq: 1 {method}",
            f"Contact: <sip:{user}@{host}:{local}>",
            "Content-Length: 0",
            "",
            "",
        ]
        transport.sendto("\r\n".join(lines).encode())
        async with asyncio.timeout(timeout):
            return await protocol.status
    finally:
        transport.close()
