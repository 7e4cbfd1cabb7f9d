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
event of their leg, in the leg vocabulary of :mod:`sip.legs`, and once more with
:class:`~sip.legs.Gone` if the worker dies under the leg. They must not block.

Incoming calls go to one handler (:meth:`SipPool.on_incoming`): the inbound
service, which receives a branch of each reception call from every worker
registering the reception line (see :func:`plan_workers`).

Supervision: when a worker exits unasked, its legs' listeners are told, its
open call records are closed as ``interrupted`` and ``CallEnded`` is published
for each, then ``WorkerCrashed``; the worker is started again after a backoff
(:class:`Backoff`) and registers its lines again. Other workers are untouched.

The pool is the façade over three parts: the pure plan (:mod:`sip.plan`), the
supervision of the processes (``sip._supervision``) and the routing of lines,
legs and events (``sip._routing``); each line's registration state is a
:class:`~sip.registration.LineRegistration`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import structlog

from bus import Bus
from config import AgentConfig, Config
from crm_store import Store
from sip import _sipmsg as sipmsg
from sip import protocol as p
from sip._routing import IncomingHandler, Router
from sip._supervision import (
    Backoff,
    LegListener,
    OriginateRecord,
    PoolStats,
    Supervisor,
    WorkerSlot,
)
from sip.exceptions import (
    NoCapacity,
    PoolClosed,
    UnknownAgent,
    UnknownCall,
    UnknownLine,
    WorkerCommandError,
    WorkerGone,
    WorkerStartError,
)
from sip.plan import WorkerPlan, agent_key, pbx_uri, plan_workers
from sip.registration import RegistrationState

