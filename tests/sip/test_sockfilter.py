"""The workers' kernel socket filter on real sockets: who gets through, and the count
of the rest."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest

from sip import _sockfilter


def _nets(*texts: str) -> list[_sockfilter.Network]:
    return [ipaddress.ip_network(t) for t in texts]


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack
        sock.bind(("::", 0))
        yield sock


def _arrivals(receiver: socket.socket, sources: tuple[str, ...]) -> list[str]:
    """Send one datagram from each source, then a last one from 127.0.0.1 (allowed
    in every test here): loopback delivers in order, so what arrived before that one
    is everything that got through."""
    port = receiver.getsockname()[1]
    for source in (*sources, "127.0.0.1"):
        family = socket.AF_INET6 if ":" in source else socket.AF_INET
        target = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        with socket.socket(family, socket.SOCK_DGRAM) as sender:
            sender.bind((source, 0))
            sender.sendto(source.encode(), (target, port))
    receiver.settimeout(5)
    got = []
    while (data := receiver.recv(64).decode()) != "127.0.0.1":
        got.append(data)
    return got


def test_only_allowed_networks_get_through_ipv4_and_ipv6(receiver: socket.socket) -> None:
    _sockfilter.attach(receiver.fileno(), _nets("127.0.0.1/32", "127.0.0.8/29", "::1/128"))
    before = _sockfilter.udp_drops(receiver.fileno())
    assert _arrivals(receiver, ("127.0.0.2", "127.0.0.9", "127.0.0.16", "::1")) == [
        "127.0.0.9",
        "::1",
    ]
    assert _sockfilter.udp_drops(receiver.fileno()) == (before or 0) + 2


def test_ipv4_mapped_network_matches_ipv4_packets(receiver: socket.socket) -> None:
    _sockfilter.attach(receiver.fileno(), _nets("::ffff:127.0.0.0/120"))
    assert _arrivals(receiver, ("127.0.0.2", "::1")) == ["127.0.0.2"]


def test_a_locked_filter_cannot_be_replaced(receiver: socket.socket) -> None:
    _sockfilter.attach(receiver.fileno(), _nets("127.0.0.1/32"))
    with pytest.raises(PermissionError):  # SO_LOCK_FILTER
        _sockfilter.attach(receiver.fileno(), _nets("0.0.0.0/0"))


def test_the_socket_is_found_by_its_port(receiver: socket.socket) -> None:
    port = receiver.getsockname()[1]
    found = list(_sockfilter.sockets_bound_to(port))
    assert [kind for _fd, kind in found] == [socket.SOCK_DGRAM]


def test_the_wake_address_gets_through_from_its_own_port_only(receiver: socket.socket) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as wake,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as other6,
    ):
        wake.bind(("127.0.0.5", 0))
        other.bind(("127.0.0.5", 0))
        other6.bind(("::1", 0))
        _sockfilter.attach(receiver.fileno(), _nets("127.0.0.1/32"), also=wake.getsockname())
        port = receiver.getsockname()[1]
        other.sendto(b"other port", ("127.0.0.1", port))
        other6.sendto(b"ipv6", ("::1", port))
        wake.sendto(b"wake", ("127.0.0.1", port))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as last:
            last.bind(("127.0.0.1", 0))
            last.sendto(b"last", ("127.0.0.1", port))
        receiver.settimeout(5)
        assert [receiver.recv(64), receiver.recv(64)] == [b"wake", b"last"]


def test_a_tcp_listener_accepts_the_wake_address_only() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as wake,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other,
    ):
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        wake.bind(("127.0.0.1", 0))
        _sockfilter.attach(listener.fileno(), [], also=wake.getsockname())
        other.settimeout(0.5)
        with pytest.raises(TimeoutError):  # its SYN is dropped: no answer
            other.connect(listener.getsockname())
        wake.connect(listener.getsockname())
        listener.settimeout(5)
        conn, peer = listener.accept()
        with conn:
            wake.sendall(b"\r\n\r\n")
            conn.settimeout(5)
            assert conn.recv(16) == b"\r\n\r\n"
            assert peer == wake.getsockname()
