"""Log in and out: ``/api/auth/login``, ``/logout``, ``/me`` and ``/ticket``.

Passwords are checked by the store (:meth:`crm_store.SessionRepository.login`),
which also keeps the lock-out of a user name (5 wrong passwords in a row: 15
minutes). On top of it this module caps failures per client address, in memory:
:data:`ADDRESS_MAX_FAILURES` within :data:`ADDRESS_WINDOW` seconds and the
address gets 429 until the oldest of them leaves the window, whatever name it
tries. The log-in body must be JSON, so a form of another site cannot log a
browser in to someone else's account.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from crm_store import LoginOutcome, StoreUnavailable
from crm_store.repos.sessions import TICKET_LIFETIME
from ws_gateway import Principal, principal_from_user
from ws_gateway.exceptions import Unavailable

from . import sessions
from ._services import Services, services
from .errors import Unauthenticated, error_body

__all__ = [
    "ADDRESS_MAX_FAILURES",
    "ADDRESS_WINDOW",
    "AddressLimiter",
    "LoginRequest",
    "Me",
    "SessionInfo",
    "Ticket",
    "router",
]

log = structlog.get_logger(__name__)

ADDRESS_MAX_FAILURES = 20
"""Failed log-ins from one address within :data:`ADDRESS_WINDOW`..."""

ADDRESS_WINDOW = 300.0
"""...seconds, after which the address is refused (429) for a while."""

# Bound on the addresses remembered: a spread-out attack must not grow it forever.
_MAX_ADDRESSES = 10_000

WRONG_CREDENTIALS = "wrong user name or password"

router = APIRouter(prefix="/api/auth", tags=["auth"])

SvcDep = Annotated[Services, Depends(services)]


class AddressLimiter:
    """Failed log-ins per client address in a sliding window, in memory."""

    def __init__(
        self,
        *,
        max_failures: int = ADDRESS_MAX_FAILURES,
        window: float = ADDRESS_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_failures
        self._window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or ``None`` if it may now."""
        times = self._recent(address)
        if times is None or len(times) < self._max:
            return None
        return max(1, math.ceil(times[0] + self._window - self._clock()))

    def failed(self, address: str) -> None:
        """Count a failed log-in from ``address``."""
        times = self._recent(address)
        if times is None:
            if len(self._failures) >= _MAX_ADDRESSES:
                # Forget the address whose last failure is the oldest.
                stalest = min(self._failures, key=lambda a: self._failures[a][-1])
                del self._failures[stalest]
            times = self._failures[address] = deque(maxlen=self._max)
        times.append(self._clock())

    def _recent(self, address: str) -> deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        horizon = self._clock() - self._window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Me(BaseModel):
    """The logged-in user: ``role`` is the effective one, ``agents`` the keys of
    the configured agents they are."""

    id: str
    username: str
    display_name: str
    role: str
    agents: list[str]


class SessionInfo(BaseModel):
    user: Me
    csrf_token: str


class Ticket(BaseModel):
    ticket: str
    expires_in: int


def _me(principal: Principal) -> Me:
    return Me(
        id=str(principal.user_id),
        username=principal.username,
        display_name=principal.display_name,
        role=principal.role.value,
        agents=sorted(principal.agents),
    )


def _limiter(request: Request) -> AddressLimiter:
    # One per app (not per module): two apps in one process count apart.
    state = request.app.state
    limiter: AddressLimiter | None = getattr(state, "login_limiter", None)
    if limiter is None:
        limiter = state.login_limiter = AddressLimiter()
    return limiter


def _address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _bearer(request: Request) -> str | None:
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        return credential.strip()
    return None


def _rate_limited(retry_after: int) -> JSONResponse:
    return JSONResponse(
        error_body(
            "rate_limited",
            "too many failed log-ins; try again later",
            {"retry_after": retry_after},
        ),
        status_code=429,
        headers={"Retry-After": str(retry_after), "Cache-Control": "no-store"},
    )


def _no_store(response: Response) -> None:
    # These answers carry secrets (CSRF token, ticket): no cache may keep them.
    response.headers["Cache-Control"] = "no-store"


