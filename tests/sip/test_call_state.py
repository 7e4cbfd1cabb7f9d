"""The click-to-call state machine, without I/O: transitions, outcomes, wrong calls."""

from __future__ import annotations

import pytest

from crm_store import CallEndReason
from sip.call_state import ClickToCall, Leg, Outcome, Phase, end_reason
from sip.exceptions import InvalidState


def _phase(call: ClickToCall) -> Phase:
    # Read through a call, so that mypy does not narrow ``call.phase`` for good
    # after the first assert (the methods change it).
    return call.phase


def _connected() -> ClickToCall:
    call = ClickToCall("c1")
    call.dial_agent()
    assert call.leg_ringing(Leg.AGENT)
    assert call.agent_answered()
    call.dial_customer()
    assert call.leg_ringing(Leg.CUSTOMER)
    assert call.customer_answered()
    return call


def test_happy_path_goes_through_every_phase() -> None:
    call = _connected()
    assert _phase(call) is Phase.CONNECTED
    assert not call.media_active(Leg.AGENT)
    assert call.media_active(Leg.CUSTOMER)
    call.bridged()
    assert _phase(call) is Phase.BRIDGED
    call.leg_ended(Leg.CUSTOMER, "remote_hangup", 200)
    assert _phase(call) is Phase.ENDING
    assert call.alive == {Leg.AGENT}
    call.leg_ended(Leg.AGENT, "local_hangup", 200)
    assert call.ended
    assert call.outcome == Outcome(CallEndReason.COMPLETED, 200, Leg.CUSTOMER)


def test_agent_hanging_up_after_answer_is_completed_too() -> None:
    call = _connected()
    call.bridged()
    call.leg_ended(Leg.AGENT, "remote_hangup", 200)
    assert call.outcome == Outcome(CallEndReason.COMPLETED, 200, Leg.AGENT)


def test_agent_timeout_is_no_answer_and_never_dials_the_customer() -> None:
    call = ClickToCall("c1")
    call.dial_agent()
    assert call.timed_out(Leg.AGENT)
    assert _phase(call) is Phase.ENDING
    # A 200 crossing our CANCEL is absorbed, not an error.
    assert not call.agent_answered()
    with pytest.raises(InvalidState, match="dial the customer"):
        call.dial_customer()
    call.leg_ended(Leg.AGENT, "cancelled", 487)
    assert call.ended
    assert call.outcome == Outcome(CallEndReason.NO_ANSWER, 0, Leg.AGENT)


def test_agent_rejecting_is_rejected() -> None:
    call = ClickToCall("c1")
    call.dial_agent()
    call.leg_ended(Leg.AGENT, "declined", 603)
    assert call.ended
    assert call.outcome == Outcome(CallEndReason.REJECTED, 603, Leg.AGENT)


def test_agent_giving_up_on_a_ringing_customer_is_cancelled() -> None:
    call = ClickToCall("c1")
    call.dial_agent()
    call.agent_answered()
    call.dial_customer()
    call.leg_ringing(Leg.CUSTOMER)
    call.leg_ended(Leg.AGENT, "remote_hangup", 200)
    assert _phase(call) is Phase.ENDING
    assert call.alive == {Leg.CUSTOMER}
    call.leg_ended(Leg.CUSTOMER, "cancelled", 487)
    assert call.outcome == Outcome(CallEndReason.CANCELLED, 200, Leg.AGENT)


@pytest.mark.parametrize(
    ("worker_reason", "code", "rang", "expected"),
    [
        ("busy", 486, True, CallEndReason.BUSY),
        ("busy", 600, False, CallEndReason.BUSY),
        ("declined", 603, True, CallEndReason.REJECTED),
        ("failed", 403, False, CallEndReason.REJECTED),
        ("no_answer", 480, True, CallEndReason.NO_ANSWER),
        ("no_answer", 480, False, CallEndReason.UNREACHABLE),
        ("timeout", 408, False, CallEndReason.NO_ANSWER),
        ("not_found", 404, False, CallEndReason.UNREACHABLE),
        ("unreachable", 503, False, CallEndReason.UNREACHABLE),
        ("failed", 500, True, CallEndReason.FAILED),
        (None, 0, False, CallEndReason.FAILED),
    ],
)
def test_worker_endings_map_to_store_reasons(
    worker_reason: str | None, code: int, rang: bool, expected: CallEndReason
) -> None:
    assert end_reason(worker_reason, code, rang=rang) is expected


