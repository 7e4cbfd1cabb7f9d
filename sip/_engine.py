"""The pjsua2-facing half of a SIP worker: the engine and the modules it drives.

Everything here runs on the worker's *pj thread* (the thread that called
:meth:`Engine.configure`, which calls ``libCreate``). pjsua2 is set up with
``threadCnt = 0`` and ``mainThreadOnly``, and the media endpoint with
``threadCnt = 0`` too, so every socket is polled and every callback runs inside
:meth:`Engine.poll` on that thread. Nothing else may call into pjsua2.

The engine turns protocol commands into pjsua2 calls and pjsua2 callbacks into
protocol events. It is split by role: ``sip._pj`` adapts the pj objects (their
callbacks, the call record, endpoint and account set-up); ``sip._lines`` owns
the PBX lines and their registration retries; ``sip._recorder`` the WAV
recordings; ``sip._sources`` the allowed sources; ``sip._sipmsg`` the pure SIP
text helpers; and :mod:`sip.media_graph`, pure, decides who hears whom, which
the engine carries out on the conference bridge.

Lifetime rules (each one is a trap that crashes or hangs pjsua2):

* Every ``pj.Call``, ``pj.Account`` and ``pj.AudioMediaRecorder`` is referenced
  from exactly one place (the engine, its lines, its recorder) and is released
  explicitly. A Python ``Call`` proxy being garbage-collected runs
  ``Call::~Call``, which hangs the call up; so calls stay in
  :attr:`Engine._calls` until DISCONNECTED.
* A ``Call`` must not be deleted inside its own callback (the C++ caller still
  uses ``this`` afterwards): releases are queued on :attr:`Engine._deferred` and
  run after ``libHandleEvents`` returns.
* ``AudioMediaRecorder`` writes the WAV header in its destructor: drop the last
  reference first, then rename the file.
* All calls, recorders and accounts are released before ``libDestroy``; the
  ``LogWriter`` after it (``libDestroy`` still logs).
* No exception may propagate out of a callback into C++: each callback body is
  wrapped by :func:`sip._pj.guard`.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pjsua2 as pj  # type: ignore[import-untyped]

from sip import _sipmsg as sipmsg
from sip import protocol as p
from sip._conference import Conference
from sip._lines import Lines
from sip._pj import (
    PJ_ETOOMANY,
    Account,
    Call,
    CallRecord,
    Endpoint,
    EngineError,
    LogWriter,
    account_config,
    codec_of,
    endpoint_config,
    log,
    send_hold,
    set_codecs,
    wake_port,
)
from sip._recorder import RECORDER_CLOSE_TIMEOUT, Recorder
from sip._sources import SourceGuard
from sip._wake import Waker
from sip.media_graph import MediaGraph, MediaGraphError

__all__ = ["Engine", "EngineError"]

#: The longest wait in ``libHandleEvents`` of an idle worker, ms; pjsip's timers
#: and any packet (a command's wake-up too, see ``sip._wake``) end it sooner.
IDLE_POLL_MS = 2000
# The wait while something is watched by polling (a recording's WAV header).
_BUSY_POLL_MS = 10
# The conference clock runs on this long after the last call and recording, so
# that the bridge finishes removing their ports.
_CLOCK_LINGER = 1.0

Emit = Callable[[p.Event], None]


class Engine(Conference):
    """One pjsua2 endpoint, driven by protocol commands, reporting protocol events."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.settings: p.WorkerSettings | None = None
        self._ep: Any = None
        self._writer: Any = None
        self._local: Account | None = None
        self._calls: dict[str, CallRecord] = {}
        # Who hears whom: bridges, supervisions, holds (pure bookkeeping).
        self._graph = MediaGraph()
        self._recorder = Recorder(
            emit=emit,
            defer=lambda action: self._deferred.append(action),
            audio=self._audio_of,
            port=lambda call_id: self._port(self._calls.get(call_id)),
            sources=self._graph.recording_sources,
            silence=lambda: self._ep.audDevManager().getCaptureDevMedia(),
        )
        self._deferred: list[Callable[[], None]] = []
        # Actions due at a time (monotonic): (due, sequence, action), a heap.
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = 0
        # Whether the null sound device clocks the conference bridge, and since
        # when it has had nothing to clock.
        self._clocked = False
        self._idle_since: float | None = None
        self._waker: Waker | None = None
        self.sip_port = 0
        self._transport_ids: dict[str, int] = {}
        self.lines = Lines(
            emit=emit,
            settings=self._settings,
            new_account=lambda line: Account(self, line),
            account_config=lambda: self._account_config(pbx=True),
            defer_after=self._defer_after,
        )
        self._sources: SourceGuard | None = None

    # ------------------------------------------------------------------ lifecycle

    def configure(self, settings: p.WorkerSettings) -> int:
        """Create and start the endpoint; return the bound SIP port."""
        if self._ep is not None:
            raise EngineError("already_configured", "configure may be sent only once")
        self.settings = settings
        self._sources = SourceGuard(settings.allowed_sources)
        ep = Endpoint(self)
        ep.libCreate()  # makes this thread the pj "main" thread
        self._ep = ep
        self._writer = LogWriter()
        cfg = endpoint_config(settings, self._writer)
        ep.libInit(cfg)
        # No sound card on a server, and no clock while there is no call: the null
        # sound device, which clocks the bridge, is opened with the first call's
        # media and closed after the last call (_clock).
        ep.audDevManager().setNoDev()

        # One listener, of the PBX's transport: nothing else is exposed.
        tcfg = pj.TransportConfig()
        tcfg.port = settings.sip_port
        tcfg.boundAddress = settings.bind_address
        kind = pj.PJSIP_TRANSPORT_TCP if settings.pbx_transport == "tcp" else pj.PJSIP_TRANSPORT_UDP
        transport = ep.transportCreate(kind, tcfg)
        self.sip_port = int(ep.transportGetInfo(transport).localName.rsplit(":", 1)[1])
        self._transport_ids = {settings.pbx_transport: transport}
        self._waker = Waker(settings.bind_address, settings.pbx_transport, wake_port(settings))
        self._sources.attach(self.sip_port, self._waker.address)
        ep.libStart()
        self._waker.start(self.sip_port)
        set_codecs(ep, settings.codecs)

        # The local identity receives calls addressed to this worker directly
        # and places calls with line=None. It uses one of the account slots.
        acfg = self._account_config()
        acfg.idUri = f"sip:{sipmsg.host(settings.bind_address)}:{self.sip_port}"
        acfg.regConfig.registrarUri = ""
        self._local = Account(self, None)
        self._local.create(acfg, True)
        log("info", "configured", sip_port=self.sip_port)
        return self.sip_port

    def poll(self, msec: int) -> None:
        """Handle pjsip events for at most ``msec``; then run deferred releases."""
        if self._ep is not None:
            self._ep.libHandleEvents(msec)
        else:
            time.sleep(msec / 1000)
        self._run_deferred()
        if self._sources is not None:
            self._sources.report_drops()
        self._clock()

    def wait_ms(self) -> int:
        """How long the next :meth:`poll` may wait: short while something is polled
        for, else until the next timed action, at most :data:`IDLE_POLL_MS`."""
        if self._ep is None or self._deferred:
            return _BUSY_POLL_MS
        due = [self._timers[0][0]] if self._timers else []
        if self._idle_since is not None:
            due.append(self._idle_since + _CLOCK_LINGER)
        if not due:
            return IDLE_POLL_MS
        wait = (min(due) - time.monotonic()) * 1000
        return max(0, min(IDLE_POLL_MS, math.ceil(wait)))

    def wake(self) -> None:
        """End the pj thread's current wait in :meth:`poll` (from any thread)."""
        waker = self._waker
        if waker is not None:
            waker.wake()

    def _clock(self) -> None:
        """Stop the conference clock once no call nor recording has needed it for
        :data:`_CLOCK_LINGER`."""
        if not self._clocked:
            return
        if self._calls or self._recorder.recordings or self._recorder.closing:
            self._idle_since = None
            return
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        elif now - self._idle_since >= _CLOCK_LINGER:
            # Joins the clock's thread: about 20 ms, once the worker is idle.
            self._ep.audDevManager().setNoDev()
            self._clocked = False
            self._idle_since = None
            log("debug", "conference clock stopped")

    def _start_clock(self) -> None:
        """Clock the conference bridge (a call has media): streams send, bridges mix,
        recorders write only while it ticks. Opening the null device takes under
        0.1 ms."""
        self._idle_since = None
        if not self._clocked:
            self._ep.audDevManager().setNullDev()
            self._clocked = True

    def shutdown(self, grace: float = 2.0) -> None:
        """Hang up, unregister, release every pj object and destroy the library."""
        if self._ep is None:
            return
        ep = self._ep
        with contextlib.suppress(pj.Error):
            ep.hangupAllCalls()
        deadline = time.monotonic() + grace
        while self._calls and time.monotonic() < deadline:
            self.poll(20)
        for call_id in list(self._recorder.recordings):
            self._recorder.finish(call_id)
        for record in list(self._calls.values()):
            self._release_call(record.call_id)
        deadline = time.monotonic() + RECORDER_CLOSE_TIMEOUT + 0.5
        while self._recorder.closing and time.monotonic() < deadline:
            self.poll(10)
        self._run_deferred()
        # Unregister the lines and wait (bounded) for the PBX's answers here,
        # so libDestroy need not: by default it waits a fixed second.
        self.lines.unregister_all(self.poll)
        if self._local is not None:
            self._local.shutdown()
            self._local = None
        ep.libDestroy(pj.PJSUA_DESTROY_NO_RX_MSG)
        self._ep = None
        self._writer = None
        if self._waker is not None:
            self._waker.close()
            self._waker = None

    # ------------------------------------------------------------------ commands

    def handle(self, cmd: p.Command) -> p.Event:
        """Carry out one command (not configure/shutdown); return its reply."""
        handler = getattr(self, f"_cmd_{cmd.TYPE}", None)
        call_id = getattr(cmd, "call_id", None)
        if self._ep is None:
            return p.Error(cmd_id=cmd.cmd_id, code="not_configured", message="send configure first")
        if handler is None:
            return p.Error(
                cmd_id=cmd.cmd_id,
                call_id=call_id,
                code="not_implemented",
                message=f"{cmd.TYPE} is not implemented by this worker",
            )
        try:
            handler(cmd)
        except (EngineError, MediaGraphError) as exc:
            return p.Error(cmd_id=cmd.cmd_id, call_id=call_id, code=exc.code, message=exc.message)
        except pj.Error as exc:
            return p.Error(cmd_id=cmd.cmd_id, call_id=call_id, code="sip_error", message=exc.info())
        return p.Ok(cmd_id=cmd.cmd_id)

    def _cmd_register(self, cmd: p.Register) -> None:
        self.lines.register(cmd)

    def _cmd_unregister(self, cmd: p.Unregister) -> None:
        self.lines.unregister(cmd)

    def _cmd_originate(self, cmd: p.Originate) -> None:
        s = self._settings()
        if cmd.call_id in self._calls:
            raise EngineError("call_exists", f"call {cmd.call_id} already exists")
        account = self._local if cmd.line is None else self.lines.accounts.get(cmd.line)
        if account is None:
            raise EngineError("unknown_line", f"no line {cmd.line}")
        if len(self._calls) >= s.max_calls:
            raise EngineError("too_many_calls", f"worker holds {s.max_calls} calls already")
        call = Call(self, account, cmd.call_id)
        prm = pj.CallOpParam(True)
        prm.opt.audioCount = 1
        prm.opt.videoCount = 0
        headers = dict(cmd.headers)
        if cmd.caller_id:
            # pjsua has no per-call From; the PBX trunk takes the presented
            # number from P-Asserted-Identity.
            headers.setdefault(
                "P-Asserted-Identity", f"<sip:{cmd.caller_id}@{s.domain or 'invalid'}>"
            )
        for name, value in headers.items():
            hdr = pj.SipHeader()
            hdr.hName = name
            hdr.hValue = value
            prm.txOption.headers.append(hdr)
        record = CallRecord(call_id=cmd.call_id, call=call, line=cmd.line, incoming=False)
        self._calls[cmd.call_id] = record
        self._graph.add(cmd.call_id)
        try:
            call.makeCall(cmd.to_uri, prm)
        except pj.Error as exc:
            # Usually the Call never got a pjsua id: release it now, no events
            # follow. But pjsua may already have reported it DISCONNECTED from
            # inside makeCall, and then _release_call has taken it (deferred).
            if self._calls.pop(cmd.call_id, None) is not None:
                self._graph.remove(cmd.call_id)
                del record.call
            del call
            if exc.status == PJ_ETOOMANY:
                raise EngineError("too_many_calls", exc.info()) from None
            raise EngineError("originate_failed", exc.info()) from None

    def _cmd_answer(self, cmd: p.Answer) -> None:
        record = self._record(cmd.call_id)
        if not record.incoming or record.answered:
            raise EngineError("invalid_state", "only an unanswered incoming call can be answered")
        prm = pj.CallOpParam(True)
        prm.statusCode = 200
        prm.opt.audioCount = 1
        prm.opt.videoCount = 0
        record.call.answer(prm)

    def _cmd_reject(self, cmd: p.Reject) -> None:
        record = self._record(cmd.call_id)
        if not record.incoming or record.answered:
            raise EngineError("invalid_state", "only an unanswered incoming call can be rejected")
        if not 400 <= cmd.code <= 699:
            raise EngineError("invalid_code", "reject code must be 4xx-6xx")
        record.hangup_requested = True
        prm = pj.CallOpParam()
        prm.statusCode = cmd.code
        record.call.hangup(prm)

    def _cmd_redirect(self, cmd: p.Redirect) -> None:
        record = self._record(cmd.call_id)
        if not record.incoming or record.answered:
            raise EngineError("invalid_state", "only an unanswered incoming call can be redirected")
        if not sipmsg.is_contact_uri(cmd.target):
            raise EngineError("invalid_target", "the target must be a plain sip: URI")
        record.hangup_requested = True
        prm = pj.CallOpParam()
        prm.statusCode = 302
        # Given as a header, the Contact replaces the dialog's own in the 3xx
        # (answer(), not hangup(): the latter keeps the dialog's Contact).
        contact = pj.SipHeader()
        contact.hName = "Contact"
        contact.hValue = f"<{cmd.target}>"
        prm.txOption.headers.append(contact)
        record.call.answer(prm)

    def _cmd_hangup(self, cmd: p.Hangup) -> None:
        record = self._record(cmd.call_id)
        record.hangup_requested = True
        record.call.hangup(pj.CallOpParam())

    def _cmd_transfer_blind(self, cmd: p.TransferBlind) -> None:
        record = self._record(cmd.call_id)
        if not record.answered or record.hangup_requested:
            raise EngineError("invalid_state", "only an answered call can be transferred")
        if record.transfer_pending:
            raise EngineError("invalid_state", "a transfer of this call is in progress")
        record.call.xfer(cmd.to_uri, pj.CallOpParam())
        record.transfer_pending = True
        record.transfer_target = cmd.to_uri

    def _cmd_dtmf(self, cmd: p.SendDtmf) -> None:
        if not cmd.digits or not re.fullmatch(r"[0-9A-Da-d*#]+", cmd.digits):
            raise EngineError("invalid_digits", "digits must be 0-9, A-D, * or #")
        self._record(cmd.call_id).call.dialDtmf(cmd.digits)

    # ------------------------------------------------------------------ callbacks

    def _on_incoming(self, account: Account, prm: Any) -> None:
        source = sipmsg.source_host(str(prm.rdata.srcAddress))
        call_id = str(uuid.uuid4())
        call = Call(self, account, call_id, prm.callId)
        record = CallRecord(call_id=call_id, call=call, line=account.line, incoming=True)
        self._calls[call_id] = record
        self._graph.add(call_id)
        if self._sources is None or not self._sources.allowed(source):
            # pjsip has parsed the INVITE already (it cannot be filtered from
            # Python earlier); refuse it without telling the daemon.
            record.announce = False
            record.hangup_requested = True
            log("warning", "INVITE from a source not allowed: refused 403", source=source)
            op = pj.CallOpParam()
            op.statusCode = 403
            call.hangup(op)
            return
        info = call.getInfo()
        message = str(prm.rdata.wholeMsg)
        headers = sipmsg.headers(message)
        self.emit(
            p.IncomingCall(
                call_id=call_id,
                line=account.line,
                from_number=sipmsg.text(sipmsg.user(str(info.remoteUri))),
                from_uri=sipmsg.text(str(info.remoteUri)),
                to_number=sipmsg.text(sipmsg.user(str(info.localUri))),
                sip_call_id=sipmsg.text(str(info.callIdString)),
                headers=headers,
                source_address=source,
                target_user=sipmsg.text(sipmsg.request_user(message)),
            )
        )
        # Tell the caller it rings; answering is the daemon's decision.
        ring = pj.CallOpParam()
        ring.statusCode = 180
        call.answer(ring)

    def _on_call_state(self, call_id: str, info: Any) -> None:
        record = self._calls.get(call_id)
        if record is None:
            return
        code, reason = int(info.lastStatusCode), str(info.lastReason)
        state = info.state
        name: str | None = None
        if state == pj.PJSIP_INV_STATE_CALLING:
            name = "calling"
        elif state == pj.PJSIP_INV_STATE_EARLY:
            name = "ringing" if code in (180, 181, 182) else "early"
        elif state == pj.PJSIP_INV_STATE_CONFIRMED:
            record.answered = True
            name = "answered"
        elif state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._on_disconnected(record, code, reason)
            return
        if name is None or name == record.last_state or not record.announce:
            return
        record.last_state = name
        self.emit(
            p.CallState(call_id=call_id, state=name, sip_code=code, reason=sipmsg.text(reason))  # type: ignore[arg-type]
        )

    def _on_disconnected(self, record: CallRecord, code: int, reason: str) -> None:
        self._recorder.call_ended(record.call_id)
        self._graph.drop_bridges(record.call_id)
        # A supervision ends with any of its three legs; the connections
        # between the two remaining legs go with it.
        ended = self._graph.end_supervisions(record.call_id)
        if ended is not None:
            self._rewire(ended)
            self._recorder.sync()
        if record.announce:
            self.emit(
                p.CallState(
                    call_id=record.call_id,
                    state="ended",
                    sip_code=code,
                    reason=sipmsg.text(reason),
                    end_reason=sipmsg.end_reason(record, code),
                )
            )
        self._release_call(record.call_id)

    def _on_media_state(self, call_id: str, info: Any) -> None:
        record = self._calls.get(call_id)
        if record is None or not record.announce:
            return
        if self._audio(record) is None:
            return
        self._start_clock()
        # After hold/resume pjsua may have rebuilt the stream (a new conference
        # port): connect bridges, supervision and recorders again
        # (startTransmit on an existing connection is harmless).
        self._reconnect(record)
        if not record.media_active:
            record.media_active = True
            self.emit(p.MediaActive(call_id=call_id, codec=codec_of(record.call)))

    def _on_transfer_status(self, call_id: str, prm: Any) -> None:
        record = self._calls.get(call_id)
        if record is None or not record.announce:
            return
        code, final = int(prm.statusCode), bool(prm.finalNotify)
        self.emit(
            p.TransferStatus(
                call_id=call_id,
                code=code,
                reason=sipmsg.text(str(prm.reason)),
                final=final,
                target=sipmsg.text(record.transfer_target),
            )
        )
        if not final:
            return
        record.transfer_pending = False
        if 200 <= code < 300 and not record.hangup_requested:
            # The transferee reached the target: our part of the call is over.
            record.transferred = True
            record.hangup_requested = True
            prm.cont = False
            record.call.hangup(pj.CallOpParam())
        # A failed transfer leaves the call up, as it was: the daemon decides.

    # ------------------------------------------------------------------ helpers

    def _settings(self) -> p.WorkerSettings:
        assert self.settings is not None
        return self.settings

    def _record(self, call_id: str) -> CallRecord:
        record = self._calls.get(call_id)
        if record is None or not record.announce:
            raise EngineError("unknown_call", f"no call {call_id}")
        return record

    def _account_config(self, *, pbx: bool = False) -> Any:
        # PBX lines are bound to the PBX's transport; the local identity is not.
        s = self._settings()
        return account_config(s, self._transport_ids.get(s.pbx_transport) if pbx else None)

    def _release_call(self, call_id: str) -> None:
        record = self._calls.pop(call_id, None)
        if record is None:
            return
        self._graph.remove(call_id)
        holder = [record.call]
        record.call = None
        # Deleting a Call inside its own callback is a use-after-free in C++.
        self._deferred.append(holder.clear)

    def _defer_after(self, delay: float, action: Callable[[], None]) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (time.monotonic() + delay, self._timer_seq, action))

    def _on_tsx_state(self, call_id: str) -> None:
        # A transaction of the call moved: the re-INVITE a waiting hold or resume
        # stood behind may be over. Sent after libHandleEvents returns, not from
        # inside pjsip's callback.
        record = self._calls.get(call_id)
        if record is not None and record.pending_hold is not None:
            self._deferred.append(lambda: self._retry_hold(record))

    def _retry_hold(self, record: CallRecord) -> None:
        if record.pending_hold is None or record.call is None or record.hangup_requested:
            return
        try:
            send_hold(record, held=record.pending_hold)
        except pj.Error as exc:
            record.pending_hold = None
            log("warning", "hold_failed", call_id=record.call_id, error=exc.info())

    def _run_deferred(self) -> None:
        actions, self._deferred = self._deferred, []
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            actions.append(heapq.heappop(self._timers)[2])
        for action in actions:
            action()
