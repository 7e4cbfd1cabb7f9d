"""The conference bridge's side of the worker's engine: who hears whom.

:class:`Conference` holds the commands that connect, record, hold and supervise
calls, and the helpers that make pjmedia's conference bridge match the pure
:class:`~sip.media_graph.MediaGraph` (bridges both ways, supervision per mode,
holds). :class:`~sip._engine.Engine` mixes it in; it runs on the pj thread only.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pjsua2 as pj  # type: ignore[import-untyped]

from sip import protocol as p
from sip._pj import CallRecord, EngineError, active_audio, conference_port, send_hold
from sip._recorder import Recorder
from sip.media_graph import MediaGraph, Rewire

__all__ = ["Conference"]


class Conference:
    """The media commands and the conference wiring of one engine."""

    _calls: dict[str, CallRecord]
    _graph: MediaGraph
    _recorder: Recorder

    def _settings(self) -> p.WorkerSettings:
        raise NotImplementedError

    def _record(self, call_id: str) -> CallRecord:
        raise NotImplementedError

    def _cmd_bridge(self, cmd: p.Bridge) -> None:
        a, b = self._record(cmd.call_a), self._record(cmd.call_b)
        self._graph.check_bridge(a.call_id, b.call_id)
        if self._audio(a) is None or self._audio(b) is None:
            raise EngineError("media_not_active", "both calls need active audio")
        self._rewire(self._graph.bridge(a.call_id, b.call_id))
        # A recording of either leg now hears the other leg too.
        self._recorder.sync()

    def _cmd_unbridge(self, cmd: p.Unbridge) -> None:
        a, b = self._record(cmd.call_a), self._record(cmd.call_b)
        self._rewire(self._graph.unbridge(a.call_id, b.call_id))
        self._recorder.sync()

    def _cmd_record_start(self, cmd: p.RecordStart) -> None:
        s = self._settings()
        record = self._record(cmd.call_id)
        if cmd.call_id in self._recorder:
            raise EngineError("already_recording", "the call is being recorded")
        if self._audio(record) is None:
            raise EngineError("media_not_active", "the call has no active audio")
        final = Path(cmd.path) if cmd.path else Path(s.recording_dir) / f"{cmd.call_id}.wav"
        self._recorder.start(cmd.call_id, final)

    def _cmd_record_stop(self, cmd: p.RecordStop) -> None:
        if cmd.call_id not in self._recorder:
            raise EngineError("not_recording", "the call is not being recorded")
        self._recorder.finish(cmd.call_id)

    def _cmd_hold(self, cmd: p.Hold) -> None:
        record = self._record(cmd.call_id)
        send_hold(record, held=True)
        # The held party hears nobody and is heard by nobody until resume
        # (its recording keeps running); the connections stay booked and are
        # made again when the resumed media comes up (_on_media_state).
        for src, dst in self._graph.hold(record.call_id):
            self._stop(src, dst)

    def _cmd_resume(self, cmd: p.Resume) -> None:
        record = self._record(cmd.call_id)
        send_hold(record, held=False)
        self._graph.resume(record.call_id)
        # If pjsua kept the stream, no media callback may follow: connect now
        # (does nothing while the media is still on hold).
        self._reconnect(record)

    def _cmd_transfer_attended(self, cmd: p.TransferAttended) -> None:
        a, b = self._record(cmd.call_id), self._record(cmd.consult_call_id)
        self._graph.check_connect(a.call_id, b.call_id)
        if self._audio(a) is None or self._audio(b) is None:
            raise EngineError("media_not_active", "both calls need active audio")
        self._rewire(self._graph.connect(a.call_id, b.call_id))
        self._recorder.sync()

    def _cmd_supervise(self, cmd: p.Supervise) -> None:
        customer = self._record(cmd.call_id)
        supervisor = self._record(cmd.supervisor_call_id)
        self._graph.check_supervise(customer.call_id, supervisor.call_id)
        if self._audio(supervisor) is None:
            raise EngineError("media_not_active", "the supervisor's call has no active audio")
        self._rewire(self._graph.supervise(customer.call_id, supervisor.call_id, cmd.mode))
        self._recorder.sync()

    # Conference-bridge connections. The wanted set is derived from the media
    # graph (bridges both ways, supervision per mode); commands change the
    # graph, then _rewire makes the bridge match it.

    def _audio(self, record: CallRecord) -> Any:
        """Return the call's active audio media (None if inactive or held)."""
        if self._graph.is_held(record.call_id) or record.call is None:
            return None
        return active_audio(record.call)

    def _audio_of(self, call_id: str) -> Any:
        record = self._calls.get(call_id)
        return self._audio(record) if record is not None else None

    def _port(self, record: CallRecord | None) -> Any:
        """Return the call's audio media while it has a conference port (held too)."""
        if record is None or record.call is None:
            return None
        return conference_port(record.call)

    # Conference-bridge connections. The wanted set is derived from the media
    # graph (bridges both ways, supervision per mode); commands change the
    # graph, then _rewire makes the bridge match it.

    def _rewire(self, rewire: Rewire) -> None:
        """Stop the connections no longer wanted, then make the new ones."""
        for src, dst in rewire.stop:
            self._stop(src, dst)
        for src, dst in rewire.start:
            self._transmit(src, dst)

    def _transmit(self, src: str, dst: str) -> None:
        a, b = self._calls.get(src), self._calls.get(dst)
        med_a = self._audio(a) if a is not None else None
        med_b = self._audio(b) if b is not None else None
        if med_a is not None and med_b is not None:
            med_a.startTransmit(med_b)

    def _stop(self, src: str, dst: str) -> None:
        med_a, med_b = self._port(self._calls.get(src)), self._port(self._calls.get(dst))
        if med_a is not None and med_b is not None:
            with contextlib.suppress(pj.Error):
                med_a.stopTransmit(med_b)

    def _reconnect(self, record: CallRecord) -> None:
        """Make every wanted connection of this call (after its media came up again)."""
        medium = self._audio(record)
        if medium is None:
            return
        for src, dst in self._graph.edges_of(record.call_id):
            self._transmit(src, dst)
        self._recorder.reconnect(record.call_id, medium)
        self._recorder.sync()
