"""The session state machine, alone: transitions, deferred requests, wrong ones."""

from __future__ import annotations

import pytest

from dialer import InvalidState, Phase, SessionState


def _running(persistent: bool = True) -> SessionState:
    state = SessionState("s", persistent=persistent)
    state.begin()
    if persistent:
        assert state.phase is Phase.CONNECTING_AGENT
        state.agent_connected()
    assert state.phase is Phase.READY
    return state


def test_unanswered_call_leads_to_the_gap_then_the_next_dial() -> None:
    state = _running()
    state.dial()
    assert state.call_ended(answered=False) is Phase.GAP
    state.dial()
    assert state.phase is Phase.DIALING


def test_answered_call_goes_through_talk_and_wrap_up() -> None:
    state = _running()
    state.dial()
    state.answered()
    assert state.phase is Phase.TALKING
    assert state.call_ended(answered=True) is Phase.WRAP_UP
    state.wrapped_up()
    assert state.phase is Phase.READY


def test_per_call_agent_leg_is_rung_after_the_answer() -> None:
    state = _running(persistent=False)
    state.dial()
    state.answered()
    assert state.phase is Phase.AGENT_CALLING
    state.agent_joined()
    assert state.phase is Phase.TALKING


def test_pause_during_a_call_applies_after_it() -> None:
    state = _running()
    state.dial()
    assert state.pause("agent") is False
    assert state.phase is Phase.DIALING
    assert state.call_ended(answered=False) is Phase.PAUSED
    state.resume()
    assert state.phase is Phase.CONNECTING_AGENT


def test_stop_while_ringing_hangs_up_first() -> None:
    state = _running()
    state.dial()
    assert state.stop("agent") is False
    assert state.phase is Phase.STOPPING
    assert state.call_ended(answered=False) is Phase.STOPPED
    assert state.done
    assert state.stored_state == "stopped"


def test_stop_lets_a_conversation_finish() -> None:
    state = _running()
    state.dial()
    state.answered()
    assert state.stop("agent") is False
    assert state.phase is Phase.TALKING
    assert state.call_ended(answered=True) is Phase.STOPPED


def test_wrong_transitions_raise() -> None:
    state = _running()
    with pytest.raises(InvalidState):
        state.answered()
    with pytest.raises(InvalidState):
        state.resume()
    state.stop("agent")
    with pytest.raises(InvalidState):
        state.dial()
    with pytest.raises(InvalidState):
        state.stop("again")


def test_nothing_due_waits_then_wakes() -> None:
    state = _running()
    state.waiting()
    assert state.stored_state == "running"
    state.wake()
    state.exhausted()
    assert state.stored_state == "finished"


def test_lost_call_pauses_or_stops_through_the_transition_table() -> None:
    state = _running(persistent=False)
    state.dial()
    state.answered()
    state.interrupt("worker_crashed")
    assert (state.phase, state.reason) == (Phase.PAUSED, "worker_crashed")

    stopping = _running()
    stopping.dial()
    stopping.stop("agent")
    stopping.interrupt("worker_crashed")
    assert stopping.phase is Phase.STOPPED


def test_interrupt_without_a_call_raises_and_changes_nothing() -> None:
    state = _running()
    with pytest.raises(InvalidState, match="no call to interrupt"):
        state.interrupt("worker_crashed")
    assert (state.phase, state.reason) == (Phase.READY, None)
    state.stop("agent")
    with pytest.raises(InvalidState):
        state.interrupt("worker_crashed")
    assert state.phase is Phase.STOPPED
