"""The leads pool: leads to process (unowned, newest first), taking one (atomic:
of two agents pressing at once one wins, the other is told who did), my leads,
leads added by hand, and closing a lead as done (converted into a client, or
linked to an existing one) or unsuitable with a reason."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from crm_store import Conflict, InvalidPhone, Lead, LeadSource, LeadStatus, NotFound
from crm_store.repos.leads import CLOSE_REASON_MAX
from ws_gateway import Principal
from ws_gateway.exceptions import BadRequest, Forbidden
from ws_gateway.exceptions import Conflict as ApiConflict
from ws_gateway.exceptions import NotFound as ApiNotFound
from ws_gateway.rights import can_work_lead, check_contact

from ._api_common import NOTE_MAX_CHARS, Directory, lead_hit
from ._services import Services, services
from .security import CurrentPrincipal

__all__ = ["lead_row", "list_leads", "router"]

router = APIRouter(tags=["leads"])

Svc = Annotated[Services, Depends(services)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad input; details.path names the field"},
    403: {"description": "the lead is another user's"},
    404: {"description": "no such lead (or client)"},
    409: {"description": "taken by someone else first, or closed already"},
}

View = Literal["pool", "mine", "closed", "all"]


class LeadRow(BaseModel):
    """A lead as the lists show it."""

    id: uuid.UUID
    display_name: str
    company: str | None
    phones: list[dict[str, str]]
    emails: list[str]
    source: LeadSource
    status: LeadStatus
    owner: dict[str, str] | None
    note: str | None
    close_reason: str | None
    converted_client_id: uuid.UUID | None
    created_at: str
    closed_at: str | None


class LeadList(BaseModel):
    leads: list[LeadRow]
    total: int


def lead_row(lead: Lead, directory: Directory) -> dict[str, Any]:
    hit = lead_hit(lead, directory)
    return {
        "id": str(lead.id),
        "display_name": lead.display_name,
        "company": lead.company_name,
        "phones": hit["phones"],
        "emails": list(lead.emails),
        "source": lead.source.value,
        "status": lead.status.value,
        "owner": hit["responsible"],
        "note": lead.note,
        "close_reason": lead.close_reason,
        "converted_client_id": None
        if lead.converted_client_id is None
        else str(lead.converted_client_id),
        "created_at": lead.created_at.isoformat(),
        "closed_at": None if lead.closed_at is None else lead.closed_at.isoformat(),
    }


async def list_leads(
    svc: Services,
    principal: Principal,
    view: View,
    *,
    source: LeadSource | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """One page of a view of the leads (the API's and the page's)."""
    open_ = (LeadStatus.UNPROCESSED, LeadStatus.IN_PROGRESS)
    closed = (LeadStatus.DONE, LeadStatus.UNSUITABLE)
    if view == "pool":
        page = await svc.store.leads.page(
            unowned=True, statuses=open_, source=source, limit=limit, offset=offset
        )
    elif view == "mine":
        page = await svc.store.leads.page(
            owner_user_id=principal.user_id,
            statuses=open_,
            source=source,
            limit=limit,
            offset=offset,
        )
    elif view == "closed":
        page = await svc.store.leads.page(
            owner_user_id=None if principal.sees_all else principal.user_id,
            statuses=closed,
            source=source,
            limit=limit,
            offset=offset,
        )
    else:
        page = await svc.store.leads.page(source=source, limit=limit, offset=offset)
    directory = await Directory.load(svc)
    return {"leads": [lead_row(x, directory) for x in page.leads], "total": page.total}


@router.get("/api/leads", summary="Leads: the pool to process, mine, closed or all, newest first")
async def get_leads(
    principal: CurrentPrincipal,
    svc: Svc,
    view: View = "pool",
    source: LeadSource | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> LeadList:
    return LeadList.model_validate(
        await list_leads(svc, principal, view, source=source, limit=limit, offset=offset)
    )


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ManualLead(_Body):
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    company: str | None = Field(default=None, max_length=200)
    phones: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default=[], max_length=10
    )
    emails: list[
        Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
    ] = Field(default=[], max_length=10)
    note: str | None = Field(default=None, max_length=NOTE_MAX_CHARS)
    source: LeadSource = LeadSource.MANUAL
    #: True: the lead goes to the pool for anyone to take; false: it is mine.
    to_pool: bool = True


@router.post("/api/leads/manual", status_code=201, summary="Add a lead by hand", responses=_ERRORS)
async def add_lead(body: ManualLead, principal: CurrentPrincipal, svc: Svc) -> LeadRow:
    if not (body.first_name or body.last_name or body.company or body.phones or body.emails):
        raise BadRequest(
            "a lead needs a name, a company, a phone or an email", details={"path": "first_name"}
        )
    try:
        lead = await svc.store.leads.create(
            first_name=body.first_name or None,
            last_name=body.last_name or None,
            company_name=body.company or None,
            phones=body.phones,
            emails=body.emails,
            source=body.source,
            owner_user_id=None if body.to_pool else principal.user_id,
            status=LeadStatus.UNPROCESSED if body.to_pool else LeadStatus.IN_PROGRESS,
            note=body.note or None,
            actor=principal.user_id,
        )
    except InvalidPhone as exc:
        raise BadRequest(f"not a phone number: {exc.reason}", details={"path": "phones"}) from None
    return LeadRow.model_validate(lead_row(lead, await Directory.load(svc)))


async def _lead(svc: Services, lead_id: uuid.UUID) -> Lead:
    try:
        return await svc.store.leads.get(lead_id)
    except NotFound:
        raise ApiNotFound("no such lead", details={"id": str(lead_id)}) from None


async def take_lead(svc: Services, principal: Principal, lead_id: uuid.UUID) -> dict[str, Any]:
    """Take a lead from the pool; the loser of a race gets 409 naming the winner."""
    lead = await _lead(svc, lead_id)
    if not lead.status.is_open:
        raise ApiConflict("this lead is closed", details={"id": str(lead_id)})
    try:
        lead = await svc.store.leads.take(lead_id, principal.user_id, actor=principal.user_id)
    except Conflict:
        now = await _lead(svc, lead_id)
        directory = await Directory.load(svc)
        owner = directory.person(now.owner_user_id)
        name = owner["display_name"] if owner is not None else "someone else"
        raise ApiConflict(
            f"{name} took this lead first",
            details={"id": str(lead_id), "owner": owner},
        ) from None
    return lead_row(lead, await Directory.load(svc))


@router.post(
    "/api/leads/{lead_id}/take",
    summary="Take a lead from the pool (atomic: one of two agents wins)",
    responses=_ERRORS,
)
async def post_take(lead_id: uuid.UUID, principal: CurrentPrincipal, svc: Svc) -> LeadRow:
    return LeadRow.model_validate(await take_lead(svc, principal, lead_id))


class CloseLead(_Body):
    outcome: Literal["done", "unsuitable"]
    reason: str | None = Field(default=None, max_length=CLOSE_REASON_MAX)
    #: done only: make a new client of the lead.
    convert: bool = False
    #: done only: link the lead to this existing client instead.
    client_id: uuid.UUID | None = None


@router.post("/api/leads/{lead_id}/close", summary="Close a lead", responses=_ERRORS)
async def post_close(
    lead_id: uuid.UUID, body: CloseLead, principal: CurrentPrincipal, svc: Svc
) -> LeadRow:
    lead = await _lead(svc, lead_id)
    if not can_work_lead(principal, lead.owner_user_id):
        raise Forbidden("take the lead before closing it", details={"id": str(lead_id)})
    if body.outcome == "unsuitable":
        if not body.reason:
            raise BadRequest("say why the lead is unsuitable", details={"path": "reason"})
        if body.convert or body.client_id is not None:
            raise BadRequest("an unsuitable lead is not converted", details={"path": "convert"})
    if body.convert and body.client_id is not None:
        raise BadRequest(
            "convert into a new client or link to an existing one, not both",
            details={"path": "client_id"},
        )
    if body.client_id is not None:
        try:
            client = await svc.store.clients.get(body.client_id)
        except NotFound:
            raise ApiNotFound(
                "no such client", details={"path": "client_id", "id": str(body.client_id)}
            ) from None
        check_contact(principal, client.visibility.value, client.responsible_user_id, client.id)
    try:
        closed = await svc.store.leads.close(
            lead_id,
            LeadStatus(body.outcome),
            reason=body.reason,
            convert=body.convert,
            client_id=body.client_id,
            actor=principal.user_id,
        )
    except Conflict:
        raise ApiConflict("this lead is closed already", details={"id": str(lead_id)}) from None
    return LeadRow.model_validate(lead_row(closed, await Directory.load(svc)))


@router.post(
    "/api/leads/{lead_id}/release", summary="Give a lead back to the pool", responses=_ERRORS
)
async def post_release(lead_id: uuid.UUID, principal: CurrentPrincipal, svc: Svc) -> LeadRow:
    lead = await _lead(svc, lead_id)
    if not can_work_lead(principal, lead.owner_user_id):
        raise Forbidden("this lead is not yours", details={"id": str(lead_id)})
    try:
        released = await svc.store.leads.release(lead_id, actor=principal.user_id)
    except Conflict:
        raise ApiConflict("this lead is closed already", details={"id": str(lead_id)}) from None
    return LeadRow.model_validate(lead_row(released, await Directory.load(svc)))


class Change(BaseModel):
    at: str
    actor: str
    action: str
    changes: dict[str, Any]


@router.get(
    "/api/leads/{lead_id}/changes", summary="A lead's history of changes", responses=_ERRORS
)
async def get_changes(lead_id: uuid.UUID, principal: CurrentPrincipal, svc: Svc) -> list[Change]:
    await _lead(svc, lead_id)
    return [Change.model_validate(c) for c in await lead_changes(svc, lead_id)]


async def lead_changes(svc: Services, lead_id: uuid.UUID) -> list[dict[str, Any]]:
    directory = await Directory.load(svc)
    out = []
    for entry in reversed(await svc.store.audit.for_entity("lead", lead_id)):
        try:
            who = directory.person(uuid.UUID(entry.actor))
        except ValueError:
            who = None
        out.append(
            {
                "at": entry.at.isoformat(),
                "actor": who["display_name"] if who is not None else entry.actor,
                "action": entry.action,
                "changes": {k: _plain(v) for k, v in entry.changes.items()},
            }
        )
    return out


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)
