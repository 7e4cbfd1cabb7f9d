"""The gateway's feed: every site's events from the broker into a local bus.

The scale-out path (see docs/operations.md): several daemons share one broker and
publish their events on ``{prefix}/{site}/events/{type}`` through their
:class:`~bus.mqtt.MqttBridge`. A websocket gateway on any host runs an
:class:`MqttFeed`: it subscribes to every site's events, relays each new one
unchanged into its own :class:`~bus.Bus`, learns which site owns each call and
each agent (:class:`Routes`), and sends commands to a site's daemon and waits
for the reply. It keeps its broker connection with the same
:class:`~bus._mqtt_connection.ConnectionLoop` as the bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import aiomqtt
import structlog

from ._arrivals import Arrivals, Routes
from ._bus import Bus
from ._mqtt_connection import ConnectionLoop, stop
from ._mqtt_protocol import (
    MAX_ASSERTION_SECONDS,
    BrokerAddress,
    Topics,
    sign_assertion,
)
from .codec import CodecError, decode, json_default
from .events import EventsDropped
from .exceptions import FeedUnavailable
from .safejson import BadJson, loads

__all__ = ["SUBSCRIBER", "Arrivals", "FeedUnavailable", "MqttFeed", "Routes"]

log = structlog.get_logger(__name__)

#: The subscriber name in the drop reports of events this feed missed.
SUBSCRIBER = "mqtt-gateway"

#: Larger replies from a daemon are refused unread (a search result is far smaller).
_MAX_REPLY_BYTES = 1024 * 1024


class MqttFeed:
    """Relays every site's events from the broker into ``bus``; forwards commands.

    Use ``async with`` or :meth:`start` / :meth:`aclose`. It subscribes to
    ``{prefix}/+/agents/+/state`` (the retained states arrive first and seed
    the agent states), then to ``{prefix}/+/events/#``, and relays each new
    envelope with :meth:`Bus.relay`, keeping its origin, seq and time. It never
    raises for a broker that is down: it reconnects with capped exponential
    backoff and jitter. ``on_connection(True/False)`` is called as the
    connection comes and goes.
    """

    def __init__(
        self,
        bus: Bus,
        *,
        url: str,
        topic_prefix: str = "switchboard",
        password: str | None = None,
        redacted_url: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        keepalive: int = 30,
        timeout: float = 10.0,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        on_connection: Callable[[bool], None] | None = None,
        gateway_secret: str | None = None,
        assertion_seconds: int = 30,
    ) -> None:
        broker = BrokerAddress.parse(url, tls_context=tls_context)
        if not 0 < assertion_seconds <= MAX_ASSERTION_SECONDS:
            raise ValueError(f"assertion_seconds must be 1 to {MAX_ASSERTION_SECONDS}")
        self._gateway_secret = gateway_secret.encode() if gateway_secret is not None else None
        self._assertion_seconds = assertion_seconds
        self._bus = bus
        self._broker = broker
        self._password = password
        self._url_for_logs = redacted_url or url
        self.prefix = topic_prefix
        self._keepalive = keepalive
        self._on_connection = on_connection
        # Raises ValueError unless 0 < reconnect_min <= reconnect_max.
        self._connection = ConnectionLoop(
            name="feed",
            url_for_logs=self._url_for_logs,
            new_client=self._new_client,
            serve=self._serve_connection,
            timeout=timeout,
            reconnect_min=reconnect_min,
            reconnect_max=reconnect_max,
        )
        self.arrivals = Arrivals()
        self.routes = Routes()
        self._client: aiomqtt.Client | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Envelopes relayed, and envelopes from the broker that could not be read.
        self.relayed = 0
        self.unreadable = 0

    @property
    def restarts(self) -> int:
        """Times the connection loop was restarted after it ended on its own."""
        return self._connection.restarts

    @property
    def connected(self) -> bool:
        """Connected and subscribed to the events."""
        return self._client is not None

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting; returns at once. Idempotent."""
        if self._closed:
            raise RuntimeError("the feed is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name="mqtt-feed")
            log.info("feed.started", url=self._url_for_logs, prefix=self.prefix)

    @property
    def alive(self) -> bool:
        """False once the feed's supervisor is gone without :meth:`aclose`: nothing
        will relay again short of a restart of the process."""
        return self._closed or (self._task is not None and not self._task.done())

    async def _supervise(self) -> None:
        """Run the connection loop; restart it, with backoff, whenever it ends on
        its own (an unexpected exception, or a cancellation not from aclose)."""
        await self._connection.supervise(lambda: {"mqtt-feed-connection": self._connection.run()})

    async def aclose(self) -> None:
        """Disconnect and stop; commands waiting for a reply fail. Idempotent.

        Cancelling it still stops the feed's task before the cancellation
        propagates.
        """
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            return
        error = await stop(task)
        log.info("feed.stopped", relayed=self.relayed, unreadable=self.unreadable)
        if error is not None:
            raise error

    async def __aenter__(self) -> MqttFeed:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- connection ----------------------------------------------------------------

    def _new_client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            username=self._broker.username,
            password=self._password,
            # Unique per connection, so that gateways never take over each
            # other's session. A clean session: events published while this
            # gateway was away are not kept for it (they are counted as missed).
            identifier=f"switchboard-gateway-{uuid.uuid4().hex[:12]}",
            clean_session=True,
            keepalive=self._keepalive,
            timeout=self._connection.timeout,
            tls_context=self._broker.tls,
        )

    async def _serve_connection(self, client: aiomqtt.Client) -> None:
        """Serve one connected client until the connection fails (raises) or the
        feed is cancelled: subscribe, then relay what arrives."""
        try:
            async with asyncio.timeout(self._connection.timeout):
                # States first: their retained copies arrive before any live event.
                await client.subscribe(f"{self.prefix}/+/agents/+/state", qos=1, timeout=math.inf)
                await client.subscribe(f"{self.prefix}/+/events/#", qos=1, timeout=math.inf)
            self._connection.succeeded()
            self._client = client
            log.info("feed.connected", url=self._url_for_logs)
            if self._on_connection is not None:
                self._on_connection(True)
            async for message in client.messages:
                self._received(message)
            # The iterator ends only by raising on a disconnection; be explicit anyway.
            raise aiomqtt.MqttError("message stream ended")
        finally:
            was_connected = self._client is client
            self._client = None
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(FeedUnavailable("lost the broker connection"))
            if was_connected and not self._closed and self._on_connection is not None:
                self._on_connection(False)

    def _received(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        if not topic.startswith(self.prefix + "/"):
            return
        levels = topic[len(self.prefix) + 1 :].split("/")
        if len(levels) < 3:
            return
        payload = message.payload
        data = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
        try:
            if levels[1] == "replies":
                self._reply(levels[2], bytes(data))
            elif data and levels[1] in ("events", "agents"):
                # An empty retained message is a cleared state, not an envelope.
                self._relay(topic, levels[0], bytes(data), retained=message.retain)
        except Exception:
            # The boundary of one message from the broker: whatever went wrong with
            # it is logged, and the feed goes on with the next one.
            self.unreadable += 1
            log.exception("feed.message_failed", topic=topic)

    def _relay(self, topic: str, site: str, payload: bytes, *, retained: bool) -> None:
        try:
            envelope = decode(payload)
        except CodecError as exc:
            self.unreadable += 1
            log.warning("feed.unreadable", topic=topic, error=str(exc))
            return
        if envelope.origin != site:
            # Anyone allowed to publish under the prefix could otherwise speak for
            # another daemon: steer its commands here, or end its calls on screens.
            self.unreadable += 1
            log.warning("feed.forged_origin", topic=topic, origin=envelope.origin)
            return
        new, missed = self.arrivals.admit(envelope, retained=retained)
        if missed:
            log.warning("feed.missed", origin=envelope.origin, count=missed, seq=envelope.seq)
            # Through the bus, so the supervisors' feed learns of it in sequence.
            self._bus.publish(EventsDropped(subscriber=SUBSCRIBER, count=missed))
        if not new:
            return
        self.routes.observe(envelope)
        self._bus.relay(envelope)
        self.relayed += 1

    def _reply(self, command_id: str, payload: bytes) -> None:
        future = self._pending.get(command_id)
        if future is None or future.done():
            return
        try:
            reply = loads(payload, max_bytes=_MAX_REPLY_BYTES)
        except BadJson as exc:
            log.warning("feed.unreadable_reply", id=command_id, error=str(exc))
            return
        if isinstance(reply, dict) and reply.get("id") == command_id:
            future.set_result(reply)

    # --- commands --------------------------------------------------------------------

    async def request(
        self, site: str, *, user_id: str, name: str, args: Mapping[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Send a command of user ``user_id`` to ``site``'s daemon and return its
        reply message.

        The command carries no user token: the gateway vouches for the user with
        an assertion signed with ``gateway_secret``, valid for this one command
        of this one site for ``assertion_seconds``. Subscribes to the reply topic
        before publishing the command. Raises :class:`FeedUnavailable` when not
        connected (or the connection is lost meanwhile) or without a gateway
        secret, ``TimeoutError`` when no reply came within ``timeout``.
        Cancelling it stops waiting; the daemon may still run the command.
        """
        client = self._client
        if self._gateway_secret is None:
            raise FeedUnavailable("no gateway secret to sign commands with")
        if client is None:
            raise FeedUnavailable("not connected to the broker")
        command_id = uuid.uuid4().hex
        topics = Topics(prefix=self.prefix, site=site)
        reply_to = topics.reply(command_id)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        assertion = sign_assertion(
            self._gateway_secret,
            user_id=user_id,
            site=site,
            command_id=command_id,
            expires=int(time.time()) + self._assertion_seconds,
        )
        payload = json.dumps(
            {
                "id": command_id,
                "assertion": assertion,
                "name": name,
                "args": dict(args),
                "reply_to": reply_to,
            },
            separators=(",", ":"),
            default=json_default,
        ).encode()
        log.info("feed.command_sent", site=site, command=name, id=command_id)
        try:
            async with asyncio.timeout(timeout):
                await client.subscribe(reply_to, qos=1, timeout=math.inf)
                await client.publish(topics.commands, payload, qos=1, timeout=math.inf)
                return await future
        except aiomqtt.MqttError as exc:
            # The broker's words are for the log; the client learns it is unavailable.
            log.warning("feed.command_not_sent", site=site, id=command_id, error=str(exc))
            raise FeedUnavailable("the broker refused the command") from exc
        finally:
            del self._pending[command_id]
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # retrieved: a lost connection may have set one
            if self._client is client:
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    async with asyncio.timeout(self._connection.timeout):
                        await client.unsubscribe(reply_to, timeout=math.inf)