@router.post(
    "/login",
    response_model=SessionInfo,
    responses={401: {"description": WRONG_CREDENTIALS}, 429: {"description": "locked out"}},
)
async def login(
    body: LoginRequest, request: Request, response: Response, svc: SvcDep
) -> SessionInfo | JSONResponse:
    """Check the user name and password; on success set the session cookie and
    answer the user and the session's CSRF token."""
    address = _address(request)
    limiter = _limiter(request)
    wait = limiter.retry_after(address)
    if wait is not None:
        log.warning("http.login_refused", reason="address", address=address)
        return _rate_limited(wait)
    try:
        result = await svc.store.sessions.login(
            body.username,
            body.password,
            address=address,
            user_agent=request.headers.get("user-agent"),
        )
    except StoreUnavailable as exc:
        raise Unavailable("the database does not answer; try again shortly") from exc
    if result.outcome is LoginOutcome.LOCKED:
        limiter.failed(address)
        log.warning("http.login_refused", reason="locked", address=address)
        return _rate_limited(result.retry_after or 1)
    if not result.ok or result.user is None or result.session is None or not result.token:
        limiter.failed(address)
        log.info("http.login_refused", reason="credentials", address=address)
        raise Unauthenticated(WRONG_CREDENTIALS)
    sessions.set_cookie(response, result.token, secure=sessions.is_https(request))
    _no_store(response)
    principal = principal_from_user(result.user, svc.config().agents)
    return SessionInfo(user=_me(principal), csrf_token=result.session.csrf_token)


@router.post("/logout", status_code=204, response_class=Response)
async def logout(request: Request, svc: SvcDep) -> Response:
    """End the cookie's session (its websockets are closed 4401 by the gateway's
    next session check) and clear the cookie. Without an open session there is
    nothing to end: the cookie is cleared all the same."""
    found = await sessions.from_cookie(request, svc)
    if found is not None:
        sessions.check_csrf(request, found)
        try:
            await svc.store.sessions.logout(found.token)
        except StoreUnavailable as exc:
            raise Unavailable("the database does not answer; try again shortly") from exc
    response = Response(status_code=204)
    sessions.clear_cookie(response, secure=sessions.is_https(request))
    return response


@router.get("/me", response_model=SessionInfo, responses={401: {"description": "log in first"}})
async def me(request: Request, response: Response, svc: SvcDep) -> SessionInfo:
    """The logged-in user and the session's CSRF token. With a bearer API token
    instead of a cookie, the user, and an empty ``csrf_token`` (none is needed)."""
    _no_store(response)
    bearer = _bearer(request)
    if bearer is not None:
        user = await svc.store.users.authenticate(bearer) if bearer.startswith("sbt_") else None
        if user is None:
            raise Unauthenticated("invalid or revoked API token")
        return SessionInfo(user=_me(principal_from_user(user, svc.config().agents)), csrf_token="")
    found = await sessions.from_cookie(request, svc)
    if found is None:
        raise Unauthenticated("log in first")
    return SessionInfo(user=_me(found.principal), csrf_token=found.csrf_token)


@router.post("/ticket", response_model=Ticket, responses={401: {"description": "log in first"}})
async def ticket(request: Request, response: Response, svc: SvcDep) -> Ticket:
    """A single-use websocket ticket (``sbk_...``), to send as the token of the
    socket's ``auth`` message within ``expires_in`` seconds. The socket it opens
    lasts as long as the session (or the API token) it was issued to."""
    _no_store(response)
    bearer = _bearer(request)
    try:
        if bearer is not None:
            issued = await svc.store.sessions.issue_token_ticket(bearer)
            if issued is None:
                raise Unauthenticated("invalid or revoked API token")
        else:
            found = await sessions.from_cookie(request, svc)
            if found is None:
                raise Unauthenticated("log in first")
            sessions.check_csrf(request, found)
            issued = await svc.store.sessions.issue_ticket(found.session)
    except StoreUnavailable as exc:
        raise Unavailable("the database does not answer; try again shortly") from exc
    return Ticket(ticket=issued, expires_in=int(TICKET_LIFETIME.total_seconds()))
