"""The messages between the daemon and one SIP worker process: settings,
commands (daemon → worker) and events (worker → daemon), as frozen dataclasses.

Pure data. :mod:`sip.protocol` frames and checks them on the wire and
re-exports every name here; import them from there. The full list, with
examples, is in ``docs/sip-worker.md``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import ClassVar, Literal, TypeAlias

__all__ = [
    "COMMANDS",
    "EVENTS",
    "Answer",
    "Bridge",
    "CallState",
    "CallStateName",
    "Command",
    "Configure",
    "Dtmf",
    "Error",
    "Event",
    "Hangup",
    "Hold",
    "IncomingCall",
    "LogLevel",
    "MediaActive",
    "Message",
    "Ok",
    "Originate",
    "Ready",
    "RecordStart",
    "RecordStop",
    "RecordingFinished",
    "Redirect",
    "Register",
    "Registration",
    "RegistrationState",
    "Reject",
    "Resume",
    "SendDtmf",
    "Shutdown",
    "Supervise",
    "SuperviseMode",
    "TransferAttended",
    "TransferBlind",
    "TransferStatus",
    "Transport",
    "Unbridge",
    "Unregister",
    "WorkerSettings",
]

LogLevel: TypeAlias = Literal["debug", "info", "warning", "error"]
Transport: TypeAlias = Literal["udp", "tcp"]
RegistrationState: TypeAlias = Literal["registering", "registered", "failed", "unregistered"]
CallStateName: TypeAlias = Literal["calling", "ringing", "early", "answered", "ended"]
SuperviseMode: TypeAlias = Literal["listen", "whisper", "barge"]

# Codecs whose audio is telephone band (8 kHz) when named without a rate.
_NARROWBAND = frozenset({"pcma", "pcmu", "gsm", "ilbc", "g729", "amr"})


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSettings:
    """Everything one worker needs to start, sent inside :class:`Configure`.

    ``sip_port`` 0 lets the OS choose; the chosen port comes back in
    :class:`Ready`. ``rtp_port_start``/``rtp_port_count`` bound the RTP ports of
    this worker's calls (two per call: RTP and RTCP). ``allowed_sources`` are IP
    addresses or CIDR networks: the SIP socket drops every packet from anywhere
    else in the kernel, before the SIP stack reads it. ``pbx_*`` are needed only
    for :class:`Register`; calls may also be made to and received from any
    allowed source directly. The worker listens on ``pbx_transport`` only.
    ``realm`` is the only digest realm the lines answer (None: ``domain``).
    """

    bind_address: str = "127.0.0.1"
    sip_port: int = 0
    rtp_port_start: int = 30000
    rtp_port_count: int = 100
    pbx_host: str | None = None
    pbx_port: int = 5060
    pbx_transport: Transport = "udp"
    domain: str | None = None
    allowed_sources: tuple[str, ...] = ()
    recording_dir: str = "."
    max_calls: int = 4
    max_accounts: int = 8
    log_level: LogLevel = "warning"
    #: Digest realm the lines' credentials are given to; None means ``domain``.
    realm: str | None = None
    #: First retry of a failed registration, seconds. Retries after an unreachable
    #: PBX stay at this pace; after a PBX's own refusal (5xx, 6xx) they double up
    #: to ``register_retry_max_seconds``.
    register_retry_seconds: int = 3
    register_retry_max_seconds: int = 60
    #: Audio codecs offered and accepted, most preferred first (``sip.codecs``).
    codecs: tuple[str, ...] = ("PCMA", "PCMU", "G722")
    #: The conference bridge's sample rate, Hz; 0 follows ``codecs`` (see
    #: :attr:`bridge_rate`). ``sip.bridge_clock_rate``.
    clock_rate: int = 0
    #: Echo canceller tail, ms; 0 is off (``sip.echo_canceller_tail``).
    echo_tail_ms: int = 0
    #: Silence detection (``sip.vad``).
    vad: bool = False
    #: Resampling quality 0-10 (``sip.resample_quality``).
    resample_quality: int = 4
    #: Longest jitter buffer, ms; -1 is pjmedia's default (``sip.jitter_buffer_max``).
    jitter_buffer_max_ms: int = -1

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.bind_address)
        for source in self.allowed_sources:
            ipaddress.ip_network(source, strict=False)
        if not 0 <= self.sip_port <= 65535:
            raise ValueError("sip_port out of range")
        if not 0 < self.rtp_port_start <= 65535:
            raise ValueError("rtp_port_start out of range")
        if not self.max_calls >= 1 or not self.max_accounts >= 1:
            raise ValueError("max_calls and max_accounts must be positive")
        if not 1 <= self.register_retry_seconds <= self.register_retry_max_seconds:
            raise ValueError("register_retry_seconds must be 1..register_retry_max_seconds")
        if self.clock_rate not in (0, 8000, 16000, 32000, 48000):
            raise ValueError("clock_rate must be 0, 8000, 16000, 32000 or 48000")
        if not 0 <= self.echo_tail_ms <= 1000:
            raise ValueError("echo_tail_ms must be 0..1000")
        if not 0 <= self.resample_quality <= 10:
            raise ValueError("resample_quality must be 0..10")
        if self.jitter_buffer_max_ms != -1 and not 20 <= self.jitter_buffer_max_ms <= 5000:
            raise ValueError("jitter_buffer_max_ms must be -1 or 20..5000")

    @property
    def bridge_rate(self) -> int:
        """The conference bridge's sample rate: ``clock_rate``, or when 0 the band of
        the preferred codec: 8000 for a narrowband one (G.711, GSM, iLBC, ``speex/8000``),
        16000 for any other (G.722, speex, opus...). Bridging G.711 calls at
        8 kHz needs no resampling at all."""
        if self.clock_rate:
            return self.clock_rate
        first = self.codecs[0].lower().split("/") if self.codecs else ["pcma"]
        if len(first) > 1:
            return 8000 if first[1] == "8000" else 16000
        return 8000 if first[0] in _NARROWBAND else 16000


# --------------------------------------------------------------------------- base


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every message; ``TYPE`` is the wire name."""

    TYPE: ClassVar[str] = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Command(Message):
    """A daemon → worker message; answered by :class:`Ok` or :class:`Error`."""

    cmd_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Event(Message):
    """A worker → daemon message."""


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True, kw_only=True)
class Configure(Command):
    """First command of every worker: create the SIP stack; answered by ``ready``."""

    TYPE: ClassVar[str] = "configure"
    settings: WorkerSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class Register(Command):
    """Register ``extension`` on the PBX as line ``line`` (a name chosen by the daemon)."""

    TYPE: ClassVar[str] = "register"
    line: str
    extension: str
    password: str = field(repr=False)
    expires: int = 300
    display_name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Unregister(Command):
    """Unregister line ``line`` and forget it."""

    TYPE: ClassVar[str] = "unregister"
    line: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Originate(Command):
    """Place a call. ``line`` None calls directly from the worker's local identity."""

    TYPE: ClassVar[str] = "originate"
    call_id: str
    line: str | None
    to_uri: str
    caller_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer(Command):
    """Answer an incoming call."""

    TYPE: ClassVar[str] = "answer"
    call_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject(Command):
    """Reject an incoming, unanswered call with SIP status ``code``."""

    TYPE: ClassVar[str] = "reject"
    call_id: str
    code: int = 486


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirect(Command):
    """Answer an incoming, unanswered call ``302 Moved Temporarily`` with
    ``target`` (a SIP URI) as its only Contact: the PBX places the call there."""

    TYPE: ClassVar[str] = "redirect"
    call_id: str
    target: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Hangup(Command):
    """End a call in any state (CANCEL, reject with 603, or BYE as fits)."""

    TYPE: ClassVar[str] = "hangup"
    call_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Bridge(Command):
    """Connect the audio of two calls of this worker, both ways."""

    TYPE: ClassVar[str] = "bridge"
    call_a: str
    call_b: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Unbridge(Command):
    """Disconnect the audio of two bridged calls."""

    TYPE: ClassVar[str] = "unbridge"
    call_a: str
    call_b: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordStart(Command):
    """Record a call, both directions mixed (with every call bridged to it).

    ``path`` is the final WAV path; None means ``<recording_dir>/<call_id>.wav``.
    """

    TYPE: ClassVar[str] = "record_start"
    call_id: str
    path: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordStop(Command):
    """Stop recording a call; ``recording_finished`` follows."""

    TYPE: ClassVar[str] = "record_stop"
    call_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold(Command):
    """Put a call on hold (re-INVITE a=sendonly)."""

    TYPE: ClassVar[str] = "hold"
    call_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Resume(Command):
    """Take a call off hold."""

    TYPE: ClassVar[str] = "resume"
    call_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SendDtmf(Command):
    """Send DTMF digits (RFC 4733 telephone-event) on a call."""

    TYPE: ClassVar[str] = "dtmf"
    call_id: str
    digits: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferBlind(Command):
    """Blind transfer: send REFER to ``to_uri`` on an answered call.

    Progress comes as :class:`TransferStatus`; on a final 2xx the worker hangs
    the call up (``end_reason`` ``transferred``), on a final failure the call
    stays up.
    """

    TYPE: ClassVar[str] = "transfer_blind"
    call_id: str
    to_uri: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferAttended(Command):
    """Connect step of an attended transfer, inside the worker (no REFER).

    Both calls are disconnected from every call they are bridged to, then
    bridged to each other; the legs left alone stay up (the daemon hangs them up).
    """

    TYPE: ClassVar[str] = "transfer_attended"
    call_id: str
    consult_call_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Supervise(Command):
    """Connect a supervisor's call to a customer call bridged to one agent call.

    ``listen``: the supervisor hears both; ``whisper``: the agent hears the
    supervisor too; ``barge``: both hear the supervisor. Sending it again
    changes the mode; hanging up the supervisor's call ends it.
    """

    TYPE: ClassVar[str] = "supervise"
    call_id: str
    supervisor_call_id: str
    mode: SuperviseMode


