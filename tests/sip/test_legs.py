"""The leg vocabulary: each worker event a service acts on becomes one typed leg event."""

from __future__ import annotations

import pytest

from crm_store import CallEndReason
from sip import protocol as p
from sip.client import WorkerExited
from sip.legs import (
    Answered,
    Digit,
    Ended,
    Failed,
    Gone,
    LegEvent,
    MediaUp,
    Recorded,
    RecordingLost,
    Ringing,
    Transfer,
    end_reason,
    translate,
)


def _state(state: p.CallStateName, *, code: int = 0, why: str | None = None) -> p.CallState:
    return p.CallState(call_id="leg-1", state=state, sip_code=code, reason="", end_reason=why)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (_state("ringing", code=180), Ringing("leg-1")),
        (_state("early", code=183), Ringing("leg-1")),
        (_state("answered", code=200), Answered("leg-1")),
        (_state("ended", code=486, why="busy"), Ended("leg-1", "busy", 486)),
        (p.MediaActive(call_id="leg-1", codec="PCMA"), MediaUp("leg-1")),
        (p.Dtmf(call_id="leg-1", digit="5"), Digit("leg-1", "5")),
        (
            p.TransferStatus(
                call_id="leg-1", code=200, reason="OK", final=True, target="sip:201@pbx;x=1"
            ),
            Transfer("leg-1", 200, "OK", True, "201"),
        ),
        (
            p.RecordingFinished(call_id="leg-1", path="/r/a.wav", duration_seconds=2.5, bytes=9),
            Recorded("leg-1", "/r/a.wav", 2.5),
        ),
        (
            p.Error(code="recording_failed", message="no space left on device", call_id="leg-1"),
            RecordingLost("leg-1", "no space left on device"),
        ),
        (
            p.Error(code="media", message="no port", call_id="leg-1"),
            Failed("leg-1", "media", "no port"),
        ),
        (WorkerExited(returncode=-9), Gone(-9)),
    ],
)
def test_worker_event_becomes_one_leg_event(event: p.Event, expected: LegEvent) -> None:
    assert translate(event) == expected


@pytest.mark.parametrize(
    "event",
    [
        _state("calling"),
        p.Error(code="bad_command", message="?", cmd_id="c1"),
        p.Registration(line="201", state="registered", code=200, reason="OK", expires=60),
    ],
)
def test_worker_event_meaning_nothing_to_a_leg_is_dropped(event: p.Event) -> None:
    assert translate(event) is None


def test_ended_by_transfer_says_so() -> None:
    assert Ended("leg-1", "transferred", 200).transferred
    assert not Ended("leg-1", "remote_hangup", 200).transferred


def test_unanswered_480_is_no_answer_after_ringing_and_unreachable_before() -> None:
    assert end_reason("no_answer", 480, rang=True) is CallEndReason.NO_ANSWER
    assert end_reason("no_answer", 480, rang=False) is CallEndReason.UNREACHABLE
    assert end_reason("busy", 486, rang=True) is CallEndReason.BUSY
    assert end_reason(None, 403, rang=False) is CallEndReason.REJECTED
