"""Leads: prospective clients, from imports, web forms and unknown callers."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import phonenumbers
import structlog
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .. import _models as m
from .._base import (
    Actor,
    Database,
    audit,
    audit_sync,
    hydrate_leads,
    is_unique_violation,
    lead_from,
    load_client,
    load_lead,
)
from .._lookup import lookup_e164, lookup_e164_sync
from .._search import reindex, reindex_sync
from .._types import utcnow
from ..dto import CallerMatch, Client, Lead
from ..enums import ClientKind, LeadSource, LeadStatus, PhoneKind, Visibility
from ..exceptions import Conflict, NotFound
from ..ids import new_id
from ..phones import normalize_phone
from ._phones import PhoneInput, insert_phones, insert_phones_sync, normalise_inputs
from .clients import client_display_name

__all__ = ["LeadPage", "LeadRepository"]

#: The longest reason a lead can be closed with.
CLOSE_REASON_MAX = 500

log = structlog.get_logger(__name__)


def _lead_display_name(
    first_name: str | None, last_name: str | None, company_name: str | None, fallback: str
) -> str:
    return client_display_name(ClientKind.PERSON, first_name, last_name, company_name) or fallback


@dataclass(frozen=True, slots=True)
class LeadPage:
    """One page of a lead list and how many leads the whole list has."""

    leads: list[Lead]
    total: int


class LeadRepository:
    """Leads, the unowned lead pool, and conversion of leads into clients."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        company_name: str | None = None,
        emails: Iterable[str] = (),
        phones: Iterable[PhoneInput] = (),
        source: LeadSource = LeadSource.MANUAL,
        status: LeadStatus = LeadStatus.UNPROCESSED,
        owner_user_id: uuid.UUID | None = None,
        note: str | None = None,
        actor: Actor = None,
    ) -> Lead:
        """Create a lead. Without an owner it lands in the pool. Phone numbers are
        normalised (the first invalid one raises :class:`InvalidPhone`)."""
        numbers = normalise_inputs(phones, self._db.region)
        fallback = numbers[0][0] if numbers else (next(iter(emails), "") or "")
        display = _lead_display_name(first_name, last_name, company_name, fallback)
        if not display:
            raise ValueError("a lead needs a name, a company, a phone or an email")
        lead = await self._db.run_write(
            partial(
                _insert_lead,
                actor=actor,
                first_name=first_name,
                last_name=last_name,
                company_name=company_name,
                display_name=display,
                emails=list(emails),
                numbers=numbers,
                source=LeadSource(source),
                status=LeadStatus(status),
                owner_user_id=owner_user_id,
                note=note,
            )
        )
        log.info("lead_created", lead_id=str(lead.id), source=str(lead.source))
        return lead

    async def get(self, lead_id: uuid.UUID) -> Lead:
        """Return the lead with its phones, or raise :class:`NotFound`."""
        async with self._db.read() as conn:
            lead = await load_lead(conn, lead_id)
        if lead is None:
            raise NotFound("lead", lead_id)
        return lead

    async def update_status(
        self, lead_id: uuid.UUID, status: LeadStatus, *, actor: Actor = None
    ) -> Lead:
        status = LeadStatus(status)
        async with self._db.write() as conn:
            old = await conn.scalar(select(m.leads.c.status).where(m.leads.c.id == lead_id))
            if old is None:
                raise NotFound("lead", lead_id)
            await conn.execute(
                update(m.leads)
                .where(m.leads.c.id == lead_id)
                .values(status=status, updated_at=utcnow())
            )
            await audit(
                conn,
                actor=actor,
                entity_type="lead",
                entity_id=lead_id,
                action="status",
                changes={"from": old, "to": status},
            )
            lead = await load_lead(conn, lead_id)
        assert lead is not None
        return lead

    async def pool(self, limit: int = 50) -> list[Lead]:
        """Unowned, unprocessed leads, oldest first: the queue agents take from."""
        stmt = (
            select(m.leads)
            .where(
                m.leads.c.owner_user_id.is_(None),
                m.leads.c.status == LeadStatus.UNPROCESSED,
            )
            .order_by(m.leads.c.created_at, m.leads.c.id)
            .limit(limit)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
            result = []
            for row in rows:
                lead = await load_lead(conn, row["id"])
                if lead is not None:
                    result.append(lead)
        return result

    async def page(
        self,
        *,
        owner_user_id: uuid.UUID | None = None,
        unowned: bool = False,
        statuses: Iterable[LeadStatus] = (),
        source: LeadSource | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> LeadPage:
        """Leads newest first: the unowned ones (``unowned``, the pool "to process"),
        or those of ``owner_user_id`` ("my leads"), or all; narrowed to ``statuses``
        and to one ``source``. The pool reads ``ix_leads_pool`` backwards."""
        c = m.leads.c
        conds: list[Any] = []
        if unowned:
            conds.append(c.owner_user_id.is_(None))
        elif owner_user_id is not None:
            conds.append(c.owner_user_id == owner_user_id)
        wanted = [LeadStatus(s) for s in statuses]
        if wanted:
            conds.append(c.status.in_(wanted))
        if source is not None:
            conds.append(c.source == LeadSource(source))
        stmt = (
            select(m.leads)
            .where(*conds)
            .order_by(c.created_at.desc(), c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
            total = await conn.scalar(select(func.count()).select_from(m.leads).where(*conds))
            leads = await hydrate_leads(conn, rows)
        return LeadPage(leads, int(total or 0))

    async def close(
        self,
        lead_id: uuid.UUID,
        status: LeadStatus,
        *,
        reason: str | None = None,
        convert: bool = False,
        client_id: uuid.UUID | None = None,
        actor: Actor = None,
    ) -> Lead:
        """Close an open lead as ``done`` or ``unsuitable``, with ``reason``.

        ``done`` may convert the lead into a new client (``convert``, see
        :meth:`convert_to_client`) or link it to the existing ``client_id``, whose
        phones then include the lead's (caller lookup finds the client). An
        ``unsuitable`` lead needs a reason. Raises :class:`NotFound` (the lead, or
        the client), :class:`Conflict` if the lead is closed already, and
        ``ValueError`` for a request that makes no sense.
        """
        status = LeadStatus(status)
        if status.is_open:
            raise ValueError("a lead is closed as done or unsuitable")
        reason = (reason or "").strip() or None
        if status is LeadStatus.UNSUITABLE and (reason is None or convert or client_id):
            raise ValueError("an unsuitable lead needs a reason, and is not converted")
        if convert and client_id is not None:
            raise ValueError("convert into a new client or link to an existing one, not both")
        if reason is not None and len(reason) > CLOSE_REASON_MAX:
            raise ValueError(f"reason over {CLOSE_REASON_MAX} characters")
        if convert:
            await self._check_open(lead_id)
            await self.convert_to_client(lead_id, actor=actor)
        now = utcnow()
        async with self._db.write() as conn:
            row = (
                (
                    await conn.execute(
                        select(m.leads.c.status, m.leads.c.converted_client_id)
                        .where(m.leads.c.id == lead_id)
                        .with_for_update()
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NotFound("lead", lead_id)
            if not convert and not LeadStatus(row["status"]).is_open:
                raise Conflict(f"lead {lead_id} is closed already")
            values: dict[str, Any] = {
                "status": status,
                "close_reason": reason,
                "closed_at": now,
                "updated_at": now,
            }
            if client_id is not None:
                exists = await conn.scalar(
                    select(m.clients.c.id).where(m.clients.c.id == client_id)
                )
                if exists is None:
                    raise NotFound("client", client_id)
                values["converted_client_id"] = client_id
                await _copy_phones(conn, lead_id, client_id)
            await conn.execute(update(m.leads).where(m.leads.c.id == lead_id).values(values))
            await audit(
                conn,
                actor=actor,
                entity_type="lead",
                entity_id=lead_id,
                action="close",
                changes={
                    "from": row["status"],
                    "to": status,
                    "reason": reason,
                    **({"client_id": client_id} if client_id is not None else {}),
                },
            )
            lead = await load_lead(conn, lead_id)
        assert lead is not None
        log.info("lead_closed", lead_id=str(lead_id), status=str(status))
        return lead

    async def release(self, lead_id: uuid.UUID, *, actor: Actor = None) -> Lead:
        """Give an open lead back to the pool (no owner, ``unprocessed``)."""
        async with self._db.write() as conn:
            result = await conn.execute(
                update(m.leads)
                .where(
                    m.leads.c.id == lead_id,
                    m.leads.c.status.in_([LeadStatus.UNPROCESSED, LeadStatus.IN_PROGRESS]),
                )
                .values(owner_user_id=None, status=LeadStatus.UNPROCESSED, updated_at=utcnow())
            )
            if result.rowcount == 0:
                await self._raise_missing_or_closed(conn, lead_id)
            await audit(conn, actor=actor, entity_type="lead", entity_id=lead_id, action="release")
            lead = await load_lead(conn, lead_id)
        assert lead is not None
        return lead

    async def _check_open(self, lead_id: uuid.UUID) -> None:
        lead = await self.get(lead_id)
        if not lead.status.is_open:
            raise Conflict(f"lead {lead_id} is closed already")

    @staticmethod
    async def _raise_missing_or_closed(conn: Any, lead_id: uuid.UUID) -> None:
        exists = await conn.scalar(select(m.leads.c.id).where(m.leads.c.id == lead_id))
        if exists is None:
            raise NotFound("lead", lead_id)
        raise Conflict(f"lead {lead_id} is closed already")

    async def take(self, lead_id: uuid.UUID, user_id: uuid.UUID, *, actor: Actor = None) -> Lead:
        """Give an unowned lead to ``user_id`` and mark it ``in_progress``.

        Atomic: one ``UPDATE ... WHERE owner_user_id IS NULL``, so of two agents
        taking the same lead exactly one succeeds; the other gets :class:`Conflict`.
        Raises :class:`NotFound` if the lead does not exist.
        """
        async with self._db.write() as conn:
            result = await conn.execute(
                update(m.leads)
                .where(m.leads.c.id == lead_id, m.leads.c.owner_user_id.is_(None))
                .values(
                    owner_user_id=user_id,
                    status=LeadStatus.IN_PROGRESS,
                    updated_at=utcnow(),
                )
            )
            if result.rowcount == 0:
                exists = await conn.scalar(select(m.leads.c.id).where(m.leads.c.id == lead_id))
                if exists is None:
                    raise NotFound("lead", lead_id)
                raise Conflict(f"lead {lead_id} is already owned")
            await audit(
                conn,
                actor=actor if actor is not None else user_id,
                entity_type="lead",
                entity_id=lead_id,
                action="take",
                changes={"owner_user_id": user_id},
            )
            lead = await load_lead(conn, lead_id)
        assert lead is not None
        log.info("lead_taken", lead_id=str(lead_id), user_id=str(user_id))
        return lead

    async def name_unnamed(
        self,
        lead_id: uuid.UUID,
        *,
        first_name: str,
        owner_user_id: uuid.UUID,
        note: str | None = None,
        actor: Actor = None,
    ) -> Lead | None:
        """Give a name to a lead that has none (one created from an unknown
        caller's number), and to ``owner_user_id`` if it has no owner; ``None``
        if the lead has a name already (it is left as it is).

        For "create lead" on a call whose caller was made a lead automatically:
        the agent names that lead rather than making a second one. Raises
        :class:`NotFound` if the lead does not exist.
        """
        c = m.leads.c
        async with self._db.write() as conn:
            row = (
                (
                    await conn.execute(
                        select(c.first_name, c.last_name, c.company_name, c.owner_user_id, c.note)
                        .where(c.id == lead_id)
                        .with_for_update()
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NotFound("lead", lead_id)
            if row["first_name"] or row["last_name"] or row["company_name"]:
                return None
            values: dict[str, Any] = {
                "first_name": first_name,
                "display_name": _lead_display_name(first_name, None, None, first_name),
                "owner_user_id": row["owner_user_id"] or owner_user_id,
                "updated_at": utcnow(),
            }
            if note:
                values["note"] = f"{row['note']}\n{note}" if row["note"] else note
            await conn.execute(update(m.leads).where(c.id == lead_id).values(values))
            await reindex(conn, lead_id=lead_id)
            await audit(
                conn,
                actor=actor,
                entity_type="lead",
                entity_id=lead_id,
                action="name",
                changes={k: v for k, v in values.items() if k != "updated_at"},
            )
            lead = await load_lead(conn, lead_id)
        assert lead is not None
        log.info("lead_named", lead_id=str(lead_id))
        return lead

    async def give_if_unowned(
        self, lead_id: uuid.UUID, user_id: uuid.UUID, *, actor: Actor = None
    ) -> Lead | None:
        """Make ``user_id`` the owner of the lead if it has none; return the lead, or
        ``None`` if it already had an owner (who keeps it).

        For a lead created by an inbound call, given to the agent who answered it.
        Atomic like :meth:`take` (one ``UPDATE ... WHERE owner_user_id IS NULL``), but
        the status is left as it is: what the call achieved is the agent's to say.
        Raises :class:`NotFound` if the lead does not exist.
        """
        async with self._db.write() as conn:
            result = await conn.execute(
                update(m.leads)
                .where(m.leads.c.id == lead_id, m.leads.c.owner_user_id.is_(None))
                .values(owner_user_id=user_id, updated_at=utcnow())
            )
            if result.rowcount == 0:
                exists = await conn.scalar(select(m.leads.c.id).where(m.leads.c.id == lead_id))
                if exists is None:
                    raise NotFound("lead", lead_id)
                return None
            await audit(
                conn,
                actor=actor,
                entity_type="lead",
                entity_id=lead_id,
                action="owner",
                changes={"owner_user_id": user_id},
            )
            lead = await load_lead(conn, lead_id)
        assert lead is not None
        log.info("lead_given", lead_id=str(lead_id), user_id=str(user_id))
        return lead

    async def convert_to_client(self, lead_id: uuid.UUID, *, actor: Actor = None) -> Client:
        """Turn a lead into a client, in one transaction.

        The client is a person when the lead has a first or last name, a company
        otherwise; it gets the lead's emails and a copy of its phones, and the lead's
        owner becomes its responsible user. The lead is kept, marked ``done`` with
        ``converted_client_id`` set (caller lookup prefers the client from then on).
        Raises :class:`Conflict` if the lead was already converted.
        """
        async with self._db.write() as conn:
            row = (
                (await conn.execute(select(m.leads).where(m.leads.c.id == lead_id)))
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NotFound("lead", lead_id)
            if row["converted_client_id"] is not None:
                raise Conflict(f"lead {lead_id} was already converted")
            person = bool(row["first_name"] or row["last_name"])
            kind = ClientKind.PERSON if person else ClientKind.COMPANY
            company = row["company_name"] or (None if person else row["display_name"])
            now = utcnow()
            client_id = new_id()
            values: dict[str, Any] = {
                "id": client_id,
                "kind": kind,
                "first_name": row["first_name"],
                "last_name": row["last_name"],
                "company_name": company,
                "display_name": client_display_name(
                    kind, row["first_name"], row["last_name"], company
                ),
                "emails": list(row["emails"] or ()),
                "custom_fields": {},
                "responsible_user_id": row["owner_user_id"],
                "visibility": Visibility.SHARED,
                "created_at": now,
                "updated_at": now,
            }
            await conn.execute(m.clients.insert().values(values))
            numbers = (
                await conn.execute(
                    select(m.phones.c.number_e164, m.phones.c.kind).where(
                        m.phones.c.lead_id == lead_id
                    )
                )
            ).all()
            await insert_phones(conn, [(n, k) for n, k in numbers], client_id=client_id)
            await reindex(conn, client_id=client_id)
            await conn.execute(
                update(m.leads)
                .where(m.leads.c.id == lead_id)
                .values(converted_client_id=client_id, status=LeadStatus.DONE, updated_at=now)
            )
            await audit(
                conn,
                actor=actor,
                entity_type="client",
                entity_id=client_id,
                action="create",
                changes={"from_lead": lead_id, "kind": kind},
            )
            await audit(
                conn,
                actor=actor,
                entity_type="lead",
                entity_id=lead_id,
                action="convert",
                changes={"client_id": client_id},
            )
            client = await load_client(conn, client_id)
        assert client is not None
        log.info("lead_converted", lead_id=str(lead_id), client_id=str(client_id))
        return client

    async def find_or_create_for_number(
        self,
        number: str,
        source: LeadSource,
        owner: uuid.UUID | None = None,
        *,
        actor: Actor = None,
    ) -> tuple[CallerMatch, bool]:
        """Return the client or lead owning ``number``, creating a lead if nobody does.

        Returns ``(match, created)``. Exactly one lead is created per unknown number
        even when several calls from it arrive at once, in this process or in other
        daemons sharing the database: the new lead's ``origin_number`` is unique, so a
        concurrent second insert fails and the loser returns the winner's lead. On
        SQLite the check and the insert also run under ``BEGIN IMMEDIATE``.
        Raises :class:`InvalidPhone` for a number that cannot be normalised
        (withheld and anonymous callers cannot become leads).
        """
        e164 = normalize_phone(number, self._db.region)
        match = await self._lookup(e164)
        if match is not None:
            return match, False
        parsed = phonenumbers.parse(e164)
        display = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)

        def create(conn: Connection) -> CallerMatch | Lead:
            # Under the write lock (SQLite) the number is checked again: another
            # call may have created its lead since the lookup above.
            known = lookup_e164_sync(conn, e164)
            if known is not None:
                return known
            return _insert_lead(
                conn,
                actor=actor,
                display_name=display,
                emails=[],
                numbers=[(e164, PhoneKind.OTHER)],
                source=LeadSource(source),
                status=LeadStatus.UNPROCESSED,
                owner_user_id=owner,
                origin_number=e164,
            )

        try:
            created = await self._db.run_write(create)
        except IntegrityError as exc:
            if not is_unique_violation(exc):
                raise
            return await self._winner(e164), False
        if isinstance(created, CallerMatch):
            return created, False
        lead = created
        log.info("lead_created_for_number", lead_id=str(lead.id), source=str(source))
        return CallerMatch(
            kind="lead", id=lead.id, display_name=lead.display_name, phone=e164, lead=lead
        ), True

    async def _lookup(self, e164: str) -> CallerMatch | None:
        if self._db.lookup_hook is not None:
            return await self._db.lookup_hook(e164)
        async with self._db.read() as conn:
            return await lookup_e164(conn, e164)

    async def _winner(self, e164: str) -> CallerMatch:
        async with self._db.read() as conn:
            match = await lookup_e164(conn, e164)
            if match is not None:
                return match
            # The number's phone row was removed from the auto-created lead since;
            # the lead itself is still the answer.
            lead_id = await conn.scalar(select(m.leads.c.id).where(m.leads.c.origin_number == e164))
            lead = None if lead_id is None else await load_lead(conn, lead_id)
        if lead is None:
            raise Conflict(f"lead for {e164} vanished while being created")
        return CallerMatch(
            kind="lead", id=lead.id, display_name=lead.display_name, phone=e164, lead=lead
        )


async def _copy_phones(conn: Any, lead_id: uuid.UUID, client_id: uuid.UUID) -> None:
    """Give the client the lead's numbers it does not have yet."""
    have = set(
        (
            await conn.execute(
                select(m.phones.c.number_e164).where(m.phones.c.client_id == client_id)
            )
        ).scalars()
    )
    numbers = [
        (n, k)
        for n, k in (
            await conn.execute(
                select(m.phones.c.number_e164, m.phones.c.kind).where(m.phones.c.lead_id == lead_id)
            )
        ).all()
        if n not in have
    ]
    if numbers:
        await insert_phones(conn, numbers, client_id=client_id)
        await reindex(conn, client_id=client_id)


def _insert_lead(
    conn: Connection,
    *,
    actor: Actor,
    display_name: str,
    emails: list[str],
    numbers: list[tuple[str, PhoneKind]],
    source: LeadSource,
    status: LeadStatus,
    owner_user_id: uuid.UUID | None,
    first_name: str | None = None,
    last_name: str | None = None,
    company_name: str | None = None,
    note: str | None = None,
    origin_number: str | None = None,
) -> Lead:
    """Insert a lead with its phones and audit row; return it without reading it back."""
    now = utcnow()
    values: dict[str, Any] = {
        "id": new_id(),
        "first_name": first_name,
        "last_name": last_name,
        "company_name": company_name,
        "display_name": display_name,
        "emails": emails,
        "source": source,
        "status": status,
        "owner_user_id": owner_user_id,
        "origin_number": origin_number,
        "note": note,
        "created_at": now,
        "updated_at": now,
    }
    row = conn.execute(m.leads.insert().values(values).returning(m.leads)).mappings().one()
    phones = insert_phones_sync(conn, numbers, lead_id=values["id"])
    reindex_sync(conn, lead_id=values["id"])
    audit_sync(
        conn,
        actor=actor,
        entity_type="lead",
        entity_id=values["id"],
        action="create",
        changes={
            **{k: v for k, v in values.items() if k not in ("id", "updated_at")},
            "phones": [n for n, _ in numbers],
        },
    )
    return lead_from(row, phones)
