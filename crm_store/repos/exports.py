"""Whole lists read in batches, for exports and for call lists built from a filter.

Each method yields batches of DTOs in the list's order (keyset paging: a batch is
one indexed range read, whatever the list's length) and never holds more than one
batch. Who may see which row is not decided here: the callers filter each batch
through :mod:`ws_gateway.rights`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select

from .. import _models as m
from .._base import Database, call_from, hydrate_clients, hydrate_leads, task_from
from ..dto import Call, Client, Lead, Task
from ..enums import LeadStatus

__all__ = ["ExportRepository"]

_BATCH = 1000


class ExportRepository:
    """Clients, leads, calls and tasks as whole lists, batch by batch."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def clients(
        self,
        *,
        tags: Sequence[str] = (),
        responsible_user_id: uuid.UUID | None = None,
        ids: Sequence[uuid.UUID] | None = None,
        batch: int = _BATCH,
    ) -> AsyncIterator[list[Client]]:
        """Clients with every tag of ``tags`` (and the responsible user, and among
        ``ids`` when given), by display name."""
        cl = m.clients
        base = select(cl)
        for tag in tags:
            base = base.where(
                select(m.client_tags.c.tag)
                .where(m.client_tags.c.client_id == cl.c.id, m.client_tags.c.tag == tag)
                .exists()
            )
        if responsible_user_id is not None:
            base = base.where(cl.c.responsible_user_id == responsible_user_id)
        if ids is not None:
            base = base.where(cl.c.id.in_(list(ids)[:10_000]))
        after: tuple[str, uuid.UUID] | None = None
        while True:
            stmt = base
            if after is not None:
                stmt = stmt.where(
                    or_(
                        cl.c.display_name > after[0],
                        and_(cl.c.display_name == after[0], cl.c.id > after[1]),
                    )
                )
            stmt = stmt.order_by(cl.c.display_name, cl.c.id).limit(batch)
            async with self._db.read() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
                found = await hydrate_clients(conn, rows)
            if not found:
                return
            yield found
            after = (found[-1].display_name, found[-1].id)
            if len(found) < batch:
                return

    async def leads(
        self,
        *,
        statuses: Sequence[LeadStatus] = (),
        owner_user_id: uuid.UUID | None = None,
        unowned: bool = False,
        ids: Sequence[uuid.UUID] | None = None,
        batch: int = _BATCH,
    ) -> AsyncIterator[list[Lead]]:
        """Leads in the given statuses (all when empty), of the owner (or without
        one when ``unowned``), newest first — the pool's order."""
        ld = m.leads
        base = select(ld)
        if statuses:
            base = base.where(ld.c.status.in_(list(statuses)))
        if owner_user_id is not None:
            base = base.where(ld.c.owner_user_id == owner_user_id)
        if unowned:
            base = base.where(ld.c.owner_user_id.is_(None))
        if ids is not None:
            base = base.where(ld.c.id.in_(list(ids)[:10_000]))
        after: tuple[datetime, uuid.UUID] | None = None
        while True:
            stmt = base
            if after is not None:
                stmt = stmt.where(
                    or_(
                        ld.c.created_at < after[0],
                        and_(ld.c.created_at == after[0], ld.c.id < after[1]),
                    )
                )
            stmt = stmt.order_by(ld.c.created_at.desc(), ld.c.id.desc()).limit(batch)
            async with self._db.read() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
                found = await hydrate_leads(conn, rows)
            if not found:
                return
            yield found
            after = (found[-1].created_at, found[-1].id)
            if len(found) < batch:
                return

    async def calls(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        batch: int = _BATCH,
    ) -> AsyncIterator[list[Call]]:
        """Calls created in ``[since, until)``, newest first."""
        c = m.calls
        base = select(c)
        if since is not None:
            base = base.where(c.c.created_at >= since)
        if until is not None:
            base = base.where(c.c.created_at < until)
        async for found in self._desc(base, c, batch, call_from):
            yield found

    async def tasks(
        self,
        *,
        assignee_user_id: uuid.UUID | None = None,
        done: bool | None = None,
        batch: int = _BATCH,
    ) -> AsyncIterator[list[Task]]:
        """Tasks of the assignee (all when ``None``), open or done, newest first."""
        t = m.tasks
        base = select(t)
        if assignee_user_id is not None:
            base = base.where(t.c.assignee_user_id == assignee_user_id)
        if done is not None:
            base = base.where(t.c.done.is_(done))
        async for found in self._desc(base, t, batch, task_from):
            yield found

    async def _desc(self, base: Any, table: Any, batch: int, build: Any) -> AsyncIterator[Any]:
        after: tuple[datetime, uuid.UUID] | None = None
        while True:
            stmt = base
            if after is not None:
                stmt = stmt.where(
                    or_(
                        table.c.created_at < after[0],
                        and_(table.c.created_at == after[0], table.c.id < after[1]),
                    )
                )
            stmt = stmt.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(batch)
            async with self._db.read() as conn:
                found = [build(r) for r in (await conn.execute(stmt)).mappings().all()]
            if not found:
                return
            yield found
            after = (found[-1].created_at, found[-1].id)
            if len(found) < batch:
                return
