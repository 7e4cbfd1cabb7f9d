"""The recorder of a SIP worker: WAV recordings of calls through the conference bridge.

Runs on the worker's pj thread, like the engine that owns it. A recording is
written to a hidden partial file and renamed to its final name only once its
WAV header is complete and its length matches the time it ran; otherwise the
partial file is removed and the reason (a full disk, in plain words, never a
path) goes out as an ``error`` event ``recording_failed``. What a recording
hears comes from the media graph (:meth:`sip.media_graph.MediaGraph.recording_sources`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pjsua2 as pj  # type: ignore[import-untyped]

from sip import protocol as p
from sip._pj import EngineError, log

__all__ = ["RECORDER_CLOSE_TIMEOUT", "Recorder", "Recording"]

#: Longest wait for a stopped recorder to write its WAV header.
RECORDER_CLOSE_TIMEOUT = 2.0
# A recording holding less than this share of the time it ran, minus the slack (the
# first and last frames of the conference bridge), lost audio.
_RECORDING_KEPT = 0.9
_RECORDING_SLACK = 1.0
# Free space under which a short recording is put down to a full disk.
_RECORDING_MIN_FREE = 1024 * 1024


@dataclass(eq=False)
class Recording:
    """One recording in progress (or closing)."""

    call_id: str
    final: Path
    partial: Path
    recorder: Any
    sources: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    stopped: float | None = None


class Recorder:
    """The recordings of one worker's calls, keyed by the recorded call's id.

    ``audio(call_id)`` is a call's active audio medium (None if inactive or
    held), ``port(call_id)`` its medium while it has a conference port (held
    too), ``sources(call_id)`` what a recording of it must hear, ``silence()``
    the null sound device's port; ``defer(action)`` runs ``action`` after the
    current ``libHandleEvents`` returns, and ``emit`` reports events.
    """

    def __init__(
        self,
        *,
        emit: Callable[[p.Event], None],
        defer: Callable[[Callable[[], None]], None],
        audio: Callable[[str], Any],
        port: Callable[[str], Any],
        sources: Callable[[str], set[str]],
        silence: Callable[[], Any],
    ) -> None:
        self.emit = emit
        self._defer = defer
        self._audio = audio
        self._port = port
        self._sources = sources
        self._silence = silence
        self.recordings: dict[str, Recording] = {}
        #: Recordings stopped whose WAV writer has not yet written its header.
        self.closing: set[Recording] = set()

    def __contains__(self, call_id: object) -> bool:
        return call_id in self.recordings

    def start(self, call_id: str, final: Path) -> None:
        """Record ``call_id`` (active audio, not being recorded) into ``final``;
        raises :class:`EngineError` ``invalid_path`` or ``recording_failed``."""
        if final.suffix.lower() != ".wav":
            raise EngineError("invalid_path", "recordings are WAV files: path must end in .wav")
        # pjsua picks the writer from the file extension and refuses anything
        # but .wav/.mp3, so the partial name is a hidden ``.<name>.part.wav``.
        partial = final.with_name(f".{final.stem}.part.wav")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(final.parent).free
        except OSError as exc:
            log("error", "recording.cannot_start", call_id=call_id, error=str(exc))
            raise EngineError("recording_failed", "the recording file cannot be created") from None
        if free < _RECORDING_MIN_FREE:
            # pjlib writes through stdio buffers: a file started on a full disk is
            # accepted, and its header and audio are lost without an error.
            log("error", "recording.cannot_start", call_id=call_id, free_bytes=free)
            raise EngineError("recording_failed", "no space left on device")
        recorder = pj.AudioMediaRecorder()
        try:
            recorder.createRecorder(str(partial))
        except pj.Error as exc:
            del recorder
            # pjsip's text stays in the log; the caller gets the plain reason.
            log("error", "recording.cannot_start", call_id=call_id, error=exc.info())
            with contextlib.suppress(OSError):
                partial.unlink()
            raise EngineError("recording_failed", _start_reason(final.parent)) from None
        rec = Recording(call_id=call_id, final=final, partial=partial, recorder=recorder)
        self.recordings[call_id] = rec
        # The conference bridge writes nothing to a recorder in a tick where no
        # source delivered audio (a held call's stream does not decode), which
        # would cut that time out of the WAV. The null sound device's port
        # delivers silence on every tick: with it the file keeps wall-clock time.
        self._silence().startTransmit(recorder)
        self.sync()

    def call_ended(self, call_id: str) -> None:
        """``call_id`` ended: its own recording finishes, the others stop hearing it."""
        for rec_id, rec in list(self.recordings.items()):
            if rec_id == call_id:
                self.finish(rec_id)
            else:
                rec.sources.discard(call_id)

    def reconnect(self, call_id: str, medium: Any) -> None:
        """``call_id``'s audio came back as ``medium``: feed the recordings that hear it."""
        for rec in self.recordings.values():
            if call_id in rec.sources:
                medium.startTransmit(rec.recorder)

    def sync(self) -> None:
        """Connect every recording to what it should hear, and only that."""
        for rec in self.recordings.values():
            wanted = self._sources(rec.call_id)
            for gone in rec.sources - wanted:
                port = self._port(gone)
                if port is not None:
                    with contextlib.suppress(pj.Error):
                        port.stopTransmit(rec.recorder)
                rec.sources.discard(gone)
            for new in wanted - rec.sources:
                self._add_source(rec, new)

    def _add_source(self, rec: Recording, call_id: str) -> None:
        if call_id in rec.sources:
            return
        medium = self._audio(call_id)
        if medium is not None:
            medium.startTransmit(rec.recorder)
            rec.sources.add(call_id)

    def finish(self, call_id: str) -> None:
        """Stop recording ``call_id``; the file is published once its header is written."""
        rec = self.recordings.pop(call_id)
        rec.stopped = time.monotonic()
        for source in rec.sources:
            medium = self._port(source)
            if medium is not None:
                with contextlib.suppress(pj.Error):
                    medium.stopTransmit(rec.recorder)
        with contextlib.suppress(pj.Error):
            self._silence().stopTransmit(rec.recorder)
        # Dropping the last reference destroys the recorder, but since
        # pjproject 2.14 the conference bridge removes ports asynchronously:
        # the WAV writer flushes and writes its header only on a later clock
        # tick. So wait (polling, never blocking the loop) for a complete
        # header before the rename.
        rec.recorder = None
        deadline = time.monotonic() + RECORDER_CLOSE_TIMEOUT

        def complete() -> None:
            if not _wav_complete(rec.partial) and time.monotonic() < deadline:
                self._defer(complete)
                return
            self.closing.discard(rec)
            self._publish(rec)

        self.closing.add(rec)
        self._defer(complete)

    def _publish(self, rec: Recording) -> None:
        # pjmedia's WAV writer drops what it cannot write (a full disk) without
        # telling anyone. The null sound device feeds the recorder every tick, so a
        # whole recording is as long as the time it ran: one much shorter, or whose
        # header does not match its size, lost audio.
        ran = (rec.stopped or time.monotonic()) - rec.started
        try:
            complete = _wav_complete(rec.partial)
            with wave.open(str(rec.partial), "rb") as wav:
                duration = wav.getnframes() / wav.getframerate()
            if not complete or duration < ran * _RECORDING_KEPT - _RECORDING_SLACK:
                raise _RecordingShort(
                    f"{_short_reason(rec.partial.parent)}: {duration:.1f} s of {ran:.1f} s written"
                )
            os.replace(rec.partial, rec.final)
            size = rec.final.stat().st_size
        except (_RecordingShort, OSError, wave.Error, EOFError) as exc:
            # A partial file is not a recording, and it holds space that is short.
            with contextlib.suppress(OSError):
                rec.partial.unlink()
            log("error", "recording.failed", call_id=rec.call_id, error=str(exc))
            # The message reaches clients: plain words, never a server path.
            reason = (
                str(exc) if isinstance(exc, _RecordingShort) else _short_reason(rec.final.parent)
            )
            self.emit(p.Error(code="recording_failed", message=reason, call_id=rec.call_id))
            return
        self.emit(
            p.RecordingFinished(
                call_id=rec.call_id,
                path=str(rec.final),
                duration_seconds=round(duration, 3),
                bytes=size,
            )
        )


class _RecordingShort(Exception):
    """The recording holds less audio than the time it ran."""


def _start_reason(directory: Path) -> str:
    """Why a recording could not start, in plain words."""
    reason = _short_reason(directory)
    if reason == "no space left on device":
        return reason
    return "the recording file cannot be created"


def _short_reason(directory: Path) -> str:
    """Why a recording came out short: a full disk, if the disk is full."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return "the recording is incomplete"
    if free < _RECORDING_MIN_FREE:
        return "no space left on device"
    return "the recording is incomplete"


def _wav_complete(path: Path) -> bool:
    """Whether the RIFF header of ``path`` accounts for the whole file."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    return (
        len(head) == 8
        and head[:4] == b"RIFF"
        and int.from_bytes(head[4:], "little") + 8 == size
        and size >= 44
    )
