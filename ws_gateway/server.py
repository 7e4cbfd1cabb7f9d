"""The websocket gateway on the ``websockets`` asyncio server.

One :class:`Gateway` serves every client. It owns:

- one bus subscription, read by the *fan-out* task, which never waits on a
  client: it folds each envelope into the :class:`~ws_gateway.state.Projection`,
  numbers it in the gateway's stream, keeps it in the
  :class:`~ws_gateway.replay.ReplayBuffer`, and delivers its encoded message to
  each client allowed to see it (see *Delivery* below);
- per connection, a reader (commands, in order, one at a time) and a sender
  (the client's backlog to the socket), in a task group owned by the
  connection handler.

Delivery. A client that is *up to date* (its first messages written, nothing
in its backlog, at most ``client_buffer`` bytes waiting in its transport) is
written to directly by the fan-out, synchronously, with one
``websockets.broadcast`` call for all such clients: no task wakes up, no queue,
no timer. Any other client gets the message appended to its backlog (at most
``client_queue`` messages: one more closes it with 4008), which its sender
writes out in order, synchronously while the transport has room, and waits for
the transport to drain otherwise, each wait bounded by ``send_timeout`` (else
4008). Per-client order holds because every write is synchronous and the
fan-out never writes directly to a client with a backlog. A slow client only
ever fills its own backlog and buffer; no one else waits for it.

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
import ssl
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, Self

import structlog
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from bus import Bus, Envelope, EventsDropped, Subscription
from config import WebsocketConfig

from . import protocol as proto
from .auth import Authenticator, Principal, SessionCheck, same_rights
from .exceptions import (
    BadRequest,
    CommandError,
    InternalError,
    InvalidState,
    RateLimited,
    Unavailable,
)
from .protocol import CloseCode, SessionState
from .replay import ReplayBuffer, StreamedEvent
from .rights import audience, authorize, can_see
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


class CommandHandler(Protocol):
    """What carries out commands: the telephony side, the dialer, the store.

    ``handle`` gets commands the gateway has already validated against their
    schema and checked against the principal's rights (``args["agent"]`` is
    filled in for agent-scoped commands). It returns the JSON-ready ``data`` of
    the ``result`` reply, or raises a :class:`~ws_gateway.CommandError` subclass
    whose ``code`` the client receives. It runs under ``command_timeout`` and is
    cancelled if the client disconnects or the gateway closes: it must leave
    things consistent when cancelled.
    """

    async def handle(
        self, principal: Principal, name: str, args: dict[str, Any]
    ) -> Mapping[str, Any]: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class GatewaySettings:
    """How the gateway listens and what it tolerates.

    ``port=0`` picks a free port (read it from :attr:`Gateway.port`).
    ``allow_missing_origin`` admits clients that send no ``Origin`` header:
    browsers always send one, so this only lets non-browser integrations in
    (they still need a token). ``compression`` (permessage-deflate) is off by
    default: the fan-out sends each event to every client, and deflate would
    compress it once per client and keep a compression context per connection.

    A client is too slow (closed with 4008) when more than ``client_queue``
    messages wait in its backlog, or when its transport, holding more than
    ``client_buffer`` bytes, does not drain within ``send_timeout``.
    ``client_buffer`` is also the websocket write limit (flow control's high
    water mark); up to it, events are written to the client directly.

    Admission: at most ``max_unauthenticated`` connections wait for their auth
    message at once, ``max_unauthenticated_per_address`` of them from one
    address (more are closed with 1013); a user has at most
    ``max_sessions_per_user`` sessions (one more is closed with 4409); an
    address with ``auth_failures_per_address`` failed authentications within
    ``auth_failure_window`` seconds is closed with 4429 before its token is
    read. Open sessions are re-checked every ``session_check_interval``
    seconds when the gateway has a session check.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    allowed_origins: tuple[str, ...] = ()
    allow_missing_origin: bool = True
    ssl: ssl.SSLContext | None = None
    max_message_bytes: int = 65536
    commands_per_second: float = 20
    ping_interval: float = 20.0
    replay_buffer: int = 10000
    client_queue: int = 1000
    client_buffer: int = 32768
    auth_timeout: float = 5.0
    command_timeout: float = 10.0
    send_timeout: float = 10.0
    close_timeout: float = 5.0
    bus_queue: int = 10000
    compression: bool = False
    max_unauthenticated: int = 256
    max_unauthenticated_per_address: int = 32
    max_sessions_per_user: int = 16
    auth_failures_per_address: int = 30
    auth_failure_window: float = 60.0
    session_check_interval: float = 0.5

    @classmethod
    def from_config(cls, cfg: WebsocketConfig, **overrides: Any) -> GatewaySettings:
        """Settings from ``[websocket]``; TLS is on when ``tls_cert`` is set."""
        context = None
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            context = tls_context(Path(cfg.tls_cert), Path(cfg.tls_key))
        settings = cls(
            host=cfg.host,
            port=cfg.port,
            allowed_origins=tuple(cfg.allowed_origins),
            ssl=context,
            max_message_bytes=cfg.max_message_bytes,
            commands_per_second=cfg.commands_per_second,
            ping_interval=cfg.ping_interval,
            replay_buffer=cfg.replay_buffer,
            client_queue=cfg.client_queue,
            max_unauthenticated=cfg.max_unauthenticated,
            max_unauthenticated_per_address=cfg.max_unauthenticated_per_address,
            max_sessions_per_user=cfg.max_sessions_per_user,
            auth_failures_per_address=cfg.auth_failures_per_address,
            auth_failure_window=cfg.auth_failure_window,
            session_check_interval=cfg.session_check_interval,
        )
        return replace(settings, **overrides)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+) from PEM certificate chain and key files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


