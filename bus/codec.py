"""Envelopes to JSON bytes and back.

The wire form is :meth:`Envelope.to_data <bus.events.Envelope.to_data>` as compact UTF-8
JSON: ``{"type", "v", "origin", "seq", "at", "data"}``. :func:`decode` rebuilds the typed
event dataclass named by ``type`` (from :data:`~bus.events.EVENT_TYPES`), converting each
field back to its declared type: UUIDs, datetimes, enums and tuples come back as such,
so a gateway fed from MQTT handles the same objects as one fed by the in-process bus.

Fields the decoder does not know are ignored (adding an optional field does not bump an
event's ``VERSION``, so an older reader must accept it); a missing field takes its
default, or is an error if it has none. A ``VERSION`` other than this build's is an
error: the reader cannot know what a retyped field means.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import types
import typing
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .events import EVENT_TYPES, Envelope, Event
from .exceptions import BusError
from .safejson import BadJson, check_text, loads

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "CodecError",
    "UnknownEventType",
    "decode",
    "decode_data",
    "encode",
    "json_default",
]

#: Larger envelopes are refused unread. The largest event this build writes is a
#: few kilobytes (a call's notes travel through the store, not the bus).
MAX_ENVELOPE_BYTES = 256 * 1024


class CodecError(BusError, ValueError):
    """The bytes are not an envelope this build can read (the message says why)."""


class UnknownEventType(CodecError):
    """The envelope's ``type`` is not in :data:`~bus.events.EVENT_TYPES`."""

    def __init__(self, type_name: str) -> None:
        super().__init__(f"unknown event type {type_name!r}")
        self.type_name = type_name


def json_default(value: object) -> Any:
    """``json.dumps(default=...)`` for the values events and command results carry."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode(envelope: Envelope) -> bytes:
    """The envelope as compact UTF-8 JSON.

    Raises :class:`CodecError` if a field cannot be written as JSON (NaN or infinity
    included: JSON has no spelling for them and other readers would reject the message)
    or as UTF-8 (a string holding a lone surrogate).
    """
    try:
        text = json.dumps(
            envelope.to_data(),
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=json_default,
        )
        # Inside the try: UnicodeEncodeError is a ValueError, and a lone surrogate
        # in any string field would otherwise escape the caller's CodecError handler.
        return text.encode()
    except (TypeError, ValueError) as exc:
        raise CodecError(f"{envelope.type} seq {envelope.seq}: {exc}") from exc


def decode(payload: bytes | bytearray | str) -> Envelope:
    """Rebuild the :class:`Envelope` and its typed event from :func:`encode`'s output.

    Raises :class:`UnknownEventType` for a type this build does not define and
    :class:`CodecError` for anything else that does not fit, including what
    :func:`bus.safejson.loads` refuses (more than :data:`MAX_ENVELOPE_BYTES`, too
    deep, numbers out of range, invalid Unicode): never ``RecursionError`` or
    ``OverflowError``.
    """
    try:
        data = loads(payload, max_bytes=MAX_ENVELOPE_BYTES)
    except BadJson as exc:
        raise CodecError(f"not JSON: {exc}") from None
    return decode_data(data)


def decode_data(data: object) -> Envelope:
    """:func:`decode` for data already parsed from JSON."""
    if not isinstance(data, dict):
        raise CodecError("an envelope must be a JSON object")
    type_name = _required(data, "type", str, "envelope")
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise UnknownEventType(type_name)
    version = _required(data, "v", int, type_name)
    if version != cls.VERSION:
        raise CodecError(
            f"{type_name}: version {version} is not supported (this build reads {cls.VERSION})"
        )
    origin = _required(data, "origin", str, type_name)
    seq = _required(data, "seq", int, type_name)
    at = _convert(_required(data, "at", str, type_name), datetime, f"{type_name}.at")
    fields = data.get("data")
    if not isinstance(fields, dict):
        raise CodecError(f"{type_name}: 'data' must be a JSON object")
    return Envelope(origin=origin, seq=seq, at=at, event=_build(cls, fields))


def _required(data: Mapping[str, object], key: str, kind: type[Any], where: str) -> Any:
    value = data.get(key)
    # bool is an int subclass; a JSON true is never a sequence number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CodecError(f"{where}: {key!r} must be a {kind.__name__}")
    return value


_FIELD_TYPES: dict[type[Event], tuple[tuple[str, Any, bool], ...]] = {}


def _field_types(cls: type[Event]) -> tuple[tuple[str, Any, bool], ...]:
    """``(name, resolved type, required)`` for each field of ``cls``.

    The event modules use ``from __future__ import annotations``, so the annotations
    are strings; ``get_type_hints`` evaluates them in the defining module.
    """
    cached = _FIELD_TYPES.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    _FIELD_TYPES[cls] = result = tuple(
        (
            f.name,
            hints[f.name],
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
    )
    return result


def _build(cls: type[Event], data: Mapping[str, object]) -> Event:
    kwargs: dict[str, Any] = {}
    for name, hint, required in _field_types(cls):
        if name not in data:
            if required:
                raise CodecError(f"{cls.TYPE}: field {name!r} is missing")
            continue
        kwargs[name] = _convert(data[name], hint, f"{cls.TYPE}.{name}")
    return cls(**kwargs)


def _convert(value: object, hint: Any, where: str) -> Any:
    """``value`` (from JSON) as an instance of ``hint``, or :class:`CodecError`."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            raise CodecError(f"{where}: must not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except CodecError as exc:
                errors.append(str(exc))
        raise CodecError("; ".join(errors))
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list):
            raise CodecError(f"{where}: must be a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise CodecError(f"{where}: must have {len(args)} items")
        return tuple(
            _convert(v, a, f"{where}[{i}]")
            for i, (v, a) in enumerate(zip(args, value, strict=True))
        )
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise CodecError(f"{where}: must be a list")
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_type, item = typing.get_args(hint)
        if key_type is not str or not isinstance(value, dict):
            raise CodecError(f"{where}: must be an object")
        return {k: _convert(v, item, f"{where}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise CodecError(f"{where}: must be true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise CodecError(f"{where}: must be an integer")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            # decode_data may be given what another parser read: a huge int
            # overflows float() and an infinite float cannot be written again.
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if math.isfinite(number):
                return number
            raise CodecError(f"{where}: number out of range")
        raise CodecError(f"{where}: must be a number")
    if hint is str:
        if isinstance(value, str):
            try:
                return check_text(value, where=where)
            except BadJson as exc:
                raise CodecError(str(exc)) from None
        raise CodecError(f"{where}: must be a string")
    if hint is uuid.UUID:
        if isinstance(value, str):
            try:
                return uuid.UUID(value)
            except ValueError:
                pass
        raise CodecError(f"{where}: must be a UUID string")
    if hint is datetime:
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                pass
            else:
                # A naive time would compare wrongly with the aware ones everywhere else.
                if parsed.tzinfo is not None:
                    return parsed
        raise CodecError(f"{where}: must be an ISO 8601 time with a UTC offset")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise CodecError(f"{where}: {value!r} is not a {hint.__name__}") from None
    raise CodecError(f"{where}: the codec cannot read fields of type {hint!r}")
