"""The websocket client of ``bench/web.py``: one supervisor, stamping call events.

Run by the bench as ``python bench/_web_events.py``, never by hand. It runs in its
own process so that its stamps do not wait on the bench's event loop, which also
drives the browser. It opens one ``websockets`` connection to the gateway, sends
``{"type": "auth", "token": ...}`` and waits for ``auth.ok``. From then on it
stamps every message with ``time.time()`` (CLOCK_REALTIME, the clock of the
bench's wire timestamps) as soon as ``recv()`` returns, before any parsing, and
reports each event of type ``call.ringing``, ``call.bridged`` or ``call.ended``
(a supervisor sees every call).

JSON lines. stdin: the settings (one line: ``url``, ``token``); nothing else.
stdout: ``{"ready": true}`` once authenticated, then one line per reported
event: ``{"type": ..., "call_id": ..., "leg": ..., "from_number": ..., "at":
<time.time() at receipt>}``, flushed at once. The process ends when stdin
reaches EOF (the bench closes it, or dies) or when the connection closes; a
failed connection or authentication ends it before ``ready``, with the reason
on stderr.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from _ringing_client import _EVENT_PREFIX, _say, serve
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

_REPORTED = ("call.ringing", "call.bridged", "call.ended")


async def _listen(ws: ClientConnection) -> None:
    """Report the call events until the connection closes."""
    while True:
        try:
            raw = await ws.recv()
        except ConnectionClosed as exc:
            print(f"connection closed: {exc}", file=sys.stderr)
            return
        at = time.time()
        # The gateway's messages are compact JSON: a prefix test skips replies
        # and the snapshot without parsing them.
        if not isinstance(raw, str) or not raw.startswith(_EVENT_PREFIX):
            continue
        event = json.loads(raw)["event"]
        if event["type"] not in _REPORTED:
            continue
        data = event["data"]
        _say(
            {
                "type": event["type"],
                "call_id": data.get("call_id"),
                "leg": data.get("leg"),
                "from_number": data.get("from_number"),
                "at": at,
            }
        )


async def main() -> int:
    return await serve(_listen, "web events client")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
