"""The MQTT bridge against real Mosquitto brokers.

Most tests use the session's broker (the one ``SWITCHBOARD_TEST_MQTT_URL`` names, or
a private one: see tests/_services.py), each under its own topic prefix and site. The
restart and overflow tests run a private ``mosquitto`` on a free port, with
persistence on, so that the observer's persistent session (and the events queued
for it) survives the restart whichever of the observer and the bridge reconnects
first: that is what makes "nothing lost, nothing twice" checkable without racing.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import structlog

from bus import AgentStateChanged, Bus, CallEnded, CallRinging, Envelope, EventsDropped
from bus.codec import decode
from bus.mqtt import BridgeHealth, CommandError, MqttBridge, sign_assertion
from config import Secret
from crm_store import Role, Store, User, upgrade
from tests._services import PrivateMosquitto, mqtt_address

pytestmark = pytest.mark.mqtt

HOST, PORT = mqtt_address()
TIMEOUT = 10.0


# --- helpers -------------------------------------------------------------------------


def _ringing(n: int) -> CallRinging:
    return CallRinging(call_id=uuid.UUID(int=n), leg="customer", agent="alice")


async def _no_auth(token: str) -> None:
    return None


async def _no_handler(principal: object, name: str, args: Mapping[str, Any]) -> Any:
    raise AssertionError("the handler must not be called")


@asynccontextmanager
async def _bridge(
    bus: Bus,
    port: int,
    prefix: str,
    *,
    authenticate: Callable[[str], Any] = _no_auth,
    handler: Callable[..., Any] = _no_handler,
    **options: Any,
) -> AsyncIterator[MqttBridge[Any]]:
    bridge: MqttBridge[Any] = MqttBridge(
        bus,
        url=f"mqtt://{HOST}:{port}",
        site="paris",
        topic_prefix=prefix,
        authenticate=authenticate,
        handler=handler,
        timeout=5.0,
        reconnect_min=0.05,
        reconnect_max=0.5,
        **options,
    )
    async with bridge:
        yield bridge


@asynccontextmanager
async def _observer(
    port: int, *topics: str, identifier: str | None = None, persistent: bool = False
) -> AsyncIterator[aiomqtt.Client]:
    client = aiomqtt.Client(
        HOST, port, identifier=identifier, clean_session=not persistent, timeout=TIMEOUT
    )
    async with client:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        yield client


async def _take(client: aiomqtt.Client, n: int) -> list[aiomqtt.Message]:
    got: list[aiomqtt.Message] = []
    async with asyncio.timeout(TIMEOUT):
        async for message in client.messages:
            got.append(message)
            if len(got) == n:
                break
    return got


async def _acks_processed(client: aiomqtt.Client) -> None:
    """Return once the broker has processed the PUBACKs ``client`` sent so far.

    The broker reads a connection in order, so the UNSUBACK of a round trip made after
    them proves it. Without this, a broker stopped right after the client has
    "received" an event may never have read its PUBACK, and redelivers the event
    (flagged DUP) after the restart, correctly but not what the test asserts.
    """
    await client.unsubscribe("sbtest/none")


def _payload(message: aiomqtt.Message) -> bytes:
    assert isinstance(message.payload, bytes)
    return message.payload


@pytest.fixture
def prefix() -> str:
    return f"sbtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def clear_retained(prefix: str) -> AsyncIterator[list[str]]:
    """Topics whose retained message the test leaves on the shared broker; cleared
    at teardown (an empty retained payload deletes it)."""
    topics = [f"{prefix}/paris/status"]
    yield topics
    async with aiomqtt.Client(HOST, PORT, timeout=TIMEOUT) as client:
        for topic in topics:
            await client.publish(topic, b"", qos=1, retain=True)


# --- events --------------------------------------------------------------------------


async def test_events_arrive_in_order_on_their_type_topics_as_envelope_json(
    prefix: str, clear_retained: list[str]
) -> None:
    bus = Bus("paris")
    async with (
        _observer(PORT, f"{prefix}/paris/events/#") as observer,
        _bridge(bus, PORT, prefix) as bridge,
    ):
        await bridge.wait_connected(timeout=TIMEOUT)
        sent: list[Envelope] = []
        for n in range(60):
            if n % 3 == 2:
                sent.append(
                    bus.publish(
                        CallEnded(
                            call_id=uuid.UUID(int=n),
                            reason="completed",
                            sip_code=200,
                            agent="alice",
                            talk_seconds=n / 2,
                        )
                    )
                )
            else:
                sent.append(bus.publish(_ringing(n)))
        got = await _take(observer, len(sent))
        await bridge.drain(timeout=TIMEOUT)
        assert bridge.published == len(sent)
    assert [m.topic.value for m in got] == [f"{prefix}/paris/events/{e.type}" for e in sent]
    assert [json.loads(_payload(m)) for m in got] == [e.to_data() for e in sent]
    assert [decode(_payload(m)) for m in got] == sent
    assert all(m.qos == 1 and not m.retain for m in got)


async def test_agent_states_are_retained_for_a_late_subscriber(
    prefix: str, clear_retained: list[str]
) -> None:
    clear_retained += [f"{prefix}/paris/agents/{a}/state" for a in ("alice", "bob%2Fdesk")]
    bus = Bus("paris")
    async with _bridge(bus, PORT, prefix) as bridge:
        await bridge.wait_connected(timeout=TIMEOUT)
        bus.publish(AgentStateChanged(agent="alice", user="alice", state="available"))
        bus.publish(AgentStateChanged(agent="bob/desk", user=None, state="paused", reason="lunch"))
        last_alice = bus.publish(AgentStateChanged(agent="alice", user="alice", state="busy"))
        await bridge.drain(timeout=TIMEOUT)

        async with _observer(
            PORT, f"{prefix}/paris/agents/+/state", f"{prefix}/paris/status"
        ) as late:
            got = {m.topic.value: m for m in await _take(late, 3)}
    alice = got[f"{prefix}/paris/agents/alice/state"]
    bob = got[f"{prefix}/paris/agents/bob%2Fdesk/state"]  # a / in a name stays one level
    assert alice.retain
    assert bob.retain
    assert decode(_payload(alice)) == last_alice
    bob_state = decode(_payload(bob)).event
    assert isinstance(bob_state, AgentStateChanged)
    assert (bob_state.agent, bob_state.state, bob_state.reason) == ("bob/desk", "paused", "lunch")
    status = json.loads(_payload(got[f"{prefix}/paris/status"]))
    assert status["state"] == "online"
    assert status["origin"] == "paris"


async def test_close_announces_offline_and_is_idempotent(
    prefix: str, clear_retained: list[str]
) -> None:
    bus = Bus("paris")
    async with _bridge(bus, PORT, prefix) as bridge:
        await bridge.wait_connected(timeout=TIMEOUT)
        bus.publish(_ringing(1))
    await bridge.aclose()
    assert bridge.published == 1
    assert not bridge.connected
    async with _observer(PORT, f"{prefix}/paris/status") as late:
        [status] = await _take(late, 1)
    assert json.loads(_payload(status))["state"] == "offline"
    with pytest.raises(RuntimeError, match="closed"):
        await bridge.start()


# --- commands ------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'crm.sqlite3'}"
    await upgrade(url)
    store = await Store.open(url)
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
async def token(store: Store) -> str:
    """An API token of agent ada (extension 1001), issued for "crm"."""
    user = await store.users.add("ada", "Ada", Role.AGENT, extension="1001")
    _, token = await store.users.issue_token(user.id, "crm")
    return token


class Recorder:
    """A command handler that records what it is given and answers like a real one."""

    def __init__(self) -> None:
        self.calls: list[tuple[User, str, dict[str, Any]]] = []

    async def __call__(self, principal: User, name: str, args: Mapping[str, Any]) -> Any:
        self.calls.append((principal, name, dict(args)))
        if name == "call.hangup":
            return {"call_id": args["call_id"], "hung_up": True}
        if name == "call.barge":
            raise CommandError("forbidden", "agents cannot barge", details={"role": "agent"})
        raise RuntimeError("handler bug")


@asynccontextmanager
async def _commanded(
    bus: Bus, prefix: str, store: Store, handler: Callable[..., Any], *topics: str
) -> AsyncIterator[aiomqtt.Client]:
    """A bridge for ``bus`` that checks tokens against ``store`` and runs ``handler``,
    connected, and an observer of ``topics`` on the same broker."""
    async with (
        _bridge(bus, PORT, prefix, authenticate=store.users.authenticate, handler=handler) as b,
        _observer(PORT, *topics) as client,
    ):
        await b.wait_connected(timeout=TIMEOUT)
        yield client


async def _command(client: aiomqtt.Client, prefix: str, message: object) -> None:
    payload = message if isinstance(message, bytes) else json.dumps(message).encode()
    await client.publish(f"{prefix}/paris/commands", payload, qos=1)


async def test_command_with_a_valid_token_is_dispatched_and_replied(
    prefix: str, clear_retained: list[str], store: Store
) -> None:
    user = await store.users.add("ada", "Ada", Role.AGENT, extension="1001")
    _, token = await store.users.issue_token(user.id, "crm")
    handler = Recorder()
    bus = Bus("paris")
    inbox = f"{prefix}/paris/replies/crm/ada"  # a reply topic of the client's own
    with structlog.testing.capture_logs() as logs:
        async with _commanded(bus, prefix, store, handler, f"{prefix}/paris/replies/#") as client:
            call_id = str(uuid.uuid4())
            await _command(
                client,
                prefix,
                {"id": "c1", "token": token, "name": "call.hangup", "args": {"call_id": call_id}},
            )
            [reply] = await _take(client, 1)
            assert reply.topic.value == f"{prefix}/paris/replies/c1"
            assert json.loads(_payload(reply)) == {
                "id": "c1",
                "type": "result",
                "result": {"call_id": call_id, "hung_up": True},
            }
            await _command(
                client,
                prefix,
                {"id": "c2", "token": token, "name": "call.barge", "reply_to": inbox},
            )
            [refused] = await _take(client, 1)
            assert refused.topic.value == inbox
            assert json.loads(_payload(refused)) == {
                "id": "c2",
                "type": "error",
                "error": {
                    "code": "forbidden",
                    "message": "agents cannot barge",
                    "details": {"role": "agent"},
                },
            }
            await _command(client, prefix, {"id": "c3", "token": token, "name": "boom"})
            [crashed] = await _take(client, 1)
            assert json.loads(_payload(crashed))["error"]["code"] == "internal"
    assert [(p.id, n, a) for p, n, a in handler.calls] == [
        (user.id, "call.hangup", {"call_id": call_id}),
        (user.id, "call.barge", {}),
        (user.id, "boom", {}),
    ]
    assert token not in repr(logs)
    assert any(e["event"] == "mqtt.command_crashed" for e in logs)


async def test_bad_or_missing_token_is_unauthorized_and_never_reaches_the_handler(
    prefix: str, clear_retained: list[str], store: Store
) -> None:
    bus = Bus("paris")
    bad = "sbt_" + "x" * 43
    with structlog.testing.capture_logs() as logs:
        async with (
            _bridge(bus, PORT, prefix, authenticate=store.users.authenticate) as bridge,
            _observer(PORT, f"{prefix}/paris/replies/#") as client,
        ):
            await bridge.wait_connected(timeout=TIMEOUT)
            await _command(client, prefix, {"id": "a", "token": bad, "name": "call.hangup"})
            await _command(client, prefix, {"id": "b", "name": "call.hangup"})
            replies = await _take(client, 2)
    by_id = {json.loads(_payload(m))["id"]: json.loads(_payload(m)) for m in replies}
    assert by_id["a"]["type"] == by_id["b"]["type"] == "error"
    assert by_id["a"]["error"]["code"] == by_id["b"]["error"]["code"] == "unauthorized"
    assert bad not in repr(logs)


async def test_malformed_commands_get_bad_request_and_the_bridge_keeps_serving(
    prefix: str, clear_retained: list[str]
) -> None:
    bus = Bus("paris")
    base = f"{prefix}/paris"
    async with (
        _bridge(bus, PORT, prefix) as bridge,
        _observer(PORT, f"{base}/replies/#", f"{base}/events/#") as client,
    ):
        await bridge.wait_connected(timeout=TIMEOUT)
        await _command(client, prefix, b"{not json")
        [reply] = await _take(client, 1)
        assert reply.topic.value == f"{base}/replies"
        assert json.loads(_payload(reply))["error"]["code"] == "bad_request"

        # A reply_to inside the site's own topics would let a client forge events.
        await _command(
            client,
            prefix,
            {"id": "x", "token": "t", "name": "n", "reply_to": f"{base}/events/call.ended"},
        )
        [reply] = await _take(client, 1)
        assert reply.topic.value == f"{base}/replies/x"
        assert json.loads(_payload(reply))["error"]["code"] == "bad_request"

        await _command(client, prefix, {"id": "y", "token": "t", "name": "n", "args": [1]})
        [reply] = await _take(client, 1)
        assert json.loads(_payload(reply)) == {
            "id": "y",
            "type": "error",
            "error": {"code": "bad_request", "message": "'args' must be an object"},
        }
        # Still publishing events after all that.
        sent = bus.publish(_ringing(9))
        [event] = await _take(client, 1)
        assert decode(_payload(event)) == sent


# --- broker outages ------------------------------------------------------------------


async def test_broker_restart_loses_no_event_and_repeats_none(
    private_broker: PrivateMosquitto, prefix: str
) -> None:
    events = f"{prefix}/paris/events/#"
    observer_id = f"{prefix}-observer"
    bus = Bus("paris")
    async with _bridge(bus, private_broker.port, prefix) as bridge:
        async with _observer(
            private_broker.port, events, identifier=observer_id, persistent=True
        ) as obs:
            await bridge.wait_connected(timeout=TIMEOUT)
            before = [bus.publish(_ringing(n)) for n in range(5)]
            await bridge.drain(timeout=TIMEOUT)
            got_before = await _take(obs, 5)
            await _acks_processed(obs)

        await private_broker.astop()
        await bridge.wait_disconnected(timeout=TIMEOUT)
        during = [bus.publish(_ringing(n)) for n in range(5, 10)]
        await bridge._wait_until(lambda: bridge.buffered == 5, TIMEOUT)
        assert bridge.dropped == 0

        await private_broker.astart()
        async with _observer(private_broker.port, identifier=observer_id, persistent=True) as obs:
            got_during = await _take(obs, 5)
            await bridge.drain(timeout=TIMEOUT)
            # Anything sent twice would arrive before this one: the broker keeps order.
            sentinel = bus.publish(_ringing(99))
            [got_sentinel] = await _take(obs, 1)
        assert bridge.connected
    assert [decode(_payload(m)) for m in got_before] == before
    assert [decode(_payload(m)) for m in got_during] == during
    assert decode(_payload(got_sentinel)) == sentinel
    assert bridge.published == 11


async def test_buffer_overflow_drops_the_oldest_and_reports_how_many(
    private_broker: PrivateMosquitto, prefix: str
) -> None:
    events = f"{prefix}/paris/events/#"
    observer_id = f"{prefix}-observer"
    # Register the observer's persistent session, then take the broker away.
    async with _observer(private_broker.port, events, identifier=observer_id, persistent=True):
        pass
    await private_broker.astop()

    bus = Bus("paris")
    with structlog.testing.capture_logs() as logs:
        async with _bridge(bus, private_broker.port, prefix, buffer_size=3) as bridge:
            sent = [bus.publish(_ringing(n)) for n in range(10)]
            await bridge._wait_until(lambda: bridge.dropped == 7, TIMEOUT)
            assert bridge.buffered == 3

            await private_broker.astart()
            async with _observer(
                private_broker.port, identifier=observer_id, persistent=True
            ) as obs:
                got = [decode(_payload(m)) for m in await _take(obs, 4)]
    assert got[:3] == sent[-3:]
    notice = got[3]
    assert notice.event == EventsDropped(subscriber="mqtt", count=7)
    assert notice.seq == 11
    assert [e["event"] for e in logs].count("mqtt.buffer_full") == 1
    assert {"event": "mqtt.dropped", "count": 7}.items() <= next(
        e for e in logs if e["event"] == "mqtt.dropped"
    ).items()


# --- hostile commands ----------------------------------------------------------------


class Echo:
    """A command handler that answers every command with its arguments."""

    async def __call__(self, principal: User, name: str, args: Mapping[str, Any]) -> Any:
        if name == "leak":
            raise CommandError("internal", "psycopg: duplicate key value (phone)=(+33612345678)")
        return {"name": name, "args": dict(args)}


async def test_deep_json_command_gets_bad_request_and_bridge_goes_on(
    prefix: str, clear_retained: list[str], store: Store, token: str
) -> None:
    bus = Bus("paris")
    base = f"{prefix}/paris"
    with structlog.testing.capture_logs() as logs:
        async with _commanded(
            bus, prefix, store, Echo(), f"{base}/replies/#", f"{base}/events/#"
        ) as client:
            await _command(client, prefix, b"[" * 60_000)
            [reply] = await _take(client, 1)
            assert reply.topic.value == f"{base}/replies"
            refused = json.loads(_payload(reply))
            assert refused["error"]["code"] == "bad_request"
            assert "nested deeper" in refused["error"]["message"]

            # The next valid command is answered, and events still flow.
            await _command(client, prefix, {"id": "ok", "token": token, "name": "ping"})
            [answer] = await _take(client, 1)
            assert answer.topic.value == f"{base}/replies/ok"
            assert json.loads(_payload(answer))["result"] == {"name": "ping", "args": {}}
            sent = bus.publish(_ringing(7))
            [event] = await _take(client, 1)
            assert decode(_payload(event)) == sent
    assert not any(e["event"] == "mqtt.crashed" for e in logs)


async def test_surrogate_reason_over_mqtt_is_refused_and_nothing_is_published(
    prefix: str, clear_retained: list[str], store: Store, token: str
) -> None:
    handler = Recorder()
    bus = Bus("paris")
    base = f"{prefix}/paris"
    async with _commanded(
        bus, prefix, store, handler, f"{base}/replies/#", f"{base}/events/#"
    ) as client:
        # json.dumps writes the lone surrogate as the six characters \ud800.
        command = {
            "id": "s1",
            "token": token,
            "name": "agent.state.set",
            "args": {"agent": "ada", "state": "paused", "reason": "\ud800"},
        }
        await _command(client, prefix, command)
        [reply] = await _take(client, 1)
        refused = json.loads(_payload(reply))
        assert refused["error"]["code"] == "bad_request"
        assert "Unicode" in refused["error"]["message"]
        # An event holding one (from a producer that did not check) is dropped with
        # a log line, and the events after it still go out.
        with structlog.testing.capture_logs() as logs:
            bus.publish(AgentStateChanged(agent="ada", user="ada", state="paused", reason="\udc80"))
            sent = bus.publish(_ringing(8))
            [event] = await _take(client, 1)
        assert decode(_payload(event)) == sent
    assert handler.calls == []
    assert any(e["event"] == "mqtt.unencodable" for e in logs)


async def test_internal_error_text_never_reaches_an_mqtt_reply(
    prefix: str, clear_retained: list[str], store: Store, token: str
) -> None:
    bus = Bus("paris")
    with structlog.testing.capture_logs() as logs:
        async with _commanded(bus, prefix, store, Echo(), f"{prefix}/paris/replies/#") as client:
            await _command(client, prefix, {"id": "l1", "token": token, "name": "leak"})
            [reply] = await _take(client, 1)
    assert json.loads(_payload(reply))["error"] == {"code": "internal", "message": "internal error"}
    assert any("+33612345678" in str(e.get("reason")) for e in logs)


# --- supervision ---------------------------------------------------------------------


def _task(name: str) -> asyncio.Task[Any]:
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == name and not t.done()]
    return task


@pytest.mark.parametrize("inner", ["mqtt-connection", "mqtt-collect"])
async def test_a_killed_inner_task_is_restarted_and_the_bridge_serves_again(
    prefix: str, clear_retained: list[str], store: Store, token: str, inner: str
) -> None:
    bus = Bus("paris")
    base = f"{prefix}/paris"
    seen: list[BridgeHealth] = []
    with structlog.testing.capture_logs() as logs:
        async with (
            _bridge(
                bus,
                PORT,
                prefix,
                authenticate=store.users.authenticate,
                handler=Echo(),
                on_health=seen.append,
            ) as bridge,
            _observer(PORT, f"{base}/replies/#", f"{base}/events/#") as client,
        ):
            await bridge.wait_connected(timeout=TIMEOUT)
            assert bridge.health is BridgeHealth.CONNECTED
            _task(inner).cancel()
            await bridge._wait_until(lambda: bridge.restarts == 1, TIMEOUT)
            await bridge.wait_connected(timeout=TIMEOUT)
            assert bridge.health is BridgeHealth.CONNECTED

            await _command(client, prefix, {"id": "after", "token": token, "name": "ping"})
            [answer] = await _take(client, 1)
            assert json.loads(_payload(answer))["id"] == "after"
            sent = bus.publish(_ringing(3))
            [event] = await _take(client, 1)
            assert decode(_payload(event)) == sent
    assert seen == [
        BridgeHealth.CONNECTED,
        BridgeHealth.DISCONNECTED,
        BridgeHealth.RESTARTING,
        BridgeHealth.CONNECTED,
        BridgeHealth.DISCONNECTED,  # closed
    ]
    crashed = [e for e in logs if e["event"] == "mqtt.crashed"]
    assert [(e["task"], e["error"]) for e in crashed] == [(inner, "cancelled")]


async def test_a_reply_to_outside_the_sites_replies_is_refused_and_nothing_runs(
    prefix: str, clear_retained: list[str], store: Store, token: str
) -> None:
    handler = Recorder()
    bus = Bus("paris")
    elsewhere = f"{prefix}-crm/inbox"
    async with _commanded(
        bus, prefix, store, handler, f"{prefix}/+/replies/#", elsewhere
    ) as client:
        for n, reply_to in enumerate([f"{prefix}/lyon/replies/x", elsewhere]):
            await _command(
                client,
                prefix,
                {"id": f"r{n}", "token": token, "name": "call.hangup", "reply_to": reply_to},
            )
            [reply] = await _take(client, 1)
            assert reply.topic.value == f"{prefix}/paris/replies/r{n}"
            refused = json.loads(_payload(reply))
            assert refused["error"]["code"] == "bad_request"
            assert f"{prefix}/paris/replies/" in refused["error"]["message"]
    assert handler.calls == []


# --- gateway assertions --------------------------------------------------------------

GATEWAY_SECRET = "g" * 40


async def test_a_gateway_assertion_runs_one_command_for_an_active_user_only(
    prefix: str, clear_retained: list[str], store: Store
) -> None:
    ada = await store.users.add("ada", "Ada", Role.AGENT, extension="1001")
    bob = await store.users.add("bob", "Bob", Role.AGENT, extension="1002")
    await store.users.set_active(bob.id, False)

    async def user(user_id: str) -> User | None:
        found = await store.users.get(uuid.UUID(user_id))
        return found if found.active else None

    def command(cid: str, user_id: uuid.UUID, *, secret: str = GATEWAY_SECRET) -> dict[str, Any]:
        assertion = sign_assertion(
            secret.encode(),
            user_id=str(user_id),
            site="paris",
            command_id=cid,
            expires=int(time.time()) + 30,
        )
        return {"id": cid, "assertion": assertion, "name": "ping"}

    bus = Bus("paris")
    async with (
        _bridge(
            bus,
            PORT,
            prefix,
            handler=Echo(),
            gateway_secret=Secret(GATEWAY_SECRET),
            authenticate_user=user,
        ) as bridge,
        _observer(PORT, f"{prefix}/paris/replies/#") as client,
    ):
        await bridge.wait_connected(timeout=TIMEOUT)
        good = command("g1", ada.id)
        await _command(client, prefix, good)
        await _command(client, prefix, good)  # the same message again: a replay
        await _command(client, prefix, command("g2", ada.id, secret="f" * 40))
        await _command(client, prefix, command("g3", bob.id))
        replies = [json.loads(_payload(m)) for m in await _take(client, 4)]
    # Commands run concurrently: their replies may come in any order.
    [ran] = [r for r in replies if r["type"] == "result"]
    assert ran == {"id": "g1", "type": "result", "result": {"name": "ping", "args": {}}}
    assert sorted((r["id"], r["error"]["code"]) for r in replies if r is not ran) == [
        ("g1", "unauthorized"),
        ("g2", "unauthorized"),
        ("g3", "unauthorized"),
    ]


async def test_a_daemon_without_gateway_secret_refuses_every_assertion(
    prefix: str, clear_retained: list[str], store: Store
) -> None:
    ada = await store.users.add("ada", "Ada", Role.AGENT, extension="1001")
    assertion = sign_assertion(
        b"", user_id=str(ada.id), site="paris", command_id="e1", expires=int(time.time()) + 30
    )
    bus = Bus("paris")
    async with (
        _bridge(bus, PORT, prefix, handler=Echo()) as bridge,
        _observer(PORT, f"{prefix}/paris/replies/#") as client,
    ):
        await bridge.wait_connected(timeout=TIMEOUT)
        await _command(client, prefix, {"id": "e1", "assertion": assertion, "name": "ping"})
        [reply] = await _take(client, 1)
    assert json.loads(_payload(reply))["error"]["code"] == "unauthorized"


async def test_a_bridge_whose_supervisor_is_gone_reports_itself_stopped(
    prefix: str, clear_retained: list[str]
) -> None:
    seen: list[BridgeHealth] = []
    bus = Bus("paris")
    async with _bridge(bus, PORT, prefix, on_health=seen.append) as bridge:
        await bridge.wait_connected(timeout=TIMEOUT)
        _task("mqtt-bridge").cancel()
        await bridge._wait_until(lambda: bridge.health is BridgeHealth.STOPPED, TIMEOUT)
    assert seen[-1] is BridgeHealth.STOPPED
