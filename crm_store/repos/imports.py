"""Imports of clients and leads: duplicates found, one transaction, undo.

:meth:`ImportRepository.plan` tells what an import of checked rows
(:class:`~crm_store.contact_import.ContactDraft`) would do — create, update an
existing contact, or skip a duplicate — without writing; :meth:`~ImportRepository.run`
does it in one transaction, deciding again inside it so that what is written matches
the database of that moment. A duplicate is a contact of the same kind (client or
lead) with one of the row's phone numbers or email addresses, or an earlier row of
the same file. With ``duplicates="skip"`` it is left alone, with ``"update"`` the
row's non-empty cells overwrite its fields and its phones, emails and tags are added,
and with ``"create"`` a new contact is made anyway.

Each import is kept in the history (``imports``) with the contacts it created and,
for those it updated, their values before (``import_items``):
:meth:`~ImportRepository.undo` deletes the first and puts the second back, in one
transaction. Created contacts are recorded by the import's audit entry, not one
each; updates get one audit entry per contact.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import structlog
from sqlalchemy import delete, desc, select, update
from sqlalchemy.engine import Connection

from .. import _models as m
from .._base import Actor, Database, audit_sync, jsonable
from .._search import fold, phone_terms, reindex_sync, text_terms
from .._types import utcnow
from ..contact_import import ContactDraft, Duplicates, Target
from ..enums import ClientKind, LeadSource, LeadStatus, PhoneKind, Visibility
from ..exceptions import Conflict, NotFound
from ..ids import new_id, new_id_ints, new_ids

__all__ = ["ImportOutcome", "ImportPlan", "ImportRecord", "ImportRepository", "Skipped"]

log = structlog.get_logger(__name__)

_CHUNK = 500
# Contacts written per statement (with their phones and search terms).
_BATCH = 20_000
_SQLITE_CACHE_KIB = -131072
_T = TypeVar("_T")
_CLIENT_SNAPSHOT = (
    "first_name",
    "last_name",
    "company_name",
    "display_name",
    "emails",
    "address_street",
    "address_postcode",
    "address_city",
    "address_region",
    "address_country",
    "custom_fields",
    "updated_at",
)
_LEAD_SNAPSHOT = (
    "first_name",
    "last_name",
    "company_name",
    "display_name",
    "emails",
    "note",
    "updated_at",
)
_ADDRESS = {
    "street": "address_street",
    "postcode": "address_postcode",
    "city": "address_city",
    "region": "address_region",
    "country": "address_country",
}


@dataclass(frozen=True, slots=True)
class Skipped:
    """A row left out as a duplicate: its line and what it duplicates."""

    line: int
    reason: str
    existing_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class ImportPlan:
    """What an import would do with each row."""

    create: list[ContactDraft]
    update: list[tuple[ContactDraft, uuid.UUID]]
    skip: list[Skipped]


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """One import of the history."""

    id: uuid.UUID
    target: str
    filename: str | None
    user_id: uuid.UUID | None
    created_at: datetime
    rows: int
    created: int
    updated: int
    skipped: int
    undone_at: datetime | None
    undone_by: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """A finished import: its record and the rows skipped as duplicates."""

    record: ImportRecord
    skipped: list[Skipped]


def _record(row: Any) -> ImportRecord:
    return ImportRecord(
        row.id,
        row.target,
        row.filename,
        row.user_id,
        row.created_at,
        row.rows,
        row.created,
        row.updated,
        row.skipped,
        row.undone_at,
        row.undone_by,
    )


def _chunks(items: Sequence[_T], size: int = _CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ImportRepository:
    """The import of checked rows, its history and its undo."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def plan(
        self, target: Target, drafts: Sequence[ContactDraft], duplicates: Duplicates
    ) -> ImportPlan:
        """What :meth:`run` would do now, without writing."""
        async with self._db.read() as conn:
            return await conn.run_sync(_plan, target, drafts, duplicates)

    async def run(
        self,
        target: Target,
        drafts: Sequence[ContactDraft],
        duplicates: Duplicates,
        *,
        filename: str | None = None,
        rows: int | None = None,
        responsible_user_id: uuid.UUID | None = None,
        actor: Actor = None,
    ) -> ImportOutcome:
        """Import ``drafts`` in one transaction and record it in the history.

        Clients are shared, with ``responsible_user_id`` responsible; leads land in
        the pool (no owner), with the source ``import``. ``rows``: how many rows the
        file had (for the history; the number of drafts by default).
        """
        outcome = await self._db.run_write(
            partial(
                _run,
                target=target,
                drafts=drafts,
                duplicates=duplicates,
                filename=filename[:200] if filename else None,
                rows=len(drafts) if rows is None else rows,
                responsible_user_id=responsible_user_id,
                actor=actor,
            )
        )
        r = outcome.record
        log.info(
            "import_done",
            import_id=str(r.id),
            target=target,
            created=r.created,
            updated=r.updated,
            skipped=r.skipped,
        )
        return outcome

    async def history(self, *, limit: int = 50) -> list[ImportRecord]:
        """The latest imports, newest first."""
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(m.imports).order_by(desc(m.imports.c.created_at)).limit(limit)
            )
            return [_record(r) for r in rows]

    async def get(self, import_id: uuid.UUID) -> ImportRecord:
        async with self._db.read() as conn:
            row = (
                await conn.execute(select(m.imports).where(m.imports.c.id == import_id))
            ).one_or_none()
        if row is None:
            raise NotFound("import", import_id)
        return _record(row)

    async def undo(self, import_id: uuid.UUID, *, actor: Actor = None) -> ImportRecord:
        """Delete what the import created and restore what it updated, in one
        transaction. Raises :class:`NotFound`, or :class:`Conflict` if it was undone."""
        record = await self._db.run_write(partial(_undo, import_id=import_id, actor=actor))
        log.info("import_undone", import_id=str(import_id))
        return record


