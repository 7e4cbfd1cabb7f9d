"""Call detail records, written when a call starts and completed when it ends.

The steps of a call's record (:meth:`~CallRepository.create`, ``mark_ringing``,
``mark_answered``, ``mark_answered_by``, ``set_worker``, ``end``,
``attach_recording``, ``recording_failed``) survive the store's faults: when the
database cannot be written they are queued in the store's call journal
(:mod:`crm_store._journal`), in order, and written when it returns; the method
returns the record as it will be. See each method for what it promises then.
"""

from __future__ import annotations

import builtins
import collections
import dataclasses
import uuid
from datetime import datetime
from functools import partial
from typing import Any

import structlog
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .. import _models as m
from .._base import Actor, Database, audit, audit_sync, call_from, is_unique_violation
from .._journal import CallJournal, JournalStep
from .._types import utcnow
from ..dto import Call
from ..enums import CallDirection, CallEndReason
from ..exceptions import Conflict, NotFound, StoreUnavailable
from ..ids import new_id
from ..phones import try_normalize_phone

__all__ = ["CallRepository"]

log = structlog.get_logger(__name__)

_c = m.calls

# The last known state of recent calls, to answer a step queued while the store is
# away with the record as it will be. Enough for every call a daemon carries.
_KNOWN_MAX = 4096
_RECORDING_ERROR_CHARS = 200


