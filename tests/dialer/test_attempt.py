"""The attempt and agent-leg state machines, alone: outcomes, transitions, wrong ones.

No pjsua2, no server: each test tells an :class:`Attempt` what its legs did and
checks the outcome the phase gives.
"""

from __future__ import annotations

import uuid

import pytest
import structlog

from crm_store import CallEndReason, CallListItem, CallListItemState
from dialer import AgentLeg, AgentLegPhase, Attempt, AttemptPhase, InvalidState, Outcome


def _attempt() -> Attempt:
    item = CallListItem(
        id=uuid.uuid4(),
        list_id=uuid.uuid4(),
        position=0,
        number_e164="+33612345678",
        raw_number="0612345678",
        invalid_reason=None,
        client_id=None,
        lead_id=None,
        state=CallListItemState.DIALING,
        attempts=0,
        claimed_by=None,
        claimed_at=None,
        last_result=None,
        last_call_id=None,
        next_attempt_at=None,
        skip_reason=None,
    )
    return Attempt(item, "+33612345678", uuid.uuid4())


def _end(att: Attempt, reason: str | None = None, code: int = 0) -> None:
    assert att.customer_ended(loop_at=1.0, wall_at=2.0, reason=reason, sip_code=code)


def test_busy_customer_gives_busy_with_the_sip_code() -> None:
    att = _attempt()
    _end(att, "busy", 486)
    assert att.outcome() == Outcome(CallEndReason.BUSY, "busy", answered=False, interrupted=False)
    assert att.sip_code == 486
    assert att.settled


def test_refusal_after_ringing_is_no_answer_and_without_ringing_unreachable() -> None:
    rang = _attempt()
    assert rang.ringing() is True
    assert rang.ringing() is False  # announced once
    _end(rang, "no_answer", 480)
    assert rang.outcome().reason is CallEndReason.NO_ANSWER

    silent = _attempt()
    _end(silent, "no_answer", 480)
    assert silent.outcome().reason is CallEndReason.UNREACHABLE


def test_ring_timeout_is_no_answer_whatever_the_cancel_brings() -> None:
    att = _attempt()
    att.ringing()
    assert att.ring_timeout() is True
    assert att.phase is AttemptPhase.NO_ANSWER
    _end(att, "cancelled", 487)
    assert att.outcome() == Outcome(
        CallEndReason.NO_ANSWER, "no_answer", answered=False, interrupted=False
    )


def test_skipped_ringing_number_is_cancelled_and_skipped() -> None:
    att = _attempt()
    att.skip()
    att.cancel()  # the hang-up that follows does not change the classification
    assert att.phase is AttemptPhase.SKIPPING
    _end(att, "cancelled", 487)
    outcome = att.outcome()
    assert (outcome.reason, outcome.result) == (CallEndReason.CANCELLED, "skipped")


def test_skip_after_the_ring_timeout_keeps_no_answer_but_counts_as_skipped() -> None:
    att = _attempt()
    att.ring_timeout()
    att.skip()
    assert att.phase is AttemptPhase.NO_ANSWER_SKIPPED
    _end(att)
    outcome = att.outcome()
    assert (outcome.reason, outcome.result) == (CallEndReason.NO_ANSWER, "skipped")


def test_stop_while_ringing_is_cancelled() -> None:
    att = _attempt()
    att.cancel()
    assert att.phase is AttemptPhase.CANCELLING
    _end(att, "cancelled", 487)
    assert att.outcome().reason is CallEndReason.CANCELLED
    assert att.outcome().result == "cancelled"


def test_answer_crossing_our_cancel_does_not_count() -> None:
    att = _attempt()
    att.cancel()
    assert att.answer(10.0) is False
    assert not att.answered
    assert att.phase is AttemptPhase.CANCELLING


def test_answered_call_is_completed_whoever_ends_it() -> None:
    att = _attempt()
    assert att.answer(10.0) is True
    assert att.answer(11.0) is False  # repeated
    att.bridge()
    att.skip()  # skipping a conversation hangs it up; it still counts
    assert att.bridged
    _end(att, "remote_hangup", 200)
    assert att.outcome() == Outcome(
        CallEndReason.COMPLETED, "completed", answered=True, interrupted=False
    )
    assert att.bridged


