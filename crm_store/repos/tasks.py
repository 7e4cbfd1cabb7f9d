"""Tasks: call-backs, e-mails and meetings assigned to users."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, func, select, update

from .. import _models as m
from .._base import Actor, Database, audit, task_from
from .._types import utcnow
from ..dto import Task
from ..enums import TaskKind, TaskStatus
from ..exceptions import NotFound
from ..ids import new_id

__all__ = ["REMIND_MINUTES", "UNSET", "TaskRepository"]

#: How long before the due time a reminder may be: 5 minutes to 1 day.
REMIND_MINUTES: Final = (5, 24 * 60)

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
        duration_minutes: int | None = None,
        remind_minutes: int | None = None,
        status: TaskStatus = TaskStatus.TODO,
        actor: Actor = None,
    ) -> Task:
        """Create a task. ``remind_minutes`` (5 to 1440, needs ``due_at``) sets the
        reminder that many minutes before the due time; ``remind_at`` gives it as a
        time instead."""
        if remind_minutes is not None:
            remind_at = _remind_at(due_at, remind_minutes)
        status = TaskStatus(status)
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
            "done": status is TaskStatus.DONE,
            "done_at": utcnow() if status is TaskStatus.DONE else None,
            "status": status,
            "duration_minutes": duration_minutes,
            "remind_minutes": remind_minutes,
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
        client_id: uuid.UUID | _Unset | None = UNSET,
        lead_id: uuid.UUID | _Unset | None = UNSET,
        duration_minutes: int | _Unset | None = UNSET,
        remind_minutes: int | _Unset | None = UNSET,
        actor: Actor = None,
    ) -> Task:
        """Change the given fields; omitted ones are kept.

        A reminder given in minutes follows the due time: moving the task moves
        its reminder, and a reminder moved into the future is delivered again."""
        changes: dict[str, Any] = {
            key: value
            for key, value in (
                ("title", title),
                ("kind", kind),
                ("note", note),
                ("due_at", due_at),
                ("remind_at", remind_at),
                ("assignee_user_id", assignee_user_id),
                ("client_id", client_id),
                ("lead_id", lead_id),
                ("duration_minutes", duration_minutes),
                ("remind_minutes", remind_minutes),
            )
            if not isinstance(value, _Unset)
        }
        if not changes:
            return await self.get(task_id)
        if "due_at" in changes or "remind_minutes" in changes:
            current = await self.get(task_id)
            due = changes.get("due_at", current.due_at)
            minutes = changes.get("remind_minutes", current.remind_minutes)
            if minutes is not None:
                changes["remind_at"] = _remind_at(due, minutes)
            elif "remind_minutes" in changes:
                changes["remind_at"] = None
        if "remind_at" in changes:
            new = changes["remind_at"]
            if new is None or new > utcnow():
                changes["reminded_at"] = None
                changes["reminder_seen_at"] = None
        return await self._set(task_id, "update", changes, actor)

    async def set_status(
        self, task_id: uuid.UUID, status: TaskStatus, *, actor: Actor = None
    ) -> Task:
        """Move the task to the kanban column ``status`` (``done`` completes it)."""
        status = TaskStatus(status)
        done = status is TaskStatus.DONE
        return await self._set(
            task_id,
            "status",
            {"status": status, "done": done, "done_at": utcnow() if done else None},
            actor,
        )

    async def query(
        self,
        *,
        assignee_user_id: uuid.UUID | None = None,
        done: bool | None = None,
        statuses: Sequence[TaskStatus] = (),
        due_from: datetime | None = None,
        due_before: datetime | None = None,
        has_due: bool | None = None,
        kind: TaskKind | None = None,
        limit: int = 200,
        offset: int = 0,
    ) -> tuple[list[Task], int]:
        """Tasks matching every given filter, earliest due first (undated last),
        and how many match in all. ``assignee_user_id`` ``None``: everybody's."""
        conds: list[Any] = []
        if assignee_user_id is not None:
            conds.append(_t.c.assignee_user_id == assignee_user_id)
        if done is not None:
            conds.append(_t.c.done.is_(done))
        if statuses:
            conds.append(_t.c.status.in_([TaskStatus(x) for x in statuses]))
        if due_from is not None:
            conds.append(_t.c.due_at >= due_from)
        if due_before is not None:
            conds.append(_t.c.due_at < due_before)
        if has_due is not None:
            conds.append(_t.c.due_at.is_not(None) if has_due else _t.c.due_at.is_(None))
        if kind is not None:
            conds.append(_t.c.kind == TaskKind(kind))
        stmt = (
            select(_t)
            .where(*conds)
            .order_by(_t.c.due_at.is_(None), _t.c.due_at, _t.c.created_at, _t.c.id)
            .limit(limit)
            .offset(offset)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
            total = await conn.scalar(select(func.count()).select_from(_t).where(*conds))
        return [task_from(r) for r in rows], int(total or 0)

    async def claim_reminders(
        self, now: datetime, *, stale_after: timedelta = timedelta(days=1), limit: int = 100
    ) -> list[tuple[Task, bool]]:
        """Mark the reminders due at ``now`` as delivered and return their tasks.

        Each task is claimed with its own ``UPDATE ... WHERE reminded_at IS NULL``,
        so daemons sharing a store deliver a reminder once. A reminder more than
        ``stale_after`` late (the daemon was down) is marked but its flag says not
        to send it: ``(task, send)``.
        """
        stmt = (
            select(_t.c.id)
            .where(_t.c.done.is_(False), _t.c.reminded_at.is_(None), _t.c.remind_at <= now)
            .order_by(_t.c.remind_at)
            .limit(limit)
        )
        claimed: list[tuple[Task, bool]] = []
        async with self._db.write() as conn:
            for task_id in (await conn.execute(stmt)).scalars().all():
                row = (
                    (
                        await conn.execute(
                            update(_t)
                            .where(_t.c.id == task_id, _t.c.reminded_at.is_(None))
                            .values(reminded_at=now)
                            .returning(_t)
                        )
                    )
                    .mappings()
                    .one_or_none()
                )
                if row is not None:
                    task = task_from(row)
                    fresh = task.remind_at is not None and task.remind_at >= now - stale_after
                    claimed.append((task, fresh))
        return claimed

    async def reminders_for(self, user_id: uuid.UUID) -> list[Task]:
        """The delivered, not yet dismissed reminders of ``user_id``'s open tasks."""
        stmt = (
            select(_t)
            .where(
                _t.c.assignee_user_id == user_id,
                _t.c.done.is_(False),
                _t.c.reminded_at.is_not(None),
                _t.c.reminder_seen_at.is_(None),
            )
            .order_by(_t.c.remind_at, _t.c.id)
            .limit(50)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [task_from(r) for r in rows]

    async def dismiss_reminder(self, task_id: uuid.UUID, *, actor: Actor = None) -> Task:
        return await self._set(task_id, "dismiss_reminder", {"reminder_seen_at": utcnow()}, actor)

    async def complete(
        self, task_id: uuid.UUID, at: datetime | None = None, *, actor: Actor = None
    ) -> Task:
        return await self._set(
            task_id,
            "complete",
            {"done": True, "done_at": at or utcnow(), "status": TaskStatus.DONE},
            actor,
        )

    async def reopen(self, task_id: uuid.UUID, *, actor: Actor = None) -> Task:
        return await self._set(
            task_id, "reopen", {"done": False, "done_at": None, "status": TaskStatus.TODO}, actor
        )

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


def _remind_at(due_at: datetime | None, minutes: int) -> datetime:
    low, high = REMIND_MINUTES
    if due_at is None:
        raise ValueError("a reminder needs a due time")
    if not low <= minutes <= high:
        raise ValueError(f"a reminder is {low} to {high} minutes before the due time")
    return due_at - timedelta(minutes=minutes)
