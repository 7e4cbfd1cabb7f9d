"""The I/O of one customer call of a dialing session, mixed into
:class:`dialer.session.DialingSession`.

The :class:`~dialer.attempt.Attempt` decides; these steps place the INVITE,
follow both legs' events, bridge and record, create the lead, hang up, and
store and announce the outcome. They run in the session's task, one input at a
time, like everything else the session does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import structlog

from bus import (
    Bus,
    CallAnswered,
    CallCreated,
    CallDialing,
    CallRinging,
    DialerDialing,
    DialerResult,
    DialerSessionPaused,
    Event,
)
from config import AgentConfig, Config
from crm_store import (
    CallDirection,
    CallListItem,
    Conflict,
    LeadSource,
    Store,
    StoreError,
    StoreUnavailable,
)
from sip.conversation import GONE, RECORDING_WAIT, Conversation
from sip.legs import Answered, Ended, Gone, LegEvent, MediaUp, Recorded, RecordingLost, Ringing
from sip.pool import SipPool, pbx_uri

from .agent_leg import AgentLeg, ring_agent
from .attempt import Attempt, AttemptPhase, Leg
from .rules import retry_at
from .state import Phase, SessionState

__all__ = ["Arrival", "CallSteps", "GapTiming", "Timer"]

log = structlog.get_logger(__name__)

# How long a leg we hung up may take to report its end before we stop waiting.
HANGUP_GUARD = 10.0
# The attempt's transaction starts at most this long before the INVITE's
# deadline: if the process dies in between, that number counts as dialed
# (`interrupted`) and is not dialed again, so the window stays short.
_MAX_WRITE_LEAD = 0.15


@dataclass(frozen=True, slots=True)
class Arrival:
    """A leg's event, stamped on arrival."""

    leg: Leg
    leg_id: str
    event: LegEvent
    loop_at: float
    wall_at: float


@dataclass(frozen=True, slots=True)
class Timer:
    token: int


@dataclass(frozen=True, slots=True)
class GapTiming:
    """One unanswered call's end and the next INVITE, as the session saw them
    (epoch seconds): ``sent_at - ended_at - gap`` is the scheduling overhead."""

    ended_at: float
    sent_at: float
    gap: float


