"""Recording retention: files older than the retention go, the rest stay."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from config import RecordingConfig
from sip.recordings import RecordingRetention, expired_recordings, purge_recordings

DAY = 86400.0


def _file(directory: Path, name: str, age_days: float, now: float) -> Path:
    path = directory / name
    path.write_bytes(b"RIFF")
    os.utime(path, (now - age_days * DAY, now - age_days * DAY))
    return path


def test_only_recordings_older_than_the_retention_are_deleted(tmp_path: Path) -> None:
    now = time.time()
    old = _file(tmp_path, "old.wav", 31, now)
    fresh = _file(tmp_path, "fresh.wav", 29, now)
    stale_part = _file(tmp_path, ".crashed.part.wav", 40, now)
    other = _file(tmp_path, "notes.txt", 400, now)
    (tmp_path / "sub.wav").mkdir()
    assert expired_recordings(tmp_path, retention_days=30, now=now) == [stale_part, old]
    assert purge_recordings(tmp_path, retention_days=30, now=now) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.wav", "notes.txt", "sub.wav"]
    assert fresh.exists()
    assert other.exists()


def test_zero_retention_keeps_everything(tmp_path: Path) -> None:
    now = time.time()
    _file(tmp_path, "ancient.wav", 3650, now)
    assert purge_recordings(tmp_path, retention_days=0, now=now) == 0
    assert expired_recordings(tmp_path / "missing", retention_days=1, now=now) == []


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_retention_purges_now_at_start_and_stops_cleanly(tmp_path: Path) -> None:
    now = time.time()
    _file(tmp_path, "a.wav", 10, now)
    _file(tmp_path, "b.wav", 1, now)
    config = RecordingConfig(directory=tmp_path, retention_days=5)
    retention = RecordingRetention(config, interval=3600, clock=lambda: now)
    assert await retention.purge_now() == 1
    assert _names(tmp_path) == ["b.wav"]

    _file(tmp_path, "c.wav", 6, now)
    async with retention:  # the periodic task purges once at start
        async with asyncio.timeout(5):
            await retention.wait_rounds(1)
    assert retention.purged == 2
    assert _names(tmp_path) == ["b.wav"]
    await retention.aclose()  # idempotent
