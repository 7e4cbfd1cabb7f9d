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
import json
import struct
import types
import typing
from typing import Any, Literal, TypeVar

from sip._messages import (
    COMMANDS,
    EVENTS,
    Answer,
    Bridge,
    CallState,
    CallStateName,
    Command,
    Configure,
    Dtmf,
    Error,
    Event,
    Hangup,
    Hold,
    IncomingCall,
    LogLevel,
    MediaActive,
    Message,
    Ok,
    Originate,
    Ready,
    RecordingFinished,
    RecordStart,
    RecordStop,
    Redirect,
    Register,
    Registration,
    RegistrationState,
    Reject,
    Resume,
    SendDtmf,
    Shutdown,
    Supervise,
    SuperviseMode,
    TransferAttended,
    TransferBlind,
    TransferStatus,
    Transport,
    Unbridge,
    Unregister,
    WorkerSettings,
)
from sip.exceptions import ProtocolError

__all__ = [
    "COMMANDS",
    "EVENTS",
    "MAX_FRAME",
    "Answer",
    "Bridge",
    "CallState",
    "CallStateName",
    "Command",
    "Configure",
    "Dtmf",
    "Error",
    "Event",
    "FrameDecoder",
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
    "decode_command",
    "decode_event",
    "encode",
    "frame_length",
]

#: Largest accepted frame payload, in bytes. Real messages are far smaller.
MAX_FRAME = 1 << 20
_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size

# --------------------------------------------------------------------------- codec

M = TypeVar("M", bound=Message)
T = TypeVar("T")


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