@dataclass(frozen=True, slots=True, kw_only=True)
class Shutdown(Command):
    """Hang up everything, unregister, destroy the stack and exit 0."""

    TYPE: ClassVar[str] = "shutdown"


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class Ok(Event):
    """The command ``cmd_id`` succeeded."""

    TYPE: ClassVar[str] = "ok"
    cmd_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Error(Event):
    """The command ``cmd_id`` failed, or (``cmd_id`` None) something failed on its own."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    cmd_id: str | None = None
    call_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready(Event):
    """The worker is configured and listening on ``sip_port``."""

    TYPE: ClassVar[str] = "ready"
    pid: int
    sip_port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration(Event):
    """A line's registration changed."""

    TYPE: ClassVar[str] = "registration"
    line: str
    state: RegistrationState
    code: int
    reason: str
    expires: int


@dataclass(frozen=True, slots=True, kw_only=True)
class IncomingCall(Event):
    """A call arrived from an allowed source; ``call_id`` is chosen by the worker."""

    TYPE: ClassVar[str] = "incoming_call"
    call_id: str
    line: str | None
    from_number: str
    from_uri: str
    to_number: str
    sip_call_id: str
    headers: dict[str, str]
    source_address: str
    #: The user part of the INVITE's Request-URI: the line's extension, or the
    #: name a redirect (:class:`Redirect`) gave the call.
    target_user: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallState(Event):
    """A call changed state; ``end_reason`` is set when ``state`` is ``ended``."""

    TYPE: ClassVar[str] = "call_state"
    call_id: str
    state: CallStateName
    sip_code: int
    reason: str
    end_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaActive(Event):
    """The call's audio is flowing (RTP session up); ``codec`` is the one
    negotiated, as ``name/clock rate`` (``PCMA/8000``), empty if unknown."""

    TYPE: ClassVar[str] = "media_active"
    call_id: str
    codec: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Dtmf(Event):
    """A DTMF digit was received on a call."""

    TYPE: ClassVar[str] = "dtmf"
    call_id: str
    digit: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferStatus(Event):
    """Progress of a blind transfer (``transfer_blind``) of ``call_id``.

    ``code``/``reason`` are first the REFER's acceptance (pjsua reports its 202
    as ``100 Accepted``), then the status line of each NOTIFY's sipfrag (100,
    180, 200, 486...); ``final`` marks the last report. ``target`` is the REFER's
    target URI (``Refer-To``).
    """

    TYPE: ClassVar[str] = "transfer_status"
    call_id: str
    code: int
    reason: str
    final: bool
    target: str = ""

    @property
    def target_user(self) -> str:
        """The user part of ``target``: the extension or number transferred to."""
        rest = self.target.split(":", 1)[-1]
        return rest.split("@", 1)[0].split(";", 1)[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingFinished(Event):
    """A recording is complete and is under its final ``path``."""

    TYPE: ClassVar[str] = "recording_finished"
    call_id: str
    path: str
    duration_seconds: float
    bytes: int


COMMANDS: dict[str, type[Command]] = {
    cls.TYPE: cls
    for cls in (
        Configure,
        Register,
        Unregister,
        Originate,
        Answer,
        Redirect,
        Reject,
        Hangup,
        Bridge,
        Unbridge,
        RecordStart,
        RecordStop,
        Hold,
        Resume,
        SendDtmf,
        TransferBlind,
        TransferAttended,
        Supervise,
        Shutdown,
    )
}
EVENTS: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        Ok,
        Error,
        Ready,
        Registration,
        IncomingCall,
        CallState,
        MediaActive,
        Dtmf,
        RecordingFinished,
        TransferStatus,
    )
}
