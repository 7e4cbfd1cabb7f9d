"""Dialer call lists and the atomic hand-out of their numbers."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from .. import _models as m
from .._base import Actor, Database, audit, call_list_from, item_from
from .._engine import is_sqlite
from .._types import utcnow
from ..dto import CallList, CallListEntry, CallListItem, CallListReport
from ..enums import CallEndReason, CallListItemState
from ..exceptions import Conflict, InvalidPhone, NotFound
from ..ids import new_id
from ..phones import normalize_phone

__all__ = ["CallListRepository"]

log = structlog.get_logger(__name__)

_i = m.call_list_items
_INSERT_CHUNK = 500


class CallListRepository:
    """Call lists for the auto-dialer.

    Each number is handed to exactly one dialer by :meth:`claim_next`, and its state is
    stored, so a restarted daemon resumes a list without dialing anyone twice.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_list(
        self,
        name: str,
        owner: uuid.UUID | None,
        entries: Iterable[str | CallListEntry],
        *,
        settings: Mapping[str, Any] | None = None,
        actor: Actor = None,
    ) -> tuple[CallList, CallListReport]:
        """Create a list from numbers (or :class:`CallListEntry` objects).

        Every number is normalised with the store's region. Numbers that do not
        normalise are kept as items in state ``invalid`` with the reason, so the
        import can be reviewed; a number repeated in the input is merged into its
        first occurrence. The whole list is written in one transaction.
        """
        list_id = new_id()
        now = utcnow()
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        invalid: list[tuple[str, str]] = []
        total = duplicates = 0
        for entry in entries:
            total += 1
            if isinstance(entry, str):
                entry = CallListEntry(entry)
            try:
                e164: str | None = normalize_phone(entry.number, self._db.region)
                reason = None
            except InvalidPhone as exc:
                e164, reason = None, exc.reason
                invalid.append((entry.number, reason))
            if e164 is not None:
                if e164 in seen:
                    duplicates += 1
                    continue
                seen.add(e164)
            items.append(
                {
                    "id": new_id(),
                    "list_id": list_id,
                    "position": len(items),
                    "number_e164": e164,
                    "raw_number": entry.number[:64],
                    "invalid_reason": reason,
                    "client_id": entry.client_id,
                    "lead_id": entry.lead_id,
                    "state": (CallListItemState.PENDING if e164 else CallListItemState.INVALID),
                    "attempts": 0,
                }
            )
        report = CallListReport(
            total=total, added=len(items), duplicates=duplicates, invalid=tuple(invalid)
        )
        async with self._db.write() as conn:
            row = (
                (
                    await conn.execute(
                        m.call_lists.insert()
                        .values(
                            id=list_id,
                            name=name,
                            owner_user_id=owner,
                            settings=dict(settings or {}),
                            created_at=now,
                        )
                        .returning(m.call_lists)
                    )
                )
                .mappings()
                .one()
            )
            for start in range(0, len(items), _INSERT_CHUNK):
                await conn.execute(_i.insert(), items[start : start + _INSERT_CHUNK])
            await audit(
                conn,
                actor=actor,
                entity_type="call_list",
                entity_id=list_id,
                action="create",
                changes={
                    "name": name,
                    "total": total,
                    "added": len(items),
                    "duplicates": duplicates,
                    "invalid": len(invalid),
                },
            )
        log.info(
            "call_list_created",
            list_id=str(list_id),
            items=len(items),
            duplicates=duplicates,
            invalid=len(invalid),
        )
        return call_list_from(row), report

    async def get_list(self, list_id: uuid.UUID) -> CallList:
        async with self._db.read() as conn:
            row = (
                (await conn.execute(select(m.call_lists).where(m.call_lists.c.id == list_id)))
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise NotFound("call_list", list_id)
        return call_list_from(row)

    async def claim_next(
        self,
        list_id: uuid.UUID,
        user_id: uuid.UUID | None,
        now: datetime | None = None,
        *,
        lease: timedelta | None = None,
    ) -> CallListItem | None:
        """Atomically claim the next pending item due at ``now``, or return ``None``.

        With a ``lease``, an item claimed (and never dialed) longer ago than the lease
        counts as pending too: its claimer, a daemon killed between claim and dial,
        left it behind. A live claimer moves its item to ``dialing`` well within the
        lease, and :meth:`DialerStore.start_attempt` refuses an item whose claim was
        taken over, so a number is still dialed once.

        No item is ever handed to two claimers, across connections, processes and
        hosts. On PostgreSQL the candidate row is locked with ``FOR UPDATE SKIP
        LOCKED`` (concurrent claimers skip it instead of queueing behind it) and then
        updated. On SQLite one ``UPDATE ... WHERE id = (SELECT ...) AND state =
        'pending' RETURNING`` runs under ``BEGIN IMMEDIATE``, which serialises writers.
        Cancellation before commit rolls back: the item stays pending.
        """
        when = now or utcnow()
        claimable = and_(
            _i.c.state == CallListItemState.PENDING,
            or_(_i.c.next_attempt_at.is_(None), _i.c.next_attempt_at <= when),
        )
        if lease is not None:
            stale = and_(_i.c.state == CallListItemState.CLAIMED, _i.c.claimed_at <= when - lease)
            claimable = or_(claimable, stale)
        due = (_i.c.list_id == list_id, claimable)
        claim = {"state": CallListItemState.CLAIMED, "claimed_by": user_id, "claimed_at": when}
        async with self._db.write() as conn:
            if is_sqlite(self._db.engine):
                candidate = select(_i.c.id).where(*due).order_by(_i.c.position).limit(1)
                stmt = update(_i).where(_i.c.id == candidate.scalar_subquery(), claimable)
            else:
                item_id = await conn.scalar(
                    select(_i.c.id)
                    .where(*due)
                    .order_by(_i.c.position)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
                if item_id is None:
                    return None
                stmt = update(_i).where(_i.c.id == item_id)
            row = (await conn.execute(stmt.values(claim).returning(_i))).mappings().one_or_none()
            if row is None:
                return None
            await audit(
                conn,
                actor=user_id,
                entity_type="call_list_item",
                entity_id=row["id"],
                action="claim",
                changes={"list_id": list_id},
            )
        return item_from(row)

    async def mark_dialing(self, item_id: uuid.UUID) -> CallListItem:
        """Record that the call for a claimed item was placed. Raises
        :class:`Conflict` unless the item is ``claimed``."""
        return await self._transition(
            item_id,
            "dialing",
            {CallListItemState.CLAIMED},
            {"state": CallListItemState.DIALING},
        )

    async def record_result(
        self,
        item_id: uuid.UUID,
        result: CallEndReason | str,
        call_id: uuid.UUID | None,
        *,
        retry_at: datetime | None = None,
    ) -> CallListItem:
        """Store the outcome of an attempt and count it.

        With ``retry_at`` the item goes back to ``pending`` and is not claimed again
        before that time. Otherwise it becomes ``done`` when the call was answered
        (``completed``) and ``failed`` for any other result.
        """
        result_text = str(result)
        if retry_at is not None:
            state = CallListItemState.PENDING
        elif result_text == CallEndReason.COMPLETED.value:
            state = CallListItemState.DONE
        else:
            state = CallListItemState.FAILED
        return await self._transition(
            item_id,
            "result",
            {CallListItemState.CLAIMED, CallListItemState.DIALING},
            {
                "state": state,
                "last_result": result_text,
                "last_call_id": call_id,
                "next_attempt_at": retry_at,
                "attempts": _i.c.attempts + 1,
                "claimed_by": None,
                "claimed_at": None,
            },
        )

    async def skip(self, item_id: uuid.UUID, reason: str, *, actor: Actor = None) -> CallListItem:
        """Take a pending or claimed item out of the list with a reason."""
        return await self._transition(
            item_id,
            "skip",
            {CallListItemState.PENDING, CallListItemState.CLAIMED},
            {"state": CallListItemState.SKIPPED, "skip_reason": reason},
            actor=actor,
        )

    async def release_claimed(self, list_id: uuid.UUID) -> int:
        """Return claimed items that were never dialed to ``pending``; returns how
        many. Items already ``dialing`` are left alone: their call may have reached
        the customer, and dialing them again could call someone twice."""
        async with self._db.write() as conn:
            result = await conn.execute(
                update(_i)
                .where(_i.c.list_id == list_id, _i.c.state == CallListItemState.CLAIMED)
                .values(state=CallListItemState.PENDING, claimed_by=None, claimed_at=None)
            )
            count = result.rowcount
            if count:
                await audit(
                    conn,
                    actor=None,
                    entity_type="call_list",
                    entity_id=list_id,
                    action="release_claimed",
                    changes={"count": count},
                )
        return count

    async def items(self, list_id: uuid.UUID) -> list[CallListItem]:
        """All items of the list in position order."""
        async with self._db.read() as conn:
            rows = (
                (
                    await conn.execute(
                        select(_i).where(_i.c.list_id == list_id).order_by(_i.c.position)
                    )
                )
                .mappings()
                .all()
            )
        return [item_from(r) for r in rows]

    async def progress(self, list_id: uuid.UUID) -> dict[CallListItemState, int]:
        """Number of items in each state (states with no item are absent)."""
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(_i.c.state, func.count()).where(_i.c.list_id == list_id).group_by(_i.c.state)
            )
            return {CallListItemState(state): count for state, count in rows}

    async def _transition(
        self,
        item_id: uuid.UUID,
        action: str,
        allowed: set[CallListItemState],
        values: dict[str, Any],
        *,
        actor: Actor = None,
    ) -> CallListItem:
        async with self._db.write() as conn:
            row = (
                (
                    await conn.execute(
                        update(_i)
                        .where(_i.c.id == item_id, _i.c.state.in_(allowed))
                        .values(values)
                        .returning(_i)
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                await self._raise_for(conn, item_id, action)
            assert row is not None
            await audit(
                conn,
                actor=actor,
                entity_type="call_list_item",
                entity_id=item_id,
                action=action,
                changes={k: v for k, v in values.items() if k != "attempts"},
            )
        return item_from(row)

    @staticmethod
    async def _raise_for(conn: AsyncConnection, item_id: uuid.UUID, action: str) -> None:
        state = await conn.scalar(select(_i.c.state).where(_i.c.id == item_id))
        if state is None:
            raise NotFound("call_list_item", item_id)
        raise Conflict(f"call list item {item_id} is {state}; cannot {action}")