# ---------------------------------------------------------------------- planning


def _owner_columns(target: Target) -> tuple[Any, Any, Any]:
    if target == "clients":
        return m.clients, m.phones.c.client_id, m.search_terms.c.client_id
    return m.leads, m.phones.c.lead_id, m.search_terms.c.lead_id


def _existing(
    conn: Connection, target: Target, drafts: Sequence[ContactDraft]
) -> tuple[dict[str, uuid.UUID], dict[str, uuid.UUID], dict[uuid.UUID, str]]:
    """Existing owners of the drafts' numbers and emails, and their names."""
    table, phone_owner, term_owner = _owner_columns(target)
    numbers = sorted({n for d in drafts for n, _ in d.phones})
    emails = sorted({fold(e) for d in drafts for e in d.emails})
    by_number: dict[str, uuid.UUID] = {}
    by_email: dict[str, uuid.UUID] = {}
    for chunk in _chunks(numbers):
        for number, owner in conn.execute(
            select(m.phones.c.number_e164, phone_owner).where(
                m.phones.c.number_e164.in_(chunk), phone_owner.is_not(None)
            )
        ):
            by_number.setdefault(number, owner)
    for chunk in _chunks(emails):
        for term, owner in conn.execute(
            select(m.search_terms.c.term, term_owner).where(
                m.search_terms.c.term.in_(chunk), term_owner.is_not(None)
            )
        ):
            by_email.setdefault(term, owner)
    ids = sorted(set(by_number.values()) | set(by_email.values()))
    names: dict[uuid.UUID, str] = {}
    for id_chunk in _chunks(ids):
        for owner_id, name in conn.execute(
            select(table.c.id, table.c.display_name).where(table.c.id.in_(id_chunk))
        ):
            names[owner_id] = name
    return by_number, by_email, names


