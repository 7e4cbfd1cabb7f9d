"""Free ports on loopback for a lab.

Ports are found by binding port 0 and releasing it, so there is a small race: another
program may take the port between the release and the lab process binding it (another
lab starting at the same moment, say). When SIPp reports such a port taken, the runner
starts again on fresh ports; a Kamailio bind error fails the start with Kamailio's log.
RTP ranges are random blocks that are probed (a few ports bound) before use.
"""

from __future__ import annotations

import random
import socket

__all__ = ["RTP_CEILING", "free_port", "free_port_block", "free_rtp_block"]

#: Lab RTP blocks end below this port; Switchboard's workers use the ports above it.
RTP_CEILING = 30000


def _bindable(host: str, port: int, kinds: tuple[int, ...]) -> bool:
    socks: list[socket.socket] = []
    try:
        for kind in kinds:
            sock = socket.socket(socket.AF_INET, kind)
            socks.append(sock)
            sock.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        for sock in socks:
            sock.close()


def free_port(host: str = "127.0.0.1", *, tcp_too: bool = False) -> int:
    """A port that is free for UDP (and TCP when ``tcp_too``) on ``host`` right now."""
    kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM) if tcp_too else (socket.SOCK_DGRAM,)
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if _bindable(host, port, kinds):
            return port
    raise OSError(f"no free port on {host}")


def free_port_block(
    count: int, host: str = "127.0.0.1", *, low: int = 40000, high: int = 60000
) -> int:
    """First of ``count`` consecutive ports free for UDP and TCP on ``host`` right now.

    For a Switchboard pool under test: its workers take SIP ports ``base``,
    ``base + 1``... (``sip.port_range_start``), above the lab's own ranges.
    """
    kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM)
    for _ in range(200):
        base = random.randrange(low, high - count)
        if all(_bindable(host, base + i, kinds) for i in range(count)):
            return base
    raise OSError(f"no free block of {count} ports on {host}")


def free_rtp_block(size: int, host: str = "127.0.0.1") -> int:
    """The even first port of ``size`` ports below the ephemeral range that look free.

    Blocks are aligned to ``size`` and picked at random in 10000-29999, so parallel labs
    rarely pick the same one; a block is taken only if a sample of its ports binds.
    30000-32767 stay free for Switchboard's own SIP workers (the example configuration
    and the tests give them RTP ports there), so a lab never takes a worker's ports.
    """
    rng = random.SystemRandom()
    blocks = (RTP_CEILING - 10000) // size
    for _ in range(200):
        base = 10000 + rng.randrange(blocks) * size
        sample = range(base, base + size, max(2, size // 16))
        if all(_bindable(host, port, (socket.SOCK_DGRAM,)) for port in sample):
            return base
    raise OSError(f"no free block of {size} RTP ports on {host}")
