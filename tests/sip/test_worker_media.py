"""A worker's media set-up for a server: a G.722 call keeps its band through the
bridge and the recording, and an idle worker costs next to nothing (no conference
clock, no polling) yet answers a command at once."""

from __future__ import annotations

import array
import asyncio
import math
import sys
import time
import uuid
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from lab import audio
from sip import protocol as p
from sip.exceptions import WorkerCommandError
from tests.sip.conftest import Worker

StartWorker = Callable[..., Awaitable[Worker]]
ROOT = Path(__file__).resolve().parents[2]
WIDE_HZ = 6000  # above the 3.4 kHz of telephone band, within G.722's 7 kHz
_TICK = 100  # clock ticks per second of /proc/<pid>/stat (SC_CLK_TCK on Linux)


def _write_tone(path: Path, hz: float, *, rate: int = 16000, seconds: float = 20.0) -> None:
    count = int(rate * seconds)
    step = 2 * math.pi * hz / rate
    samples = array.array("h", (int(12000 * math.sin(step * n)) for n in range(count)))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())


class _WidebandPeer:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port

    async def recorded(self, within: float = 10.0) -> Path:
        assert self.process.stdout is not None
        while True:
            line = (await asyncio.wait_for(self.process.stdout.readline(), within)).decode()
            assert line, "the wideband peer exited"
            if line.startswith("recorded "):
                return Path(line.split(" ", 1)[1].strip())


@pytest.fixture
async def wideband_peer(tmp_path: Path) -> AsyncIterator[_WidebandPeer]:
    tone = tmp_path / "tone.wav"
    _write_tone(tone, WIDE_HZ)
    records = tmp_path / "peer"
    records.mkdir()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.sip.g722_peer",
        str(tone),
        str(records),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    ready = (await asyncio.wait_for(process.stdout.readline(), 10)).decode().split()
    assert ready[0] == "ready", ready
    yield _WidebandPeer(process, int(ready[1]))
    assert process.stdin is not None
    process.stdin.close()
    await asyncio.wait_for(process.wait(), 10)


def _threads(pid: int) -> list[str]:
    return [(t / "comm").read_text().strip() for t in Path(f"/proc/{pid}/task").iterdir()]


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


async def _until(check: Callable[[], bool], *, within: float) -> None:
    """Return once ``check()`` holds (a state of another process: polled)."""
    async with asyncio.timeout(within):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(("clock_rate", "band_kept"), [(0, True), (8000, False)])
async def test_a_g722_call_keeps_its_band_through_the_bridge_and_the_recording(
    start_worker: StartWorker,
    wideband_peer: _WidebandPeer,
    tmp_path: Path,
    clock_rate: int,
    band_kept: bool,
) -> None:
    # G.722 preferred: the bridge follows it to 16 kHz (clock_rate 0). Forced to
    # 8 kHz, the same call loses everything above 4 kHz: the test tells them apart.
    worker = await start_worker(
        codecs=("G722", "PCMA"), clock_rate=clock_rate, recording_dir=str(tmp_path)
    )
    assert not any(name == "clock" for name in _threads(worker.client.pid))
    uri = f"sip:wideband@127.0.0.1:{wideband_peer.port}"
    # The peer plays its tone into its first call only; the second hears the
    # first through the worker's bridge.
    talker, listener = str(uuid.uuid4()), str(uuid.uuid4())
    for call in (talker, listener):
        await worker.send(p.Originate, call_id=call, line=None, to_uri=uri)
        media = await worker.wait_for(p.MediaActive, lambda e, c=call: e.call_id == c)
        assert media.codec == "G722/16000"
    # The null sound device clocks the bridge while calls have media.
    assert "clock" in _threads(worker.client.pid)
    await worker.send(p.Bridge, call_a=talker, call_b=listener)
    await worker.send(p.RecordStart, call_id=talker)
    await asyncio.sleep(3)  # talk time, not a wait for a state
    await worker.send(p.RecordStop, call_id=talker)
    finished = await worker.wait_for(p.RecordingFinished)
    for call in (talker, listener):
        await worker.send(p.Hangup, call_id=call)
        await worker.call_state(call, "ended")
    heard = [await wideband_peer.recorded(), await wideband_peer.recorded()]
    through_bridge = next(path for path in heard if path.name == "2.wav")

    _, rate = audio.read_samples(Path(finished.path))
    assert rate == (16000 if band_kept else 8000)
    if band_kept:
        assert audio.tone_level(Path(finished.path), WIDE_HZ) > 0.05
        assert audio.tone_level(through_bridge, WIDE_HZ) > 0.05
    else:
        assert audio.tone_level(through_bridge, WIDE_HZ) < 0.01
        assert audio.rms(Path(finished.path)) > 0.001  # narrowed, not silent
    # The clock stops again once the calls and the recording are over.
    await _until(lambda: "clock" not in _threads(worker.client.pid), within=5)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_an_idle_worker_spends_no_cpu_and_answers_commands_at_once(
    start_worker: StartWorker, transport: str
) -> None:
    worker = await start_worker(pbx_transport=transport)
    await worker.wait_for(p.Ready)
    pid = worker.client.pid
    assert "clock" not in _threads(pid)
    before = _cpu(pid)
    await asyncio.sleep(5)  # an idle stretch, measured
    # A 10 ms polling loop spends 4-5 clock ticks in 5 s; an idle wait none (one
    # tick of accounting noise allowed; the figures are in whole ticks).
    assert round(_cpu(pid) - before, 2) <= 0.01
    # The worker waits up to seconds in pjsip; each command wakes it at once.
    for _ in range(5):
        sent = time.monotonic()
        with pytest.raises(WorkerCommandError):
            await worker.send(p.Hangup, call_id="no-such-call")
        assert time.monotonic() - sent < 0.25
