"""A kernel socket filter that lets only the allowed sources reach the SIP stack.

pjsua2's Python binding has no hook before pjsip parses a packet, and pjsip 2.15.1
has parser bugs. So the worker attaches a classic BPF program (``SO_ATTACH_FILTER``)
to its own SIP socket: a packet whose IP source is outside ``allowed_sources`` is
dropped by the kernel and never read by pjsip, whatever the SIP method. On a TCP
listener the filter drops the SYN, and accepted connections inherit it.

The program reads the IP header through the ``SKF_NET_OFF`` window, so it works on
UDP and TCP sockets, IPv4 and IPv6 (an IPv4 packet on a dual-stack socket is matched
against the IPv4 networks). One more source may be let in by address *and port*: the
worker's own wake-up socket (``sip._wake``), bound on this host; the transport header
(UDP or TCP, where the socket's data starts) gives the port. Nothing here touches
pjsua2: the engine finds pjsip's socket by its bound port (:func:`sockets_bound_to`).

A UDP socket counts the datagrams its filter dropped in the ``drops`` column of
``/proc/net/udp`` (with the few lost to a full buffer): :func:`udp_drops` reads it
so that the worker can log refused traffic without a line per packet.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import struct
from collections.abc import Iterable, Iterator
from contextlib import suppress
from pathlib import Path

__all__ = ["Network", "attach", "program", "sockets_bound_to", "udp_drops"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_SO_ATTACH_FILTER = 26
_SO_LOCK_FILTER = 44
_SKF_NET_OFF = -0x100000
# Classic BPF opcodes (linux/filter.h).
_LD_W_ABS = 0x20
_LD_B_ABS = 0x30
_LD_H_ABS = 0x28
_ALU_AND_K = 0x54
_ALU_RSH_K = 0x74
_JEQ_K = 0x15
_JA = 0x05
_RET_K = 0x06
_ACCEPT = 0xFFFFFFFF
_DROP = 0

Insn = tuple[int, int, int, int]


def _net(offset: int) -> int:
    """The absolute-load operand for byte ``offset`` of the IP header."""
    return (_SKF_NET_OFF + offset) & 0xFFFFFFFF


def _block(network: Network, base: int) -> list[Insn]:
    """Instructions accepting a packet from ``network``, falling through otherwise.

    ``base`` is the offset of the source address in the IP header (12 for IPv4,
    8 for IPv6). Words the prefix does not cover are not compared.
    """
    raw = network.network_address.packed
    mask = network.netmask.packed
    words = []
    for i in range(0, len(raw), 4):
        m = int.from_bytes(mask[i : i + 4], "big")
        if m:
            words.append((i, int.from_bytes(raw[i : i + 4], "big"), m))
    if not words:  # 0.0.0.0/0 or ::/0
        return [(_RET_K, 0, 0, _ACCEPT)]
    body: list[tuple[str, int, int]] = []
    for offset, value, m in words:
        body.append(("ld", base + offset, 0))
        if m != 0xFFFFFFFF:
            body.append(("and", m, 0))
        body.append(("jeq", value, 0))
    insns: list[Insn] = []
    total = len(body) + 1  # + the accepting return
    for index, (op, k, _) in enumerate(body):
        if op == "ld":
            insns.append((_LD_W_ABS, 0, 0, _net(k)))
        elif op == "and":
            insns.append((_ALU_AND_K, 0, 0, k))
        else:
            # On a mismatch skip the rest of the block, its return included.
            insns.append((_JEQ_K, 0, total - index - 1, k))
    insns.append((_RET_K, 0, 0, _ACCEPT))
    return insns


def _v4(network: Network) -> ipaddress.IPv4Network | None:
    if isinstance(network, ipaddress.IPv4Network):
        return network
    mapped = network.network_address.ipv4_mapped
    if mapped is not None and network.prefixlen >= 96:
        return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return None


def _exact(address: tuple[str, int]) -> list[Insn]:
    """Instructions accepting a packet from exactly ``address`` (IP, port), falling
    through to the instruction after them otherwise."""
    ip = ipaddress.ip_address(address[0])
    version, base = (4, 12) if ip.version == 4 else (6, 8)
    raw = ip.packed
    checks: list[Insn] = [
        (_LD_B_ABS, 0, 0, _net(0)),
        (_ALU_RSH_K, 0, 0, 4),
        (_JEQ_K, 0, 0, version),
    ]
    for i in range(0, len(raw), 4):
        checks.append((_LD_W_ABS, 0, 0, _net(base + i)))
        checks.append((_JEQ_K, 0, 0, int.from_bytes(raw[i : i + 4], "big")))
    # The source port, first in the UDP or TCP header.
    checks += [(_LD_H_ABS, 0, 0, 0), (_JEQ_K, 0, 0, address[1])]
    total = len(checks) + 1
    insns = [
        (code, 0, total - index - 1, k) if code == _JEQ_K else (code, jt, jf, k)
        for index, (code, jt, jf, k) in enumerate(checks)
    ]
    return [*insns, (_RET_K, 0, 0, _ACCEPT)]


def program(networks: Iterable[Network], also: tuple[str, int] | None = None) -> list[Insn]:
    """The filter accepting IPv4/IPv6 packets from ``networks`` (and from the one
    address and port ``also``) and dropping the rest.

    No network at all drops everything but ``also``.
    """
    nets = list(networks)
    v4 = [n4 for n in nets if (n4 := _v4(n)) is not None]
    v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network) and _v4(n) is None]
    v4_code = [insn for n in v4 for insn in _block(n, 12)] + [(_RET_K, 0, 0, _DROP)]
    v6_code = [insn for n in v6 for insn in _block(n, 8)] + [(_RET_K, 0, 0, _DROP)]
    # 0 version; 1 >> 4; 2 IPv4 → the IPv4 code at 6; 3 IPv6 → 5; 4 anything
    # else is dropped; 5 a long jump (32-bit offset; conditional ones reach only
    # 255) over the IPv4 code to the IPv6 code.
    head: list[Insn] = [
        (_LD_B_ABS, 0, 0, _net(0)),
        (_ALU_RSH_K, 0, 0, 4),
        (_JEQ_K, 3, 0, 4),
        (_JEQ_K, 1, 0, 6),
        (_RET_K, 0, 0, _DROP),
        (_JA, 0, 0, len(v4_code)),
    ]
    return (_exact(also) if also is not None else []) + head + v4_code + v6_code


def _pack(insns: list[Insn]) -> tuple[bytes, object]:
    import ctypes

    blob = b"".join(struct.pack("HBBI", *insn) for insn in insns)
    buffer = ctypes.create_string_buffer(blob, len(blob))
    fprog = struct.pack("HL", len(insns), ctypes.addressof(buffer))
    return fprog, buffer


def attach(fd: int, networks: Iterable[Network], also: tuple[str, int] | None = None) -> None:
    """Attach (and lock) the filter for ``networks`` (and ``also``) to socket ``fd``;
    raises OSError."""
    fprog, buffer = _pack(program(networks, also))
    sock = socket.socket(fileno=os.dup(fd))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
        # Nobody in this process may loosen it afterwards.
        sock.setsockopt(socket.SOL_SOCKET, _SO_LOCK_FILTER, 1)
    finally:
        sock.close()  # closes the duplicate only
    del buffer  # the kernel copied the program


def sockets_bound_to(port: int) -> Iterator[tuple[int, int]]:
    """``(fd, socket type)`` of this process's IP sockets bound to local ``port``."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with suppress(OSError):
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            probe = socket.socket(fileno=os.dup(fd))
            try:
                if probe.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                if probe.getsockname()[1] == port:
                    yield fd, probe.type
            finally:
                probe.close()


def udp_drops(fd: int) -> int | None:
    """Datagrams dropped by UDP socket ``fd`` so far (filter and full buffer), or None."""
    try:
        inode = os.fstat(fd).st_ino
    except OSError:
        return None
    for table in ("udp", "udp6"):
        with suppress(OSError):
            for line in Path(f"/proc/self/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) >= 13 and fields[9] == str(inode):
                    return int(fields[12])
    return None
