"""Read access to the append-only audit log."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from .. import _models as m
from .._base import Database, audit_from
from ..dto import AuditEntry

__all__ = ["AuditRepository"]

_a = m.audit_log


class AuditRepository:
    """The audit log, written by every repository mutation in the same transaction.

    There is deliberately no method to change or delete entries.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def for_entity(self, entity_type: str, entity_id: uuid.UUID | str) -> list[AuditEntry]:
        """Entries about one entity, oldest first."""
        stmt = (
            select(_a)
            .where(_a.c.entity_type == entity_type, _a.c.entity_id == str(entity_id))
            .order_by(_a.c.at, _a.c.id)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [audit_from(r) for r in rows]

    async def recent(self, limit: int = 100, *, actor: str | None = None) -> list[AuditEntry]:
        """Newest entries first, optionally only those of one actor (a user id as
        text, or ``"system"``)."""
        stmt = select(_a).order_by(_a.c.at.desc(), _a.c.id.desc()).limit(limit)
        if actor is not None:
            stmt = stmt.where(_a.c.actor == actor)
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [audit_from(r) for r in rows]
