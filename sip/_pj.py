"""The pjsua2 objects of a SIP worker, adapted: the classes whose callbacks pjsua2
calls (endpoint, account, call, log writer), the engine's record of a call, and
the codec set-up.

Callbacks run on the worker's pj thread, inside ``libHandleEvents``; each one is
wrapped by :func:`guard` (no exception may cross into C++) and only hands plain
values to the :class:`~sip._engine.Engine`, which decides. See ``sip._engine``
for the lifetime rules every object here follows.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pjsua2 as pj  # type: ignore[import-untyped]

from sip import _sipmsg as sipmsg
from sip import protocol as p

if TYPE_CHECKING:
    from sip._engine import Engine

__all__ = [
    "PJ_EINVALIDOP",
    "PJ_ETOOMANY",
    "PJ_LEVELS",
    "Account",
    "Call",
    "CallRecord",
    "Endpoint",
    "EngineError",
    "LogWriter",
    "account_config",
    "active_audio",
    "codec_of",
    "conference_port",
    "endpoint_config",
    "guard",
    "log",
    "media_config",
    "send_hold",
    "set_codecs",
]

F = TypeVar("F", bound=Callable[..., Any])

PJ_LEVELS = {"debug": 5, "info": 3, "warning": 2, "error": 1}
PJ_ETOOMANY = 70010
# pjsip refuses a re-INVITE while the call's previous one is still in progress.
PJ_EINVALIDOP = 70013


class EngineError(Exception):
    """A command cannot be carried out; ``code`` goes into the ``error`` event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def log(level: str, message: str, **context: object) -> None:
    """Write one log line to stderr (stdout carries protocol frames only)."""
    extra = " ".join(f"{k}={v}" for k, v in context.items())
    sys.stderr.write(f"{level} {message} {extra}".rstrip() + "\n")
    sys.stderr.flush()


def guard(fn: F) -> F:
    """Keep exceptions from crossing into C++ (SWIG directors would abort or hang)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BaseException:
            log("error", f"callback {fn.__name__} failed", tb=repr(traceback.format_exc()))
            return None

    wrapper.__name__ = fn.__name__
    return wrapper  # type: ignore[return-value]


class LogWriter(pj.LogWriter):  # type: ignore[misc]
    """Route pjsip's own log to stderr; its console output is switched off."""

    @guard
    def write(self, entry: Any) -> None:
        # Every line gets the prefix, continuation lines of a message dump too:
        # a peer's text must never start a line the daemon reads as the
        # worker's own "error"/"warning".
        lines = sipmsg.redact(entry.msg.rstrip()).splitlines() or [""]
        sys.stderr.write("".join(f"pj{entry.level} {line}\n" for line in lines))
        sys.stderr.flush()


class Endpoint(pj.Endpoint):  # type: ignore[misc]
    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self._engine = engine

    @guard
    def onTransportState(self, prm: Any) -> None:
        if prm.state == pj.PJSIP_TP_STATE_DISCONNECTED:
            self._engine.lines.connection_lost()


class Account(pj.Account):  # type: ignore[misc]
    def __init__(self, engine: Engine, line: str | None) -> None:
        super().__init__()
        self._engine = engine
        self.line = line

    @guard
    def onRegStarted(self, prm: Any) -> None:
        if self.line is not None and prm.renew:
            self._engine.lines.started(self)

    @guard
    def onRegState(self, prm: Any) -> None:
        if self.line is None:
            return
        self._engine.lines.answered(
            self, int(prm.code), int(prm.expiration), str(prm.reason), str(prm.rdata.wholeMsg)
        )

    @guard
    def onIncomingCall(self, prm: Any) -> None:
        self._engine._on_incoming(self, prm)


class Call(pj.Call):  # type: ignore[misc]
    def __init__(self, engine: Engine, account: Account, call_id: str, pj_id: int = -1) -> None:
        super().__init__(account, pj_id)
        self._engine = engine
        self.call_id = call_id

    @guard
    def onCallState(self, prm: Any) -> None:
        self._engine._on_call_state(self.call_id, self.getInfo())

    @guard
    def onCallMediaState(self, prm: Any) -> None:
        self._engine._on_media_state(self.call_id, self.getInfo())

    @guard
    def onCallTsxState(self, prm: Any) -> None:
        self._engine._on_tsx_state(self.call_id)

    @guard
    def onDtmfDigit(self, prm: Any) -> None:
        self._engine.emit(p.Dtmf(call_id=self.call_id, digit=str(prm.digit)))

    @guard
    def onCallTransferStatus(self, prm: Any) -> None:
        self._engine._on_transfer_status(self.call_id, prm)

    @guard
    def onCallTransferRequest(self, prm: Any) -> None:
        # A REFER *received* on one of our calls. Accepting it would make pjsua
        # place a call the daemon never asked for (and, without a new Call
        # object, reuse this one for it): transfers are the daemon's decision.
        log("warning", "REFER received: refused 603", call_id=self.call_id)
        prm.statusCode = 603

    @guard
    def onCallReplaceRequest(self, prm: Any) -> None:
        # An INVITE with Replaces aimed at this call: refused for the same reason.
        log("warning", "INVITE with Replaces received: refused 603", call_id=self.call_id)
        prm.statusCode = 603


