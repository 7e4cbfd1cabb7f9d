"""``switchboard gateway``: a websocket gateway in its own process, fed from MQTT.

The scale-out path (see docs/operations.md): several daemons share one broker and
publish their events on ``{prefix}/{site}/events/{type}``; a gateway process on
any host subscribes to every site's events, relays them unchanged into a local
:class:`~bus.Bus` and serves them with a :class:`ws_gateway.Gateway`, exactly as
a gateway inside a daemon would. It has no telephony: each command a websocket
client sends is forwarded over MQTT to the daemon that owns it, with the
client's own token (the daemon checks the rights again, on the same model), and
the daemon's reply comes back as the command's result or error.

The parts, each usable on its own:

- :class:`Arrivals` (no I/O) decides which envelopes from the broker are new:
  delivery is at least once, retained agent states repeat on every subscription;
- :class:`Routes` (no I/O) learns from the events which site owns each call and
  each agent, so that commands go where they can run;
- :class:`MqttFeed` holds the broker connection: it relays events, reconnects
  with backoff, and sends commands and waits for their replies;
- :class:`ForwardingHandler` is the gateway's command handler over the feed;
- :class:`GatewayProcess` is the process's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import ssl
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import aiomqtt
import structlog

from bus import AgentStateChanged, Bus, CodecError, Envelope, EventsDropped, decode
from bus.codec import json_default
from bus.mqtt import (
    MAX_ASSERTION_SECONDS,
    BrokerAddress,
    Topics,
    reconnect_delay,
    sign_assertion,
    tls_context,
)
from bus.safejson import BadJson, loads
from config import Config
from crm_store import SchemaOutOfDate, Store, StoreError
from ws_gateway import (
    COMMANDS,
    BadRequest,
    CommandError,
    Conflict,
    Forbidden,
    Gateway,
    GatewaySettings,
    InternalError,
    NotFound,
    Principal,
    RateLimited,
    Scope,
    Unavailable,
    store_authenticator,
    store_session_check,
)

from .daemon import StartupError
from .sdnotify import Notifier

__all__ = [
    "STATUS_BROKER_LOST",
    "STATUS_RELAYING",
    "Arrivals",
    "FeedUnavailable",
    "ForwardingHandler",
    "GatewayProcess",
    "MqttFeed",
    "Routes",
]

log = structlog.get_logger(__name__)

#: ``STATUS=`` lines sent to the service manager as the broker comes and goes.
STATUS_RELAYING = "STATUS=relaying events from the broker"
STATUS_BROKER_LOST = "STATUS=broker unreachable; reconnecting"

#: The subscriber name in the drop reports of events this gateway missed.
SUBSCRIBER = "mqtt-gateway"

#: Larger replies from a daemon are refused unread (a search result is far smaller).
_MAX_REPLY_BYTES = 1024 * 1024


# --- what is new, who owns what ------------------------------------------------------


@dataclass(slots=True)
class Arrivals:
    """Which envelopes from the broker to relay, and which events were missed.

    MQTT delivery is at least once, an agent state comes twice (its event and
    its retained copy) and the retained states come again on every
    subscription: an envelope is new unless its ``(origin, seq, at)`` was seen
    (``at`` tells a restarted daemon's ``seq`` 1 from the previous run's). A
    retained agent state older than what is known of that agent is stale.
    Among live events, a jump in one origin's ``seq`` is events this gateway
    missed (its own broker outage: its session is clean).
    """

    memory: int = 10000
    _seen: OrderedDict[tuple[str, int, datetime], None] = field(default_factory=OrderedDict)
    _last: OrderedDict[str, tuple[int, datetime]] = field(default_factory=OrderedDict)
    _states: OrderedDict[tuple[str, str], datetime] = field(default_factory=OrderedDict)

    def admit(self, envelope: Envelope, *, retained: bool) -> tuple[bool, int]:
        """``(relay it, events missed just before it)``."""
        origin, seq, at = envelope.origin, envelope.seq, envelope.at
        key = (origin, seq, at)
        if key in self._seen:
            return False, 0
        event = envelope.event
        if isinstance(event, AgentStateChanged):
            known = self._states.get((origin, event.agent))
            if known is not None and at < known:
                return False, 0
            _remember(self._states, (origin, event.agent), at, self.memory)
        _remember(self._seen, key, None, self.memory)
        if retained:
            return True, 0
        missed = 0
        last = self._last.get(origin)
        if last is None or at >= last[1]:
            if last is not None and seq > last[0] + 1:
                missed = seq - last[0] - 1
            _remember(self._last, origin, (seq, at), self.memory)
        return True, missed


K = TypeVar("K")
V = TypeVar("V")


def _remember(memory: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    """``memory[key] = value``, keeping at most ``limit`` of the most recent keys.

    Every map the feed fills from the broker is bounded this way: agent names,
    origins and call ids come from messages, and anyone who may publish under the
    prefix could otherwise grow them without end.
    """
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > limit:
        memory.popitem(last=False)


@dataclass(slots=True)
class Routes:
    """Which site (daemon) owns each call and each agent, learnt from events.

    A call belongs to the origin of its events; an agent to the origin of the
    last event naming it (its state, its calls). Ended calls are remembered,
    bounded by ``memory``: notes and dispositions come after the hang-up.
    """

    memory: int = 10000
    _calls: OrderedDict[uuid.UUID, str] = field(default_factory=OrderedDict)
    _agents: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def observe(self, envelope: Envelope) -> None:
        event = envelope.event
        call_id = getattr(event, "call_id", None)
        if isinstance(call_id, uuid.UUID):
            _remember(self._calls, call_id, envelope.origin, self.memory)
        agent = getattr(event, "agent", None)
        if isinstance(agent, str):
            _remember(self._agents, agent, envelope.origin, self.memory)

    def site_of_call(self, call_id: uuid.UUID) -> str | None:
        return self._calls.get(call_id)

    def site_of_agent(self, agent: str) -> str | None:
        return self._agents.get(agent)

    def site_for(self, name: str, args: Mapping[str, Any]) -> str | None:
        """The site that should run command ``name``, or ``None`` if unknown.

        ``args`` are as the gateway hands them to its handler: ``call_id`` is
        checked, ``agent`` filled in.
        """
        scope = COMMANDS.get(name)
        if scope in (Scope.CALL, Scope.SUPERVISE):
            try:
                return self.site_of_call(uuid.UUID(str(args.get("call_id"))))
            except ValueError:
                return None
        if scope is Scope.AGENT:
            agent = args.get("agent")
            return self.site_of_agent(agent) if isinstance(agent, str) else None
        return None


# --- the broker connection -----------------------------------------------------------


class FeedUnavailable(Exception):
    """The feed is not connected to the broker (or lost it while waiting)."""


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
        if not 0 < reconnect_min <= reconnect_max:
            raise ValueError("need 0 < reconnect_min <= reconnect_max")
        self._bus = bus
        self._broker = broker
        self._password = password
        self._url_for_logs = redacted_url or url
        self.prefix = topic_prefix
        self._keepalive = keepalive
        self._timeout = timeout
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._on_connection = on_connection
        self.arrivals = Arrivals()
        self.routes = Routes()
        self._client: aiomqtt.Client | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failures = 0
        #: Envelopes relayed, and envelopes from the broker that could not be read.
        self.relayed = 0
        self.unreadable = 0
        #: Times the connection loop was restarted after it ended on its own.
        self.restarts = 0

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
        crashes = 0
        while True:
            inner = asyncio.create_task(self._connection_loop(), name="mqtt-feed-connection")
            try:
                await asyncio.wait({inner})
            finally:
                inner.cancel()
                await asyncio.wait({inner})
            crashes += 1
            self.restarts += 1
            error = None if inner.cancelled() else inner.exception()
            delay = reconnect_delay(crashes, self._reconnect_min, self._reconnect_max)
            log.error(
                "feed.crashed",
                error="cancelled" if inner.cancelled() else repr(error) if error else "returned",
                exc_info=error,
                restart_in=round(delay, 2),
                restarts=self.restarts,
            )
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        """Disconnect and stop; commands waiting for a reply fail. Idempotent.

        Cancelling it still stops the feed's task before the cancellation
        propagates.
        """
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # asyncio.wait never raises the task's own CancelledError, so only a
        # cancellation of aclose itself propagates from here.
        await asyncio.wait([task])
        log.info("feed.stopped", relayed=self.relayed, unreadable=self.unreadable)
        if not task.cancelled() and (exc := task.exception()) is not None:
            raise exc

    async def __aenter__(self) -> MqttFeed:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- connection ----------------------------------------------------------------

    async def _connection_loop(self) -> None:
        while True:
            error: BaseException | None = None
            try:
                await self._connect_and_serve()
            except* (aiomqtt.MqttError, TimeoutError, OSError) as group:
                error = group.exceptions[0]
            self._failures += 1
            delay = reconnect_delay(self._failures, self._reconnect_min, self._reconnect_max)
            log.warning(
                "feed.disconnected",
                url=self._url_for_logs,
                error=str(error) or type(error).__name__,
                retry_in=round(delay, 2),
            )
            await asyncio.sleep(delay)

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
            timeout=self._timeout,
            tls_context=self._broker.tls,
        )

    async def _connect_and_serve(self) -> None:
        """One connection, until it fails (raises) or the feed is cancelled."""
        client = self._new_client()
        # aiomqtt bounds the connect and the CONNACK itself; this is a backstop.
        async with asyncio.timeout(self._timeout * 2 + 5):
            await client.__aenter__()
        try:
            async with asyncio.timeout(self._timeout):
                # States first: their retained copies arrive before any live event.
                await client.subscribe(f"{self.prefix}/+/agents/+/state", qos=1, timeout=math.inf)
                await client.subscribe(f"{self.prefix}/+/events/#", qos=1, timeout=math.inf)
            self._failures = 0
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
            # Bounded: a broker that vanished does not answer DISCONNECT.
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(self._timeout):
                    await client.__aexit__(None, None, None)

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
                    async with asyncio.timeout(self._timeout):
                        await client.unsubscribe(reply_to, timeout=math.inf)


# --- the command handler -------------------------------------------------------------

_ERRORS: dict[str, type[CommandError]] = {
    cls.code: cls
    for cls in (BadRequest, Forbidden, NotFound, Conflict, Unavailable, RateLimited, InternalError)
}


class ForwardingHandler:
    """The gateway's :class:`~ws_gateway.CommandHandler`: forwards to the owning daemon.

    The site is the call's origin for call and supervision commands, the site
    that last published about the agent for agent and dialer commands, else
    ``default_site``. Replies map back to the gateway's errors with the same
    codes; a daemon that does not answer within ``timeout`` is ``unavailable``.
    """

    def __init__(self, feed: MqttFeed, *, default_site: str | None, timeout: float) -> None:
        self._feed = feed
        self._default_site = default_site
        self._timeout = timeout

    async def handle(
        self, principal: Principal, name: str, args: dict[str, Any]
    ) -> Mapping[str, Any]:
        site = self._feed.routes.site_for(name, args) or self._default_site
        if site is None:
            raise Unavailable("no daemon is known to handle this command")
        try:
            reply = await self._feed.request(
                site,
                user_id=str(principal.user_id),
                name=name,
                args=args,
                timeout=self._timeout,
            )
        except TimeoutError:
            raise Unavailable(
                f"site {site} did not answer in time", details={"site": site}
            ) from None
        except FeedUnavailable as exc:
            raise Unavailable(str(exc), details={"site": site}) from None
        return _result(site, name, reply)


def _result(site: str, name: str, reply: Mapping[str, Any]) -> Mapping[str, Any]:
    if reply.get("type") == "result":
        result = reply.get("result")
        if result is None:
            return {}
        if isinstance(result, dict):
            return result
        log.error("gateway.odd_result", site=site, command=name, kind=type(result).__name__)
        raise InternalError("the daemon's result is not an object")
    error = reply.get("error")
    if reply.get("type") != "error" or not isinstance(error, dict):
        log.error("gateway.odd_reply", site=site, command=name)
        raise InternalError("the daemon's reply is not readable")
    code, message = error.get("code"), str(error.get("message", ""))
    details = error.get("details")
    details = details if isinstance(details, dict) else None
    cls = _ERRORS.get(str(code))
    if cls is not None:
        raise cls(message, details=details)
    if code == "unauthorized":
        # The gateway accepted the user a moment ago: they were disabled since, the
        # daemon reads another store or has another gateway_secret. Either way,
        # nothing was done.
        raise Forbidden("the daemon refused the user", details={"site": site})
    if code == "timeout":
        raise Unavailable(message or "the command timed out", details={"site": site})
    log.error("gateway.unknown_error_code", site=site, command=name, code=code)
    raise InternalError("the daemon answered with an unknown error")


# --- the process ---------------------------------------------------------------------


class GatewayProcess:
    """The lifespan of ``switchboard gateway``; ``run()`` returns the exit code.

    Opens the store (for tokens), a local bus, the websocket gateway on it and
    the MQTT feed relaying into it, in one :class:`contextlib.AsyncExitStack`;
    SIGTERM or SIGINT unwinds it in reverse: clients are closed (1001), then the
    broker connection, the bus and the store.
    """

    def __init__(
        self,
        config: Config,
        *,
        mqtt_url: str | None = None,
        default_site: str | None = None,
        command_timeout: float = 10.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        bus_cfg = config.bus
        url = mqtt_url or bus_cfg.mqtt_url
        if url is None:
            raise ValueError("no broker: set bus.mqtt_url or give --mqtt URL")
        if command_timeout <= 0:
            raise ValueError("the command timeout must be positive")
        self.config = config
        self._default_site = default_site or config.site.id
        self._command_timeout = command_timeout
        self._stop = asyncio.Event()
        self.notifier = Notifier(environ)
        self.bus = Bus(f"{config.site.id}-gateway")
        if bus_cfg.gateway_secret is None:
            raise ValueError(
                "no gateway secret: set bus.gateway_secret, gateway_secret_file or "
                "gateway_secret_env, the same as the daemons'"
            )
        password = bus_cfg.mqtt_password.reveal() if bus_cfg.mqtt_password is not None else None
        try:
            tls = tls_context(bus_cfg, url=url)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"bus: cannot load the MQTT TLS files: {exc}") from exc
        # Raises ValueError for a URL that is not mqtt:// or mqtts://.
        self.feed = MqttFeed(
            self.bus,
            url=url,
            topic_prefix=bus_cfg.topic_prefix,
            password=password,
            redacted_url=url if mqtt_url else bus_cfg.redacted_mqtt_url(),
            tls_context=tls,
            on_connection=self._broker_changed,
            gateway_secret=bus_cfg.gateway_secret.reveal(),
        )
        self.gateway: Gateway | None = None

    def request_stop(self) -> None:
        """Ask the process to shut down; safe to call more than once."""
        self._stop.set()

    def _broker_changed(self, connected: bool) -> None:
        self.notifier.notify(STATUS_RELAYING if connected else STATUS_BROKER_LOST)

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, close in reverse; 0 after a clean stop.

        Raises :class:`~switchboard.daemon.StartupError` if the store or the
        websocket address cannot be had; whatever was opened is closed by then.
        """
        loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as stack:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
                stack.callback(loop.remove_signal_handler, sig)
            stack.callback(self.notifier.close)
            structlog.contextvars.bind_contextvars(gateway=self.config.site.id)
            log.info("gateway.starting", default_site=self._default_site)

            store = await self._open_store(stack)
            stack.callback(self.bus.close)
            # Registered before the gateway, so unwound after it: clients are
            # closed (and their commands cancelled) before the broker goes.
            stack.push_async_callback(self.feed.aclose)
            self.gateway = Gateway(
                self.bus,
                authenticate=store_authenticator(store.users, lambda: self.config.agents),
                session_check=store_session_check(store.users, lambda: self.config.agents),
                handler=ForwardingHandler(
                    self.feed, default_site=self._default_site, timeout=self._command_timeout
                ),
                settings=GatewaySettings.from_config(
                    self.config.websocket,
                    # A backstop: the forwarder's own timeout answers first.
                    command_timeout=self._command_timeout + 1.0,
                ),
            )
            try:
                await stack.enter_async_context(self.gateway)
            except OSError as exc:
                ws = self.config.websocket
                raise StartupError(
                    f"websocket: cannot listen on {ws.host}:{ws.port}: {exc}"
                ) from exc
            # After the gateway subscribed to the bus: nothing relayed is lost.
            await self.feed.start()

            self.notifier.notify("READY=1", f"STATUS=listening on port {self.gateway.port}")
            log.info("gateway.ready", port=self.gateway.port)
            try:
                async with asyncio.TaskGroup() as tg:
                    # The store answers token checks: no store, no service.
                    async def health() -> None:
                        if not self.feed.alive:
                            raise FeedUnavailable("the MQTT feed has stopped")
                        await store.schema_revision()

                    watchdog = tg.create_task(
                        self.notifier.watchdog(
                            health,
                            failures=(StoreError, FeedUnavailable),
                            event="gateway.unhealthy",
                        ),
                        name="watchdog",
                    )
                    await self._stop.wait()
                    watchdog.cancel()
            finally:
                self.notifier.notify("STOPPING=1", "STATUS=stopping")
                log.info("gateway.stopping")
        log.info("gateway.stopped")
        return 0

    async def _open_store(self, stack: contextlib.AsyncExitStack) -> Store:
        cfg = self.config.store
        try:
            store = await Store.open(
                cfg.url_with_secret(),
                default_region=self.config.site.default_region,
                pool_size=cfg.pool_size,
            )
        except StoreError as exc:
            raise StartupError(f"store: cannot open: {exc}") from exc
        stack.push_async_callback(store.aclose)
        try:
            await store.check_schema()
        except SchemaOutOfDate as exc:
            # The daemons own the schema; a gateway never migrates it.
            raise StartupError(f"store: {exc}; run `switchboard db upgrade` first") from exc
        return store
