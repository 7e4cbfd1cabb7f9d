"""Lab audio: tones made with sox, and measurements of recorded WAV files.

Every source in the lab plays its own tone (with a slow tremolo so it is not a perfectly
steady signal), so a recording tells who was heard: :func:`tone_level` measures how much
of one frequency a recording holds. Pure standard library; WAV files must be 16-bit PCM
mono (what pjsua2's ``AudioMediaRecorder`` writes).
"""

from __future__ import annotations

import asyncio
import math
import shutil
import wave
from array import array
from pathlib import Path

__all__ = ["make_tone", "read_samples", "rms", "tone_level"]


async def make_tone(path: Path, hz: float, *, seconds: float = 10.0, alaw: bool = False) -> None:
    """Write a ``hz`` tone of ``seconds`` to ``path`` at 8 kHz.

    ``alaw`` writes headerless A-law (what SIPp's ``rtp_stream`` sends as payload 8);
    otherwise a 16-bit PCM WAV. Raises ``RuntimeError`` if sox fails.
    """
    sox = shutil.which("sox") or "/usr/bin/sox"
    fmt = ["-e", "a-law", "-t", "al"] if alaw else ["-e", "signed-integer", "-b", "16", "-t", "wav"]
    argv = [
        sox, "-n", "-r", "8000", "-c", "1", *fmt, str(path),
        "synth", f"{seconds:g}", "sine", f"{hz:g}",
        "tremolo", "3", "40",
        "vol", "0.5",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"sox failed for {path}: {err.decode().strip()}")


def read_samples(path: Path) -> tuple[array[int], int]:
    """The samples of a 16-bit mono WAV and its sample rate."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono WAV")
        rate = wav.getframerate()
        frames = wav.readframes(wav.getnframes())
    samples = array("h")
    samples.frombytes(frames)
    return samples, rate


def rms(path: Path) -> float:
    """Root mean square level of a WAV, 0.0 (silence) to 1.0 (full scale)."""
    samples, _ = read_samples(path)
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768.0


def tone_level(path: Path, hz: float) -> float:
    """RMS amplitude (0.0-1.0) of the ``hz`` component of a WAV (Goertzel filter)."""
    samples, rate = read_samples(path)
    n = len(samples)
    if n == 0:
        return 0.0
    coeff = 2.0 * math.cos(2.0 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s0 = x + coeff * s1 - s2
        s2, s1 = s1, s0
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    # |X(k)| * sqrt(2) / N is the RMS amplitude of a sinusoid at exactly ``hz``.
    return math.sqrt(max(power, 0.0)) * math.sqrt(2.0) / n / 32768.0
