"""Who is asking: the one principal dependency every endpoint uses.

A request is authenticated by the browser's session cookie (see
:mod:`web.sessions`) or, for integrations, by an API token in
``Authorization: Bearer sbt_...``. A request carrying the cookie that changes
state (any method but GET, HEAD, OPTIONS) must also carry the session's CSRF
token in ``X-CSRF-Token``; a bearer request needs none (a browser never adds
that header on its own). Rights are then decided from the principal by the
functions of :mod:`ws_gateway.rights`, the same as on the websocket.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from crm_store.repos.sessions import is_ticket
from ws_gateway import Principal, principal_from_user

from . import sessions
from ._services import Services, services
from .errors import Unauthenticated

__all__ = ["SAFE_METHODS", "CurrentPrincipal", "principal"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def principal(request: Request, svc: Annotated[Services, Depends(services)]) -> Principal:
    """The authenticated user of ``request``; 401 ``unauthenticated`` if none,
    403 ``forbidden`` for a cookie request without the right CSRF token."""
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() == "bearer" and credential:
        # A websocket ticket is no API token: refused here, and not used up.
        is_token = not is_ticket(credential.strip())
        user = await svc.store.users.authenticate(credential.strip()) if is_token else None
        if user is None:
            raise Unauthenticated("invalid or revoked API token")
        return principal_from_user(user, svc.config().agents)
    found = await sessions.from_cookie(request, svc)
    if found is None:
        raise Unauthenticated("log in first")
    if request.method not in SAFE_METHODS:
        sessions.check_csrf(request, found)
    return found.principal


CurrentPrincipal = Annotated[Principal, Depends(principal)]
"""Annotate an endpoint parameter with this to get the caller's principal."""
