"""One agent's dialing session: claim, dial, gap or talk, result, next.

:class:`DialingSession` drives a :class:`~dialer.state.SessionState` with the
SIP pool, the store and the bus, in one task (owned by :class:`dialer.Dialer`).
Everything that reaches the session — the pool's leg events, its own timers and
the agent's requests — goes through one queue and is handled in order, so the
state machine never sees two things at once.

Durability: the claim, the attempt (call record written and the item moved to
``dialing`` in one transaction, just before the INVITE) and the result are each
stored before the next step, so a restarted dialer knows which numbers were
never dialed (``claimed``: given back) and which were (``dialing``: their
outcome comes from the call record; they are not dialed again).

The gap: when the customer's final response (or our CANCEL's) arrives, the
deadline of the next INVITE is computed once on the loop's monotonic clock; the
result is stored and the next number claimed *during* the gap, so that at the
deadline only the attempt's single transaction stands between the clock and
the INVITE.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Any

import structlog

from bus import (
    Bus,
    CallAnswered,
    CallBridged,
    CallCreated,
    CallDialing,
    CallEnded,
    CallRinging,
    DialerDialing,
    DialerGap,
    DialerItemClaimed,
    DialerItemSkipped,
    DialerResult,
    DialerSessionFinished,
    DialerSessionPaused,
    DialerSessionResumed,
    DialerSessionStarted,
    DialerSessionStopped,
    Event,
    RecordingReady,
)
from config import AgentConfig, Config
from config.outbound import OutboundPolicy
from crm_store import (
    CallDirection,
    CallEndReason,
    CallListItem,
    Conflict,
    DialerSessionRecord,
    LeadSource,
    Store,
    StoreError,
    StoreUnavailable,
)
from sip.exceptions import PoolError, WorkerCommandError, WorkerGone
from sip.legs import (
    Answered,
    Ended,
    Gone,
    LegEvent,
    MediaUp,
    Recorded,
    RecordingLost,
    Ringing,
    end_reason,
)
from sip.pool import SipPool, pbx_uri

from .exceptions import InvalidState
from .rules import CallingHours, callee_zones, retry_at
from .state import Phase, SessionState

__all__ = ["DialingSession", "GapTiming", "SessionInfo"]

log = structlog.get_logger(__name__)

# Commands that may fail because the leg or its worker is already gone; when
# hanging up, that is the wanted result anyway.
_GONE = (PoolError, WorkerCommandError, WorkerGone, TimeoutError)
# How long a leg we hung up may take to report its end before we stop waiting.
_HANGUP_GUARD = 10.0
# How long WAITING sleeps at most before looking for due numbers again (another
# agent may have put numbers back, an operator may have added some).
_WAIT_RECHECK = 30.0
_RECORDING_WAIT = 15.0
# The attempt's transaction starts at most this long before the INVITE's
# deadline: if the process dies in between, that number counts as dialed
# (`interrupted`) and is not dialed again, so the window stays short.
_MAX_WRITE_LEAD = 0.15


class Leg(StrEnum):
    AGENT = "agent"
    CUSTOMER = "customer"


@dataclass(frozen=True, slots=True)
class _LegEvent:
    leg: Leg
    leg_id: str
    event: LegEvent
    loop_at: float
    wall_at: float


@dataclass(frozen=True, slots=True)
class _Timer:
    token: int


@dataclass(slots=True)
class _Command:
    kind: str
    reply: asyncio.Future[None]
    arg: Any = None


_Input = _LegEvent | _Timer | _Command


@dataclass(frozen=True, slots=True)
class GapTiming:
    """One unanswered call's end and the next INVITE, as the session saw them
    (epoch seconds): ``sent_at - ended_at - gap`` is the scheduling overhead."""

    ended_at: float
    sent_at: float
    gap: float


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A snapshot of a dialing session."""

    session_id: uuid.UUID
    agent: str
    list_id: uuid.UUID
    phase: Phase
    dialed: int
    answered: int
    remaining: int
    reason: str | None
    call_id: uuid.UUID | None


@dataclass(eq=False)
class _Attempt:
    item: CallListItem
    number: str
    call_id: uuid.UUID
    leg_id: str
    rang: bool = False
    answered_at: float | None = None
    customer_media: bool = False
    customer_done: bool = False
    bridged: bool = False
    recording: bool = False
    timed_out: bool = False
    hung_up: bool = False
    skipped: bool = False
    abandoned: bool = False
    interrupted: bool = False
    worker_reason: str | None = None
    sip_code: int = 0
    end_loop: float | None = None
    end_wall: float | None = None
    ring_timer: int | None = None
    agent_timer: int | None = None
    lead_id: uuid.UUID | None = None
    agent_leg: str | None = None  # per-call agent leg
    agent_done: bool = True
    agent_media: bool = False
    ended_by: Leg | None = None
    guard: set[int] = field(default_factory=set)


