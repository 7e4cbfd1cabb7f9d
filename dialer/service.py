"""The :class:`Dialer` component: agents' dialing sessions and call-list management.

One :class:`~dialer.session.DialingSession` task per agent dialing, in the
dialer's task group. Sessions are stored (agent, list, state, counters); at
:meth:`Dialer.start` the sessions this daemon (``site.id``) left ``running`` or
``paused`` are resumed, after their lists are repaired: numbers claimed but never
dialed go back to the queue, numbers being dialed get their outcome from their
call record and are not dialed again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import structlog

from bus import Bus
from config import AgentConfig, Config
from config.outbound import OutboundPolicy
from crm_store import (
    CallEndReason,
    CallList,
    CallListEntry,
    CallListItemState,
    CallListReport,
    Conflict,
    DialerSessionRecord,
    DoNotCallEntry,
    LeadStatus,
    NotFound,
    Store,
    read_numbers,
)
from crm_store.phones import try_normalize_phone
from sip.exceptions import UnknownAgent
from sip.pool import SipPool, agent_key

from .commands import Disposition, Pause, Resume, Skip, Stop
from .exceptions import DialerClosed, DialerError, NoSession, SessionExists, UnknownList
from .rules import retry_at
from .session import DialingSession, GapTiming, SessionInfo

__all__ = ["Dialer", "screen_entries", "with_refused"]

log = structlog.get_logger(__name__)

_ACTIVE = ("running", "paused")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Dialer:
    """Runs agents' dialing sessions over the SIP pool.

    Use ``async with Dialer(pool, config=..., bus=..., store=...) as dialer:`` or
    :meth:`start` / :meth:`aclose`. ``clock`` gives the wall-clock time the
    rules (calling hours, retry times, due items) are judged at; tests fix it.
    """

    def __init__(
        self,
        pool: SipPool,
        *,
        config: Config,
        bus: Bus,
        store: Store,
        clock: Callable[[], datetime] = _utcnow,
        agent_timeout: float = 30.0,
        restore: bool = True,
    ) -> None:
        self._pool = pool
        self._config = config
        self._bus = bus
        self._store = store
        self._clock = clock
        self._agent_timeout = agent_timeout
        self._restore = restore
        self._sessions: dict[str, DialingSession] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._stop = asyncio.Event()
        self._closing = False
        #: The gap timings of the sessions that ended (see :class:`GapTiming`),
        #: kept for benchmarks and status pages; live sessions hold their own.
        self.gap_timings: deque[GapTiming] = deque(maxlen=100_000)

    # ------------------------------------------------------------------ lifespan

    async def start(self) -> None:
        """Start the task group and resume the stored sessions of this site.

        Cancellation stops what was started.
        """
        if self._runner is not None:
            raise RuntimeError("Dialer.start() called twice")
        self._runner = asyncio.create_task(self._run(), name="dialer")
        started = asyncio.ensure_future(self._started.wait())
        await asyncio.wait({started, self._runner}, return_when=asyncio.FIRST_COMPLETED)
        if self._runner.done():
            started.cancel()
            self._runner.result()
            raise DialerClosed("the dialer stopped while starting")
        if self._restore:
            try:
                await self._resume_stored()
            except BaseException:
                await self.aclose()
                raise
        log.info("dialer.started", sessions=len(self._sessions))

    async def aclose(self) -> None:
        """Stop every session (hanging up its calls) and the task group. Idempotent.

        Stored sessions keep their state (``running``/``paused``), so the next
        start resumes them. If cancelled, the session tasks are cancelled too
        before the cancellation propagates.
        """
        if self._runner is None:
            return
        if not self._closing:
            self._closing = True
            self._stop.set()
        await asyncio.shield(self._runner)
        log.info("dialer.closed")

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

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._started.set()
            await self._stop.wait()
            for task in self._tasks.values():
                task.cancel()
        self._tg = None

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        if self._tg is None:
            # Shutting down: the recording stays on disk, named by the call id,
            # but is not linked to its record.
            log.warning("dialer.task_dropped", task=name)
            if asyncio.iscoroutine(coro):
                coro.close()
            return
        self._tg.create_task(self._guard(coro, name), name=name)

    @staticmethod
    async def _guard(coro: Awaitable[None], name: str) -> None:
        # A side task (attaching a recording) must not take the task group and
        # every agent's session down with it; it is logged with its name.
        try:
            await coro
        except (DialerError, TimeoutError, OSError) as exc:
            log.error("dialer.task_failed", task=name, error=str(exc))

    # ------------------------------------------------------------------ sessions

    async def start_session(self, agent: str, list_id: uuid.UUID) -> SessionInfo:
        """Start ``agent`` dialing ``list_id``; returns once the session runs.

        Raises :class:`~sip.exceptions.UnknownAgent`, :class:`UnknownList`,
        :class:`SessionExists` (the agent dials already) or :class:`DialerClosed`.
        """
        self._check_open()
        agent_cfg = self._pool.agent(agent)
        name = agent_key(agent_cfg)
        if name in self._sessions:
            raise SessionExists(f"{name} is already dialing a list")
        try:
            await self._store.call_lists.get_list(list_id)
        except NotFound as exc:
            raise UnknownList(f"no call list {list_id}") from exc
        user_id = await self._user_id(agent_cfg.user)
        await self._repair(list_id, user_id)
        record = await self._store.dialer.create_session(name, list_id, origin=self._config.site.id)
        session = self._launch(record, agent_cfg, name, user_id, paused=False, resumed=False)
        return session.info()

    async def pause(self, agent: str, *, timeout: float = 10.0) -> None:
        """Take no new number after the current call (at once if none)."""
        await self._session(agent).command(Pause("agent"), timeout=timeout)

    async def resume(self, agent: str, *, timeout: float = 10.0) -> None:
        await self._session(agent).command(Resume(), timeout=timeout)

    async def skip(self, agent: str, *, timeout: float = 10.0) -> None:
        """Skip the current number: the one waiting for the gap to end (not
        dialed), or the one ringing or talking (hung up)."""
        await self._session(agent).command(Skip(), timeout=timeout)

    async def stop(self, agent: str, *, timeout: float = 10.0) -> None:
        """Stop the session: a ringing customer is hung up at once, a
        conversation is let finish. Returns when the request is applied; the
        session task ends after the call."""
        await self._session(agent).command(Stop("agent"), timeout=timeout)

    async def set_disposition(
        self, agent: str, call_id: uuid.UUID, disposition: str, *, timeout: float = 10.0
    ) -> None:
        """Store the agent's disposition of one of their dialer calls; during the
        wrap-up of that call it also ends the wrap-up."""
        agent_cfg = self._pool.agent(agent)
        user_id = await self._user_id(agent_cfg.user)
        session = self._sessions.get(agent_key(agent_cfg))
        try:
            call = await self._store.calls.get(call_id)
        except NotFound as exc:
            raise DialerError(f"no call {call_id}") from exc
        mine = (session is not None and call_id in session.calls) or (
            user_id is not None and call.agent_user_id == user_id
        )
        if not mine or call.dialer_item_id is None:
            raise DialerError(f"call {call_id} is not a dialer call of {agent}")
        await self._store.calls.set_disposition(call_id, disposition, actor=user_id)
        if session is not None:
            await session.command(Disposition(call_id), timeout=timeout)

    def live_calls(self) -> set[uuid.UUID]:
        """The ids of the calls the dialing sessions are placing or carrying."""
        return {c for s in self._sessions.values() if (c := s.live_call()) is not None}

    def sessions(self) -> list[SessionInfo]:
        """The sessions running in this dialer."""
        return [s.info() for s in self._sessions.values()]

    def session(self, agent: str) -> DialingSession:
        """The live session object of ``agent`` (timings, counters)."""
        return self._session(agent)

    async def wait_session(self, agent: str, *, timeout: float) -> None:
        """Wait until ``agent``'s session task has ended (finished or stopped)."""
        task = self._tasks.get(agent_key(self._pool.agent(agent)))
        if task is None:
            return
        async with asyncio.timeout(timeout):
            await asyncio.shield(task)

    # ------------------------------------------------------------------ lists

    async def create_list(
        self,
        name: str,
        numbers: Iterable[str | CallListEntry],
        *,
        owner: uuid.UUID | None = None,
    ) -> tuple[CallList, CallListReport]:
        """A list from pasted numbers (or entries): normalised, invalid ones kept
        as ``invalid`` with their reason, duplicates merged. Numbers the outbound
        policy forbids to every agent are left out and listed in the report's
        ``invalid`` with the rule (``forbidden: ... (outbound.refused_types)``)."""
        allowed, refused = screen_entries(numbers, self._config)
        call_list, report = await self._store.call_lists.create_list(
            name, owner, allowed, actor=owner
        )
        return call_list, with_refused(report, refused)

    async def import_list(
        self,
        name: str,
        data: bytes,
        *,
        format: str = "csv",
        column: str | int = 0,
        header: bool = True,
        owner: uuid.UUID | None = None,
    ) -> tuple[CallList, CallListReport]:
        """A list from one column of a CSV or XLSX file; raises
        :class:`~crm_store.ImportRejected` (bad rows by line) and creates nothing
        if any row is malformed."""
        if format not in ("csv", "xlsx"):
            raise DialerError(f"unknown import format {format!r}")
        entries = read_numbers(
            data, format="csv" if format == "csv" else "xlsx", column=column, header=header
        )
        return await self.create_list(name, entries, owner=owner)

    async def list_from_clients(
        self,
        name: str,
        *,
        tags: Sequence[str] = (),
        responsible: uuid.UUID | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        owner: uuid.UUID | None = None,
    ) -> tuple[CallList, CallListReport]:
        entries = await self._store.dialer.entries_from_clients(
            tags=tags, owner=responsible, created_from=created_from, created_to=created_to
        )
        return await self.create_list(name, entries, owner=owner)

    async def list_from_leads(
        self,
        name: str,
        *,
        statuses: Sequence[LeadStatus | str] = (),
        lead_owner: uuid.UUID | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        owner: uuid.UUID | None = None,
    ) -> tuple[CallList, CallListReport]:
        entries = await self._store.dialer.entries_from_leads(
            statuses=statuses, owner=lead_owner, created_from=created_from, created_to=created_to
        )
        return await self.create_list(name, entries, owner=owner)

    async def progress(self, list_id: uuid.UUID) -> dict[CallListItemState, int]:
        return await self._store.call_lists.progress(list_id)

    async def add_do_not_call(
        self, number: str, *, prefix: bool = False, reason: str | None = None
    ) -> DoNotCallEntry:
        return await self._store.dialer.add_do_not_call(number, prefix=prefix, reason=reason)

    async def remove_do_not_call(self, entry_id: uuid.UUID) -> None:
        await self._store.dialer.remove_do_not_call(entry_id)

    async def do_not_call(self) -> list[DoNotCallEntry]:
        return await self._store.dialer.do_not_call()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._tg is None or self._closing:
            raise DialerClosed("the dialer is not running")

    def _session(self, agent: str) -> DialingSession:
        self._check_open()
        name = agent_key(self._pool.agent(agent))
        session = self._sessions.get(name)
        if session is None:
            raise NoSession(f"{name} has no dialing session")
        return session

    async def _user_id(self, username: str | None) -> uuid.UUID | None:
        if username is None:
            return None
        user = await self._store.users.by_username(username)
        return user.id if user is not None else None

    def _launch(
        self,
        record: DialerSessionRecord,
        agent_cfg: AgentConfig,
        name: str,
        user_id: uuid.UUID | None,
        *,
        paused: bool,
        resumed: bool,
    ) -> DialingSession:
        assert self._tg is not None
        session = DialingSession(
            record,
            agent=agent_cfg,
            agent_name=name,
            user_id=user_id,
            pool=self._pool,
            config=self._config,
            bus=self._bus,
            store=self._store,
            clock=self._clock,
            spawn=self._spawn,
            agent_timeout=self._agent_timeout,
        )
        self._sessions[name] = session
        task = self._tg.create_task(
            session.run(paused=paused, resumed=resumed), name=f"dialer-session-{name}"
        )
        self._tasks[name] = task

        def forget(_task: asyncio.Task[None]) -> None:
            self.gap_timings.extend(session.timings)
            if self._sessions.get(name) is session:
                del self._sessions[name]
                self._tasks.pop(name, None)

        task.add_done_callback(forget)
        return session

    async def _resume_stored(self) -> None:
        stored = await self._store.dialer.sessions(origin=self._config.site.id, states=_ACTIVE)
        for record in stored:
            try:
                agent_cfg = self._pool.agent(record.agent)
            except UnknownAgent as exc:  # the agent left the configuration
                log.warning("dialer.session_orphaned", agent=record.agent, error=str(exc))
                await self._store.dialer.update_session(record.id, state="stopped")
                continue
            name = agent_key(agent_cfg)
            if name in self._sessions:
                await self._store.dialer.update_session(record.id, state="stopped")
                continue
            user_id = await self._user_id(agent_cfg.user)
            await self._repair(record.list_id, user_id)
            log.info("dialer.session_resumed", agent=name, list_id=str(record.list_id))
            self._launch(
                record, agent_cfg, name, user_id, paused=record.state == "paused", resumed=True
            )

    async def _repair(self, list_id: uuid.UUID, user_id: uuid.UUID | None) -> None:
        """Make ``user_id``'s leftovers on the list consistent after a stop or crash.

        Claimed, never-dialed numbers go back to the queue. A number left
        ``dialing`` gets its outcome from its newest call record: the reason it
        ended with, ``completed`` if it was answered, else ``interrupted``. It is
        never dialed again in this pass (it may have rung the customer).
        """
        released = await self._store.dialer.release_claims(list_id, user_id)
        repaired = 0
        for pending in await self._store.dialer.pending_attempts(list_id):
            item, call = pending.item, pending.call
            if item.claimed_by != user_id:
                continue
            if call is None:
                reason = CallEndReason.INTERRUPTED
            else:
                if call.ended_at is None:
                    try:
                        call = await self._store.calls.end(call.id, CallEndReason.INTERRUPTED)
                    except Conflict:
                        call = await self._store.calls.get(call.id)
                if call.end_reason is not None and call.end_reason not in (
                    CallEndReason.INTERRUPTED,
                ):
                    reason = call.end_reason
                elif call.answered_at is not None:
                    reason = CallEndReason.COMPLETED
                else:
                    reason = CallEndReason.INTERRUPTED
            retry = retry_at(reason, item.attempts + 1, self._config.dialer, self._clock())
            await self._store.call_lists.record_result(
                item.id, reason, call.id if call is not None else None, retry_at=retry
            )
            repaired += 1
        if released or repaired:
            log.warning(
                "dialer.list_repaired",
                list_id=str(list_id),
                released=released,
                resolved=repaired,
            )


