"""Session checks: open sessions follow revocations and rights changes in the store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import structlog

from ._delivery import Client
from ._settings import GatewaySettings, GatewayStats
from .auth import SessionCheck, same_rights
from .protocol import CloseCode, SessionState

__all__ = ["check_sessions"]

log = structlog.get_logger(__name__)


async def check_sessions(
    check: SessionCheck,
    *,
    clients: Callable[[], Iterable[Client]],
    settings: GatewaySettings,
    stats: GatewayStats,
) -> None:
    """Every ``session_check_interval``, close the sessions whose token no
    longer authenticates or whose rights changed (4401).

    A failed check (store down) closes nothing: the sessions are judged
    again at the next one. Runs until cancelled.
    """
    s = settings
    while True:
        # A period, not a wait for a state: the store has no change feed
        # that the CLI and other daemons would all write to.
        await asyncio.sleep(s.session_check_interval)
        open_clients = [c for c in clients() if c.state is SessionState.OPEN]
        try:
            async with asyncio.timeout(max(s.auth_timeout, s.session_check_interval)):
                current = await check({c.token for c in open_clients})
        except Exception:
            log.warning("ws.session_check_failed", exc_info=True)
            continue
        for client in open_clients:
            now = current.get(client.token)
            if now is None:
                reason = "access revoked"
            elif not same_rights(client.principal, now):
                reason = "rights changed"
            else:
                continue
            if client.state is SessionState.OPEN:
                stats.closed_revoked += 1
                client.request_close(CloseCode.UNAUTHORIZED, reason)
