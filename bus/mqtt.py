"""The MQTT bridge: every bus event to the broker, commands from it.

:class:`MqttBridge` subscribes to the :class:`~bus.Bus` and publishes each envelope,
in order and with QoS 1, on ``{prefix}/{site}/events/{type}``; agent states are also
published *retained* on ``{prefix}/{site}/agents/{agent}/state``. It takes commands
on ``{prefix}/{site}/commands``, authenticates their token, hands them to the
injected handler and publishes the reply. Topics and payloads: docs/protocol.md, "MQTT".

Delivery is *at least once*: an event leaves the bridge's local buffer only when
the broker has acknowledged it, so a broker restart or a network cut loses
nothing as long as the buffer holds (its oldest events are dropped beyond
``buffer_size``, counted, and reported by an ``EventsDropped(subscriber="mqtt")``
event). An event whose acknowledgement was lost with the connection is published
again after reconnecting; readers drop duplicates by ``(origin, seq)``.

Structure: one task moves envelopes from the bus subscription into the buffer,
always, connected or not; one task per connection publishes the buffer's head
and waits for its acknowledgement before the next, which is what keeps the
order; one task per connection reads commands, each run in its own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import ssl
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import aiomqtt
import structlog

from ._bus import Bus, Subscription
from ._mqtt_connection import ConnectionLoop, stop
from ._mqtt_protocol import (
    BadAssertion,
    BadCommand,
    BrokerAddress,
    Command,
    CommandError,
    Topics,
    error_reply,
    parse_command,
    result_reply,
    sign_assertion,
    status_payload,
    verify_assertion,
)
from .codec import CodecError, encode
from .events import AgentStateChanged, Envelope, EventsDropped

if TYPE_CHECKING:
    from config import BusConfig

__all__ = [
    "Authenticate",
    "AuthenticateUser",
    "BridgeHealth",
    "BrokerAddress",
    "CommandError",
    "CommandHandler",
    "MqttBridge",
    "Topics",
    "sign_assertion",
    "tls_context",
]

log = structlog.get_logger(__name__)

P = TypeVar("P")

Authenticate = Callable[[str], Awaitable[P | None]]
"""``authenticate(token)``: the principal owning the token, or ``None``."""

AuthenticateUser = Callable[[str], Awaitable[P | None]]
"""``authenticate_user(user_id)``: the principal of an active user, or ``None``;
for commands a gateway vouches for (see :func:`sign_assertion`)."""

CommandHandler = Callable[[P, str, Mapping[str, Any]], Awaitable[Any]]
"""``handler(principal, name, args)``: checks rights, runs the command, returns
JSON-ready data or raises :class:`CommandError`."""

#: The subscriber name in drop reports: the bus's (its queue to the bridge was
#: full) and the bridge's own (its buffer overflowed while the broker was away).
SUBSCRIBER = "mqtt"


class _Secret(Protocol):
    def reveal(self) -> str: ...


class BridgeHealth(enum.Enum):
    """What the bridge can say of itself (the daemon reports it to systemd).

    ``CONNECTED`` serves; ``DISCONNECTED`` (broker unreachable, reconnecting) and
    ``RESTARTING`` (a task of the bridge ended on its own and is being restarted
    after a backoff) are degraded but supervised, and events are buffered
    meanwhile; ``STOPPED`` means the supervisor itself is gone while the bridge
    was not closed: nothing will bring it back short of a restart of the process.
    """

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RESTARTING = "restarting"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """One envelope, encoded once, with every ``(topic, payload, retain)`` it goes to."""

    seq: int
    type: str
    messages: tuple[tuple[str, bytes, bool], ...]


def tls_context(config: BusConfig, *, url: str | None = None) -> ssl.SSLContext | None:
    """The TLS settings for an ``mqtts://`` broker (``url``, else ``[bus]``'s
    ``mqtt_url``), or ``None`` for ``mqtt://``.

    The broker's certificate is checked against ``mqtt_ca_file`` (else the system's
    authorities) and its host name; ``mqtt_cert_file`` and ``mqtt_key_file``, if
    set, are the client certificate. Raises ``OSError`` or :class:`ssl.SSLError`
    for files that cannot be read or used.
    """
    url = url or config.mqtt_url
    if url is None or not url.startswith("mqtts://"):
        return None
    ca = config.mqtt_ca_file
    context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.mqtt_cert_file is not None:
        key = config.mqtt_key_file
        context.load_cert_chain(str(config.mqtt_cert_file), str(key) if key is not None else None)
    return context


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MqttBridge(Generic[P]):
    """Publishes the bus to an MQTT broker and runs commands received from it.

    Use ``async with MqttBridge(...) as bridge:`` or :meth:`start` / :meth:`aclose`.
    Start it before the producers: it forwards the events published after
    :meth:`start`. It never raises for a broker that is down; it keeps
    reconnecting with capped exponential backoff and jitter, and buffers.
    """

    def __init__(
        self,
        bus: Bus,
        *,
        url: str,
        site: str,
        authenticate: Authenticate[P],
        handler: CommandHandler[P],
        topic_prefix: str = "switchboard",
        password: _Secret | None = None,
        redacted_url: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        buffer_size: int = 10_000,
        subscriber_queue: int = 1000,
        keepalive: int = 30,
        timeout: float = 10.0,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        command_timeout: float = 30.0,
        max_commands: int = 16,
        close_timeout: float = 5.0,
        on_health: Callable[[BridgeHealth], None] | None = None,
        gateway_secret: _Secret | None = None,
        authenticate_user: AuthenticateUser[P] | None = None,
    ) -> None:
        broker = BrokerAddress.parse(url, tls_context=tls_context)
        if buffer_size < 1 or subscriber_queue < 1 or max_commands < 1:
            raise ValueError("buffer_size, subscriber_queue and max_commands must be >= 1")
        self._bus = bus
        self._broker = broker
        self._password = password
        self._url_for_logs = redacted_url or url
        self.topics = Topics(prefix=topic_prefix, site=site)
        self._site = site
        self._authenticate = authenticate
        self._handler = handler
        self._gateway_secret = gateway_secret
        self._authenticate_user = authenticate_user
        # Command ids of the assertions accepted, oldest expiry first (a dict keeps
        # insertion order, and expiries are at most MAX_ASSERTION_SECONDS apart).
        self._assertions_seen: dict[str, int] = {}
        self._buffer_size = buffer_size
        self._subscriber_queue = subscriber_queue
        self._keepalive = keepalive
        self._command_timeout = command_timeout
        self._max_commands = max_commands
        self._close_timeout = close_timeout

        self._buffer: deque[_Outgoing] = deque()
        # How many messages of the buffer's head are acknowledged already (an agent
        # state has two): a reconnect resumes there instead of repeating them.
        self._head_sent = 0
        self._drops_unreported = 0
        self._client: aiomqtt.Client | None = None
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed: asyncio.Future[None] | None = None
        self._pulse = asyncio.Event()
        # Raises ValueError unless 0 < reconnect_min <= reconnect_max.
        self._connection = ConnectionLoop(
            name="mqtt",
            url_for_logs=self._url_for_logs,
            new_client=self._new_client,
            serve=self._serve_connection,
            timeout=timeout,
            reconnect_min=reconnect_min,
            reconnect_max=reconnect_max,
            on_failure=self._changed,
            log_context=lambda: {"buffered": len(self._buffer)},
        )
        self._on_health = on_health
        self._health = BridgeHealth.DISCONNECTED
        #: Envelopes acknowledged by the broker, and envelopes dropped from the
        #: buffer (since start).
        self.published = 0
        self.dropped = 0

    @classmethod
    def from_config(
        cls,
        bus: Bus,
        config: BusConfig,
        *,
        site: str,
        authenticate: Authenticate[P],
        handler: CommandHandler[P],
        buffer_size: int = 10_000,
        on_health: Callable[[BridgeHealth], None] | None = None,
        authenticate_user: AuthenticateUser[P] | None = None,
    ) -> MqttBridge[P]:
        """A bridge for ``[bus]``; ``ValueError`` if ``mqtt_url`` is unset, and
        ``OSError`` or :class:`ssl.SSLError` if its TLS files cannot be loaded."""
        if config.mqtt_url is None:
            raise ValueError("bus.mqtt_url is not set")
        return cls(
            bus,
            url=config.mqtt_url,
            site=site,
            authenticate=authenticate,
            handler=handler,
            topic_prefix=config.topic_prefix,
            password=config.mqtt_password,
            redacted_url=config.redacted_mqtt_url(),
            subscriber_queue=config.subscriber_queue,
            buffer_size=buffer_size,
            on_health=on_health,
            tls_context=tls_context(config),
            gateway_secret=config.gateway_secret,
            authenticate_user=authenticate_user,
        )

    # --- state -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Connected, subscribed to commands and announced ``online``."""
        return self._client is not None

    @property
    def restarts(self) -> int:
        """Times the supervisor restarted the bridge's tasks after one ended on its own."""
        return self._connection.restarts

    @property
    def health(self) -> BridgeHealth:
        """How the bridge is doing; see :class:`BridgeHealth`."""
        return self._health

    def _set_health(self, health: BridgeHealth) -> None:
        if health is self._health:
            return
        self._health = health
        log.info("mqtt.health", health=health.value)
        self._changed()
        if self._on_health is not None:
            self._on_health(health)

    @property
    def buffered(self) -> int:
        """Envelopes waiting for the broker's acknowledgement."""
        return len(self._buffer)

    async def wait_connected(self, *, timeout: float) -> None:
        """Return once :attr:`connected`; ``TimeoutError`` after ``timeout`` seconds."""
        await self._wait_until(lambda: self._client is not None, timeout)

    async def wait_disconnected(self, *, timeout: float) -> None:
        """Return once not :attr:`connected`; ``TimeoutError`` after ``timeout``."""
        await self._wait_until(lambda: self._client is None, timeout)

    async def drain(self, *, timeout: float) -> None:
        """Return once every event published on the bus so far is acknowledged by
        the broker (or was dropped); ``TimeoutError`` after ``timeout`` seconds.
        Cancelling it cancels only the wait."""
        await self._wait_until(self._idle, timeout)

    def _idle(self) -> bool:
        return not self._buffer and (self._sub is None or len(self._sub) == 0)

    def _changed(self) -> None:
        # Wakes every _wait_until; a fresh Event each time so that a waiter that
        # re-checks its predicate and waits again cannot miss the next change.
        self._pulse.set()
        self._pulse = asyncio.Event()

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._pulse.wait()

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the bus and start connecting; returns at once. Idempotent."""
        if self._closed is not None:
            raise RuntimeError("the bridge is closed")
        if self._task is not None:
            return
        self._sub = self._bus.subscribe(SUBSCRIBER, maxsize=self._subscriber_queue)
        self._task = asyncio.create_task(self._run(self._sub), name="mqtt-bridge")
        log.info("mqtt.started", url=self._url_for_logs, base=self.topics.base)

    async def aclose(self) -> None:
        """Publish what is buffered (for up to ``close_timeout`` seconds while
        connected), announce ``offline``, disconnect and stop. Idempotent.

        Events still buffered after that are lost and logged. Cancelling ``aclose``
        still stops the bridge's tasks before the cancellation propagates.
        """
        if self._closed is not None:
            await asyncio.shield(self._closed)
            return
        self._closed = asyncio.get_running_loop().create_future()
        try:
            await self._close()
        finally:
            self._closed.set_result(None)

    async def _close(self) -> None:
        task, sub = self._task, self._sub
        if task is None or sub is None:
            return
        self._closing = True
        sub.close()
        try:
            if self._client is not None and not task.done():
                # What is still buffered after the timeout is logged below.
                with contextlib.suppress(TimeoutError):
                    await self.drain(timeout=self._close_timeout)
                await self._announce_offline()
        finally:
            if self._buffer:
                log.warning("mqtt.closed_with_unpublished", count=len(self._buffer))
            error = await stop(task)
        log.info("mqtt.stopped", published=self.published, dropped=self.dropped)
        if error is not None:
            raise error

    async def _announce_offline(self) -> None:
        client = self._client
        if client is None:
            return
        payload = status_payload("offline", self._site, _utcnow())
        try:
            async with asyncio.timeout(self._connection.timeout):
                await client.publish(
                    self.topics.status, payload, qos=1, retain=True, timeout=math.inf
                )
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.warning("mqtt.offline_not_announced", error=str(exc))

    async def __aenter__(self) -> MqttBridge[P]:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _run(self, sub: Subscription) -> None:
        """Supervise the collector and the connection loop: restart both, with
        backoff, whenever either ends on its own (an exception, or a cancellation
        that did not come from :meth:`aclose`). The subscription and the buffer
        outlive a restart, so nothing queued is lost by one."""

        def closed(tasks: Mapping[str, asyncio.Task[None]]) -> bool:
            # aclose closed the subscription: the connection goes on publishing
            # the buffer until aclose cancels the bridge.
            collect = tasks["mqtt-collect"]
            return (
                self._closing
                and collect.done()
                and not collect.cancelled()
                and collect.exception() is None
            )

        try:
            await self._connection.supervise(
                lambda: {
                    "mqtt-collect": self._collect(sub),
                    "mqtt-connection": self._connection.run(),
                },
                finished=closed,
                on_restart=lambda: self._set_health(BridgeHealth.RESTARTING),
            )
        finally:
            sub.close()
            if not self._closing:
                # Only a bug in this supervisor itself gets here: say so loudly, the
                # daemon's watchdog stops vouching for a bridge that is gone.
                self._set_health(BridgeHealth.STOPPED)

    # --- bus -> buffer -------------------------------------------------------------

    async def _collect(self, sub: Subscription) -> None:
        """Move envelopes from the bus into the buffer, dropping the oldest when full.

        Runs whether or not the broker is reachable, so the bus subscription (sized
        for a consumer that keeps up) never overflows during an outage: the buffer
        is the one place that decides what is lost.
        """
        async for envelope in sub:
            try:
                outgoing = self._prepare(envelope)
            except CodecError as exc:
                log.error("mqtt.unencodable", type=envelope.type, seq=envelope.seq, error=str(exc))
                continue
            if len(self._buffer) >= self._buffer_size:
                self._buffer.popleft()
                # The publisher may be waiting on the dropped head's acknowledgement;
                # it compares identities before popping, see _publish_loop.
                self._head_sent = 0
                self.dropped += 1
                if self._drops_unreported == 0:
                    log.warning("mqtt.buffer_full", size=self._buffer_size)
                self._drops_unreported += 1
            self._buffer.append(outgoing)
            self._changed()
        self._changed()

    def _prepare(self, envelope: Envelope) -> _Outgoing:
        payload = encode(envelope)
        messages = [(self.topics.event(envelope.type), payload, False)]
        event = envelope.event
        if isinstance(event, AgentStateChanged):
            messages.append((self.topics.agent_state(event.agent), payload, True))
        return _Outgoing(seq=envelope.seq, type=envelope.type, messages=tuple(messages))

    # --- connection ------------------------------------------------------------------

    def _new_client(self) -> aiomqtt.Client:
        # A fresh client for every connection: paho keeps unacknowledged QoS 1
        # messages of a dead connection and would send them again on reconnect,
        # behind our back and out of our buffer's order.
        return aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            username=self._broker.username,
            # Revealed here only, for the CONNECT packet.
            password=self._password.reveal() if self._password is not None else None,
            # Unique per connection: two daemons misconfigured with one site id would
            # otherwise take each other's session over forever.
            identifier=f"switchboard-{self._site}-{uuid.uuid4().hex[:12]}",
            # A clean session on purpose: a persistent one would replay commands
            # queued while the daemon was down, long after their sender gave up.
            clean_session=True,
            keepalive=self._keepalive,
            timeout=self._connection.timeout,
            tls_context=self._broker.tls,
            will=aiomqtt.Will(
                self.topics.status,
                status_payload("offline", self._site, _utcnow()),
                qos=1,
                retain=True,
            ),
        )

    async def _serve_connection(self, client: aiomqtt.Client) -> None:
        """Serve one connected client until the connection fails (raises) or the
        bridge is cancelled: subscribe to commands, announce ``online``, then
        publish the buffer and read commands."""
        try:
            async with asyncio.timeout(self._connection.timeout):
                await client.subscribe(self.topics.commands, qos=1, timeout=math.inf)
                await client.publish(
                    self.topics.status,
                    status_payload("online", self._site, _utcnow()),
                    qos=1,
                    retain=True,
                    timeout=math.inf,
                )
            self._connection.succeeded()
            self._client = client
            self._set_health(BridgeHealth.CONNECTED)
            self._changed()
            log.info("mqtt.connected", url=self._url_for_logs, buffered=len(self._buffer))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._publish_loop(client), name="mqtt-publish")
                tg.create_task(self._read_commands(client, tg), name="mqtt-commands")
        finally:
            self._client = None
            if self._health is BridgeHealth.CONNECTED:
                self._set_health(BridgeHealth.DISCONNECTED)
            self._changed()

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        while True:
            # Only with room in the buffer: the notice goes through it, and must not
            # push out one more event.
            if (
                self._drops_unreported
                and not self._closing
                and len(self._buffer) < self._buffer_size
            ):
                count, self._drops_unreported = self._drops_unreported, 0
                log.warning("mqtt.dropped", count=count, buffer_size=self._buffer_size)
                # Through the bus, so the notice has its place in the sequence and
                # the other consumers (the supervisors' feed) learn of it too.
                self._bus.publish(EventsDropped(subscriber=SUBSCRIBER, count=count))
            await self._wait_until(
                lambda: bool(self._buffer) or (self._drops_unreported > 0 and not self._closing),
                None,
            )
            if not self._buffer:
                continue
            head = self._buffer[0]
            while self._head_sent < len(head.messages):
                topic, payload, retain = head.messages[self._head_sent]
                async with asyncio.timeout(self._connection.timeout):
                    await client.publish(topic, payload, qos=1, retain=retain, timeout=math.inf)
                if not self._buffer or self._buffer[0] is not head:
                    break  # dropped by _collect while in flight; the new head starts at 0
                self._head_sent += 1
            else:
                self._buffer.popleft()
                self._head_sent = 0
                self.published += 1
                self._changed()

    # --- commands ----------------------------------------------------------------------

    async def _read_commands(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        # Bounds the commands in flight; beyond it, reading waits (and the broker
        # queues), rather than starting an unbounded number of tasks.
        slots = asyncio.Semaphore(self._max_commands)
        async for message in client.messages:
            if message.topic.value != self.topics.commands:
                continue
            payload = message.payload
            data = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
            await slots.acquire()
            tg.create_task(self._serve_command(client, bytes(data), slots), name="mqtt-command")
        # The iterator ends only by raising on a disconnection; be explicit anyway.
        raise aiomqtt.MqttError("message stream ended")

    async def _serve_command(
        self, client: aiomqtt.Client, payload: bytes, slots: asyncio.Semaphore
    ) -> None:
        try:
            topic, reply = await self._run_command(payload)
            if topic is None:
                return
            async with asyncio.timeout(self._connection.timeout):
                await client.publish(topic, reply, qos=1, timeout=math.inf)
        except (aiomqtt.MqttError, TimeoutError):
            # The connection is failing: let it end, the connection loop reconnects.
            raise
        except Exception:
            # One message's failure (a reply paho refuses to send, say) must not end
            # the connection's task group, and with it every other command.
            log.exception("mqtt.command_reply_failed")
        finally:
            slots.release()

    async def _principal(self, command: Command, bound: Any) -> P | None:
        """Who sends ``command``: the owner of its token, or the user a gateway
        vouches for in its assertion; ``None`` (logged) if neither holds."""
        if command.token is not None:
            principal = await self._authenticate(command.token)
            if principal is None:
                bound.warning("mqtt.command_refused", code="unauthorized", credential="token")
            return principal
        assert command.assertion is not None
        if self._gateway_secret is None or self._authenticate_user is None:
            bound.warning("mqtt.command_refused", code="unauthorized", reason="no gateway_secret")
            return None
        now = time.time()
        try:
            user_id, expires = verify_assertion(
                self._gateway_secret.reveal().encode(),
                command.assertion,
                site=self._site,
                command_id=command.id,
                now=now,
            )
        except BadAssertion as exc:
            bound.warning("mqtt.command_refused", code="unauthorized", reason=str(exc))
            return None
        # One assertion, one run: the same message published again (by anyone who
        # could read it on the broker) is refused while the assertion is valid.
        # Forget the expired from the oldest on, without copying the whole memory at
        # every command.
        seen = self._assertions_seen
        while seen:
            oldest = next(iter(seen))
            if seen[oldest] >= now:
                break
            del seen[oldest]
        if command.id in seen:
            bound.warning("mqtt.command_refused", code="unauthorized", reason="replayed")
            return None
        seen[command.id] = expires
        principal = await self._authenticate_user(user_id)
        if principal is None:
            bound.warning("mqtt.command_refused", code="unauthorized", reason="unknown user")
        return principal

    async def _run_command(self, payload: bytes) -> tuple[str | None, bytes]:
        """The reply topic (None: nowhere to answer) and the reply."""
        try:
            command = parse_command(payload, self.topics)
        except BadCommand as exc:
            log.warning("mqtt.command_refused", id=exc.id, code=exc.code, reason=exc.message)
            return exc.reply_to, error_reply(exc.id, exc.code, exc.message)
        bound = log.bind(id=command.id, command=command.name)
        deadline = asyncio.timeout(self._command_timeout)
        try:
            async with deadline:
                principal = await self._principal(command, bound)
                if principal is None:
                    return command.reply_to, error_reply(
                        command.id,
                        "unauthorized",
                        "invalid or revoked token"
                        if command.token is not None
                        else "invalid assertion, or unknown or disabled user",
                    )
                result = await self._handler(principal, command.name, command.args)
            reply = result_reply(command.id, result)
        except CommandError as exc:
            if exc.code == "internal":
                # Its text may be an exception's or a driver's: for the log only.
                bound.error("mqtt.command_failed", code=exc.code, reason=exc.message)
                return command.reply_to, error_reply(command.id, "internal", "internal error")
            bound.info("mqtt.command_failed", code=exc.code)
            return command.reply_to, error_reply(command.id, exc.code, exc.message, exc.details)
        except TimeoutError:
            if deadline.expired():
                bound.warning("mqtt.command_timeout", seconds=self._command_timeout)
                return command.reply_to, error_reply(command.id, "timeout", "command timed out")
            bound.exception("mqtt.command_crashed")
            return command.reply_to, error_reply(command.id, "internal", "internal error")
        except Exception:
            # The boundary of one remote request: whatever the handler did wrong is
            # answered and logged, and the bridge goes on serving the others.
            bound.exception("mqtt.command_crashed")
            return command.reply_to, error_reply(command.id, "internal", "internal error")
        bound.info("mqtt.command_done")
        return command.reply_to, reply
