"""``switchboard gateway`` as a real process, fed from the real broker.

The daemons' side runs in the test: a real :class:`~bus.Bus` and the real
:class:`~bus.MqttBridge` per site, with a small command handler that records
the commands it runs and answers like a real one. The gateway under test is
the real command in a subprocess, observed through its notification socket
and reached by real websocket clients. Tokens live in a real SQLite store
shared by both sides, as a PostgreSQL is in scale-out. Each test has its own
topic prefix on the session's broker (the one ``SWITCHBOARD_TEST_MQTT_URL``
names, or a private one: see tests/_services.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from bus import (
    AgentStateChanged,
    Bus,
    CallAnswered,
    CallBridged,
    CallCreated,
    CallEnded,
    CallRinging,
    CommandError,
    Envelope,
    Event,
    MqttBridge,
    encode,
)
from bus.feed import Arrivals, MqttFeed, Routes
from config import Secret
from crm_store import Role, Store, User, upgrade
from switchboard.gateway import STATUS_RELAYING
from tests._services import mqtt_address
from tests._toml import toml_keys

from .conftest import SWITCHBOARD, DaemonProcess, free_tcp_port, run_cli, write_config

HOST, PORT = mqtt_address()
TIMEOUT = 10.0
ORIGIN = "http://crm.test:8080"
GATEWAY_SECRET = "gateway-secret-5b0e7d2c41a9f8e3-never-print"


pytestmark = pytest.mark.mqtt

AGENTS = (
    {"name": "Alice", "extension": "1001", "line": "2001", "user": "alice"},
    {"name": "Bob", "extension": "1002", "line": "2002", "user": "bob"},
)


def _write_gateway_config(path: Path, db: Path, prefix: str, *, broker: bool = True) -> int:
    """Write the gateway's configuration to ``path`` (its store is ``db``; without
    ``broker``, no ``bus.mqtt_url``) and return its websocket port."""
    ws_port = free_tcp_port()
    bus = {"mqtt_url": f"mqtt://{HOST}:{PORT}"} if broker else {}
    bus |= {"topic_prefix": prefix, "gateway_secret": GATEWAY_SECRET}
    write_config(
        path,
        level="debug",
        site_id="gw-test",
        agents=AGENTS,
        store={"url": f"sqlite+aiosqlite:///{db}", "auto_migrate": False},
        websocket={"host": "127.0.0.1", "port": ws_port, "allowed_origins": [ORIGIN]},
        extra=f"\n[bus]\n{toml_keys(bus)}\n",
    )
    return ws_port


def _wire(envelope: Envelope) -> dict[str, Any]:
    """The envelope as a client receives it (JSON, as the daemon encoded it)."""
    data: dict[str, Any] = json.loads(encode(envelope))
    return data


# --- the daemons' side ----------------------------------------------------------------


@dataclass
class Telephony:
    """A daemon's command handler: records commands, answers, publishes effects."""

    bus: Bus
    handled: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    async def __call__(self, principal: User, name: str, args: Mapping[str, Any]) -> Any:
        self.handled.append((principal.username, name, dict(args)))
        if name == "call.hangup":
            self.bus.publish(
                CallEnded(
                    call_id=uuid.UUID(args["call_id"]),
                    reason="completed",
                    sip_code=200,
                    agent=None,
                    talk_seconds=1.5,
                )
            )
            return {"call_id": args["call_id"], "hung_up": True}
        if name == "call.hold":
            raise CommandError(
                "conflict", "the call has ended", details={"call_id": args["call_id"]}
            )
        if name == "agent.state.set":
            return {"state": args["state"], "agent": args["agent"]}
        raise CommandError("bad_request", f"unexpected command {name}")


@dataclass
class Site:
    """One daemon's side: its bus, its real MQTT bridge and its handler."""

    bus: Bus
    bridge: MqttBridge[User]
    telephony: Telephony

    async def publish(self, *events: Event) -> list[Envelope]:
        """Publish ``events`` and return once the broker has acknowledged them."""
        sent = [self.bus.publish(e) for e in events]
        await self.bridge.drain(timeout=TIMEOUT)
        return sent