def _plan(
    conn: Connection, target: Target, drafts: Sequence[ContactDraft], duplicates: Duplicates
) -> ImportPlan:
    by_number, by_email, names = _existing(conn, target, drafts)
    plan = ImportPlan([], [], [])
    seen: dict[str, int] = {}
    updating: set[uuid.UUID] = set()
    kind = "client" if target == "clients" else "lead"
    for draft in drafts:
        keys = [n for n, _ in draft.phones] + [fold(e) for e in draft.emails]
        existing = next(
            (
                found
                for key in keys
                if (found := by_number.get(key) or by_email.get(key)) is not None
            ),
            None,
        )
        earlier = next((seen[k] for k in keys if k in seen), None)
        for key in keys:
            seen.setdefault(key, draft.line)
        if duplicates == "create" or (existing is None and earlier is None):
            plan.create.append(draft)
        elif existing is not None and duplicates == "update":
            if existing in updating:
                plan.skip.append(
                    Skipped(draft.line, f"updates the same {kind} as an earlier line", existing)
                )
            else:
                updating.add(existing)
                plan.update.append((draft, existing))
        elif existing is not None:
            name = names.get(existing, "")
            plan.skip.append(
                Skipped(draft.line, f"same phone or email as the {kind} {name!r}", existing)
            )
        else:
            plan.skip.append(Skipped(draft.line, f"same phone or email as line {earlier}", None))
    return plan


# ---------------------------------------------------------------------- writing


def _run(
    conn: Connection,
    *,
    target: Target,
    drafts: Sequence[ContactDraft],
    duplicates: Duplicates,
    filename: str | None,
    rows: int,
    responsible_user_id: uuid.UUID | None,
    actor: Actor,
) -> ImportOutcome:
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        # A large import rewrites index pages all over the search terms' indexes:
        # a page cache of 128 MiB for this transaction keeps more of them in memory.
        cache = conn.exec_driver_sql("PRAGMA cache_size").scalar()
        conn.exec_driver_sql(f"PRAGMA cache_size={_SQLITE_CACHE_KIB}")
    try:
        return _run_in(conn, target, drafts, duplicates, filename, rows, responsible_user_id, actor)
    finally:
        if sqlite:
            conn.exec_driver_sql(f"PRAGMA cache_size={int(cache or -2000)}")


def _run_in(
    conn: Connection,
    target: Target,
    drafts: Sequence[ContactDraft],
    duplicates: Duplicates,
    filename: str | None,
    rows: int,
    responsible_user_id: uuid.UUID | None,
    actor: Actor,
) -> ImportOutcome:
    plan = _plan(conn, target, drafts, duplicates)
    import_id = new_id()
    now = utcnow()
    conn.execute(
        m.imports.insert().values(
            id=import_id,
            target=target,
            filename=filename,
            user_id=actor,
            created_at=now,
            rows=rows,
            created=len(plan.create),
            updated=len(plan.update),
            skipped=len(plan.skip),
        )
    )
    created = (
        _create_clients(conn, plan.create, responsible_user_id, now)
        if target == "clients"
        else _create_leads(conn, plan.create, now)
    )
    items: list[dict[str, Any]] = [
        {"import_id": import_id, "position": i, "entity_id": e, "action": "created", "before": None}
        for i, e in enumerate(created)
    ]
    for draft, existing in plan.update:
        before = _update(conn, target, draft, existing, now, actor)
        items.append(
            {
                "import_id": import_id,
                "position": len(items),
                "entity_id": existing,
                "action": "updated",
                "before": before,
            }
        )
    for chunk in _chunks(items, 5000):
        conn.execute(m.import_items.insert(), list(chunk))
    audit_sync(
        conn,
        actor=actor,
        entity_type="import",
        entity_id=import_id,
        action="create",
        changes={
            "target": target,
            "filename": filename,
            "rows": rows,
            "created": len(plan.create),
            "updated": len(plan.update),
            "skipped": len(plan.skip),
        },
        at=now,
    )
    row = conn.execute(select(m.imports).where(m.imports.c.id == import_id)).one()
    return ImportOutcome(_record(row), plan.skip)


