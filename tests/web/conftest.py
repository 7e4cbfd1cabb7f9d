"""The real app over a real store (SQLite, and PostgreSQL where marked), reached
with httpx through ASGI; users authenticate with bearer ``sbt_`` tokens.

The telephony is the one peer not started here: commands the API hands to the
daemon (``agent.state.set``...) are carried out by :class:`StoreHandler`, which
does what the daemon's router does for them without a SIP pool.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus import Bus
from bus.agent_states import AgentStates
from config import Config, load_config
from crm_store import LeadSource, Role, Store, User
from switchboard.commands import check_pause_reason
from switchboard.daemon import command_runner
from tests._toml import toml_keys
from tests.crm_store.conftest import (  # noqa: F401 - fixtures
    migrated_pg_url,
    postgres_server,
    store,
    store_url,
)
from web._services import Services
from web.app import create_app
from ws_gateway import Principal, Projection
from ws_gateway import exceptions as gw

AGENTS = (
    {"name": "Alice Martin", "extension": "1001", "line": "2001", "user": "alice"},
    {"name": "Bob Durand", "extension": "1002", "line": "2002", "user": "bob"},
)


def write_config(path: Path, *, recordings: Path, extra: str = "") -> Config:
    lines = "\n\n".join(
        f'[[lines]]\nextension = "{a["line"]}"\nsecret = "s3cret-{a["line"]}"\nrole = "agent"'
        for a in AGENTS
    )
    agents = "\n\n".join(f"[[agents]]\n{toml_keys(a)}" for a in AGENTS)
    path.write_text(
        f"""
[site]
id = "web-test"
default_region = "FR"

[pbx]
host = "127.0.0.1"
domain = "switchboard.lab"

{lines}

{agents}

[recording]
directory = "{recordings}"

[websocket]
port = 8765
allowed_origins = ["https://crm.example.com"]
{extra}
"""
    )
    return load_config(path)


class StoreHandler:
    """The daemon's handling of the commands the API uses, minus the telephony."""

    def __init__(self, config: Config, crm: Store, agents: AgentStates) -> None:
        self.config = config
        self.store = crm
        self.agents = agents

    async def handle(
        self, principal: Principal, name: str, args: dict[str, Any]
    ) -> Mapping[str, Any]:
        if name == "agent.state.set":
            check_pause_reason(self.config, args["state"], args.get("reason"))
            await self.agents.set(args["agent"], args["state"], args.get("reason"))
            return {}
        if name == "call.create_lead":
            call = await self.store.calls.get(uuid.UUID(args["call_id"]))
            lead = await self.store.leads.create(
                first_name=args["name"],
                phones=[call.from_number],
                source=LeadSource.MANUAL,
                owner_user_id=principal.user_id,
            )
            return {"lead_id": str(lead.id)}
        raise gw.Unavailable(f"{name} needs the telephony")


@dataclass
class Env:
    config: Config
    store: Store
    services: Services
    projection: Projection
    client: httpx.AsyncClient
    users: dict[str, User]
    tokens: dict[str, str]
    recordings: Path

    def auth(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[username]}"}


@pytest.fixture
async def env(store: Store, tmp_path: Path) -> AsyncIterator[Env]:  # noqa: F811
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    config = write_config(tmp_path / "switchboard.toml", recordings=recordings)
    bus = Bus(config.site.id)
    agents = AgentStates(config, bus, store=store.presence)
    await agents.restore()
    projection = Projection()
    handler = StoreHandler(config, store, agents)
    services = Services(
        store=store,
        config=lambda: config,
        agents=agents,
        commands=command_runner(handler, projection),
        calls=projection,
        ready=lambda: True,
        recordings=recordings,
    )
    users: dict[str, User] = {}
    tokens: dict[str, str] = {}
    for name, role in (("alice", Role.AGENT), ("bob", Role.AGENT), ("sue", Role.SUPERVISOR)):
        user = await store.users.add(username=name, display_name=name.title(), role=role)
        users[name] = user
        _, tokens[name] = await store.users.issue_token(user.id, label="test")
    app = create_app(services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Env(config, store, services, projection, client, users, tokens, recordings)
    bus.close()
