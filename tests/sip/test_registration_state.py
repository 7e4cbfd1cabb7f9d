"""The registration state machine of one line; pure, no worker, no PBX."""

from __future__ import annotations

import pytest
import structlog

from sip.exceptions import InvalidState
from sip.registration import LineRegistration, RegistrationState

S = RegistrationState


def _line() -> LineRegistration:
    return LineRegistration("2001", worker_id="t/agent-2001")


def test_a_line_starts_unregistered_and_registers_through_registering() -> None:
    line = _line()
    assert line.state is S.UNREGISTERED
    line.reported("registering", code=0, reason="")
    line.reported("registered", code=200, reason="OK")
    assert (line.state, line.code, line.reason) == (S.REGISTERED, 200, "OK")


def test_refresh_retry_and_unregister_are_allowed() -> None:
    line = _line()
    for state, code in [
        (S.REGISTERING, 0),
        (S.FAILED, 503),
        (S.REGISTERING, 0),
        (S.REGISTERED, 200),
        (S.REGISTERING, 0),
        (S.REGISTERED, 200),
        (S.REGISTERED, 200),
        (S.UNREGISTERED, 200),
    ]:
        line.reported(state, code=code, reason="")
        assert line.state is state


@pytest.mark.parametrize(
    ("before", "report"),
    [
        ((), "unregistered"),
        (("registering",), "registering"),
    ],
)
def test_a_wrong_transition_raises_and_changes_nothing(
    before: tuple[str, ...], report: str
) -> None:
    line = _line()
    for state in before:
        line.reported(state, code=0, reason="")
    was = line.state
    with pytest.raises(InvalidState, match="registration cannot go from"):
        line.reported(report, code=0, reason="late")
    assert line.state is was
    assert line.reason == ""


def test_an_unknown_state_is_refused() -> None:
    line = _line()
    with pytest.raises(ValueError, match="'gone'"):
        line.reported("gone", code=0, reason="")
    assert line.state is S.UNREGISTERED


@pytest.mark.parametrize("state", list(RegistrationState))
def test_a_worker_exit_unregisters_the_line_from_any_state(state: RegistrationState) -> None:
    line = _line()
    line.resync(state, code=200, reason="")
    line.lost("SIP worker exited")
    assert (line.state, line.code, line.reason) == (S.UNREGISTERED, 0, "SIP worker exited")


def test_each_transition_is_logged() -> None:
    line = _line()
    with structlog.testing.capture_logs() as logs:
        line.reported("registering", code=0, reason="")
        line.reported("failed", code=408, reason="Request Timeout")
    transitions = [
        (entry["old"], entry["new"], entry["code"])
        for entry in logs
        if entry["event"] == "registration.transition"
    ]
    assert transitions == [("unregistered", "registering", 0), ("registering", "failed", 408)]


def test_states_keep_the_wire_values_of_registration_changed() -> None:
    assert [s.value for s in RegistrationState] == [
        "unregistered",
        "registering",
        "registered",
        "failed",
    ]
    assert S.REGISTERED == "registered"
