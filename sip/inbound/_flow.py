"""The steps of one inbound call once it is announced: the offers to agents and to
the overflow number, the connection, the ending.

:class:`CallFlow` is the part of :class:`~sip.inbound.service.InboundService` that
runs inside a call's task; :class:`~sip.inbound._events.CallEvents` adds the
handlers of the call's queue, and the service what comes from outside (branches,
presence, the API) and the choice of the carrying branch."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Literal

import structlog

from bus import Bus, CallAnswered, CallDialing, CallRinging
from config import AgentConfig, Config
from config.outbound import OutboundPolicy, Refusal
from crm_store import CallDirection, CallEndReason, Store, StoreError
from sip._service import CallTaskService
from sip.exceptions import (
    CallNotReady,
    PoolError,
    UnknownCall,
    UnknownLine,
    WorkerCommandError,
    WorkerGone,
)
from sip.inbound.branches import Branch, carrier
from sip.inbound.session import InboundStats, Session, TimerItem, next_leg_event
from sip.inbound.state import InboundPhase, Outcome
from sip.legs import GONE
from sip.pool import SipPool, pbx_uri

__all__ = ["CallFlow"]

log = structlog.get_logger(__name__)

# Status a branch is refused with when the service is not taking it (a line
# that is not a reception line, a late branch).
_NOT_HERE = 480


class CallFlow(CallTaskService):
    """The per-call steps of the inbound service (see the module docstring)."""

    _pool: SipPool
    _config: Config
    _bus: Bus
    _store: Store
    _policy: OutboundPolicy
    _user_ids: dict[str, uuid.UUID]
    forward_ring_timeout: float
    stats: InboundStats

    # Provided by the service: the choice of the branch, and the waiting calls.
    async def _maybe_decide(self, s: Session, *, timed_out: bool = False) -> None:
        raise NotImplementedError

    async def _decide(self, s: Session) -> None:
        raise NotImplementedError

    async def _move(self, s: Session, target: str) -> bool:
        raise NotImplementedError

    async def _arrived(self, s: Session, branch: Branch) -> None:
        raise NotImplementedError

    async def _move_lost(self, s: Session) -> None:
        raise NotImplementedError

    def _join_waiting(self, s: Session) -> None:
        raise NotImplementedError

    def _leave_waiting(self, s: Session) -> None:
        raise NotImplementedError

    def _release_agent(self, s: Session) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ offering

    async def _next_offer(self, s: Session) -> None:
        """Offer the call to the next agent, or wait for one."""
        if s.outcome is not None or s.phase is not InboundPhase.WAITING:
            return
        if s.pending is None and s.held is None:
            self._join_waiting(s)
        if s.pending is not None:
            await self._offer(s)

    async def _offer(self, s: Session, *, auto_answer: bool = False) -> None:
        assert s.pending is not None
        assert s.chosen is not None
        assert s.call_id is not None
        worker = s.chosen.worker_id
        try:
            agent_worker: str | None = self._pool.worker_for_line(s.pending.line)
        except UnknownLine:
            agent_worker = None
        if (
            not auto_answer
            and agent_worker is not None
            and agent_worker != worker
            and carrier(self._pool, worker, agent_worker) == agent_worker
        ):
            # The call goes to the agent's worker, and rings them from there.
            self._leave_waiting(s)
            if s.reserved:
                s.reserved = False
                self._pool.release(worker, 1)
            if await self._move(s, agent_worker):
                return
        agent, s.pending = s.pending, None
        self._leave_waiting(s)
        own = agent_worker == worker
        # From the agent's own line on their worker, else from a line of the
        # worker carrying the call.
        line = agent.line if own else self._line_on(worker)
        s.agent = agent
        leg = await self._place(s, "agent", line, agent.extension, auto_answer=auto_answer)
        if leg is None:
            s.agent = None
            self._settle_answers(s, None, "the agent's phone could not be rung")
            if s.no_slot:
                # Not the agent's fault: they may take another call, and this one
                # waits (poke() skips it) until its worker has a free slot.
                s.no_slot = False
                s.tried.discard(agent.key)
                self._release_agent(s)
                if s.outcome is None:
                    self._join_waiting(s)
                return
            self._release_agent(s)
            if s.outcome is None:
                await self._next_offer(s)
            return
        s.state.to(InboundPhase.OFFERING)
        self._arm(s, "agent", self._config.inbound.agent_ring_seconds, serial=s.serial)
        self._settle_answers(s, agent.key)

    def _line_on(self, worker_id: str) -> str | None:
        """A line registered on ``worker_id`` (legs to the PBX are placed from it)."""
        status = self._pool.status().get(worker_id)
        return status.lines[0] if status is not None and status.lines else None

    @staticmethod
    def _settle_answers(s: Session, agent: str | None, why: str = "") -> None:
        """Resolve the widget's answer requests: with ``agent``, or refused."""
        for done in s.answer_waiters:
            if done.done():
                continue
            if agent is not None:
                done.set_result(agent)
            else:
                done.set_exception(CallNotReady(why))
        s.answer_waiters.clear()

    async def _place(
        self,
        s: Session,
        kind: Literal["agent", "overflow"],
        line: str | None,
        user: str,
        *,
        auto_answer: bool = False,
    ) -> str | None:
        """Originate the agent's (or the overflow's) leg from the carrying worker;
        ``auto_answer`` asks the phone to answer by itself."""
        assert s.chosen is not None
        assert s.call_id is not None
        worker = s.chosen.worker_id
        if not s.reserved:
            try:
                self._pool.reserve(worker, 1)
                s.reserved = True
            except PoolError as exc:
                log.warning("inbound.no_slot", worker_id=worker, error=str(exc))
                s.no_slot = True
                return None
        headers = self._auto_answer_headers() if auto_answer else {}
        s.serial += 1
        leg = f"{s.call_id}-{kind}-{s.serial}"
        s.other_leg, s.other_kind = leg, kind
        s.other_alive, s.other_rang, s.other_answered = True, False, False
        s.reserved = False
        try:
            sent_at = await self._pool.originate(
                worker_id=worker,
                line=line,
                leg_id=leg,
                to_uri=pbx_uri(self._config, user),
                listener=partial(s.put, leg),
                reserved=True,
                headers=headers,
            )
        except WorkerGone:
            # The worker died: its WorkerExited is on its way to the customer leg.
            s.other_leg, s.other_alive = None, False
            return None
        except PoolError as exc:
            # Refused before the pool took the reservation (worker down, pool
            # closing): give it back.
            self._pool.release(worker, 1)
            log.error("inbound.originate_failed", leg_kind=kind, error=str(exc))
            s.other_leg, s.other_alive = None, False
            return None
        except (WorkerCommandError, TimeoutError) as exc:
            log.error("inbound.originate_failed", leg_kind=kind, error=str(exc))
            s.other_leg, s.other_alive = None, False
            return None
        self._bus.publish(
            CallDialing(
                call_id=s.call_id,
                leg=kind,
                agent=s.agent.key if kind == "agent" and s.agent is not None else None,
                dialed_at=datetime.fromtimestamp(sent_at, UTC),
            )
        )
        log.info("inbound.dialing", leg_kind=kind, to=user, line=line)
        return leg

    def _auto_answer_headers(self) -> dict[str, str]:
        """What asks a phone to answer by itself: ``Call-Info`` with
        ``answer-after=0`` (Snom, Yealink, Grandstream, Linphone, MicroSIP...)."""
        pbx = self._config.pbx
        return {"Call-Info": f"<sip:{pbx.domain or pbx.host}>;answer-after=0"}

    def _publish_agent_ringing(self, s: Session) -> None:
        assert s.call_id is not None
        assert s.agent is not None
        self._bus.publish(
            CallRinging(
                call_id=s.call_id,
                leg="agent",
                agent=s.agent.key,
                direction=CallDirection.INBOUND.value,
                from_number=s.from_number,
                to_number=s.to_number,
                card=s.card,
            )
        )

    async def _no_agent(self, s: Session) -> None:
        """``inbound.no_agent_timeout`` is over and nobody answered."""
        if s.outcome is not None or s.answer_sent:
            return
        if s.phase is InboundPhase.NEW:
            await self._decide(s)  # the deadline is shorter than the branch wait
            if s.outcome is not None or s.answer_sent:
                return
        self._leave_waiting(s)
        if s.other_leg is not None and s.other_kind == "agent":
            # The agent's phone still rings: the call goes elsewhere now.
            await self._hang_up(s, s.other_leg)
        if s.pending is not None or (s.held is not None and s.other_leg is None):
            self._release_agent(s)
        inbound = self._config.inbound
        log.info("inbound.no_agent", action=inbound.no_agent_action)
        if inbound.no_agent_action == "forward" and inbound.overflow_number is not None:
            s.state.to(InboundPhase.FORWARDING)
            if s.other_leg is not None or s.chosen is None:
                # Forwarded when the agent's leg has ended (_on_other_event), or
                # when the call has arrived on its new worker (_arrived).
                return
            await self._forward(s)
        else:
            self._miss(s)

    async def _forward(self, s: Session) -> None:
        assert s.chosen is not None
        number = self._config.inbound.overflow_number
        assert number is not None
        refusal = self._overflow_refusal(number)
        if refusal is not None:
            # The configuration check refuses such a number; this guards code
            # that builds a Config without the loader.
            log.error("inbound.overflow_forbidden", number=number, rule=refusal.rule)
            self._miss(s)
            return
        leg = await self._place(s, "overflow", self._line_on(s.chosen.worker_id), number)
        if leg is None:
            self._miss(s)
            return
        self._arm(s, "forward", self.forward_ring_timeout, serial=s.serial)

    def _overflow_refusal(self, number: str) -> Refusal | None:
        try:
            return self._policy.check_target(number)
        except ValueError:
            return None  # the PBX is given it as configured, and answers for it

    def _miss(self, s: Session) -> None:
        """Nobody answers: reject the caller with ``inbound.reject_code``."""
        code = self._config.inbound.reject_code
        self._decide_outcome(s, Outcome(CallEndReason.NO_ANSWER, code, "customer"))

    # ------------------------------------------------------------------ connecting

    async def _other_answered(self, s: Session, leg: str) -> None:
        if s.other_answered or s.outcome is not None or leg in s.hung_up:
            return  # crossed our CANCEL: its end follows
        if s.phase not in (InboundPhase.OFFERING, InboundPhase.FORWARDING):
            return
        assert s.call_id is not None
        assert s.chosen is not None
        s.other_answered = True
        self._disarm(s, "agent")
        self._disarm(s, "forward")
        self._disarm(s, "deadline")
        if s.other_kind == "agent":
            assert s.agent is not None
            if not s.other_rang:
                s.other_rang = True
                self._publish_agent_ringing(s)
            s.connected_agent = s.agent.key
            self._bus.publish(CallAnswered(call_id=s.call_id, leg="agent", agent=s.agent.key))
        s.state.to(InboundPhase.CONNECTING)
        try:
            await self._pool.answer(s.chosen.leg)
        except UnknownCall:
            return  # the caller left meanwhile: the end of their leg is queued
        except GONE as exc:
            log.error("inbound.answer_failed", error=str(exc))
            self._decide_outcome(s, Outcome(CallEndReason.FAILED, 0, "customer"))
            return
        s.state.caller_answered()
        s.answered_at = time.monotonic()
        await self._maybe_bridge(s)

    async def _customer_answered(self, s: Session) -> None:
        if s.customer_answered or s.call_id is None:
            return
        s.customer_answered = True
        user_id = await self._user_id(s.agent) if s.other_kind == "agent" else None
        assert s.conversation is not None
        if s.stored:
            await s.conversation.store_step(self._store.calls.mark_answered_by(s.call_id, user_id))
        self._bus.publish(CallAnswered(call_id=s.call_id, leg="customer", agent=s.connected_agent))
        if s.lead_created and user_id is not None and s.match is not None:
            await s.conversation.store_step(self._store.leads.give_if_unowned(s.match.id, user_id))

    async def _maybe_bridge(self, s: Session) -> None:
        if s.phase is not InboundPhase.CONNECTING or not s.answer_sent or s.outcome is not None:
            return
        if s.other_leg is None or not {s.customer_leg, s.other_leg} <= s.media:
            return
        assert s.call_id is not None
        assert s.conversation is not None
        conversation = s.conversation
        conversation.agent = s.connected_agent
        path = Path(self._config.recording.directory) / f"{s.call_id}.wav"
        try:
            await conversation.bridge_and_record(
                s.customer_leg,
                s.other_leg,
                listener=partial(s.put, s.customer_leg),
                path=str(path),
            )
        except UnknownCall:
            return  # a leg ended meanwhile: its end is queued and decides
        except GONE as exc:
            log.error("inbound.bridge_failed", error=str(exc))
            self._decide_outcome(s, Outcome(CallEndReason.FAILED, 0, None))
            return
        s.state.to(InboundPhase.BRIDGED)
        log.info("inbound.bridged", agent=s.connected_agent, recording=conversation.recording)

    # ------------------------------------------------------------------ ending

    def _decide_outcome(self, s: Session, outcome: Outcome) -> None:
        if s.state.decide(outcome):
            self._ended_by(s, outcome)
        else:
            self._ending(s)

    def _ended_by(self, s: Session, outcome: Outcome | None) -> None:
        """The call's outcome was just decided (``outcome``): let its slot and its
        place among the waiting calls go."""
        assert outcome is not None
        log.info("inbound.ending", reason=outcome.reason.value, sip_code=outcome.sip_code)
        self._ending(s)

    def _ending(self, s: Session) -> None:
        if s.reserved and s.chosen is not None:
            # No leg is placed any more: the slot is free for other calls now.
            s.reserved = False
            self._pool.release(s.chosen.worker_id, 1)
        self._leave_waiting(s)

    def _interrupted(self, s: Session) -> None:
        """The carrying worker died; the pool closes its records."""
        s.customer_alive = s.other_alive = False
        s.reserved = False  # the pool dropped the dead worker's reservations
        s.branches.clear()
        s.state.interrupted()

    def _check_ended(self, s: Session) -> None:
        if not self._alive_legs(s):
            s.state.legs_gone()

    def _alive_legs(self, s: Session) -> list[str]:
        legs = []
        if s.chosen is not None:
            if s.customer_alive:
                legs.append(s.chosen.leg)
        else:
            legs += list(s.branches)
        if s.other_leg is not None and s.other_alive:
            legs.append(s.other_leg)
        return legs

    async def _hang_up_leftovers(self, s: Session) -> None:
        if s.phase is not InboundPhase.ENDING:
            return
        outcome = s.outcome
        assert outcome is not None
        for leg in self._alive_legs(s):
            if leg in s.hung_up:
                continue
            if leg != s.other_leg and not s.answer_sent:
                code = (
                    outcome.sip_code
                    if outcome.reason is CallEndReason.NO_ANSWER and outcome.sip_code
                    else _NOT_HERE
                )
                s.hung_up.add(leg)
                with contextlib.suppress(*GONE):
                    await self._pool.reject(leg, code)
            else:
                await self._hang_up(s, leg)
        self._check_ended(s)

    async def _hang_up(self, s: Session, leg: str) -> None:
        if leg in s.hung_up:
            return
        s.hung_up.add(leg)
        with contextlib.suppress(*GONE):
            await self._pool.hangup(leg)

    async def _finish(self, s: Session) -> None:
        outcome = s.outcome
        assert outcome is not None
        if s.call_id is None:
            return  # gone before it was even recorded (cannot happen: _open runs first)
        talk = time.monotonic() - s.answered_at if s.answered_at is not None else None
        missed = not s.answer_sent
        agent = None if missed else s.connected_agent
        interrupted = outcome.reason is CallEndReason.INTERRUPTED
        if interrupted and (not s.stored or s.record_worker == s.worker_id):
            # The pool closes the records of a dead worker and publishes their end.
            self._release_agent(s)
            return
        assert s.conversation is not None
        if not await s.conversation.end(
            outcome.reason,
            sip_code=outcome.sip_code,
            agent=agent,
            talk_seconds=talk,
            leg=outcome.leg,
        ):
            # The pool closed the record first: the worker died as the call ended.
            self._release_agent(s)
            return
        if missed and not interrupted:
            self.stats.missed += 1
        log.info(
            "inbound.ended",
            reason=outcome.reason.value,
            sip_code=outcome.sip_code,
            agent=agent,
            missed=missed,
        )
        self._release_agent(s)
        await s.conversation.wait_for_recording(partial(next_leg_event, s))

    # ------------------------------------------------------------------ helpers

    def _arm(
        self,
        s: Session,
        kind: Literal["move", "deadline", "agent", "forward"],
        delay: float,
        *,
        serial: int = 0,
    ) -> None:
        self._disarm(s, kind)
        loop = asyncio.get_running_loop()
        s.timers[kind] = loop.call_later(
            max(delay, 0.0), s.queue.put_nowait, TimerItem(kind, serial)
        )

    @staticmethod
    def _disarm(s: Session, kind: str) -> None:
        timer = s.timers.pop(kind, None)
        if timer is not None:
            timer.cancel()

    async def _user_id(self, agent: AgentConfig | None) -> uuid.UUID | None:
        if agent is None or agent.user is None:
            return None
        cached = self._user_ids.get(agent.user)
        if cached is not None:
            return cached
        try:
            user = await self._store.users.by_username(agent.user)
        except StoreError as exc:
            log.error("inbound.store_failed", step="user", error=str(exc))
            return None
        if user is None:
            return None
        self._user_ids[agent.user] = user.id
        return user.id
