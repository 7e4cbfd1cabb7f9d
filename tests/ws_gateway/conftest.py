"""Real gateways on 127.0.0.1 free ports, real clients, a real SQLite store.

The command handler here is a small in-memory telephony stand-in: it records
what it was asked and publishes the bus events a real one would. The gateway
under test is never replaced.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bus import AgentStateChanged, Bus, CallCreated, CallEnded
from config import AgentConfig
from crm_store import Role, Store, upgrade
from ws_gateway import (
    Gateway,
    GatewaySettings,
    NotFound,
    Principal,
    store_authenticator,
    store_session_check,
)

DRIVER_TEXT = (
    "(sqlite3.OperationalError) database is locked "
    "[SQL: UPDATE calls SET note=? WHERE id=?] [parameters: ('card 4970 1012', 7)]"
)
SCHEMAS = Path(__file__).parents[2] / "ws_gateway" / "schemas"
ORIGIN = "http://crm.test:8080"

AGENTS = (
    AgentConfig(name="Alice", extension="101", line="2001", user="alice"),
    AgentConfig(name="Bob", extension="102", line="2002", user="bob"),
    AgentConfig(name="Sue", extension="103", line="2003", user="sue"),
)


def _load_registry() -> tuple[Registry[Any], dict[str, str]]:
    contents = [json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.json"))]
    registry: Registry[Any] = Registry().with_resources(
        (c["$id"], Resource.from_contents(c)) for c in contents
    )
    return registry, {c["$id"].rsplit("/", 1)[1]: c["$id"] for c in contents}


REGISTRY, SCHEMA_IDS = _load_registry()


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        REGISTRY.contents(SCHEMA_IDS[name]),
        registry=REGISTRY,
        format_checker=jsonschema.FormatChecker(),
    )


def validate_server_message(message: dict[str, Any]) -> None:
    """Fail unless ``message`` is valid against its server.<type>.json schema."""
    name = f"server.{message['type']}.json"
    assert name in SCHEMA_IDS, f"no schema for server message type {message['type']!r}"
    _validator(name).validate(message)


class Client:
    """A websocket client that validates every message it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self._ids = 0

    async def recv(self, timeout: float = 2.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            raw = await self.ws.recv()
        message: dict[str, Any] = json.loads(raw)
        validate_server_message(message)
        self.received.append(message)
        return message

    async def expect(self, type_: str, timeout: float = 2.0) -> dict[str, Any]:
        message = await self.recv(timeout)
        assert message["type"] == type_, message
        return message

    async def auth(self, token: str, **extra: Any) -> dict[str, Any]:
        await self.ws.send(json.dumps({"type": "auth", "token": token, **extra}))
        return await self.expect("auth.ok")

    async def command(self, name: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send a command and return its reply (events received meanwhile are kept)."""
        self._ids += 1
        cid = f"c{self._ids}"
        await self.ws.send(
            json.dumps({"type": "command", "id": cid, "name": name, "args": dict(args or {})})
        )
        while True:
            message = await self.recv()
            if message["type"] in ("result", "error") and message["id"] == cid:
                return message

    async def events_until(self, seq: int, timeout: float = 2.0) -> list[dict[str, Any]]:
        """The events received until the one numbered ``seq`` (inclusive)."""
        out: list[dict[str, Any]] = []
        while True:
            message = await self.recv(timeout)
            if message["type"] == "event":
                out.append(message)
                if message["seq"] >= seq:
                    return out

    async def closed(self, timeout: float = 3.0) -> ConnectionClosed:
        """Read until the server closes; the exception carries the close frame."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    raw = await self.ws.recv()
                    message = json.loads(raw)
                    validate_server_message(message)
                    self.received.append(message)
        except ConnectionClosed as exc:
            return exc

    async def close_frame(self, timeout: float = 3.0) -> tuple[int, str]:
        """The code and reason the server closed with, within ``timeout``."""
        closed = await self.closed(timeout=timeout)
        assert closed.rcvd is not None, "the server did not close the connection in time"
        return closed.rcvd.code, closed.rcvd.reason


@dataclass
class Telephony:
    """In-memory command handler: records commands, publishes what they cause."""

    bus: Bus
    handled: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    async def handle(
        self, principal: Principal, name: str, args: dict[str, Any]
    ) -> Mapping[str, Any]:
        self.handled.append((principal.username, name, args))
        if name == "call.originate":
            call_id = uuid.uuid4()
            self.bus.publish(
                CallCreated(
                    call_id=call_id,
                    direction="outbound",
                    from_number="2001",
                    to_number=args["to"],
                    line="2001",
                    agent=args["agent"],
                    worker_id="w1",
                )
            )
            return {"call_id": str(call_id)}
        if name == "call.hangup":
            self.bus.publish(
                CallEnded(
                    call_id=uuid.UUID(args["call_id"]),
                    reason="completed",
                    sip_code=200,
                    agent=None,
                    talk_seconds=1.0,
                )
            )
            return {}
        if name == "agent.state.set":
            self.bus.publish(
                AgentStateChanged(
                    agent=args["agent"],
                    user=principal.username,
                    state=args["state"],
                    reason=args.get("reason"),
                )
            )
            return {"state": args["state"]}
        if name == "admin.users.revoke":
            raise NotFound("no such token", details={"token_id": args["token_id"]})
        if name == "dialer.skip":
            # What a store fault looks like from a handler: a driver's text
            # quoting the statement and its values.
            raise RuntimeError(DRIVER_TEXT)
        return {}


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
async def tokens(store: Store) -> dict[str, str]:
    """A token for each of alice and bob (agents), sue (supervisor), ada (admin)."""
    out = {}
    for username, role in (
        ("alice", Role.AGENT),
        ("bob", Role.AGENT),
        ("sue", Role.SUPERVISOR),
        ("ada", Role.ADMIN),
    ):
        user = await store.users.add(username, username.title(), role)
        _, out[username] = await store.users.issue_token(user.id, "test")
    return out


@pytest.fixture
def bus() -> Bus:
    return Bus("test-site")


@pytest.fixture
def telephony(bus: Bus) -> Telephony:
    return Telephony(bus)


GatewayFactory = Callable[..., Any]


@pytest.fixture
async def make_gateway(
    store: Store, bus: Bus, telephony: Telephony
) -> AsyncIterator[Callable[..., Any]]:
    """``await make_gateway(**settings)``: a started gateway, closed after the test."""
    started: list[Gateway] = []

    async def make(*, agents: Any = AGENTS, session_check: Any = None, **overrides: Any) -> Gateway:
        """``agents`` may be a list, changed in place to mimic a config reload;
        ``session_check`` replaces the store's."""
        settings = GatewaySettings(
            host="127.0.0.1",
            port=0,
            allowed_origins=(ORIGIN,),
            auth_timeout=overrides.pop("auth_timeout", 2.0),
            close_timeout=overrides.pop("close_timeout", 2.0),
            **overrides,
        )
        gateway = Gateway(
            bus,
            authenticate=store_authenticator(store.users, lambda: agents),
            handler=telephony,
            settings=settings,
            session_check=session_check or store_session_check(store.users, lambda: agents),
        )
        await gateway.start()
        started.append(gateway)
        return gateway

    try:
        yield make
    finally:
        for gateway in reversed(started):
            await gateway.aclose()


@pytest.fixture
async def gateway(make_gateway: Callable[..., Any]) -> Gateway:
    gw: Gateway = await make_gateway()
    return gw


@pytest.fixture
async def open_client(gateway: Gateway) -> AsyncIterator[Callable[..., Any]]:
    """``await open_client(token=None, **connect_kwargs)``: a connected client,
    authenticated (snapshot or replay not yet read) when a token is given."""
    opened: list[ClientConnection] = []

    async def open_(token: str | None = None, *, gw: Gateway | None = None, **kw: Any) -> Client:
        target = gw or gateway
        scheme = "wss" if target.settings.ssl is not None else "ws"
        kw.setdefault("origin", ORIGIN)
        kw.setdefault("close_timeout", 1.0)
        ws = await connect(f"{scheme}://127.0.0.1:{target.port}/", **kw)
        opened.append(ws)
        client = Client(ws)
        if token is not None:
            await client.auth(token)
        return client

    try:
        yield open_
    finally:
        for ws in opened:
            await ws.close()


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Yield to the loop until ``predicate()`` holds; fail after ``timeout``."""
    # Polling, bounded: the gateway's counters and projection have no event to
    # wait on, and adding one for tests only would be a hook into the code tested.
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.001)