def screen_entries(
    entries: Iterable[str | CallListEntry], config: Config
) -> tuple[list[CallListEntry], list[tuple[str, str]]]:
    """Split a list's input by the outbound policy of ``config``: the entries to
    store, and ``(raw number, "forbidden: ...")`` for those no agent may call.

    Numbers that do not normalise are kept, for the store to report as invalid;
    the dialing agent's own rules are applied again at dial time.
    """
    policy = OutboundPolicy.from_config(config)
    region = config.site.default_region
    allowed: list[CallListEntry] = []
    refused: list[tuple[str, str]] = []
    for entry in entries:
        item = CallListEntry(entry) if isinstance(entry, str) else entry
        e164 = try_normalize_phone(item.number, region)
        refusal = policy.check_any_agent(e164) if e164 is not None else None
        if refusal is None:
            allowed.append(item)
        else:
            refused.append((item.number, str(refusal)))
    return allowed, refused


def with_refused(report: CallListReport, refused: Sequence[tuple[str, str]]) -> CallListReport:
    """``report`` of the stored entries, counting the ``refused`` ones in too."""
    if not refused:
        return report
    return CallListReport(
        total=report.total + len(refused),
        added=report.added,
        duplicates=report.duplicates,
        invalid=(*report.invalid, *refused),
    )
