"""The clients' workspace in the API: the filtered list, full create and edit,
delete, merge, notes, the timeline, and the fields and tags admins define.

Every path decides what the caller sees with :mod:`ws_gateway.rights`: a list or
search through ``ClientRepository.visible_to`` (the same rule in SQL), a card or a
change through :func:`~ws_gateway.rights.check_contact`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from crm_store import (
    Address,
    Client,
    ClientKind,
    Conflict,
    InvalidPhone,
    NotFound,
    PhoneKind,
    Visibility,
)
from crm_store.enums import CustomFieldType
from crm_store.phones import normalize_phone
from crm_store.repos.client_defs import CustomFieldDef, FieldValueError, check_field_values
from crm_store.repos.clients import ClientFilter, ClientSort, FieldCondition
from ws_gateway import Principal
from ws_gateway.exceptions import BadRequest, Forbidden
from ws_gateway.exceptions import Conflict as ApiConflict
from ws_gateway.exceptions import NotFound as ApiNotFound
from ws_gateway.rights import can_open_call, check_contact

from ._api_common import NOTE_MAX_CHARS, Directory, call_summary, client_hit, companies_of
from ._api_contacts import client_card_of
from ._services import Services, services
from .errors import TooLarge
from .security import CurrentPrincipal

__all__ = ["client_list", "client_timeline", "router"]

router = APIRouter(tags=["clients"])
Svc = Annotated[Services, Depends(services)]
_CARD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad input; details.path names the field"},
    403: {"description": "private client"},
    404: {"description": "no such client"},
}
_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad input; details.path names the field"},
    403: {"description": "admins only"},
    409: {"description": "already defined"},
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PhoneIn(_Body):
    number: str = Field(min_length=1, max_length=64)
    kind: Literal["mobile", "work", "home", "fax", "other"] = "mobile"


class AddressIn(_Body):
    street: str | None = Field(default=None, max_length=300)
    postcode: str | None = Field(default=None, max_length=20)
    city: str | None = Field(default=None, max_length=100)
    region: str | None = Field(default=None, max_length=100)
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")


_Email = Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
_Tag = Annotated[str, Field(min_length=1, max_length=64)]
_Name = Annotated[str | None, Field(default=None, max_length=100)]


class ClientFields(_Body):
    """The fields of a client the workspace's form edits."""

    first_name: _Name = None
    last_name: _Name = None
    company_name: str | None = Field(default=None, max_length=200)
    company_id: uuid.UUID | None = None
    phones: list[PhoneIn] | None = Field(default=None, max_length=20)
    emails: list[_Email] | None = Field(default=None, max_length=20)
    website: str | None = Field(default=None, max_length=300, pattern=r"^(https?://)?[^\s<>\"]+$")
    address: AddressIn | None = None
    tags: list[_Tag] | None = Field(default=None, max_length=50)
    custom_fields: dict[str, str | float | int | None] | None = None
    responsible_user_id: uuid.UUID | None = None
    visibility: Literal["shared", "private"] | None = None
    shared_with: list[uuid.UUID] | None = Field(default=None, max_length=200)


class ClientCreate(ClientFields):
    kind: Literal["person", "company"] = "person"

    @model_validator(mode="after")
    def _named(self) -> ClientCreate:
        if self.kind == "company" and not self.company_name:
            raise ValueError("a company needs company_name")
        if self.kind == "person" and not (self.first_name or self.last_name):
            raise ValueError("a person needs first_name or last_name")
        return self


class ClientPatch(ClientFields):
    pass


class MergeBody(_Body):
    duplicate_id: uuid.UUID


class NoteBody(_Body):
    # Longer than NOTE_MAX_CHARS is refused with 413, not by the schema's 400.
    text: str = Field(min_length=1)


class FieldDefBody(_Body):
    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    label: str = Field(min_length=1, max_length=100)
    type: Literal["text", "number", "date", "choice"]
    choices: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=100
    )