def test_no_agent_for_an_answered_customer_is_abandoned() -> None:
    att = _attempt()
    att.answer(10.0)
    att.abandon()
    assert att.phase is AttemptPhase.ABANDONING
    _end(att)
    outcome = att.outcome()
    assert (outcome.reason, outcome.result) == (CallEndReason.COMPLETED, "abandoned")


def test_customer_hanging_up_while_the_agent_rings_is_abandoned() -> None:
    att = _attempt()
    att.answer(10.0)
    att.agent = AgentLeg("a-1")
    _end(att, "remote_hangup", 200)
    assert not att.settled  # the agent's phone still rings
    att.abandon()
    att.agent.end("hung up")
    assert att.settled
    assert att.outcome().result == "abandoned"


def test_worker_death_interrupts_an_unanswered_call_and_ends_the_agent_leg() -> None:
    att = _attempt()
    att.ringing()
    att.ring_timeout()
    att.interrupt(loop_at=5.0, wall_at=6.0)
    att.interrupt(loop_at=7.0, wall_at=8.0)  # the other leg's exit: nothing new
    assert (att.end_loop, att.end_wall) == (5.0, 6.0)
    assert att.outcome() == Outcome(
        CallEndReason.INTERRUPTED, "interrupted", answered=False, interrupted=True
    )

    answered = _attempt()
    answered.answer(1.0)
    answered.agent = AgentLeg("a-2")
    answered.interrupt(loop_at=5.0, wall_at=6.0)
    assert answered.settled
    assert answered.agent.phase is AgentLegPhase.ENDED
    outcome = answered.outcome()
    assert (outcome.reason, outcome.interrupted) == (CallEndReason.COMPLETED, True)


def test_wrong_attempt_transitions_raise_and_change_nothing() -> None:
    att = _attempt()
    with pytest.raises(InvalidState, match="no outcome yet"):
        att.outcome()
    with pytest.raises(InvalidState, match="cannot bridge"):
        att.bridge()
    with pytest.raises(InvalidState, match="cannot abandon"):
        att.abandon()
    assert att.phase is AttemptPhase.DIALING
    _end(att, "busy", 486)
    assert att.customer_ended(loop_at=9.0, wall_at=9.0) is False  # already over
    with pytest.raises(InvalidState, match="nothing to skip"):
        att.skip()
    assert att.ring_timeout() is False
    assert att.phase is AttemptPhase.ENDED
    assert att.outcome().reason is CallEndReason.BUSY


def test_each_attempt_transition_is_logged() -> None:
    att = _attempt()
    with structlog.testing.capture_logs() as logs:
        att.ringing()
        att.answer(1.0)
        att.bridge()
        _end(att)
    moves = [(e["old"], e["new"]) for e in logs if e["event"] == "dialer.attempt.transition"]
    assert moves == [
        ("dialing", "ringing"),
        ("ringing", "answered"),
        ("answered", "talking"),
        ("talking", "ended"),
    ]
    assert all(e["call_id"] == str(att.call_id) for e in logs)


def test_agent_leg_connects_with_answer_and_media_in_either_order() -> None:
    leg = AgentLeg("a")
    leg.answered()
    assert (leg.up, leg.has_media) == (True, False)
    leg.media()
    leg.media()  # a re-INVITE: no transition
    assert leg.connected

    early = AgentLeg("b")
    early.media()
    assert early.phase is AgentLegPhase.EARLY_MEDIA
    assert (early.up, early.has_media) == (False, True)
    early.answered()
    assert early.connected


def test_agent_leg_wrong_transitions_raise_and_are_logged_otherwise() -> None:
    leg = AgentLeg("a")
    with structlog.testing.capture_logs() as logs:
        leg.end("no answer")
    assert [(e["old"], e["new"]) for e in logs] == [("calling", "ended")]
    with pytest.raises(InvalidState, match="agent leg is ended; cannot end"):
        leg.end("again")
    with pytest.raises(InvalidState, match="cannot answer"):
        leg.answered()
    assert (leg.ended, leg.up, leg.has_media) == (True, False, False)
