"""The supervised pool of SIP worker processes.

pjsua2 holds at most 4 calls and 8 accounts per process, so the daemon runs one
worker per line (see ``docs/sip-pool.md``): :func:`plan_workers` lays the
configuration out on workers, and :class:`SipPool` starts them, registers their
lines, turns their events into bus events, routes commands to the worker that
holds a call leg, and restarts a worker that dies.

A call *leg* is one SIP dialog on one worker, named by the id the daemon chose
when it originated it (or the worker chose for an incoming call). The pool knows
legs, not calls: a call made of several legs (click-to-call bridges an agent leg
and a customer leg) is the business of ``sip.calls``, which hands the pool a
*listener* per leg. Listeners are plain callables run on the loop for every
event of their leg, and once more with :class:`~sip.client.WorkerExited` if the
worker dies under the leg. They must not block.

Incoming calls go to one handler (:meth:`SipPool.on_incoming`): the inbound
service, which receives a branch of each reception call from every worker
registering the reception line (see :func:`plan_workers`).

Supervision: when a worker exits unasked, its legs' listeners are told, its
open call records are closed as ``interrupted`` and ``CallEnded`` is published
for each, then ``WorkerCrashed``; the worker is started again after a backoff
(:class:`Backoff`) and registers its lines again. Other workers are untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import structlog

from bus import Bus, CallEnded, RegistrationChanged, WorkerCrashed, WorkerStarted
from config import AgentConfig, Config, LineConfig, LineRole
from crm_store import Store, StoreError
from sip import protocol as p
from sip.client import WorkerClient, WorkerExited
from sip.exceptions import (
    NoCapacity,
    PoolClosed,
    PoolConfigError,
    UnknownAgent,
    UnknownCall,
    UnknownLine,
    WorkerCommandError,
    WorkerGone,
    WorkerStartError,
    WorkerUnavailable,
)

__all__ = [
    "Backoff",
    "IncomingHandler",
    "LegListener",
    "OriginateRecord",
    "PoolStats",
    "SipPool",
    "WorkerPlan",
    "WorkerStatus",
    "agent_key",
    "pbx_uri",
    "plan_workers",
]

log = structlog.get_logger(__name__)

#: Called on the loop with every event of one leg; must not block.
LegListener = Callable[[p.Event], None]
#: Called on the loop with an incoming call and the id of the worker holding it.
IncomingHandler = Callable[[str, p.IncomingCall], None]

# Seconds between failed registration attempts, inside the worker. With TCP to
# the PBX a lost connection is noticed at once and retried at this pace, so
# the lines are back within this long of the PBX coming back.
_REGISTER_RETRY_SECONDS = 3
# Longest wait between registrations while the PBX refuses them (503...).
_REGISTER_RETRY_MAX_SECONDS = 60
# SIP status the pool answers an incoming call with when nobody handles it.
_NOBODY_HOME = 480


def pbx_uri(config: Config, user: str) -> str:
    """``sip:<user>@<pbx host>:<port>`` (with ``;transport=tcp`` over TCP): how a
    worker reaches an extension or a number through the PBX."""
    pbx = config.pbx
    suffix = ";transport=tcp" if pbx.transport == "tcp" else ""
    return f"sip:{user}@{pbx.host}:{pbx.port}{suffix}"


def agent_key(agent: AgentConfig) -> str:
    """The name events and commands use for ``agent`` (:attr:`AgentConfig.key`)."""
    return agent.key


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """What one worker runs: its lines, its agent (for an agent line), its sockets.

    ``lines`` are the lines this worker is the *home* of; ``shared_lines`` are the
    reception lines an agent worker registers as well (same extension and secret,
    its own Contact), so that the PBX forks their calls to it too.
    """

    worker_id: str
    index: int
    role: LineRole
    lines: tuple[LineConfig, ...]
    agent: AgentConfig | None
    settings: p.WorkerSettings
    shared_lines: tuple[LineConfig, ...] = ()

    @property
    def agent_name(self) -> str | None:
        return agent_key(self.agent) if self.agent is not None else None

    @property
    def registered_lines(self) -> tuple[LineConfig, ...]:
        """Every line the worker registers: its own, then the shared ones."""
        return self.lines + self.shared_lines


def plan_workers(config: Config, *, log_level: p.LogLevel = "warning") -> tuple[WorkerPlan, ...]:
    """Lay the configured lines out on workers; pure.

    One worker per agent line (its call slots are the agent's leg, the
    customer's, a supervisor's and a consult leg), and one per reception and per
    dialer line. If that needs more than ``sip.max_workers``, reception and
    dialer lines of one role share workers, up to ``sip.accounts_per_worker - 1``
    lines each (the worker's local identity takes one account). Worker ``n``
    listens on ``sip.port_range_start + n`` and gets the ``n``-th of
    ``sip.max_workers`` equal blocks of ``sip.rtp_port_range``.

    Every agent worker also registers every reception line (``shared_lines``):
    the PBX then forks a reception call to the reception worker *and* to each
    agent worker, and the inbound service keeps the branch on the worker of the
    agent it offers the call to (see ``docs/sip-pool.md``). An agent worker thus
    needs ``1 + reception lines + 1`` accounts.

    Raises :class:`PoolConfigError` when the lines do not fit.
    """
    sip, pbx = config.sip, config.pbx
    per_worker = sip.accounts_per_worker - 1
    if per_worker < 1 and config.lines:
        raise PoolConfigError(
            "sip.accounts_per_worker: must be at least 2 (one account is the worker's own)"
        )
    reception = config.lines_by_role(LineRole.RECEPTION)
    agent_lines = config.lines_by_role(LineRole.AGENT)
    needed = 1 + len(reception) + 1
    if agent_lines and reception and needed > sip.accounts_per_worker:
        raise PoolConfigError(
            f"sip.accounts_per_worker: every agent worker registers its agent line, the "
            f"{len(reception)} reception lines (so that the PBX forks their calls to it) "
            f"and its local identity: {needed} accounts, only {sip.accounts_per_worker} "
            f"allowed; use at most {sip.accounts_per_worker - 2} reception lines"
        )
    groups: list[tuple[LineRole, tuple[LineConfig, ...]]] = [
        (LineRole.AGENT, (line,)) for line in config.lines_by_role(LineRole.AGENT)
    ]
    others = [LineRole.RECEPTION, LineRole.DIALER]
    singles = sum(len(config.lines_by_role(role)) for role in others)
    for role in others:
        lines = config.lines_by_role(role)
        if len(groups) + singles <= sip.max_workers:
            groups += [(role, (line,)) for line in lines]
        else:
            groups += [(role, lines[i : i + per_worker]) for i in range(0, len(lines), per_worker)]
    if len(groups) > sip.max_workers:
        raise PoolConfigError(
            f"sip.max_workers: {len(groups)} workers are needed for the configured lines, "
            f"only {sip.max_workers} allowed"
        )
    first, last = sip.rtp_port_range
    block = (last - first + 1) // sip.max_workers
    # Two ports (RTP and RTCP) per call, plus room for pjmedia to skip a busy pair.
    if block < 4 * sip.calls_per_worker:
        raise PoolConfigError(
            f"sip.rtp_port_range: {block} ports per worker is too few for "
            f"{sip.calls_per_worker} calls; widen the range or lower sip.max_workers"
        )
    plans = []
    for index, (role, lines) in enumerate(groups):
        agent = config.agent_for_line(lines[0].extension) if role is LineRole.AGENT else None
        settings = p.WorkerSettings(
            bind_address=sip.bind_address,
            sip_port=sip.sip_port(index),
            rtp_port_start=first + index * block,
            rtp_port_count=block,
            pbx_host=pbx.host,
            pbx_port=pbx.port,
            pbx_transport=pbx.transport,
            domain=pbx.domain,
            allowed_sources=tuple(pbx.allowed_sources),
            recording_dir=str(config.recording.directory),
            max_calls=sip.calls_per_worker,
            max_accounts=sip.accounts_per_worker,
            log_level=log_level,
            realm=pbx.realm,
            register_retry_seconds=_REGISTER_RETRY_SECONDS,
            register_retry_max_seconds=_REGISTER_RETRY_MAX_SECONDS,
            codecs=tuple(sip.codecs),
        )
        plans.append(
            WorkerPlan(
                worker_id=f"{config.site.id}/{role.value}-{lines[0].extension}",
                index=index,
                role=role,
                lines=lines,
                agent=agent,
                settings=settings,
                shared_lines=reception if role is LineRole.AGENT else (),
            )
        )
    return tuple(plans)


# --------------------------------------------------------------------------- backoff


class Backoff:
    """Delays before restarting a crashed worker; pure.

    The first restart is immediate, then 1 s, 2 s, 4 s... up to ``maximum``. A
    worker that stayed up ``stable_after`` seconds starts again from zero.
    """

    def __init__(self, *, maximum: float, stable_after: float, base: float = 1.0) -> None:
        self.maximum = maximum
        self.stable_after = stable_after
        self.base = base
        self.attempt = 0
        self._up_since: float | None = None

    def started(self, now: float) -> None:
        """The worker is up (at monotonic time ``now``)."""
        self._up_since = now

    def next_delay(self, now: float) -> float:
        """The wait before the next start, after a crash at monotonic time ``now``."""
        if self._up_since is not None and now - self._up_since >= self.stable_after:
            self.attempt = 0
        self._up_since = None
        delay = 0.0 if self.attempt == 0 else min(self.base * 2 ** (self.attempt - 1), self.maximum)
        self.attempt += 1
        return delay


# --------------------------------------------------------------------------- stats


@dataclass(frozen=True, slots=True)
class OriginateRecord:
    """One originate the pool sent: which leg, where to, when (epoch seconds)."""

    leg_id: str
    worker_id: str
    to_uri: str
    sent_at: float


@dataclass(slots=True)
class PoolStats:
    """Counters for operations and benchmarks; read them, do not write them."""

    originates: deque[OriginateRecord] = field(default_factory=lambda: deque(maxlen=10000))
    crashes: dict[str, int] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    #: Seconds from a worker's exit being noticed to its lines being sent to the
    #: new process, per restart.
    restart_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=1000))

    def originate_of(self, leg_id: str) -> OriginateRecord | None:
        for record in reversed(self.originates):
            if record.leg_id == leg_id:
                return record
        return None


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """A snapshot of one worker, for status pages and tests."""

    worker_id: str
    pid: int | None
    alive: bool
    lines: tuple[str, ...]
    registrations: Mapping[str, str]
    calls: int
    crashes: int
    restarts: int
    #: Reception lines this (agent) worker registers besides its own line.
    shared_lines: tuple[str, ...] = ()


# --------------------------------------------------------------------------- the pool


class _Worker:
    """The pool's state for one planned worker, across restarts."""

    def __init__(self, plan: WorkerPlan, backoff: Backoff) -> None:
        self.plan = plan
        self.backoff = backoff
        self.client: WorkerClient | None = None
        self.crashes = 0
        self.restarts = 0
        self.registrations: dict[str, str] = {
            line.extension: "unregistered" for line in plan.registered_lines
        }
        self.legs: dict[str, LegListener] = {}
        self.recordings: dict[str, LegListener] = {}
        self.reserved = 0

    @property
    def worker_id(self) -> str:
        return self.plan.worker_id

    @property
    def used(self) -> int:
        return len(self.legs) + self.reserved

    def live_client(self) -> WorkerClient:
        client = self.client
        if client is None or not client.alive:
            raise WorkerUnavailable(f"SIP worker {self.worker_id} is down")
        return client


class SipPool:
    """Starts, supervises and commands the SIP workers of one daemon.

    Use ``async with SipPool(config, bus=bus, store=store) as pool:`` or
    :meth:`start` / :meth:`aclose`. Commands on a leg (:meth:`hangup`,
    :meth:`answer`, :meth:`bridge`...) raise :class:`UnknownCall` for a leg the
    pool does not hold, :class:`WorkerUnavailable` while its worker is down,
    :class:`WorkerCommandError` when the worker refuses, ``TimeoutError`` when it
    does not answer in time. Cancelling one only stops the wait for the worker's
    reply: the command is still carried out.
    """

    def __init__(
        self,
        config: Config,
        *,
        bus: Bus,
        store: Store,
        log_level: p.LogLevel = "warning",
        stable_after: float = 60.0,
        ready_timeout: float = 10.0,
        command_timeout: float = 5.0,
    ) -> None:
        self.config = config
        self.plans = plan_workers(config, log_level=log_level)
        self.stats = PoolStats()
        self._bus = bus
        self._store = store
        self._ready_timeout = ready_timeout
        self._command_timeout = command_timeout
        self._workers = {
            plan.worker_id: _Worker(
                plan,
                Backoff(maximum=config.sip.restart_backoff_max, stable_after=stable_after),
            )
            for plan in self.plans
        }
        self._by_line = {line.extension: w for w in self._workers.values() for line in w.plan.lines}
        # Home worker first, then the agent workers sharing the line.
        self._line_workers: dict[str, list[_Worker]] = {}
        for w in self._workers.values():
            for line in w.plan.lines:
                self._line_workers.setdefault(line.extension, []).insert(0, w)
            for line in w.plan.shared_lines:
                self._line_workers.setdefault(line.extension, []).append(w)
        self._leg_worker: dict[str, _Worker] = {}
        self._incoming: IncomingHandler | None = None
        self._runner: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._running = False
        self._closing = False
        self._stop = asyncio.Event()

    # ------------------------------------------------------------------ lifespan

    async def start(self) -> None:
        """Start every worker, send its lines' registrations, then supervise them.

        Returns once every worker is up and its ``register`` commands are
        accepted; the registrations themselves complete later (watch
        ``RegistrationChanged``). Raises :class:`WorkerStartError` if a worker
        cannot start — at start-up that is a configuration or host problem
        (port taken, wrong bind address), better reported than retried — after
        stopping the workers already started. Cancellation does the same.
        """
        if self._running or self._closing:
            raise RuntimeError("SipPool.start() called twice")
        try:
            async with asyncio.TaskGroup() as tg:
                for w in self._workers.values():
                    tg.create_task(self._spawn(w), name=f"sip-pool-start-{w.worker_id}")
        except BaseException as exc:
            await self._close_clients()
            if isinstance(exc, BaseExceptionGroup):
                starts = exc.subgroup(WorkerStartError)
                if starts is not None:
                    raise starts.exceptions[0] from exc
            raise
        self._running = True
        self._runner = asyncio.create_task(self._run(), name="sip-pool")
        log.info("sip_pool.started", workers=len(self._workers))

    async def aclose(self) -> None:
        """Shut every worker down (hanging up its calls, unregistering its lines).

        Idempotent. Supervision stops first, so nothing is restarted. If
        cancelled, the remaining workers are killed (``WorkerClient.aclose``
        does it) before the cancellation propagates.
        """
        if self._closing:
            if self._runner is not None:
                await asyncio.shield(self._runner)
            return
        self._closing = True
        try:
            await self._close_clients()
        finally:
            self._stop.set()
            if self._runner is not None:
                await self._runner
            self._running = False
            log.info("sip_pool.closed")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _close_clients(self) -> None:
        clients = [w.client for w in self._workers.values() if w.client is not None]
        async with asyncio.TaskGroup() as tg:
            for client in clients:
                tg.create_task(client.aclose(), name=f"sip-pool-close-{client.worker_id}")

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            supervisors = {
                w.worker_id: tg.create_task(
                    self._supervise(w), name=f"sip-pool-supervise-{w.worker_id}"
                )
                for w in self._workers.values()
            }
            await self._stop.wait()
            # A supervisor waiting out a backoff (or starting a replacement) has
            # no process to see exit: stop it, or closing would wait for the
            # backoff and then start a worker nobody wants. The others end by
            # themselves once their worker's WorkerExited is read.
            for worker_id, task in supervisors.items():
                if self._workers[worker_id].client is None:
                    task.cancel()
        self._tg = None

    # ------------------------------------------------------------------ supervision

    async def _spawn(self, w: _Worker) -> None:
        """Start ``w``'s process and send its lines; raises WorkerStartError."""
        bound = structlog.contextvars.bound_contextvars(worker_id=w.worker_id)
        with bound:
            client = await WorkerClient.start(
                worker_id=w.worker_id, config=w.plan.settings, ready_timeout=self._ready_timeout
            )
            try:
                for line in w.plan.registered_lines:
                    await client.command(
                        p.Register(
                            cmd_id=client.next_cmd_id(),
                            line=line.extension,
                            extension=line.extension,
                            password=line.secret.reveal(),
                            expires=self.config.pbx.register_expires,
                            display_name=line.display_name or "",
                        ),
                        timeout=self._command_timeout,
                    )
            except (WorkerCommandError, TimeoutError) as exc:
                await client.aclose()
                raise WorkerStartError(f"{w.worker_id}: cannot register its lines: {exc}") from exc
            except WorkerGone:
                # Died while registering: the supervisor sees WorkerExited next.
                pass
            except BaseException:
                await client.aclose()
                raise
            w.client = client
            w.backoff.started(time.monotonic())
            self._bus.publish(
                WorkerStarted(worker_id=w.worker_id, pid=client.pid, restarts=w.restarts)
            )
            log.info("sip_pool.worker_started", pid=client.pid, restarts=w.restarts)

    async def _supervise(self, w: _Worker) -> None:
        with structlog.contextvars.bound_contextvars(worker_id=w.worker_id):
            while True:
                client = w.client
                assert client is not None
                async for event in client.events():
                    if isinstance(event, WorkerExited):
                        break
                    self._dispatch(w, event)
                if self._closing:
                    self._forget_legs(w, client.returncode)
                    return
                noticed = time.monotonic()
                delay = await self._crashed(w, client.returncode)
                while True:
                    await asyncio.sleep(delay)
                    if self._closing:
                        return
                    w.restarts += 1
                    self.stats.restarts[w.worker_id] = w.restarts
                    try:
                        await self._spawn(w)
                    except WorkerStartError as exc:
                        w.crashes += 1
                        self.stats.crashes[w.worker_id] = w.crashes
                        delay = w.backoff.next_delay(time.monotonic())
                        log.error("sip_pool.restart_failed", error=str(exc), retry_in=delay)
                        self._bus.publish(
                            WorkerCrashed(
                                worker_id=w.worker_id,
                                returncode=None,
                                crashes=w.crashes,
                                interrupted_calls=(),
                                restart_in_seconds=delay,
                            )
                        )
                        continue
                    break
                self.stats.restart_seconds.append(time.monotonic() - noticed)

    async def _crashed(self, w: _Worker, returncode: int | None) -> float:
        """Close what the dead worker held, publish it; return the restart delay."""
        w.client = None
        w.crashes += 1
        self.stats.crashes[w.worker_id] = w.crashes
        log.error("sip_pool.worker_crashed", returncode=returncode, crashes=w.crashes)
        self._forget_legs(w, returncode)
        for line in w.registrations:
            w.registrations[line] = "unregistered"
            self._bus.publish(
                RegistrationChanged(
                    line=line,
                    state="unregistered",
                    code=0,
                    reason="SIP worker exited",
                    worker_id=w.worker_id,
                )
            )
        interrupted: list[uuid.UUID] = []
        try:
            closed = await self._store.calls.close_worker_calls(w.worker_id)
        except StoreError as exc:
            # The worker must come back whatever the store says; its records
            # stay open and are closed as interrupted at the next start-up.
            log.error("sip_pool.cannot_close_calls", error=str(exc))
            closed = []
        for call in closed:
            interrupted.append(call.id)
            self._bus.publish(
                CallEnded(
                    call_id=call.id,
                    reason="interrupted",
                    sip_code=0,
                    agent=w.plan.agent_name,
                    talk_seconds=None,
                )
            )
        delay = w.backoff.next_delay(time.monotonic())
        self._bus.publish(
            WorkerCrashed(
                worker_id=w.worker_id,
                returncode=returncode,
                crashes=w.crashes,
                interrupted_calls=tuple(interrupted),
                restart_in_seconds=delay,
            )
        )
        return delay

    def _forget_legs(self, w: _Worker, returncode: int | None) -> None:
        legs, w.legs = w.legs, {}
        recordings, w.recordings = w.recordings, {}
        w.reserved = 0
        exited = WorkerExited(returncode=returncode)
        for leg_id in legs:
            self._leg_worker.pop(leg_id, None)
        for listener in {**recordings, **legs}.values():
            listener(exited)

    # ------------------------------------------------------------------ events

    def _dispatch(self, w: _Worker, event: p.Event) -> None:
        if isinstance(event, p.Registration):
            w.registrations[event.line] = event.state
            log.info(
                "sip_pool.registration",
                line=event.line,
                state=event.state,
                code=event.code,
                reason=event.reason,
            )
            self._bus.publish(
                RegistrationChanged(
                    line=event.line,
                    state=event.state,
                    code=event.code,
                    reason=event.reason,
                    worker_id=w.worker_id,
                )
            )
        elif isinstance(event, p.IncomingCall):
            self._on_incoming(w, event)
        elif isinstance(event, p.RecordingFinished) or (
            isinstance(event, p.Error)
            and event.code == "recording_failed"
            and event.cmd_id is None
            and event.call_id in w.recordings
        ):
            # A recording ends in its file or in the reason it has none; either
            # way it goes to the recording's listener (the call may be over).
            listener = w.recordings.pop(event.call_id or "", None)
            if listener is not None:
                listener(event)
        else:
            # Every other event naming a call (call_state, media_active, dtmf,
            # transfer_status, error...) goes to that leg's listener, so that
            # events added to the protocol later reach their call unchanged.
            call_id = getattr(event, "call_id", None)
            if not isinstance(call_id, str):
                return
            listener = w.legs.get(call_id)
            if isinstance(event, p.CallState) and event.state == "ended":
                w.legs.pop(call_id, None)
                self._leg_worker.pop(call_id, None)
            if listener is not None:
                listener(event)

    def _on_incoming(self, w: _Worker, event: p.IncomingCall) -> None:
        if self._incoming is not None and w.used < self.config.sip.calls_per_worker:
            self._incoming(w.worker_id, event)
            return
        # Nobody takes inbound calls (the inbound service is not running) or no
        # slot is free: refuse it rather than let it ring forever.
        log.info("sip_pool.incoming_refused", call_id=event.call_id, line=event.line)
        if self._tg is not None and w.client is not None:
            self._tg.create_task(
                self._refuse(w.client, event.call_id), name=f"sip-pool-refuse-{event.call_id}"
            )

    async def _refuse(self, client: WorkerClient, call_id: str) -> None:
        with contextlib.suppress(WorkerGone, WorkerCommandError, TimeoutError):
            await client.command(
                p.Reject(cmd_id=client.next_cmd_id(), call_id=call_id, code=_NOBODY_HOME),
                timeout=self._command_timeout,
            )

    def on_incoming(self, handler: IncomingHandler | None) -> None:
        """Hand incoming calls to ``handler``; with none they are refused with 480.

        The handler (``sip.inbound.InboundService``) runs on the loop for every
        incoming leg — every branch of a forked call, one per worker registering the
        line — and must :meth:`adopt` it (or reject it) to see its events.
        """
        self._incoming = handler

    # ------------------------------------------------------------------ lookup

    def worker_for_line(self, extension: str) -> str:
        """The id of the *home* worker of line ``extension`` (the one it is planned on)."""
        w = self._by_line.get(extension)
        if w is None:
            raise UnknownLine(f"no line {extension}")
        return w.worker_id

    def workers_for_line(self, extension: str) -> tuple[str, ...]:
        """Every worker registering line ``extension``: its home worker first, then
        (for a reception line) each agent worker, in plan order."""
        workers = self._line_workers.get(extension)
        if not workers:
            raise UnknownLine(f"no line {extension}")
        return tuple(w.worker_id for w in workers)

    def worker_of_agent(self, agent: str) -> str:
        """The id of the worker of ``agent``'s line (by key, user name or name)."""
        return self.worker_for_line(self.agent(agent).line)

    def alive(self, worker_id: str) -> bool:
        """Whether ``worker_id`` is up (started, not crashed nor restarting)."""
        w = self._workers.get(worker_id)
        return w is not None and w.client is not None and w.client.alive

    def agent(self, name: str) -> AgentConfig:
        """The configured agent whose user name (or, failing that, name) is ``name``."""
        try:
            return self.config.agent(name)
        except KeyError:
            raise UnknownAgent(f"no agent {name!r}") from None

    def worker_of(self, leg_id: str) -> str:
        """The id of the worker holding leg ``leg_id``."""
        w = self._leg_worker.get(leg_id)
        if w is None:
            raise UnknownCall(f"no call leg {leg_id}")
        return w.worker_id

    def status(self) -> dict[str, WorkerStatus]:
        """A snapshot of every worker."""
        return {
            w.worker_id: WorkerStatus(
                worker_id=w.worker_id,
                pid=w.client.pid if w.client is not None else None,
                alive=w.client is not None and w.client.alive,
                lines=tuple(line.extension for line in w.plan.lines),
                registrations=dict(w.registrations),
                calls=len(w.legs),
                crashes=w.crashes,
                restarts=w.restarts,
                shared_lines=tuple(line.extension for line in w.plan.shared_lines),
            )
            for w in self._workers.values()
        }

    def free_slots(self, worker_id: str) -> int:
        """Call slots of ``worker_id`` neither in use nor reserved."""
        return self.config.sip.calls_per_worker - self._worker(worker_id).used

    # ------------------------------------------------------------------ commands

    def reserve(self, worker_id: str, count: int) -> None:
        """Hold ``count`` call slots of ``worker_id`` for legs about to be originated.

        Raises :class:`NoCapacity` if they are not free. A reservation is used by
        ``originate(..., reserved=True)`` or given back with :meth:`release`; a
        crash of the worker drops it.
        """
        w = self._worker(worker_id)
        w.live_client()
        if w.used + count > self.config.sip.calls_per_worker:
            raise NoCapacity(
                f"SIP worker {worker_id} holds {w.used} of "
                f"{self.config.sip.calls_per_worker} calls; {count} more do not fit"
            )
        w.reserved += count

    def release(self, worker_id: str, count: int) -> None:
        """Give back ``count`` slots reserved and not used."""
        w = self._workers.get(worker_id)
        if w is not None:
            w.reserved = max(0, w.reserved - count)

    async def originate(
        self,
        *,
        worker_id: str,
        line: str | None,
        leg_id: str,
        to_uri: str,
        listener: LegListener,
        caller_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        reserved: bool = False,
    ) -> float:
        """Place a call leg from ``line`` of ``worker_id``; return when it was sent.

        The return value is the wall-clock time (epoch seconds) the command left
        for the worker, also kept in :attr:`stats`. ``listener`` gets every event
        of the leg from now on. Raises :class:`NoCapacity` when the worker is
        full (unless a slot was reserved), :class:`WorkerUnavailable` when it is
        down, :class:`WorkerCommandError` when it refuses. Cancellation only
        stops the wait for the worker's answer: the leg may still be placed, and
        its events still reach ``listener``.
        """
        w = self._worker(worker_id)
        client = w.live_client()
        if line is not None and line not in w.registrations:
            raise UnknownLine(f"line {line} is not on worker {worker_id}")
        if reserved:
            w.reserved = max(0, w.reserved - 1)
        elif w.used >= self.config.sip.calls_per_worker:
            raise NoCapacity(f"SIP worker {worker_id} holds {w.used} calls already")
        w.legs[leg_id] = listener
        self._leg_worker[leg_id] = w
        sent_at = time.time()
        self.stats.originates.append(OriginateRecord(leg_id, worker_id, to_uri, sent_at))
        try:
            await client.command(
                p.Originate(
                    cmd_id=client.next_cmd_id(),
                    call_id=leg_id,
                    line=line,
                    to_uri=to_uri,
                    caller_id=caller_id,
                    headers=dict(headers or {}),
                ),
                timeout=self._command_timeout,
            )
        except (WorkerCommandError, WorkerGone, TimeoutError):
            if w.legs.pop(leg_id, None) is not None:
                self._leg_worker.pop(leg_id, None)
            raise
        return sent_at

    def adopt(self, worker_id: str, leg_id: str, listener: LegListener) -> None:
        """Route the events of leg ``leg_id`` to ``listener``: an incoming leg after
        ``on_incoming``, or any leg changing hands (an attended transfer)."""
        w = self._worker(worker_id)
        w.legs[leg_id] = listener
        self._leg_worker[leg_id] = w

    async def hangup(self, leg_id: str) -> None:
        """End leg ``leg_id`` in whatever state (CANCEL, reject or BYE)."""
        await self._leg_command(leg_id, lambda c: p.Hangup(cmd_id=c, call_id=leg_id))

    async def answer(self, leg_id: str) -> None:
        """Answer the incoming leg ``leg_id``."""
        await self._leg_command(leg_id, lambda c: p.Answer(cmd_id=c, call_id=leg_id))

    async def reject(self, leg_id: str, code: int = 486) -> None:
        """Reject the incoming, unanswered leg ``leg_id`` with SIP ``code``."""
        await self._leg_command(leg_id, lambda c: p.Reject(cmd_id=c, call_id=leg_id, code=code))

    async def bridge(self, leg_a: str, leg_b: str) -> None:
        """Connect the audio of two legs; both must be on one worker, media active."""
        if self.worker_of(leg_a) != self.worker_of(leg_b):
            raise UnknownCall(f"legs {leg_a} and {leg_b} are on different workers")
        await self._leg_command(leg_a, lambda c: p.Bridge(cmd_id=c, call_a=leg_a, call_b=leg_b))

    async def record_start(
        self, leg_id: str, listener: LegListener, path: str | None = None
    ) -> None:
        """Record leg ``leg_id`` (and the legs bridged to it); ``listener`` gets the
        ``RecordingFinished``, or an ``Error`` ``recording_failed`` whose message
        says why there is no recording (a full disk), or ``WorkerExited``. ``path``
        None means
        ``<recording.directory>/<leg_id>.wav``."""
        w = self._leg_worker.get(leg_id)
        if w is None:
            raise UnknownCall(f"no call leg {leg_id}")
        w.recordings[leg_id] = listener
        try:
            await self._leg_command(
                leg_id, lambda c: p.RecordStart(cmd_id=c, call_id=leg_id, path=path)
            )
        except BaseException:
            w.recordings.pop(leg_id, None)
            raise

    async def record_stop(self, leg_id: str) -> None:
        """Stop recording ``leg_id``; ``RecordingFinished`` follows."""
        await self._leg_command(leg_id, lambda c: p.RecordStop(cmd_id=c, call_id=leg_id))

    async def unbridge(self, leg_a: str, leg_b: str) -> None:
        """Disconnect the audio of two bridged legs (both on one worker)."""
        if self.worker_of(leg_a) != self.worker_of(leg_b):
            raise UnknownCall(f"legs {leg_a} and {leg_b} are on different workers")
        await self._leg_command(leg_a, lambda c: p.Unbridge(cmd_id=c, call_a=leg_a, call_b=leg_b))

    async def hold(self, leg_id: str) -> None:
        """Put leg ``leg_id`` on hold (re-INVITE ``sendonly``)."""
        await self._leg_command(leg_id, lambda c: p.Hold(cmd_id=c, call_id=leg_id))

    async def resume(self, leg_id: str) -> None:
        """Take leg ``leg_id`` off hold (re-INVITE ``sendrecv``)."""
        await self._leg_command(leg_id, lambda c: p.Resume(cmd_id=c, call_id=leg_id))

    async def send_dtmf(self, leg_id: str, digits: str) -> None:
        """Send ``digits`` (``0-9 A-D * #``) on leg ``leg_id`` as RFC 4733 events."""
        await self._leg_command(
            leg_id, lambda c: p.SendDtmf(cmd_id=c, call_id=leg_id, digits=digits)
        )

    async def transfer_blind(self, leg_id: str, to_uri: str) -> None:
        """Transfer the far end of leg ``leg_id`` to ``to_uri`` (REFER); progress comes
        to the leg's listener as ``transfer_status`` events."""
        await self._leg_command(
            leg_id, lambda c: p.TransferBlind(cmd_id=c, call_id=leg_id, to_uri=to_uri)
        )

    async def transfer_attended(self, leg_id: str, consult_leg: str) -> None:
        """Connect leg ``leg_id`` to ``consult_leg`` (the attended transfer's last
        step, inside their worker); both must be on one worker."""
        if self.worker_of(leg_id) != self.worker_of(consult_leg):
            raise UnknownCall(f"legs {leg_id} and {consult_leg} are on different workers")
        await self._leg_command(
            leg_id,
            lambda c: p.TransferAttended(cmd_id=c, call_id=leg_id, consult_call_id=consult_leg),
        )

    async def supervise(self, leg_id: str, supervisor_leg: str, mode: p.SuperviseMode) -> None:
        """Connect ``supervisor_leg`` to the customer leg ``leg_id`` as ``mode``
        (``listen``, ``whisper``, ``barge``); again to change the mode."""
        if self.worker_of(leg_id) != self.worker_of(supervisor_leg):
            raise UnknownCall(f"legs {leg_id} and {supervisor_leg} are on different workers")
        await self._leg_command(
            leg_id,
            lambda c: p.Supervise(
                cmd_id=c, call_id=leg_id, supervisor_call_id=supervisor_leg, mode=mode
            ),
        )

    async def _leg_command(self, leg_id: str, build: Callable[[str], p.Command]) -> None:
        w = self._leg_worker.get(leg_id)
        if w is None:
            raise UnknownCall(f"no call leg {leg_id}")
        client = w.live_client()
        try:
            await client.command(build(client.next_cmd_id()), timeout=self._command_timeout)
        except WorkerCommandError as exc:
            if exc.code == "unknown_call":
                raise UnknownCall(f"no call leg {leg_id}: it has ended") from exc
            raise

    def _worker(self, worker_id: str) -> _Worker:
        if not self._running or self._closing:
            raise PoolClosed("the SIP pool is not running")
        w = self._workers.get(worker_id)
        if w is None:
            raise UnknownLine(f"no SIP worker {worker_id}")
        return w
