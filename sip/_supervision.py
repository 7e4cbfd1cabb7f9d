"""Supervision of the pool's worker processes: spawn, crash, backoff, restart.

:class:`WorkerSlot` is the pool's state for one planned worker across its
restarts (its process, its lines' registrations, the legs it holds);
:class:`Supervisor` starts a slot's process and registers its lines, reads its
events until it exits, and when it exits unasked closes what it held (the
router's listeners, the store's open call records, ``CallEnded`` and
``WorkerCrashed`` on the bus) and starts it again after a :class:`Backoff`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from bus import Bus, CallEnded, WorkerCrashed, WorkerStarted
from config import Config
from crm_store import Store, StoreError
from sip import protocol as p
from sip.client import WorkerClient, WorkerExited
from sip.exceptions import WorkerCommandError, WorkerGone, WorkerStartError, WorkerUnavailable
from sip.legs import LegListener
from sip.plan import WorkerPlan
from sip.registration import LineRegistration

__all__ = [
    "Backoff",
    "LegListener",
    "OriginateRecord",
    "PoolStats",
    "Supervisor",
    "WorkerSlot",
]

log = structlog.get_logger(__name__)


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


class WorkerSlot:
    """The pool's state for one planned worker, across restarts."""

    def __init__(self, plan: WorkerPlan, backoff: Backoff) -> None:
        self.plan = plan
        self.backoff = backoff
        self.client: WorkerClient | None = None
        self.crashes = 0
        self.restarts = 0
        self.registrations: dict[str, LineRegistration] = {
            line.extension: LineRegistration(line.extension, worker_id=plan.worker_id)
            for line in plan.registered_lines
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


class Supervisor:
    """Starts, watches and restarts the process of each :class:`WorkerSlot`.

    ``dispatch`` gets every event a worker sends (on the loop, in order);
    ``forget_legs`` is told when a worker's legs are gone (its process exited),
    with the process's return code. ``closing`` says whether the pool is
    shutting down: an exit then is no crash, and nothing is restarted.
    """

    def __init__(
        self,
        config: Config,
        *,
        bus: Bus,
        store: Store,
        stats: PoolStats,
        ready_timeout: float,
        command_timeout: float,
        dispatch: Callable[[WorkerSlot, p.Event], None],
        forget_legs: Callable[[WorkerSlot, int | None], None],
        closing: Callable[[], bool],
    ) -> None:
        self._config = config
        self._bus = bus
        self._store = store
        self._stats = stats
        self._ready_timeout = ready_timeout
        self._command_timeout = command_timeout
        self._dispatch = dispatch
        self._forget_legs = forget_legs
        self._closing = closing

    async def spawn(self, w: WorkerSlot) -> None:
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
                            expires=self._config.pbx.register_expires,
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

    async def supervise(self, w: WorkerSlot) -> None:
        """Read ``w``'s events until the pool closes, restarting its process each
        time it exits unasked. Cancellation stops it where it waits (an event,
        a backoff, a start)."""
        with structlog.contextvars.bound_contextvars(worker_id=w.worker_id):
            while True:
                client = w.client
                assert client is not None
                async for event in client.events():
                    if isinstance(event, WorkerExited):
                        break
                    self._dispatch(w, event)
                if self._closing():
                    self._forget_legs(w, client.returncode)
                    return
                noticed = time.monotonic()
                delay = await self._crashed(w, client.returncode)
                while True:
                    await asyncio.sleep(delay)
                    if self._closing():
                        return
                    w.restarts += 1
                    self._stats.restarts[w.worker_id] = w.restarts
                    try:
                        await self.spawn(w)
                    except WorkerStartError as exc:
                        w.crashes += 1
                        self._stats.crashes[w.worker_id] = w.crashes
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
                self._stats.restart_seconds.append(time.monotonic() - noticed)

    async def _crashed(self, w: WorkerSlot, returncode: int | None) -> float:
        """Close what the dead worker held, publish it; return the restart delay."""
        w.client = None
        w.crashes += 1
        self._stats.crashes[w.worker_id] = w.crashes
        log.error("sip_pool.worker_crashed", returncode=returncode, crashes=w.crashes)
        self._forget_legs(w, returncode)
        for registration in w.registrations.values():
            registration.lost("SIP worker exited")
            self._bus.publish(registration.changed())
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
