"""A tiny SIP OPTIONS client, used only to learn that a lab peer is answering."""

from __future__ import annotations

import asyncio
import secrets

__all__ = ["wait_answering"]


class _OptionsProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        first = data.split(b"\r\n", 1)[0].split(b" ")
        if len(first) >= 2 and first[0] == b"SIP/2.0" and not self.status.done():
            self.status.set_result(int(first[1]))


def _options(host: str, port: int, local_port: int) -> bytes:
    tag = secrets.token_hex(6)
    call_id = secrets.token_hex(10)
    branch = "z9hG4bK" + secrets.token_hex(8)
    lines = [
        f"OPTIONS sip:{host}:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{local_port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:lab-probe@{host}>;tag={tag}",
        f"To: <sip:{host}:{port}>",
        f"Call-ID: {call_id}@lab",
        "CSeq: 1 OPTIONS",
        f"Contact: <sip:lab-probe@{host}:{local_port}>",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


async def wait_answering(host: str, port: int, *, timeout: float) -> int:
    """Send OPTIONS to ``host:port`` every 0.2 s until any SIP response comes back.

    Returns the status code of the first response. Raises ``TimeoutError`` after
    ``timeout`` seconds; cancellation closes the socket and propagates.
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _OptionsProtocol, local_addr=(host, 0), remote_addr=(host, port)
    )
    try:
        local_port = int(transport.get_extra_info("sockname")[1])
        async with asyncio.timeout(timeout):
            while True:
                transport.sendto(_options(host, port, local_port))
                done, _ = await asyncio.wait({protocol.status}, timeout=0.2)
                if done:
                    return protocol.status.result()
    finally:
        transport.close()