class _Children:
    """The phones, search terms and tags of a batch of new contacts, written with
    one ``executemany`` each. On SQLite the rows go to the driver as they are stored
    (ids as hex text; terms sorted, so the term index grows at few places): a
    hundred thousand contacts have millions of search terms, and SQLAlchemy's
    per-row work would cost more than SQLite's."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sqlite = conn.dialect.name == "sqlite"
        self.phones: list[tuple[Any, ...]] = []
        self.terms: list[tuple[Any, ...]] = []
        self.tags: list[dict[str, Any]] = []

    def add(
        self, draft: ContactDraft, client_id: uuid.UUID | None, lead_id: uuid.UUID | None
    ) -> None:
        owner = (client_id, lead_id)
        terms = text_terms((draft.display_name, draft.company), draft.emails)
        terms |= phone_terms(n for n, _ in draft.phones)
        self.phones.extend((n, k.value, *owner) for n, k in draft.phones)
        self.terms.extend((t, *owner) for t in terms)
        if client_id is not None:
            self.tags.extend({"client_id": client_id, "tag": t} for t in draft.tags)

    def write(self) -> None:
        if self.sqlite:
            self._write_sqlite()
        else:
            ids = new_ids(len(self.phones) + len(self.terms))
            if self.phones:
                self.conn.execute(
                    m.phones.insert(),
                    [
                        {"id": i, "number_e164": n, "kind": k, "client_id": c, "lead_id": ld}
                        for i, (n, k, c, ld) in zip(ids, self.phones, strict=False)
                    ],
                )
            if self.terms:
                self.conn.execute(
                    m.search_terms.insert(),
                    [
                        {"id": i, "term": t, "client_id": c, "lead_id": ld}
                        for i, (t, c, ld) in zip(ids[len(self.phones) :], self.terms, strict=True)
                    ],
                )
        if self.tags:
            self.conn.execute(m.client_tags.insert(), self.tags)
        self.phones, self.terms, self.tags = [], [], []

    def _write_sqlite(self) -> None:
        def hexed(value: uuid.UUID | None) -> str | None:
            return None if value is None else value.hex

        ids = [f"{v:032x}" for v in new_id_ints(len(self.phones) + len(self.terms))]
        if self.phones:
            self.conn.exec_driver_sql(
                "INSERT INTO phones (id, number_e164, kind, client_id, lead_id)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (i, n, k, hexed(c), hexed(ld))
                    for i, (n, k, c, ld) in zip(ids, self.phones, strict=False)
                ],
            )
        if self.terms:
            self.terms.sort()
            self.conn.exec_driver_sql(
                "INSERT INTO search_terms (id, term, client_id, lead_id) VALUES (?, ?, ?, ?)",
                [
                    (i, t, hexed(c), hexed(ld))
                    for i, (t, c, ld) in zip(ids[len(self.phones) :], self.terms, strict=True)
                ],
            )


def _create_clients(
    conn: Connection,
    drafts: Sequence[ContactDraft],
    responsible: uuid.UUID | None,
    now: datetime,
) -> list[uuid.UUID]:
    ids = new_ids(len(drafts))
    children = _Children(conn)
    for start in range(0, len(drafts), _BATCH):
        rows: list[dict[str, Any]] = []
        for client_id, draft in zip(
            ids[start : start + _BATCH], drafts[start : start + _BATCH], strict=True
        ):
            person = bool(draft.first_name or draft.last_name)
            rows.append(
                {
                    "id": client_id,
                    "kind": ClientKind.PERSON if person else ClientKind.COMPANY,
                    "first_name": draft.first_name,
                    "last_name": draft.last_name,
                    "company_name": draft.company,
                    "display_name": draft.display_name,
                    "company_id": None,
                    "emails": list(draft.emails),
                    **{_ADDRESS[k]: draft.address.get(k) for k in _ADDRESS},
                    "custom_fields": dict(draft.custom),
                    "responsible_user_id": responsible,
                    "visibility": Visibility.SHARED,
                    "timezone": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            children.add(draft, client_id, None)
        conn.execute(m.clients.insert(), rows)
        children.write()
    return ids


def _create_leads(
    conn: Connection, drafts: Sequence[ContactDraft], now: datetime
) -> list[uuid.UUID]:
    ids = new_ids(len(drafts))
    children = _Children(conn)
    for start in range(0, len(drafts), _BATCH):
        rows: list[dict[str, Any]] = []
        for lead_id, draft in zip(
            ids[start : start + _BATCH], drafts[start : start + _BATCH], strict=True
        ):
            rows.append(
                {
                    "id": lead_id,
                    "first_name": draft.first_name,
                    "last_name": draft.last_name,
                    "company_name": draft.company,
                    "display_name": draft.display_name,
                    "emails": list(draft.emails),
                    "source": LeadSource.IMPORT,
                    "status": LeadStatus.UNPROCESSED,
                    "owner_user_id": None,
                    "converted_client_id": None,
                    "origin_number": None,
                    "note": draft.note,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            children.add(draft, None, lead_id)
        conn.execute(m.leads.insert(), rows)
        children.write()
    return ids


def _update(
    conn: Connection,
    target: Target,
    draft: ContactDraft,
    entity_id: uuid.UUID,
    now: datetime,
    actor: Actor,
) -> dict[str, Any]:
    """Merge ``draft`` into the existing contact; return its values before."""
    table, phone_owner, _ = _owner_columns(target)
    names = _CLIENT_SNAPSHOT if target == "clients" else _LEAD_SNAPSHOT
    row = conn.execute(select(table).where(table.c.id == entity_id)).mappings().one()
    phones = conn.execute(
        select(m.phones.c.number_e164, m.phones.c.kind).where(phone_owner == entity_id)
    ).all()
    tags = (
        list(
            conn.execute(
                select(m.client_tags.c.tag).where(m.client_tags.c.client_id == entity_id)
            ).scalars()
        )
        if target == "clients"
        else []
    )
    before = jsonable(
        {
            **{name: row[name] for name in names},
            "phones": [[n, k] for n, k in phones],
            "tags": tags,
        }
    )
    changes: dict[str, Any] = {}
    for key, value in (
        ("first_name", draft.first_name),
        ("last_name", draft.last_name),
        ("company_name", draft.company),
    ):
        if value:
            changes[key] = value
    emails = list(row["emails"] or [])
    emails += [e for e in draft.emails if e not in emails]
    changes["emails"] = emails
    if target == "clients":
        for key, column in _ADDRESS.items():
            if key in draft.address:
                changes[column] = draft.address[key]
        if draft.custom:
            changes["custom_fields"] = {**(row["custom_fields"] or {}), **draft.custom}
    elif draft.note:
        changes["note"] = draft.note
    merged = {**row, **changes}
    person = target == "leads" or row["kind"] is ClientKind.PERSON
    full = " ".join(p for p in (merged["first_name"], merged["last_name"]) if p) if person else ""
    changes["display_name"] = full or merged["company_name"] or row["display_name"]
    conn.execute(update(table).where(table.c.id == entity_id).values(**changes, updated_at=now))
    owner = {"client_id": entity_id if target == "clients" else None}
    owner["lead_id"] = entity_id if target == "leads" else None
    have = {n for n, _ in phones}
    new_phones = [
        {"id": new_id(), "number_e164": n, "kind": k, **owner}
        for n, k in draft.phones
        if n not in have
    ]
    new_tags = (
        [{"client_id": entity_id, "tag": t} for t in draft.tags if t not in tags]
        if target == "clients"
        else []
    )
    if new_phones:
        conn.execute(m.phones.insert(), new_phones)
    if new_tags:
        conn.execute(m.client_tags.insert(), new_tags)
    reindex_sync(conn, **{"client_id" if target == "clients" else "lead_id": entity_id})
    audit_sync(
        conn,
        actor=actor,
        entity_type=target[:-1],
        entity_id=entity_id,
        action="import_update",
        changes={
            **changes,
            "phones_added": [p["number_e164"] for p in new_phones],
            "tags_added": [t["tag"] for t in new_tags],
        },
        at=now,
    )
    return dict(before)


# ---------------------------------------------------------------------- undo


def _undo(conn: Connection, *, import_id: uuid.UUID, actor: Actor) -> ImportRecord:
    row = conn.execute(select(m.imports).where(m.imports.c.id == import_id)).one_or_none()
    if row is None:
        raise NotFound("import", import_id)
    if row.undone_at is not None:
        raise Conflict(f"import {import_id} was already undone")
    target: Target = "clients" if row.target == "clients" else "leads"
    table, phone_owner, _ = _owner_columns(target)
    items = conn.execute(
        select(m.import_items.c.entity_id, m.import_items.c.action, m.import_items.c.before)
        .where(m.import_items.c.import_id == import_id)
        .order_by(m.import_items.c.position)
    ).all()
    created = [i.entity_id for i in items if i.action == "created"]
    removed = 0
    for chunk in _chunks(created):
        removed += conn.execute(delete(table).where(table.c.id.in_(chunk))).rowcount
    restored = 0
    for item in items:
        if item.action == "updated" and item.before is not None:
            restored += _restore(conn, target, item.entity_id, item.before, phone_owner)
    now = utcnow()
    conn.execute(
        update(m.imports).where(m.imports.c.id == import_id).values(undone_at=now, undone_by=actor)
    )
    audit_sync(
        conn,
        actor=actor,
        entity_type="import",
        entity_id=import_id,
        action="undo",
        changes={"removed": removed, "restored": restored},
        at=now,
    )
    return _record(conn.execute(select(m.imports).where(m.imports.c.id == import_id)).one())


def _restore(
    conn: Connection, target: Target, entity_id: uuid.UUID, before: dict[str, Any], phone_owner: Any
) -> int:
    table = m.clients if target == "clients" else m.leads
    names = _CLIENT_SNAPSHOT if target == "clients" else _LEAD_SNAPSHOT
    values = {name: before.get(name) for name in names}
    values["updated_at"] = datetime.fromisoformat(before["updated_at"])
    result = conn.execute(update(table).where(table.c.id == entity_id).values(**values))
    if not result.rowcount:
        return 0  # deleted since: nothing to put back
    kept = {n: PhoneKind(k) for n, k in before.get("phones", [])}
    current = set(
        conn.execute(select(m.phones.c.number_e164).where(phone_owner == entity_id)).scalars()
    )
    gone = sorted(current - set(kept))
    if gone:
        conn.execute(
            delete(m.phones).where(phone_owner == entity_id, m.phones.c.number_e164.in_(gone))
        )
    owner = {"client_id": entity_id if target == "clients" else None}
    owner["lead_id"] = entity_id if target == "leads" else None
    missing = [
        {"id": new_id(), "number_e164": n, "kind": k, **owner}
        for n, k in kept.items()
        if n not in current
    ]
    if missing:
        conn.execute(m.phones.insert(), missing)
    if target == "clients":
        conn.execute(delete(m.client_tags).where(m.client_tags.c.client_id == entity_id))
        tags = before.get("tags", [])
        if tags:
            conn.execute(m.client_tags.insert(), [{"client_id": entity_id, "tag": t} for t in tags])
    reindex_sync(conn, **{"client_id" if target == "clients" else "lead_id": entity_id})
    return 1