class TagBody(_Body):
    name: str = Field(min_length=1, max_length=64)


class ClientRow(BaseModel):
    kind: Literal["client"]
    id: str
    display_name: str
    company: str | None
    phones: list[dict[str, str]]
    emails: list[str]
    responsible: dict[str, str] | None
    client_kind: str
    tags: list[str]
    visibility: str
    custom_fields: dict[str, Any]
    created_at: str
    last_contact_at: str | None
    open_tasks: int


class ClientList(BaseModel):
    clients: list[ClientRow]
    #: Every match counted, when asked for (``total=true``); else null.
    total: int | None
    page: int
    per_page: int
    #: Whether a next page has rows.
    more: bool


class FieldDefOut(BaseModel):
    key: str
    label: str
    type: str
    choices: list[str]


class UserOut(BaseModel):
    id: str
    display_name: str


class NoteOut(BaseModel):
    id: str
    text: str
    author: dict[str, str] | None
    created_at: str


class TimelineItem(BaseModel):
    type: Literal["call", "note", "task", "change"]
    at: str
    call: dict[str, Any] | None = None
    note: NoteOut | None = None
    task: dict[str, Any] | None = None
    change: dict[str, Any] | None = None


class Timeline(BaseModel):
    items: list[TimelineItem]


# --- helpers -----------------------------------------------------------------


def _bad(message: str, path: str) -> BadRequest:
    return BadRequest(message, details={"path": path})


async def _visible_client(svc: Services, principal: Principal, client_id: uuid.UUID) -> Client:
    """The client, after the rights check (404, 403)."""
    try:
        client = await svc.store.clients.get(client_id)
    except NotFound:
        raise ApiNotFound("no such client", details={"id": str(client_id)}) from None
    shared = (
        await svc.store.clients.shared_with(client.id) if client.visibility == "private" else ()
    )
    check_contact(principal, client.visibility.value, client.responsible_user_id, client.id, shared)
    return client


async def _checked(
    svc: Services, body: ClientFields, *, company_kind: bool
) -> tuple[dict[str, Any], list[tuple[str, PhoneKind]] | None]:
    """The repository's arguments from ``body`` (only the fields sent), checked
    against the definitions, the users and the companies."""
    sent = body.model_fields_set
    args: dict[str, Any] = {}
    for name in ("first_name", "last_name", "website", "responsible_user_id", "company_id"):
        if name in sent:
            args[name] = getattr(body, name) or None
    if "company_name" in sent:
        args["name"] = body.company_name or None
    if "emails" in sent:
        args["emails"] = list(dict.fromkeys(body.emails or []))
    if "address" in sent:
        a = body.address or AddressIn()
        args["address"] = Address(a.street, a.postcode, a.city, a.region, a.country)
    if "visibility" in sent and body.visibility is not None:
        args["visibility"] = Visibility(body.visibility)
    users = {u.id for u in await svc.store.users.list()}
    if args.get("responsible_user_id") is not None and args["responsible_user_id"] not in users:
        raise _bad("responsible_user_id: no such user", "responsible_user_id")
    if "shared_with" in sent:
        for i, user_id in enumerate(body.shared_with or []):
            if user_id not in users:
                raise _bad("shared_with: no such user", f"shared_with.{i}")
        args["shared_with"] = list(body.shared_with or [])
    if args.get("company_id") is not None:
        if company_kind:
            raise _bad("company_id: a company belongs to no company", "company_id")
        try:
            company = await svc.store.clients.get(args["company_id"])
        except NotFound:
            raise _bad("company_id: no such company", "company_id") from None
        if company.kind is not ClientKind.COMPANY:
            raise _bad("company_id: not a company", "company_id")
    if "tags" in sent:
        defined = set(await svc.store.definitions.tags())
        for i, tag in enumerate(body.tags or []):
            if tag not in defined:
                raise _bad(f"tags: {tag!r} is not a defined tag", f"tags.{i}")
        args["tags"] = list(dict.fromkeys(body.tags or []))
    if "custom_fields" in sent:
        try:
            args["custom_fields"] = check_field_values(
                await svc.store.definitions.fields(), body.custom_fields or {}
            )
        except FieldValueError as exc:
            raise _bad(str(exc), f"custom_fields.{exc.key}") from None
    phones: list[tuple[str, PhoneKind]] | None = None
    if "phones" in sent:
        phones = [(p.number, PhoneKind(p.kind)) for p in body.phones or []]
        region = svc.store.region
        for i, (number, _kind) in enumerate(phones):
            try:
                normalize_phone(number, region)
            except InvalidPhone as exc:
                raise _bad(f"not a phone number: {exc.reason}", f"phones.{i}.number") from None
    return args, phones


