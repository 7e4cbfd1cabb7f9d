"""Small helpers shared by the lab tests."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from lab.phones import LabPhone, OutgoingCall


async def wait_progress(
    phone: LabPhone, call: OutgoingCall, code: int, *, timeout: float = 5.0
) -> float:
    """Wait until ``call`` reports status ``code`` (180, 200...); return when (epoch)."""
    event = await phone.wait_for(
        lambda e: (
            e.kind in ("progress", "ended")
            and e.data.get("token") == call.token
            and (e.kind == "ended" or e.data.get("code") == code)
        ),
        timeout=timeout,
    )
    assert event.kind == "progress", f"call ended before {code}: {event.data}"
    return float(event.data["at"])


async def place(phone: LabPhone, uri: str, *, timeout: float = 10.0) -> OutgoingCall:
    """Call ``uri`` and wait for the call to end; return its record."""
    call = await phone.call(uri)
    async with asyncio.timeout(timeout):
        await call.ended.wait()
    return call


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z" and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids
