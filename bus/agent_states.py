"""The agents' presence on the loop: persisted in the store, published on the bus.

:class:`AgentStates` owns the one :class:`~bus.presence.PresenceBook` of a
daemon: inbound routing reads it, the agents' outbound calls (click-to-call,
the dialer) make them busy through :meth:`AgentStates.follow_calls`, and the
gateways see every declared change as ``agent.state``. Each declared change is
stored before it takes effect, so an agent available before a restart (even a
``kill -9``) is available after it, and one who logged out stays offline.

The store is reached through :class:`PresenceStore`, a protocol that
``crm_store.PresenceRepository`` satisfies: ``bus`` does not import the store.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import structlog

from ._bus import Bus, Subscription
from .events import AgentStateChanged, CallCreated, CallEnded
from .presence import InvalidPresence, PresenceBook, PresenceState

if TYPE_CHECKING:
    from config import Config

__all__ = ["AgentStates", "PresenceStore", "SavedPresence"]

log = structlog.get_logger(__name__)


class SavedPresence(Protocol):
    """A stored presence (``crm_store.AgentPresenceRecord``)."""

    @property
    def state(self) -> str: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def since(self) -> datetime: ...


class PresenceStore(Protocol):
    """Where declared presence is kept (``crm_store.PresenceRepository``)."""

    async def load(self, site: str) -> Mapping[str, SavedPresence]:
        """Every presence stored for ``site``, by agent key."""
        ...

    async def save(
        self, site: str, agent: str, *, state: str, reason: str | None, since: datetime
    ) -> None:
        """Replace ``agent``'s presence stored for ``site``."""
        ...

    async def forget(self, site: str, agent: str) -> None:
        """Delete ``agent``'s presence stored for ``site``."""
        ...


class AgentStates:
    """The configured agents' presence (available, paused with a reason, wrap-up,
    offline; busy while on a call), kept in ``store`` and published on ``bus``.

    Every configured agent starts offline until :meth:`restore` gives back the
    state stored before; the widget sets them available when the agent logs in.
    Each declared change is published as ``agent.state``.
    """

    def __init__(self, config: Config, bus: Bus, *, store: PresenceStore) -> None:
        self._bus = bus
        self._store = store
        # Sites sharing one database keep their agents apart.
        self._site = config.site.id
        self._users = {a.key: a.user for a in config.agents}
        #: What inbound routing reads: the states, plus who is on a call and
        #: since when each agent is idle (see :meth:`follow_calls`).
        self.presence = PresenceBook.from_config(config)
        self._outbound: dict[uuid.UUID, str] = {}
        # One declared change at a time: the store and the book see them in the
        # same order.
        self._lock = asyncio.Lock()

    async def restore(self) -> None:
        """Give each configured agent the presence stored for them (none: offline).

        Publishes nothing (:meth:`publish_all` does). A stored state the model
        does not know is logged and ignored. Raises ``StoreError`` if the store
        cannot be read; the states are then unchanged.
        """
        saved = await self._store.load(self._site)
        for agent in self._users:
            row = saved.get(agent)
            if row is None:
                continue
            try:
                self.presence.restore(agent, row.state, row.reason, row.since)
            except InvalidPresence as exc:
                log.warning(
                    "agent.state.unrestorable", agent=agent, state=row.state, error=str(exc)
                )
                continue
            log.info("agent.state.restored", agent=agent, state=row.state, reason=row.reason)

    async def follow_calls(self, subscription: Subscription) -> None:
        """Keep :attr:`presence` told of the agents' outbound calls (click-to-call,
        dialer), so inbound calls are not offered to an agent already talking.
        Inbound calls tell the presence book themselves. Runs until cancelled or
        the subscription closes."""
        async for envelope in subscription:
            event = envelope.event
            if isinstance(event, CallCreated):
                if event.direction != "inbound" and event.agent is not None:
                    self._outbound[event.call_id] = event.agent
                    self.presence.call_started(event.agent)
            elif isinstance(event, CallEnded):
                agent = self._outbound.pop(event.call_id, None)
                if agent is not None:
                    self.presence.call_ended(agent)

    def outbound_calls(self) -> dict[uuid.UUID, str]:
        """The outbound calls :attr:`presence` counts the agents busy with, by id."""
        return dict(self._outbound)

    def state(self, agent: str) -> tuple[str, str | None]:
        """``(declared state, reason)`` of ``agent``; ``KeyError`` if not configured."""
        if agent not in self._users:
            raise KeyError(agent)
        status = self.presence.status(agent)
        return str(status.declared), status.reason

    async def set(self, agent: str, state: str, reason: str | None = None) -> None:
        """Store, apply and publish a declared change; an unchanged state does nothing.

        Raises ``KeyError`` for an agent not configured, :class:`InvalidPresence`
        for a change the model refuses, and ``StoreError`` if the store cannot
        keep it: in every case nothing changed and nothing was published.
        Cancelled while the store writes, the change may or may not be stored but
        is not applied.
        """
        async with self._lock:
            if agent not in self._users:
                raise KeyError(agent)
            target = self.presence.check(agent, state, reason)
            if target is None:
                return
            new, new_reason = target
            since = datetime.now(UTC)
            await self._store.save(
                self._site, agent, state=str(new), reason=new_reason, since=since
            )
            self.presence.declare(agent, new, new_reason, since=since)
            log.info("agent.state", agent=agent, state=str(new), reason=new_reason)
            self._bus.publish(
                AgentStateChanged(
                    agent=agent, user=self._users[agent], state=str(new), reason=new_reason
                )
            )

    async def reconfigure(self, config: Config) -> None:
        """Follow a reloaded ``[[agents]]``: new agents start offline, removed ones
        are published offline and forgotten (also by the store), the others keep
        their state. Raises ``StoreError`` if the store cannot follow."""
        keys = {a.key: a.user for a in config.agents}
        for gone in [k for k in self._users if k not in keys]:
            await self.set(gone, PresenceState.OFFLINE)
            await self._store.forget(self._site, gone)
            del self._users[gone]
        for key, user in keys.items():
            known = key in self._users
            self._users[key] = user
            if not known:
                # A row left from an earlier life of this agent must not come back
                # at the next restart: an agent added by a reload starts offline.
                await self._store.forget(self._site, key)
                self.presence.set_offline(key)
                log.info("agent.state", agent=key, state="offline", reason=None)
                self._bus.publish(AgentStateChanged(agent=key, user=user, state="offline"))

    def publish_all(self) -> None:
        """Publish every agent's declared state (at start-up, for late subscribers)."""
        for agent, user in self._users.items():
            status = self.presence.status(agent)
            self._bus.publish(
                AgentStateChanged(
                    agent=agent, user=user, state=str(status.declared), reason=status.reason
                )
            )
