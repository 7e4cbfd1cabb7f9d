"""Browser sessions: the cookie, CSRF and the websocket ticket (to be built)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from ws_gateway import Principal

from ._services import Services

__all__ = ["CookieSession", "check_csrf", "from_cookie"]


@dataclass(frozen=True, slots=True)
class CookieSession:
    principal: Principal
    csrf_token: str


async def from_cookie(request: Request, svc: Services) -> CookieSession | None:
    """The session of the request's cookie, or ``None``."""
    return None


def check_csrf(request: Request, session: CookieSession) -> None:
    """Raise ``forbidden`` unless the request carries the session's CSRF token."""
