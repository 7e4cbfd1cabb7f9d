"""The projection: the live state a snapshot shows, kept from the bus.

:class:`Projection` folds envelopes into the active calls (from ``call.*``
events) and the agents' states (from ``agent.state``). It is plain data with no
I/O, applied by the gateway's fan-out on the loop, one envelope at a time, in
bus order. Ended calls are forgotten from the snapshot but remembered (bounded)
with their agent, so that a late ``recording.ready`` reaches the right agent and
notes or dispositions after the hang-up pass the rights check. A call whose
``call.ended`` the projection missed is ended, with reason ``lost``, by the daemon's
reconciliation (``switchboard.reconcile``), which reads :meth:`Projection.active_calls_of`.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import structlog

from bus import (
    AgentStateChanged,
    CallAnswered,
    CallBridged,
    CallCreated,
    CallDialing,
    CallEnded,
    CallRinging,
    Envelope,
)

__all__ = ["ActiveCall", "AgentState", "Projection"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ActiveCall:
    """A call that has not ended, as the snapshot shows it."""

    call_id: uuid.UUID
    origin: str
    direction: str
    from_number: str
    to_number: str
    line: str
    agent: str | None
    state: str  # created | dialing | ringing | answered | bridged
    leg: str | None
    recording: bool
    created_at: datetime
    updated_at: datetime

    def to_data(self) -> dict[str, Any]:
        return {
            "call_id": str(self.call_id),
            "origin": self.origin,
            "direction": self.direction,
            "from_number": self.from_number,
            "to_number": self.to_number,
            "line": self.line,
            "agent": self.agent,
            "state": self.state,
            "leg": self.leg,
            "recording": self.recording,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class AgentState:
    """An agent's last published state."""

    agent: str
    user: str | None
    state: str
    reason: str | None
    since: datetime

    def to_data(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "user": self.user,
            "state": self.state,
            "reason": self.reason,
            "since": self.since.isoformat(),
        }


@dataclass(slots=True)
class Projection:
    """Active calls and agent states, folded from envelopes.

    ``ended_memory`` bounds how many ended calls are remembered (with their agent).
    """

    ended_memory: int = 10000
    calls: dict[uuid.UUID, ActiveCall] = field(default_factory=dict)
    agents: dict[str, AgentState] = field(default_factory=dict)
    _ended: OrderedDict[uuid.UUID, str | None] = field(default_factory=OrderedDict)

    # --- CallDirectory ------------------------------------------------------

    def knows_call(self, call_id: uuid.UUID) -> bool:
        return call_id in self.calls or call_id in self._ended

    def call_agent(self, call_id: uuid.UUID) -> str | None:
        call = self.calls.get(call_id)
        if call is not None:
            return call.agent
        return self._ended.get(call_id)

    # --- folding ------------------------------------------------------------

    def apply(self, envelope: Envelope) -> None:
        """Fold one envelope in; events of other types are ignored."""
        event, at = envelope.event, envelope.at
        match event:
            case CallCreated():
                self.calls[event.call_id] = ActiveCall(
                    call_id=event.call_id,
                    origin=envelope.origin,
                    direction=event.direction,
                    from_number=event.from_number,
                    to_number=event.to_number,
                    line=event.line,
                    agent=event.agent,
                    state="created",
                    leg=None,
                    recording=False,
                    created_at=at,
                    updated_at=at,
                )
            case CallDialing() | CallRinging() | CallAnswered():
                self._update(
                    event.call_id, event.agent, at, state=_STATES[type(event)], leg=event.leg
                )
            case CallBridged():
                self._update(
                    event.call_id, event.agent, at, state="bridged", recording=event.recording
                )
            case CallEnded():
                call = self.calls.pop(event.call_id, None)
                agent = event.agent or (call.agent if call is not None else None)
                self._ended[event.call_id] = agent
                while len(self._ended) > self.ended_memory:
                    self._ended.popitem(last=False)
            case AgentStateChanged():
                self.agents[event.agent] = AgentState(
                    agent=event.agent,
                    user=event.user,
                    state=event.state,
                    reason=event.reason,
                    since=at,
                )
            case _:
                pass

    def _update(self, call_id: uuid.UUID, agent: str | None, at: datetime, **changes: Any) -> None:
        call = self.calls.get(call_id)
        if call is None:
            # The gateway started mid-call, or call.created was dropped: the
            # snapshot cannot show a call it never saw created.
            log.debug("projection.unknown_call", call_id=str(call_id))
            return
        if agent is not None:
            changes["agent"] = agent
        self.calls[call_id] = replace(call, updated_at=at, **changes)

    # --- reading ------------------------------------------------------------

    def active_calls_of(self, origin: str) -> dict[uuid.UUID, str | None]:
        """The active calls published by ``origin`` (a site), with their agent: what
        that site's reconciliation compares with the calls it really holds."""
        return {c.call_id: c.agent for c in self.calls.values() if c.origin == origin}

    def visible_calls(self, agents: frozenset[str] | None) -> list[dict[str, Any]]:
        """Active calls, oldest first; ``agents=None`` means all of them."""
        return [
            c.to_data()
            for c in sorted(self.calls.values(), key=lambda c: c.created_at)
            if agents is None or (c.agent is not None and c.agent in agents)
        ]

    def visible_agents(self, agents: frozenset[str] | None) -> list[dict[str, Any]]:
        """Agent states by name; ``agents=None`` means all of them."""
        return [
            self.agents[name].to_data()
            for name in sorted(self.agents)
            if agents is None or name in agents
        ]


_STATES: dict[type, str] = {
    CallDialing: "dialing",
    CallRinging: "ringing",
    CallAnswered: "answered",
}
