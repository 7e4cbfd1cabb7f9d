"""The daemon's single lifespan.

:class:`Daemon` builds every component in dependency order inside one
:class:`contextlib.AsyncExitStack` and unwinds it in reverse when SIGTERM or
SIGINT arrives, so each part that was opened is closed exactly once, also when
start-up fails half-way. SIGHUP re-reads the configuration and applies what
can change without dropping calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

import config as cfgmod
from bus import Bus, CallCreated, CallEnded, MqttBridge
from bus.agent_states import AgentStates
from bus.mqtt import BridgeHealth
from bus.mqtt import CommandError as MqttCommandError
from config import Config, ConfigError
from crm_store import NotFound, SchemaOutOfDate, Store, StoreError, upgrade
from dialer import Dialer
from sip.calls import CallService
from sip.control import CallControl, InboundLegs
from sip.exceptions import PoolConfigError, WorkerStartError
from sip.inbound import InboundService
from sip.pool import SipPool
from sip.recordings import RecordingRetention
from web._services import CommandRunner, Services
from web.app import create_app
from web.server import HttpServer
from ws_gateway import (
    CommandHandler,
    Gateway,
    GatewaySettings,
    Principal,
    principal_from_user,
    store_authenticator,
    store_session_check,
)
from ws_gateway import exceptions as gw
from ws_gateway.exceptions import CommandError as GatewayCommandError
from ws_gateway.protocol import command_args
from ws_gateway.rights import CallDirectory, authorize

from .commands import CommandRouter
from .logs import configure_logging, set_level
from .reconcile import CallReconciler
from .reminders import ReminderService
from .sdnotify import Notifier

__all__ = [
    "NOT_OVER_MQTT",
    "RELOADABLE",
    "STATUS_MQTT_DISCONNECTED",
    "STATUS_MQTT_RESTARTING",
    "STATUS_MQTT_STOPPED",
    "STATUS_SERVING",
    "Daemon",
    "ReloadHook",
    "StartupError",
]

log = structlog.get_logger(__name__)

# Top-level config sections SIGHUP can apply to a running daemon. Everything
# else (PBX, lines, listeners, store) is bound to open sockets, registrations
# or connections, and changing it means a restart.
RELOADABLE = ("logging", "agents")

ReloadHook = Callable[[Config, Config], Awaitable[None]]

#: Commands refused over MQTT: their result is a secret (a new API token in
#: clear), and a reply is a message on the broker, readable by whoever may
#: subscribe to the reply topic and kept in its logs and bridges.
NOT_OVER_MQTT = frozenset({"admin.users.token"})

#: ``STATUS=`` lines sent to the service manager. A bridge that lost its broker or
#: is being restarted is *degraded*: the daemon serves calls, events are buffered,
#: and the watchdog keeps being pinged. A bridge whose supervisor is gone is
#: *unhealthy*: the pings stop, and systemd restarts the service.
STATUS_SERVING = "STATUS=serving"
STATUS_MQTT_DISCONNECTED = "STATUS=serving; degraded: MQTT broker unreachable, reconnecting"
STATUS_MQTT_RESTARTING = "STATUS=serving; degraded: MQTT bridge restarting after a fault"
STATUS_MQTT_STOPPED = "STATUS=unhealthy: MQTT bridge stopped"

_MQTT_STATUS = {
    BridgeHealth.CONNECTED: STATUS_SERVING,
    BridgeHealth.DISCONNECTED: STATUS_MQTT_DISCONNECTED,
    BridgeHealth.RESTARTING: STATUS_MQTT_RESTARTING,
    BridgeHealth.STOPPED: STATUS_MQTT_STOPPED,
}


class StartupError(Exception):
    """The daemon could not start; the message says why and what to do."""


class _Unhealthy(Exception):
    """A component the daemon cannot serve without is gone (the watchdog's view)."""


class Daemon:
    """Owns the configuration and the lifespan of every component.

    ``run()`` returns the process exit code: 0 after a clean shutdown.
    """

    def __init__(
        self, config_path: Path, config: Config, *, environ: Mapping[str, str] | None = None
    ) -> None:
        self.config_path = config_path
        self.config = config
        self._environ = environ
        self._stop = asyncio.Event()
        self._reload_hooks: list[ReloadHook] = []
        self.store: Store | None = None
        #: What the store's health adds to STATUS while it is degraded, else None.
        self._store_note: str | None = None
        self.bus: Bus | None = None
        self.pool: SipPool | None = None
        self.calls: CallService | None = None
        self.agents: AgentStates | None = None
        self.gateway: Gateway | None = None
        self.dialer: Dialer | None = None
        self.bridge: MqttBridge[Principal] | None = None
        self.reconciler: CallReconciler | None = None
        self.http: HttpServer | None = None
        self.notifier = Notifier(environ)
        self._ready = False

    def on_reload(self, hook: ReloadHook) -> None:
        """Register ``hook(old, new)`` to run after a successful reload."""
        self._reload_hooks.append(hook)

    def request_stop(self) -> None:
        """Ask the daemon to shut down; safe to call more than once."""
        self._stop.set()

    async def run(self) -> int:
        """Start everything, serve until asked to stop, then close in reverse.

        Raises :class:`StartupError` if a component cannot start; whatever was
        opened before it has been closed by then.
        """
        loop = asyncio.get_running_loop()
        reloads: asyncio.Queue[None] = asyncio.Queue()
        async with contextlib.AsyncExitStack() as stack:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
                stack.callback(loop.remove_signal_handler, sig)
            loop.add_signal_handler(signal.SIGHUP, reloads.put_nowait, None)
            stack.callback(loop.remove_signal_handler, signal.SIGHUP)
            stack.callback(self.notifier.close)

            structlog.contextvars.bind_contextvars(site=self.config.site.id)
            log.info("daemon.starting", config=str(self.config_path))
            self.store = await self._open_store(stack)
            self._prepare_directories()
            self.bus = Bus(self.config.site.id)
            stack.callback(self.bus.close)
            # The gateway and the MQTT bridge subscribe before the pool starts, so
            # they see every event from the first registration on. Commands wait
            # for the router, which needs the call service.
            handler = _LateHandler()
            # One token check for websocket and MQTT clients alike; the agents are
            # read at each check, so a reload applies to the next connections.
            self._authenticate = store_authenticator(self.store.users, lambda: self.config.agents)
            gateway = await self._start_gateway(stack, self.bus, handler)
            await self._start_mqtt(stack, self.bus, gateway, handler)
            self.pool, self.calls = await self._start_pool(stack, self.store, self.bus)
            self.agents = AgentStates(self.config, self.bus, store=self.store.presence)
            try:
                await self.agents.restore()
            except StoreError as exc:
                raise StartupError(f"store: cannot read the agents' presence: {exc}") from exc
            calls_feed = self.bus.subscribe(
                "presence", types={CallCreated.TYPE, CallEnded.TYPE}, maxsize=10_000
            )
            self.agents.publish_all()
            self.on_reload(self._apply_agents)
            self.dialer = await stack.enter_async_context(
                Dialer(self.pool, config=self.config, bus=self.bus, store=self.store)
            )
            inbound = await stack.enter_async_context(
                InboundService(
                    self.pool,
                    config=self.config,
                    bus=self.bus,
                    store=self.store,
                    presence=self.agents.presence,
                )
            )
            self.agents.presence.add_listener(inbound.poke)
            control = await stack.enter_async_context(
                CallControl(
                    self.pool,
                    config=self.config,
                    bus=self.bus,
                    directories=[self.calls, InboundLegs(inbound, self.pool)],
                )
            )
            handler.target = CommandRouter(
                config=self.config,
                store=self.store,
                calls=self.calls,
                agents=self.agents,
                dialer=self.dialer,
                control=control,
                inbound=inbound,
            )

            await self._start_http(stack, gateway, handler)

            # A missed call.ended must not leave a call on the wall or an agent busy.
            self.reconciler = CallReconciler(
                bus=self.bus,
                store=self.store,
                site=self.config.site.id,
                live=[self.calls.live_calls, inbound.live_calls, self.dialer.live_calls],
                shown=[
                    CallReconciler.for_projection(gateway.projection, self.config.site.id),
                    self.agents.outbound_calls,
                ],
                interval=self.config.sip.reconcile_interval,
            )

            # Task reminders: claimed once across daemons, shown by the widget, mailed.
            reminders = ReminderService(
                self.store,
                interval=self.config.tasks.reminder_interval,
                mail=self.config.mail,
                timezone=self.config.site.timezone,
            )

            self._ready = True
            self.notifier.notify("READY=1", self._status())
            log.info("daemon.ready")
            try:
                async with asyncio.TaskGroup() as tg:
                    watchdog = tg.create_task(
                        self.notifier.watchdog(
                            self._health,
                            failures=(StoreError, _Unhealthy),
                            event="daemon.unhealthy",
                        ),
                        name="watchdog",
                    )
                    reloader = tg.create_task(self._reloader(reloads), name="reloader")
                    presence = tg.create_task(self.agents.follow_calls(calls_feed), name="presence")
                    reconciler = tg.create_task(self.reconciler.run(), name="reconcile")
                    reminding = tg.create_task(reminders.run(), name="reminders")
                    await self._stop.wait()
                    reminding.cancel()
                    watchdog.cancel()
                    reloader.cancel()
                    presence.cancel()
                    reconciler.cancel()
            finally:
                self.notifier.notify("STOPPING=1", "STATUS=stopping")
                log.info("daemon.stopping")
        log.info("daemon.stopped")
        return 0

    async def _open_store(self, stack: contextlib.AsyncExitStack) -> Store:
        cfg = self.config.store
        url = cfg.url_with_secret()
        try:
            if cfg.auto_migrate:
                await upgrade(url)
            store = await Store.open(
                url, default_region=self.config.site.default_region, pool_size=cfg.pool_size
            )
        except StoreError as exc:
            raise StartupError(f"store: cannot open: {exc}") from exc
        stack.callback(log.debug, "component.closed", component="store")
        stack.push_async_callback(store.aclose)
        try:
            await store.check_schema()
        except SchemaOutOfDate as exc:
            raise StartupError(
                f"store: {exc}; run `switchboard db upgrade` or set store.auto_migrate = true"
            ) from exc
        # Calls still open in the store were cut off by a crash of a previous
        # run: no process is carrying them any more.
        closed = await store.calls.close_interrupted(origin=self.config.site.id)
        if closed:
            log.warning("store.closed_interrupted_calls", count=closed)
        return store

    async def _start_gateway(
        self, stack: contextlib.AsyncExitStack, bus: Bus, handler: _LateHandler
    ) -> Gateway:
        cfg = self.config.websocket
        assert self.store is not None
        gateway = Gateway(
            bus,
            authenticate=self._authenticate,
            handler=handler,
            settings=GatewaySettings.from_config(cfg),
            # Revocations made anywhere (the CLI, another daemon) close sessions.
            session_check=store_session_check(self.store.users, lambda: self.config.agents),
        )
        try:
            await stack.enter_async_context(gateway)
        except OSError as exc:
            raise StartupError(
                f"websocket: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}"
            ) from exc
        log.info("websocket.listening", host=cfg.host, port=gateway.port)
        self.gateway = gateway
        return gateway

    async def _start_mqtt(
        self,
        stack: contextlib.AsyncExitStack,
        bus: Bus,
        gateway: Gateway,
        handler: _LateHandler,
    ) -> None:
        cfg = self.config.bus
        if cfg.mqtt_url is None:
            return
        commands = command_runner(handler, gateway.projection)

        async def run(
            principal: Principal, name: str, args: Mapping[str, Any]
        ) -> Mapping[str, Any]:
            if name in NOT_OVER_MQTT:
                raise MqttCommandError(
                    "forbidden",
                    f"{name} is not available over MQTT: its result is a secret, and "
                    "replies are published on the broker; use the websocket or "
                    "`switchboard users token`",
                )
            try:
                return await commands(principal, name, args)
            except GatewayCommandError as exc:
                raise MqttCommandError(exc.code, exc.message, details=exc.details) from exc

        store = self.store
        assert store is not None

        async def user_principal(user_id: str) -> Principal | None:
            # A gateway vouches for the user; whether they are still allowed in,
            # and with which role, is read here, now, as for a token.
            try:
                user = await store.users.get(uuid.UUID(user_id))
            except (ValueError, NotFound):
                return None
            return principal_from_user(user, self.config.agents) if user.active else None

        try:
            bridge = MqttBridge.from_config(
                bus,
                cfg,
                site=self.config.site.id,
                authenticate=self._authenticate,
                handler=run,
                on_health=self._bridge_health,
                authenticate_user=user_principal,
            )
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"bus: cannot load the MQTT TLS files: {exc}") from exc
        await stack.enter_async_context(bridge)
        self.bridge = bridge

    async def _start_http(
        self, stack: contextlib.AsyncExitStack, gateway: Gateway, handler: _LateHandler
    ) -> None:
        """Serve the web app on ``[http]``; entered after the components it uses, so
        it stops (requests in flight finish) before any of them is closed."""
        assert self.store is not None
        cfg = self.config.http
        rec = self.config.recording
        services = Services(
            store=self.store,
            config=lambda: self.config,
            agents=self.agents,
            commands=command_runner(handler, gateway.projection),
            calls=gateway.projection,
            ready=lambda: self._ready,
            recordings=Path(rec.directory) if rec.enabled else None,
        )
        server = HttpServer(create_app(services), host=cfg.host, port=cfg.port)
        try:
            await stack.enter_async_context(server)
        except OSError as exc:
            raise StartupError(
                f"http.port: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}; "
                "is another process using it? Set [http] port to a free one"
            ) from exc
        log.info("http.listening", url=server.url)
        self.http = server

    def _status(self) -> str:
        """The ``STATUS=`` line for the daemon as it is now."""
        status = STATUS_SERVING if self.bridge is None else _MQTT_STATUS[self.bridge.health]
        if self._store_note is None:
            return status
        if status == STATUS_SERVING:
            return f"{status}; degraded: {self._store_note}"
        return f"{status}; {self._store_note}"

    def _bridge_health(self, health: BridgeHealth) -> None:
        if health is not BridgeHealth.CONNECTED:
            log.warning("daemon.degraded", mqtt=health.value)
        if self._ready:
            self.notifier.notify(self._status())

    async def _start_pool(
        self, stack: contextlib.AsyncExitStack, store: Store, bus: Bus
    ) -> tuple[SipPool, CallService]:
        """Start the SIP pool and click-to-call on ``stack`` and return them;
        :class:`StartupError` if the pool cannot start (what did start is on ``stack``)."""
        # Unwound in reverse: calls are hung up (and their records ended)
        # before the workers shut down, and the workers before the store.
        try:
            pool = SipPool(self.config, bus=bus, store=store, log_level=self.config.logging.level)
            await stack.enter_async_context(pool)
        except PoolConfigError as exc:
            raise StartupError(f"sip: {exc}") from exc
        except WorkerStartError as exc:
            raise StartupError(
                f"sip: cannot start a SIP worker ({exc}); is sip.port_range_start free and "
                "sip.bind_address an address of this host?"
            ) from exc
        calls = await stack.enter_async_context(
            CallService(pool, config=self.config, bus=bus, store=store)
        )
        if self.config.recording.enabled:
            await stack.enter_async_context(RecordingRetention(self.config.recording))
        return pool, calls

    async def _apply_agents(self, old: Config, new: Config) -> None:
        """SIGHUP: the pool (and through it click-to-call and the dialer) and the
        agents' states follow a changed ``[[agents]]``; calls in progress keep going."""
        if old.agents == new.agents:
            return
        if self.pool is not None:
            self.pool.config = new
        if self.agents is not None:
            try:
                await self.agents.reconfigure(new)
            except StoreError as exc:
                # The states in memory follow the new agents; only what a restart
                # would give back may be stale. The daemon goes on.
                log.error("reload.agents_not_stored", error=str(exc))

    def _prepare_directories(self) -> None:
        rec = self.config.recording
        if rec.enabled:
            try:
                Path(rec.directory).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StartupError(f"recording.directory: cannot create: {exc}") from exc

    async def _health(self) -> None:
        """Raise if the daemon should no longer vouch for itself to the watchdog: the
        MQTT bridge's supervisor is gone. A bridge merely disconnected or restarting,
        and a store that is down or full, are degraded, not unhealthy: they are told
        in ``STATUS``."""
        if self.bridge is not None and self.bridge.health is BridgeHealth.STOPPED:
            raise _Unhealthy("the MQTT bridge has stopped")
        if self.store is not None:
            # A store that is down or full does not stop the watchdog: restarting
            # would not bring it back and would drop every call in progress, whose
            # record steps wait in the store's journal meanwhile. It is reported.
            health = await self.store.check_health()
            note = (
                f"store unavailable, {health.pending} call record steps queued ({health.reason})"
                if health.degraded
                else None
            )
            if note != self._store_note:
                self._store_note = note
                if note is not None:
                    log.warning("daemon.degraded", store=note)
                self.notifier.notify(self._status())

    async def _reloader(self, requests: asyncio.Queue[None]) -> None:
        while True:
            await requests.get()
            self.notifier.notify("RELOADING=1")
            try:
                await self.reload()
            finally:
                self.notifier.notify("READY=1", self._status())

    async def reload(self) -> None:
        """Re-read the configuration file and apply what can change live.

        An invalid file changes nothing: its errors are logged, and the daemon
        keeps running on the configuration it has.
        """
        try:
            new = cfgmod.load_config(self.config_path, environ=self._environ)
        except ConfigError as exc:
            for issue in exc.issues:
                log.error("reload.invalid_config", issue=issue.format())
            log.error("reload.rejected", reason="invalid configuration; nothing changed")
            return
        old = self.config
        changed = _changed_sections(old, new)
        applied = [name for name in changed if name in RELOADABLE]
        refused = [name for name in changed if name not in RELOADABLE]
        self.config = old.model_copy(update={name: getattr(new, name) for name in applied})
        if "logging" in applied:
            if new.logging.format != old.logging.format:
                configure_logging(fmt=new.logging.format, level=new.logging.level)
            else:
                set_level(new.logging.level)
        for hook in self._reload_hooks:
            await hook(old, self.config)
        log.info("reload.done", applied=applied, restart_needed=refused)
        if refused:
            log.warning(
                "reload.not_applied",
                sections=refused,
                reason="these sections need a restart: `systemctl restart switchboard`",
            )


def command_runner(handler: CommandHandler, calls: CallDirectory) -> CommandRunner:
    """``await run(principal, name, args)``: a command checked exactly as the
    websocket checks it (its schema, then the principal's rights against the
    gateway's view of the calls), then carried out by ``handler``. Used by MQTT
    and by the HTTP API; raises :class:`ws_gateway.exceptions.CommandError`."""

    async def run(principal: Principal, name: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        checked = command_args(name, args)
        allowed = authorize(principal, name, checked, calls)
        return await handler.handle(principal, name, allowed)

    return run


class _LateHandler:
    """The command handler, bound once the components it drives have started.

    The gateway starts before the SIP pool (so it misses no event); a command
    arriving in between is refused as ``unavailable``.
    """

    def __init__(self) -> None:
        self.target: CommandRouter | None = None

    async def handle(
        self, principal: Principal, name: str, args: dict[str, Any]
    ) -> Mapping[str, Any]:
        if self.target is None:
            raise gw.Unavailable("the daemon is starting")
        return await self.target.handle(principal, name, args)


def _changed_sections(old: Config, new: Config) -> list[str]:
    return [name for name in type(old).model_fields if getattr(old, name) != getattr(new, name)]
