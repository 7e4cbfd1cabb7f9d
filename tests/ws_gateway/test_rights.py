"""Rights, projection, replay and rate limit: pure logic, no sockets."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from bus import (
    AgentStateChanged,
    Bus,
    CallAnswered,
    CallCreated,
    CallEnded,
    RecordingReady,
    WorkerStarted,
)
from crm_store import Role
from ws_gateway import BadRequest, Forbidden, NotFound, Principal, Projection
from ws_gateway.auth import principal_from_user
from ws_gateway.protocol import RateLimiter
from ws_gateway.replay import ReplayBuffer, StreamedEvent
from ws_gateway.rights import audience, authorize, can_see

from .conftest import AGENTS


def principal(role: Role, *agents: str) -> Principal:
    return Principal(uuid.uuid4(), "u", "U", role, frozenset(agents))


ALICE = principal(Role.AGENT, "alice")
SUE = principal(Role.SUPERVISOR)
ADA = principal(Role.ADMIN)


def projection_with_call(agent: str | None) -> tuple[Projection, uuid.UUID]:
    bus, proj = Bus("t"), Projection()
    call_id = uuid.uuid4()
    proj.apply(bus.publish(CallCreated(call_id, "inbound", "+33", "2001", "2001", agent, "w")))
    return proj, call_id


def test_agent_sees_only_events_about_their_agents() -> None:
    assert can_see(ALICE, "alice")
    assert not can_see(ALICE, "bob")
    assert not can_see(ALICE, None)
    assert can_see(SUE, None)
    assert can_see(ADA, "bob")


def test_event_without_agent_gets_the_agent_of_its_call() -> None:
    proj, call_id = projection_with_call("alice")
    rec = RecordingReady(call_id=call_id, path="/r", duration_seconds=1.0)
    assert audience(rec, proj) == "alice"
    proj.apply(Bus("t").publish(CallEnded(call_id, "completed", 200, None, 1.0)))
    assert audience(rec, proj) == "alice"  # remembered after the end
    assert audience(WorkerStarted("w", 1, 0), proj) is None


def test_agent_may_command_own_call_only() -> None:
    proj, mine = projection_with_call("alice")
    assert authorize(ALICE, "call.hangup", {"call_id": str(mine)}, proj) == {"call_id": str(mine)}
    proj2, other = projection_with_call("bob")
    with pytest.raises(Forbidden):
        authorize(ALICE, "call.hangup", {"call_id": str(other)}, proj2)
    with pytest.raises(NotFound):
        authorize(ALICE, "call.hangup", {"call_id": str(uuid.uuid4())}, proj)
    assert authorize(SUE, "call.hangup", {"call_id": str(other)}, proj2)


def test_agent_scoped_commands_default_to_the_principals_agent() -> None:
    proj = Projection()
    assert authorize(ALICE, "dialer.pause", {}, proj) == {"agent": "alice"}
    with pytest.raises(Forbidden):
        authorize(ALICE, "dialer.pause", {"agent": "bob"}, proj)
    with pytest.raises(Forbidden):
        authorize(principal(Role.AGENT), "dialer.pause", {}, proj)
    with pytest.raises(BadRequest):
        authorize(SUE, "dialer.pause", {}, proj)
    assert authorize(SUE, "dialer.pause", {"agent": "bob"}, proj) == {"agent": "bob"}


def test_supervision_needs_a_supervisor_and_admin_commands_an_admin() -> None:
    proj, call_id = projection_with_call("bob")
    with pytest.raises(Forbidden):
        authorize(ALICE, "supervisor.barge", {"call_id": str(call_id)}, proj)
    assert authorize(SUE, "supervisor.barge", {"call_id": str(call_id)}, proj)
    with pytest.raises(Forbidden):
        authorize(SUE, "admin.users.list", {}, proj)
    assert authorize(ADA, "admin.users.list", {}, proj) == {}


def test_principal_is_bound_to_configured_agents_and_config_may_grant_supervision() -> None:
    from crm_store import User

    def user(name: str, role: Role) -> User:
        return User(uuid.uuid4(), name, name, role, None, True, datetime.now(UTC))

    assert principal_from_user(user("alice", Role.AGENT), AGENTS).agents == {"alice"}
    assert principal_from_user(user("zed", Role.AGENT), AGENTS).agents == frozenset()
    boss = AGENTS[0].model_copy(update={"user": "boss", "supervisor": True})
    assert principal_from_user(user("boss", Role.AGENT), [boss]).role is Role.SUPERVISOR


def test_projection_follows_a_call_and_agent_states() -> None:
    bus, proj = Bus("t"), Projection()
    call_id = uuid.uuid4()
    proj.apply(bus.publish(CallCreated(call_id, "inbound", "+33", "2001", "2001", None, "w")))
    proj.apply(bus.publish(CallAnswered(call_id=call_id, leg="agent", agent="alice")))
    (call,) = proj.visible_calls(frozenset({"alice"}))
    assert (call["state"], call["agent"], call["leg"]) == ("answered", "alice", "agent")
    proj.apply(bus.publish(AgentStateChanged("alice", "alice", "paused", "lunch")))
    assert proj.visible_agents(None)[0]["reason"] == "lunch"
    proj.apply(bus.publish(CallEnded(call_id, "completed", 200, None, 2.0)))
    assert proj.visible_calls(None) == []


def test_replay_buffer_gives_the_missed_events_or_none_when_gone() -> None:
    buf = ReplayBuffer(3)
    for seq in range(1, 6):
        buf.append(StreamedEvent(seq, None, str(seq)))
    assert [e.seq for e in buf.after(2) or []] == [3, 4, 5]
    assert buf.after(5) == []
    assert buf.after(1) is None
    assert buf.after(6) is None
    assert ReplayBuffer(0).after(0) == []


def test_rate_limiter_refuses_over_the_rate_and_flags_persistent_abuse() -> None:
    limiter = RateLimiter(2, now=0.0, abuse_limit=3)
    assert [limiter.allow(0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow(0.5)  # one token back after half a second
    for _ in range(3):
        limiter.allow(0.5)
    assert limiter.abusive(0.5)
    assert not limiter.abusive(20.0)  # refusals age out of the window
