"""Contacts across clients and leads: search, cards' last calls, call history.

Read-only queries for the widget and the HTTP API. Rights are not decided here:
the caller passes who may see private clients (``viewer``) and whose calls
(``agent_user_id``); :mod:`ws_gateway.rights` decides what to pass.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import and_, exists, func, or_, select, true
from sqlalchemy.engine import RowMapping

from .. import _models as m
from .._base import Database, call_from, hydrate_clients, hydrate_leads
from .._search import MIN_PHONE_DIGITS, PHONE_MARK, TERM_MAX, prefix_range, query_words
from ..dto import Call, Client, Lead
from ..enums import CallDirection, Visibility

__all__ = ["CallPage", "ContactRef", "ContactRepository", "HistoryEntry", "SearchHit"]

_DIGITS = re.compile(r"[0-9]")
#: Owners read for the driving word when other words narrow them down, and alone.
_DRIVER_CAP = 2_000
_SINGLE_CAP = 1_000


@dataclass(frozen=True, slots=True)
class ContactRef:
    """The client or lead a call is linked to."""

    kind: Literal["client", "lead"]
    id: uuid.UUID
    display_name: str


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result: exactly one of ``client`` and ``lead`` is set."""

    kind: Literal["client", "lead"]
    client: Client | None = None
    lead: Lead | None = None

    @property
    def display_name(self) -> str:
        owner = self.client or self.lead
        assert owner is not None
        return owner.display_name


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    call: Call
    contact: ContactRef | None


@dataclass(frozen=True, slots=True)
class CallPage:
    """A page of call history, newest first; ``next`` is ``(created_at, id)`` of
    the last entry when more may follow, to pass as ``before``."""

    entries: list[HistoryEntry]
    next: tuple[datetime, uuid.UUID] | None


