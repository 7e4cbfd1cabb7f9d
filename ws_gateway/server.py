"""The websocket gateway on the ``websockets`` asyncio server.

One :class:`Gateway` serves every client. It owns:

- one bus subscription, read by the *fan-out* task, which never waits on a
  client: it folds each envelope into the :class:`~ws_gateway.state.Projection`,
  numbers it in the gateway's stream, keeps it in the
  :class:`~ws_gateway.replay.ReplayBuffer`, and delivers its encoded message to
  each client allowed to see it (``ws_gateway/_delivery.py`` says how a slow
  client never holds up the others);
- per connection, a reader (commands, in order, one at a time:
  ``_commands.py``) and a sender (the client's backlog to the socket:
  ``_delivery.py``), in a task group owned by the connection handler;
- the admission of new connections (``_admission.py``) and, given a session
  check, the periodic re-check of open sessions (``_sessions.py``).

Authentication is the first message, never the URL. The ``Origin`` header is
checked during the HTTP upgrade (refused with HTTP 403 before any websocket
exists). See ``docs/protocol.md`` for the messages and close codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
from dataclasses import replace
from typing import Self

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.typing import Origin

from bus import Bus, Envelope, EventsDropped, Subscription

from . import protocol as proto
from ._admission import Admission, address_of
from ._commands import CommandHandler, CommandReader
from ._delivery import Client, close_bounded, deliver, send_loop
from ._sessions import check_sessions
from ._settings import GatewaySettings, GatewayStats, tls_context
from .auth import Authenticator, Principal, SessionCheck
from .exceptions import InvalidState
from .protocol import CloseCode, SessionState
from .replay import ReplayBuffer, StreamedEvent
from .rights import audience, can_see
from .state import Projection

__all__ = ["CommandHandler", "Gateway", "GatewaySettings", "GatewayStats", "tls_context"]

log = structlog.get_logger(__name__)

SUBSCRIBER = "ws_gateway"
"""The gateway's name on the bus (it appears in ``bus.dropped`` reports)."""

WIRE_LOGGER = "ws_gateway.wire"
"""The logger given to ``websockets``; it never logs below INFO.

At DEBUG, ``websockets`` logs every frame, shortened but readable: the
first message carries the client's token, and an ``admin.users.token``
result a new one. Secrets are never logged, so frames are not either.
"""


class _State(enum.IntEnum):
    NEW = 0
    RUNNING = 1
    CLOSING = 2
    CLOSED = 3


