"""The inbound call state machine and its pure helpers, on their own: no pjsua2, no
server."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import structlog.testing

from crm_store import CallEndReason
from sip.exceptions import InvalidState
from sip.inbound import InboundCall, InboundPhase, Outcome
from sip.inbound.branches import Tombstones
from sip.inbound.waiting import WaitingCalls

P = InboundPhase


def _at(*path: InboundPhase) -> InboundCall:
    call = InboundCall("sip-1")
    for phase in path:
        call.to(phase)
    return call


def test_answered_call_goes_from_new_to_bridged_logging_each_step() -> None:
    with structlog.testing.capture_logs() as logs:
        call = _at(P.WAITING, P.OFFERING, P.CONNECTING, P.BRIDGED)
    assert call.phase is P.BRIDGED
    moves = [(e["old"], e["new"]) for e in logs if e["event"] == "inbound_call.transition"]
    assert moves == [
        ("new", "waiting"),
        ("waiting", "offering"),
        ("offering", "connecting"),
        ("connecting", "bridged"),
    ]


def test_unanswered_offer_waits_again_then_forwards_to_overflow() -> None:
    call = _at(P.WAITING, P.OFFERING, P.WAITING, P.FORWARDING, P.CONNECTING)
    assert call.phase is P.CONNECTING


@pytest.mark.parametrize(
    ("path", "wrong"),
    [
        ((), P.OFFERING),  # an agent is offered a call whose branch is not chosen
        ((), P.BRIDGED),
        ((P.WAITING,), P.CONNECTING),  # connected with nobody rung
        ((P.WAITING, P.FORWARDING), P.OFFERING),
        ((P.WAITING, P.OFFERING, P.CONNECTING), P.WAITING),
        ((P.WAITING, P.OFFERING, P.CONNECTING, P.BRIDGED), P.OFFERING),
        ((P.WAITING,), P.ENDED),  # ending goes through decide()
    ],
)
def test_wrong_transition_raises_and_changes_nothing(
    path: tuple[InboundPhase, ...], wrong: InboundPhase
) -> None:
    call = _at(*path)
    before = call.phase
    with pytest.raises(InvalidState, match="cannot go from"):
        call.to(wrong)
    assert call.phase is before
    assert call.outcome is None


def test_first_outcome_decides_and_the_call_ends_when_its_legs_are_gone() -> None:
    call = _at(P.WAITING, P.OFFERING)
    missed = Outcome(CallEndReason.NO_ANSWER, 486, "customer")
    assert call.decide(missed) is True
    assert call.phase is P.ENDING
    assert call.decide(Outcome(CallEndReason.CANCELLED, 0, "customer")) is False
    assert call.outcome == missed
    call.legs_gone()
    assert call.ended
    assert call.outcome == missed


def test_late_moves_after_the_decision_are_ignored_not_raised() -> None:
    # An agent's 200 crossing our CANCEL, a timer firing just after the end.
    call = _at(P.WAITING, P.OFFERING)
    call.decide(Outcome(CallEndReason.CANCELLED, 0, "customer"))
    assert call.to(P.CONNECTING) is False
    assert call.phase is P.ENDING
    call.legs_gone()
    assert call.to(P.WAITING) is False
    assert call.phase is P.ENDED


def test_legs_gone_before_a_decision_changes_nothing() -> None:
    call = _at(P.WAITING, P.OFFERING, P.CONNECTING, P.BRIDGED)
    call.legs_gone()
    assert call.phase is P.BRIDGED


def test_interrupted_call_ends_at_once_as_interrupted() -> None:
    call = _at(P.WAITING, P.OFFERING, P.CONNECTING)
    call.interrupted()
    assert call.ended
    assert call.outcome == Outcome(CallEndReason.INTERRUPTED, 0, None)


def test_interrupted_after_a_decision_keeps_the_decided_outcome() -> None:
    call = _at(P.WAITING)
    completed = Outcome(CallEndReason.COMPLETED, 0, None)
    call.decide(completed)
    call.interrupted()
    assert call.ended
    assert call.outcome == completed


@dataclass(eq=False)
class _Waiter:
    seq: int


def test_waiting_calls_are_served_oldest_first_and_join_once() -> None:
    waiting: WaitingCalls[_Waiter] = WaitingCalls()
    late, early = _Waiter(2), _Waiter(1)
    waiting.join(late)
    waiting.join(early)
    waiting.join(late)
    assert list(waiting) == [early, late]
    for call in waiting:  # leaving while iterating is allowed
        waiting.leave(call)
    waiting.leave(early)
    assert list(waiting) == []


def test_dispatch_asked_during_a_dispatch_runs_once_more() -> None:
    waiting: WaitingCalls[_Waiter] = WaitingCalls()
    assert waiting.begin() is True
    assert waiting.begin() is False  # re-entrant: deferred
    assert waiting.round_again() is True
    assert waiting.round_again() is False
    waiting.end()
    assert waiting.begin() is True


def test_branch_of_a_call_just_ended_is_late_for_a_while_only() -> None:
    ended = Tombstones(seconds=64.0, limit=2)
    ended.add("a", now=100.0)
    assert ended.recent("a", now=163.9)
    assert not ended.recent("a", now=164.0)
    assert not ended.recent("b", now=100.0)
    ended.add("b", now=101.0)
    ended.add("c", now=102.0)  # over the limit: the oldest is forgotten
    assert not ended.recent("a", now=102.0)
    assert ended.recent("b", now=102.0)
    assert ended.recent("c", now=102.0)


def test_caller_hanging_up_while_ringing_cancels_and_after_the_answer_completes() -> None:
    ringing = _at(P.WAITING, P.OFFERING)
    assert ringing.caller_left(transferred=False, sip_code=0) is True
    assert ringing.outcome == Outcome(CallEndReason.CANCELLED, 0, "customer")

    talking = _at(P.WAITING, P.OFFERING, P.CONNECTING)
    talking.caller_answered()
    talking.to(P.BRIDGED)
    assert talking.caller_left(transferred=False, sip_code=200) is True
    assert talking.outcome == Outcome(CallEndReason.COMPLETED, 200, "customer")


def test_caller_leaving_by_a_transfer_ends_transferred() -> None:
    call = _at(P.WAITING, P.OFFERING, P.CONNECTING)
    call.caller_answered()
    assert call.caller_left(transferred=True, sip_code=200) is True
    assert call.outcome is not None
    assert call.outcome.reason is CallEndReason.TRANSFERRED


def test_hangup_request_cancels_a_ringing_call_and_completes_an_answered_one() -> None:
    ringing = _at(P.WAITING)
    assert ringing.hangup_requested() is True
    assert ringing.outcome == Outcome(CallEndReason.CANCELLED, 0, None)
    assert ringing.hangup_requested() is False  # decided already: nothing to do

    answered = _at(P.WAITING, P.FORWARDING, P.CONNECTING)
    answered.caller_answered()
    assert answered.hangup_requested() is True
    assert answered.outcome == Outcome(CallEndReason.COMPLETED, 0, None)


def test_caller_cannot_be_answered_before_someone_answered_for_them() -> None:
    call = _at(P.WAITING, P.OFFERING)
    with pytest.raises(InvalidState, match="cannot answer the caller"):
        call.caller_answered()
    assert not call.answered