class ContactRepository:
    """Queries across clients, leads and their calls."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def search(
        self, text: str, *, viewer: uuid.UUID | None, sees_all: bool, limit: int = 20
    ) -> list[SearchHit]:
        """Clients and leads matching ``text``, by display name, at most ``limit``.

        Every word of ``text`` must begin a word of the name or company, or an
        email (or one of its parts); or, when ``text`` has at least three digits,
        its digits must appear in one of the phone numbers. Case and accents do
        not matter. Private clients are included only when ``sees_all`` or
        ``viewer`` is their responsible user. ``text`` is bound, never spliced.
        Each match is an indexed range scan of ``search_terms``.
        """
        words = query_words(text)
        digits = "".join(_DIGITS.findall(text))[:TERM_MAX]
        c, lead_t = m.clients, m.leads
        client_match = _matching(c.c.id, m.search_terms.c.client_id, words, digits)
        lead_match = _matching(lead_t.c.id, m.search_terms.c.lead_id, words, digits)
        if client_match is None or lead_match is None:
            return []
        if not sees_all:
            client_match = and_(client_match, visible_clients(viewer, sees_all=False))
        client_stmt = select(c).where(client_match).order_by(c.c.display_name, c.c.id).limit(limit)
        lead_stmt = (
            select(lead_t)
            .where(lead_match)
            .order_by(lead_t.c.display_name, lead_t.c.id)
            .limit(limit)
        )
        async with self._db.read() as conn:
            client_rows = (await conn.execute(client_stmt)).mappings().all()
            lead_rows = (await conn.execute(lead_stmt)).mappings().all()
            ranked: list[tuple[str, int, RowMapping]] = [
                (r["display_name"].casefold(), 0, r) for r in client_rows
            ] + [(r["display_name"].casefold(), 1, r) for r in lead_rows]
            ranked.sort(key=lambda t: (t[0], t[1], t[2]["id"]))
            kept = ranked[:limit]
            clients = iter(await hydrate_clients(conn, [r for _, w, r in kept if w == 0]))
            leads = iter(await hydrate_leads(conn, [r for _, w, r in kept if w == 1]))
        return [
            SearchHit("client", client=next(clients))
            if which == 0
            else SearchHit("lead", lead=next(leads))
            for _, which, _row in kept
        ]

    async def history(
        self,
        *,
        agent_user_id: uuid.UUID | None = None,
        client_id: uuid.UUID | None = None,
        lead_id: uuid.UUID | None = None,
        direction: CallDirection | None = None,
        missed: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before: tuple[datetime, uuid.UUID] | None = None,
        limit: int = 25,
    ) -> CallPage:
        """Calls newest first, filtered, with keyset paging (``before`` is the
        ``next`` of the previous page). ``missed``: an inbound call that ended
        unanswered (``False``: every other call)."""
        k = m.calls
        conds: list[Any] = []
        if agent_user_id is not None:
            conds.append(k.c.agent_user_id == agent_user_id)
        if client_id is not None:
            conds.append(k.c.client_id == client_id)
        if lead_id is not None:
            conds.append(k.c.lead_id == lead_id)
        if direction is not None:
            conds.append(k.c.direction == direction)
        is_missed = and_(
            k.c.direction == CallDirection.INBOUND,
            k.c.answered_at.is_(None),
            k.c.ended_at.is_not(None),
        )
        if missed is True:
            conds.append(is_missed)
        elif missed is False:
            conds.append(~is_missed)
        if since is not None:
            conds.append(k.c.created_at >= since)
        if until is not None:
            conds.append(k.c.created_at < until)
        if before is not None:
            at, last_id = before
            conds.append(or_(k.c.created_at < at, and_(k.c.created_at == at, k.c.id < last_id)))
        stmt = (
            select(
                k,
                m.clients.c.display_name.label("_client_name"),
                m.leads.c.display_name.label("_lead_name"),
            )
            .outerjoin(m.clients, m.clients.c.id == k.c.client_id)
            .outerjoin(m.leads, m.leads.c.id == k.c.lead_id)
            .where(*conds)
            .order_by(k.c.created_at.desc(), k.c.id.desc())
            .limit(limit + 1)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        entries = [_entry(r) for r in rows[:limit]]
        more = len(rows) > limit and entries
        last = entries[-1].call if more else None
        return CallPage(entries, (last.created_at, last.id) if last is not None else None)

    async def entry(self, call_id: uuid.UUID) -> HistoryEntry | None:
        """One call with its contact, or ``None``."""
        k = m.calls
        stmt = (
            select(
                k,
                m.clients.c.display_name.label("_client_name"),
                m.leads.c.display_name.label("_lead_name"),
            )
            .outerjoin(m.clients, m.clients.c.id == k.c.client_id)
            .outerjoin(m.leads, m.leads.c.id == k.c.lead_id)
            .where(k.c.id == call_id)
        )
        async with self._db.read() as conn:
            row = (await conn.execute(stmt)).mappings().one_or_none()
        return None if row is None else _entry(row)

    async def call_list_progress(self) -> list[tuple[uuid.UUID, str, int, int]]:
        """Every call list: ``(id, name, total items, items done)``, by name; an
        item is done once it needs no more dialing (done, failed, skipped, invalid)."""
        i = m.call_list_items
        finished = ("done", "failed", "skipped", "invalid")
        stmt = (
            select(
                m.call_lists.c.id,
                m.call_lists.c.name,
                func.count(i.c.id),
                func.count(i.c.id).filter(i.c.state.in_(finished)),
            )
            .outerjoin(i, i.c.list_id == m.call_lists.c.id)
            .group_by(m.call_lists.c.id, m.call_lists.c.name)
            .order_by(m.call_lists.c.name, m.call_lists.c.id)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]


def visible_clients(viewer: uuid.UUID | None, *, sees_all: bool) -> Any:
    """The condition on ``clients`` rows ``viewer`` may see (see
    :meth:`ClientRepository.visible_to`)."""
    c = m.clients
    if sees_all:
        return true()
    if viewer is None:
        return c.c.visibility == Visibility.SHARED
    shared_with = exists(
        select(m.client_access.c.client_id).where(
            m.client_access.c.client_id == c.c.id, m.client_access.c.user_id == viewer
        )
    )
    return or_(c.c.visibility == Visibility.SHARED, c.c.responsible_user_id == viewer, shared_with)


def _matching(owner_id: Any, owner: Any, words: list[str], digits: str) -> Any:
    """The condition on ``owner_id`` (``clients.c.id``...) for an owner (``owner``, a
    column of ``search_terms``) matching every word, or whose phones hold
    ``digits``; ``None`` when the search can match nothing.

    The longest word drives (the most selective, as a rule): its owners are read
    from the index, at most :data:`_DRIVER_CAP` of them (a single broad word, "a",
    yields the first owners in term order, not all); the other words are then
    checked per owner on the owner's own index.
    """
    t = m.search_terms

    def in_range(prefix: str) -> Any:
        low, high = prefix_range(prefix)
        return and_(t.c.term >= low, t.c.term < high)

    def candidates(prefix: str, cap: int) -> Any:
        return owner_id.in_(select(owner).where(owner.is_not(None), in_range(prefix)).limit(cap))

    parts: list[Any] = []
    if words:
        unique = sorted(dict.fromkeys(words), key=len, reverse=True)
        driver, others = unique[0], unique[1:]
        cap = _DRIVER_CAP if others else _SINGLE_CAP
        parts.append(
            and_(
                candidates(driver, cap),
                *(exists(select(owner).where(owner == owner_id, in_range(w))) for w in others),
            )
        )
    if len(digits) >= MIN_PHONE_DIGITS:
        parts.append(candidates(PHONE_MARK + digits, _SINGLE_CAP))
    if not parts:
        return None
    return or_(*parts)


def _entry(row: RowMapping) -> HistoryEntry:
    call = call_from(row)
    contact: ContactRef | None = None
    if call.client_id is not None and row["_client_name"] is not None:
        contact = ContactRef("client", call.client_id, row["_client_name"])
    elif call.lead_id is not None and row["_lead_name"] is not None:
        contact = ContactRef("lead", call.lead_id, row["_lead_name"])
    return HistoryEntry(call, contact)
