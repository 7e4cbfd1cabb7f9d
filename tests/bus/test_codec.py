"""Envelopes survive JSON: every event type comes back as the same typed object."""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from bus import EVENT_TYPES, CallEnded, Envelope, Event, WorkerCrashed
from bus.codec import CodecError, UnknownEventType, decode, decode_data, encode

AT = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def _sample_value(hint: Any, n: int) -> Any:
    """A non-default value of type ``hint``; fails loudly for a type it does not know,
    so an event added with a new kind of field gets a codec decision, not a silent pass."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return _sample_value(next(a for a in typing.get_args(hint) if a is not type(None)), n)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_sample_value(args[0], n + i) for i in range(2))
        return tuple(_sample_value(a, n + i) for i, a in enumerate(args))
    if hint is bool:
        return True
    if hint is int:
        return 40 + n
    if hint is float:
        return 1.5 + n
    if hint is str:
        return f"value-{n} é/+#"
    if hint is uuid.UUID:
        return uuid.UUID(int=n + 1)
    if hint is datetime:
        return AT.replace(second=n % 60)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return next(iter(hint))
    if hint == dict[str, Any]:
        # A caller card: plain JSON values only, so it comes back equal.
        return {
            "kind": "lead",
            "id": str(uuid.UUID(int=n + 7)),
            "display_name": f"value-{n}",
            "phone": "+33612345678",
            "created": True,
            "tags": ["vip"],
        }
    raise AssertionError(f"no sample for field type {hint!r}: teach this test and the codec")


def _sample(cls: type[Event]) -> Event:
    hints = typing.get_type_hints(cls)
    return cls(
        **{f.name: _sample_value(hints[f.name], i) for i, f in enumerate(dataclasses.fields(cls))}
    )


@pytest.mark.parametrize("cls", list(EVENT_TYPES.values()), ids=list(EVENT_TYPES))
def test_every_event_type_round_trips_to_the_same_typed_envelope(cls: type[Event]) -> None:
    envelope = Envelope(origin="paris", seq=7, at=AT, event=_sample(cls))
    payload = encode(envelope)
    assert json.loads(payload) == envelope.to_data()
    assert decode(payload) == envelope


def test_optional_fields_round_trip_as_none_and_uuids_tuples_come_back_typed() -> None:
    crashed = WorkerCrashed(
        worker_id="w1",
        returncode=None,
        crashes=2,
        interrupted_calls=(uuid.uuid4(), uuid.uuid4()),
        restart_in_seconds=1,  # an int where a float is declared, as JSON may carry it
    )
    back = decode(encode(Envelope("paris", 1, AT, crashed))).event
    assert isinstance(back, WorkerCrashed)
    assert back.returncode is None
    assert isinstance(back.interrupted_calls, tuple)
    assert all(isinstance(c, uuid.UUID) for c in back.interrupted_calls)
    assert back.interrupted_calls == crashed.interrupted_calls
    assert isinstance(back.restart_in_seconds, float)


def _data(**changes: Any) -> dict[str, Any]:
    ended = CallEnded(
        call_id=uuid.UUID(int=1), reason="completed", sip_code=200, agent="alice", talk_seconds=3.0
    )
    data = Envelope("paris", 3, AT, ended).to_data()
    data.update(changes)
    return data


def test_unknown_fields_are_ignored_and_missing_optional_fields_take_their_default() -> None:
    data = _data()
    data["data"]["added_later"] = 1
    del data["data"]["leg"]
    event = decode(json.dumps(data)).event
    assert isinstance(event, CallEnded)
    assert event.leg is None


def test_unknown_type_is_a_clear_error() -> None:
    with pytest.raises(UnknownEventType, match=r"unknown event type 'call\.teleported'"):
        decode(json.dumps(_data(type="call.teleported")))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xff", "not JSON"),
        (b"[1]", "JSON object"),
        (json.dumps(_data(v=99)), "version 99 is not supported"),
        (json.dumps(_data(seq=True)), "'seq' must be a int"),
        (json.dumps(_data(at="2024-05-06T07:08:09")), "UTC offset"),
        (json.dumps(_data(data={"call_id": "nope"})), "call.ended.call_id: must be a UUID"),
        (
            json.dumps(_data(data={**_data()["data"], "sip_code": "200"})),
            "sip_code: must be an integer",
        ),
        (
            json.dumps(_data(data={k: v for k, v in _data()["data"].items() if k != "reason"})),
            "field 'reason' is missing",
        ),
    ],
)
def test_malformed_envelopes_raise_codec_error(payload: bytes | str, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(payload)


def test_nan_cannot_be_encoded() -> None:
    ended = CallEnded(
        call_id=uuid.UUID(int=1), reason="x", sip_code=0, agent=None, talk_seconds=float("nan")
    )
    with pytest.raises(CodecError, match=r"call\.ended seq 1"):
        encode(Envelope("paris", 1, AT, ended))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            json.dumps(_data()).replace('"talk_seconds": 3.0', '"talk_seconds": ' + "9" * 400),
            "range",
        ),
        ("[" * 60_000, "nested deeper"),
        (json.dumps(_data(data={**_data()["data"], "reason": "\ud800"})), "Unicode"),
        (json.dumps(_data()).replace('"talk_seconds": 3.0', '"talk_seconds": 1e999'), "range"),
    ],
)
def test_hostile_envelopes_raise_codec_error_never_recursion_or_overflow(
    payload: str, message: str
) -> None:
    with pytest.raises(CodecError, match=message):
        decode(payload)


def test_decode_data_refuses_a_huge_integer_in_a_float_field() -> None:
    data = _data(data={**_data()["data"], "talk_seconds": 10**400})
    with pytest.raises(CodecError, match="talk_seconds: number out of range"):
        decode_data(data)


def test_a_lone_surrogate_cannot_be_encoded() -> None:
    ended = CallEnded(
        call_id=uuid.UUID(int=1), reason="\udfff", sip_code=0, agent=None, talk_seconds=None
    )
    with pytest.raises(CodecError, match=r"call\.ended seq 1"):
        encode(Envelope("paris", 1, AT, ended))
