"""One agent's dialing session: claim, dial, gap or talk, result, next.

:class:`DialingSession` drives a :class:`~dialer.state.SessionState` with the
SIP pool, the store and the bus, in one task (owned by :class:`dialer.Dialer`).
Everything that reaches the session — the pool's leg events, its own timers and
the agent's requests (:mod:`dialer.commands`) — goes through one queue and is
handled in order, so the state machines never see two things at once. Each
customer call is an :class:`~dialer.attempt.Attempt`, driven by the steps of
:mod:`dialer._calls`; the next number is claimed by those of
:mod:`dialer._claims`.

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
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from bus import (
    Bus,
    DialerGap,
    DialerSessionFinished,
    DialerSessionPaused,
    DialerSessionResumed,
    DialerSessionStarted,
    DialerSessionStopped,
)
from config import AgentConfig, Config
from config.outbound import OutboundPolicy
from crm_store import (
    CallListItem,
    DialerSessionRecord,
    Store,
    StoreError,
    StoreUnavailable,
)
from sip.conversation import GONE, Conversation
from sip.legs import Answered, Ended, Gone, MediaUp
from sip.pool import SipPool

from ._calls import HANGUP_GUARD, Arrival, GapTiming, Timer
from ._claims import ClaimSteps
from .agent_leg import AgentLeg
from .attempt import Attempt, Leg
from .commands import Disposition, Pause, Resume, SessionCommand, Skip, Stop
from .exceptions import InvalidState
from .rules import CallingHours
from .state import Phase, SessionState

__all__ = ["DialingSession", "GapTiming", "SessionInfo"]

log = structlog.get_logger(__name__)

# How long WAITING sleeps at most before looking for due numbers again (another
# agent may have put numbers back, an operator may have added some).
_WAIT_RECHECK = 30.0


@dataclass(slots=True)
class _Command:
    request: SessionCommand
    reply: asyncio.Future[None]


_Input = Arrival | Timer | _Command


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


class DialingSession(ClaimSteps):
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
        self._att: Attempt | None = None
        self._conv: Conversation | None = None
        self._prepared: CallListItem | None = None
        self._skip_prepared = False
        self._dial_at: float | None = None
        self._gap_end_wall: float | None = None
        self._gap_announced = True
        self._wait_until: float | None = None
        self._wrap_until: float | None = None
        self._wrap_call: uuid.UUID | None = None
        # The persistent agent leg, while it lives.
        self._agent: AgentLeg | None = None
        self._agent_seq = 0
        # The persistent leg ended or did not answer in time: connecting fails.
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

    async def command(self, request: SessionCommand, *, timeout: float = 10.0) -> None:
        """Hand ``request`` to the session and wait until it has been applied.

        Raises :class:`InvalidState` when the session's phase refuses it and
        ``TimeoutError`` if the session does not take it within ``timeout``.
        Cancellation stops the wait; the request may still be applied.
        """
        reply: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Command(request, reply))
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
        att = await self._place(item, self._dial_at)
        if att is None:
            return
        with structlog.contextvars.bound_contextvars(call_id=str(att.call_id)):
            while not att.settled:
                await self._step(None)
            await self._conclude(att)

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
            reconnect = self.state.persistent and not (self._agent is not None and self._agent.up)
            self.state.wrapped_up(reconnect=reconnect)

    # ------------------------------------------------------------------ the agent's leg

    async def _connect_agent(self) -> None:
        """Ring the agent's phone for the persistent leg; pause if nobody answers."""
        if self._agent is not None and self._agent.up:
            self.state.agent_connected()
            return
        loop = asyncio.get_running_loop()
        self._agent_failed = False
        if not await self._dial_agent():
            self.state.pause("agent_unreachable")
            self._publish(DialerSessionPaused, reason="agent_unreachable")
            await self._persist()
            return
        deadline = loop.time() + self._agent_timeout + HANGUP_GUARD
        while self.state.phase is Phase.CONNECTING_AGENT:
            if self._agent is not None and self._agent.connected:
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

    async def _dial_agent(self) -> bool:
        self._agent_seq += 1
        self._agent = await self._ring_agent(f"{self.id}-agent-{self._agent_seq}")
        return self._agent is not None

    async def _hangup_agent(self) -> None:
        agent, self._agent = self._agent, None
        if agent is not None:
            with contextlib.suppress(*GONE):
                await self._pool.hangup(agent.leg_id)

    def _lose_agent(self) -> None:
        """The persistent leg is gone: the next connection attempt fails at once."""
        self._agent = None
        self._agent_failed = True

    # ------------------------------------------------------------------ inputs

    async def _handle(self, item: _Input) -> None:
        if isinstance(item, _Command):
            await self._on_command(item)
        elif isinstance(item, Timer):
            await self._on_timer(item.token)
        else:
            await self._on_leg(item)

    async def _on_command(self, cmd: _Command) -> None:
        try:
            await self._apply(cmd.request)
        except InvalidState as exc:
            if not cmd.reply.done():
                cmd.reply.set_exception(exc)
            return
        if not cmd.reply.done():
            cmd.reply.set_result(None)

    async def _apply(self, request: SessionCommand) -> None:
        att = self._att
        match request:
            case Pause(reason=reason):
                if self.state.pause(reason):
                    if self.state.phase is Phase.PAUSED:
                        await self._release_prepared()
                        self._dial_at = None
                    self._publish(DialerSessionPaused, reason=self.state.reason or reason)
                    await self._persist()
            case Resume():
                was_paused = self.state.phase is Phase.PAUSED
                self.state.resume()
                if was_paused:
                    self._dial_at = None
                    self._publish(DialerSessionResumed)
                    await self._persist()
            case Stop(reason=reason):
                if self.state.stop(reason):
                    await self._release_prepared()
                elif self.state.phase is Phase.STOPPING and att is not None:
                    # Never leave a customer ringing (or answered and waiting for
                    # an agent who will not come) for nobody. A conversation under
                    # way is let finish: the state machine keeps the stop for its end.
                    await self._hangup_customer(att)
                    await self._hangup_att_agent(att)
            case Skip():
                phase = self.state.phase
                if phase in (Phase.READY, Phase.GAP) and self._prepared is not None:
                    self._skip_prepared = True
                elif att is not None and not att.customer_done:
                    att.skip()
                    await self._hangup_customer(att)
                else:
                    raise InvalidState(f"dialing session is {phase.value}; nothing to skip")
            case Disposition(call_id=call_id):
                if call_id == self._wrap_call:
                    self._wrap_call = None

    async def _on_timer(self, token: int) -> None:
        self._timers.pop(token, None)
        att = self._att
        agent = self._agent
        if att is not None and token == att.ring_timer:
            att.ring_timer = None
            if att.ring_timeout():
                log.info("dialer.ring_timeout")
                await self._hangup_customer(att)
        elif att is not None and att.agent is not None and token == att.agent.timer:
            att.agent.timer = None
            if not att.agent.ended and not att.agent.has_media:
                att.abandon()
                await self._hangup_customer(att)
                await self._hangup_att_agent(att)
        elif agent is not None and token == agent.timer:
            agent.timer = None
            if not agent.up:
                self._agent_failed = True
        elif att is not None and token in att.guard:
            # A leg we hung up never reported its end: count it as ended.
            log.warning("dialer.hangup_unconfirmed")
            if not att.customer_done:
                self._customer_ended(att, None, None)
            if att.agent is not None and not att.agent.ended:
                att.agent.end("hang-up unconfirmed")

    async def _on_leg(self, ev: Arrival) -> None:
        att = self._att
        event = ev.event
        if ev.leg is Leg.CUSTOMER:
            if att is None or ev.leg_id != att.leg_id:
                return
            await self._on_customer(att, ev)
            return
        if att is not None and att.agent is not None and ev.leg_id == att.agent.leg_id:
            await self._on_call_agent(att, att.agent, ev)
            return
        agent = self._agent
        if agent is None or ev.leg_id != agent.leg_id:
            return
        # The persistent agent leg.
        if isinstance(event, Gone):
            agent.end("worker exited")
            self._lose_agent()
            if att is not None:
                att.interrupt(loop_at=ev.loop_at, wall_at=ev.wall_at)
                self._cancel_timer(att.ring_timer)
        elif isinstance(event, MediaUp):
            agent.media()
            if att is not None:
                await self._bridge(att)
        elif isinstance(event, Answered):
            agent.answered()
            self._cancel_timer(agent.timer)
        elif isinstance(event, Ended):
            agent.end("hung up")
            self._lose_agent()
            log.info("dialer.agent_leg_ended", code=event.sip_code)
            if att is not None and not att.customer_done:
                # No agent to talk to: end the customer's call.
                att.ended_by = Leg.AGENT if att.answered else None
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

    async def _cleanup(self) -> None:
        """Hang up what the session still holds; give back an undialed claim."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        att, self._att = self._att, None
        try:
            async with asyncio.timeout(5.0):
                if att is not None and not att.customer_done:
                    with contextlib.suppress(*GONE):
                        await self._pool.hangup(att.leg_id)
                    if att.agent is not None:
                        with contextlib.suppress(*GONE):
                            await self._pool.hangup(att.agent.leg_id)
                if self._agent is not None:
                    await self._hangup_agent()
                if self._prepared is not None:
                    with contextlib.suppress(StoreError):
                        await self._release_prepared()
        except TimeoutError:
            log.error("dialer.cleanup_timeout")
