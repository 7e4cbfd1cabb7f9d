"""The CRM workspace's frame: the pages beside the widget (clients, leads, tasks,
calendar, import) share one layout, one navigation and one way to open a page.

A page module adds its routes to its own router and renders with :func:`crm_page`,
which asks for a browser session (303 to ``/login`` without one) and gives the
template what the layout needs: the user, the CSRF token (htmx sends it on every
request), the navigation with the current entry marked, and the language links.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from . import sessions
from ._services import Services
from .pages import Renderer, page_response, to_login

__all__ = ["NAV", "NavEntry", "crm_page"]


@dataclass(frozen=True, slots=True)
class NavEntry:
    """One entry of the workspace's navigation: its key, path and label's msgid."""

    key: str
    path: str
    label: str


def N_(message: str) -> str:
    """Mark ``message`` for the catalogues; it is translated where it is shown."""
    return message


#: The workspace's navigation, in order. Labels are msgids, translated in the layout.
NAV: tuple[NavEntry, ...] = (
    NavEntry("phone", "/widget", N_("Phone")),
    NavEntry("clients", "/clients", N_("Clients")),
    NavEntry("leads", "/leads", N_("Leads")),
    NavEntry("tasks", "/tasks", N_("Tasks")),
    NavEntry("calendar", "/calendar", N_("Calendar")),
    NavEntry("import", "/import", N_("Import")),
)


async def crm_page(
    request: Request,
    svc: Services,
    renderer: Renderer,
    name: str,
    *,
    active: str,
    **context: Any,
) -> Response:
    """Render the workspace page ``name`` (a template extending ``crm/layout.html``)
    for the session's user, with ``active`` the navigation entry to mark."""
    found = await sessions.from_cookie(request, svc)
    if found is None:
        return to_login(request)
    return page_response(
        request,
        svc,
        renderer,
        name,
        csrf_token=found.csrf_token,
        user=found.principal,
        nav=NAV,
        active=active,
        here=request.url.path,
        **context,
    )
