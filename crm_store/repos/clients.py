"""Clients: people and companies the call centre works with."""

from __future__ import annotations

import uuid
import zoneinfo
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, cast

import structlog
from sqlalchemy import ColumnElement, delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError

from .. import _models as m
from .._base import (
    Actor,
    Database,
    audit,
    conflict_from,
    hydrate_clients,
    is_unique_violation,
    load_client,
    phone_from,
)
from .._search import TERM_MAX, query_words, reindex
from .._types import utcnow
from ..dto import Address, Client, Phone
from ..enums import ClientKind, CustomFieldType, PhoneKind, Visibility
from ..exceptions import NotFound
from ..ids import new_id
from ._phones import PhoneInput, insert_phones, normalise_inputs
from .contacts import _matching, visible_clients

__all__ = [
    "ClientFilter",
    "ClientNote",
    "ClientPage",
    "ClientRepository",
    "ClientSort",
    "FieldCondition",
    "client_display_name",
]

log = structlog.get_logger(__name__)


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


def client_display_name(
    kind: ClientKind, first_name: str | None, last_name: str | None, company_name: str | None
) -> str:
    """The name shown and searched: "First Last" for a person, the name for a company."""
    if kind is ClientKind.PERSON:
        full = " ".join(p for p in (first_name, last_name) if p)
        if full:
            return full
    return company_name or ""


def _check_timezone(tz: str | None) -> None:
    if tz is None:
        return
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {tz!r}") from None


def _address_values(address: Address) -> dict[str, str | None]:
    return {
        "address_street": address.street,
        "address_postcode": address.postcode,
        "address_city": address.city,
        "address_region": address.region,
        "address_country": address.country,
    }