@dataclass
class Scaleout:
    prefix: str
    store: Store
    tokens: dict[str, str]
    stack: AsyncExitStack
    tmp_path: Path
    retained: list[str] = field(default_factory=list)
    processes: list[DaemonProcess] = field(default_factory=list)

    async def site(self, name: str) -> Site:
        bus = Bus(name)
        telephony = Telephony(bus)
        bridge: MqttBridge[User] = MqttBridge(
            bus,
            url=f"mqtt://{HOST}:{PORT}",
            site=name,
            topic_prefix=self.prefix,
            authenticate=self.store.users.authenticate,
            handler=telephony,
            gateway_secret=Secret(GATEWAY_SECRET),
            authenticate_user=self.user,
            timeout=5.0,
            reconnect_min=0.05,
            reconnect_max=0.5,
        )
        await self.stack.enter_async_context(bridge)
        await bridge.wait_connected(timeout=TIMEOUT)
        self.retained.append(bridge.topics.status)
        return Site(bus, bridge, telephony)

    async def user(self, user_id: str) -> User | None:
        """The daemons' check of a user a gateway vouches for."""
        user = await self.store.users.get(uuid.UUID(user_id))
        return user if user.active else None

    async def gateway(self, *args: str) -> tuple[DaemonProcess, int]:
        """Start ``switchboard gateway ARGS``; return once it relays from the broker."""
        n = len(self.processes)
        config = self.tmp_path / f"gateway-{n}.toml"
        ws_port = _write_gateway_config(config, self.tmp_path / "crm.sqlite3", self.prefix)
        sock_path = self.tmp_path / f"notify-{n}.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(sock_path))
        log_path = self.tmp_path / f"gateway-{n}.log"
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
        env.pop("WATCHDOG_USEC", None)
        with log_path.open("wb") as log_file:
            proc = await asyncio.to_thread(
                subprocess.Popen,
                [*SWITCHBOARD, "--config", str(config), "gateway", *args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
        process = DaemonProcess(proc=proc, notify=notify, log_path=log_path)
        self.processes.append(process)
        # Blocking reads of the notification socket, off the loop: the bridges
        # in this process must keep running meanwhile.
        await asyncio.to_thread(process.wait_for, "READY=1")
        await asyncio.to_thread(process.wait_for, STATUS_RELAYING)
        return process, ws_port


@pytest.fixture
async def scaleout(tmp_path: Path) -> AsyncIterator[Scaleout]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'crm.sqlite3'}"
    await upgrade(url)
    store = await Store.open(url)
    tokens = {}
    for username, role in (
        ("alice", Role.AGENT),
        ("bob", Role.AGENT),
        ("sue", Role.SUPERVISOR),
    ):
        user = await store.users.add(username, username.title(), role)
        _, tokens[username] = await store.users.issue_token(user.id, "test")
    prefix = f"sbtest-{uuid.uuid4().hex[:12]}"
    async with AsyncExitStack() as stack:
        env = Scaleout(prefix=prefix, store=store, tokens=tokens, stack=stack, tmp_path=tmp_path)
        try:
            yield env
        finally:
            await stack.aclose()
            for process in env.processes:
                if process.proc.poll() is None:
                    process.proc.kill()
                    process.proc.wait(timeout=10)
                process.notify.close()
            # An empty retained message deletes the retained one.
            async with aiomqtt.Client(HOST, PORT, timeout=TIMEOUT) as client:
                for topic in env.retained:
                    await client.publish(topic, b"", qos=1, retain=True)
            await store.aclose()


# --- websocket clients ----------------------------------------------------------------


class Client:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []  # every event's envelope, in order
        self._ids = 0

    @classmethod
    async def open(
        cls, stack: AsyncExitStack, port: int, token: str
    ) -> tuple[Client, dict[str, Any]]:
        """Connect and authenticate; returns the client and its snapshot."""
        ws = await stack.enter_async_context(
            connect(f"ws://127.0.0.1:{port}/", origin=Origin(ORIGIN), close_timeout=1.0)
        )
        client = cls(ws)
        await ws.send(json.dumps({"type": "auth", "token": token}))
        assert (await client._recv())["type"] == "auth.ok"
        snapshot = await client._recv()
        assert snapshot["type"] == "snapshot"
        return client, snapshot

    async def _recv(self) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            raw = await self.ws.recv()
        message: dict[str, Any] = json.loads(raw)
        if message["type"] == "event":
            self.seen.append(message["event"])
        return message

    async def events(self, n: int) -> list[dict[str, Any]]:
        """Until ``n`` events have been received; returns them all."""
        while len(self.seen) < n:
            message = await self._recv()
            assert message["type"] == "event", message
        return self.seen

    async def until(self, type_: str, call_id: uuid.UUID) -> list[dict[str, Any]]:
        """Until an event ``type_`` about ``call_id`` has been received."""

        def found() -> bool:
            return any(
                e["type"] == type_ and e["data"].get("call_id") == str(call_id) for e in self.seen
            )

        while not found():
            await self._recv()
        return self.seen

    async def command(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """Send a command and return its reply (events meanwhile go to ``seen``)."""
        self._ids += 1
        cid = f"c{self._ids}"
        await self.ws.send(json.dumps({"type": "command", "id": cid, "name": name, "args": args}))
        while True:
            message = await self._recv()
            if message["type"] in ("result", "error") and message["id"] == cid:
                return message


def _state(agent: str, user: str, state: str, reason: str | None = None) -> AgentStateChanged:
    return AgentStateChanged(agent=agent, user=user, state=state, reason=reason)


def _call(agent: str) -> tuple[uuid.UUID, CallCreated]:
    call_id = uuid.uuid4()
    created = CallCreated(
        call_id=call_id,
        direction="inbound",
        from_number="+33612345678",
        to_number="2001",
        line="2001",
        agent=agent,
        worker_id="w1",
    )
    return call_id, created


async def _stop(process: DaemonProcess) -> str:
    """SIGTERM; asserts a clean exit and returns the process's log."""
    process.signal(signal.SIGTERM)
    await asyncio.to_thread(process.wait_for, "STOPPING=1")
    assert await asyncio.to_thread(process.wait_exit) == 0
    return process.log()


def _assert_no_token(log: str, tokens: Iterable[str]) -> None:
    """Not a token, nor a piece long enough to matter (logs shorten long strings)."""
    for token in tokens:
        assert token[4:14] not in log
        assert token[-10:] not in log


# --- tests ------------------------------------------------------------------------------


async def test_clients_receive_every_daemons_events_in_order_and_agents_only_their_own(
    scaleout: Scaleout,
) -> None:
    paris = await scaleout.site("paris")
    lyon = await scaleout.site("lyon")
    [seeded] = await paris.publish(_state("alice", "alice", "available"))
    scaleout.retained.append(paris.bridge.topics.agent_state("alice"))
    process, port = await scaleout.gateway()

    sue, sue_snapshot = await Client.open(scaleout.stack, port, scaleout.tokens["sue"])
    alice, alice_snapshot = await Client.open(scaleout.stack, port, scaleout.tokens["alice"])
    bob, _ = await Client.open(scaleout.stack, port, scaleout.tokens["bob"])

    a_id, a_created = _call("alice")
    b_id, b_created = _call("bob")
    paris_sent = await paris.publish(
        a_created,
        CallRinging(call_id=a_id, leg="agent", agent="alice"),
        CallAnswered(call_id=a_id, leg="agent", agent="alice"),
        # Published twice by the bridge (event and retained state): relayed once.
        _state("alice", "alice", "busy"),
        CallBridged(call_id=a_id, agent="alice", recording=True),
    )
    lyon_sent = await lyon.publish(
        b_created,
        CallRinging(call_id=b_id, leg="agent", agent="bob"),
        CallEnded(call_id=b_id, reason="no_answer", sip_code=480, agent="bob", talk_seconds=None),
    )
    paris_sent += await paris.publish(
        CallEnded(call_id=a_id, reason="completed", sip_code=200, agent="alice", talk_seconds=42.0)
    )

    # The retained state seeded the gateway: it is in the snapshot, or it is the
    # first event if the client connected before the gateway had read it.
    seed = _wire(seeded)
    seeded_first = [{k: v for k, v in a.items() if k != "since"} for a in sue_snapshot["agents"]]
    n = len(paris_sent) + len(lyon_sent)
    if seeded_first == [{"agent": "alice", "user": "alice", "state": "available", "reason": None}]:
        got = list(await sue.events(n))
    else:
        got = list(await sue.events(n + 1))
        assert got.pop(0) == seed
    assert len(got) == n
    # Each daemon's events arrive whole and in its own order; origins interleave.
    assert [e for e in got if e["origin"] == "paris"] == [_wire(e) for e in paris_sent]
    assert [e for e in got if e["origin"] == "lyon"] == [_wire(e) for e in lyon_sent]
    assert [e["seq"] for e in got if e["origin"] == "paris"] == [2, 3, 4, 5, 6, 7]

    alice_expected = [_wire(e) for e in paris_sent]
    if not alice_snapshot["agents"]:
        alice_expected.insert(0, seed)
    assert await alice.events(len(alice_expected)) == alice_expected
    bob_expected = [_wire(e) for e in lyon_sent]
    assert await bob.events(len(bob_expected)) == bob_expected

    _assert_no_token(await _stop(process), scaleout.tokens.values())


async def test_commands_reach_the_daemon_that_owns_them_and_replies_come_back(
    scaleout: Scaleout,
) -> None:
    paris = await scaleout.site("paris")
    lyon = await scaleout.site("lyon")
    wire = await scaleout.stack.enter_async_context(aiomqtt.Client(HOST, PORT, timeout=TIMEOUT))
    await wire.subscribe(f"{scaleout.prefix}/+/commands", qos=1)
    await paris.publish(_state("alice", "alice", "available"))
    scaleout.retained.append(paris.bridge.topics.agent_state("alice"))
    # Commands no event routes (Bob has published nothing) go to --site.
    process, port = await scaleout.gateway("--site", "nowhere", "--command-timeout", "2")
    alice, _ = await Client.open(scaleout.stack, port, scaleout.tokens["alice"])
    sue, _ = await Client.open(scaleout.stack, port, scaleout.tokens["sue"])
    bob, _ = await Client.open(scaleout.stack, port, scaleout.tokens["bob"])

    a_id, a_created = _call("alice")
    await paris.publish(a_created)
    l_id, l_created = _call("Sue's team")
    await lyon.publish(l_created)
    # Once the supervisor has seen both calls, the gateway knows where they live.
    await sue.until("call.created", l_id)
    await alice.until("call.created", a_id)

    reply = await alice.command("call.hangup", {"call_id": str(a_id)})
    assert reply["type"] == "result", reply
    assert reply["data"] == {"call_id": str(a_id), "hung_up": True}
    # What the command caused comes back as an event, through the broker.
    await alice.until("call.ended", a_id)

    reply = await alice.command("call.hold", {"call_id": str(a_id)})
    assert reply["type"] == "error"
    assert (reply["code"], reply["message"], reply["details"]) == (
        "conflict",
        "the call has ended",
        {"call_id": str(a_id)},
    )

    reply = await alice.command("agent.state.set", {"state": "paused", "reason": "lunch"})
    assert (reply["type"], reply["data"]) == ("result", {"state": "paused", "agent": "alice"})

    reply = await sue.command("call.hangup", {"call_id": str(l_id)})
    assert reply["type"] == "result", reply

    reply = await bob.command("agent.state.set", {"state": "available"})
    assert (reply["type"], reply["code"]) == ("error", "unavailable")
    assert reply["details"] == {"site": "nowhere"}

    assert paris.telephony.handled == [
        ("alice", "call.hangup", {"call_id": str(a_id)}),
        ("alice", "call.hold", {"call_id": str(a_id)}),
        ("alice", "agent.state.set", {"state": "paused", "reason": "lunch", "agent": "alice"}),
    ]
    assert lyon.telephony.handled == [("sue", "call.hangup", {"call_id": str(l_id)})]

    # What crossed the broker: signed assertions, never a user's token.
    commands = []
    async with asyncio.timeout(TIMEOUT):
        async for message in wire.messages:
            commands.append(json.loads(_payload(message)))
            if len(commands) == 5:
                break
    assert all("assertion" in c and "token" not in c for c in commands)
    _assert_no_token(json.dumps(commands), scaleout.tokens.values())
    _assert_no_token(await _stop(process), scaleout.tokens.values())


async def test_sigint_stops_the_gateway_cleanly(scaleout: Scaleout) -> None:
    process, port = await scaleout.gateway()
    sue, _ = await Client.open(scaleout.stack, port, scaleout.tokens["sue"])
    process.signal(signal.SIGINT)
    assert await asyncio.to_thread(process.wait_exit) == 0
    async with asyncio.timeout(TIMEOUT):
        await sue.ws.wait_closed()
    assert sue.ws.close_code == 1001


def test_a_gateway_without_a_broker_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    _write_gateway_config(config, tmp_path / "crm.sqlite3", "unused", broker=False)
    done = run_cli("--config", str(config), "gateway")
    assert done.returncode == 2
    assert "no broker: set bus.mqtt_url or give --mqtt URL" in done.stderr
    done = run_cli("--config", str(config), "gateway", "--mqtt", "mqtt://u:secret@broker")
    assert done.returncode == 2
    assert "secret" not in done.stderr


async def _paris_gateway_and_supervisor(scaleout: Scaleout) -> tuple[Site, DaemonProcess, Client]:
    """The site paris, a gateway relaying from the broker, and supervisor sue's client
    of it."""
    paris = await scaleout.site("paris")
    process, port = await scaleout.gateway()
    sue, _ = await Client.open(scaleout.stack, port, scaleout.tokens["sue"])
    return paris, process, sue


async def _a_new_call_reaches(client: Client, site: Site) -> None:
    """Publish a new call of alice's at ``site``; return once it is the next event
    ``client`` receives."""
    _, created = _call("alice")
    [sent] = await site.publish(created)
    assert await client.events(1) == [_wire(sent)]


async def _publish_raw(topic: str, payload: bytes) -> None:
    """Publish ``payload`` as it is, the way any client with broker rights could."""
    async with aiomqtt.Client(HOST, PORT, timeout=TIMEOUT) as client:
        await client.publish(topic, payload, qos=1)


async def test_overflowing_number_in_the_feed_is_dropped_and_the_next_event_arrives(
    scaleout: Scaleout,
) -> None:
    paris, process, sue = await _paris_gateway_and_supervisor(scaleout)

    call_id = uuid.uuid4()
    ended = _wire(
        Envelope(
            origin="paris",
            seq=99,
            at=datetime.now(UTC),
            event=CallEnded(
                call_id=call_id, reason="completed", sip_code=200, agent=None, talk_seconds=1.0
            ),
        )
    )
    text = json.dumps(ended).replace('"talk_seconds": 1.0', '"talk_seconds": ' + "9" * 400)
    assert "9" * 400 in text
    await _publish_raw(f"{scaleout.prefix}/paris/events/call.ended", text.encode())
    await _publish_raw(f"{scaleout.prefix}/paris/events/call.ringing", b"[" * 60_000)

    await _a_new_call_reaches(sue, paris)
    log = await _stop(process)
    assert log.count('"feed.unreadable"') == 2
    assert "feed.message_failed" not in log


async def test_an_event_whose_origin_is_not_its_topics_site_is_ignored(
    scaleout: Scaleout,
) -> None:
    paris, process, sue = await _paris_gateway_and_supervisor(scaleout)

    forged_id, forged = _call("alice")
    envelope = Envelope(origin="paris", seq=1000, at=datetime.now(UTC), event=forged)
    # A client of the lyon topics speaking for paris.
    await _publish_raw(f"{scaleout.prefix}/lyon/events/call.created", encode(envelope))

    await _a_new_call_reaches(sue, paris)
    # The forged call was not learnt as paris's (commands for it go nowhere).
    reply = await sue.command("call.hangup", {"call_id": str(forged_id)})
    assert reply["type"] == "error"
    assert paris.telephony.handled == []
    assert '"feed.forged_origin"' in await _stop(process)


async def test_a_killed_feed_connection_is_restarted_and_relays_again(
    scaleout: Scaleout,
) -> None:
    paris = await scaleout.site("paris")
    bus = Bus("gw")
    relayed = bus.subscribe("test", maxsize=100)
    connections: asyncio.Queue[bool] = asyncio.Queue()
    async with MqttFeed(
        bus,
        url=f"mqtt://{HOST}:{PORT}",
        topic_prefix=scaleout.prefix,
        reconnect_min=0.05,
        reconnect_max=0.5,
        on_connection=connections.put_nowait,
    ) as feed:
        async with asyncio.timeout(TIMEOUT):
            assert await connections.get() is True
            [inner] = [t for t in asyncio.all_tasks() if t.get_name() == "mqtt-feed-connection"]
            inner.cancel()
            assert await connections.get() is False
            assert await connections.get() is True
        assert feed.restarts == 1
        assert feed.alive
        _, created = _call("alice")
        [sent] = await paris.publish(created)
        async with asyncio.timeout(TIMEOUT):
            got = await relayed.get()
    assert got == sent


def test_the_feeds_maps_keep_only_the_most_recent_agents_origins_and_calls() -> None:
    routes, arrivals = Routes(memory=3), Arrivals(memory=3)
    at = datetime.now(UTC)
    for n in range(1000):
        envelope = Envelope(
            origin=f"site{n}", seq=1, at=at, event=_state(f"agent{n}", f"agent{n}", "available")
        )
        arrivals.admit(envelope, retained=False)
        routes.observe(envelope)
    assert [routes.site_of_agent(f"agent{n}") for n in (996, 997, 998, 999)] == [
        None,
        "site997",
        "site998",
        "site999",
    ]
    assert len(routes._agents) == len(arrivals._states) == len(arrivals._last) == 3
    assert len(arrivals._seen) == 3


def _payload(message: aiomqtt.Message) -> bytes:
    assert isinstance(message.payload, bytes)
    return message.payload
