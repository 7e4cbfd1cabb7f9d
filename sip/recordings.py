"""Recording retention: delete recordings older than ``recording.retention_days``.

The worker writes each recording under a hidden temporary name and renames it
when complete (``docs/sip-worker.md``), so only finished ``*.wav`` files are
ever considered; a hidden ``.*.part.wav`` is a recording in progress (or left
by a crashed worker) and is only removed once it is older than the retention
too.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

from config import RecordingConfig

__all__ = ["RecordingRetention", "expired_recordings", "purge_recordings"]

log = structlog.get_logger(__name__)

_DAY = 86400.0


def expired_recordings(directory: Path, *, retention_days: int, now: float) -> list[Path]:
    """WAV files directly in ``directory`` last modified more than ``retention_days``
    days before ``now`` (epoch seconds); none when ``retention_days`` is 0."""
    if retention_days <= 0:
        return []
    limit = now - retention_days * _DAY
    expired = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        if not entry.name.endswith(".wav") or not entry.is_file(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < limit:
                expired.append(Path(entry.path))
        except FileNotFoundError:
            continue  # removed meanwhile
    return sorted(expired)


def purge_recordings(directory: Path, *, retention_days: int, now: float | None = None) -> int:
    """Delete the expired recordings of ``directory``; return how many. Blocking."""
    removed = 0
    when = time.time() if now is None else now
    for path in expired_recordings(directory, retention_days=retention_days, now=when):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
    if removed:
        log.info("recordings.purged", directory=str(directory), count=removed)
    return removed


class RecordingRetention:
    """Purges expired recordings at start and then every ``interval`` seconds.

    Use ``async with RecordingRetention(config.recording):``. Does nothing when
    ``retention_days`` is 0. The purge runs in a thread: listing a directory of
    many thousand files must not stall the event loop.
    """

    def __init__(
        self,
        config: RecordingConfig,
        *,
        interval: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(config.directory)
        self.retention_days = config.retention_days
        self.interval = interval
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._rounds = 0
        self._round_done = asyncio.Condition()
        self.purged = 0

    async def purge_now(self) -> int:
        """Purge once; return how many files were deleted. Cancellation stops the
        wait, not the deletion already started in the thread."""
        removed = await asyncio.to_thread(
            purge_recordings,
            self.directory,
            retention_days=self.retention_days,
            now=self._clock(),
        )
        self.purged += removed
        return removed

    async def start(self) -> None:
        """Start the periodic purge (no-op when recordings are kept forever)."""
        if self.retention_days > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="recording-retention")

    async def aclose(self) -> None:
        """Stop the periodic purge; idempotent. A purge in its thread finishes first."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def wait_rounds(self, count: int) -> None:
        """Wait until the periodic task has completed ``count`` purges (for tests and
        status pages). Cancellation just stops the wait."""
        async with self._round_done:
            await self._round_done.wait_for(lambda: self._rounds >= count)

    async def _loop(self) -> None:
        while True:
            try:
                await self.purge_now()
            except OSError as exc:
                # A directory not mounted yet, a permission problem: report and
                # try again at the next interval rather than stop purging.
                log.error("recordings.purge_failed", error=str(exc))
            async with self._round_done:
                self._rounds += 1
                self._round_done.notify_all()
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
