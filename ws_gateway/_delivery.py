"""Delivery to one client: its backlog, its sender, and the fan-out's broadcast.

A client that is *up to date* (its first messages written, nothing in its
backlog, at most ``client_buffer`` bytes waiting in its transport) is written to
directly by the fan-out, synchronously, with one ``websockets.broadcast`` call
for all such clients (:func:`deliver`): no task wakes up, no queue, no timer.
Any other client gets the message appended to its backlog (at most
``client_queue`` messages: one more closes it with 4008), which its sender
(:func:`send_loop`) writes out in order, synchronously while the transport has
room, and waits for the transport to drain otherwise, each wait bounded by
``send_timeout`` (else 4008). Per-client order holds because every write is
synchronous and the fan-out never writes directly to a client with a backlog.
A slow client only ever fills its own backlog and buffer; no one else waits for
it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog
from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed

from . import protocol as proto
from .auth import Principal
from .protocol import CloseCode, SessionState
from .rights import can_see

__all__ = ["Client", "close_bounded", "deliver", "send_loop"]

log = structlog.get_logger(__name__)


@dataclass(eq=False, slots=True)
class Client:
    """One authenticated connection.

    ``direct`` says the fan-out may write to it directly: its first messages
    are written, its backlog is empty, and it is open. Only the sender sets it
    (when it has emptied the backlog); queueing or closing clears it.
    """

    ws: ServerConnection
    session: str
    principal: Principal
    token: str = field(repr=False)
    limiter: proto.RateLimiter
    queue_limit: int
    buffer_limit: int
    backlog: deque[str] = field(default_factory=deque)
    direct: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    state: SessionState = SessionState.OPEN
    close_code: int | None = None
    close_reason: str = ""
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, text: str) -> bool:
        """Deliver ``text`` after everything offered before it.

        Written at once if the client is up to date, else queued; a full
        backlog closes the client as too slow.
        """
        if self.direct and self.ws.transport.get_write_buffer_size() <= self.buffer_limit:
            broadcast((self.ws,), text)
            return True
        return self.enqueue(text)

    def enqueue(self, text: str) -> bool:
        """Append ``text`` to the backlog and wake the sender."""
        if self.state is not SessionState.OPEN:
            return False
        if len(self.backlog) >= self.queue_limit:
            self.request_close(CloseCode.TOO_SLOW, "too slow: event queue overflowed")
            return False
        self.backlog.append(text)
        self.direct = False
        self.wake.set()
        return True

    def request_close(self, code: int | None, reason: str = "") -> None:
        """Ask the connection handler to close; the first request wins."""
        if self.state is not SessionState.OPEN:
            return
        self.state = SessionState.CLOSING
        self.direct = False
        self.close_code, self.close_reason = code, reason
        log.info("ws.session_closing", session=self.session, code=code, reason=reason)
        self.closing.set()


def deliver(
    clients: Iterable[Client], who: str | None, text: str, *, limit: int
) -> tuple[int, int]:
    """Deliver one encoded event to every client of ``clients`` in audience ``who``:
    ``(written directly, queued)``.

    The hot path (every event, every client): up-to-date clients are collected
    and written to in one synchronous broadcast; the others' backlogs grow.
    """
    now: list[ServerConnection] = []
    queued = 0
    for client in clients:
        if can_see(client.principal, who):
            ws = client.ws
            if client.direct and ws.transport.get_write_buffer_size() <= limit:
                now.append(ws)
            elif client.enqueue(text):
                queued += 1
    if now:
        broadcast(now, text)
    return len(now), queued


async def send_loop(client: Client, initial: list[str], *, send_timeout: float) -> None:
    """Write the first messages, then the backlog whenever there is one.

    Between backlogs the client is marked ``direct`` and the fan-out writes
    to it itself; the sender sleeps until something is queued again. Runs
    until cancelled; a send that times out or a closed connection asks the
    connection handler to close the client.
    """
    try:
        await _write_out(client, deque(initial), send_timeout=send_timeout)
        while True:
            if client.backlog:
                await _write_out(client, client.backlog, send_timeout=send_timeout)
                continue
            # Nothing queued and nothing to wait for: no await from the
            # check above to here, so no message can slip in between.
            client.direct = client.state is SessionState.OPEN
            client.wake.clear()
            await client.wake.wait()
    except TimeoutError:
        client.request_close(CloseCode.TOO_SLOW, "too slow: send timed out")
    except ConnectionClosed:
        client.request_close(None)


async def _write_out(client: Client, messages: deque[str], *, send_timeout: float) -> None:
    """Write ``messages`` in order until there are none left.

    While the transport holds at most the client's ``buffer_limit`` bytes,
    messages are written synchronously (as the fan-out does); above that, one is
    sent with ``send``, which waits for the transport to drain, under
    ``send_timeout`` (one timer per wait, not per message). Messages appended
    meanwhile (``messages`` may be the live backlog) are written too, after the
    others.
    """
    ws = client.ws
    buffered = ws.transport.get_write_buffer_size
    limit = client.buffer_limit
    while messages:
        if buffered() <= limit:
            broadcast((ws,), messages.popleft())
        else:
            async with asyncio.timeout(send_timeout):
                await ws.send(messages.popleft())


async def close_bounded(ws: ServerConnection, code: int, reason: str, *, timeout: float) -> None:
    """Close ``ws`` within ``timeout`` seconds, else drop the TCP connection.

    ``ServerConnection.close()`` first drains the write buffer, without a
    deadline: for a client that stopped reading, that is forever.
    """
    try:
        async with asyncio.timeout(timeout):
            await ws.close(code, reason)
    except TimeoutError:
        log.warning("ws.close_timeout", code=code)
        ws.transport.abort()
