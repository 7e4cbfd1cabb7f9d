"""The page's websocket: a ticket from the HTTP API opens a session of the real
gateway once; the session ends (4401) when the browser session does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update
from websockets.asyncio.client import connect

from bus import Bus
from crm_store import Store, User
from crm_store import _models as m
from crm_store._types import utcnow
from tests.ws_gateway.conftest import Client, Telephony
from ws_gateway import Gateway, GatewaySettings, store_authenticator, store_session_check

from ._auth_fixtures import CONFIG, alice, app, http, log_in, store

__all__ = ["alice", "app", "http", "store"]

ORIGIN = "http://sb.test"


@pytest.fixture
async def gateway(store: Store) -> AsyncIterator[Gateway]:
    bus = Bus("test-site")
    gw = Gateway(
        bus,
        authenticate=store_authenticator(store.users, lambda: CONFIG.agents),
        handler=Telephony(bus),
        settings=GatewaySettings(
            host="127.0.0.1",
            port=0,
            allowed_origins=(ORIGIN,),
            auth_timeout=2.0,
            close_timeout=2.0,
            session_check_interval=0.1,
        ),
        session_check=store_session_check(store.users, lambda: CONFIG.agents),
    )
    await gw.start()
    try:
        yield gw
    finally:
        await gw.aclose()


async def _ticket(http: httpx.AsyncClient, csrf: str) -> str:
    response = await http.post("/api/auth/ticket", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200, response.text
    ticket: str = response.json()["ticket"]
    return ticket


async def _open(gateway: Gateway, ticket: str) -> Client:
    ws = await connect(f"ws://127.0.0.1:{gateway.port}/", origin=ORIGIN, close_timeout=1.0)  # type: ignore[arg-type]
    client = Client(ws)
    await ws.send(json.dumps({"type": "auth", "token": ticket}))
    return client


async def test_ticket_opens_one_session_which_ends_at_logout(
    http: httpx.AsyncClient, store: Store, alice: User, gateway: Gateway
) -> None:
    csrf = await log_in(http)
    ticket = await _ticket(http, csrf)

    page = await _open(gateway, ticket)
    ok = await page.expect("auth.ok")
    assert ok["user"] == "alice"
    assert ok["agents"] == ["alice"]

    # The same ticket a second time: refused.
    replay = await _open(gateway, ticket)
    assert await replay.close_frame() == (4401, "invalid token")

    # A ticket past its 30 seconds: refused.
    late = await _ticket(http, csrf)
    async with store.engine.begin() as conn:
        await conn.execute(
            update(m.ws_tickets)
            .where(m.ws_tickets.c.used_at.is_(None))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    expired = await _open(gateway, late)
    assert await expired.close_frame() == (4401, "invalid token")

    # The first session is still open, until the browser session ends.
    assert (await page.command("agent.state.set", {"agent": "alice", "state": "available"}))[
        "type"
    ] == "result"
    out = await http.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
    assert out.status_code == 204
    assert await page.close_frame() == (4401, "access revoked")
    await page.ws.close()
    await replay.ws.close()
    await expired.ws.close()