@dataclass(slots=True)
class GatewayStats:
    """Counters for metrics and tests; a copy, not live.

    ``events_direct`` and ``events_queued`` count event deliveries (one event
    to one client) written directly by the fan-out and appended to a client's
    backlog. ``authenticating`` is the connections waiting for their auth
    message now; ``closed_revoked`` counts sessions closed by the session
    check, ``closed_over_capacity`` connections refused with 1013 or 4409.
    """

    connected: int = 0
    authenticating: int = 0
    authenticated: int = 0
    events: int = 0
    events_direct: int = 0
    events_queued: int = 0
    seq: int = 0
    closed_unauthorized: int = 0
    closed_too_slow: int = 0
    closed_rate_limited: int = 0
    closed_revoked: int = 0
    closed_auth_throttled: int = 0
    closed_over_capacity: int = 0


class _State(enum.IntEnum):
    NEW = 0
    RUNNING = 1
    CLOSING = 2
    CLOSED = 3


@dataclass(eq=False, slots=True)
class _Client:
    """One authenticated connection.

    ``direct`` says the fan-out may write to it directly: its first messages
    are written, its backlog is empty, and it is open. Only the sender sets it
    (when it has emptied the backlog); queueing or closing clears it.
    """

    ws: ServerConnection
    session: str
    principal: Principal
    token: str = field(repr=False)
    limiter: proto.RateLimiter
    queue_limit: int
    buffer_limit: int
    backlog: deque[str] = field(default_factory=deque)
    direct: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    state: SessionState = SessionState.OPEN
    close_code: int | None = None
    close_reason: str = ""
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, text: str) -> bool:
        """Deliver ``text`` after everything offered before it.

        Written at once if the client is up to date, else queued; a full
        backlog closes the client as too slow.
        """
        if self.direct and self.ws.transport.get_write_buffer_size() <= self.buffer_limit:
            broadcast((self.ws,), text)
            return True
        return self.enqueue(text)

    def enqueue(self, text: str) -> bool:
        """Append ``text`` to the backlog and wake the sender."""
        if self.state is not SessionState.OPEN:
            return False
        if len(self.backlog) >= self.queue_limit:
            self.request_close(CloseCode.TOO_SLOW, "too slow: event queue overflowed")
            return False
        self.backlog.append(text)
        self.direct = False
        self.wake.set()
        return True

    def request_close(self, code: int | None, reason: str = "") -> None:
        """Ask the connection handler to close; the first request wins."""
        if self.state is not SessionState.OPEN:
            return
        self.state = SessionState.CLOSING
        self.direct = False
        self.close_code, self.close_reason = code, reason
        log.info("ws.session_closing", session=self.session, code=code, reason=reason)
        self.closing.set()


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
        self._authenticate = authenticate
        self._session_check = session_check
        self._unauthenticated: Counter[str] = Counter()
        self._failures = proto.FailureThrottle(
            settings.auth_failures_per_address, settings.auth_failure_window
        )
        self._handler = handler
        self.settings = settings
        self.stream = secrets.token_hex(8)
        self.projection = Projection()
        self._replay = ReplayBuffer(settings.replay_buffer)
        self._clients: set[_Client] = set()
        self._seq = 0
        self._stats = GatewayStats()
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
            authenticating=self._unauthenticated.total(),
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
                    self._check_sessions(self._session_check), name="ws-gateway.sessions"
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
        """Close ``ws`` within ``close_timeout``, else drop the TCP connection.

        ``ServerConnection.close()`` first drains the write buffer, without a
        deadline: for a client that stopped reading, that is forever.
        """
        try:
            async with asyncio.timeout(self.settings.close_timeout):
                await ws.close(code, reason)
        except TimeoutError:
            log.warning("ws.close_timeout", code=code)
            ws.transport.abort()

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
        # The hot path (every event, every client): up-to-date clients are
        # collected and written to in one synchronous broadcast; the others'
        # backlogs grow (see the module docstring).
        limit = self.settings.client_buffer
        now: list[ServerConnection] = []
        queued = 0
        for client in self._clients:
            if can_see(client.principal, who):
                ws = client.ws
                if client.direct and ws.transport.get_write_buffer_size() <= limit:
                    now.append(ws)
                elif client.enqueue(text):
                    queued += 1
        if now:
            broadcast(now, text)
        self._stats.events_direct += len(now)
        self._stats.events_queued += queued

    # --- connections --------------------------------------------------------

    async def _connection(self, ws: ServerConnection) -> None:
        session = secrets.token_hex(8)
        address = _address(ws)
        with structlog.contextvars.bound_contextvars(session=session):
            refusal = self._admission(address)
            if refusal is not None:
                code, reason = refusal
                log.warning("ws.connection_refused", reason=reason, remote=address)
                await self._close(ws, code, reason)
                return
            self._unauthenticated[address] += 1
            try:
                found = await self._authenticated(ws, address)
            finally:
                self._unauthenticated[address] -= 1
                if self._unauthenticated[address] <= 0:
                    del self._unauthenticated[address]
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

    def _admission(self, address: str) -> tuple[CloseCode, str] | None:
        """Why a new connection from ``address`` is refused before its auth message,
        or ``None`` to let it authenticate."""
        s = self.settings
        if self._failures.throttled(address, asyncio.get_running_loop().time()):
            self._stats.closed_auth_throttled += 1
            return CloseCode.AUTH_THROTTLED, "too many failed authentications; retry later"
        if self._unauthenticated.total() >= s.max_unauthenticated:
            self._stats.closed_over_capacity += 1
            return CloseCode.TRY_AGAIN_LATER, "too many connections authenticating; retry later"
        if self._unauthenticated[address] >= s.max_unauthenticated_per_address:
            self._stats.closed_over_capacity += 1
            return CloseCode.TRY_AGAIN_LATER, "too many connections authenticating; retry later"
        return None

    async def _authenticated(
        self, ws: ServerConnection, address: str
    ) -> tuple[Principal, proto.Auth] | None:
        s = self.settings
        try:
            async with asyncio.timeout(s.auth_timeout):
                raw = await ws.recv()
        except TimeoutError:
            await self._refuse(ws, "authentication timeout")
            return None
        except ConnectionClosed:
            return None
        try:
            auth = proto.parse_auth(raw, max_bytes=s.max_message_bytes)
        except BadRequest:
            self._failures.failed(address, asyncio.get_running_loop().time())
            await self._refuse(ws, "authentication required")
            return None
        try:
            async with asyncio.timeout(s.auth_timeout):
                principal = await self._authenticate(auth.token)
        except Exception:
            log.exception("ws.auth_unavailable")
            await self._close(ws, CloseCode.INTERNAL_ERROR, "cannot check the token now")
            return None
        if principal is None:
            self._failures.failed(address, asyncio.get_running_loop().time())
            await self._refuse(ws, "invalid token")
            return None
        return principal, auth

    async def _refuse(self, ws: ServerConnection, reason: str) -> None:
        # The reason is ours, never the token or anything the client sent.
        log.warning("ws.auth_refused", reason=reason, remote=str(ws.remote_address))
        self._stats.closed_unauthorized += 1
        await self._close(ws, CloseCode.UNAUTHORIZED, reason)

    async def _check_sessions(self, check: SessionCheck) -> None:
        """Every ``session_check_interval``, close the sessions whose token no
        longer authenticates or whose rights changed (4401).

        A failed check (store down) closes nothing: the sessions are judged
        again at the next one.
        """
        s = self.settings
        while True:
            # A period, not a wait for a state: the store has no change feed
            # that the CLI and other daemons would all write to.
            await asyncio.sleep(s.session_check_interval)
            clients = [c for c in self._clients if c.state is SessionState.OPEN]
            try:
                async with asyncio.timeout(max(s.auth_timeout, s.session_check_interval)):
                    current = await check({c.token for c in clients})
            except Exception:
                log.warning("ws.session_check_failed", exc_info=True)
                continue
            for client in clients:
                now = current.get(client.token)
                if now is None:
                    reason = "access revoked"
                elif not same_rights(client.principal, now):
                    reason = "rights changed"
                else:
                    continue
                if client.state is SessionState.OPEN:
                    self._stats.closed_revoked += 1
                    client.request_close(CloseCode.UNAUTHORIZED, reason)

    async def _serve(
        self, ws: ServerConnection, session: str, principal: Principal, auth: proto.Auth
    ) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        client = _Client(
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
                    self._send_loop(client, initial), name=f"ws-gateway.send.{session}"
                )
                reader = tg.create_task(self._read_loop(client), name=f"ws-gateway.read.{session}")
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

    def _admit(self, client: _Client, auth: proto.Auth) -> list[str]:
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

    async def _send_loop(self, client: _Client, initial: list[str]) -> None:
        """Write the first messages, then the backlog whenever there is one.

        Between backlogs the client is marked ``direct`` and the fan-out writes
        to it itself; the sender sleeps until something is queued again.
        """
        try:
            await self._write_out(client, deque(initial))
            while True:
                if client.backlog:
                    await self._write_out(client, client.backlog)
                    continue
                # Nothing queued and nothing to wait for: no await from the
                # check above to here, so no message can slip in between.
                client.direct = client.state is SessionState.OPEN
                client.wake.clear()
                await client.wake.wait()
        except TimeoutError:
            client.request_close(CloseCode.TOO_SLOW, "too slow: send timed out")
        except ConnectionClosed:
            client.request_close(None)

    async def _write_out(self, client: _Client, messages: deque[str]) -> None:
        """Write ``messages`` in order until there are none left.

        While the transport holds at most ``client_buffer`` bytes, messages are
        written synchronously (as the fan-out does); above that, one is sent
        with ``send``, which waits for the transport to drain, under
        ``send_timeout`` (one timer per wait, not per message). Messages
        appended meanwhile (``messages`` may be the live backlog) are written
        too, after the others.
        """
        ws = client.ws
        buffered = ws.transport.get_write_buffer_size
        limit = self.settings.client_buffer
        while messages:
            if buffered() <= limit:
                broadcast((ws,), messages.popleft())
            else:
                async with asyncio.timeout(self.settings.send_timeout):
                    await ws.send(messages.popleft())

    async def _read_loop(self, client: _Client) -> None:
        try:
            async for raw in client.ws:
                try:
                    if not await self._take(client, raw):
                        return
                except Exception:
                    # A bug met by one message must not end the reader: the
                    # next message is read as if this one had not come.
                    log.exception("ws.message_failed")
                    self._reply_error(
                        client,
                        proto.peek_id(raw, max_bytes=self.settings.max_message_bytes),
                        InternalError("internal error"),
                    )
        except ConnectionClosed:
            pass
        client.request_close(None)

    async def _take(self, client: _Client, raw: str | bytes) -> bool:
        """Handle one client message; False when the client is to be closed."""
        now = asyncio.get_running_loop().time()
        max_bytes = self.settings.max_message_bytes
        if not client.limiter.allow(now):
            if client.limiter.abusive(now):
                client.request_close(CloseCode.RATE_LIMITED, "rate limit ignored")
                return False
            self._reply_error(
                client, proto.peek_id(raw, max_bytes=max_bytes), RateLimited("too many commands")
            )
            return True
        try:
            command = proto.parse_command(raw, max_bytes=max_bytes)
        except BadRequest as exc:
            self._reply_error(client, exc.details.pop("id", None), exc)
            return True
        await self._execute(client, command)
        return True

    async def _execute(self, client: _Client, command: proto.Command) -> None:
        # Bound in the context, so that what the handler logs carries the
        # command id too: the client's error reply names the id, the log the why.
        with structlog.contextvars.bound_contextvars(command=command.name, command_id=command.id):
            try:
                args = authorize(client.principal, command.name, command.args, self.projection)
                async with asyncio.timeout(self.settings.command_timeout):
                    data = await self._handler.handle(client.principal, command.name, args)
            except CommandError as exc:
                cause = exc.__cause__
                log.info(
                    "ws.command_refused",
                    code=exc.code,
                    message=exc.message,
                    cause=None if cause is None else f"{type(cause).__name__}: {cause}",
                )
                self._reply_error(client, command.id, exc)
            except TimeoutError:
                log.warning("ws.command_timeout")
                self._reply_error(client, command.id, Unavailable("the command timed out"))
            except Exception:
                # The exception's text (a driver's message, a library's
                # internals) goes to the log only; the client gets the code.
                log.exception("ws.command_failed")
                self._reply_error(client, command.id, InternalError("internal error"))
            else:
                # Results are not logged: some carry secrets (a new API token).
                log.info("ws.command_done")
                client.offer(proto.encode(proto.result(seq=self._seq, id=command.id, data=data)))

    def _reply_error(self, client: _Client, cid: str | None, exc: CommandError) -> None:
        client.offer(proto.encode(proto.error(seq=self._seq, id=cid, exc=exc)))


def _address(ws: ServerConnection) -> str:
    """The client's IP address (the port left out), for per-address limits."""
    remote = ws.remote_address
    if isinstance(remote, tuple) and remote:
        return str(remote[0])
    return str(remote)
