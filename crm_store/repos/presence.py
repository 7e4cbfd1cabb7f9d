"""The presence each agent declared (available, paused, wrap-up, offline).

The store keeps one row per agent so that a restarted daemon gives agents back
the state they had; :mod:`bus.presence` owns the vocabulary and the transitions,
this repository only stores what it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, update

from .. import _models as m
from .._base import Database

__all__ = ["AgentPresenceRecord", "PresenceRepository"]

_p = m.agent_presence


@dataclass(frozen=True, slots=True)
class AgentPresenceRecord:
    """A stored presence: the agent's key, its declared state, reason and since when."""

    agent: str
    state: str
    reason: str | None
    since: datetime


class PresenceRepository:
    """Agents' declared presence, one row per site and agent key."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self, site: str) -> dict[str, AgentPresenceRecord]:
        """Every presence stored for ``site``, by agent key."""
        async with self._db.read() as conn:
            rows = (await conn.execute(select(_p).where(_p.c.site == site))).all()
        return {
            row.agent: AgentPresenceRecord(row.agent, row.state, row.reason, row.since)
            for row in rows
        }

    async def save(
        self, site: str, agent: str, *, state: str, reason: str | None, since: datetime
    ) -> None:
        """Store ``agent``'s presence in ``site``, replacing the one stored before
        (one transaction).

        Raises :class:`StoreUnavailable` when the database cannot write; nothing
        is stored then.
        """
        values = {"state": state, "reason": reason, "since": since}
        async with self._db.write() as conn:
            mine = (_p.c.site == site) & (_p.c.agent == agent)
            result = await conn.execute(update(_p).where(mine).values(values))
            if result.rowcount == 0:
                await conn.execute(insert(_p).values(site=site, agent=agent, **values))

    async def forget(self, site: str, agent: str) -> None:
        """Delete ``agent``'s presence stored for ``site`` (gone from the configuration)."""
        async with self._db.write() as conn:
            await conn.execute(delete(_p).where((_p.c.site == site) & (_p.c.agent == agent)))
