"""Direct and queued delivery: a client that falls behind keeps its order."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from bus import Bus, RegistrationChanged
from ws_gateway import Gateway

from .conftest import Client, until, validate_server_message

REASON = "x" * 2000  # ~2 KB per event: a few dozen fill a small socket


def publish(bus: Bus, n: int) -> None:
    bus.publish(RegistrationChanged(str(n), "registered", 200, REASON, "w1"))


async def test_a_client_that_falls_behind_and_catches_up_gets_every_event_in_order(
    make_gateway: Any, open_client: Any, tokens: dict[str, str], bus: Bus
) -> None:
    # A transport limit of 8 KB. Once the client is behind, the sender waits
    # for its transport to drain below the low-water mark (2 KB): while the
    # buffer passes between the two, new events must still join the backlog
    # (written directly, they would overtake it).
    gw: Gateway = await make_gateway(client_buffer=8192, client_queue=1000, send_timeout=30.0)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gw.port))
    sue: Client = await open_client(gw=gw, sock=sock, max_queue=4)
    await sue.auth(tokens["sue"])
    await sue.expect("snapshot")
    # And the gateway's side of her connection a small send buffer, so that
    # her transport drains in small steps (the only peek inside the gateway).
    (conn,) = [c.ws for c in gw._clients]
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    # Up to date: delivered directly.
    published = 0
    for _ in range(3):
        published += 1
        publish(bus, published)
    assert [m["seq"] for m in await sue.events_until(3)] == [1, 2, 3]
    assert (gw.stats.events_direct, gw.stats.events_queued) == (3, 0)

    # Sue stops reading: once everything between the gateway and her is
    # full, events are queued for her.
    while gw.stats.events_queued == 0:
        assert published < 3000, "the client never fell behind"
        published += 1
        publish(bus, published)
        await until(lambda n=published: gw.stats.seq == n)
    direct_before = gw.stats.events_direct
    for _ in range(20):
        published += 1
        publish(bus, published)
    await until(lambda: gw.stats.seq == published)
    # Once behind, every event is queued.
    assert gw.stats.events_direct == direct_before

    # She reads again, slowly, while events keep coming: the backlog drains
    # while new events join its end.
    seqs: list[int] = []

    async def read_until(last: int, pause: float = 0.0) -> None:
        while not seqs or seqs[-1] < last:
            message = await sue.recv(timeout=5.0)
            assert message["type"] == "event", message
            seqs.append(message["seq"])
            await asyncio.sleep(pause)

    reader = asyncio.create_task(read_until(published + 200, pause=0.001))
    for _ in range(200):
        published += 1
        publish(bus, published)
        await asyncio.sleep(0.001)
    await reader
    queued = gw.stats.events_queued

    # Caught up: direct delivery again.
    for _ in range(5):
        published += 1
        publish(bus, published)
    await read_until(published)
    assert gw.stats.events_queued == queued
    assert gw.stats.events_direct > direct_before

    assert seqs == list(range(4, published + 1))
    assert gw.stats.closed_too_slow == 0
    for message in sue.received:
        validate_server_message(message)


async def test_a_transport_that_does_not_drain_within_send_timeout_is_closed_with_4008(
    make_gateway: Any, open_client: Any, tokens: dict[str, str], bus: Bus
) -> None:
    # A large queue so that only the drain timeout can close the client.
    gw: Gateway = await make_gateway(client_buffer=1024, client_queue=100_000, send_timeout=0.3)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gw.port))
    slow: Client = await open_client(gw=gw, sock=sock, max_queue=4)
    await slow.auth(tokens["sue"])
    fast: Client = await open_client(tokens["ada"], gw=gw)
    await fast.expect("snapshot")

    published = 0
    async with asyncio.timeout(10.0):
        while gw.stats.closed_too_slow == 0:
            published += 1
            publish(bus, published)
            # The other client keeps receiving everything, directly.
            message = await fast.expect("event")
            assert message["seq"] == published
    closed = await slow.closed(timeout=5.0)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 4008
    assert closed.rcvd.reason == "too slow: send timed out"
    assert [m["seq"] for m in slow.received if m["type"] == "event"] == list(
        range(1, len(slow.received) - 1)
    )
