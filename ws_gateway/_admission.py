"""Admission: who may start authenticating, and the first message's check.

Before its auth message is read, a connection is refused (1013) when too many
connections are authenticating, in all or from its address, and (4429) when its
address failed to authenticate too often lately. The auth message must come
within ``auth_timeout`` and carry a token the authenticator knows (else 4401).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from . import protocol as proto
from ._delivery import close_bounded
from ._settings import GatewaySettings, GatewayStats
from .auth import Authenticator, Principal
from .exceptions import BadRequest
from .protocol import CloseCode

__all__ = ["Admission", "address_of"]

log = structlog.get_logger(__name__)


class Admission:
    """The gateway's gate: limits on connections that are not yet sessions, and
    their authentication. Counts its refusals in ``stats``."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        stats: GatewayStats,
        authenticate: Authenticator,
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._authenticate = authenticate
        self._unauthenticated: Counter[str] = Counter()
        self._failures = proto.FailureThrottle(
            settings.auth_failures_per_address, settings.auth_failure_window
        )

    @property
    def authenticating(self) -> int:
        """The connections waiting for their auth message now."""
        return self._unauthenticated.total()

    def refusal(self, address: str) -> tuple[CloseCode, str] | None:
        """Why a new connection from ``address`` is refused before its auth message,
        or ``None`` to let it authenticate."""
        s = self._settings
        if self._failures.throttled(address, asyncio.get_running_loop().time()):
            self._stats.closed_auth_throttled += 1
            return CloseCode.AUTH_THROTTLED, "too many failed authentications; retry later"
        if (
            self._unauthenticated.total() >= s.max_unauthenticated
            or self._unauthenticated[address] >= s.max_unauthenticated_per_address
        ):
            self._stats.closed_over_capacity += 1
            return CloseCode.TRY_AGAIN_LATER, "too many connections authenticating; retry later"
        return None

    @contextmanager
    def counted(self, address: str) -> Iterator[None]:
        """Count one connection from ``address`` as authenticating while inside."""
        self._unauthenticated[address] += 1
        try:
            yield
        finally:
            self._unauthenticated[address] -= 1
            if self._unauthenticated[address] <= 0:
                del self._unauthenticated[address]

    async def authenticate(
        self, ws: ServerConnection, address: str
    ) -> tuple[Principal, proto.Auth] | None:
        """Read and check the auth message: the principal and the message, or
        ``None`` once the connection is closed (refused, or gone)."""
        s = self._settings
        try:
            async with asyncio.timeout(s.auth_timeout):
                raw = await ws.recv()
        except TimeoutError:
            await self._refuse(ws, "authentication timeout")
            return None
        except ConnectionClosed:
            return None
        try:
            auth = proto.parse_auth(raw, max_bytes=s.max_message_bytes)
        except BadRequest:
            self._failures.failed(address, asyncio.get_running_loop().time())
            await self._refuse(ws, "authentication required")
            return None
        try:
            async with asyncio.timeout(s.auth_timeout):
                principal = await self._authenticate(auth.token)
        except Exception:
            log.exception("ws.auth_unavailable")
            await close_bounded(
                ws,
                CloseCode.INTERNAL_ERROR,
                "cannot check the token now",
                timeout=s.close_timeout,
            )
            return None
        if principal is None:
            self._failures.failed(address, asyncio.get_running_loop().time())
            await self._refuse(ws, "invalid token")
            return None
        return principal, auth

    async def _refuse(self, ws: ServerConnection, reason: str) -> None:
        # The reason is ours, never the token or anything the client sent.
        log.warning("ws.auth_refused", reason=reason, remote=str(ws.remote_address))
        self._stats.closed_unauthorized += 1
        await close_bounded(
            ws, CloseCode.UNAUTHORIZED, reason, timeout=self._settings.close_timeout
        )


def address_of(ws: ServerConnection) -> str:
    """The client's IP address (the port left out), for per-address limits."""
    remote = ws.remote_address
    if isinstance(remote, tuple) and remote:
        return str(remote[0])
    return str(remote)
