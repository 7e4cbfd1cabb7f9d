"""``switchboard gateway``: a websocket gateway in its own process, fed from MQTT.

The scale-out path (see docs/operations.md): several daemons share one broker and
publish their events on ``{prefix}/{site}/events/{type}``; a gateway process on
any host relays every site's events from the broker into a local :class:`~bus.Bus`
(:class:`bus.feed.MqttFeed`) and serves them with a :class:`ws_gateway.Gateway`,
exactly as a gateway inside a daemon would. It has no telephony: each command a
websocket client sends is forwarded over MQTT to the daemon that owns it, for the
client's own user (the daemon checks the rights again, on the same model), and
the daemon's reply comes back as the command's result or error.

This module only wires:

- :class:`ForwardingHandler` is the gateway's command handler over the feed: it
  picks the site from the command's scope and the feed's routes;
- :class:`GatewayProcess` is the process's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import uuid
from collections.abc import Mapping
from typing import Any

import structlog

from bus import Bus
from bus.feed import FeedUnavailable, MqttFeed, Routes
from bus.mqtt import tls_context
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
    "ForwardingHandler",
    "GatewayProcess",
    "site_for",
]

log = structlog.get_logger(__name__)

#: ``STATUS=`` lines sent to the service manager as the broker comes and goes.
STATUS_RELAYING = "STATUS=relaying events from the broker"
STATUS_BROKER_LOST = "STATUS=broker unreachable; reconnecting"


def site_for(routes: Routes, name: str, args: Mapping[str, Any]) -> str | None:
    """The site that should run command ``name``, or ``None`` if unknown.

    ``args`` are as the gateway hands them to its handler: ``call_id`` is
    checked, ``agent`` filled in. Call and supervision commands go to the call's
    site, agent commands to the agent's.
    """
    scope = COMMANDS.get(name)
    if scope in (Scope.CALL, Scope.SUPERVISE):
        try:
            site = routes.site_of_call(uuid.UUID(str(args.get("call_id"))))
        except ValueError:
            return None
        return site
    if scope is Scope.AGENT:
        agent = args.get("agent")
        return routes.site_of_agent(agent) if isinstance(agent, str) else None
    return None


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
        site = site_for(self._feed.routes, name, args) or self._default_site
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
