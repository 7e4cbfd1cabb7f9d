"""The agent presence model, without any server: transitions, busy, the book."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from bus.presence import AgentPresence, InvalidPresence, PresenceBook, PresenceState

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


class _Wall:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


def test_agent_starts_offline_and_logs_in_available_since_then() -> None:
    wall = _Wall()
    agent = AgentPresence("alice", now=wall)
    assert agent.state is PresenceState.OFFLINE
    assert agent.since == T0
    at = wall.tick()
    with capture_logs() as logs:
        assert agent.declare("available") is True
    assert agent.state is PresenceState.AVAILABLE
    assert agent.since == at
    assert logs == [
        {
            "event": "presence.transition",
            "log_level": "info",
            "agent": "alice",
            "old": "offline",
            "new": "available",
            "declared": "available",
            "reason": None,
        }
    ]


def test_pause_keeps_its_reason_and_a_new_reason_is_a_change() -> None:
    wall = _Wall()
    agent = AgentPresence("alice", declared=PresenceState.AVAILABLE, now=wall)
    assert agent.declare("paused", "lunch") is True
    assert (agent.state, agent.reason) == (PresenceState.PAUSED, "lunch")
    at = wall.tick()
    assert agent.declare("paused", "training") is True
    assert (agent.reason, agent.since) == ("training", at)
    assert agent.declare("paused", "training") is False
    assert agent.declare("available") is True
    assert agent.reason is None


def test_declaring_the_same_state_changes_nothing_and_logs_nothing() -> None:
    agent = AgentPresence("alice", declared=PresenceState.AVAILABLE, since=T0)
    with capture_logs() as logs:
        assert agent.declare(PresenceState.AVAILABLE) is False
    assert logs == []
    assert agent.since == T0


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (PresenceState.OFFLINE, "wrap_up"),
        (PresenceState.PAUSED, "wrap_up"),
        (PresenceState.AVAILABLE, "busy"),
        (PresenceState.OFFLINE, "busy"),
        (PresenceState.AVAILABLE, "on_holiday"),
    ],
)
def test_wrong_transition_raises_and_leaves_the_state(start: PresenceState, target: str) -> None:
    agent = AgentPresence("alice", declared=start, reason=None, since=T0)
    with pytest.raises(InvalidPresence):
        agent.declare(target)
    assert (agent.state, agent.declared, agent.since) == (start, start, T0)


def test_busy_cannot_be_restored_as_a_declared_state() -> None:
    with pytest.raises(InvalidPresence):
        AgentPresence("alice", declared=PresenceState.BUSY)


def test_wrap_up_from_available_then_back() -> None:
    agent = AgentPresence("alice", declared=PresenceState.AVAILABLE)
    assert agent.declare("wrap_up") is True
    assert agent.state is PresenceState.WRAP_UP
    assert agent.declare("available") is True


def test_calls_make_the_agent_busy_until_the_last_one_ends() -> None:
    wall = _Wall()
    agent = AgentPresence("alice", declared=PresenceState.PAUSED, reason="lunch", now=wall)
    started = wall.tick()
    agent.call_started()
    agent.call_started()
    assert (agent.state, agent.declared, agent.since) == (
        PresenceState.BUSY,
        PresenceState.PAUSED,
        started,
    )
    agent.call_ended()
    assert agent.state is PresenceState.BUSY
    ended = wall.tick()
    agent.call_ended()
    assert (agent.state, agent.reason, agent.since) == (PresenceState.PAUSED, "lunch", ended)
    with pytest.raises(InvalidPresence):
        agent.call_ended()
    assert agent.calls == 0


def test_declaring_while_busy_takes_effect_when_the_call_ends() -> None:
    agent = AgentPresence("alice", declared=PresenceState.AVAILABLE)
    agent.call_started()
    agent.declare("offline")
    assert agent.state is PresenceState.BUSY
    agent.call_ended()
    assert agent.state is PresenceState.OFFLINE


def test_book_offers_free_available_agents_longest_idle_first() -> None:
    now = [0.0]
    book = PresenceBook(["alice", "bob", "carol"], clock=lambda: now[0])
    assert book.offer_order() == []
    book.set_available("bob")
    now[0] = 1.0
    book.set_available("alice")
    book.set_available("carol")
    assert book.offer_order() == ["bob", "alice", "carol"]
    book.call_started("bob")
    assert book.state("bob") == "busy"
    assert book.offer_order() == ["alice", "carol"]
    now[0] = 2.0
    book.call_ended("bob")
    assert book.idle_since("bob") == 2.0
    assert book.offer_order() == ["alice", "carol", "bob"]
    book.set_paused("alice", "coffee")
    assert (book.state("alice"), book.reason("alice")) == ("paused", "coffee")
    assert book.idle_since("alice") is None
    assert book.offer_order() == ["carol", "bob"]


def test_book_in_order_strategy_and_listeners() -> None:
    book = PresenceBook(["alice", "bob"], strategy="in_order")
    told: list[str] = []
    remove = book.add_listener(lambda: told.append("x"))
    book.set_available("bob")
    book.set_available("alice")
    assert book.offer_order() == ["alice", "bob"]
    book.call_ended("alice")  # no call: nothing changes, nothing told
    assert told == ["x", "x"]
    remove()
    book.set_offline("bob")
    assert told == ["x", "x"]
    assert book.state("bob") == "offline"


def test_book_refuses_a_wrong_declaration_and_keeps_the_state() -> None:
    book = PresenceBook(["alice"])
    with pytest.raises(InvalidPresence):
        book.declare("alice", "wrap_up")
    assert book.state("alice") is PresenceState.OFFLINE
    assert book.status("alice").declared is PresenceState.OFFLINE


def test_book_restores_a_state_with_its_own_since() -> None:
    book = PresenceBook(["alice"])
    book.declare("alice", "paused", "meeting", since=T0)
    status = book.status("alice")
    assert (status.state, status.reason, status.since) == (PresenceState.PAUSED, "meeting", T0)


def test_book_restores_any_declared_state_but_not_busy_nor_over_a_call() -> None:
    book = PresenceBook(["alice", "bob"], clock=lambda: 5.0)
    book.restore("alice", "wrap_up", None, T0)
    assert (book.state("alice"), book.status("alice").since) == (PresenceState.WRAP_UP, T0)
    book.restore("bob", "available", None, T0)
    assert (book.offer_order(), book.idle_since("bob")) == (["bob"], 5.0)
    with pytest.raises(InvalidPresence):
        book.restore("alice", "busy", None, T0)
    book.call_started("bob")
    with pytest.raises(InvalidPresence):
        book.restore("bob", "offline", None, T0)
    assert book.state("bob") is PresenceState.BUSY
    assert book.state("alice") is PresenceState.WRAP_UP