__all__ = [
    "Backoff",
    "IncomingHandler",
    "LegListener",
    "OriginateRecord",
    "PoolStats",
    "RegistrationState",
    "SipPool",
    "WorkerPlan",
    "WorkerStatus",
    "agent_key",
    "pbx_uri",
    "plan_workers",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """A snapshot of one worker, for status pages and tests."""

    worker_id: str
    pid: int | None
    alive: bool
    lines: tuple[str, ...]
    registrations: Mapping[str, RegistrationState]
    calls: int
    crashes: int
    restarts: int


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
        self._command_timeout = command_timeout
        self._router = Router(
            (
                WorkerSlot(
                    plan,
                    Backoff(maximum=config.sip.restart_backoff_max, stable_after=stable_after),
                )
                for plan in self.plans
            ),
            bus=bus,
            calls_per_worker=config.sip.calls_per_worker,
            command_timeout=command_timeout,
        )
        self._workers = self._router.workers
        self._supervisor = Supervisor(
            config,
            bus=bus,
            store=store,
            stats=self.stats,
            ready_timeout=ready_timeout,
            command_timeout=command_timeout,
            dispatch=self._router.dispatch,
            forget_legs=self._router.forget_legs,
            closing=lambda: self._closing,
        )
        self._runner: asyncio.Task[None] | None = None
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
                    tg.create_task(self._supervisor.spawn(w), name=f"sip-pool-start-{w.worker_id}")
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
            self._router.tg = tg
            supervisors = {
                w.worker_id: tg.create_task(
                    self._supervisor.supervise(w), name=f"sip-pool-supervise-{w.worker_id}"
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
        self._router.tg = None

    def on_incoming(self, handler: IncomingHandler | None) -> None:
        """Hand incoming calls to ``handler``; with none they are refused with 480.

        The handler (``sip.inbound.InboundService``) runs on the loop for every
        incoming leg — every branch of a forked call, one per worker registering the
        line — and must :meth:`adopt` it (or reject it) to see its events.
        """
        self._router.incoming = handler

    # ------------------------------------------------------------------ lookup

    def worker_for_line(self, extension: str) -> str:
        """The id of the *home* worker of line ``extension`` (the one it is planned on)."""
        return self._router.home_of_line(extension).worker_id

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
        return self._router.holder(leg_id).worker_id

    def status(self) -> dict[str, WorkerStatus]:
        """A snapshot of every worker."""
        return {
            w.worker_id: WorkerStatus(
                worker_id=w.worker_id,
                pid=w.client.pid if w.client is not None else None,
                alive=w.client is not None and w.client.alive,
                lines=tuple(line.extension for line in w.plan.lines),
                registrations={line: r.state for line, r in w.registrations.items()},
                calls=len(w.legs),
                crashes=w.crashes,
                restarts=w.restarts,
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
        self._router.add_leg(w, leg_id, listener)
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
            self._router.drop_leg(w, leg_id)
            raise
        return sent_at

    def adopt(self, worker_id: str, leg_id: str, listener: LegListener) -> None:
        """Route the events of leg ``leg_id`` to ``listener``: an incoming leg after
        ``on_incoming``, or any leg changing hands (an attended transfer)."""
        self._router.add_leg(self._worker(worker_id), leg_id, listener)

    async def hangup(self, leg_id: str) -> None:
        """End leg ``leg_id`` in whatever state (CANCEL, reject or BYE)."""
        await self._router.leg_command(leg_id, lambda c: p.Hangup(cmd_id=c, call_id=leg_id))

    async def answer(self, leg_id: str) -> None:
        """Answer the incoming leg ``leg_id``."""
        await self._router.leg_command(leg_id, lambda c: p.Answer(cmd_id=c, call_id=leg_id))

    async def reject(self, leg_id: str, code: int = 486) -> None:
        """Reject the incoming, unanswered leg ``leg_id`` with SIP ``code``."""
        await self._router.leg_command(
            leg_id, lambda c: p.Reject(cmd_id=c, call_id=leg_id, code=code)
        )

    def contact_of(self, worker_id: str, user: str) -> str:
        """``sip:<user>@<address>:<port>`` of worker ``worker_id``: where the PBX
        reaches it directly (a redirect's target). Raises :class:`PoolError` when
        the worker is down."""
        w = self._worker(worker_id)
        client = w.live_client()
        settings = w.plan.settings
        suffix = ";transport=tcp" if settings.pbx_transport == "tcp" else ""
        return f"sip:{user}@{sipmsg.host(settings.bind_address)}:{client.sip_port}{suffix}"

    async def redirect(self, leg_id: str, target: str) -> None:
        """Answer the incoming, unanswered leg ``leg_id`` ``302`` to ``target`` (a
        SIP URI, see :meth:`contact_of`): the PBX then calls ``target``. The leg
        ends (``Ended`` with 302)."""
        await self._router.leg_command(
            leg_id, lambda c: p.Redirect(cmd_id=c, call_id=leg_id, target=target)
        )

    async def bridge(self, leg_a: str, leg_b: str) -> None:
        """Connect the audio of two legs; both must be on one worker, media active."""
        if self.worker_of(leg_a) != self.worker_of(leg_b):
            raise UnknownCall(f"legs {leg_a} and {leg_b} are on different workers")
        await self._router.leg_command(
            leg_a, lambda c: p.Bridge(cmd_id=c, call_a=leg_a, call_b=leg_b)
        )

    async def record_start(
        self, leg_id: str, listener: LegListener, path: str | None = None
    ) -> None:
        """Record leg ``leg_id`` (and the legs bridged to it); ``listener`` gets
        :class:`~sip.legs.Recorded`, or :class:`~sip.legs.RecordingLost` saying why
        there is no recording (a full disk), or :class:`~sip.legs.Gone`. ``path``
        None means ``<recording.directory>/<leg_id>.wav``."""
        w = self._router.holder(leg_id)
        w.recordings[leg_id] = listener
        try:
            await self._router.leg_command(
                leg_id, lambda c: p.RecordStart(cmd_id=c, call_id=leg_id, path=path)
            )
        except BaseException:
            w.recordings.pop(leg_id, None)
            raise

    async def record_stop(self, leg_id: str) -> None:
        """Stop recording ``leg_id``; ``RecordingFinished`` follows."""
        await self._router.leg_command(leg_id, lambda c: p.RecordStop(cmd_id=c, call_id=leg_id))

    async def unbridge(self, leg_a: str, leg_b: str) -> None:
        """Disconnect the audio of two bridged legs (both on one worker)."""
        if self.worker_of(leg_a) != self.worker_of(leg_b):
            raise UnknownCall(f"legs {leg_a} and {leg_b} are on different workers")
        await self._router.leg_command(
            leg_a, lambda c: p.Unbridge(cmd_id=c, call_a=leg_a, call_b=leg_b)
        )

    async def hold(self, leg_id: str) -> None:
        """Put leg ``leg_id`` on hold (re-INVITE ``sendonly``)."""
        await self._router.leg_command(leg_id, lambda c: p.Hold(cmd_id=c, call_id=leg_id))

    async def resume(self, leg_id: str) -> None:
        """Take leg ``leg_id`` off hold (re-INVITE ``sendrecv``)."""
        await self._router.leg_command(leg_id, lambda c: p.Resume(cmd_id=c, call_id=leg_id))

    async def send_dtmf(self, leg_id: str, digits: str) -> None:
        """Send ``digits`` (``0-9 A-D * #``) on leg ``leg_id`` as RFC 4733 events."""
        await self._router.leg_command(
            leg_id, lambda c: p.SendDtmf(cmd_id=c, call_id=leg_id, digits=digits)
        )

    async def transfer_blind(self, leg_id: str, to_uri: str) -> None:
        """Transfer the far end of leg ``leg_id`` to ``to_uri`` (REFER); progress comes
        to the leg's listener as ``transfer_status`` events."""
        await self._router.leg_command(
            leg_id, lambda c: p.TransferBlind(cmd_id=c, call_id=leg_id, to_uri=to_uri)
        )

    async def transfer_attended(self, leg_id: str, consult_leg: str) -> None:
        """Connect leg ``leg_id`` to ``consult_leg`` (the attended transfer's last
        step, inside their worker); both must be on one worker."""
        if self.worker_of(leg_id) != self.worker_of(consult_leg):
            raise UnknownCall(f"legs {leg_id} and {consult_leg} are on different workers")
        await self._router.leg_command(
            leg_id,
            lambda c: p.TransferAttended(cmd_id=c, call_id=leg_id, consult_call_id=consult_leg),
        )

    async def supervise(self, leg_id: str, supervisor_leg: str, mode: p.SuperviseMode) -> None:
        """Connect ``supervisor_leg`` to the customer leg ``leg_id`` as ``mode``
        (``listen``, ``whisper``, ``barge``); again to change the mode."""
        if self.worker_of(leg_id) != self.worker_of(supervisor_leg):
            raise UnknownCall(f"legs {leg_id} and {supervisor_leg} are on different workers")
        await self._router.leg_command(
            leg_id,
            lambda c: p.Supervise(
                cmd_id=c, call_id=leg_id, supervisor_call_id=supervisor_leg, mode=mode
            ),
        )

    def _worker(self, worker_id: str) -> WorkerSlot:
        if not self._running or self._closing:
            raise PoolClosed("the SIP pool is not running")
        w = self._workers.get(worker_id)
        if w is None:
            raise UnknownLine(f"no SIP worker {worker_id}")
        return w
