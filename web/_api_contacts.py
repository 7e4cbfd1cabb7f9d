"""Contacts: search across clients and leads, their cards, creating them."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from crm_store import ClientKind, InvalidPhone, LeadSource, NotFound
from ws_gateway import Principal
from ws_gateway.exceptions import BadRequest
from ws_gateway.exceptions import NotFound as ApiNotFound
from ws_gateway.rights import check_contact

from ._api_common import (
    NOTE_MAX_CHARS,
    Directory,
    client_card,
    companies_of,
    lead_card,
    search_hit,
)
from ._services import Services, services
from .errors import TooLarge
from .security import CurrentPrincipal

__all__ = ["client_card_of", "lead_card_of", "router", "search_contacts"]

router = APIRouter(tags=["contacts"])

Svc = Annotated[Services, Depends(services)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    403: {"description": "private contact"},
    404: {"description": "no such contact"},
}


@router.get("/api/contacts/search", summary="Clients and leads by name, company, email or phone")
async def search(
    principal: CurrentPrincipal,
    svc: Svc,
    q: Annotated[str, Query(min_length=1, max_length=100)],
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
) -> dict[str, Any]:
    return {"results": await search_contacts(svc, principal, q, limit=limit)}


async def search_contacts(
    svc: Services, principal: Principal, q: str, *, limit: int = 20
) -> list[dict[str, Any]]:
    """The search hits ``principal`` may see (the API's and the page's)."""
    if not q.strip():
        raise BadRequest("q must not be blank", details={"path": "q"})
    hits = await svc.store.contacts.search(
        q, viewer=principal.user_id, sees_all=principal.sees_all, limit=limit
    )
    directory = await Directory.load(svc)
    companies = await companies_of(svc.store, [h.client for h in hits if h.client is not None])
    return [search_hit(h, directory, companies) for h in hits]


async def client_card_of(
    svc: Services, principal: Principal, client_id: uuid.UUID
) -> dict[str, Any]:
    """A client's card, after the rights check (the API's and the page's)."""
    try:
        client = await svc.store.clients.get(client_id)
    except NotFound:
        raise ApiNotFound("no such client", details={"id": str(client_id)}) from None
    shared = (
        await svc.store.clients.shared_with(client.id) if client.visibility == "private" else ()
    )
    check_contact(principal, client.visibility.value, client.responsible_user_id, client.id, shared)
    card = await client_card(svc.store, principal, await Directory.load(svc), client)
    card["shared_with"] = [str(u) for u in shared]
    return card


async def lead_card_of(svc: Services, principal: Principal, lead_id: uuid.UUID) -> dict[str, Any]:
    """A lead's card (the API's and the page's)."""
    try:
        lead = await svc.store.leads.get(lead_id)
    except NotFound:
        raise ApiNotFound("no such lead", details={"id": str(lead_id)}) from None
    return await lead_card(svc.store, principal, await Directory.load(svc), lead)


@router.get("/api/clients/{client_id}", summary="A client's card", responses=_NOT_FOUND)
async def get_client(client_id: uuid.UUID, principal: CurrentPrincipal, svc: Svc) -> dict[str, Any]:
    return await client_card_of(svc, principal, client_id)


@router.get("/api/leads/{lead_id}", summary="A lead's card", responses=_NOT_FOUND)
async def get_lead(lead_id: uuid.UUID, principal: CurrentPrincipal, svc: Svc) -> dict[str, Any]:
    return await lead_card_of(svc, principal, lead_id)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class NewClient(_Body):
    display_name: str = Field(min_length=1, max_length=200)
    phone: str | None = Field(default=None, min_length=1, max_length=64)
    email: str | None = Field(
        default=None, min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$"
    )
    kind: Literal["person", "company"] = "person"


class NewLead(_Body):
    name: str = Field(min_length=1, max_length=200)
    phone: str | None = Field(default=None, min_length=1, max_length=64)
    # Longer than NOTE_MAX_CHARS is refused with 413, not by the schema's 400.
    note: str | None = None


def _invalid_phone(exc: InvalidPhone) -> BadRequest:
    return BadRequest(f"not a phone number: {exc.reason}", details={"path": "phone"})


@router.post("/api/clients", status_code=201, summary="Create a client")
async def create_client(body: NewClient, principal: CurrentPrincipal, svc: Svc) -> JSONResponse:
    kind = ClientKind(body.kind)
    first, _, last = body.display_name.partition(" ")
    person = kind is ClientKind.PERSON
    try:
        client = await svc.store.clients.create(
            kind,
            first_name=first if person else None,
            last_name=(last.strip() or None) if person else None,
            name=None if person else body.display_name,
            phones=[body.phone] if body.phone else [],
            emails=[body.email] if body.email else [],
            responsible_user_id=principal.user_id,
            actor=principal.user_id,
        )
    except InvalidPhone as exc:
        raise _invalid_phone(exc) from None
    card = await client_card(svc.store, principal, await Directory.load(svc), client)
    return JSONResponse(card, status_code=201)


@router.post("/api/leads", status_code=201, summary="Create a lead")
async def create_lead(body: NewLead, principal: CurrentPrincipal, svc: Svc) -> JSONResponse:
    if body.note is not None and len(body.note) > NOTE_MAX_CHARS:
        raise TooLarge(f"note over {NOTE_MAX_CHARS} characters", details={"limit": NOTE_MAX_CHARS})
    first, _, last = body.name.partition(" ")
    try:
        lead = await svc.store.leads.create(
            first_name=first,
            last_name=last.strip() or None,
            phones=[body.phone] if body.phone else [],
            source=LeadSource.MANUAL,
            owner_user_id=principal.user_id,
            note=body.note or None,
            actor=principal.user_id,
        )
    except InvalidPhone as exc:
        raise _invalid_phone(exc) from None
    card = await lead_card(svc.store, principal, await Directory.load(svc), lead)
    return JSONResponse(card, status_code=201)
