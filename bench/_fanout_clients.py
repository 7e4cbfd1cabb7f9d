"""The clients of ``bench/fanout.py``: many websocket clients in one process.

Run by the bench as ``python bench/_fanout_clients.py``, never by hand. Each
client opens a ``websockets`` asyncio connection, sends ``{"type": "auth",
"token": ...}``, waits for the first reply (``auth.ok``) and from then on
timestamps every ``event`` message it receives with ``time.time_ns()``. The
latency of a delivery is that time minus the envelope's ``at`` (the bus's
publish time, UTC, microseconds), so the bench and this process compare the
same wall clock. The same code serves the gateway and the bare baseline: the
baseline answers the auth message with a bare ``auth.ok`` and sends the same
event messages.

The bench talks to this process in JSON lines. stdin: the settings (first line:
``url``, ``tokens``, ``count``, ``out``), then ``{"go": true}`` when publishing
starts, then ``{"expect": K, "drain": S}`` once the K events are published.
stdout: ``{"ready": ...}`` once every client is authenticated or has failed,
``{"done": ...}`` once every open client has K events or S seconds passed (the
latencies, in nanoseconds, are then in the file ``out`` as native ``int64``).
Closing stdin closes the clients and ends the process; so does the bench's
death, since stdin then reaches EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import sys
import time
from array import array
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

_EVENT_PREFIX = '{"type":"event"'
# The envelope's "at" is the first one in the text: "data" comes after it, and
# the data fields that are times end in "_at", never match '"at":"'.
_AT_KEY = '"at":"'
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Connections opened at once. The server listens with asyncio's default backlog
# of 100; two processes opening more than that together overflow it and the
# kernel drops SYNs, which costs a 1 s retransmission per dropped one.
_CONNECTING = 32
_CONNECT_TIMEOUT = 30.0
_CLOSE_TIMEOUT = 5.0


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _at_ns(at: str) -> int:
    # Exact integer arithmetic: a float timestamp near 1.8e9 s keeps only
    # about 0.2 µs, and the whole latency is a difference of two such numbers.
    return (datetime.fromisoformat(at) - _EPOCH) // _MICROSECOND * 1000


class Fleet:
    """The clients of this process and what they received."""

    def __init__(self, url: str, tokens: list[str], count: int) -> None:
        self.url = url
        self.tokens = tokens
        self.count = count
        self.latencies = array("q")
        self.received = 0
        self.first_ns = 0
        self.last_ns = 0
        self.target: float = float("inf")
        self.done = asyncio.Event()
        self.settled = asyncio.Event()
        self.authenticated: list[ClientConnection] = []
        self.failed = 0
        self.closed_early: Counter[str] = Counter()
        self.stopping = False
        # Every client receives the same "at" strings: parse each once.
        self._published: dict[str, int] = {}
        self._gate = asyncio.Semaphore(_CONNECTING)
        self._pending = count

    def _settle_one(self) -> None:
        self._pending -= 1
        if self._pending == 0:
            self.settled.set()

    async def client(self, index: int) -> None:
        """Connect, authenticate, then record events until closed."""
        token = self.tokens[index % len(self.tokens)]
        try:
            async with self._gate, asyncio.timeout(_CONNECT_TIMEOUT):
                ws = await connect(
                    self.url,
                    compression=None,
                    ping_interval=None,  # the server pings; its pings are answered
                    close_timeout=_CLOSE_TIMEOUT,
                    max_queue=None,  # read as fast as frames arrive, no backpressure
                )
                await ws.send(json.dumps({"type": "auth", "token": token}))
                first = await ws.recv()
            if not isinstance(first, str) or not first.startswith('{"type":"auth.ok"'):
                raise ValueError("no auth.ok")
        except (OSError, TimeoutError, ConnectionClosed, ValueError) as exc:
            print(f"client {index}: {exc!r}", file=sys.stderr)
            self.failed += 1
            self._settle_one()
            return
        self.authenticated.append(ws)
        self._settle_one()
        await self._receive(ws)

    async def _receive(self, ws: ClientConnection) -> None:
        published = self._published
        latencies = self.latencies
        try:
            async for raw in ws:
                now = time.time_ns()
                if not isinstance(raw, str) or not raw.startswith(_EVENT_PREFIX):
                    continue  # the snapshot, or anything that is not an event
                start = raw.index(_AT_KEY) + len(_AT_KEY)
                at = raw[start : raw.index('"', start)]
                sent = published.get(at)
                if sent is None:
                    sent = published[at] = _at_ns(at)
                latencies.append(now - sent)
                if not self.first_ns:
                    self.first_ns = now
                self.last_ns = now
                self.received += 1
                if self.received >= self.target:
                    self.done.set()
        except ConnectionClosed:
            pass
        if not self.stopping:
            self.closed_early[str(ws.close_code)] += 1
            self.authenticated.remove(ws)

    async def close(self) -> None:
        self.stopping = True
        async with asyncio.timeout(_CLOSE_TIMEOUT * 2):
            await asyncio.gather(*(ws.close() for ws in self.authenticated))


def _say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def _read(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    line = await reader.readline()
    return json.loads(line) if line else None


async def main() -> None:
    raise_fd_limit()
    # Ctrl-C reaches the whole process group; the bench decides when the
    # clients close (it closes stdin, then terminates), so the clients do not
    # vanish under a server that is still measuring.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    settings = await _read(reader)
    if settings is None:
        return
    fleet = Fleet(settings["url"], settings["tokens"], settings["count"])
    async with asyncio.TaskGroup() as tg:
        for index in range(fleet.count):
            tg.create_task(fleet.client(index), name=f"fanout-client.{index}")
        await fleet.settled.wait()
        _say({"ready": len(fleet.authenticated), "failed": fleet.failed})
        try:
            go = await _read(reader)
            if go is None:
                return
            cpu_start, wall_start = _cpu_seconds(), time.time_ns()
            expect = await _read(reader)
            if expect is None:
                return
            fleet.target = expect["expect"] * len(fleet.authenticated)
            if fleet.received >= fleet.target:
                fleet.done.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(expect["drain"]):
                    await fleet.done.wait()
            cpu = _cpu_seconds() - cpu_start
            await asyncio.to_thread(Path(settings["out"]).write_bytes, fleet.latencies.tobytes())
            _say(
                {
                    "done": fleet.received >= fleet.target,
                    "open": len(fleet.authenticated),
                    "received": fleet.received,
                    "first_ns": fleet.first_ns,
                    "last_ns": fleet.last_ns,
                    "start_ns": wall_start,
                    "cpu_s": cpu,
                    "closed_early": dict(fleet.closed_early),
                }
            )
            await reader.read()  # until the bench closes stdin
        finally:
            with contextlib.suppress(TimeoutError):
                await fleet.close()


if __name__ == "__main__":
    asyncio.run(main())