def _day(value: date | None, *, end: bool = False) -> datetime | None:
    """The start of the day ``value`` in UTC (``end``: of the next day)."""
    if value is None:
        return None
    start = datetime.combine(value, time.min, tzinfo=UTC)
    return start + timedelta(days=1) if end else start


def _field_conditions(raw: list[str], defs: list[CustomFieldDef]) -> tuple[FieldCondition, ...]:
    by_key = {d.key: d for d in defs}
    out: list[FieldCondition] = []
    for i, item in enumerate(raw):
        key, _, rest = item.partition(":")
        op, _, value = rest.partition(":")
        found = by_key.get(key)
        if found is None or op not in ("eq", "ge", "le") or not value:
            raise _bad("field: key:op:value with a defined key and op eq, ge or le", f"field.{i}")
        typed: str | float = value
        if found.type is CustomFieldType.NUMBER:
            try:
                typed = float(value)
            except ValueError:
                raise _bad("field: not a number", f"field.{i}") from None
        elif found.type is CustomFieldType.DATE:
            try:
                typed = date.fromisoformat(value).isoformat()
            except ValueError:
                raise _bad("field: not a day (YYYY-MM-DD)", f"field.{i}") from None
        out.append(FieldCondition(key, found.type, op, typed))  # type: ignore[arg-type]
    return tuple(out)


# --- the list ----------------------------------------------------------------


async def client_list(
    svc: Services,
    principal: Principal,
    *,
    scope: Literal["my", "all"] = "all",
    q: str = "",
    tags: list[str] | None = None,
    responsible: uuid.UUID | None = None,
    kind: Literal["person", "company"] | None = None,
    created_from: date | None = None,
    created_until: date | None = None,
    contact_from: date | None = None,
    contact_until: date | None = None,
    open_tasks: bool | None = None,
    fields: list[str] | None = None,
    sort: ClientSort = "name",
    page: int = 1,
    per_page: int = 50,
    total: bool = False,
) -> dict[str, Any]:
    """One page of the list (the API's and the page's), only what ``principal`` sees;
    ``total``: count every match too (it reads them all)."""
    defs = await svc.store.definitions.fields()
    where = ClientFilter(
        text=q.strip() or None,
        kind=ClientKind(kind) if kind else None,
        responsible_user_id=principal.user_id if scope == "my" else responsible,
        tags=tuple(t for t in tags or () if t),
        created_from=_day(created_from),
        created_until=_day(created_until, end=True),
        contact_from=_day(contact_from),
        contact_until=_day(contact_until, end=True),
        has_open_tasks=open_tasks,
        fields=_field_conditions([f for f in fields or () if f], defs),
    )
    found = await svc.store.clients.page(
        where,
        viewer=principal.user_id,
        sees_all=principal.sees_all,
        sort=sort,
        offset=(page - 1) * per_page,
        limit=per_page,
        count=total,
    )
    directory = await Directory.load(svc)
    companies = await companies_of(svc.store, found.clients)
    rows = []
    for client in found.clients:
        row = client_hit(client, directory, companies)
        last = found.last_contact.get(client.id)
        row.update(
            client_kind=client.kind.value,
            tags=list(client.tags),
            visibility=client.visibility.value,
            custom_fields=dict(client.custom_fields),
            created_at=client.created_at.isoformat(),
            last_contact_at=None if last is None else last.isoformat(),
            open_tasks=found.open_tasks.get(client.id, 0),
        )
        rows.append(row)
    return {
        "clients": rows,
        "total": found.total,
        "page": page,
        "per_page": per_page,
        "more": found.more,
    }