class DialingSession:
    """Dials one call list for one agent until finished, stopped or cancelled.

    Cancelling :meth:`run` (what :meth:`dialer.Dialer.aclose` does) hangs up the
    session's legs and leaves its stored state ``running``/``paused``, so that a
    restarted dialer resumes it; the attempt in progress is then resolved from
    its call record at that restart.
    """

    def __init__(
        self,
        record: DialerSessionRecord,
        *,
        agent: AgentConfig,
        agent_name: str,
        user_id: uuid.UUID | None,
        pool: SipPool,
        config: Config,
        bus: Bus,
        store: Store,
        clock: Callable[[], datetime],
        spawn: Callable[[Awaitable[None], str], None],
        agent_timeout: float,
    ) -> None:
        self.id = record.id
        self.list_id = record.list_id
        self.agent = agent
        self.agent_name = agent_name
        self.user_id = user_id
        self.dialed = record.dialed
        self.answered = record.answered
        self.remaining = 0
        self.state = SessionState(
            str(record.id), persistent=config.dialer.agent_leg == "persistent"
        )
        self.timings: deque[GapTiming] = deque(maxlen=10_000)
        self.calls: deque[uuid.UUID] = deque(maxlen=1000)
        self._pool = pool
        self._config = config
        self._bus = bus
        self._store = store
        self._clock = clock
        self._spawn = spawn
        self._agent_timeout = agent_timeout
        self._hours = CallingHours(config.site)
        self._policy = OutboundPolicy.from_config(config)
        self._worker_id = pool.worker_for_line(agent.line)
        line = config.line(agent.line)
        self._caller_id = line.caller_id or config.pbx.outbound_caller_id
        self._queue: asyncio.Queue[_Input] = asyncio.Queue()
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._tokens = 0
        self._att: _Attempt | None = None
        self._prepared: CallListItem | None = None
        self._skip_prepared = False
        self._dial_at: float | None = None
        self._gap_end_wall: float | None = None
        self._gap_announced = True
        self._wait_until: float | None = None
        self._wrap_until: float | None = None
        self._wrap_call: uuid.UUID | None = None
        self._agent_leg: str | None = None
        self._agent_seq = 0
        self._agent_up = False
        self._agent_media = False
        self._agent_timer: int | None = None
        self._agent_failed = False
        self._gap = float(config.dialer.gap_seconds)
        # Claims older than this, left by a daemon killed between claim and dial,
        # are taken over; the session does not finish before they could be.
        self._lease = timedelta(seconds=config.dialer.claim_lease_seconds)
        # Running mean of the attempt's store transaction, for its lead.
        self._write_seconds = 0.01

    # ------------------------------------------------------------------ API (loop side)

    def live_call(self) -> uuid.UUID | None:
        """The id of the call being placed or in progress, if any."""
        return self._att.call_id if self._att is not None else None

    def info(self) -> SessionInfo:
        return SessionInfo(
            self.id,
            self.agent_name,
            self.list_id,
            self.state.phase,
            self.dialed,
            self.answered,
            self.remaining,
            self.state.reason,
            self._att.call_id if self._att is not None else None,
        )

    async def command(self, kind: str, arg: Any = None, *, timeout: float = 10.0) -> None:
        """Hand a request to the session and wait until it has been applied.

        Raises :class:`InvalidState` when the session's phase refuses it and
        ``TimeoutError`` if the session does not take it within ``timeout``.
        Cancellation stops the wait; the request may still be applied.
        """
        reply: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Command(kind, reply, arg))
        async with asyncio.timeout(timeout):
            await reply

    # ------------------------------------------------------------------ main loop

    async def run(self, *, paused: bool = False, resumed: bool = False) -> None:
        """Dial until the list is done or the session stopped; see the class doc."""
        with structlog.contextvars.bound_contextvars(
            agent=self.agent_name,
            campaign=str(self.list_id),
            list_id=str(self.list_id),
            session_id=str(self.id),
        ):
            try:
                self.remaining = await self._store.dialer.remaining(self.list_id)
                self.state.begin(paused=paused)
                self._publish(
                    DialerSessionStarted,
                    agent_leg=self._config.dialer.agent_leg,
                    resumed=resumed,
                )
                if paused:
                    self._publish(DialerSessionPaused, reason="restored")
                await self._persist()
                await self._loop()
            except StoreUnavailable as exc:
                # The store is away (down, full): no number can be claimed or its
                # result kept, so the session stops between calls instead of ending
                # the dialer. Its stored state stays active: it resumes at the next
                # start, or when started again once the store is back.
                log.error("dialer.store_unavailable", error=str(exc))
                self._publish(DialerSessionStopped, reason="store_unavailable")
            finally:
                await asyncio.shield(self._cleanup())

    async def _loop(self) -> None:
        while not self.state.done:
            phase = self.state.phase
            if phase is Phase.PAUSED:
                await self._step(None)
            elif phase is Phase.CONNECTING_AGENT:
                await self._connect_agent()
            elif phase is Phase.WAITING:
                await self._waiting()
            elif phase is Phase.WRAP_UP:
                await self._wrap_up()
            elif phase in (Phase.READY, Phase.GAP):
                await self._next_item()
            else:  # pragma: no cover - the attempt returns in a settled phase
                raise InvalidState(f"session loop in phase {phase.value}")
        if self.state.phase is Phase.FINISHED:
            self._publish(DialerSessionFinished)
        else:
            self._publish(DialerSessionStopped, reason=self.state.reason or "stopped")
        await self._persist()

    async def _step(self, deadline: float | None) -> bool:
        """Handle one input; ``False`` when ``deadline`` (loop time) passed first."""
        loop = asyncio.get_running_loop()
        try:
            if deadline is None:
                item = await self._queue.get()
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                async with asyncio.timeout(remaining):
                    item = await self._queue.get()
        except TimeoutError:
            return False
        await self._handle(item)
        return True

    # ------------------------------------------------------------------ phases

    async def _next_item(self) -> None:
        loop = asyncio.get_running_loop()
        if self._prepared is None:
            self._prepared = await self._prepare()
            self._skip_prepared = False
        item = self._prepared
        if item is None:
            due = await self._store.dialer.next_due(self.list_id)
            claimed = await self._store.dialer.oldest_claim(self.list_id)
            if due is None and claimed is None and self.state.phase in (Phase.READY, Phase.GAP):
                self.state.exhausted()
            elif self.state.phase in (Phase.READY, Phase.GAP):
                self.state.waiting()
                now = self._clock()
                look = [due] if due is not None else []
                if claimed is not None:
                    # Another dialer's claim: dialed within about one gap if that
                    # dialer lives, else back to the queue when its lease ends.
                    dialed_by = claimed + timedelta(seconds=self._gap + 1.0)
                    look.append(dialed_by if dialed_by > now else claimed + self._lease)
                wait = max(0.0, (min(look) - now).total_seconds()) if look else _WAIT_RECHECK
                self._wait_until = loop.time() + min(wait, _WAIT_RECHECK)
            return
        if self._dial_at is None:
            self._dial_at = loop.time()
        if (
            self.state.phase is Phase.GAP
            and not self._gap_announced
            and self._gap_end_wall is not None
        ):
            self._gap_announced = True
            self._publish(
                DialerGap,
                seconds=self._gap,
                until=datetime.fromtimestamp(self._gap_end_wall + self._gap, UTC),
            )
        # The attempt's transaction starts a little before the deadline (its
        # recent duration), so that the INVITE itself leaves on time even when
        # several sessions' writes queue on the store at the same moment.
        write_at = self._dial_at - self._write_lead()
        while self.state.phase in (Phase.READY, Phase.GAP) and not self._skip_prepared:
            if not await self._step(write_at):
                break
        if self.state.phase not in (Phase.READY, Phase.GAP):
            await self._release_prepared()
            return
        if self._skip_prepared:
            await self._skip_item(item, "agent", "skipped by the agent")
            self._prepared = None
            return
        self._prepared = None
        await self._attempt(item, self._dial_at)

    async def _prepare(self) -> CallListItem | None:
        """Claim the next due number the rules allow; skip or defer the others."""
        loop = asyncio.get_running_loop()
        while True:
            now = self._clock()
            began = loop.time()
            item = await self._store.call_lists.claim_next(
                self.list_id, self.user_id, now=now, lease=self._lease
            )
            # A claim is a write like the attempt's: its duration tells how busy
            # the store is right now, before the first attempt has been timed.
            self._note_write(loop.time() - began)
            if item is None:
                return None
            number = item.number_e164 or item.raw_number
            log.info("dialer.claimed", number=number, item_id=str(item.id))
            self._publish(
                DialerItemClaimed, item_id=item.id, number=number, attempt=item.attempts + 1
            )
            dnc = await self._store.dialer.do_not_call_match(number)
            if dnc is not None:
                kind = "prefix" if dnc.prefix else "number"
                detail = f"{kind} {dnc.number}" + (f": {dnc.reason}" if dnc.reason else "")
                await self._skip_item(item, "do_not_call", detail)
                continue
            # Again at dial time: the list may predate the policy, or have been
            # screened for another agent's rules.
            refusal = self._policy.check_number(number, agent=self.agent_name)
            if refusal is not None:
                await self._skip_item(item, "forbidden", f"{refusal.message} ({refusal.rule})")
                continue
            explicit = (
                await self._store.dialer.client_timezone(item.client_id)
                if item.client_id is not None
                else None
            )
            zones = callee_zones(number, explicit, self._config.site.timezone)
            outside = self._hours.check(now, zones)
            if outside is not None:
                reason = f"outside_calling_hours: {outside.detail}"
                await self._store.dialer.defer(item.id, outside.until, reason)
                log.info("dialer.deferred", number=number, until=outside.until.isoformat())
                self._publish(
                    DialerItemSkipped,
                    item_id=item.id,
                    number=number,
                    reason="outside_calling_hours",
                    detail=outside.detail,
                    until=outside.until,
                )
                continue
            return item

    async def _skip_item(self, item: CallListItem, reason: str, detail: str) -> None:
        number = item.number_e164 or item.raw_number
        try:
            await self._store.call_lists.skip(item.id, f"{reason}: {detail}"[:200])
        except Conflict as exc:
            log.warning("dialer.skip_conflict", error=str(exc))
            return
        self.remaining = await self._store.dialer.remaining(self.list_id)
        log.info("dialer.skipped", number=number, reason=reason, detail=detail)
        self._publish(
            DialerItemSkipped, item_id=item.id, number=number, reason=reason, detail=detail
        )

    async def _release_prepared(self) -> None:
        item, self._prepared = self._prepared, None
        if item is not None:
            await self._store.dialer.release_item(item.id)

    async def _waiting(self) -> None:
        deadline = self._wait_until
        while self.state.phase is Phase.WAITING and await self._step(deadline):
            pass
        if self.state.phase is Phase.WAITING:
            self.state.wake()
            self._dial_at = None

    async def _wrap_up(self) -> None:
        while self.state.phase is Phase.WRAP_UP and await self._step(self._wrap_until):
            if self._wrap_call is None:
                break
        if self.state.phase is Phase.WRAP_UP:
            self._wrap_call = None
            self._dial_at = None
            self.state.wrapped_up(reconnect=self.state.persistent and not self._agent_up)

    # ------------------------------------------------------------------ the agent's leg

    async def _connect_agent(self) -> None:
        """Ring the agent's phone for the persistent leg; pause if nobody answers."""
        if self._agent_up:
            self.state.agent_connected()
            return
        loop = asyncio.get_running_loop()
        self._agent_failed = False
        leg_id = await self._dial_agent()
        if leg_id is None:
            self.state.pause("agent_unreachable")
            self._publish(DialerSessionPaused, reason="agent_unreachable")
            await self._persist()
            return
        deadline = loop.time() + self._agent_timeout + _HANGUP_GUARD
        while self.state.phase is Phase.CONNECTING_AGENT:
            if self._agent_up and self._agent_media:
                self.state.agent_connected()
                self._dial_at = None
                return
            if self._agent_failed or not await self._step(deadline):
                await self._hangup_agent()
                self.state.pause("agent_unreachable")
                self._publish(DialerSessionPaused, reason="agent_unreachable")
                await self._persist()
                return
        # Paused or stopped while the phone rang.
        await self._hangup_agent()

    async def _dial_agent(self) -> str | None:
        self._agent_seq += 1
        leg_id = f"{self.id}-agent-{self._agent_seq}"
        self._agent_leg = leg_id
        self._agent_up = self._agent_media = False
        try:
            await self._pool.originate(
                worker_id=self._worker_id,
                line=self.agent.line,
                leg_id=leg_id,
                to_uri=pbx_uri(self._config, self.agent.extension),
                listener=partial(self._put_leg, Leg.AGENT, leg_id),
            )
        except _GONE as exc:
            log.error("dialer.agent_originate_failed", error=str(exc))
            self._agent_leg = None
            return None
        self._agent_timer = self._start_timer(self._agent_timeout)
        return leg_id

    async def _hangup_agent(self) -> None:
        leg, self._agent_leg = self._agent_leg, None
        self._agent_up = self._agent_media = False
        if leg is not None:
            with contextlib.suppress(*_GONE):
                await self._pool.hangup(leg)

    # ------------------------------------------------------------------ one attempt

    def _note_write(self, seconds: float) -> None:
        # Rises at once, decays slowly: a lead too long costs nothing but a
        # few ms of the gap spent waiting after the write.
        self._write_seconds = max(seconds, 0.8 * self._write_seconds + 0.2 * seconds)

    def _write_lead(self) -> float:
        return min(_MAX_WRITE_LEAD, 1.5 * self._write_seconds + 0.002)

    async def _attempt(self, item: CallListItem, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        number = item.number_e164 or item.raw_number
        call_id = uuid.uuid4()
        att = _Attempt(item=item, number=number, call_id=call_id, leg_id=str(call_id))
        began = loop.time()
        try:
            await self._store.dialer.start_attempt(
                item.id,
                from_number=self.agent.line,
                to_number=number,
                agent_user_id=self.user_id,
                client_id=item.client_id,
                lead_id=item.lead_id,
                origin=self._config.site.id,
                worker_id=self._worker_id,
                line=self.agent.line,
                call_id=call_id,
            )
        except Conflict as exc:
            # Taken out of our hands meanwhile (skipped by a supervisor).
            log.warning("dialer.attempt_conflict", error=str(exc))
            return
        self._note_write(loop.time() - began)
        # From here the item is `dialing`: the INVITE must go. This wait is at
        # most the lead (a few ms); requests arriving meanwhile are handled
        # right after the INVITE (a stop then hangs it up).
        if deadline > loop.time():
            await asyncio.sleep(deadline - loop.time())
        with structlog.contextvars.bound_contextvars(call_id=str(call_id)):
            self.state.dial()
            self._att = att
            self.calls.append(call_id)
            try:
                sent_at = await self._pool.originate(
                    worker_id=self._worker_id,
                    line=self.agent.line,
                    leg_id=att.leg_id,
                    to_uri=pbx_uri(self._config, number),
                    listener=partial(self._put_leg, Leg.CUSTOMER, att.leg_id),
                    caller_id=self._caller_id,
                )
            except _GONE as exc:
                log.error("dialer.originate_failed", error=str(exc))
                att.customer_done = True
                att.worker_reason = "failed"
                att.end_loop, att.end_wall = loop.time(), time.time()
                await self._conclude(att)
                return
            self.dialed += 1
            if self._gap_end_wall is not None:
                self.timings.append(GapTiming(self._gap_end_wall, sent_at, self._gap))
                self._gap_end_wall = None
            att.ring_timer = self._start_timer(float(self._config.dialer.ring_timeout))
            self._bus.publish(
                CallCreated(
                    call_id=call_id,
                    direction=CallDirection.OUTBOUND.value,
                    from_number=self.agent.line,
                    to_number=number,
                    line=self.agent.line,
                    agent=self.agent_name,
                    worker_id=self._worker_id,
                )
            )
            self._bus.publish(
                CallDialing(
                    call_id=call_id,
                    leg=Leg.CUSTOMER.value,
                    agent=self.agent_name,
                    dialed_at=datetime.fromtimestamp(sent_at, UTC),
                )
            )
            self._publish(
                DialerDialing,
                item_id=item.id,
                call_id=call_id,
                number=number,
                attempt=item.attempts + 1,
            )
            log.info("dialer.dialing", number=number, attempt=item.attempts + 1)
            while not (att.customer_done and att.agent_done):
                await self._step(None)
            await self._conclude(att)

    async def _conclude(self, att: _Attempt) -> None:
        loop = asyncio.get_running_loop()
        self._cancel_timer(att.ring_timer)
        self._cancel_timer(att.agent_timer)
        answered = att.answered_at is not None
        end_loop = att.end_loop if att.end_loop is not None else loop.time()
        end_wall = att.end_wall if att.end_wall is not None else time.time()
        # The gap's deadline first, from the moment the final response arrived:
        # everything below happens inside the gap.
        self._dial_at = end_loop + self._gap
        if answered:
            reason = CallEndReason.COMPLETED
        elif att.interrupted:
            reason = CallEndReason.INTERRUPTED
        elif att.timed_out:
            reason = CallEndReason.NO_ANSWER
        elif att.hung_up or att.abandoned:
            reason = CallEndReason.CANCELLED
        else:
            reason = end_reason(att.worker_reason, att.sip_code, rang=att.rang)
        result = reason.value
        if att.skipped and not answered:
            result = "skipped"
        elif att.abandoned:
            result = "abandoned"
        talk = (time.monotonic() - att.answered_at) if att.answered_at is not None else None
        if not att.interrupted:
            await self._store_step(self._store.calls.end(att.call_id, reason))
        retry = (
            retry_at(reason, att.item.attempts + 1, self._config.dialer, self._clock())
            if result == reason.value
            else None
        )
        lost: StoreUnavailable | None = None
        try:
            await self._store.call_lists.record_result(
                att.item.id, result, att.call_id, retry_at=retry
            )
            self.remaining = await self._store.dialer.remaining(self.list_id)
        except StoreUnavailable as exc:
            # The call is over whatever the store says: it is announced, then the
            # session stops (run). The item's result is repaired from the call
            # record (queued meanwhile) when the list is dialed again.
            lost = exc
        self._att = None
        log.info("dialer.result", number=att.number, result=result, sip_code=att.sip_code)
        self._bus.publish(
            CallEnded(
                call_id=att.call_id,
                reason=reason.value,
                sip_code=att.sip_code,
                agent=self.agent_name,
                talk_seconds=talk,
                leg=att.ended_by.value if att.ended_by is not None else None,
            )
        )
        if lost is not None:
            raise lost
        self._publish(
            DialerResult,
            item_id=att.item.id,
            call_id=att.call_id,
            number=att.number,
            result=result,
            retry_at=retry,
            lead_id=att.lead_id,
        )
        if att.interrupted:
            self.state.interrupt("worker_crashed")
            self._dial_at = None
        else:
            if att.abandoned and not self.state.stop_requested:
                self.state.pause_requested = "agent_unreachable"
            self.state.call_ended(answered=answered)
        phase = self.state.phase
        if phase is Phase.GAP:
            # DialerGap is published once the next number is claimed: after the
            # list's last number there is no gap, the session finishes.
            self._gap_end_wall = end_wall
            self._gap_announced = False
        elif phase is Phase.WRAP_UP:
            self._dial_at = None
            self._wrap_call = att.call_id
            self._wrap_until = loop.time() + self._config.dialer.wrap_up_seconds
        elif phase is Phase.PAUSED:
            self._dial_at = None
            self._publish(DialerSessionPaused, reason=self.state.reason or "paused")
        await self._persist()

    # ------------------------------------------------------------------ inputs

    async def _handle(self, item: _Input) -> None:
        if isinstance(item, _Command):
            await self._on_command(item)
        elif isinstance(item, _Timer):
            await self._on_timer(item.token)
        else:
            await self._on_leg(item)

    async def _on_command(self, cmd: _Command) -> None:
        try:
            await self._apply(cmd)
        except InvalidState as exc:
            if not cmd.reply.done():
                cmd.reply.set_exception(exc)
            return
        if not cmd.reply.done():
            cmd.reply.set_result(None)

    async def _apply(self, cmd: _Command) -> None:
        att = self._att
        if cmd.kind == "pause":
            if self.state.pause(str(cmd.arg or "agent")):
                if self.state.phase is Phase.PAUSED:
                    await self._release_prepared()
                    self._dial_at = None
                self._publish(DialerSessionPaused, reason=self.state.reason or "agent")
                await self._persist()
        elif cmd.kind == "resume":
            was_paused = self.state.phase is Phase.PAUSED
            self.state.resume()
            if was_paused:
                self._dial_at = None
                self._publish(DialerSessionResumed)
                await self._persist()
        elif cmd.kind == "stop":
            if self.state.stop(str(cmd.arg or "agent")):
                await self._release_prepared()
            elif self.state.phase is Phase.STOPPING and att is not None:
                # Never leave a customer ringing (or answered and waiting for an
                # agent who will not come) for nobody. A conversation under way
                # is let finish: the state machine keeps the stop for its end.
                await self._hangup_customer(att)
                await self._hangup_att_agent(att)
        elif cmd.kind == "skip":
            phase = self.state.phase
            if phase in (Phase.READY, Phase.GAP) and self._prepared is not None:
                self._skip_prepared = True
            elif att is not None and not att.customer_done:
                att.skipped = True
                await self._hangup_customer(att)
            else:
                raise InvalidState(f"dialing session is {phase.value}; nothing to skip")
        elif cmd.kind == "disposition":
            if cmd.arg == self._wrap_call:
                self._wrap_call = None
        else:  # pragma: no cover - the Dialer sends only the kinds above
            raise InvalidState(f"unknown request {cmd.kind}")

    async def _on_timer(self, token: int) -> None:
        self._timers.pop(token, None)
        att = self._att
        if att is not None and token == att.ring_timer:
            att.ring_timer = None
            if att.answered_at is None and not att.customer_done:
                log.info("dialer.ring_timeout")
                att.timed_out = True
                await self._hangup_customer(att)
        elif att is not None and token == att.agent_timer:
            att.agent_timer = None
            if att.agent_leg is not None and not att.agent_media:
                att.abandoned = True
                await self._hangup_customer(att)
                await self._hangup_att_agent(att)
        elif token == self._agent_timer:
            self._agent_timer = None
            if not self._agent_up:
                self._agent_failed = True
        elif att is not None and token in att.guard:
            # A leg we hung up never reported its end: count it as ended.
            log.warning("dialer.hangup_unconfirmed")
            if not att.customer_done:
                self._customer_ended(att, None, None)
            att.agent_done = True

    async def _on_leg(self, ev: _LegEvent) -> None:
        att = self._att
        event = ev.event
        if ev.leg is Leg.CUSTOMER:
            if att is None or ev.leg_id != att.leg_id:
                return
            await self._on_customer(att, ev)
            return
        if att is not None and ev.leg_id == att.agent_leg:
            await self._on_call_agent(att, event)
            return
        if ev.leg_id != self._agent_leg:
            return
        # The persistent agent leg.
        if isinstance(event, Gone):
            self._agent_leg, self._agent_up, self._agent_media = None, False, False
            self._agent_failed = True
            if att is not None:
                att.interrupted = True
                self._customer_ended(att, ev, None)
        elif isinstance(event, MediaUp):
            self._agent_media = True
            if att is not None:
                await self._bridge(att)
        elif isinstance(event, Answered | Ended):
            if isinstance(event, Answered):
                self._agent_up = True
                self._cancel_timer(self._agent_timer)
            else:
                self._agent_leg, self._agent_up, self._agent_media = None, False, False
                self._agent_failed = True
                log.info("dialer.agent_leg_ended", code=event.sip_code)
                if att is not None and not att.customer_done:
                    # No agent to talk to: end the customer's call.
                    att.ended_by = Leg.AGENT if att.answered_at is not None else None
                    await self._hangup_customer(att)
                elif (
                    att is None
                    and self.state.phase in (Phase.READY, Phase.GAP, Phase.WAITING)
                    and self.state.pause("agent_left")
                ):
                    await self._release_prepared()
                    self._dial_at = None
                    self._publish(DialerSessionPaused, reason="agent_left")
                    await self._persist()

    async def _on_customer(self, att: _Attempt, ev: _LegEvent) -> None:
        event = ev.event
        if isinstance(event, Gone):
            att.interrupted = True
            self._customer_ended(att, ev, None)
            att.agent_done = True
            self._agent_leg, self._agent_up, self._agent_media = None, False, False
            return
        if isinstance(event, MediaUp):
            att.customer_media = True
            if att.answered_at is not None:
                await self._bridge(att)
            return
        if isinstance(event, Ringing):
            if not att.rang and att.answered_at is None:
                att.rang = True
                log.info("dialer.ringing", number=att.number)
                await self._store_step(self._store.calls.mark_ringing(att.call_id))
                self._bus.publish(
                    CallRinging(call_id=att.call_id, leg=Leg.CUSTOMER.value, agent=self.agent_name)
                )
        elif isinstance(event, Answered):
            await self._customer_answered(att)
        elif isinstance(event, Ended):
            self._customer_ended(att, ev, event)
            if att.answered_at is not None and att.ended_by is None:
                att.ended_by = Leg.CUSTOMER
            if att.agent_leg is not None and not att.agent_done:
                await self._hangup_att_agent(att)

    def _customer_ended(self, att: _Attempt, ev: _LegEvent | None, event: Ended | None) -> None:
        if att.customer_done:
            return
        att.customer_done = True
        att.end_loop = ev.loop_at if ev is not None else asyncio.get_running_loop().time()
        att.end_wall = ev.wall_at if ev is not None else time.time()
        if event is not None:
            att.worker_reason = event.reason
            att.sip_code = event.sip_code
        self._cancel_timer(att.ring_timer)

    async def _customer_answered(self, att: _Attempt) -> None:
        if att.answered_at is not None:
            return
        self._cancel_timer(att.ring_timer)
        if att.hung_up or att.customer_done:
            # Our CANCEL crossed the 200: the worker hangs the leg up.
            return
        att.answered_at = time.monotonic()
        self.answered += 1
        self.state.answered()
        await self._store_step(self._store.calls.mark_answered(att.call_id))
        self._bus.publish(
            CallAnswered(call_id=att.call_id, leg=Leg.CUSTOMER.value, agent=self.agent_name)
        )
        log.info("dialer.answered", number=att.number)
        if self.state.persistent:
            await self._bridge(att)
        else:
            await self._ring_agent_for(att)
        await self._link_or_create_lead(att)

    async def _ring_agent_for(self, att: _Attempt) -> None:
        self._agent_seq += 1
        leg_id = f"{att.call_id}-agent"
        att.agent_leg = leg_id
        att.agent_done = False
        try:
            await self._pool.originate(
                worker_id=self._worker_id,
                line=self.agent.line,
                leg_id=leg_id,
                to_uri=pbx_uri(self._config, self.agent.extension),
                listener=partial(self._put_leg, Leg.AGENT, leg_id),
            )
        except _GONE as exc:
            log.error("dialer.agent_originate_failed", error=str(exc))
            att.agent_done = True
            att.abandoned = True
            await self._hangup_customer(att)
            return
        att.agent_timer = self._start_timer(self._agent_timeout)

    async def _on_call_agent(self, att: _Attempt, event: LegEvent) -> None:
        """Events of a per-call agent leg."""
        if isinstance(event, Gone):
            att.agent_done = True
            att.interrupted = True
            self._customer_ended(att, None, None)
        elif isinstance(event, MediaUp):
            att.agent_media = True
            await self._bridge(att)
        elif isinstance(event, Answered | Ended):
            if isinstance(event, Answered):
                self._cancel_timer(att.agent_timer)
            else:
                att.agent_done = True
                if not att.bridged:
                    att.abandoned = True
                elif att.ended_by is None:
                    att.ended_by = Leg.AGENT
                if not att.customer_done:
                    await self._hangup_customer(att)

    async def _bridge(self, att: _Attempt) -> None:
        if att.bridged or att.answered_at is None or not att.customer_media or att.customer_done:
            return
        if self.state.persistent:
            agent_leg, ready = self._agent_leg, self._agent_media
        else:
            agent_leg, ready = att.agent_leg, att.agent_media
        if agent_leg is None or not ready:
            return
        try:
            await self._pool.bridge(att.leg_id, agent_leg)
        except _GONE as exc:
            log.error("dialer.bridge_failed", error=str(exc))
            await self._hangup_customer(att)
            return
        att.bridged = True
        if not self.state.persistent:
            self.state.agent_joined()
        if self._config.recording.enabled:
            try:
                await self._pool.record_start(
                    att.leg_id, partial(self._recording_done, att.call_id)
                )
                att.recording = True
            except _GONE as exc:
                # The conversation matters more than its recording; the record
                # says it failed, and why.
                log.error("dialer.recording_failed", error=str(exc))
                if isinstance(exc, WorkerCommandError) and exc.code == "recording_failed":
                    await self._store_step(
                        self._store.calls.recording_failed(att.call_id, exc.message)
                    )
        self._bus.publish(
            CallBridged(call_id=att.call_id, agent=self.agent_name, recording=att.recording)
        )

    def _recording_done(self, call_id: uuid.UUID, event: LegEvent) -> None:
        if isinstance(event, Recorded):
            self._spawn(
                self._attach_recording(call_id, event.path, event.duration_seconds),
                f"dialer-recording-{call_id}",
            )
        elif isinstance(event, RecordingLost):
            self._spawn(self._recording_lost(call_id, event.reason), f"dialer-recording-{call_id}")

    async def _recording_lost(self, call_id: uuid.UUID, reason: str) -> None:
        # The worker could not write the recording (a full disk): the call went on.
        async with asyncio.timeout(_RECORDING_WAIT):
            await self._store_step(self._store.calls.recording_failed(call_id, reason))
        self._bus.publish(
            RecordingReady(call_id=call_id, path="", duration_seconds=0.0, recording_failed=reason)
        )

    async def _attach_recording(self, call_id: uuid.UUID, path: str, duration: float) -> None:
        async with asyncio.timeout(_RECORDING_WAIT):
            await self._store_step(self._store.calls.attach_recording(call_id, path, duration))
        self._bus.publish(RecordingReady(call_id=call_id, path=path, duration_seconds=duration))

    async def _link_or_create_lead(self, att: _Attempt) -> None:
        item = att.item
        if item.client_id is not None or item.lead_id is not None:
            return
        if not self._config.dialer.create_leads:
            return
        try:
            match, created = await self._store.leads.find_or_create_for_number(
                att.number, LeadSource.DIALER, owner=self.user_id, actor=self.user_id
            )
            if match.kind == "client":
                await self._store.calls.link(att.call_id, client_id=match.id)
            else:
                await self._store.calls.link(att.call_id, lead_id=match.id)
        except StoreError as exc:
            log.error("dialer.lead_failed", error=str(exc))
            return
        if created:
            att.lead_id = match.id
            log.info("dialer.lead_created", lead_id=str(match.id))

    async def _hangup_customer(self, att: _Attempt) -> None:
        if att.customer_done or att.hung_up:
            return
        att.hung_up = True
        att.guard.add(self._start_timer(_HANGUP_GUARD))
        with contextlib.suppress(*_GONE):
            await self._pool.hangup(att.leg_id)

    async def _hangup_att_agent(self, att: _Attempt) -> None:
        if att.agent_leg is None or att.agent_done:
            return
        att.guard.add(self._start_timer(_HANGUP_GUARD))
        with contextlib.suppress(*_GONE):
            await self._pool.hangup(att.agent_leg)

    # ------------------------------------------------------------------ helpers

    def _put_leg(self, leg: Leg, leg_id: str, event: LegEvent) -> None:
        # Stamped here, on arrival: the gap runs from this moment, not from when
        # the session gets round to it.
        loop = asyncio.get_running_loop()
        self._queue.put_nowait(_LegEvent(leg, leg_id, event, loop.time(), time.time()))

    def _start_timer(self, delay: float) -> int:
        self._tokens += 1
        token = self._tokens
        loop = asyncio.get_running_loop()
        self._timers[token] = loop.call_later(delay, self._queue.put_nowait, _Timer(token))
        return token

    def _cancel_timer(self, token: int | None) -> None:
        if token is not None:
            handle = self._timers.pop(token, None)
            if handle is not None:
                handle.cancel()

    def _publish(self, kind: type[Event], **fields: Any) -> None:
        self._bus.publish(
            kind(  # type: ignore[call-arg]
                session_id=self.id,
                agent=self.agent_name,
                list_id=self.list_id,
                dialed=self.dialed,
                answered=self.answered,
                remaining=self.remaining,
                **fields,
            )
        )

    async def _persist(self) -> None:
        await self._store_step(
            self._store.dialer.update_session(
                self.id,
                state=self.state.stored_state,
                dialed=self.dialed,
                answered=self.answered,
            )
        )

    async def _store_step(self, step: Awaitable[object]) -> None:
        # A ringing time or a counter that fails to store must not drop a
        # customer; the claim, the attempt and the result are not written here.
        try:
            await step
        except Conflict as exc:
            log.warning("dialer.store_conflict", error=str(exc))
        except StoreError as exc:
            log.error("dialer.store_failed", error=str(exc))

    async def _cleanup(self) -> None:
        """Hang up what the session still holds; give back an undialed claim."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        att, self._att = self._att, None
        try:
            async with asyncio.timeout(5.0):
                if att is not None and not att.customer_done:
                    with contextlib.suppress(*_GONE):
                        await self._pool.hangup(att.leg_id)
                    if att.agent_leg is not None:
                        with contextlib.suppress(*_GONE):
                            await self._pool.hangup(att.agent_leg)
                if self._agent_leg is not None:
                    await self._hangup_agent()
                if self._prepared is not None:
                    with contextlib.suppress(StoreError):
                        await self._release_prepared()
        except TimeoutError:
            log.error("dialer.cleanup_timeout")