class ClientRepository:
    """Clients with their phones (normalised to E.164) and tags."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        kind: ClientKind,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        name: str | None = None,
        company_id: uuid.UUID | None = None,
        emails: Iterable[str] = (),
        phones: Iterable[PhoneInput] = (),
        address: Address | None = None,
        tags: Iterable[str] = (),
        custom_fields: Mapping[str, Any] | None = None,
        responsible_user_id: uuid.UUID | None = None,
        visibility: Visibility = Visibility.SHARED,
        timezone: str | None = None,
        website: str | None = None,
        shared_with: Iterable[uuid.UUID] = (),
        actor: Actor = None,
    ) -> Client:
        """Create a client.

        A person has ``first_name``/``last_name`` and may belong to the company client
        ``company_id``; a company has ``name``. Phone numbers are normalised with the
        store's region; the first invalid one raises :class:`InvalidPhone` and nothing
        is written. ``timezone`` must be an IANA zone name (``ValueError`` otherwise).
        """
        kind = ClientKind(kind)
        display = client_display_name(kind, first_name, last_name, name)
        if not display:
            raise ValueError("a client needs a first or last name, or a company name")
        _check_timezone(timezone)
        numbers = normalise_inputs(phones, self._db.region)
        now = utcnow()
        values: dict[str, Any] = {
            "id": new_id(),
            "kind": kind,
            "first_name": first_name,
            "last_name": last_name,
            "company_name": name,
            "display_name": display,
            "company_id": company_id,
            "emails": list(emails),
            **_address_values(address or Address()),
            "custom_fields": dict(custom_fields or {}),
            "responsible_user_id": responsible_user_id,
            "visibility": Visibility(visibility),
            "timezone": timezone,
            "website": website,
            "created_at": now,
            "updated_at": now,
        }
        tag_list = sorted(set(tags))
        access = sorted(set(shared_with))
        try:
            async with self._db.write() as conn:
                await conn.execute(m.clients.insert().values(values))
                await insert_phones(conn, numbers, client_id=values["id"])
                await reindex(conn, client_id=values["id"])
                if tag_list:
                    await conn.execute(
                        m.client_tags.insert(),
                        [{"client_id": values["id"], "tag": t} for t in tag_list],
                    )
                if access:
                    await conn.execute(
                        m.client_access.insert(),
                        [{"client_id": values["id"], "user_id": u} for u in access],
                    )
                await audit(
                    conn,
                    actor=actor,
                    entity_type="client",
                    entity_id=values["id"],
                    action="create",
                    changes={
                        **{k: v for k, v in values.items() if k not in ("id", "updated_at")},
                        "phones": [n for n, _ in numbers],
                        "tags": tag_list,
                        **({"shared_with": access} if access else {}),
                    },
                )
                client = await load_client(conn, values["id"])
        except IntegrityError as exc:
            raise conflict_from(exc, "client could not be created") from None
        assert client is not None
        log.info("client_created", client_id=str(client.id), kind=str(kind))
        return client

    async def get(self, client_id: uuid.UUID) -> Client:
        """Return the client with phones and tags, or raise :class:`NotFound`."""
        async with self._db.read() as conn:
            client = await load_client(conn, client_id)
        if client is None:
            raise NotFound("client", client_id)
        return client

    async def update(
        self,
        client_id: uuid.UUID,
        *,
        first_name: str | _Unset | None = UNSET,
        last_name: str | _Unset | None = UNSET,
        name: str | _Unset | None = UNSET,
        company_id: uuid.UUID | _Unset | None = UNSET,
        emails: Iterable[str] | _Unset = UNSET,
        address: Address | _Unset = UNSET,
        custom_fields: Mapping[str, Any] | _Unset = UNSET,
        responsible_user_id: uuid.UUID | _Unset | None = UNSET,
        visibility: Visibility | _Unset = UNSET,
        timezone: str | _Unset | None = UNSET,
        website: str | _Unset | None = UNSET,
        tags: Iterable[str] | _Unset = UNSET,
        phones: Iterable[PhoneInput] | _Unset = UNSET,
        shared_with: Iterable[uuid.UUID] | _Unset = UNSET,
        actor: Actor = None,
    ) -> Client:
        """Change the given fields (omitted ones are kept) and recompute the display
        name. ``tags``, ``phones`` and ``shared_with`` replace the client's whole
        set. The audit row records the new values of the fields passed."""
        changes: dict[str, Any] = {}
        children: dict[str, Any] = {}
        numbers = None if isinstance(phones, _Unset) else normalise_inputs(phones, self._db.region)
        if numbers is not None:
            children["phones"] = [n for n, _ in numbers]
        tag_list = None if isinstance(tags, _Unset) else sorted(set(tags))
        if tag_list is not None:
            children["tags"] = tag_list
        access = None if isinstance(shared_with, _Unset) else sorted(set(shared_with))
        if access is not None:
            children["shared_with"] = access
        if not isinstance(website, _Unset):
            changes["website"] = website
        for key, value in (
            ("first_name", first_name),
            ("last_name", last_name),
            ("company_name", name),
            ("company_id", company_id),
            ("responsible_user_id", responsible_user_id),
        ):
            if not isinstance(value, _Unset):
                changes[key] = value
        if not isinstance(emails, _Unset):
            changes["emails"] = list(emails)
        if not isinstance(address, _Unset):
            changes.update(_address_values(address))
        if not isinstance(custom_fields, _Unset):
            changes["custom_fields"] = dict(custom_fields)
        if not isinstance(visibility, _Unset):
            changes["visibility"] = Visibility(visibility)
        if not isinstance(timezone, _Unset):
            _check_timezone(timezone)
            changes["timezone"] = timezone
        async with self._db.write() as conn:
            row = (
                (await conn.execute(select(m.clients).where(m.clients.c.id == client_id)))
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NotFound("client", client_id)
            merged = {**row, **changes}
            display = client_display_name(
                row["kind"], merged["first_name"], merged["last_name"], merged["company_name"]
            )
            if not display:
                raise ValueError("a client needs a first or last name, or a company name")
            await conn.execute(
                update(m.clients)
                .where(m.clients.c.id == client_id)
                .values(**changes, display_name=display, updated_at=utcnow())
            )
            if numbers is not None:
                await conn.execute(delete(m.phones).where(m.phones.c.client_id == client_id))
                await insert_phones(conn, numbers, client_id=client_id)
            if tag_list is not None:
                await conn.execute(
                    delete(m.client_tags).where(m.client_tags.c.client_id == client_id)
                )
                if tag_list:
                    await conn.execute(
                        m.client_tags.insert(),
                        [{"client_id": client_id, "tag": t} for t in tag_list],
                    )
            if access is not None:
                await conn.execute(
                    delete(m.client_access).where(m.client_access.c.client_id == client_id)
                )
                if access:
                    await conn.execute(
                        m.client_access.insert(),
                        [{"client_id": client_id, "user_id": u} for u in access],
                    )
            await reindex(conn, client_id=client_id)
            await audit(
                conn,
                actor=actor,
                entity_type="client",
                entity_id=client_id,
                action="update",
                changes={**changes, **children},
            )
            client = await load_client(conn, client_id)
        assert client is not None
        return client

    async def delete(self, client_id: uuid.UUID, *, actor: Actor = None) -> None:
        """Delete a client with its phones and tags; calls keep their history with the
        client reference cleared."""
        async with self._db.write() as conn:
            result = await conn.execute(delete(m.clients).where(m.clients.c.id == client_id))
            if result.rowcount == 0:
                raise NotFound("client", client_id)
            await audit(
                conn, actor=actor, entity_type="client", entity_id=client_id, action="delete"
            )

    async def add_phone(
        self,
        client_id: uuid.UUID,
        number: str,
        kind: PhoneKind = PhoneKind.MOBILE,
        *,
        actor: Actor = None,
    ) -> Phone:
        """Attach a number. Raises :class:`InvalidPhone`, or :class:`Conflict` if the
        client already has it."""
        [(e164, phone_kind)] = normalise_inputs([(number, kind)], self._db.region)
        phone_id = new_id()
        try:
            async with self._db.write() as conn:
                await self._touch(conn, client_id)
                row = (
                    (
                        await conn.execute(
                            m.phones.insert()
                            .values(
                                id=phone_id,
                                number_e164=e164,
                                kind=phone_kind,
                                client_id=client_id,
                            )
                            .returning(m.phones)
                        )
                    )
                    .mappings()
                    .one()
                )
                await reindex(conn, client_id=client_id)
                await audit(
                    conn,
                    actor=actor,
                    entity_type="client",
                    entity_id=client_id,
                    action="add_phone",
                    changes={"number": e164, "kind": phone_kind},
                )
        except IntegrityError as exc:
            if is_unique_violation(exc):
                raise conflict_from(exc, f"client already has {e164}") from None
            raise
        return phone_from(row)

    async def remove_phone(self, phone_id: uuid.UUID, *, actor: Actor = None) -> None:
        async with self._db.write() as conn:
            row = (
                (
                    await conn.execute(
                        delete(m.phones)
                        .where(m.phones.c.id == phone_id, m.phones.c.client_id.is_not(None))
                        .returning(m.phones.c.client_id, m.phones.c.number_e164)
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NotFound("phone", phone_id)
            await reindex(conn, client_id=row["client_id"])
            await audit(
                conn,
                actor=actor,
                entity_type="client",
                entity_id=row["client_id"],
                action="remove_phone",
                changes={"number": row["number_e164"]},
            )

    async def add_tag(self, client_id: uuid.UUID, tag: str, *, actor: Actor = None) -> None:
        """Tag a client; adding a tag it already has does nothing."""
        async with self._db.write() as conn:
            await self._touch(conn, client_id)
            exists = await conn.scalar(
                select(func.count())
                .select_from(m.client_tags)
                .where(m.client_tags.c.client_id == client_id, m.client_tags.c.tag == tag)
            )
            if exists:
                return
            await conn.execute(m.client_tags.insert().values(client_id=client_id, tag=tag))
            await audit(
                conn,
                actor=actor,
                entity_type="client",
                entity_id=client_id,
                action="add_tag",
                changes={"tag": tag},
            )

    async def remove_tag(self, client_id: uuid.UUID, tag: str, *, actor: Actor = None) -> None:
        async with self._db.write() as conn:
            result = await conn.execute(
                delete(m.client_tags).where(
                    m.client_tags.c.client_id == client_id, m.client_tags.c.tag == tag
                )
            )
            if result.rowcount:
                await audit(
                    conn,
                    actor=actor,
                    entity_type="client",
                    entity_id=client_id,
                    action="remove_tag",
                    changes={"tag": tag},
                )

    async def with_tag(self, tag: str, *, limit: int = 100) -> list[Client]:
        """Clients carrying ``tag``, by display name."""
        stmt = (
            select(m.clients)
            .join(m.client_tags, m.client_tags.c.client_id == m.clients.c.id)
            .where(m.client_tags.c.tag == tag)
            .order_by(m.clients.c.display_name, m.clients.c.id)
            .limit(limit)
        )
        return await self._many(stmt)

    async def search(self, text: str, *, limit: int = 50) -> list[Client]:
        """Clients whose display name contains ``text`` (case-insensitive)."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = (
            select(m.clients)
            .where(m.clients.c.display_name.ilike(pattern, escape="\\"))
            .order_by(m.clients.c.display_name, m.clients.c.id)
            .limit(limit)
        )
        return await self._many(stmt)

    async def display_names(self, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
        """The display names of the clients ``ids`` that exist (one round trip):
        for a person's company, shown with the person."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(m.clients.c.id, m.clients.c.display_name).where(m.clients.c.id.in_(wanted))
            )
            return {row.id: row.display_name for row in rows}

    async def _many(self, stmt: Any) -> list[Client]:
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
            return await hydrate_clients(conn, rows)

    @staticmethod
    async def _touch(conn: Any, client_id: uuid.UUID) -> None:
        result = await conn.execute(
            update(m.clients).where(m.clients.c.id == client_id).values(updated_at=utcnow())
        )
        if result.rowcount == 0:
            raise NotFound("client", client_id)

    # --- the workspace: who sees a client, the filtered list, notes, merging -----

    @staticmethod
    def visible_to(viewer: uuid.UUID | None, *, sees_all: bool) -> ColumnElement[bool]:
        """The condition on ``clients`` rows that ``viewer`` may see: every client
        when ``sees_all`` (supervisors, admins); otherwise the shared ones, those
        ``viewer`` is responsible for and the private ones shared with ``viewer``.
        The same rule as :func:`ws_gateway.rights.can_open_contact`; every list,
        search and export of clients applies it (``select(...).where(cond)``)."""
        return cast("ColumnElement[bool]", visible_clients(viewer, sees_all=sees_all))

    async def shared_with(self, client_id: uuid.UUID) -> tuple[uuid.UUID, ...]:
        """The users a private client is shown to besides its responsible user."""
        a = m.client_access
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(a.c.user_id).where(a.c.client_id == client_id).order_by(a.c.user_id)
            )
            return tuple(rows.scalars())

    async def page(
        self,
        where: ClientFilter,
        *,
        viewer: uuid.UUID | None,
        sees_all: bool,
        sort: ClientSort = "name",
        offset: int = 0,
        limit: int = 50,
        count: bool = True,
    ) -> ClientPage:
        """One page of the clients ``viewer`` may see that match ``where``, with each
        client's last contact and open tasks; ``more`` tells whether a next page
        has rows. ``count``: also count every match (``total``; it reads every
        matching row, so a page shown at once may ask for it apart, see
        :meth:`count`)."""
        if not 0 <= offset <= 1_000_000 or not 1 <= limit <= 500:
            raise ValueError("offset or limit out of range")
        c = m.clients
        conds = _filter_conditions(where)
        if conds is None:
            return ClientPage([], 0, {}, {})
        conds.append(self.visible_to(viewer, sees_all=sees_all))
        last = _last_contact()
        column, descending = _SORTS[sort]
        key = last if column == "last_contact" else c.c[column]
        order = [key.desc().nulls_last() if descending else key.asc().nulls_last(), c.c.id]
        stmt = select(c, last.label("_last_contact")).where(*conds).order_by(*order)
        stmt = stmt.offset(offset).limit(limit + 1)
        async with self._db.read() as conn:
            total = None
            if count:
                counted = select(func.count()).select_from(c).where(*conds)
                total = int(await conn.scalar(counted) or 0)
            fetched = (await conn.execute(stmt)).mappings().all()
            more, rows = len(fetched) > limit, fetched[:limit]
            clients = await hydrate_clients(conn, rows)
            open_tasks: dict[uuid.UUID, int] = {}
            if clients:
                t = m.tasks
                per_client = await conn.execute(
                    select(t.c.client_id, func.count())
                    .where(t.c.client_id.in_([cl.id for cl in clients]), t.c.done.is_(False))
                    .group_by(t.c.client_id)
                )
                open_tasks = {r[0]: int(r[1]) for r in per_client}
        lasts = {r["id"]: r["_last_contact"] for r in rows if r["_last_contact"] is not None}
        return ClientPage(clients, total, lasts, open_tasks, more)

    async def count(self, where: ClientFilter, *, viewer: uuid.UUID | None, sees_all: bool) -> int:
        """How many clients ``viewer`` may see match ``where``."""
        conds = _filter_conditions(where)
        if conds is None:
            return 0
        conds.append(self.visible_to(viewer, sees_all=sees_all))
        async with self._db.read() as conn:
            counted = select(func.count()).select_from(m.clients).where(*conds)
            return int(await conn.scalar(counted) or 0)

    async def iter_visible(
        self,
        where: ClientFilter,
        *,
        viewer: uuid.UUID | None,
        sees_all: bool,
        sort: ClientSort = "name",
        batch: int = 500,
    ) -> AsyncIterator[list[Client]]:
        """Every client ``viewer`` may see matching ``where``, in batches (for
        exports: the list on screen, whole)."""
        offset = 0
        while True:
            found = await self.page(
                where,
                viewer=viewer,
                sees_all=sees_all,
                sort=sort,
                offset=offset,
                limit=batch,
                count=False,
            )
            if found.clients:
                yield found.clients
            if not found.more:
                return
            offset += batch

    async def add_note(
        self, client_id: uuid.UUID, text: str, *, author: uuid.UUID | None, actor: Actor = None
    ) -> ClientNote:
        """Write a note on the client's card."""
        if not text.strip():
            raise ValueError("a note needs some text")
        note = ClientNote(new_id(), client_id, author, text, utcnow())
        async with self._db.write() as conn:
            await self._touch(conn, client_id)
            await conn.execute(
                m.client_notes.insert().values(
                    id=note.id,
                    client_id=client_id,
                    author_user_id=author,
                    text=text,
                    created_at=note.created_at,
                )
            )
            await audit(
                conn,
                actor=actor,
                entity_type="client",
                entity_id=client_id,
                action="add_note",
                changes={"note_id": note.id},
            )
        return note

    async def notes(self, client_id: uuid.UUID, *, limit: int = 200) -> list[ClientNote]:
        """The client's notes, newest first."""
        n = m.client_notes
        stmt = (
            select(n)
            .where(n.c.client_id == client_id)
            .order_by(n.c.created_at.desc(), n.c.id.desc())
            .limit(limit)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [ClientNote(**dict(r)) for r in rows]

    async def merge(self, keep_id: uuid.UUID, drop_id: uuid.UUID, *, actor: Actor = None) -> Client:
        """Merge the duplicate ``drop_id`` into ``keep_id`` and delete it: its phones,
        emails, tags, shared users and the custom fields ``keep_id`` lacks are added;
        its calls, tasks, notes, people (of a company), leads and dialer items move
        to ``keep_id``; both audit trails record it. One transaction."""
        if keep_id == drop_id:
            raise ValueError("a client cannot be merged into itself")
        c = m.clients
        async with self._db.write() as conn:
            keep = await load_client(conn, keep_id)
            drop = await load_client(conn, drop_id)
            if keep is None:
                raise NotFound("client", keep_id)
            if drop is None:
                raise NotFound("client", drop_id)
            have = {p.number_e164 for p in keep.phones}
            moved = [p.number_e164 for p in drop.phones if p.number_e164 not in have]
            await conn.execute(
                update(m.phones)
                .where(m.phones.c.client_id == drop_id, m.phones.c.number_e164.in_(moved))
                .values(client_id=keep_id)
            )
            tags = sorted(set(drop.tags) - set(keep.tags))
            if tags:
                await conn.execute(
                    m.client_tags.insert(), [{"client_id": keep_id, "tag": t} for t in tags]
                )
            a = m.client_access
            have_access = set(
                (await conn.execute(select(a.c.user_id).where(a.c.client_id == keep_id))).scalars()
            )
            dropped_access = set(
                (await conn.execute(select(a.c.user_id).where(a.c.client_id == drop_id))).scalars()
            )
            if dropped_access - have_access:
                await conn.execute(
                    a.insert(),
                    [{"client_id": keep_id, "user_id": u} for u in dropped_access - have_access],
                )
            emails = list(dict.fromkeys([*keep.emails, *drop.emails]))
            fields = {**drop.custom_fields, **keep.custom_fields}
            fill: dict[str, Any] = {}
            for column, mine, theirs in (
                ("website", keep.website, drop.website),
                ("company_id", keep.company_id, drop.company_id),
                ("responsible_user_id", keep.responsible_user_id, drop.responsible_user_id),
                ("timezone", keep.timezone, drop.timezone),
            ):
                if mine is None and theirs is not None and theirs != keep_id:
                    fill[column] = theirs
            if all(getattr(keep.address, f) is None for f in ("street", "city", "postcode")):
                fill.update(_address_values(drop.address))
            for table in (m.calls, m.tasks, m.client_notes, m.call_list_items):
                await conn.execute(
                    update(table).where(table.c.client_id == drop_id).values(client_id=keep_id)
                )
            await conn.execute(
                update(m.leads)
                .where(m.leads.c.converted_client_id == drop_id)
                .values(converted_client_id=keep_id)
            )
            await conn.execute(
                update(c).where(c.c.company_id == drop_id).values(company_id=keep_id)
            )
            await conn.execute(delete(c).where(c.c.id == drop_id))
            await conn.execute(
                update(c)
                .where(c.c.id == keep_id)
                .values(emails=emails, custom_fields=fields, updated_at=utcnow(), **fill)
            )
            await reindex(conn, client_id=keep_id)
            summary = {
                "merged": str(drop_id),
                "merged_name": drop.display_name,
                "phones": moved,
                "tags": tags,
            }
            await audit(
                conn,
                actor=actor,
                entity_type="client",
                entity_id=keep_id,
                action="merge",
                changes=summary,
            )
            await audit(
                conn,
                actor=actor,
                entity_type="client",
                entity_id=drop_id,
                action="merged_into",
                changes={"into": str(keep_id)},
            )
            client = await load_client(conn, keep_id)
        assert client is not None
        log.info("clients_merged", keep=str(keep_id), dropped=str(drop_id))
        return client


ClientSort = Literal[
    "name", "-name", "created", "-created", "updated", "-updated", "last_contact", "-last_contact"
]
_SORTS: dict[str, tuple[str, bool]] = {
    "name": ("display_name", False),
    "-name": ("display_name", True),
    "created": ("created_at", False),
    "-created": ("created_at", True),
    "updated": ("updated_at", False),
    "-updated": ("updated_at", True),
    "last_contact": ("last_contact", False),
    "-last_contact": ("last_contact", True),
}


@dataclass(frozen=True, slots=True)
class FieldCondition:
    """A condition on a custom field: ``op`` ``eq`` (text: contains, case-insensitive;
    choice: equals), ``ge`` or ``le`` (numbers and dates)."""

    key: str
    type: CustomFieldType
    op: Literal["eq", "ge", "le"]
    value: str | float


@dataclass(frozen=True, slots=True)
class ClientFilter:
    """What the clients' list is narrowed to; every field set must hold."""

    text: str | None = None
    kind: ClientKind | None = None
    responsible_user_id: uuid.UUID | None = None
    tags: tuple[str, ...] = ()
    company_id: uuid.UUID | None = None
    created_from: datetime | None = None
    created_until: datetime | None = None
    contact_from: datetime | None = None
    contact_until: datetime | None = None
    has_open_tasks: bool | None = None
    fields: tuple[FieldCondition, ...] = ()


@dataclass(frozen=True, slots=True)
class ClientPage:
    """A page of clients; ``total`` counts every match (``None``: not counted);
    ``last_contact`` and ``open_tasks`` are by client id (absent: none); ``more``:
    a next page has rows."""

    clients: list[Client]
    total: int | None
    last_contact: dict[uuid.UUID, datetime]
    open_tasks: dict[uuid.UUID, int]
    more: bool = False


@dataclass(frozen=True, slots=True)
class ClientNote:
    id: uuid.UUID
    client_id: uuid.UUID
    author_user_id: uuid.UUID | None
    text: str
    created_at: datetime


def _last_contact() -> Any:
    k = m.calls
    return (
        select(func.max(k.c.created_at))
        .where(k.c.client_id == m.clients.c.id)
        .correlate(m.clients)
        .scalar_subquery()
    )


def _filter_conditions(where: ClientFilter) -> list[Any] | None:
    """The conditions of ``where``; ``None`` when the text can match nothing."""
    c = m.clients
    conds: list[Any] = []
    if where.text and where.text.strip():
        words = query_words(where.text)
        digits = "".join(ch for ch in where.text if ch.isdigit())[:TERM_MAX]
        matched = _matching(c.c.id, m.search_terms.c.client_id, words, digits)
        if matched is None:
            return None
        conds.append(matched)
    if where.kind is not None:
        conds.append(c.c.kind == ClientKind(where.kind))
    if where.responsible_user_id is not None:
        conds.append(c.c.responsible_user_id == where.responsible_user_id)
    if where.company_id is not None:
        conds.append(c.c.company_id == where.company_id)
    # Checks per client (EXISTS on an index), so that a page in name order stops
    # after its rows instead of sorting every match.
    for tag in dict.fromkeys(where.tags):
        t = m.client_tags
        conds.append(exists(select(t.c.tag).where(t.c.client_id == c.c.id, t.c.tag == tag)))
    if where.created_from is not None:
        conds.append(c.c.created_at >= where.created_from)
    if where.created_until is not None:
        conds.append(c.c.created_at < where.created_until)
    if where.contact_from is not None or where.contact_until is not None:
        # The last contact in the window: a call in it, none after it (both read
        # from the index on the client's calls by time).
        k = m.calls
        window = [k.c.client_id == c.c.id]
        if where.contact_from is not None:
            window.append(k.c.created_at >= where.contact_from)
        conds.append(exists(select(k.c.id).where(*window)))
        if where.contact_until is not None:
            later = select(k.c.id).where(
                k.c.client_id == c.c.id, k.c.created_at >= where.contact_until
            )
            conds.append(~exists(later))
    if where.has_open_tasks is not None:
        t = m.tasks
        has = exists(select(t.c.id).where(t.c.client_id == c.c.id, t.c.done.is_(False)))
        conds.append(has if where.has_open_tasks else ~has)
    for cond in where.fields:
        value = c.c.custom_fields[cond.key]
        if cond.type in (CustomFieldType.NUMBER, CustomFieldType.DATE):
            numeric = cond.type is CustomFieldType.NUMBER
            typed: Any = value.as_float() if numeric else value.as_string()
            bound: Any = cond.value if numeric else str(cond.value)
            if cond.op == "ge":
                conds.append(typed >= bound)
            elif cond.op == "le":
                conds.append(typed <= bound)
            else:
                conds.append(typed == bound)
        elif cond.type is CustomFieldType.CHOICE:
            conds.append(value.as_string() == str(cond.value))
        else:
            pattern = "%" + _escape_like(str(cond.value)) + "%"
            conds.append(value.as_string().ilike(pattern, escape="\\"))
    return conds


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
