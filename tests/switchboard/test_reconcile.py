"""Reconciliation: a call whose end the live views missed is ended as ``lost``.

Real peers: the lab (Kamailio, SIPp customers, the agent's phone), the SIP pool and
click-to-call service, a SQLite store, and a real websocket gateway with a real
client watching the supervisor feed, the way a wall display does. The reconciler
and the agents' presence are the daemon's own classes, on the same bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

import bus
from bus.agent_states import AgentStates
from bus.presence import PresenceBook
from crm_store import CallDirection, CallEndReason, Role
from lab.customers import Behaviour, customer_number

# The lab's fixtures and the SIP tests' pool factory, by name.
from lab.pytest_plugin import lab, lab_extensions
from lab.runner import Lab
from switchboard.reconcile import CallReconciler
from tests.sip.conftest import PoolEnv, lab_config, pool_env
from ws_gateway import Gateway, GatewaySettings, Principal, store_authenticator
from ws_gateway import exceptions as gw

__all__ = ["lab", "lab_extensions", "pool_env"]

INTERVAL = 0.3
# A call no service holds is ended at the second comparison that misses it.
BOUND = 2 * INTERVAL + 3.0


@pytest.fixture
def lab_phones() -> list[str]:
    return ["1001"]


class _NoCommands:
    async def handle(self, principal: Principal, name: str, args: dict[str, Any]) -> Any:
        raise gw.Unavailable("not in this test")


class _Feed:
    """A websocket client on the live feed."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.snapshot: dict[str, Any] = {}

    async def login(self, token: str) -> None:
        await self.ws.send(json.dumps({"type": "auth", "token": token}))
        assert (await self.recv())["type"] == "auth.ok"
        self.snapshot = await self.recv()
        assert self.snapshot["type"] == "snapshot"

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(15):
            message: dict[str, Any] = json.loads(await self.ws.recv(decode=True))
        return message

    async def event(self, type_: str, call_id: uuid.UUID) -> dict[str, Any]:
        while True:
            message = await self.recv()
            if message.get("type") != "event" or message["event"]["type"] != type_:
                continue
            data: dict[str, Any] = message["event"]["data"]
            if data.get("call_id") == str(call_id):
                return data


async def _state(book: PresenceBook, agent: str, state: str, *, within: float) -> None:
    """Wait until the presence book says ``agent`` is ``state``."""
    changed = asyncio.Event()
    remove = book.add_listener(changed.set)
    try:
        async with asyncio.timeout(within):
            while True:
                changed.clear()
                if book.state(agent) == state:
                    return
                await changed.wait()
    finally:
        remove()


@pytest.fixture
async def daemon_parts(
    lab: Lab, tmp_path: Path, pool_env: Callable[..., Awaitable[PoolEnv]]
) -> AsyncIterator[tuple[PoolEnv, Gateway, AgentStates, CallReconciler, dict[str, str]]]:
    """The pool and click-to-call on the lab, a gateway, the presence and the
    reconciler, wired as the daemon wires them; alice available; the tokens of
    alice and of a supervisor."""
    config = lab_config(lab, tmp_path, agents={"alice": ("1001", "2001")})
    env = await pool_env(config, agent_timeout=5.0)
    await env.log.wait_for(
        bus.RegistrationChanged, lambda e: e.line == "2001" and e.state == "registered"
    )
    async with contextlib.AsyncExitStack() as stack:
        gateway = Gateway(
            env.bus,
            authenticate=store_authenticator(env.store.users, lambda: config.agents),
            handler=_NoCommands(),
            settings=GatewaySettings.from_config(config.websocket, port=0),
        )
        await stack.enter_async_context(gateway)
        agents = AgentStates(config, env.bus, store=env.store.presence)
        feed = env.bus.subscribe(
            "presence", types={bus.CallCreated.TYPE, bus.CallEnded.TYPE}, maxsize=10_000
        )
        reconciler = CallReconciler(
            bus=env.bus,
            store=env.store,
            site=config.site.id,
            live=[env.calls.live_calls],
            shown=[
                CallReconciler.for_projection(gateway.projection, config.site.id),
                agents.outbound_calls,
            ],
            interval=INTERVAL,
        )
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(agents.follow_calls(feed)),
                tg.create_task(reconciler.run()),
            ]
            await agents.set("alice", "available")
            alice = await env.store.users.by_username("alice")
            assert alice is not None
            _, token = await env.store.users.issue_token(alice.id, label="widget")
            sam = await env.store.users.add("sam", "Sam", role=Role.SUPERVISOR)
            _, wall_token = await env.store.users.issue_token(sam.id, label="wall")
            yield env, gateway, agents, reconciler, {"alice": token, "sam": wall_token}
            for task in tasks:
                task.cancel()


