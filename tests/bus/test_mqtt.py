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
import getpass
import json
import shutil
import signal
import socket
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
from bus.mqtt import CommandError, MqttBridge
from crm_store import Role, Store, User, upgrade
from tests._services import mqtt_address

pytestmark = pytest.mark.mqtt

HOST, PORT = mqtt_address()
TIMEOUT = 10.0


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


shared_broker = pytest.mark.skipif(
    not _answers(HOST, PORT), reason=f"no MQTT broker answers at {HOST}:{PORT}"
)
private_broker = pytest.mark.skipif(
    shutil.which("mosquitto") is None,
    reason="the mosquitto binary is not installed (Debian package mosquitto)",
)


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


class PrivateBroker:
    """A mosquitto of our own on a free port, which tests can stop and restart."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as s:
            s.bind((HOST, 0))
            self.port = s.getsockname()[1]
        self._conf = directory / "mosquitto.conf"
        (directory / "data").mkdir()
        self._conf.write_text(
            f"listener {self.port} {HOST}\n"
            "allow_anonymous true\n"
            # Run as root, mosquitto switches to the user named here (by default
            # "mosquitto", who could not write the test's directory).
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {directory / 'data'}/\n"
            "log_dest none\n"
        )
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            "mosquitto", "-c", str(self._conf), stdin=asyncio.subprocess.DEVNULL
        )
        async with asyncio.timeout(TIMEOUT):
            while not _answers(HOST, self.port):
                if self._proc.returncode is not None:
                    raise RuntimeError(f"mosquitto exited with {self._proc.returncode}")
                await asyncio.sleep(0.02)  # polling the port: the state we wait for

    async def stop(self) -> None:
        """SIGTERM (mosquitto saves its sessions) and wait until it has exited."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(TIMEOUT):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def private(tmp_path: Path) -> AsyncIterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


# --- events --------------------------------------------------------------------------


@shared_broker
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


@shared_broker
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


@shared_broker
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


async def _command(client: aiomqtt.Client, prefix: str, message: object) -> None:
    payload = message if isinstance(message, bytes) else json.dumps(message).encode()
    await client.publish(f"{prefix}/paris/commands", payload, qos=1)


@shared_broker
async def test_command_with_a_valid_token_is_dispatched_and_replied(
    prefix: str, clear_retained: list[str], store: Store
) -> None:
    user = await store.users.add("ada", "Ada", Role.AGENT, extension="1001")
    _, token = await store.users.issue_token(user.id, "crm")
    handler = Recorder()
    bus = Bus("paris")
    inbox = f"{prefix}-crm/inbox/ada"  # a reply topic of the client's own
    with structlog.testing.capture_logs() as logs:
        async with (
            _bridge(
                bus, PORT, prefix, authenticate=store.users.authenticate, handler=handler
            ) as bridge,
            _observer(PORT, f"{prefix}/paris/replies/#", inbox) as client,
        ):
            await bridge.wait_connected(timeout=TIMEOUT)
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


@shared_broker
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


@shared_broker
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


@private_broker
async def test_broker_restart_loses_no_event_and_repeats_none(
    private: PrivateBroker, prefix: str
) -> None:
    events = f"{prefix}/paris/events/#"
    observer_id = f"{prefix}-observer"
    bus = Bus("paris")
    async with _bridge(bus, private.port, prefix) as bridge:
        async with _observer(private.port, events, identifier=observer_id, persistent=True) as obs:
            await bridge.wait_connected(timeout=TIMEOUT)
            before = [bus.publish(_ringing(n)) for n in range(5)]
            await bridge.drain(timeout=TIMEOUT)
            got_before = await _take(obs, 5)
            await _acks_processed(obs)

        await private.stop()
        await bridge.wait_disconnected(timeout=TIMEOUT)
        during = [bus.publish(_ringing(n)) for n in range(5, 10)]
        await bridge._wait_until(lambda: bridge.buffered == 5, TIMEOUT)
        assert bridge.dropped == 0

        await private.start()
        async with _observer(private.port, identifier=observer_id, persistent=True) as obs:
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


@private_broker
async def test_buffer_overflow_drops_the_oldest_and_reports_how_many(
    private: PrivateBroker, prefix: str
) -> None:
    events = f"{prefix}/paris/events/#"
    observer_id = f"{prefix}-observer"
    # Register the observer's persistent session, then take the broker away.
    async with _observer(private.port, events, identifier=observer_id, persistent=True):
        pass
    await private.stop()

    bus = Bus("paris")
    with structlog.testing.capture_logs() as logs:
        async with _bridge(bus, private.port, prefix, buffer_size=3) as bridge:
            sent = [bus.publish(_ringing(n)) for n in range(10)]
            await bridge._wait_until(lambda: bridge.dropped == 7, TIMEOUT)
            assert bridge.buffered == 3

            await private.start()
            async with _observer(private.port, identifier=observer_id, persistent=True) as obs:
                got = [decode(_payload(m)) for m in await _take(obs, 4)]
    assert got[:3] == sent[-3:]
    notice = got[3]
    assert notice.event == EventsDropped(subscriber="mqtt", count=7)
    assert notice.seq == 11
    assert [e["event"] for e in logs].count("mqtt.buffer_full") == 1
    assert {"event": "mqtt.dropped", "count": 7}.items() <= next(
        e for e in logs if e["event"] == "mqtt.dropped"
    ).items()
