"""Agent presence: one state machine per agent, and the book inbound routing reads.

This module is pure: no I/O, no asyncio. It lives in :mod:`bus`, next to the
:class:`bus.AgentStateChanged` event it is published as, because ``sip``,
``dialer``, ``ws_gateway`` and ``switchboard`` may all depend on ``bus`` and on
nothing of each other. :class:`bus.agent_states.AgentStates` puts it on the
loop: it persists the declared states in the store and publishes them.

An agent *declares* one of ``available``, ``paused`` (with a reason),
``wrap_up`` or ``offline``; ``busy`` is never declared, it follows the agent's
calls: an agent with a call in progress is busy whatever they declared, and
goes back to the declared state when the last call ends. Transitions of the
declared state (``since`` is when the agent's state last changed)::

    from        may become
    offline     available, paused
    available   paused, wrap_up, offline
    paused      available, offline
    wrap_up     available, paused, offline

    any, no call ──(call started)──> busy ──(last call ended)──> the declared state

Declaring the state (and reason) one already has is allowed and changes
nothing; a paused agent may give a new reason. ``busy``, or ``wrap_up`` from anything but
``available``, raises :class:`InvalidPresence`.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import structlog

from .exceptions import BusError

if TYPE_CHECKING:
    from config import Config

__all__ = [
    "AgentPresence",
    "AgentStatus",
    "InvalidPresence",
    "PresenceBook",
    "PresenceState",
    "Strategy",
]

log = structlog.get_logger(__name__)

#: How :meth:`PresenceBook.offer_order` ranks the free agents.
Strategy = Literal["longest_idle", "in_order"]


class PresenceState(enum.StrEnum):
    """Where an agent stands; the value is the ``state`` of ``agent.state``."""

    OFFLINE = "offline"
    AVAILABLE = "available"
    PAUSED = "paused"
    #: On a call (never declared: it follows the calls).
    BUSY = "busy"
    #: Finishing the last call's paperwork; takes no calls.
    WRAP_UP = "wrap_up"


_DECLARED: dict[PresenceState, frozenset[PresenceState]] = {
    PresenceState.OFFLINE: frozenset(
        {PresenceState.OFFLINE, PresenceState.AVAILABLE, PresenceState.PAUSED}
    ),
    PresenceState.AVAILABLE: frozenset(
        {
            PresenceState.AVAILABLE,
            PresenceState.PAUSED,
            PresenceState.WRAP_UP,
            PresenceState.OFFLINE,
        }
    ),
    PresenceState.PAUSED: frozenset(
        {PresenceState.PAUSED, PresenceState.AVAILABLE, PresenceState.OFFLINE}
    ),
    PresenceState.WRAP_UP: frozenset(
        {
            PresenceState.WRAP_UP,
            PresenceState.AVAILABLE,
            PresenceState.PAUSED,
            PresenceState.OFFLINE,
        }
    ),
}


class InvalidPresence(BusError, ValueError):
    """A transition the presence model does not allow (the state is unchanged)."""


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """A snapshot of one agent's presence.

    ``state`` is what the agent is now (``busy`` while on a call); ``declared``
    what they chose (what survives a restart); ``reason`` is given only while
    paused; ``since`` is when ``state`` (or the pause reason) last changed.
    """

    agent: str
    state: PresenceState
    declared: PresenceState
    reason: str | None
    since: datetime
    calls: int


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _declarable(state: PresenceState | str) -> PresenceState:
    """``state`` as a state an agent may declare; :class:`InvalidPresence` for an
    unknown state or ``busy``."""
    try:
        declared = PresenceState(state)
    except ValueError:
        raise InvalidPresence(f"unknown agent state {state!r}") from None
    if declared is PresenceState.BUSY:
        raise InvalidPresence("busy follows the agent's calls; it cannot be declared")
    return declared


class AgentPresence:
    """The presence state machine of one agent; starts ``offline`` unless told.

    Every change is logged (``presence.transition``); a change the model does
    not allow raises :class:`InvalidPresence` and changes nothing.
    """

    def __init__(
        self,
        agent: str,
        *,
        declared: PresenceState = PresenceState.OFFLINE,
        reason: str | None = None,
        since: datetime | None = None,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        declared = _declarable(declared)
        self.agent = agent
        self._now = now
        self._declared: PresenceState = declared
        self._reason = reason if declared is PresenceState.PAUSED else None
        self._since = since if since is not None else now()
        self._calls = 0

    @property
    def state(self) -> PresenceState:
        """``busy`` while on a call, else the declared state."""
        return PresenceState.BUSY if self._calls else self._declared

    @property
    def declared(self) -> PresenceState:
        """The state the agent chose (``available``, ``paused``, ``wrap_up``, ``offline``)."""
        return self._declared

    @property
    def reason(self) -> str | None:
        """The pause reason, while the agent is declared paused."""
        return self._reason

    @property
    def since(self) -> datetime:
        """When :attr:`state` (or the pause reason) last changed."""
        return self._since

    @property
    def calls(self) -> int:
        """How many calls the agent carries (or is being offered) now."""
        return self._calls

    def status(self) -> AgentStatus:
        """A frozen snapshot of this agent's presence."""
        return AgentStatus(
            agent=self.agent,
            state=self.state,
            declared=self._declared,
            reason=self._reason,
            since=self._since,
            calls=self._calls,
        )

    def check(
        self, state: PresenceState | str, reason: str | None = None
    ) -> tuple[PresenceState, str | None] | None:
        """What :meth:`declare` would do, without doing it: the declared state and
        reason it would move to, or None if that is no change. Raises
        :class:`InvalidPresence` as :meth:`declare` does."""
        new = _declarable(state)
        if new not in _DECLARED[self._declared]:
            raise InvalidPresence(f"agent {self.agent!r}: {self._declared} cannot become {new}")
        new_reason = reason if new is PresenceState.PAUSED else None
        if (new, new_reason) == (self._declared, self._reason):
            return None
        return new, new_reason

    def declare(
        self, state: PresenceState | str, reason: str | None = None, *, at: datetime | None = None
    ) -> bool:
        """Move to the declared ``state`` (``reason`` is kept only for ``paused``).

        ``at`` is when it happened (default: now; a state restored from the
        store gives its own). Returns whether the declared state or reason changed. Raises
        :class:`InvalidPresence` for an unknown state, ``busy``, or a transition
        the table refuses.
        """
        target = self.check(state, reason)
        if target is None:
            return False
        new, new_reason = target
        old_state = self.state
        self._declared, self._reason = new, new_reason
        if self.state is not old_state or new is PresenceState.PAUSED:
            self._since = at if at is not None else self._now()
        log.info(
            "presence.transition",
            agent=self.agent,
            old=str(old_state),
            new=str(self.state),
            declared=str(new),
            reason=new_reason,
        )
        return True

    def call_started(self) -> None:
        """The agent is offered (or carries) one more call; they are busy."""
        self._calls += 1
        if self._calls == 1:
            self._since = self._now()
            # Debug: this happens on every call; the declared changes are info.
            log.debug("presence.transition", agent=self.agent, old=str(self._declared), new="busy")

    def call_ended(self) -> None:
        """One call of the agent is over; after the last, the declared state is back.

        Raises :class:`InvalidPresence` if the agent has no call.
        """
        if not self._calls:
            raise InvalidPresence(f"agent {self.agent!r} has no call to end")
        self._calls -= 1
        if not self._calls:
            self._since = self._now()
            log.debug("presence.transition", agent=self.agent, old="busy", new=str(self._declared))


