"""The message protocol between the daemon and one SIP worker process.

Framing: every message is one *frame* — a 4-byte big-endian unsigned length
followed by that many bytes of UTF-8 JSON (one object with a ``type`` key).
Length-prefixed frames were chosen over line-delimited JSON because the reader
knows the size before reading (so a frame larger than :data:`MAX_FRAME` is
refused before it is buffered) and because SIP header values copied into
events may contain anything; no escaping rule has to hold for framing to hold.

Commands travel daemon → worker on the worker's stdin, events worker → daemon
on its stdout. Every command carries a ``cmd_id`` chosen by the sender; the
worker answers each command exactly once, with :class:`Ok` or with an
:class:`Error` carrying the same ``cmd_id``. Other events arrive unsolicited.

Everything here is pure: no I/O. :func:`encode` turns a message into a frame,
:func:`decode_command` / :func:`decode_event` turn a frame's payload back into
a message, and :class:`FrameDecoder` splits a byte stream into payloads. Any
malformed input raises :class:`~sip.exceptions.ProtocolError`.

The full list of messages, with examples, is in ``docs/sip-worker.md``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import struct
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar

from sip.exceptions import ProtocolError

__all__ = [
    "COMMANDS",
    "EVENTS",
    "MAX_FRAME",
    "Answer",
    "Bridge",
    "CallState",
    "Command",
    "Configure",
    "Dtmf",
    "Error",
    "Event",
    "FrameDecoder",
    "Hangup",
    "Hold",
    "IncomingCall",
    "MediaActive",
    "Message",
    "Ok",
    "Originate",
    "Ready",
    "RecordStart",
    "RecordStop",
    "RecordingFinished",
    "Register",
    "Registration",
    "Reject",
    "Resume",
    "SendDtmf",
    "Shutdown",
    "Supervise",
    "TransferAttended",
    "TransferBlind",
    "TransferStatus",
    "Unbridge",
    "Unregister",
    "WorkerSettings",
    "decode_command",
    "decode_event",
    "encode",
    "frame_length",
]

#: Largest accepted frame payload, in bytes. Real messages are far smaller.
MAX_FRAME = 1 << 20
_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size

LogLevel: TypeAlias = Literal["debug", "info", "warning", "error"]
Transport: TypeAlias = Literal["udp", "tcp"]
RegistrationState: TypeAlias = Literal["registering", "registered", "failed", "unregistered"]
CallStateName: TypeAlias = Literal["calling", "ringing", "early", "answered", "ended"]
SuperviseMode: TypeAlias = Literal["listen", "whisper", "barge"]


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


# --------------------------------------------------------------------------- codec

M = TypeVar("M", bound=Message)
T = TypeVar("T")

COMMANDS: dict[str, type[Command]] = {
    cls.TYPE: cls
    for cls in (
        Configure,
        Register,
        Unregister,
        Originate,
        Answer,
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


def encode(message: Message) -> bytes:
    """Return ``message`` as one frame: length header plus JSON payload."""
    body = {"type": message.TYPE, **_to_json(message)}
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"{message.TYPE} message too large: {len(payload)} bytes")
    return _HEADER.pack(len(payload)) + payload


def frame_length(header: bytes) -> int:
    """Return the payload length announced by a 4-byte frame header."""
    if len(header) != HEADER_SIZE:
        raise ProtocolError(f"frame header must be {HEADER_SIZE} bytes, got {len(header)}")
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
    return int(length)


def decode_command(payload: bytes) -> Command:
    """Decode one frame payload travelling daemon → worker."""
    return _decode(payload, COMMANDS)


def decode_event(payload: bytes) -> Event:
    """Decode one frame payload travelling worker → daemon."""
    return _decode(payload, EVENTS)


class FrameDecoder:
    """Split a byte stream into frame payloads (sans I/O).

    ``feed()`` returns the payloads completed by the new bytes. A bad header
    raises :class:`ProtocolError`; the stream cannot be resynchronised after
    that, so the caller must drop the connection.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        payloads: list[bytes] = []
        while len(self._buffer) >= HEADER_SIZE:
            length = frame_length(bytes(self._buffer[:HEADER_SIZE]))
            end = HEADER_SIZE + length
            if len(self._buffer) < end:
                break
            payloads.append(bytes(self._buffer[HEADER_SIZE:end]))
            del self._buffer[:end]
        return payloads

    @property
    def pending(self) -> int:
        """Bytes buffered towards an incomplete frame."""
        return len(self._buffer)


def _to_json(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            value = _to_json(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _decode(payload: bytes, registry: dict[str, type[M]]) -> M:
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError("frame must hold a JSON object")
    kind = body.pop("type", None)
    if not isinstance(kind, str):
        raise ProtocolError("message has no string 'type'")
    cls = registry.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    return _build(cls, body, kind)


def _build(cls: type[T], body: dict[str, Any], where: str) -> T:
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    extra = body.keys() - known.keys()
    if extra:
        raise ProtocolError(f"{where}: unknown field(s) {sorted(extra)}")
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name not in body:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProtocolError(f"{where}: missing field {name!r}")
            continue
        kwargs[name] = _check(hints[name], body[name], f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{where}: {exc}") from None


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _check(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        for arg in args:
            try:
                return _check(arg, value, where)
            except ProtocolError:
                continue
        raise ProtocolError(f"{where}: unexpected value {value!r}")
    if origin is Literal:
        if value in args and isinstance(value, str):
            return value
        raise ProtocolError(f"{where}: must be one of {list(args)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: must be a list")
        return tuple(_check(args[0], item, where) for item in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: must be an object")
        return {_check(str, k, where): _check(args[1], v, where) for k, v in value.items()}
    if tp is type(None):
        if value is None:
            return None
        raise ProtocolError(f"{where}: must be null")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ProtocolError(f"{where}: must be a boolean")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ProtocolError(f"{where}: must be an integer")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ProtocolError(f"{where}: must be a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ProtocolError(f"{where}: must be a string")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: must be an object")
        return _build(tp, dict(value), where)
    raise ProtocolError(f"{where}: unsupported field type {tp!r}")  # pragma: no cover
