"""The websocket client of ``bench/inbound.py``: one supervisor, timing ``call.ringing``.

Run by the bench as ``python bench/_ringing_client.py``, never by hand. It opens
one ``websockets`` asyncio connection to the gateway, sends ``{"type": "auth",
"token": ...}`` and waits for the first reply (``auth.ok``). From then on it
stamps every message with ``time.time()`` (CLOCK_REALTIME, the clock of the
bench's wire timestamps) as soon as ``recv()`` returns, before any parsing, and
reports each ``event`` message of type ``call.ringing`` whose ``data.leg`` is
``customer``. A supervisor sees every call, so every inbound call is reported,
and so are the customer legs of click-to-call conversations (their
``from_number`` is null).

The bench talks to this process in JSON lines. stdin: the settings (one line:
``url``, ``token``); nothing else. stdout: ``{"ready": true}`` once
authenticated, then one line per reported event: ``{"from_number": ...,
"call_id": ..., "at": <time.time() at receipt>}``, flushed at once. The process
ends when stdin reaches EOF (the bench closes it, or dies) or when the
connection closes; a failed connection or authentication ends it before
``ready``, with the reason on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

_EVENT_PREFIX = '{"type":"event"'
_RINGING = '"type":"call.ringing"'
_CONNECT_TIMEOUT = 30.0
_CLOSE_TIMEOUT = 5.0


def _say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def _listen(ws: ClientConnection) -> None:
    """Report the customer legs' ``call.ringing`` until the connection closes."""
    while True:
        try:
            raw = await ws.recv()
        except ConnectionClosed as exc:
            print(f"connection closed: {exc}", file=sys.stderr)
            return
        at = time.time()
        # The gateway's messages are compact JSON: two substring tests skip
        # everything else (the snapshot, other events) without parsing it.
        if not isinstance(raw, str) or not raw.startswith(_EVENT_PREFIX) or _RINGING not in raw:
            continue
        event = json.loads(raw)["event"]
        data = event["data"]
        if event["type"] != "call.ringing" or data.get("leg") != "customer":
            continue
        _say({"from_number": data.get("from_number"), "call_id": data.get("call_id"), "at": at})


async def serve(listen: Callable[[ClientConnection], Awaitable[None]], name: str) -> int:
    """Read the settings from stdin, connect and authenticate, say ``ready``, then
    run ``listen`` on the connection until it returns or stdin reaches EOF.
    ``name`` introduces the errors on stderr. Shared with ``_web_events.py``."""
    # Ctrl-C reaches the whole process group; the bench decides when the client
    # closes (it closes stdin), so the client does not vanish mid-measurement.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    line = await reader.readline()
    if not line:
        return 0
    settings = json.loads(line)
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT):
            ws = await connect(
                settings["url"],
                compression=None,
                ping_interval=None,  # the server pings; its pings are answered
                close_timeout=_CLOSE_TIMEOUT,
                max_queue=None,  # read as fast as frames arrive
            )
            await ws.send(json.dumps({"type": "auth", "token": settings["token"]}))
            first = await ws.recv()
    except (OSError, TimeoutError, ConnectionClosed) as exc:
        print(f"{name}: {exc!r}", file=sys.stderr)
        return 1
    async with ws:
        if not isinstance(first, str) or json.loads(first).get("type") != "auth.ok":
            print(f"{name}: no auth.ok: {first!r:.200}", file=sys.stderr)
            return 1
        _say({"ready": True})
        tag = name.replace(" ", "-")
        listening = asyncio.create_task(listen(ws), name=f"{tag}.listen")
        eof = asyncio.create_task(reader.read(), name=f"{tag}.stdin")
        try:
            await asyncio.wait({listening, eof}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (listening, eof):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return 0


async def main() -> int:
    return await serve(_listen, "ringing client")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