class PresenceBook:
    """Every agent's :class:`AgentPresence`, and whom to offer a call first.

    It is the ``Presence`` inbound routing reads. ``agents`` are the agent keys
    in configuration order (``in_order`` offers in that order); ``longest_idle``
    offers first the agent idle the longest, where idle means available and not
    on a call: the clock starts when the agent becomes available or ends a call.
    Agents start ``offline``; an agent the book has not heard of is added,
    offline, on first mention. Listeners given to :meth:`add_listener` are called
    after every change (a state, a call started or ended): hand it
    ``InboundService.poke``. Everything runs on the caller's thread and never
    blocks.
    """

    def __init__(
        self,
        agents: Iterable[str],
        *,
        strategy: Strategy = "longest_idle",
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.strategy: Strategy = strategy
        self._clock = clock
        self._now = now
        self._order: dict[str, int] = {}
        self._agents: dict[str, AgentPresence] = {}
        self._idle_since: dict[str, float] = {}
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

    def _know(self, agent: str) -> AgentPresence:
        machine = self._agents.get(agent)
        if machine is None:
            self._order[agent] = len(self._order)
            machine = self._agents[agent] = AgentPresence(agent, now=self._now)
        return machine

    def agents(self) -> list[str]:
        """The agents the book knows, in configuration order."""
        return list(self._agents)

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

    def declare(
        self,
        agent: str,
        state: PresenceState | str,
        reason: str | None = None,
        *,
        since: datetime | None = None,
    ) -> bool:
        """Move ``agent`` to the declared ``state`` (see :meth:`AgentPresence.declare`).

        ``since`` overrides when the change happened (a state restored from the
        store). Listeners are told even of an unchanged state; returns whether
        anything changed. Raises :class:`InvalidPresence` as the machine does.
        """
        machine = self._know(agent)
        was_available = machine.declared is PresenceState.AVAILABLE
        changed = machine.declare(state, reason, at=since)
        if machine.declared is PresenceState.AVAILABLE and not was_available and not machine.calls:
            self._idle_since[agent] = self._clock()
        self._changed()
        return changed

    def check(
        self, agent: str, state: PresenceState | str, reason: str | None = None
    ) -> tuple[PresenceState, str | None] | None:
        """What :meth:`declare` would change for ``agent`` (see :meth:`AgentPresence.check`)."""
        return self._know(agent).check(state, reason)

    def restore(
        self, agent: str, state: PresenceState | str, reason: str | None, since: datetime
    ) -> None:
        """Give ``agent``, not on a call, the declared ``state`` kept from before a
        restart (any declared state, whatever the agent has now: this is no
        transition). Logged as one; listeners are told. Raises
        :class:`InvalidPresence` for ``busy`` or an unknown state, or if the agent
        is on a call; nothing changes then."""
        machine = self._know(agent)
        if machine.calls:
            raise InvalidPresence(f"agent {agent!r} is on a call; nothing to restore")
        declared = _declarable(state)
        old = machine.state
        self._agents[agent] = AgentPresence(
            agent, declared=declared, reason=reason, since=since, now=self._now
        )
        if declared is PresenceState.AVAILABLE:
            self._idle_since[agent] = self._clock()
        log.info(
            "presence.transition",
            agent=agent,
            old=str(old),
            new=str(declared),
            declared=str(declared),
            reason=self._agents[agent].reason,
        )
        self._changed()

    def set_available(self, agent: str) -> None:
        """``agent`` takes calls (their idle time starts now, unless on a call)."""
        self.declare(agent, PresenceState.AVAILABLE)

    def set_paused(self, agent: str, reason: str | None = None) -> None:
        """``agent`` takes no calls for now (a call in progress goes on)."""
        self.declare(agent, PresenceState.PAUSED, reason)

    def set_offline(self, agent: str) -> None:
        """``agent`` is logged out."""
        self.declare(agent, PresenceState.OFFLINE)

    def state(self, agent: str) -> PresenceState:
        """``available``, ``paused``, ``wrap_up``, ``offline``, or ``busy`` while on a call."""
        return self._know(agent).state

    def status(self, agent: str) -> AgentStatus:
        """A snapshot of ``agent``'s presence."""
        return self._know(agent).status()

    def reason(self, agent: str) -> str | None:
        """The reason given with the last :meth:`set_paused`, if paused."""
        machine = self._agents.get(agent)
        return machine.reason if machine is not None else None

    def idle_since(self, agent: str) -> float | None:
        """Clock time since which ``agent`` has been idle (available, no call)."""
        if self.state(agent) is not PresenceState.AVAILABLE:
            return None
        return self._idle_since.get(agent)

    def offer_order(self) -> Sequence[str]:
        """Available agents not on a call, longest idle (or configured order) first."""
        free = [a for a, m in self._agents.items() if m.state is PresenceState.AVAILABLE]
        if self.strategy == "longest_idle":
            free.sort(key=lambda a: (self._idle_since.get(a, 0.0), self._order[a]))
        else:
            free.sort(key=self._order.__getitem__)
        return free

    def call_started(self, agent: str) -> None:
        """``agent`` is being offered (or carries) a call."""
        self._know(agent).call_started()
        self._changed()

    def call_ended(self, agent: str) -> None:
        """``agent`` is no longer offered (nor carrying) the call it was given;
        an agent with no call is left as is."""
        machine = self._know(agent)
        if not machine.calls:
            return
        machine.call_ended()
        if not machine.calls:
            self._idle_since[agent] = self._clock()
        self._changed()