@dataclass(eq=False)
class CallRecord:
    call_id: str
    call: Any  # Call, released on DISCONNECTED
    line: str | None
    incoming: bool
    announce: bool = True  # False for calls refused by the source filter
    answered: bool = False
    hangup_requested: bool = False
    media_active: bool = False
    last_state: str = ""
    transfer_pending: bool = False  # REFER sent, no final NOTIFY yet
    transfer_target: str = ""  # the Refer-To URI of the last REFER
    transferred: bool = False  # hung up after a successful blind transfer
    # A hold (True) or resume (False) whose re-INVITE waits for the call's previous
    # one to finish; the latest request wins.
    pending_hold: bool | None = None


def set_codecs(ep: Any, wanted: Sequence[str]) -> None:
    """Give the ``wanted`` codecs (names, or ``name/rate``) falling priorities in
    their order and disable every other one. Raises :class:`EngineError` when
    none of them is available in this build."""
    enabled = []
    for codec in ep.codecEnum2():
        codec_id = str(codec.codecId)  # "PCMA/8000/1"
        rank = codec_rank(codec_id, wanted)
        ep.codecSetPriority(codec_id, 0 if rank is None else 255 - rank)
        if rank is not None:
            enabled.append(codec_id)
    if not enabled:
        available = ", ".join(str(c.codecId) for c in ep.codecEnum2())
        raise EngineError(
            "no_codec",
            f"none of the codecs {list(wanted)} is available (this build has {available})",
        )
    log("info", "codecs", enabled=enabled)


def codec_rank(codec_id: str, wanted: Sequence[str]) -> int | None:
    """The position in ``wanted`` of the first entry naming ``codec_id``, or None."""
    parts = codec_id.lower().split("/")
    for rank, entry in enumerate(wanted):
        asked = entry.lower().split("/")
        if parts[: len(asked)] == asked:
            return rank
    return None


def codec_of(call: Any) -> str:
    """The negotiated audio codec of ``call`` as ``name/rate``, or "" if unknown."""
    try:
        info = call.getStreamInfo(0)
    except pj.Error:
        return ""
    return f"{info.codecName}/{info.codecClockRate}"


def endpoint_config(settings: p.WorkerSettings, writer: LogWriter) -> Any:
    """The ``pj.EpConfig`` of a worker: one thread (this one), no media threads,
    pjsip's log through ``writer`` at the configured level."""
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.maxCalls = settings.max_calls
    cfg.uaConfig.userAgent = "Switchboard"
    cfg.uaConfig.stunServer.clear()
    # No media thread: with an ioqueue of its own (hasIoqueue) pjsua would poll it
    # from a thread waking about 120 times a second even with no call. Without,
    # RTP sockets join pjsip's ioqueue and are read inside libHandleEvents, on
    # this thread, which then sleeps while nothing arrives.
    cfg.medConfig.threadCnt = 0
    cfg.medConfig.hasIoqueue = False
    media_config(cfg.medConfig, settings)
    cfg.logConfig.writer = writer
    # pjsua hands a line to the writer only up to consoleLevel (with a writer
    # set nothing goes to the console itself): both are the configured level.
    cfg.logConfig.level = PJ_LEVELS[settings.log_level]
    cfg.logConfig.consoleLevel = cfg.logConfig.level
    cfg.logConfig.decor = 0  # pjsip's time/thread prefixes: stderr reader adds its own
    return cfg


def media_config(med: Any, settings: p.WorkerSettings) -> None:
    """Set the conference bridge and streams of ``med`` (a ``pj.MediaConfig``) for a
    server: the bridge at ``settings.bridge_rate`` (8 kHz for G.711: no resampling),
    no echo canceller and no silence detection unless configured, resampling at
    ``resample_quality``. pjmedia's defaults (16 kHz, a 200 ms echo tail, VAD,
    quality 8) are a softphone's, and cost a server about twice the CPU per call."""
    rate = settings.bridge_rate
    med.clockRate = rate
    med.sndClockRate = rate
    med.channelCount = 1
    med.audioFramePtime = 20
    med.ecTailLen = settings.echo_tail_ms
    med.noVad = not settings.vad
    med.quality = settings.resample_quality
    med.jbMax = settings.jitter_buffer_max_ms
    # The engine opens and closes the null sound device (the bridge's clock)
    # itself, with its calls: pjsua must not close it under a call's feet.
    med.sndAutoCloseTime = -1