async def test_a_call_no_worker_holds_is_ended_lost_and_its_agent_is_available_again(
    lab: Lab,
    daemon_parts: tuple[PoolEnv, Gateway, AgentStates, CallReconciler, dict[str, str]],
) -> None:
    env, gateway, agents, reconciler, tokens = daemon_parts
    token = tokens["alice"]
    presence = agents.presence
    async with connect(f"ws://127.0.0.1:{gateway.port}", open_timeout=10) as ws:
        wall = _Feed(ws)
        await wall.login(token)

        # A real call lasting several comparisons is left alone.
        number = customer_number(Behaviour.ANSWER, ring=0, talk=3, suffix=81)
        real = await env.calls.click_to_call(agent="alice", number=number)
        await wall.event("call.bridged", real)
        assert presence.state("alice") == "busy"
        ended = await wall.event("call.ended", real)
        assert ended["reason"] == "completed"
        await _state(presence, "alice", "available", within=2)

        # A call announced that no worker holds: its end will never come.
        phantom = uuid.uuid4()
        env.bus.publish(
            bus.CallCreated(
                call_id=phantom,
                direction=CallDirection.OUTBOUND.value,
                from_number="2001",
                to_number=number,
                line="2001",
                agent="alice",
                worker_id="t/agent-2001",
            )
        )
        await wall.event("call.created", phantom)
        await _state(presence, "alice", "busy", within=2)
        # Another daemon's call in the feed is that daemon's to reconcile.
        elsewhere = uuid.uuid4()
        env.bus.relay(
            bus.Envelope(
                origin="other-site",
                seq=1,
                at=datetime.now(UTC),
                event=bus.CallCreated(
                    call_id=elsewhere,
                    direction="inbound",
                    from_number=number,
                    to_number="2100",
                    line="2100",
                    agent=None,
                    worker_id="other-site/reception",
                ),
            )
        )

        async with asyncio.timeout(BOUND):
            lost = await wall.event("call.ended", phantom)
        assert (lost["reason"], lost["agent"], lost["talk_seconds"]) == ("lost", "alice", None)
        await _state(presence, "alice", "available", within=1)
        assert set(gateway.projection.calls) == {elsewhere}
        assert reconciler.lost == 1

    # A widget opened now is shown the truth: alice has no call and is available.
    async with connect(f"ws://127.0.0.1:{gateway.port}", open_timeout=10) as ws:
        late = _Feed(ws)
        await late.login(token)
        assert late.snapshot["calls"] == []
        assert [a["state"] for a in late.snapshot["agents"] if a["agent"] == "alice"] == [
            "available"
        ]
    assert [i.number for i in lab.customers.invites()] == [number]


async def test_an_open_record_no_service_holds_is_closed_interrupted_and_published_lost(
    daemon_parts: tuple[PoolEnv, Gateway, AgentStates, CallReconciler, dict[str, str]],
) -> None:
    env, gateway, _agents, reconciler, tokens = daemon_parts
    other_site = await env.store.calls.create(
        CallDirection.OUTBOUND, "2001", "+4930199100001", origin="other-site", line="2001"
    )
    async with connect(f"ws://127.0.0.1:{gateway.port}", open_timeout=10) as ws:
        wall = _Feed(ws)  # a supervisor's: sees calls of no agent too
        await wall.login(tokens["sam"])
        # Written, then its process lost it (no event ever said so).
        record = await env.store.calls.create(
            CallDirection.OUTBOUND,
            "2001",
            "+4930199100000",
            origin=env.config.site.id,
            worker_id="t/agent-2001",
            line="2001",
        )
        async with asyncio.timeout(BOUND):
            lost = await wall.event("call.ended", record.id)
    assert lost["reason"] == "lost"
    closed = await env.store.calls.get(record.id)
    assert closed.end_reason is CallEndReason.INTERRUPTED
    # Another daemon's open record is left to it.
    assert (await env.store.calls.get(other_site.id)).ended_at is None
    assert reconciler.lost == 1


async def test_a_failing_comparison_does_not_stop_the_next_ones() -> None:
    events = bus.Bus("t")
    ended = events.subscribe("test", types={bus.CallEnded.TYPE})
    call_id = uuid.uuid4()
    asked = 0
    failed = asyncio.Event()

    def view() -> dict[uuid.UUID, str | None]:
        nonlocal asked
        asked += 1
        if asked == 1:
            failed.set()
            raise RuntimeError("a view that fails once")
        return {call_id: "alice"}

    reconciler = CallReconciler(
        bus=events, store=None, site="t", live=[set], shown=[view], interval=0.05
    )
    task = asyncio.create_task(reconciler.run())
    try:
        async with asyncio.timeout(5):
            await failed.wait()
            envelope = await ended.get()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert asked >= 3  # the failure, then two comparisons missing the call
    assert isinstance(envelope.event, bus.CallEnded)
    assert (envelope.event.call_id, envelope.event.reason) == (call_id, "lost")
