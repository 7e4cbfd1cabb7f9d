"""Tasks: call-backs, e-mails and meetings assigned to users."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import delete, select, update

from .. import _models as m
from .._base import Actor, Database, audit, task_from
from .._types import utcnow
from ..dto import Task
from ..enums import TaskKind
from ..exceptions import NotFound
from ..ids import new_id

__all__ = ["TaskRepository"]

_t = m.tasks


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


class TaskRepository:
    """Tasks attached to a user and optionally to a client or a lead."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        title: str,
        *,
        kind: TaskKind = TaskKind.CALL,
        note: str | None = None,
        due_at: datetime | None = None,
        remind_at: datetime | None = None,
        assignee_user_id: uuid.UUID | None = None,
        client_id: uuid.UUID | None = None,
        lead_id: uuid.UUID | None = None,
        actor: Actor = None,
    ) -> Task:
        values: dict[str, Any] = {
            "id": new_id(),
            "title": title,
            "kind": TaskKind(kind),
            "note": note,
            "due_at": due_at,
            "remind_at": remind_at,
            "assignee_user_id": assignee_user_id,
            "client_id": client_id,
            "lead_id": lead_id,
            "done": False,
            "created_at": utcnow(),
        }
        async with self._db.write() as conn:
            row = (await conn.execute(_t.insert().values(values).returning(_t))).mappings().one()
            await audit(
                conn,
                actor=actor,
                entity_type="task",
                entity_id=values["id"],
                action="create",
                changes={k: v for k, v in values.items() if k != "id" and v is not None},
            )
        return task_from(row)

    async def get(self, task_id: uuid.UUID) -> Task:
        async with self._db.read() as conn:
            row = (
                (await conn.execute(select(_t).where(_t.c.id == task_id))).mappings().one_or_none()
            )
        if row is None:
            raise NotFound("task", task_id)
        return task_from(row)

    async def update(
        self,
        task_id: uuid.UUID,
        *,
        title: str | _Unset = UNSET,
        kind: TaskKind | _Unset = UNSET,
        note: str | _Unset | None = UNSET,
        due_at: datetime | _Unset | None = UNSET,
        remind_at: datetime | _Unset | None = UNSET,
        assignee_user_id: uuid.UUID | _Unset | None = UNSET,
        actor: Actor = None,
    ) -> Task:
        """Change the given fields; omitted ones are kept."""
        changes = {
            key: value
            for key, value in (
                ("title", title),
                ("kind", kind),
                ("note", note),
                ("due_at", due_at),
                ("remind_at", remind_at),
                ("assignee_user_id", assignee_user_id),
            )
            if not isinstance(value, _Unset)
        }
        if not changes:
            return await self.get(task_id)
        return await self._set(task_id, "update", changes, actor)

    async def complete(
        self, task_id: uuid.UUID, at: datetime | None = None, *, actor: Actor = None
    ) -> Task:
        return await self._set(
            task_id, "complete", {"done": True, "done_at": at or utcnow()}, actor
        )

    async def reopen(self, task_id: uuid.UUID, *, actor: Actor = None) -> Task:
        return await self._set(task_id, "reopen", {"done": False, "done_at": None}, actor)

    async def delete(self, task_id: uuid.UUID, *, actor: Actor = None) -> None:
        async with self._db.write() as conn:
            result = await conn.execute(delete(_t).where(_t.c.id == task_id))
            if result.rowcount == 0:
                raise NotFound("task", task_id)
            await audit(conn, actor=actor, entity_type="task", entity_id=task_id, action="delete")

    async def due_for(self, user_id: uuid.UUID, until: datetime) -> list[Task]:
        """Open tasks of ``user_id`` due at or before ``until``, earliest first."""
        stmt = (
            select(_t)
            .where(
                _t.c.assignee_user_id == user_id,
                _t.c.done.is_(False),
                _t.c.due_at.is_not(None),
                _t.c.due_at <= until,
            )
            .order_by(_t.c.due_at, _t.c.id)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [task_from(r) for r in rows]

    async def for_entity(
        self, *, client_id: uuid.UUID | None = None, lead_id: uuid.UUID | None = None
    ) -> list[Task]:
        """Tasks attached to a client or a lead, newest first."""
        if (client_id is None) == (lead_id is None):
            raise ValueError("pass exactly one of client_id and lead_id")
        cond = _t.c.client_id == client_id if client_id is not None else _t.c.lead_id == lead_id
        async with self._db.read() as conn:
            rows = (
                (await conn.execute(select(_t).where(cond).order_by(_t.c.created_at.desc())))
                .mappings()
                .all()
            )
        return [task_from(r) for r in rows]

    async def _set(
        self, task_id: uuid.UUID, action: str, values: dict[str, Any], actor: Actor
    ) -> Task:
        async with self._db.write() as conn:
            row = (
                (
                    await conn.execute(
                        update(_t).where(_t.c.id == task_id).values(values).returning(_t)
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NotFound("task", task_id)
            await audit(
                conn,
                actor=actor,
                entity_type="task",
                entity_id=task_id,
                action=action,
                changes=values,
            )
        return task_from(row)
