"""The pages of the leads pool, the tasks' kanban and the calendar (the CRM
workspace's frame, see :mod:`web._pages_crm`); they read through the API's
functions, so the rights are the API's."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from . import sessions
from ._api_leads import list_leads
from ._api_tasks import board
from ._pages_crm import crm_page
from ._services import Services, services
from .pages import Renderer, _renderer, to_login

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

Svc = Annotated[Services, Depends(services)]
Render = Annotated[Renderer, Depends(_renderer)]


@router.get("/leads")
async def leads_page(
    request: Request,
    svc: Svc,
    renderer: Render,
    view: Literal["pool", "mine", "closed"] = "pool",
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    found = await sessions.from_cookie(request, svc)
    if found is None:
        return to_login(request)
    data = await list_leads(svc, found.principal, view, limit=50, offset=offset)
    return await crm_page(
        request, svc, renderer, "crm/leads.html", active="leads", view=view, offset=offset, **data
    )


@router.get("/tasks")
async def tasks_page(request: Request, svc: Svc, renderer: Render) -> Response:
    found = await sessions.from_cookie(request, svc)
    if found is None:
        return to_login(request)
    columns = await board(svc, found.principal)
    return await crm_page(request, svc, renderer, "crm/tasks.html", active="tasks", columns=columns)


@router.get("/calendar")
async def calendar_page(
    request: Request,
    svc: Svc,
    renderer: Render,
    view: Literal["month", "week", "day"] = "week",
    date: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")] = None,
) -> Response:
    return await crm_page(
        request, svc, renderer, "crm/calendar.html", active="calendar", view=view, date=date or ""
    )


def N_(message: str) -> str:
    """Mark ``message`` for the catalogues (the words the templates translate)."""
    return message


#: Sources, statuses and kinds, shown through the catalogues.
WORDS = (
    N_("manual"),
    N_("import"),
    N_("incoming_call"),
    N_("outgoing_call"),
    N_("dialer"),
    N_("web_form"),
    N_("unprocessed"),
    N_("in_progress"),
    N_("done"),
    N_("unsuitable"),
    N_("call"),
    N_("email"),
    N_("meeting"),
    N_("other"),
)
