"""What the auto-dialer stores besides call lists: the do-not-call list, its
sessions, and the steps of an attempt that must commit together."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .. import _models as m
from .._base import (
    Actor,
    Database,
    audit,
    audit_sync,
    call_from,
    conflict_from,
    is_unique_violation,
)
from .._base import item_from as _item_from
from .._types import utcnow
from ..dto import Call, CallListEntry, CallListItem
from ..enums import CallDirection, CallListItemState, LeadStatus
from ..exceptions import Conflict, InvalidPhone, NotFound
from ..ids import new_id
from ..phones import normalize_phone, try_normalize_phone

__all__ = [
    "DialerRepository",
    "DialerSessionRecord",
    "DoNotCallEntry",
    "PendingAttempt",
]

log = structlog.get_logger(__name__)

_i = m.call_list_items
_s = m.dialer_sessions
_d = m.do_not_call
_c = m.calls
_PREFIX = re.compile(r"^\+[0-9]{1,15}$")
#: Item states that still need dialing (or are being dialed).
_OPEN = (CallListItemState.PENDING, CallListItemState.CLAIMED, CallListItemState.DIALING)


@dataclass(frozen=True, slots=True)
class DoNotCallEntry:
    id: uuid.UUID
    number: str
    prefix: bool
    reason: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DialerSessionRecord:
    """A stored dialing session: whose, which list, and where it stood."""

    id: uuid.UUID
    agent: str
    list_id: uuid.UUID
    state: str
    origin: str | None
    dialed: int
    answered: int
    started_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class PendingAttempt:
    """An item left ``dialing`` by a stopped dialer, with its newest call record."""

    item: CallListItem
    call: Call | None


def _dnc_from(row: Any) -> DoNotCallEntry:
    return DoNotCallEntry(row.id, row.number, row.prefix, row.reason, row.created_at)


def _session_from(row: Any) -> DialerSessionRecord:
    return DialerSessionRecord(
        row.id,
        row.agent,
        row.list_id,
        row.state,
        row.origin,
        row.dialed,
        row.answered,
        row.started_at,
        row.updated_at,
    )


class DialerRepository:
    """Do-not-call entries, dialer sessions, and attempt bookkeeping."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # ------------------------------------------------------------------ do not call

    async def add_do_not_call(
        self, number: str, *, prefix: bool = False, reason: str | None = None, actor: Actor = None
    ) -> DoNotCallEntry:
        """Add a number (normalised to E.164) or a prefix (``+`` and digits).

        Raises :class:`InvalidPhone` for a number that does not normalise or a
        malformed prefix, :class:`Conflict` if the entry exists.
        """
        if prefix:
            text = re.sub(r"[\s().-]", "", number)
            if text.startswith("00"):
                text = "+" + text[2:]
            if not _PREFIX.match(text):
                raise InvalidPhone(number, "a prefix is + followed by digits")
        else:
            text = normalize_phone(number, self._db.region)
        entry_id = new_id()
        values = {
            "id": entry_id,
            "number": text,
            "prefix": prefix,
            "reason": reason,
            "created_at": utcnow(),
        }
        try:
            async with self._db.write() as conn:
                row = (await conn.execute(_d.insert().values(values).returning(_d))).one()
                await audit(
                    conn,
                    actor=actor,
                    entity_type="do_not_call",
                    entity_id=entry_id,
                    action="create",
                    changes={"number": text, "prefix": prefix, "reason": reason},
                )
        except IntegrityError as exc:
            if is_unique_violation(exc):
                raise conflict_from(exc, f"{text} is already on the do-not-call list") from None
            raise
        return _dnc_from(row)

    async def remove_do_not_call(self, entry_id: uuid.UUID, *, actor: Actor = None) -> None:
        async with self._db.write() as conn:
            result = await conn.execute(delete(_d).where(_d.c.id == entry_id))
            if not result.rowcount:
                raise NotFound("do_not_call", entry_id)
            await audit(
                conn, actor=actor, entity_type="do_not_call", entity_id=entry_id, action="delete"
            )

    async def do_not_call(self) -> list[DoNotCallEntry]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(_d).order_by(_d.c.number))).all()
        return [_dnc_from(r) for r in rows]

    async def do_not_call_match(self, e164: str) -> DoNotCallEntry | None:
        """The entry forbidding ``e164`` (the number itself, else its longest
        listed prefix), or ``None``. One indexed ``IN`` over the number's prefixes."""
        prefixes = [e164[:n] for n in range(2, len(e164) + 1)]
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    select(_d).where(
                        or_(
                            and_(_d.c.prefix.is_(False), _d.c.number == e164),
                            and_(_d.c.prefix.is_(True), _d.c.number.in_(prefixes)),
                        )
                    )
                )
            ).all()
        if not rows:
            return None
        return _dnc_from(max(rows, key=lambda r: (not r.prefix, len(r.number))))

    # ------------------------------------------------------------------ sessions

    async def create_session(
        self, agent: str, list_id: uuid.UUID, *, origin: str | None, state: str = "running"
    ) -> DialerSessionRecord:
        now = utcnow()
        session_id = new_id()
        values = {
            "id": session_id,
            "agent": agent,
            "list_id": list_id,
            "state": state,
            "origin": origin,
            "dialed": 0,
            "answered": 0,
            "started_at": now,
            "updated_at": now,
        }
        async with self._db.write() as conn:
            row = (await conn.execute(_s.insert().values(values).returning(_s))).one()
            await audit(
                conn,
                actor=None,
                entity_type="dialer_session",
                entity_id=session_id,
                action="create",
                changes={"agent": agent, "list_id": list_id},
            )
        return _session_from(row)

    async def update_session(
        self,
        session_id: uuid.UUID,
        *,
        state: str | None = None,
        dialed: int | None = None,
        answered: int | None = None,
    ) -> DialerSessionRecord:
        values: dict[str, Any] = {"updated_at": utcnow()}
        if state is not None:
            values["state"] = state
        if dialed is not None:
            values["dialed"] = dialed
        if answered is not None:
            values["answered"] = answered
        async with self._db.write() as conn:
            row = (
                await conn.execute(
                    update(_s).where(_s.c.id == session_id).values(values).returning(_s)
                )
            ).one_or_none()
            if row is None:
                raise NotFound("dialer_session", session_id)
            if state is not None:
                await audit(
                    conn,
                    actor=None,
                    entity_type="dialer_session",
                    entity_id=session_id,
                    action="state",
                    changes={"state": state},
                )
        return _session_from(row)

    async def sessions(
        self, *, origin: str | None = None, states: Sequence[str] | None = None
    ) -> list[DialerSessionRecord]:
        stmt = select(_s).order_by(_s.c.started_at)
        if origin is not None:
            stmt = stmt.where(_s.c.origin == origin)
        if states is not None:
            stmt = stmt.where(_s.c.state.in_(list(states)))
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_session_from(r) for r in rows]

    # ------------------------------------------------------------------ attempts

    async def start_attempt(
        self,
        item_id: uuid.UUID,
        *,
        from_number: str,
        to_number: str,
        agent_user_id: uuid.UUID | None,
        client_id: uuid.UUID | None,
        lead_id: uuid.UUID | None,
        origin: str | None,
        worker_id: str,
        line: str,
        call_id: uuid.UUID | None = None,
    ) -> Call:
        """Write the call record and move the item ``claimed`` → ``dialing`` in one
        transaction, just before the INVITE is sent.

        One transaction on purpose: an item is ``dialing`` exactly when a call
        record for it exists, which is what recovery after a crash relies on; and
        it is the only write between the end of the gap and the INVITE.
        Raises :class:`Conflict` unless the item is ``claimed`` by
        ``agent_user_id``.
        """
        now = utcnow()
        values: dict[str, Any] = {
            "id": call_id or new_id(),
            "direction": CallDirection.OUTBOUND,
            "from_number": from_number,
            "to_number": to_number,
            "agent_user_id": agent_user_id,
            "client_id": client_id,
            "lead_id": lead_id,
            "origin": origin,
            "worker_id": worker_id,
            "line": line,
            "dialer_item_id": item_id,
            "created_at": now,
        }

        def attempt(conn: Connection) -> Call:
            # Claimed by this agent: a claim taken over after its lease (see
            # claim_next) is no longer the late claimer's to dial.
            mine = (
                _i.c.claimed_by.is_(None)
                if agent_user_id is None
                else _i.c.claimed_by == agent_user_id
            )
            moved = conn.execute(
                update(_i)
                .where(_i.c.id == item_id, _i.c.state == CallListItemState.CLAIMED, mine)
                .values(state=CallListItemState.DIALING)
            )
            if not moved.rowcount:
                raise Conflict(f"call list item {item_id} is not claimed by this agent")
            row = conn.execute(_c.insert().values(values).returning(_c)).mappings().one()
            audit_sync(
                conn,
                actor=agent_user_id,
                entity_type="call_list_item",
                entity_id=item_id,
                action="dialing",
                changes={"call_id": values["id"]},
                at=now,
            )
            return call_from(row)

        # On the call's critical path (between the gap's end and the INVITE): one
        # hand-off to the store's writer thread on SQLite.
        return await self._db.run_write(attempt)

    async def release_item(self, item_id: uuid.UUID) -> bool:
        """Give one claimed, never-dialed item back to the queue; ``False`` if it
        was not claimed (any more)."""
        async with self._db.write() as conn:
            result = await conn.execute(
                update(_i)
                .where(_i.c.id == item_id, _i.c.state == CallListItemState.CLAIMED)
                .values(state=CallListItemState.PENDING, claimed_by=None, claimed_at=None)
            )
            if result.rowcount:
                await audit(
                    conn,
                    actor=None,
                    entity_type="call_list_item",
                    entity_id=item_id,
                    action="release",
                )
        return bool(result.rowcount)

    async def defer(self, item_id: uuid.UUID, until: datetime, reason: str) -> CallListItem:
        """Put a claimed item back, not to be claimed before ``until``, with the
        reason (outside calling hours). Raises :class:`Conflict` unless claimed."""
        async with self._db.write() as conn:
            row = (
                (
                    await conn.execute(
                        update(_i)
                        .where(_i.c.id == item_id, _i.c.state == CallListItemState.CLAIMED)
                        .values(
                            state=CallListItemState.PENDING,
                            next_attempt_at=until,
                            skip_reason=reason[:200],
                            claimed_by=None,
                            claimed_at=None,
                        )
                        .returning(_i)
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise Conflict(f"call list item {item_id} is not claimed; cannot defer")
            await audit(
                conn,
                actor=None,
                entity_type="call_list_item",
                entity_id=item_id,
                action="defer",
                changes={"until": until, "reason": reason},
            )
        return _item_from(row)

    async def release_claims(self, list_id: uuid.UUID, claimed_by: uuid.UUID | None) -> int:
        """Return the items of ``list_id`` claimed by ``claimed_by`` and never
        dialed to the queue (after a restart); returns how many."""
        who = _i.c.claimed_by.is_(None) if claimed_by is None else _i.c.claimed_by == claimed_by
        async with self._db.write() as conn:
            result = await conn.execute(
                update(_i)
                .where(_i.c.list_id == list_id, _i.c.state == CallListItemState.CLAIMED, who)
                .values(state=CallListItemState.PENDING, claimed_by=None, claimed_at=None)
            )
            if result.rowcount:
                await audit(
                    conn,
                    actor=None,
                    entity_type="call_list",
                    entity_id=list_id,
                    action="release_claimed",
                    changes={"count": result.rowcount},
                )
        return int(result.rowcount)

    async def pending_attempts(self, list_id: uuid.UUID) -> list[PendingAttempt]:
        """Items of ``list_id`` left ``dialing``, each with its newest call record."""
        async with self._db.read() as conn:
            items = (
                (
                    await conn.execute(
                        select(_i).where(
                            _i.c.list_id == list_id, _i.c.state == CallListItemState.DIALING
                        )
                    )
                )
                .mappings()
                .all()
            )
            out = []
            for item in items:
                call = (
                    (
                        await conn.execute(
                            select(_c)
                            .where(_c.c.dialer_item_id == item["id"])
                            .order_by(_c.c.created_at.desc())
                            .limit(1)
                        )
                    )
                    .mappings()
                    .one_or_none()
                )
                out.append(
                    PendingAttempt(_item_from(item), call_from(call) if call is not None else None)
                )
        return out

    async def remaining(self, list_id: uuid.UUID) -> int:
        """Items still to dial or being dialed (pending, claimed, dialing)."""
        async with self._db.read() as conn:
            count = await conn.scalar(
                select(func.count()).where(_i.c.list_id == list_id, _i.c.state.in_(_OPEN))
            )
        return int(count or 0)

    async def next_due(self, list_id: uuid.UUID) -> datetime | None:
        """The earliest ``next_attempt_at`` among pending items, ``None`` if none
        waits (or none is pending)."""
        async with self._db.read() as conn:
            due: datetime | None = await conn.scalar(
                select(func.min(_i.c.next_attempt_at)).where(
                    _i.c.list_id == list_id, _i.c.state == CallListItemState.PENDING
                )
            )
        return due

    async def oldest_claim(self, list_id: uuid.UUID) -> datetime | None:
        """When the oldest item of ``list_id`` still claimed (never dialed) was
        claimed, ``None`` if none is. A claimer dials within about one gap; a claim
        much older was left by a dialer that died, and is taken over after its lease
        (see :meth:`CallListsRepo.claim_next`)."""
        async with self._db.read() as conn:
            claimed: datetime | None = await conn.scalar(
                select(func.min(_i.c.claimed_at)).where(
                    _i.c.list_id == list_id, _i.c.state == CallListItemState.CLAIMED
                )
            )
        return claimed

    # ------------------------------------------------------------------ list building

    async def entries_from_clients(
        self,
        *,
        tags: Sequence[str] = (),
        owner: uuid.UUID | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> list[CallListEntry]:
        """One entry per phone of every client matching all the filters (every
        tag listed, responsible user, creation in ``[created_from, created_to)``),
        oldest client first."""
        cl, ph = m.clients, m.phones
        stmt = select(cl.c.id, ph.c.number_e164).join(ph, ph.c.client_id == cl.c.id)
        for tag in tags:
            stmt = stmt.where(
                select(m.client_tags.c.tag)
                .where(m.client_tags.c.client_id == cl.c.id, m.client_tags.c.tag == tag)
                .exists()
            )
        if owner is not None:
            stmt = stmt.where(cl.c.responsible_user_id == owner)
        if created_from is not None:
            stmt = stmt.where(cl.c.created_at >= created_from)
        if created_to is not None:
            stmt = stmt.where(cl.c.created_at < created_to)
        stmt = stmt.order_by(cl.c.created_at, cl.c.id, ph.c.number_e164)
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [CallListEntry(r.number_e164, client_id=r.id) for r in rows]

    async def entries_from_leads(
        self,
        *,
        statuses: Sequence[LeadStatus | str] = (),
        owner: uuid.UUID | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> list[CallListEntry]:
        """One entry per phone of every lead matching all the filters, oldest first."""
        ld, ph = m.leads, m.phones
        stmt = select(ld.c.id, ph.c.number_e164).join(ph, ph.c.lead_id == ld.c.id)
        if statuses:
            stmt = stmt.where(ld.c.status.in_([LeadStatus(s) for s in statuses]))
        if owner is not None:
            stmt = stmt.where(ld.c.owner_user_id == owner)
        if created_from is not None:
            stmt = stmt.where(ld.c.created_at >= created_from)
        if created_to is not None:
            stmt = stmt.where(ld.c.created_at < created_to)
        stmt = stmt.order_by(ld.c.created_at, ld.c.id, ph.c.number_e164)
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [CallListEntry(r.number_e164, lead_id=r.id) for r in rows]

    async def client_timezone(self, client_id: uuid.UUID) -> str | None:
        """The explicit time zone of a client, if it has one."""
        async with self._db.read() as conn:
            tz: str | None = await conn.scalar(
                select(m.clients.c.timezone).where(m.clients.c.id == client_id)
            )
        return tz

    def normalise(self, number: str) -> str | None:
        """``number`` in E.164 with the store's region, or ``None``."""
        return try_normalize_phone(number, self._db.region)
