"""Who may be offered an inbound call: the :class:`Presence` protocol and the
in-memory :class:`PresenceBook` the daemon may use as is."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, Protocol

import structlog

from config import Config

__all__ = ["AgentState", "Presence", "PresenceBook", "Strategy"]

log = structlog.get_logger(__name__)

Strategy = Literal["longest_idle", "in_order"]
AgentState = Literal["available", "paused", "offline"]


class Presence(Protocol):
    """Who may be offered a call; implemented by the daemon from the agents' states.

    The service calls :meth:`call_started` as it picks an agent (before ringing
    the phone) and :meth:`call_ended` once that agent is free again (the offer
    failed, or the call is over), so an agent is never offered two calls. All
    three are called on the event loop and must not block.
    """

    def offer_order(self) -> Sequence[str]:
        """Agent keys (``AgentConfig.key``) available and not on a call, best first."""
        ...

    def call_started(self, agent: str) -> None:
        """``agent`` is being offered (or carries) a call."""
        ...

    def call_ended(self, agent: str) -> None:
        """``agent`` is no longer offered (nor carrying) the call it was given."""
        ...


class PresenceBook:
    """An in-memory :class:`Presence`: agents' states, calls and idle times.

    ``agents`` are the agent keys in configuration order (``in_order`` offers in
    that order); ``longest_idle`` offers first the agent idle the longest, where
    idle means available and not on a call: the clock starts when the agent
    becomes available or ends a call. Agents start ``offline``. Listeners given
    to :meth:`add_listener` are called after every change (a state, a call
    started or ended): hand it :meth:`InboundService.poke`.
    """

    def __init__(
        self,
        agents: Iterable[str],
        *,
        strategy: Strategy = "longest_idle",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.strategy: Strategy = strategy
        self._clock = clock
        self._order: dict[str, int] = {}
        self._states: dict[str, AgentState] = {}
        self._reasons: dict[str, str | None] = {}
        self._idle_since: dict[str, float] = {}
        self._calls: dict[str, int] = {}
        self._listeners: list[Callable[[], None]] = []
        for agent in agents:
            self._know(agent)

    @classmethod
    def from_config(
        cls, config: Config, *, clock: Callable[[], float] = time.monotonic
    ) -> PresenceBook:
        """A book of the configured agents with ``inbound.strategy``."""
        return cls(
            [agent.key for agent in config.agents], strategy=config.inbound.strategy, clock=clock
        )

    def _know(self, agent: str) -> None:
        if agent not in self._order:
            self._order[agent] = len(self._order)
            self._states[agent] = "offline"
            self._reasons[agent] = None
            self._calls[agent] = 0

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after every change; returns a function removing it."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    def _set(self, agent: str, state: AgentState, reason: str | None = None) -> None:
        self._know(agent)
        old = self._states[agent]
        self._states[agent] = state
        self._reasons[agent] = reason
        if state == "available" and old != "available" and not self._calls[agent]:
            self._idle_since[agent] = self._clock()
        self._changed()

    def set_available(self, agent: str) -> None:
        """``agent`` takes calls (their idle time starts now, unless on a call)."""
        self._set(agent, "available")

    def set_paused(self, agent: str, reason: str | None = None) -> None:
        """``agent`` takes no calls for now (a call in progress goes on)."""
        self._set(agent, "paused", reason)

    def set_offline(self, agent: str) -> None:
        """``agent`` is logged out."""
        self._set(agent, "offline")

    def state(self, agent: str) -> str:
        """``available``, ``paused``, ``offline``, or ``busy`` while on a call."""
        self._know(agent)
        return "busy" if self._calls[agent] else self._states[agent]

    def reason(self, agent: str) -> str | None:
        """The reason given with the last :meth:`set_paused`, if paused."""
        return self._reasons.get(agent) if self._states.get(agent) == "paused" else None

    def idle_since(self, agent: str) -> float | None:
        """Clock time since which ``agent`` has been idle (available, no call)."""
        if self.state(agent) != "available":
            return None
        return self._idle_since.get(agent)

    def offer_order(self) -> list[str]:
        """Available agents not on a call, longest idle (or configured order) first."""
        free = [a for a, s in self._states.items() if s == "available" and not self._calls[a]]
        if self.strategy == "longest_idle":
            free.sort(key=lambda a: (self._idle_since.get(a, 0.0), self._order[a]))
        else:
            free.sort(key=self._order.__getitem__)
        return free

    def call_started(self, agent: str) -> None:
        self._know(agent)
        self._calls[agent] += 1
        self._changed()

    def call_ended(self, agent: str) -> None:
        self._know(agent)
        if self._calls[agent] == 0:
            return
        self._calls[agent] -= 1
        if not self._calls[agent]:
            self._idle_since[agent] = self._clock()
        self._changed()
