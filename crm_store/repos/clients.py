"""Clients: people and companies the call centre works with."""

from __future__ import annotations

import uuid
import zoneinfo
from collections.abc import Iterable, Mapping
from typing import Any, Final

import structlog
from sqlalchemy import delete, func, select, update
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
from .._search import reindex
from .._types import utcnow
from ..dto import Address, Client, Phone
from ..enums import ClientKind, PhoneKind, Visibility
from ..exceptions import NotFound
from ..ids import new_id
from ._phones import PhoneInput, insert_phones, normalise_inputs

__all__ = ["ClientRepository", "client_display_name"]

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
            "created_at": now,
            "updated_at": now,
        }
        tag_list = sorted(set(tags))
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
        actor: Actor = None,
    ) -> Client:
        """Change the given fields (omitted ones are kept) and recompute the display
        name. The audit row records the new values of the fields passed."""
        changes: dict[str, Any] = {}
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
            await reindex(conn, client_id=client_id)
            await audit(
                conn,
                actor=actor,
                entity_type="client",
                entity_id=client_id,
                action="update",
                changes=changes,
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
