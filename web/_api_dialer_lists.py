"""Call lists built from the CRM's lists, and the do-not-call list.

A call list is made from the clients or leads a filter (or a selection) gives,
as the principal may see them (:mod:`web._lists`): one item per phone number.
Numbers on the do-not-call list stay in the list and are skipped when the dialer
reaches them (the list may change until then). Everyone may read the do-not-call
list; changing it needs the supervisor or admin role.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from crm_store import CallListEntry, Conflict, InvalidPhone, LeadStatus, NotFound
from crm_store.repos.dialer import DoNotCallEntry
from ws_gateway import Principal
from ws_gateway.exceptions import BadRequest, Forbidden
from ws_gateway.exceptions import Conflict as ApiConflict
from ws_gateway.exceptions import NotFound as ApiNotFound

from ._lists import MAX_LIST_ROWS, ListTooLong, visible_clients, visible_leads
from ._services import Services, services
from .errors import TooLarge
from .security import CurrentPrincipal

__all__ = ["router"]

router = APIRouter(tags=["dialer lists"])

Svc = Annotated[Services, Depends(services)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class NewCallList(_Body):
    name: str = Field(min_length=1, max_length=200)
    source: Literal["clients", "leads"]
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=20, description="clients: carrying every tag"
    )
    mine: bool = Field(default=False, description="clients: only those I am responsible for")
    statuses: list[LeadStatus] = Field(default_factory=list, description="leads: in these")
    owner: Literal["me", "none"] | None = Field(default=None, description="leads: mine, pool")
    ids: list[uuid.UUID] | None = Field(
        default=None, max_length=10_000, description="A selection: only these contacts"
    )


class CallListMade(BaseModel):
    id: uuid.UUID
    name: str
    contacts: int
    total: int
    added: int
    duplicates: int
    invalid: int


class NewDoNotCall(_Body):
    number: str = Field(min_length=1, max_length=32)
    prefix: bool = False
    reason: str | None = Field(default=None, max_length=200)


class DoNotCall(BaseModel):
    id: uuid.UUID
    number: str
    prefix: bool
    reason: str | None
    created_at: datetime


def _dnc(entry: DoNotCallEntry) -> DoNotCall:
    return DoNotCall(
        id=entry.id,
        number=entry.number,
        prefix=entry.prefix,
        reason=entry.reason,
        created_at=entry.created_at,
    )


def _supervisor(principal: Principal, what: str) -> None:
    if not principal.sees_all:
        raise Forbidden(f"{what} needs the supervisor or admin role")


@router.post(
    "/api/call-lists",
    status_code=201,
    summary="A call list from the clients or leads of a filter or a selection",
    response_model=CallListMade,
    responses={
        400: {"description": "a bad field, or no phone number in the list"},
        413: {"description": f"more than {MAX_LIST_ROWS} contacts"},
    },
)
async def make_call_list(body: NewCallList, principal: CurrentPrincipal, svc: Svc) -> JSONResponse:
    entries: list[CallListEntry] = []
    contacts = 0
    try:
        if body.source == "clients":
            async for clients in visible_clients(
                svc, principal, tags=body.tags, mine=body.mine, ids=body.ids
            ):
                for client in clients:
                    contacts += 1
                    entries.extend(
                        CallListEntry(p.number_e164, client_id=client.id) for p in client.phones
                    )
        else:
            async for leads in visible_leads(
                svc, principal, statuses=body.statuses, owner=body.owner, ids=body.ids
            ):
                for lead in leads:
                    contacts += 1
                    entries.extend(
                        CallListEntry(p.number_e164, lead_id=lead.id) for p in lead.phones
                    )
    except ListTooLong:
        raise TooLarge(
            f"more than {MAX_LIST_ROWS} contacts: narrow the filter",
            details={"limit": MAX_LIST_ROWS},
        ) from None
    if not entries:
        raise BadRequest(
            "no phone number among the contacts of this filter", details={"path": "source"}
        )
    made, report = await svc.store.call_lists.create_list(
        body.name,
        principal.user_id,
        entries,
        settings={"source": body.source},
        actor=principal.user_id,
    )
    result = CallListMade(
        id=made.id,
        name=made.name,
        contacts=contacts,
        total=report.total,
        added=report.added,
        duplicates=report.duplicates,
        invalid=len(report.invalid),
    )
    return JSONResponse(result.model_dump(mode="json"), status_code=201)


@router.get(
    "/api/do-not-call",
    summary="The do-not-call list: numbers and prefixes",
    response_model=list[DoNotCall],
)
async def list_do_not_call(principal: CurrentPrincipal, svc: Svc) -> list[DoNotCall]:
    return [_dnc(e) for e in await svc.store.dialer.do_not_call()]


@router.post(
    "/api/do-not-call",
    status_code=201,
    summary="Add a number or a prefix to the do-not-call list",
    response_model=DoNotCall,
    responses={
        400: {"description": "not a number, or not a prefix (+ and digits)"},
        403: {"description": "needs the supervisor or admin role"},
        409: {"description": "already on the list"},
    },
)
async def add_do_not_call(
    body: NewDoNotCall, principal: CurrentPrincipal, svc: Svc
) -> JSONResponse:
    _supervisor(principal, "changing the do-not-call list")
    try:
        entry = await svc.store.dialer.add_do_not_call(
            body.number, prefix=body.prefix, reason=body.reason or None, actor=principal.user_id
        )
    except InvalidPhone as exc:
        raise BadRequest(f"number: {exc.reason}", details={"path": "number"}) from None
    except Conflict:
        raise ApiConflict("already on the do-not-call list", details={"path": "number"}) from None
    return JSONResponse(_dnc(entry).model_dump(mode="json"), status_code=201)


@router.delete(
    "/api/do-not-call/{entry_id}",
    status_code=204,
    summary="Remove an entry of the do-not-call list",
    responses={
        403: {"description": "needs the supervisor or admin role"},
        404: {"description": "no such entry"},
    },
)
async def remove_do_not_call(
    entry_id: uuid.UUID, principal: CurrentPrincipal, svc: Svc
) -> Response:
    _supervisor(principal, "changing the do-not-call list")
    try:
        await svc.store.dialer.remove_do_not_call(entry_id, actor=principal.user_id)
    except NotFound:
        raise ApiNotFound("no such entry", details={"id": str(entry_id)}) from None
    return Response(status_code=204)