class CallRepository:
    """Call records. Every call is stored at creation, so a crash never loses one:
    records left open are closed as ``interrupted`` at the next start-up."""

    def __init__(self, db: Database, journal: CallJournal | None = None) -> None:
        self._db = db
        self._journal = journal if journal is not None else CallJournal(db)
        self._known: collections.OrderedDict[uuid.UUID, Call] = collections.OrderedDict()

    async def create(
        self,
        direction: CallDirection,
        from_number: str,
        to_number: str,
        *,
        agent_user_id: uuid.UUID | None = None,
        client_id: uuid.UUID | None = None,
        lead_id: uuid.UUID | None = None,
        origin: str | None = None,
        worker_id: str | None = None,
        line: str | None = None,
        dialer_item_id: uuid.UUID | None = None,
        sip_call_id: str | None = None,
        at: datetime | None = None,
        actor: Actor = None,
        call_id: uuid.UUID | None = None,
    ) -> Call:
        """Record a new call. Numbers are stored in E.164 when they normalise and as
        given otherwise (extensions, ``anonymous``). ``call_id`` is the id to give it
        when the caller has already announced the call under that id (a new one by
        default); a duplicate raises :class:`Conflict`.

        While the store is unavailable the new call is carried: its record is queued
        and written when the store returns, and the record it will have is returned.
        Once too many steps wait (the journal is full) it raises
        :class:`StoreUnavailable` instead and nothing is queued: refuse the call."""
        region = self._db.region
        values: dict[str, Any] = {
            "id": call_id or new_id(),
            "direction": CallDirection(direction),
            "from_number": try_normalize_phone(from_number, region) or from_number,
            "to_number": try_normalize_phone(to_number, region) or to_number,
            "agent_user_id": agent_user_id,
            "client_id": client_id,
            "lead_id": lead_id,
            "origin": origin,
            "worker_id": worker_id,
            "line": line,
            "dialer_item_id": dialer_item_id,
            "sip_call_id": sip_call_id,
            "created_at": at or utcnow(),
        }

        changes = {k: v for k, v in values.items() if k != "id" and v is not None}

        def insert(conn: Connection) -> Call:
            row = conn.execute(_c.insert().values(values).returning(_c)).mappings().one()
            audit_sync(
                conn,
                actor=actor,
                entity_type="call",
                entity_id=values["id"],
                action="create",
                changes=changes,
            )
            return call_from(row)

        step = JournalStep(values["id"], "create", partial(_replay_create, values, changes, actor))
        if self._journal.waiting:
            return self._carry_new(step, values)
        try:
            call = await self._db.run_write(insert)
        except IntegrityError as exc:
            if call_id is not None and is_unique_violation(exc):
                raise Conflict(f"call {call_id} already exists") from exc
            raise
        except StoreUnavailable as exc:
            self._journal.failed(exc)
            return self._carry_new(step, values)
        self._journal.recovered()
        return self._remember(call)

    def _carry_new(self, step: JournalStep, values: dict[str, Any]) -> Call:
        if self._journal.full:
            raise StoreUnavailable(
                f"the store is unavailable and {self._journal.pending} call record steps"
                " wait to be written; new calls are refused until it returns"
            )
        self._journal.queue(step)
        blank = {f.name: None for f in dataclasses.fields(Call)}
        return self._remember(Call(**{**blank, **values}))

    def _remember(self, call: Call) -> Call:
        self._known[call.id] = call
        self._known.move_to_end(call.id)
        while len(self._known) > _KNOWN_MAX:
            self._known.popitem(last=False)
        return call

    async def _step(self, call_id: uuid.UUID, action: str, values: dict[str, Any]) -> Call:
        """Write one step of a call's record, or queue it while the store is away (see
        the module docstring) and return the record as it will be. Every step but the
        recording is of an open call; the recording comes after the end."""
        step = JournalStep(call_id, action, partial(_replay_step, call_id, action, values))
        if not self._journal.waiting:
            try:
                if action == "recording":
                    call = await self._update(call_id, action, values, None)
                else:
                    call = await self._open_update(call_id, action, values)
            except StoreUnavailable as exc:
                self._journal.failed(exc)
            else:
                self._journal.recovered()
                return self._remember(call)
        self._journal.queue(step)
        known = self._known.get(call_id)
        if known is None:
            what = (
                f"the recording of call {call_id}"
                if action == "recording"
                else f"step {action} of call {call_id}"
            )
            raise StoreUnavailable(f"the store is unavailable; {what} is queued")
        return self._remember(dataclasses.replace(known, **values))

    async def mark_ringing(self, call_id: uuid.UUID, at: datetime | None = None) -> Call:
        """Record when the call started ringing. Raises :class:`Conflict` if ended."""
        return await self._step(call_id, "ringing", {"ringing_at": at or utcnow()})

    async def mark_answered(self, call_id: uuid.UUID, at: datetime | None = None) -> Call:
        """Record when the call was answered. Raises :class:`Conflict` if ended."""
        return await self._step(call_id, "answered", {"answered_at": at or utcnow()})

    async def mark_answered_by(
        self, call_id: uuid.UUID, agent_user_id: uuid.UUID | None, at: datetime | None = None
    ) -> Call:
        """Record when the call was answered and by which agent (an inbound call's
        agent is known only then), in one update. ``agent_user_id`` None leaves the
        agent as it was. Raises :class:`Conflict` if ended."""
        values: dict[str, Any] = {"answered_at": at or utcnow()}
        if agent_user_id is not None:
            values["agent_user_id"] = agent_user_id
        return await self._step(call_id, "answered", values)

    async def set_worker(self, call_id: uuid.UUID, worker_id: str) -> Call:
        """Move the open call to SIP worker ``worker_id`` (the one carrying it, whose
        crash closes it as ``interrupted``). Raises :class:`Conflict` if ended."""
        return await self._step(call_id, "worker", {"worker_id": worker_id})

    async def end(
        self, call_id: uuid.UUID, reason: CallEndReason, at: datetime | None = None
    ) -> Call:
        """Close the call with ``reason``. Raises :class:`Conflict` if already ended,
        so that two endings of one call cannot overwrite each other."""
        reason = CallEndReason(reason)
        return await self._step(call_id, "end", {"ended_at": at or utcnow(), "end_reason": reason})

    async def set_disposition(
        self, call_id: uuid.UUID, disposition: str | None, *, actor: Actor = None
    ) -> Call:
        """Set the agent's short outcome label (``"callback"``, ``"sale"``...)."""
        return await self._update(call_id, "disposition", {"disposition": disposition}, actor)

    async def set_note(self, call_id: uuid.UUID, note: str | None, *, actor: Actor = None) -> Call:
        return await self._update(call_id, "note", {"note": note}, actor)

    async def attach_recording(
        self, call_id: uuid.UUID, path: str, duration: float | None = None
    ) -> Call:
        """Record where the call's recording is and its duration in seconds
        (``recording_status`` ``"ok"``). Queued like the other steps while the store
        is unavailable."""
        values = {
            "recording_path": path,
            "recording_duration": duration,
            "recording_status": "ok",
            "recording_error": None,
        }
        return await self._step(call_id, "recording", values)

    async def recording_failed(self, call_id: uuid.UUID, reason: str) -> Call:
        """Record that the call's recording could not be written (``reason``, such as
        ``"no space left on device"``): ``recording_status`` ``"failed"``, no path.
        Queued like the other steps while the store is unavailable."""
        values = {
            "recording_path": None,
            "recording_duration": None,
            "recording_status": "failed",
            "recording_error": reason[:_RECORDING_ERROR_CHARS],
        }
        return await self._step(call_id, "recording", values)

    async def link(
        self,
        call_id: uuid.UUID,
        *,
        client_id: uuid.UUID | None = None,
        lead_id: uuid.UUID | None = None,
        actor: Actor = None,
    ) -> Call:
        """Attach the call to a client or lead found (or created) after it started."""
        return await self._update(
            call_id, "link", {"client_id": client_id, "lead_id": lead_id}, actor
        )

    async def get(self, call_id: uuid.UUID) -> Call:
        async with self._db.read() as conn:
            row = (
                (await conn.execute(select(_c).where(_c.c.id == call_id))).mappings().one_or_none()
            )
        if row is None:
            raise NotFound("call", call_id)
        return call_from(row)

    async def list_recent(
        self, agent: uuid.UUID | None = None, limit: int = 50
    ) -> builtins.list[Call]:
        """Newest calls first, optionally only those of one agent."""
        stmt = select(_c).order_by(_c.c.created_at.desc(), _c.c.id.desc()).limit(limit)
        if agent is not None:
            stmt = stmt.where(_c.c.agent_user_id == agent)
        return await self._many(stmt)

    async def open_calls(self) -> builtins.list[Call]:
        """Calls not ended yet, oldest first."""
        return await self._many(
            select(_c).where(_c.c.ended_at.is_(None)).order_by(_c.c.created_at, _c.c.id)
        )

    async def close_interrupted(
        self, at: datetime | None = None, *, origin: str | None = None
    ) -> int:
        """Close every open call as ``interrupted`` and return how many.

        Meant for daemon start-up, before any worker runs: any call still open then
        belongs to a previous run that stopped without ending it. With ``origin``
        only that daemon's calls are closed, so daemons sharing one database leave
        each other's live calls alone.
        """
        condition: ColumnElement[bool] = _c.c.ended_at.is_(None)
        if origin is not None:
            condition = condition & (_c.c.origin == origin)
        closed = await self._close_where(condition, at)
        if closed:
            log.warning("interrupted_calls_closed", count=len(closed))
        return len(closed)

    async def close_worker_calls(
        self, worker_id: str, at: datetime | None = None
    ) -> builtins.list[Call]:
        """Close the open calls of a crashed worker as ``interrupted`` and return them
        (so that the daemon can publish their ended events)."""
        closed = await self._close_where(
            (_c.c.ended_at.is_(None)) & (_c.c.worker_id == worker_id), at
        )
        if closed:
            log.warning("worker_calls_closed", worker_id=worker_id, count=len(closed))
        return closed

    async def _close_where(self, condition: Any, at: datetime | None) -> builtins.list[Call]:
        when = at or utcnow()
        async with self._db.write() as conn:
            rows = (
                (
                    await conn.execute(
                        update(_c)
                        .where(condition)
                        .values(ended_at=when, end_reason=CallEndReason.INTERRUPTED)
                        .returning(_c)
                    )
                )
                .mappings()
                .all()
            )
            for row in rows:
                await audit(
                    conn,
                    actor=None,
                    entity_type="call",
                    entity_id=row["id"],
                    action="end",
                    changes={"ended_at": when, "end_reason": CallEndReason.INTERRUPTED},
                )
        return sorted((call_from(r) for r in rows), key=lambda c: (c.created_at, c.id))

    async def _open_update(self, call_id: uuid.UUID, action: str, values: dict[str, Any]) -> Call:
        def write(conn: Connection) -> Call:
            row = (
                conn.execute(
                    update(_c)
                    .where(_c.c.id == call_id, _c.c.ended_at.is_(None))
                    .values(values)
                    .returning(_c)
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                if conn.execute(select(_c.c.id).where(_c.c.id == call_id)).first() is None:
                    raise NotFound("call", call_id)
                raise Conflict(f"call {call_id} has already ended")
            audit_sync(
                conn,
                actor=None,
                entity_type="call",
                entity_id=call_id,
                action=action,
                changes=values,
            )
            return call_from(row)

        # On the store's writer (one hand-off, in line with the other writes of the
        # call's critical path): through the async engine each statement is a few
        # hand-offs, and two writers contend for SQLite's lock, the loser sleeping.
        return await self._db.run_write(write)

    async def _update(
        self, call_id: uuid.UUID, action: str, values: dict[str, Any], actor: Actor
    ) -> Call:
        def write(conn: Connection) -> Call:
            row = (
                conn.execute(update(_c).where(_c.c.id == call_id).values(values).returning(_c))
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NotFound("call", call_id)
            audit_sync(
                conn,
                actor=actor,
                entity_type="call",
                entity_id=call_id,
                action=action,
                changes=values,
            )
            return call_from(row)

        return await self._db.run_write(write)

    async def _many(self, stmt: Any) -> builtins.list[Call]:
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [call_from(r) for r in rows]


def _replay_create(
    values: dict[str, Any], changes: dict[str, Any], actor: Actor, conn: Connection
) -> None:
    """A queued creation: insert the record unless an earlier attempt did."""
    if conn.execute(select(_c.c.id).where(_c.c.id == values["id"])).first() is not None:
        return
    conn.execute(_c.insert().values(values))
    audit_sync(
        conn,
        actor=actor,
        entity_type="call",
        entity_id=values["id"],
        action="create",
        changes=changes,
    )


def _replay_step(call_id: uuid.UUID, action: str, values: dict[str, Any], conn: Connection) -> None:
    """A queued step: write ``values`` unless the record already holds them (an earlier
    attempt committed) or, for a step of an open call, the call has ended since (the
    pool closed it as interrupted)."""
    row = conn.execute(select(_c).where(_c.c.id == call_id)).mappings().one_or_none()
    if row is None:
        log.error("store.step_orphaned", call_id=str(call_id), step=action)
        return
    if all(row[k] == v for k, v in values.items()):
        return
    if action != "recording" and row["ended_at"] is not None:
        log.warning("store.step_after_end", call_id=str(call_id), step=action)
        return
    conn.execute(update(_c).where(_c.c.id == call_id).values(values))
    audit_sync(
        conn, actor=None, entity_type="call", entity_id=call_id, action=action, changes=values
    )