def wake_port(settings: p.WorkerSettings) -> int:
    """The port of the worker's wake-up socket (:mod:`sip._wake`): the last of its RTP
    block, kept out of RTP's range. A fixed port of the worker's own block, not an
    ephemeral one, which could be the SIP port of a worker not started yet."""
    return settings.rtp_port_start + settings.rtp_port_count - 1


def account_config(settings: p.WorkerSettings, transport: int | None) -> Any:
    """The ``pj.AccountConfig`` every account of a worker starts from: no NAT
    tricks, the worker's RTP ports, and bound to SIP transport ``transport``
    when given."""
    s = settings
    acfg = pj.AccountConfig()
    acfg.natConfig.sipOutboundUse = 0
    acfg.natConfig.iceEnabled = False
    acfg.natConfig.sipStunUse = pj.PJSUA_STUN_USE_DISABLED
    acfg.natConfig.mediaStunUse = pj.PJSUA_STUN_USE_DISABLED
    acfg.natConfig.contactRewriteUse = 0
    acfg.natConfig.viaRewriteUse = 0
    acfg.natConfig.sdpNatRewriteUse = 0
    acfg.natConfig.udpKaIntervalSec = 0
    acfg.mediaConfig.transportConfig.port = s.rtp_port_start
    # The last pair of the block is not RTP's: its odd port is the wake-up
    # socket's (``wake_port``).
    acfg.mediaConfig.transportConfig.portRange = s.rtp_port_count - 2
    acfg.mediaConfig.transportConfig.boundAddress = s.bind_address
    acfg.callConfig.timerUse = pj.PJSUA_SIP_TIMER_OPTIONAL
    # Bind the PBX lines to the PBX's configured transport. Otherwise pjsip
    # moves a request over 1300 bytes (an INVITE once it carries its digest
    # answer) from UDP to TCP on its own (RFC 3261 18.1.1), which a PBX or a
    # firewall set up for UDP only refuses; pjsua2 has no switch for that rule.
    # The local identity stays unbound: it calls whatever URI it is given.
    if transport is not None:
        acfg.sipConfig.transportId = transport
    return acfg


def active_audio(call: Any) -> Any:
    """``call``'s active audio media, or None (inactive, or pjsua refuses)."""
    try:
        info = call.getInfo()
        for medium in info.media:
            if medium.type == pj.PJMEDIA_TYPE_AUDIO and (
                medium.status == pj.PJSUA_CALL_MEDIA_ACTIVE
            ):
                return call.getAudioMedia(medium.index)
    except pj.Error:
        return None
    return None


def conference_port(call: Any) -> Any:
    """``call``'s audio media while it has a conference port (held too), or None."""
    try:
        info = call.getInfo()
        for medium in info.media:
            if medium.type == pj.PJMEDIA_TYPE_AUDIO and medium.audioConfSlot >= 0:
                return call.getAudioMedia(medium.index)
    except pj.Error:
        return None
    return None


def send_hold(record: CallRecord, *, held: bool) -> None:
    """Send the hold (or resume) re-INVITE of ``record``'s call, or keep it in
    ``record.pending_hold`` while the call's previous re-INVITE is still in progress
    (an agent pressing hold then resume at once): pjsip refuses a second one with
    PJ_EINVALIDOP, and the engine sends it again when a transaction of the call
    changes state. A resume while the hold still waits just drops the hold. Other
    pjsip errors raise."""
    if not held and record.pending_hold is True:
        # The hold never went out: the call is not held, there is nothing to resume.
        record.pending_hold = None
        return
    try:
        if held:
            record.call.setHold(pj.CallOpParam(True))
        else:
            prm = pj.CallOpParam(True)
            prm.opt.flag = pj.PJSUA_CALL_UNHOLD
            prm.opt.audioCount = 1
            prm.opt.videoCount = 0
            record.call.reinvite(prm)
    except pj.Error as exc:
        if exc.status != PJ_EINVALIDOP:
            raise
        if record.pending_hold is None:
            log("info", "hold_deferred", call_id=record.call_id, held=held)
        record.pending_hold = held
    else:
        record.pending_hold = None
