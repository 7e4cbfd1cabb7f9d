"""Fixtures of the auth tests: the real app (``web.app.create_app``) over a real
SQLite store, spoken to over HTTP through httpx's ASGI transport. Telephony is
absent: commands answer ``unavailable`` and no call is known. Test modules import
the fixtures they use."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from config import Config
from crm_store import Role, Store, User, upgrade
from web._services import Services
from web.app import create_app
from ws_gateway import Principal
from ws_gateway.exceptions import Unavailable

PASSWORD = "correct horse battery"

CONFIG = Config.model_validate(
    {
        "pbx": {"host": "127.0.0.1", "domain": "switchboard.lab"},
        "lines": [
            {"extension": "2001", "secret": "s1", "role": "agent"},
            {"extension": "2002", "secret": "s2", "role": "agent"},
        ],
        "agents": [
            {"name": "Alice", "extension": "101", "line": "2001", "user": "alice"},
            {"name": "Bob", "extension": "102", "line": "2002", "user": "bob"},
        ],
    }
)


async def no_commands(principal: Principal, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    raise Unavailable("no telephony in this test")


class NoCalls:
    def knows_call(self, call_id: uuid.UUID) -> bool:
        return False

    def call_agent(self, call_id: uuid.UUID) -> str | None:
        return None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'crm.sqlite3'}"
    await upgrade(url)
    opened = await Store.open(url)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def alice(store: Store) -> User:
    """An agent with a password, bound to the configured agent Alice."""
    user = await store.users.add("alice", "Alice Martin", Role.AGENT)
    await store.users.set_password(user.id, PASSWORD)
    return user


@pytest.fixture
def app(store: Store) -> FastAPI:
    return create_app(
        Services(
            store=store,
            config=lambda: CONFIG,
            agents=None,
            commands=no_commands,
            calls=NoCalls(),
            ready=lambda: True,
        )
    )


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app over plain http, keeping cookies like a browser."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sb.test"
    ) as client:
        yield client


async def log_in(
    client: httpx.AsyncClient, username: str = "alice", password: str = PASSWORD
) -> str:
    """Log ``client`` in; returns the session's CSRF token."""
    response = await client.post(
        "/api/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    csrf: str = response.json()["csrf_token"]
    return csrf
