"""The worker wire protocol, without any process."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from sip import protocol as p
from sip.exceptions import ProtocolError, SipError


def _frame(body: object) -> bytes:
    payload = json.dumps(body).encode()
    return struct.pack(">I", len(payload)) + payload


def _payload(frame: bytes) -> bytes:
    return frame[p.HEADER_SIZE :]


def test_every_command_round_trips() -> None:
    settings = p.WorkerSettings(allowed_sources=("10.0.0.0/8", "192.0.2.7"), sip_port=5070)
    commands: list[p.Command] = [
        p.Configure(cmd_id="1", settings=settings),
        p.Register(cmd_id="2", line="l1", extension="2001", password="s3cret", expires=120),
        p.Unregister(cmd_id="3", line="l1"),
        p.Originate(
            cmd_id="4",
            call_id="c1",
            line="l1",
            to_uri="sip:100@pbx",
            caller_id="+331",
            headers={"X-Crm": "lead 7"},
        ),
        p.Originate(cmd_id="4b", call_id="c2", line=None, to_uri="sip:100@pbx"),
        p.Answer(cmd_id="5", call_id="c1"),
        p.Reject(cmd_id="6", call_id="c1", code=603),
        p.Redirect(cmd_id="6b", call_id="c1", target="sip:sb-move-1@192.0.2.20:5070"),
        p.Hangup(cmd_id="7", call_id="c1"),
        p.Bridge(cmd_id="8", call_a="c1", call_b="c2"),
        p.Unbridge(cmd_id="9", call_a="c1", call_b="c2"),
        p.RecordStart(cmd_id="10", call_id="c1", path="/tmp/x.wav"),
        p.RecordStop(cmd_id="11", call_id="c1"),
        p.Hold(cmd_id="12", call_id="c1"),
        p.Resume(cmd_id="13", call_id="c1"),
        p.SendDtmf(cmd_id="14", call_id="c1", digits="12#"),
        p.TransferBlind(cmd_id="15", call_id="c1", to_uri="sip:200@pbx"),
        p.TransferAttended(cmd_id="16", call_id="c1", consult_call_id="c2"),
        p.Supervise(cmd_id="17", call_id="c1", supervisor_call_id="c3", mode="whisper"),
        p.Shutdown(cmd_id="18"),
    ]
    assert {type(c) for c in commands} == set(p.COMMANDS.values())
    for command in commands:
        assert p.decode_command(_payload(p.encode(command))) == command


def test_every_event_round_trips() -> None:
    events: list[p.Event] = [
        p.Ok(cmd_id="1"),
        p.Error(cmd_id="2", code="too_many_calls", message="5th call", call_id="c5"),
        p.Error(code="recording_failed", message="disk full"),
        p.Ready(pid=42, sip_port=5070),
        p.Registration(line="l1", state="registered", code=200, reason="OK", expires=300),
        p.IncomingCall(
            call_id="c1",
            line=None,
            from_number="+331",
            from_uri="<sip:+331@pbx>",
            to_number="2001",
            sip_call_id="abc@pbx",
            headers={"X-Lead": "7"},
            source_address="192.0.2.7",
        ),
        p.CallState(call_id="c1", state="ended", sip_code=486, reason="Busy", end_reason="busy"),
        p.MediaActive(call_id="c1"),
        p.Dtmf(call_id="c1", digit="5"),
        p.RecordingFinished(call_id="c1", path="/r/c1.wav", duration_seconds=2.5, bytes=80044),
        p.TransferStatus(call_id="c1", code=200, reason="OK", final=True),
    ]
    assert {type(e) for e in events} == set(p.EVENTS.values())
    for event in events:
        assert p.decode_event(_payload(p.encode(event))) == event


def test_password_is_not_in_repr() -> None:
    command = p.Register(cmd_id="1", line="l", extension="2001", password="s3cret")
    assert "s3cret" not in repr(command)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"\xff\xfe", "not valid JSON"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"cmd_id": "1"}', "no string 'type'"),
        (b'{"type": "fly", "cmd_id": "1"}', "unknown message type 'fly'"),
        (b'{"type": "hangup"}', "missing field 'cmd_id'"),
        (b'{"type": "hangup", "cmd_id": "1", "call_id": 7}', "hangup.call_id: must be a string"),
        (b'{"type": "hangup", "cmd_id": "1", "call_id": "c", "x": 1}', "unknown field"),
        (b'{"type": "reject", "cmd_id": "1", "call_id": "c", "code": true}', "integer"),
        (
            b'{"type": "supervise", "cmd_id": "1", "call_id": "a", '
            b'"supervisor_call_id": "b", "mode": "shout"}',
            "must be one of",
        ),
        (
            b'{"type": "configure", "cmd_id": "1", "settings": {"allowed_sources": ["x"]}}',
            "does not appear to be an IPv4 or IPv6",
        ),
        (b'{"type": "configure", "cmd_id": "1", "settings": []}', "must be an object"),
    ],
)
def test_malformed_command_raises_protocol_error(payload: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        p.decode_command(payload)


def test_event_names_are_not_commands() -> None:
    with pytest.raises(ProtocolError, match="unknown message type 'ready'"):
        p.decode_command(_payload(p.encode(p.Ready(pid=1, sip_port=2))))


def test_protocol_error_is_a_sip_error() -> None:
    assert issubclass(ProtocolError, SipError)


def test_frame_decoder_splits_and_joins_frames() -> None:
    frames = _frame({"type": "ok", "cmd_id": "1"}) + _frame({"type": "ok", "cmd_id": "2"})
    decoder = p.FrameDecoder()
    got: list[bytes] = []
    for i in range(len(frames)):  # one byte at a time: worst case for buffering
        got += decoder.feed(frames[i : i + 1])
    assert [p.decode_event(g) for g in got] == [p.Ok(cmd_id="1"), p.Ok(cmd_id="2")]
    assert decoder.pending == 0


def test_oversized_frame_is_refused_before_buffering() -> None:
    decoder = p.FrameDecoder()
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.feed(struct.pack(">I", p.MAX_FRAME + 1) + b"{")


def test_short_header_is_refused() -> None:
    with pytest.raises(ProtocolError, match="4 bytes"):
        p.frame_length(b"\x00\x01")


def test_documented_examples_decode() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "sip-worker.md").read_text()
    examples = re.findall(r"```json\n(.*?)\n```", doc, flags=re.DOTALL)
    documented = set()
    for example in examples:
        body = json.loads(example)
        decode = p.decode_command if body["type"] in p.COMMANDS else p.decode_event
        if body["type"] in p.COMMANDS and "cmd_id" not in body:
            decode = p.decode_event  # an event sharing a command's name (dtmf)
        message = decode(example.encode())
        documented.add((message.TYPE, isinstance(message, p.Command)))
    expected = {(t, True) for t in p.COMMANDS} | {(t, False) for t in p.EVENTS}
    assert documented == expected