class CallSteps:
    """The steps of a customer call; the session provides the attributes."""

    id: uuid.UUID
    list_id: uuid.UUID
    agent: AgentConfig
    agent_name: str
    user_id: uuid.UUID | None
    dialed: int
    answered: int
    remaining: int
    state: SessionState
    timings: deque[GapTiming]
    calls: deque[uuid.UUID]
    _pool: SipPool
    _config: Config
    _bus: Bus
    _store: Store
    _clock: Callable[[], datetime]
    _spawn: Callable[[Awaitable[None], str], None]
    _agent_timeout: float
    _worker_id: str
    _caller_id: str | None
    _queue: asyncio.Queue[Any]
    _timers: dict[int, asyncio.TimerHandle]
    _tokens: int
    _att: Attempt | None
    _conv: Conversation | None
    _agent: AgentLeg | None
    _dial_at: float | None
    _gap: float
    _gap_end_wall: float | None
    _gap_announced: bool
    _wrap_until: float | None
    _wrap_call: uuid.UUID | None
    _write_seconds: float

    # ------------------------------------------------------------------ dialing

    async def _place(self, item: CallListItem, deadline: float) -> Attempt | None:
        """Store the attempt and send the customer's INVITE at ``deadline``.

        Returns the attempt under way (already over if the INVITE could not be
        sent), or ``None`` when the item was taken out of the session's hands.
        """
        loop = asyncio.get_running_loop()
        number = item.number_e164 or item.raw_number
        att = Attempt(item, number, uuid.uuid4())
        call_id = att.call_id
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
            return None
        self._note_write(loop.time() - began)
        # From here the item is `dialing`: the INVITE must go. This wait is at
        # most the lead (a few ms); requests arriving meanwhile are handled
        # right after the INVITE (a stop then hangs it up).
        if deadline > loop.time():
            await asyncio.sleep(deadline - loop.time())
        with structlog.contextvars.bound_contextvars(call_id=str(call_id)):
            self.state.dial()
            self._att = att
            self._conv = Conversation(
                call_id,
                pool=self._pool,
                bus=self._bus,
                store=self._store,
                config=self._config,
                name="dialer",
                agent=self.agent_name,
            )
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
            except GONE as exc:
                log.error("dialer.originate_failed", error=str(exc))
                att.customer_ended(loop_at=loop.time(), wall_at=time.time(), reason="failed")
                return att
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
        return att

    async def _conclude(self, att: Attempt) -> None:
        loop = asyncio.get_running_loop()
        self._cancel_timer(att.ring_timer)
        if att.agent is not None:
            self._cancel_timer(att.agent.timer)
        outcome = att.outcome()
        reason, result = outcome.reason, outcome.result
        conv = self._conversation(att)
        end_loop = att.end_loop if att.end_loop is not None else loop.time()
        end_wall = att.end_wall if att.end_wall is not None else time.time()
        # The gap's deadline first, from the moment the final response arrived:
        # everything below happens inside the gap.
        self._dial_at = end_loop + self._gap
        talk = (time.monotonic() - att.answered_at) if att.answered_at is not None else None
        if outcome.interrupted:
            # The pool closes the records of a dead worker's calls: this end is
            # only announced.
            conv.stored = False
        await conv.end(
            reason,
            sip_code=att.sip_code,
            agent=self.agent_name,
            talk_seconds=talk,
            leg=att.ended_by.value if att.ended_by is not None else None,
        )
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
        self._att = self._conv = None
        log.info("dialer.result", number=att.number, result=result, sip_code=att.sip_code)
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
        if outcome.interrupted:
            self.state.interrupt("worker_crashed")
            self._dial_at = None
        else:
            if result == "abandoned" and not self.state.stop_requested:
                self.state.pause_requested = "agent_unreachable"
            self.state.call_ended(answered=outcome.answered)
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

    # ------------------------------------------------------------------ the customer's leg

    async def _on_customer(self, att: Attempt, ev: Arrival) -> None:
        event = ev.event
        if isinstance(event, Gone):
            att.interrupt(loop_at=ev.loop_at, wall_at=ev.wall_at)
            self._cancel_timer(att.ring_timer)
            self._agent = None
            return
        if isinstance(event, MediaUp):
            att.customer_media = True
            if att.answered:
                await self._bridge(att)
            return
        if isinstance(event, Ringing):
            if att.ringing():
                log.info("dialer.ringing", number=att.number)
                conv = self._conversation(att)
                await conv.store_step(self._store.calls.mark_ringing(att.call_id))
                self._bus.publish(
                    CallRinging(call_id=att.call_id, leg=Leg.CUSTOMER.value, agent=self.agent_name)
                )
        elif isinstance(event, Answered):
            await self._customer_answered(att)
        elif isinstance(event, Ended):
            self._customer_ended(att, ev, event)
            if att.answered and att.ended_by is None:
                att.ended_by = Leg.CUSTOMER
            if not att.agent_done:
                await self._hangup_att_agent(att)

    def _customer_ended(self, att: Attempt, ev: Arrival | None, event: Ended | None) -> None:
        if ev is not None:
            loop_at, wall_at = ev.loop_at, ev.wall_at
        else:
            loop_at, wall_at = asyncio.get_running_loop().time(), time.time()
        if event is not None:
            ended = att.customer_ended(
                loop_at=loop_at, wall_at=wall_at, reason=event.reason, sip_code=event.sip_code
            )
        else:
            ended = att.customer_ended(loop_at=loop_at, wall_at=wall_at)
        if ended:
            self._cancel_timer(att.ring_timer)

    async def _customer_answered(self, att: Attempt) -> None:
        if att.answered:
            return
        self._cancel_timer(att.ring_timer)
        if not att.answer(time.monotonic()):
            # Our CANCEL crossed the 200: the worker hangs the leg up.
            return
        self.answered += 1
        self.state.answered()
        await self._conversation(att).store_step(self._store.calls.mark_answered(att.call_id))
        self._bus.publish(
            CallAnswered(call_id=att.call_id, leg=Leg.CUSTOMER.value, agent=self.agent_name)
        )
        log.info("dialer.answered", number=att.number)
        if self.state.persistent:
            await self._bridge(att)
        else:
            await self._ring_agent_for(att)
        await self._link_or_create_lead(att)

    # ------------------------------------------------------------------ the agent's legs

    async def _ring_agent(self, leg_id: str) -> AgentLeg | None:
        """Ring the agent's phone as leg ``leg_id``, with its answer timer; the
        one way both the persistent and the per-call leg are placed. ``None``
        when the leg could not be placed."""
        try:
            leg = await ring_agent(
                self._pool,
                self._config,
                self.agent,
                worker_id=self._worker_id,
                leg_id=leg_id,
                listener=partial(self._put_leg, Leg.AGENT, leg_id),
            )
        except GONE as exc:
            log.error("dialer.agent_originate_failed", error=str(exc))
            return None
        leg.timer = self._start_timer(self._agent_timeout)
        return leg

    async def _ring_agent_for(self, att: Attempt) -> None:
        att.agent = await self._ring_agent(f"{att.call_id}-agent")
        if att.agent is None:
            att.abandon()
            await self._hangup_customer(att)

    async def _on_call_agent(self, att: Attempt, leg: AgentLeg, ev: Arrival) -> None:
        """Events of a per-call agent leg."""
        event = ev.event
        if leg.ended:
            return
        if isinstance(event, Gone):
            att.interrupt(loop_at=asyncio.get_running_loop().time(), wall_at=time.time())
            self._cancel_timer(att.ring_timer)
        elif isinstance(event, MediaUp):
            leg.media()
            await self._bridge(att)
        elif isinstance(event, Answered):
            leg.answered()
            self._cancel_timer(leg.timer)
        elif isinstance(event, Ended):
            leg.end("hung up")
            if not att.bridged:
                att.abandon()
            elif att.ended_by is None:
                att.ended_by = Leg.AGENT
            if not att.customer_done:
                await self._hangup_customer(att)

    # ------------------------------------------------------------------ bridge and record

    async def _bridge(self, att: Attempt) -> None:
        if att.phase is not AttemptPhase.ANSWERED or not att.customer_media:
            return
        agent = self._agent if self.state.persistent else att.agent
        if agent is None or not agent.has_media:
            return
        conv = self._conversation(att)
        try:
            await conv.bridge_and_record(
                att.leg_id, agent.leg_id, listener=partial(self._recording_done, conv)
            )
        except GONE as exc:
            log.error("dialer.bridge_failed", error=str(exc))
            await self._hangup_customer(att)
            return
        att.bridge()
        if not self.state.persistent:
            self.state.agent_joined()

    def _recording_done(self, conv: Conversation, event: LegEvent) -> None:
        # The recording ends after the call, often after its attempt: its word
        # is taken in a task of its own, bounded like a click-to-call's wait.
        if isinstance(event, Recorded | RecordingLost):
            self._spawn(self._take_recording(conv, event), f"dialer-recording-{conv.call_id}")

    async def _take_recording(self, conv: Conversation, event: LegEvent) -> None:
        async with asyncio.timeout(RECORDING_WAIT):
            await conv.on_recording(event)

    def _conversation(self, att: Attempt) -> Conversation:
        conv = self._conv
        if conv is None or conv.call_id != att.call_id:  # pragma: no cover - set with the attempt
            raise RuntimeError(f"no conversation for call {att.call_id}")
        return conv

    async def _link_or_create_lead(self, att: Attempt) -> None:
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

    # ------------------------------------------------------------------ hanging up

    async def _hangup_customer(self, att: Attempt) -> None:
        if att.customer_done or att.hangup_sent:
            return
        att.cancel()
        att.hangup_sent = True
        att.guard.add(self._start_timer(HANGUP_GUARD))
        with contextlib.suppress(*GONE):
            await self._pool.hangup(att.leg_id)

    async def _hangup_att_agent(self, att: Attempt) -> None:
        if att.agent is None or att.agent.ended:
            return
        att.guard.add(self._start_timer(HANGUP_GUARD))
        with contextlib.suppress(*GONE):
            await self._pool.hangup(att.agent.leg_id)

    # ------------------------------------------------------------------ helpers

    def _note_write(self, seconds: float) -> None:
        # Rises at once, decays slowly: a lead too long costs nothing but a
        # few ms of the gap spent waiting after the write.
        self._write_seconds = max(seconds, 0.8 * self._write_seconds + 0.2 * seconds)

    def _write_lead(self) -> float:
        return min(_MAX_WRITE_LEAD, 1.5 * self._write_seconds + 0.002)

    def _put_leg(self, leg: Leg, leg_id: str, event: LegEvent) -> None:
        # Stamped here, on arrival: the gap runs from this moment, not from when
        # the session gets round to it.
        loop = asyncio.get_running_loop()
        self._queue.put_nowait(Arrival(leg, leg_id, event, loop.time(), time.time()))

    def _start_timer(self, delay: float) -> int:
        self._tokens += 1
        token = self._tokens
        loop = asyncio.get_running_loop()
        self._timers[token] = loop.call_later(delay, self._queue.put_nowait, Timer(token))
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
