"""Child processes of the lab: own process group, killed with their parent.

Every lab process is started in a new session (so it leads its own process group and a
stop can kill the whole group, including Kamailio's forked workers) and asks the kernel
to signal it when the runner dies (``PR_SET_PDEATHSIG``), so a crashed or SIGKILLed
runner leaves nothing behind as far as Linux allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["Child", "json_events", "kill_group", "spawn"]

_PR_SET_PDEATHSIG = 1


def _death_signal(sig: int) -> Any:
    def preexec() -> None:
        # Runs in the child between fork and exec. The signal fires when the *thread*
        # that forked exits; asyncio forks from the event loop's thread, which lives as
        # long as the lab does.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return preexec


async def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    stdin: int | None = asyncio.subprocess.DEVNULL,
    stdout: int | IO[Any] | None = None,
    cwd: Path | None = None,
    death_signal: int = signal.SIGKILL,
    env: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """Start ``argv`` in its own process group, stderr (and stdout unless given) to ``log_path``.

    ``argv`` is passed as a list, never through a shell.
    """
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=log if stdout is None else stdout,
            stderr=log,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=_death_signal(death_signal),
        )


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def kill_group(
    proc: asyncio.subprocess.Process, *, grace: float = 3.0, sig: int = signal.SIGTERM
) -> int:
    """Stop the process group led by ``proc``: ``sig``, then SIGKILL after ``grace`` s.

    Returns the leader's exit status. The group is SIGKILLed even when the leader exits
    in time, so that no worker it forked survives it. If cancelled, the group is
    SIGKILLed before the cancellation propagates.
    """
    pid = proc.pid
    try:
        if proc.returncode is None:
            _signal_group(pid, sig)
            try:
                async with asyncio.timeout(grace):
                    await proc.wait()
            except TimeoutError:
                pass
    finally:
        # Kill stragglers (workers whose leader is gone). The group id is the leader's
        # pid, which Linux recycles only after wrapping around the pid space, so the
        # window for hitting an unrelated group here is negligible.
        _signal_group(pid, signal.SIGKILL)
    return await proc.wait()


class Child:
    """What every lab component running one child process tells of it."""

    _proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


async def json_events(stream: asyncio.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """The events a lab process writes on ``stream``: JSON objects with an ``event``
    key, one per line; anything else on the pipe is skipped."""
    while line := await stream.readline():
        try:
            raw = json.loads(line)
        except ValueError:
            continue
        if isinstance(raw, dict) and "event" in raw:
            yield raw