@router.get(
    "/api/clients",
    summary="Clients, filtered, sorted and paged (only those the caller may see)",
    response_model=ClientList,
    responses={400: {"description": "bad filter; details.path names it"}},
)
async def list_clients(
    principal: CurrentPrincipal,
    svc: Svc,
    scope: Literal["my", "all"] = "all",
    q: Annotated[str, Query(max_length=100)] = "",
    tag: Annotated[list[str] | None, Query(max_length=20)] = None,
    responsible: uuid.UUID | None = None,
    kind: Literal["person", "company"] | None = None,
    created_from: date | None = None,
    created_until: date | None = None,
    contact_from: date | None = None,
    contact_until: date | None = None,
    open_tasks: bool | None = None,
    field: Annotated[
        list[str] | None,
        Query(max_length=20, description="a custom field condition, key:op:value (op eq, ge, le)"),
    ] = None,
    sort: ClientSort = "name",
    page: Annotated[int, Query(ge=1, le=20_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 50,
    total: Annotated[bool, Query(description="also count every match")] = False,
) -> dict[str, Any]:
    return await client_list(
        svc,
        principal,
        scope=scope,
        q=q,
        tags=tag,
        responsible=responsible,
        kind=kind,
        created_from=created_from,
        created_until=created_until,
        contact_from=contact_from,
        contact_until=contact_until,
        open_tasks=open_tasks,
        fields=field,
        sort=sort,
        page=page,
        per_page=per_page,
        total=total,
    )


# --- create, edit, delete, merge ---------------------------------------------


@router.post(
    "/api/clients/full",
    status_code=201,
    summary="Create a client with every field of the workspace's form",
    responses={400: _CARD_ERRORS[400]},
)
async def create_full(body: ClientCreate, principal: CurrentPrincipal, svc: Svc) -> JSONResponse:
    args, phones = await _checked(svc, body, company_kind=body.kind == "company")
    args.setdefault("responsible_user_id", principal.user_id)
    if body.kind == "person":
        args.pop("name", None)
    client = await svc.store.clients.create(
        ClientKind(body.kind), phones=phones or [], actor=principal.user_id, **args
    )
    return JSONResponse(await client_card_of(svc, principal, client.id), status_code=201)


@router.patch(
    "/api/clients/{client_id}", summary="Change a client's fields", responses=_CARD_ERRORS
)
async def edit_client(
    client_id: uuid.UUID, body: ClientPatch, principal: CurrentPrincipal, svc: Svc
) -> dict[str, Any]:
    client = await _visible_client(svc, principal, client_id)
    args, phones = await _checked(svc, body, company_kind=client.kind is ClientKind.COMPANY)
    if phones is not None:
        args["phones"] = phones
    if args.get("company_id") == client.id:
        raise _bad("company_id: a client is not its own company", "company_id")
    try:
        await svc.store.clients.update(client_id, actor=principal.user_id, **args)
    except ValueError as exc:
        raise _bad(str(exc), "first_name") from None
    return await client_card_of(svc, principal, client_id)


@router.delete(
    "/api/clients/{client_id}",
    status_code=204,
    summary="Delete a client (audited; its calls keep their history)",
    responses=_CARD_ERRORS,
)
async def delete_client(client_id: uuid.UUID, principal: CurrentPrincipal, svc: Svc) -> Response:
    await _visible_client(svc, principal, client_id)
    try:
        await svc.store.clients.delete(client_id, actor=principal.user_id)
    except NotFound:
        raise ApiNotFound("no such client", details={"id": str(client_id)}) from None
    return Response(status_code=204)


@router.post(
    "/api/clients/{client_id}/merge",
    summary="Merge a duplicate into this client (phones, tags, history kept)",
    responses=_CARD_ERRORS,
)
async def merge_clients(
    client_id: uuid.UUID, body: MergeBody, principal: CurrentPrincipal, svc: Svc
) -> dict[str, Any]:
    if body.duplicate_id == client_id:
        raise _bad("duplicate_id: a client cannot be merged into itself", "duplicate_id")
    await _visible_client(svc, principal, client_id)
    await _visible_client(svc, principal, body.duplicate_id)
    try:
        await svc.store.clients.merge(client_id, body.duplicate_id, actor=principal.user_id)
    except NotFound:
        raise ApiNotFound("no such client", details={"id": str(body.duplicate_id)}) from None
    return await client_card_of(svc, principal, client_id)


# --- notes and the timeline --------------------------------------------------


@router.post(
    "/api/clients/{client_id}/notes",
    status_code=201,
    summary="Write a note on a client's card",
    response_model=NoteOut,
    responses={**_CARD_ERRORS, 413: {"description": "note over 10,000 characters"}},
)
async def add_note(
    client_id: uuid.UUID, body: NoteBody, principal: CurrentPrincipal, svc: Svc
) -> JSONResponse:
    if len(body.text) > NOTE_MAX_CHARS:
        raise TooLarge(f"note over {NOTE_MAX_CHARS} characters", details={"limit": NOTE_MAX_CHARS})
    await _visible_client(svc, principal, client_id)
    note = await svc.store.clients.add_note(
        client_id, body.text, author=principal.user_id, actor=principal.user_id
    )
    directory = await Directory.load(svc)
    out = {
        "id": str(note.id),
        "text": note.text,
        "author": directory.person(note.author_user_id),
        "created_at": note.created_at.isoformat(),
    }
    return JSONResponse(out, status_code=201)


async def client_timeline(
    svc: Services, principal: Principal, client_id: uuid.UUID
) -> list[dict[str, Any]]:
    """The card's timeline, newest first: calls (only those the caller may open),
    notes, tasks and the audit log's changes."""
    await _visible_client(svc, principal, client_id)
    directory = await Directory.load(svc)
    items: list[dict[str, Any]] = []
    history = await svc.store.contacts.history(client_id=client_id, limit=200)
    for entry in history.entries:
        if can_open_call(principal, directory.call_agent(entry.call.agent_user_id)):
            summary = call_summary(entry, directory)
            summary["recording_url"] = (
                f"/api/calls/{entry.call.id}/recording" if summary["recording"] else None
            )
            items.append({"type": "call", "at": entry.call.created_at, "call": summary})
    for note in await svc.store.clients.notes(client_id):
        items.append(
            {
                "type": "note",
                "at": note.created_at,
                "note": {
                    "id": str(note.id),
                    "text": note.text,
                    "author": directory.person(note.author_user_id),
                    "created_at": note.created_at.isoformat(),
                },
            }
        )
    for task in await svc.store.tasks.for_entity(client_id=client_id):
        items.append(
            {
                "type": "task",
                "at": task.created_at,
                "task": {
                    "id": str(task.id),
                    "title": task.title,
                    "kind": task.kind.value,
                    "due_at": None if task.due_at is None else task.due_at.isoformat(),
                    "done": task.done,
                    "assignee": directory.person(task.assignee_user_id),
                },
            }
        )
    for change in await svc.store.audit.for_entity("client", client_id):
        if change.action == "add_note":
            continue
        actor = None
        try:
            actor = directory.person(uuid.UUID(change.actor))
        except ValueError:
            actor = None
        items.append(
            {
                "type": "change",
                "at": change.at,
                "change": {
                    "action": change.action,
                    "fields": sorted(change.changes),
                    "actor": actor,
                },
            }
        )
    items.sort(key=lambda i: i["at"], reverse=True)
    for item in items:
        item["at"] = item["at"].isoformat()
    return items


@router.get(
    "/api/clients/{client_id}/timeline",
    summary="A client's calls, notes, tasks and changes, newest first",
    response_model=Timeline,
    response_model_exclude_none=True,
    responses=_CARD_ERRORS,
)
async def timeline(client_id: uuid.UUID, principal: CurrentPrincipal, svc: Svc) -> dict[str, Any]:
    return {"items": await client_timeline(svc, principal, client_id)}


# --- what admins define, and the users to choose from ------------------------


def _field_out(d: CustomFieldDef) -> dict[str, Any]:
    return {"key": d.key, "label": d.label, "type": d.type.value, "choices": list(d.choices)}


def _admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("admins only")


@router.get(
    "/api/client-fields", summary="The custom client fields", response_model=list[FieldDefOut]
)
async def list_fields(principal: CurrentPrincipal, svc: Svc) -> list[dict[str, Any]]:
    return [_field_out(d) for d in await svc.store.definitions.fields()]


@router.post(
    "/api/client-fields",
    status_code=201,
    summary="Define a custom client field (admins)",
    response_model=FieldDefOut,
    responses=_ADMIN_ERRORS,
)
async def define_field(body: FieldDefBody, principal: CurrentPrincipal, svc: Svc) -> JSONResponse:
    _admin(principal)
    try:
        found = await svc.store.definitions.define_field(
            body.key,
            body.label,
            CustomFieldType(body.type),
            choices=body.choices,
            actor=principal.user_id,
        )
    except Conflict:
        raise ApiConflict("this field is defined", details={"path": "key"}) from None
    except ValueError as exc:
        path = str(exc).partition(":")[0]
        raise _bad(str(exc), path if path in ("key", "label", "choices") else "body") from None
    return JSONResponse(_field_out(found), status_code=201)


@router.delete(
    "/api/client-fields/{key}",
    status_code=204,
    summary="Remove a custom field's definition (admins)",
    responses={403: _ADMIN_ERRORS[403], 404: {"description": "no such field"}},
)
async def remove_field(key: str, principal: CurrentPrincipal, svc: Svc) -> Response:
    _admin(principal)
    try:
        await svc.store.definitions.remove_field(key, actor=principal.user_id)
    except NotFound:
        raise ApiNotFound("no such field", details={"key": key}) from None
    return Response(status_code=204)


@router.get("/api/client-tags", summary="The defined tags", response_model=list[str])
async def list_tags(principal: CurrentPrincipal, svc: Svc) -> list[str]:
    return await svc.store.definitions.tags()


@router.post(
    "/api/client-tags",
    status_code=201,
    summary="Define a tag (admins)",
    response_model=str,
    responses=_ADMIN_ERRORS,
)
async def define_tag(body: TagBody, principal: CurrentPrincipal, svc: Svc) -> JSONResponse:
    _admin(principal)
    name = await svc.store.definitions.define_tag(body.name, actor=principal.user_id)
    return JSONResponse(name, status_code=201)


@router.delete(
    "/api/client-tags/{name}",
    status_code=204,
    summary="Remove a tag's definition (admins)",
    responses={403: _ADMIN_ERRORS[403], 404: {"description": "no such tag"}},
)
async def remove_tag(name: str, principal: CurrentPrincipal, svc: Svc) -> Response:
    _admin(principal)
    try:
        await svc.store.definitions.remove_tag(name, actor=principal.user_id)
    except NotFound:
        raise ApiNotFound("no such tag", details={"name": name}) from None
    return Response(status_code=204)


@router.get(
    "/api/users",
    summary="The active users (to choose a responsible user or whom to share with)",
    response_model=list[UserOut],
)
async def list_users(principal: CurrentPrincipal, svc: Svc) -> list[dict[str, str]]:
    users = await svc.store.users.list()
    return [
        {"id": str(u.id), "display_name": u.display_name}
        for u in sorted(users, key=lambda u: u.display_name.casefold())
        if u.active
    ]
