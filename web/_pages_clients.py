"""The clients' pages of the workspace: the list, the card with its timeline, and
the form to create or edit a client.

The pages render the same data as the JSON API (``client_list``,
``client_card_of``, ``client_timeline``), with the same rights; the form and the
card's buttons talk to the API from ``static/js/clients.js``.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import TypeAdapter, ValidationError

from crm_store import ClientKind
from crm_store.repos.clients import ClientFilter
from ws_gateway import Principal
from ws_gateway.exceptions import BadRequest

from ._api_clients import _visible_client, client_list, client_timeline
from ._api_common import NOTE_MAX_CHARS
from ._api_contacts import client_card_of
from ._pages_crm import crm_page
from ._services import Services, services
from .errors import TooLarge
from .pages import Renderer, _fragment, _renderer
from .security import CurrentPrincipal
from .sessions import from_cookie

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Svc = Annotated[Services, Depends(services)]
Render = Annotated[Renderer, Depends(_renderer)]

_SORTS = ("name", "-name", "-created", "created", "-last_contact", "last_contact", "-updated")
_PER_PAGE = 50
_DAY = TypeAdapter(date)


def _one_day(params: Any, name: str) -> date | None:
    raw = params.get(name) or ""
    if not raw:
        return None
    try:
        return _DAY.validate_python(raw)
    except ValidationError:
        raise BadRequest(f"{name}: not a day (YYYY-MM-DD)", details={"path": name}) from None


async def _list_args(svc: Services, params: Any) -> dict[str, Any]:
    """The list's arguments from the page's query (the filter form's fields)."""
    defs = await svc.store.definitions.fields()
    fields = []
    for d in defs:
        for op in ("eq", "ge", "le"):
            value = (params.get(f"f.{d.key}.{op}") or "").strip()
            if value:
                fields.append(f"{d.key}:{op}:{value}")
    sort = params.get("sort") or "name"
    if sort not in _SORTS:
        raise BadRequest("sort: not a known order", details={"path": "sort"})
    try:
        page = max(1, min(20_000, int(params.get("page") or 1)))
    except ValueError:
        raise BadRequest("page: not a number", details={"path": "page"}) from None
    responsible: uuid.UUID | None = None
    if params.get("responsible"):
        try:
            responsible = uuid.UUID(params["responsible"])
        except ValueError:
            raise BadRequest("responsible: not a user", details={"path": "responsible"}) from None
    return {
        "scope": "my" if params.get("scope") == "my" else "all",
        "q": (params.get("q") or "")[:100],
        "tags": [t for t in params.getlist("tag") if t][:20],
        "responsible": responsible,
        "kind": params.get("kind") if params.get("kind") in ("person", "company") else None,
        "created_from": _one_day(params, "created_from"),
        "created_until": _one_day(params, "created_until"),
        "contact_from": _one_day(params, "contact_from"),
        "contact_until": _one_day(params, "contact_until"),
        "open_tasks": {"yes": True, "no": False}.get(params.get("open_tasks") or ""),
        "fields": fields,
        "sort": sort,
        "page": page,
        "per_page": _PER_PAGE,
    }


@router.get("/clients", response_class=HTMLResponse)
async def clients_page(request: Request, svc: Svc, renderer: Render) -> Response:
    found = await from_cookie(request, svc)
    if found is None:
        return await crm_page(request, svc, renderer, "crm/clients.html", active="clients")
    params = request.query_params
    args = await _list_args(svc, params)
    listed = await client_list(svc, found.principal, **args)
    page = args["page"]
    kept = [(k, v) for k, v in params.multi_items() if k != "page" and v]
    return await crm_page(
        request,
        svc,
        renderer,
        "crm/clients.html",
        active="clients",
        listed=listed,
        params=params,
        chosen_tags=set(params.getlist("tag")),
        defs=await svc.store.definitions.fields(),
        tags=await svc.store.definitions.tags(),
        users=[u for u in await svc.store.users.list() if u.active],
        sorts=_SORTS,
        page=page,
        count_url=f"/partials/clients/count?{urlencode(kept)}",
        prev_url=f"/clients?{urlencode([*kept, ('page', page - 1)])}" if page > 1 else None,
        next_url=f"/clients?{urlencode([*kept, ('page', page + 1)])}" if listed["more"] else None,
    )


@router.get("/partials/clients/count", response_class=HTMLResponse)
async def count_partial(
    request: Request, principal: CurrentPrincipal, svc: Svc, renderer: Render
) -> HTMLResponse:
    """How many clients the list's filters match: asked apart from the page, which
    shows its rows without waiting for every match to be counted."""
    args = await _list_args(svc, request.query_params)
    listed = await client_list(svc, principal, **{**args, "per_page": 1, "page": 1, "total": True})
    return _fragment(request, svc, renderer, "crm/client_count.html", total=listed["total"])


async def _form(
    request: Request,
    svc: Services,
    renderer: Renderer,
    principal: Principal,
    card: dict[str, Any] | None,
) -> Response:
    companies = await svc.store.clients.page(
        ClientFilter(kind=ClientKind.COMPANY),
        viewer=principal.user_id,
        sees_all=principal.sees_all,
        limit=500,
    )
    return await crm_page(
        request,
        svc,
        renderer,
        "crm/client_form.html",
        active="clients",
        card=card,
        defs=await svc.store.definitions.fields(),
        tags=await svc.store.definitions.tags(),
        users=[u for u in await svc.store.users.list() if u.active],
        companies=[(str(c.id), c.display_name) for c in companies.clients],
    )


@router.get("/clients/new", response_class=HTMLResponse)
async def new_client_page(request: Request, svc: Svc, renderer: Render) -> Response:
    found = await from_cookie(request, svc)
    if found is None:
        return await crm_page(request, svc, renderer, "crm/client_form.html", active="clients")
    return await _form(request, svc, renderer, found.principal, None)


@router.get("/clients/{client_id}/edit", response_class=HTMLResponse)
async def edit_client_page(
    client_id: uuid.UUID, request: Request, svc: Svc, renderer: Render
) -> Response:
    found = await from_cookie(request, svc)
    if found is None:
        return await crm_page(request, svc, renderer, "crm/client_form.html", active="clients")
    card = await client_card_of(svc, found.principal, client_id)
    return await _form(request, svc, renderer, found.principal, card)


@router.get("/clients/{client_id}", response_class=HTMLResponse)
async def client_page(
    client_id: uuid.UUID, request: Request, svc: Svc, renderer: Render
) -> Response:
    found = await from_cookie(request, svc)
    if found is None:
        return await crm_page(request, svc, renderer, "crm/client_card.html", active="clients")
    principal = found.principal
    card = await client_card_of(svc, principal, client_id)
    users = {str(u.id): u.display_name for u in await svc.store.users.list()}
    return await crm_page(
        request,
        svc,
        renderer,
        "crm/client_card.html",
        active="clients",
        card=card,
        defs=await svc.store.definitions.fields(),
        items=await client_timeline(svc, principal, client_id),
        user_names=users,
        can_call=bool(principal.agents),
    )


@router.post("/partials/clients/{client_id}/notes", response_class=HTMLResponse)
async def note_partial(
    client_id: uuid.UUID,
    request: Request,
    principal: CurrentPrincipal,
    svc: Svc,
    renderer: Render,
    text: Annotated[str, Form()] = "",
) -> HTMLResponse:
    if len(text) > NOTE_MAX_CHARS:
        raise TooLarge(f"note over {NOTE_MAX_CHARS} characters", details={"limit": NOTE_MAX_CHARS})
    if not text.strip():
        raise BadRequest("text: write something", details={"path": "text"})
    await _visible_client(svc, principal, client_id)
    await svc.store.clients.add_note(
        client_id, text.strip(), author=principal.user_id, actor=principal.user_id
    )
    items = await client_timeline(svc, principal, client_id)
    return _fragment(request, svc, renderer, "crm/client_timeline.html", items=items)
