"""What the feed learns from the broker: which envelopes are new, who owns what.

No I/O: :class:`Arrivals` decides which envelopes from the broker are new
(delivery is at least once, retained agent states repeat on every subscription);
:class:`Routes` learns from the events which site owns each call and each agent,
so that commands go where they can run.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from .events import AgentStateChanged, Envelope

__all__ = ["Arrivals", "Routes"]


@dataclass(slots=True)
class Arrivals:
    """Which envelopes from the broker to relay, and which events were missed.

    MQTT delivery is at least once, an agent state comes twice (its event and
    its retained copy) and the retained states come again on every
    subscription: an envelope is new unless its ``(origin, seq, at)`` was seen
    (``at`` tells a restarted daemon's ``seq`` 1 from the previous run's). A
    retained agent state older than what is known of that agent is stale.
    Among live events, a jump in one origin's ``seq`` is events this gateway
    missed (its own broker outage: its session is clean).
    """

    memory: int = 10000
    _seen: OrderedDict[tuple[str, int, datetime], None] = field(default_factory=OrderedDict)
    _last: OrderedDict[str, tuple[int, datetime]] = field(default_factory=OrderedDict)
    _states: OrderedDict[tuple[str, str], datetime] = field(default_factory=OrderedDict)

    def admit(self, envelope: Envelope, *, retained: bool) -> tuple[bool, int]:
        """``(relay it, events missed just before it)``."""
        origin, seq, at = envelope.origin, envelope.seq, envelope.at
        key = (origin, seq, at)
        if key in self._seen:
            return False, 0
        event = envelope.event
        if isinstance(event, AgentStateChanged):
            known = self._states.get((origin, event.agent))
            if known is not None and at < known:
                return False, 0
            _remember(self._states, (origin, event.agent), at, self.memory)
        _remember(self._seen, key, None, self.memory)
        if retained:
            return True, 0
        missed = 0
        last = self._last.get(origin)
        if last is None or at >= last[1]:
            if last is not None and seq > last[0] + 1:
                missed = seq - last[0] - 1
            _remember(self._last, origin, (seq, at), self.memory)
        return True, missed


K = TypeVar("K")
V = TypeVar("V")


def _remember(memory: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    """``memory[key] = value``, keeping at most ``limit`` of the most recent keys.

    Every map the feed fills from the broker is bounded this way: agent names,
    origins and call ids come from messages, and anyone who may publish under the
    prefix could otherwise grow them without end.
    """
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > limit:
        memory.popitem(last=False)


@dataclass(slots=True)
class Routes:
    """Which site (daemon) owns each call and each agent, learnt from events.

    A call belongs to the origin of its events; an agent to the origin of the
    last event naming it (its state, its calls). Ended calls are remembered,
    bounded by ``memory``: notes and dispositions come after the hang-up.
    """

    memory: int = 10000
    _calls: OrderedDict[uuid.UUID, str] = field(default_factory=OrderedDict)
    _agents: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def observe(self, envelope: Envelope) -> None:
        event = envelope.event
        call_id = getattr(event, "call_id", None)
        if isinstance(call_id, uuid.UUID):
            _remember(self._calls, call_id, envelope.origin, self.memory)
        agent = getattr(event, "agent", None)
        if isinstance(agent, str):
            _remember(self._agents, agent, envelope.origin, self.memory)

    def site_of_call(self, call_id: uuid.UUID) -> str | None:
        return self._calls.get(call_id)

    def site_of_agent(self, agent: str) -> str | None:
        return self._agents.get(agent)
