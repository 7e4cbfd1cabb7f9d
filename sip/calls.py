"""Click-to-call: ring the agent's own phone, then the customer, then bridge and record.

:class:`CallService` is the service layer over :class:`~sip.pool.SipPool`: it
keeps the store's call record and the bus in step with a
:class:`~sip.call_state.ClickToCall` state machine, one task per call.

How a call goes (see ``docs/sip-pool.md``):

1. ``click_to_call()`` checks the agent, the number and two free call slots on
   the agent's worker, writes the call record (``outbound``, from the agent's
   line to the E.164 number) and publishes ``CallCreated``.
2. The agent's worker calls the agent's phone through the PBX (``CallDialing``,
   ``CallRinging`` and ``CallAnswered`` with ``leg="agent"``). If the phone does
   not answer within ``agent_timeout`` the call ends ``no_answer``; if it
   rejects, ``rejected``; the customer is never dialed. The record then has no
   ``ringing_at``/``answered_at`` (those describe the customer), and
   ``CallEnded.leg`` is ``"agent"``.
3. Once the agent answers, the worker calls the customer, presenting the caller
   id (argument, else the line's, else ``pbx.outbound_caller_id``) as
   ``P-Asserted-Identity``. Its ringing and answer are stored
   (``mark_ringing``/``mark_answered``) and published with ``leg="customer"``.
   Busy, rejection, unreachability and the ring timeout end the call with that
   reason, and the agent leg is hung up.
4. When the customer answers and both legs have audio, they are bridged and the
   customer leg is recorded (``CallBridged``) into
   ``<recording.directory>/<call id>.wav``. Either side hanging up ends the
   other leg; the call ends ``completed``. When the worker reports the
   recording complete it is attached to the record (``RecordingReady``).

If the worker dies during the call the pool closes the record as
``interrupted`` and publishes the ending; the call's task just stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import structlog

from bus import (
    Bus,
    CallAnswered,
    CallCreated,
    CallDialing,
    CallDtmf,
    CallRinging,
)
from config import AgentConfig, Config
from config.outbound import OutboundPolicy
from crm_store import (
    CallDirection,
    CallEndReason,
    InvalidPhone,
    LeadSource,
    Store,
    StoreError,
    normalize_phone,
)
from sip.call_state import ClickToCall, Leg, Phase
from sip.control import transfer_outcome
from sip.conversation import Conversation
from sip.exceptions import (
    CallForbidden,
    InvalidNumber,
    PoolClosed,
    PoolError,
    UnknownCall,
    WorkerCommandError,
    WorkerGone,
)
from sip.legs import (
    GONE,
    Answered,
    CallLegs,
    Digit,
    Ended,
    Failed,
    Gone,
    LegEvent,
    MediaUp,
    Recorded,
    RecordingLost,
    Ringing,
    Transfer,
)
from sip.pool import SipPool, agent_key, pbx_uri

from ._service import CallTaskService

__all__ = ["ActiveCall", "CallService"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Timeout:
    leg: Leg


@dataclass(frozen=True, slots=True)
class _HangupRequest:
    pass


@dataclass(frozen=True, slots=True)
class _LegEvent:
    leg: Leg
    event: LegEvent


_Item = _Timeout | _HangupRequest | _LegEvent


@dataclass(eq=False)
class _Session:
    call_id: uuid.UUID
    agent: AgentConfig
    agent_name: str
    worker_id: str
    number: str
    caller_id: str | None
    agent_timeout: float
    ring_timeout: float
    state: ClickToCall
    conversation: Conversation
    user_id: uuid.UUID | None = None
    reserved: int = 2
    queue: asyncio.Queue[_Item] = field(default_factory=asyncio.Queue)
    timers: dict[Leg, asyncio.TimerHandle] = field(default_factory=dict)
    hung_up: set[Leg] = field(default_factory=set)
    answered_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    #: The agent leg's id once another leg took its place (attended transfer).
    agent_leg: str | None = None
    #: The last write of the call's record queued behind the others (``_store_later``).
    store_chain: asyncio.Task[None] | None = None

    @property
    def leg_ids(self) -> dict[Leg, str]:
        # The customer leg carries the call's id, so the worker names the
        # recording <call id>.wav; the agent leg gets an id of its own.
        agent = self.agent_leg or f"{self.call_id}-agent"
        return {Leg.CUSTOMER: str(self.call_id), Leg.AGENT: agent}

    def put(self, leg: Leg, event: LegEvent) -> None:
        self.queue.put_nowait(_LegEvent(leg, event))


@dataclass(frozen=True, slots=True)
class ActiveCall:
    """A snapshot of a click-to-call call in progress."""

    call_id: uuid.UUID
    agent: str
    number: str
    worker_id: str
    phase: Phase


class CallService(CallTaskService):
    """Places click-to-call calls through the pool, keeping store and bus in step.

    Use ``async with CallService(pool, ...) as calls:`` or :meth:`start` /
    :meth:`aclose`.
    """

    def __init__(
        self,
        pool: SipPool,
        *,
        config: Config,
        bus: Bus,
        store: Store,
        agent_timeout: float = 30.0,
        ring_timeout: float | None = None,
        close_grace: float = 5.0,
    ) -> None:
        super().__init__(close_grace=close_grace)
        self._pool = pool
        self._config = config
        self._bus = bus
        self._store = store
        self.agent_timeout = agent_timeout
        self.ring_timeout = float(ring_timeout or config.dialer.ring_timeout)
        self._sessions: dict[uuid.UUID, _Session] = {}
        self._policy = OutboundPolicy.from_config(config)

    # ------------------------------------------------------------------ lifespan

    _runner_name = "sip-calls"

    async def aclose(self) -> None:
        """Hang up every call, wait up to ``close_grace`` s for them to end, stop.

        Calls still not over after the grace are cancelled: their records stay
        open and are closed as ``interrupted`` at the next start-up. Idempotent.
        If cancelled, the call tasks are cancelled too before it propagates.
        """
        await super().aclose()

    def _end_calls(self) -> None:
        for session in self._sessions.values():
            session.queue.put_nowait(_HangupRequest())

    # ------------------------------------------------------------------ API

    async def click_to_call(
        self,
        *,
        agent: str,
        number: str,
        caller_id: str | None = None,
        agent_timeout: float | None = None,
        ring_timeout: float | None = None,
    ) -> uuid.UUID:
        """Connect ``agent`` to ``number`` through the agent's own phone; return the call id.

        Returns as soon as the call record exists and the agent's phone is being
        called; follow the call on the bus. Raises :class:`UnknownAgent`,
        :class:`InvalidNumber`, :class:`CallForbidden` (the outbound policy refuses
        the number for this agent), :class:`NoCapacity` (the agent's worker has not
        two free call slots), :class:`WorkerUnavailable` or :class:`PoolClosed`
        before anything is dialed or stored. Cancelling it before it returns
        leaves nothing behind; after, use :meth:`hangup`.
        """
        if self._tg is None or self._closing:
            raise PoolClosed("the call service is not running")
        agent_cfg = self._pool.agent(agent)
        region = self._config.site.default_region
        try:
            e164 = normalize_phone(number, region)
        except InvalidPhone as exc:
            raise InvalidNumber(f"cannot dial {number!r}: {exc}") from exc
        refusal = self._policy.check_number(e164, agent=agent_key(agent_cfg))
        if refusal is not None:
            log.warning(
                "click_to_call.forbidden",
                agent=agent_key(agent_cfg),
                number=e164,
                rule=refusal.rule,
            )
            raise CallForbidden(str(refusal))
        worker_id = self._pool.worker_for_line(agent_cfg.line)
        line = self._config.line(agent_cfg.line)
        presented = caller_id or line.caller_id or self._config.pbx.outbound_caller_id
        self._pool.reserve(worker_id, 2)
        try:
            user_id = None
            if agent_cfg.user is not None:
                user = await self._store.users.by_username(agent_cfg.user)
                user_id = user.id if user is not None else None
            record = await self._store.calls.create(
                CallDirection.OUTBOUND,
                agent_cfg.line,
                e164,
                agent_user_id=user_id,
                origin=self._config.site.id,
                worker_id=worker_id,
                line=agent_cfg.line,
            )
        except BaseException:
            self._pool.release(worker_id, 2)
            raise
        session = _Session(
            call_id=record.id,
            agent=agent_cfg,
            agent_name=agent_key(agent_cfg),
            worker_id=worker_id,
            number=e164,
            caller_id=presented,
            agent_timeout=agent_timeout or self.agent_timeout,
            ring_timeout=ring_timeout or self.ring_timeout,
            state=ClickToCall(str(record.id)),
            conversation=Conversation(
                record.id,
                pool=self._pool,
                bus=self._bus,
                store=self._store,
                config=self._config,
                name="click_to_call",
                agent=agent_key(agent_cfg),
            ),
            user_id=user_id,
        )
        self._sessions[record.id] = session
        self._bus.publish(
            CallCreated(
                call_id=record.id,
                direction=CallDirection.OUTBOUND.value,
                from_number=agent_cfg.line,
                to_number=e164,
                line=agent_cfg.line,
                agent=session.agent_name,
                worker_id=worker_id,
            )
        )
        self._spawn(self._drive(session), name=f"click-to-call-{record.id}")
        return record.id

    async def hangup(self, call_id: uuid.UUID, *, timeout: float = 10.0) -> None:
        """End the call ``call_id`` (both legs) and wait until it has ended.

        Raises :class:`UnknownCall` if no such call is in progress and
        ``TimeoutError`` if it has not ended within ``timeout`` s. Cancellation
        stops the wait; the hang-up still happens.
        """
        session = self._sessions.get(call_id)
        if session is None:
            raise UnknownCall(f"no call {call_id} in progress")
        session.queue.put_nowait(_HangupRequest())
        async with asyncio.timeout(timeout):
            await session.done.wait()

    def legs(self, call_id: uuid.UUID) -> CallLegs | None:
        """Where call ``call_id`` is, once connected (:class:`~sip.control.LegDirectory`)."""
        s = self._sessions.get(call_id)
        if s is None or s.state.phase is not Phase.BRIDGED:
            return None
        legs = s.leg_ids
        return CallLegs(
            call_id=call_id,
            worker_id=s.worker_id,
            customer_leg=legs[Leg.CUSTOMER],
            agent_leg=legs[Leg.AGENT],
            agent=s.agent_name,
            line=s.agent.line,
        )

    def hand_over(self, call_id: uuid.UUID, new_leg: str) -> str:
        """Carry on the call with ``new_leg`` in place of the agent's leg (an attended
        transfer, :class:`~sip.control.CallControl`); return the agent's leg, whose
        events are ignored from now on. Raises :class:`UnknownCall`."""
        s = self._sessions.get(call_id)
        if s is None or s.state.phase is not Phase.BRIDGED:
            raise UnknownCall(f"no connected call {call_id}")
        old = s.leg_ids[Leg.AGENT]
        self._pool.adopt(s.worker_id, old, _ignore)
        self._pool.adopt(s.worker_id, new_leg, partial(s.put, Leg.AGENT))
        s.agent_leg = new_leg
        log.info("click_to_call.handed_over", call_id=str(call_id), leg=new_leg)
        return old

    def live_calls(self) -> set[uuid.UUID]:
        """The ids of the calls this service holds (from creation to their end)."""
        return set(self._sessions)

    def active_calls(self) -> list[ActiveCall]:
        """The calls in progress."""
        return [
            ActiveCall(s.call_id, s.agent_name, s.number, s.worker_id, s.state.phase)
            for s in self._sessions.values()
        ]

    # ------------------------------------------------------------------ one call

    async def _drive(self, s: _Session) -> None:
        with structlog.contextvars.bound_contextvars(
            call_id=str(s.call_id), agent=s.agent_name, worker_id=s.worker_id
        ):
            try:
                await self._dial(s, Leg.AGENT)
                while not s.state.ended:
                    await self._handle(s, await s.queue.get())
                    await self._hang_up_leftovers(s)
                if s.store_chain is not None:
                    await s.store_chain  # the record's steps, before its end
                interrupted = s.state.outcome is None or (
                    s.state.outcome.reason is CallEndReason.INTERRUPTED
                )
                if not interrupted:
                    await self._finish(s)
            finally:
                if s.store_chain is not None:
                    s.store_chain.cancel()  # done by now unless the call was cancelled
                for timer in s.timers.values():
                    timer.cancel()
                self._pool.release(s.worker_id, s.reserved)
                self._sessions.pop(s.call_id, None)
                s.done.set()

    async def _dial(self, s: _Session, leg: Leg) -> None:
        if leg is Leg.AGENT:
            s.state.dial_agent()
            user, caller_id, timeout = s.agent.extension, None, s.agent_timeout
        else:
            s.state.dial_customer()
            user, caller_id, timeout = s.number, s.caller_id, s.ring_timeout
        s.reserved -= 1
        try:
            sent_at = await self._pool.originate(
                worker_id=s.worker_id,
                line=s.agent.line,
                leg_id=s.leg_ids[leg],
                to_uri=pbx_uri(self._config, user),
                listener=partial(s.put, leg),
                caller_id=caller_id,
                reserved=True,
            )
        except WorkerGone:
            s.state.interrupted()
            return
        except (PoolError, WorkerCommandError, TimeoutError) as exc:
            log.error("click_to_call.originate_failed", leg=leg.value, error=str(exc))
            s.state.leg_failed(leg)
            return
        self._bus.publish(
            CallDialing(
                call_id=s.call_id,
                leg=leg.value,
                agent=s.agent_name,
                dialed_at=datetime.fromtimestamp(sent_at, UTC),
            )
        )
        loop = asyncio.get_running_loop()
        s.timers[leg] = loop.call_later(timeout, s.queue.put_nowait, _Timeout(leg))

    async def _handle(self, s: _Session, item: _Item) -> None:
        if isinstance(item, _HangupRequest):
            s.state.hangup_requested()
        elif isinstance(item, _Timeout):
            if s.state.timed_out(item.leg):
                log.info("click_to_call.ring_timeout", leg=item.leg.value)
        else:
            await self._on_leg_event(s, item.leg, item.event)

    async def _on_leg_event(self, s: _Session, leg: Leg, event: LegEvent) -> None:
        match event:
            case Gone():
                s.state.interrupted()
            case Recorded() | RecordingLost():
                await s.conversation.on_recording(event)
            case MediaUp():
                if s.state.media_active(leg):
                    await self._bridge(s)
            case Failed():
                log.warning("click_to_call.leg_error", leg=leg.value, code=event.code)
            case Digit() if leg is Leg.CUSTOMER:
                self._bus.publish(
                    CallDtmf(
                        call_id=s.call_id,
                        agent=s.agent_name,
                        leg=leg.value,
                        digit=event.digit,
                        direction="received",
                    )
                )
            case Transfer() if leg is Leg.CUSTOMER:
                if event.final:
                    self._bus.publish(transfer_outcome(s.call_id, s.agent_name, event))
            case Ringing():
                if s.state.leg_ringing(leg):
                    if leg is Leg.CUSTOMER:
                        self._store_later(s, partial(self._store.calls.mark_ringing, s.call_id))
                    self._bus.publish(
                        CallRinging(call_id=s.call_id, leg=leg.value, agent=s.agent_name)
                    )
            case Answered():
                await self._answered(s, leg)
            case Ended():
                self._cancel_timer(s, leg)
                s.state.leg_ended(leg, event.reason, event.sip_code)

    async def _answered(self, s: _Session, leg: Leg) -> None:
        if leg is Leg.AGENT:
            if not s.state.agent_answered():
                return
            self._cancel_timer(s, leg)
            self._bus.publish(CallAnswered(call_id=s.call_id, leg=leg.value, agent=s.agent_name))
            await self._dial(s, Leg.CUSTOMER)
            return
        if not s.state.customer_answered():
            return
        self._cancel_timer(s, leg)
        s.answered_at = time.monotonic()
        self._store_later(s, partial(self._store.calls.mark_answered, s.call_id))
        self._bus.publish(CallAnswered(call_id=s.call_id, leg=leg.value, agent=s.agent_name))
        # The customer's audio may have come up with its 200 already.
        if s.state.media_active(Leg.CUSTOMER):
            await self._bridge(s)
        self._store_later(s, partial(self._link_caller, s))

    def _store_later(self, s: _Session, step: Callable[[], Awaitable[object]]) -> None:
        """Write a step of the call's record after its earlier steps, without holding
        the call up: its legs' events go on being handled meanwhile (in a burst of
        calls the store is the slowest party, and a bridge must not wait for a
        ringing time to be written). The call's end waits for them (``_drive``), so
        the record is complete before it is ended and ``call.ended`` published."""
        previous = s.store_chain

        async def write() -> None:
            if previous is not None:
                await previous
            await s.conversation.store_step(step())

        s.store_chain = asyncio.create_task(write(), name=f"click-to-call-store-{s.call_id}")

    async def _link_caller(self, s: _Session) -> None:
        """Attach the answered call to the number's client or lead, creating a lead
        (source outgoing_call, owned by the agent) for an unknown number when
        ``leads.from_outgoing_calls`` is on. After the bridge: the conversation
        never waits for it."""
        try:
            if self._config.leads.from_outgoing_calls:
                match, created = await self._store.leads.find_or_create_for_number(
                    s.number, LeadSource.OUTGOING_CALL, owner=s.user_id
                )
                if created:
                    log.info("click_to_call.lead_created", lead_id=str(match.id))
            else:
                found = await self._store.lookup_caller(s.number)
                if found is None:
                    return
                match = found
            await self._store.calls.link(
                s.call_id,
                client_id=match.id if match.kind == "client" else None,
                lead_id=match.id if match.kind == "lead" else None,
            )
        except (StoreError, InvalidPhone) as exc:
            log.error("click_to_call.link_failed", error=str(exc))

    async def _bridge(self, s: _Session) -> None:
        legs = s.leg_ids
        try:
            await s.conversation.bridge_and_record(
                legs[Leg.CUSTOMER], legs[Leg.AGENT], listener=partial(s.put, Leg.CUSTOMER)
            )
        except GONE as exc:
            # A leg ended meanwhile (its ended event is queued) or the worker
            # refused: either way the call cannot go on.
            log.error("click_to_call.bridge_failed", error=str(exc))
            s.state.hangup_requested()
            return
        s.state.bridged()

    async def _hang_up_leftovers(self, s: _Session) -> None:
        if s.state.phase is not Phase.ENDING:
            return
        for leg in sorted(s.state.alive - s.hung_up):
            s.hung_up.add(leg)
            self._cancel_timer(s, leg)
            with contextlib.suppress(*GONE):
                await self._pool.hangup(s.leg_ids[leg])

    async def _finish(self, s: _Session) -> None:
        outcome = s.state.outcome
        assert outcome is not None
        talk = time.monotonic() - s.answered_at if s.answered_at is not None else None
        if not await s.conversation.end(
            outcome.reason,
            sip_code=outcome.sip_code,
            agent=s.agent_name,
            talk_seconds=talk,
            leg=outcome.leg.value if outcome.leg is not None else None,
        ):
            return  # the pool closed the record first: the worker died as the call ended
        log.info("click_to_call.ended", reason=outcome.reason.value, sip_code=outcome.sip_code)
        await s.conversation.wait_for_recording(partial(self._next_leg_event, s))

    @staticmethod
    async def _next_leg_event(s: _Session) -> LegEvent | None:
        item = await s.queue.get()
        return item.event if isinstance(item, _LegEvent) else None

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _cancel_timer(s: _Session, leg: Leg) -> None:
        timer = s.timers.pop(leg, None)
        if timer is not None:
            timer.cancel()


def _ignore(_event: LegEvent) -> None:
    """The listener of a leg handed over to another service."""