def test_customer_outcome_uses_whether_it_rang() -> None:
    call = ClickToCall("c1")
    call.dial_agent()
    call.agent_answered()
    call.dial_customer()
    call.leg_ended(Leg.CUSTOMER, "no_answer", 480)  # at once, no 180: unreachable
    assert call.outcome == Outcome(CallEndReason.UNREACHABLE, 480, Leg.CUSTOMER)
    assert _phase(call) is Phase.ENDING
    call.leg_ended(Leg.AGENT, "local_hangup", 200)
    assert call.ended
    assert call.outcome.reason is CallEndReason.UNREACHABLE


def test_customer_ring_timeout_wins_over_the_cancel_that_follows() -> None:
    call = ClickToCall("c1")
    call.dial_agent()
    call.agent_answered()
    call.dial_customer()
    assert not call.timed_out(Leg.AGENT)  # a stale timer of the other leg
    assert call.timed_out(Leg.CUSTOMER)
    call.leg_ended(Leg.CUSTOMER, "cancelled", 487)
    call.leg_ended(Leg.AGENT, "local_hangup", 200)
    assert call.outcome == Outcome(CallEndReason.NO_ANSWER, 0, Leg.CUSTOMER)


def test_hangup_request_before_and_after_the_answer() -> None:
    ringing = ClickToCall("c1")
    ringing.dial_agent()
    assert ringing.hangup_requested()
    assert ringing.outcome == Outcome(CallEndReason.CANCELLED, 0, None)
    assert not ringing.hangup_requested()  # asked twice: nothing more to do

    talking = _connected()
    talking.bridged()
    assert talking.hangup_requested()
    assert talking.outcome == Outcome(CallEndReason.COMPLETED, 0, None)


def test_failed_originate_of_the_customer_ends_the_call_failed() -> None:
    call = ClickToCall("c1")
    call.dial_agent()
    call.agent_answered()
    call.dial_customer()
    call.leg_failed(Leg.CUSTOMER)
    assert _phase(call) is Phase.ENDING
    assert call.alive == {Leg.AGENT}
    call.leg_ended(Leg.AGENT, "local_hangup", 200)
    assert call.outcome == Outcome(CallEndReason.FAILED, 0, Leg.CUSTOMER)


def test_interrupted_ends_at_once_from_any_phase() -> None:
    call = _connected()
    call.interrupted()
    assert call.ended
    assert call.alive == set()
    assert call.outcome == Outcome(CallEndReason.INTERRUPTED, 0, None)
    call.leg_ended(Leg.AGENT, "remote_hangup", 200)  # late news changes nothing
    assert call.outcome.reason is CallEndReason.INTERRUPTED


def test_wrong_transitions_raise() -> None:
    call = ClickToCall("c1")
    with pytest.raises(InvalidState, match="take the agent's answer in phase CREATED"):
        call.agent_answered()
    with pytest.raises(InvalidState):
        call.bridged()
    call.dial_agent()
    with pytest.raises(InvalidState):
        call.dial_agent()
    with pytest.raises(InvalidState):
        call.customer_answered()


def test_ringing_is_news_once_and_only_while_calling() -> None:
    call = ClickToCall("c1")
    assert not call.leg_ringing(Leg.AGENT)  # not dialed yet
    call.dial_agent()
    assert call.leg_ringing(Leg.AGENT)
    assert not call.leg_ringing(Leg.AGENT)
    assert not call.leg_ringing(Leg.CUSTOMER)