class Gateway:
    """The websocket server: ``async with Gateway(...)`` or ``start()``/``aclose()``.

    ``authenticate`` checks first-message tokens; ``handler`` carries out
    commands; ``session_check``, when given, re-checks the open sessions'
    tokens every ``session_check_interval`` seconds and closes (4401) those
    revoked, disabled or whose rights changed (without it, a session keeps the
    rights it opened with until it closes). ``start()`` and ``aclose()`` must
    run in the same task (the gateway's tasks live in a task group entered by
    ``start()``); ``async with`` does that.
    """

    def __init__(
        self,
        bus: Bus,
        *,
        authenticate: Authenticator,
        handler: CommandHandler,
        settings: GatewaySettings,
        session_check: SessionCheck | None = None,
    ) -> None:
        self._bus = bus
        self._session_check = session_check
        self.settings = settings
        self.stream = secrets.token_hex(8)
        self.projection = Projection()
        self._replay = ReplayBuffer(settings.replay_buffer)
        self._clients: set[Client] = set()
        self._seq = 0
        self._stats = GatewayStats()
        self._admission = Admission(settings=settings, stats=self._stats, authenticate=authenticate)
        self._commands = CommandReader(
            handler=handler, settings=settings, calls=self.projection, seq=lambda: self._seq
        )
        self._state = _State.NEW
        self._stack = contextlib.AsyncExitStack()
        self._server: Server | None = None
        self._subscription: Subscription | None = None

    # --- lifecycle ----------------------------------------------------------

    @property
    def port(self) -> int:
        """The port listened on (useful with ``port=0``)."""
        if self._server is None:
            raise InvalidState("the gateway is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def stats(self) -> GatewayStats:
        return replace(
            self._stats,
            seq=self._seq,
            connected=len(self._clients),
            authenticating=self._admission.authenticating,
        )

    async def start(self) -> None:
        """Subscribe to the bus and start listening.

        Raises :class:`InvalidState` if already started or closed, and
        ``OSError`` if the address cannot be bound (nothing is left running).
        Cancelling it leaves nothing running either.
        """
        if self._state is not _State.NEW:
            raise InvalidState(f"the gateway is {self._state.name.lower()}")
        self._state = _State.RUNNING
        s = self.settings
        try:
            self._subscription = self._bus.subscribe(SUBSCRIBER, maxsize=s.bus_queue)
            tg = await self._stack.enter_async_context(asyncio.TaskGroup())
            tg.create_task(self._fanout(self._subscription), name="ws-gateway.fanout")
            if self._session_check is not None:
                checker = tg.create_task(
                    check_sessions(
                        self._session_check,
                        clients=lambda: self._clients,
                        settings=s,
                        stats=self._stats,
                    ),
                    name="ws-gateway.sessions",
                )
                # It never ends on its own: cancelled as the stack unwinds,
                # before the task group waits for its tasks.
                self._stack.callback(checker.cancel)
            # Registered after the task group so that it unwinds first: the
            # server stops, then the subscription closes, then the fan-out ends.
            self._stack.callback(self._subscription.close)
            origins: list[Origin | None] = [Origin(o) for o in s.allowed_origins]
            if s.allow_missing_origin:
                origins.append(None)
            wire = logging.getLogger(WIRE_LOGGER)
            wire.setLevel(max(wire.getEffectiveLevel(), logging.INFO))
            self._server = await serve(
                self._connection,
                s.host,
                s.port,
                logger=wire,
                write_limit=s.client_buffer,
                origins=origins,
                ssl=s.ssl,
                max_size=s.max_message_bytes,
                ping_interval=s.ping_interval,
                ping_timeout=s.ping_interval,
                close_timeout=s.close_timeout,
                open_timeout=s.auth_timeout,
                compression="deflate" if s.compression else None,
            )
            self._stack.push_async_callback(self._stop_server, self._server)
        except BaseException:
            await self.aclose()
            raise
        log.info(
            "ws.listening",
            host=s.host,
            port=self.port,
            tls=s.ssl is not None,
            stream=self.stream,
        )

    async def aclose(self) -> None:
        """Close every connection (1001), stop listening, stop the fan-out.

        Idempotent. Waits for connection handlers to finish (each bounded by
        ``close_timeout``). If cancelled, the rest of the teardown still runs
        as the cancellation unwinds the task group.
        """
        if self._state in (_State.CLOSING, _State.CLOSED):
            return
        self._state = _State.CLOSING
        try:
            await self._stack.aclose()
        finally:
            self._state = _State.CLOSED
            log.info("ws.closed")

    async def _stop_server(self, server: Server) -> None:
        # Our handlers close their clients with a bounded close; the server's
        # own close() of a connection has no bound while its write buffer is
        # full, so it is left only the connections still authenticating.
        for client in list(self._clients):
            client.request_close(CloseCode.GOING_AWAY, "server shutting down")
        server.close(close_connections=True)
        await server.wait_closed()

    async def _close(self, ws: ServerConnection, code: int, reason: str) -> None:
        """Close ``ws`` within ``close_timeout``, else drop the TCP connection."""
        await close_bounded(ws, code, reason, timeout=self.settings.close_timeout)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- fan-out ------------------------------------------------------------

    async def _fanout(self, subscription: Subscription) -> None:
        async for envelope in subscription:
            try:
                self._dispatch(envelope)
            except Exception:
                # One event the gateway cannot encode must not stop the live
                # feed of every client: it is logged and skipped (the
                # projection applies each event whole or not at all).
                log.exception("ws.dispatch_failed", event_type=envelope.type)

    def _dispatch(self, envelope: Envelope) -> None:
        event = envelope.event
        if isinstance(event, EventsDropped) and event.subscriber == SUBSCRIBER:
            log.error("ws.events_lost", count=event.count)
        self.projection.apply(envelope)
        who = audience(event, self.projection)
        text = proto.encode(proto.event(seq=self._seq + 1, envelope_data=envelope.to_data()))
        self._seq += 1
        self._stats.events += 1
        self._replay.append(StreamedEvent(seq=self._seq, audience=who, text=text))
        direct, queued = deliver(self._clients, who, text, limit=self.settings.client_buffer)
        self._stats.events_direct += direct
        self._stats.events_queued += queued

    # --- connections --------------------------------------------------------

    async def _connection(self, ws: ServerConnection) -> None:
        session = secrets.token_hex(8)
        address = address_of(ws)
        with structlog.contextvars.bound_contextvars(session=session):
            refusal = self._admission.refusal(address)
            if refusal is not None:
                code, reason = refusal
                log.warning("ws.connection_refused", reason=reason, remote=address)
                await self._close(ws, code, reason)
                return
            with self._admission.counted(address):
                found = await self._admission.authenticate(ws, address)
            if found is None:
                return
            principal, auth = found
            with structlog.contextvars.bound_contextvars(user=principal.username):
                mine = sum(1 for c in self._clients if c.principal.user_id == principal.user_id)
                if mine >= self.settings.max_sessions_per_user:
                    log.warning("ws.too_many_sessions", sessions=mine)
                    self._stats.closed_over_capacity += 1
                    await self._close(
                        ws, CloseCode.TOO_MANY_SESSIONS, "too many sessions for this user"
                    )
                    return
                await self._serve(ws, session, principal, auth)

    async def _serve(
        self, ws: ServerConnection, session: str, principal: Principal, auth: proto.Auth
    ) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        client = Client(
            ws=ws,
            session=session,
            principal=principal,
            token=auth.token,
            limiter=proto.RateLimiter(s.commands_per_second, now=loop.time()),
            queue_limit=s.client_queue,
            buffer_limit=s.client_buffer,
        )
        # No await between building the first messages and joining the fan-out:
        # the snapshot (or replay) and the live events meet exactly at self._seq.
        initial = self._admit(client, auth)
        self._clients.add(client)
        self._stats.authenticated += 1
        log.info("ws.session_open", role=str(principal.role), agents=sorted(principal.agents))
        try:
            async with asyncio.TaskGroup() as tg:
                sender = tg.create_task(
                    send_loop(client, initial, send_timeout=s.send_timeout),
                    name=f"ws-gateway.send.{session}",
                )
                reader = tg.create_task(
                    self._commands.read_loop(client), name=f"ws-gateway.read.{session}"
                )
                await client.closing.wait()
                sender.cancel()
                reader.cancel()
        finally:
            self._clients.discard(client)
            client.state = SessionState.CLOSED
        if client.close_code == CloseCode.TOO_SLOW:
            self._stats.closed_too_slow += 1
        elif client.close_code == CloseCode.RATE_LIMITED:
            self._stats.closed_rate_limited += 1
        await self._close(ws, client.close_code or CloseCode.NORMAL, client.close_reason)
        log.info("ws.session_closed", code=ws.close_code)

    def _admit(self, client: Client, auth: proto.Auth) -> list[str]:
        """The client's first messages: ``auth.ok``, then the events it missed
        (when it resumes) or a snapshot of what it may see."""
        p = client.principal
        reason: str | None = None
        replayed: list[StreamedEvent] | None = None
        if auth.resume_from is not None:
            if auth.stream not in (None, self.stream) or auth.resume_from > self._seq:
                reason = "unknown_seq"
            else:
                replayed = self._replay.after(auth.resume_from)
                if replayed is None:
                    reason = "too_old"
        first = proto.auth_ok(
            seq=self._seq,
            stream=self.stream,
            session=client.session,
            user=p.username,
            display_name=p.display_name,
            role=str(p.role),
            agents=p.agents,
            resumed=None if auth.resume_from is None else replayed is not None,
        )
        if replayed is not None:
            log.info("ws.resumed", resume_from=auth.resume_from, missed=len(replayed))
            return [proto.encode(first)] + [
                item.text for item in replayed if can_see(p, item.audience)
            ]
        if reason is not None:
            log.info("ws.resume_refused", resume_from=auth.resume_from, reason=reason)
        scope = None if p.sees_all else p.agents
        snap = proto.snapshot(
            seq=self._seq,
            stream=self.stream,
            calls=self.projection.visible_calls(scope),
            agents=self.projection.visible_agents(scope),
            dialer=[],
            reason=reason,
        )
        return [proto.encode(first), proto.encode(snap)]
