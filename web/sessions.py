"""Browser sessions: the cookie, CSRF and the websocket ticket.

The cookie ``sb_session`` holds the session's token (``sbs_...``; the store keeps
only its hash). It is HttpOnly (page scripts never see it), SameSite=Strict (no
other site's page sends it) and Secure when the request came over https. A request
that changes state with it must also carry the session's CSRF token in the
``X-CSRF-Token`` header, which the page reads from its ``<meta name="csrf-token">``
or from ``/api/auth/me``: a form or a script of another origin cannot set it.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from fastapi import Request, Response

from crm_store import StoreUnavailable, WebSession
from crm_store.repos.sessions import ABSOLUTE_TIMEOUT
from ws_gateway import Principal, principal_from_user
from ws_gateway.exceptions import Forbidden, Unavailable

from ._services import Services

__all__ = [
    "COOKIE_NAME",
    "CSRF_HEADER",
    "CookieSession",
    "check_csrf",
    "clear_cookie",
    "from_cookie",
    "is_https",
    "set_cookie",
]

COOKIE_NAME = "sb_session"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True, slots=True)
class CookieSession:
    """The open session of a request's cookie, with its user as a principal."""

    principal: Principal
    csrf_token: str = field(repr=False)
    session: WebSession
    #: The cookie's value, for :meth:`crm_store.SessionRepository.logout`.
    token: str = field(repr=False)


async def from_cookie(request: Request, svc: Services) -> CookieSession | None:
    """The session of the request's cookie, or ``None`` (no cookie, or a session
    unknown, revoked, expired, or of a disabled user). A store that does not
    answer is 503 ``unavailable``."""
    token = request.cookies.get(COOKIE_NAME)
    if not token:
        return None
    try:
        found = await svc.store.sessions.get(token)
    except StoreUnavailable as exc:
        raise Unavailable("the database does not answer; try again shortly") from exc
    if found is None:
        return None
    user, session = found
    return CookieSession(
        principal=principal_from_user(user, svc.config().agents),
        csrf_token=session.csrf_token,
        session=session,
        token=token,
    )


def check_csrf(request: Request, session: CookieSession) -> None:
    """Raise ``forbidden`` (``details.reason = "csrf"``) unless the request
    carries the session's CSRF token."""
    sent = request.headers.get(CSRF_HEADER, "")
    # Compared in constant time, as bytes: a header may hold any Latin-1 text.
    if not sent or not hmac.compare_digest(
        sent.encode("utf-8"), session.csrf_token.encode("utf-8")
    ):
        raise Forbidden(
            "this request needs the session's CSRF token in X-CSRF-Token",
            details={"reason": "csrf"},
        )


def is_https(request: Request) -> bool:
    """Whether the request came over https (the cookie is then Secure)."""
    return request.url.scheme == "https"


def set_cookie(response: Response, token: str, *, secure: bool) -> None:
    """Put the session ``token`` in the cookie of ``response``."""
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=int(ABSOLUTE_TIMEOUT.total_seconds()),
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, *, secure: bool) -> None:
    """Tell the browser to forget the session cookie."""
    response.delete_cookie(COOKIE_NAME, path="/", secure=secure, httponly=True, samesite="strict")
