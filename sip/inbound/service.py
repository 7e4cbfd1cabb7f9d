"""The inbound service: takes the branches of calls to reception lines, chooses the
one carrying each call and offers the call to agents (the whole flow is described
in :mod:`sip.inbound`).

:class:`InboundService` does the I/O; where each call stands is its
:class:`~sip.inbound.state.InboundCall`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterable
from functools import partial

import structlog

from bus import Bus, CallCreated, CallRinging
from config import AgentConfig, Config, LineRole
from config.outbound import OutboundPolicy
from crm_store import CallDirection, Store, StoreError, new_id
from crm_store.phones import try_normalize_phone
from sip import protocol as p
from sip.conversation import Conversation
from sip.exceptions import CallNotReady, UnknownAgent, UnknownCall, UnknownLine
from sip.inbound._moves import CallMoves
from sip.inbound.branches import (
    MOVE_PREFIX,
    Branch,
    Tombstones,
    carrier,
    has_slot,
    losing_branch_code,
)
from sip.inbound.card import caller_card, identify, warm_up
from sip.inbound.presence import Presence
from sip.inbound.session import (
    ActiveInboundCall,
    AnswerRequest,
    Arrived,
    HangupRequest,
    InboundStats,
    Session,
    Wake,
    agent_of,
    ignore,
)
from sip.inbound.state import InboundPhase
from sip.inbound.waiting import WaitingCalls
from sip.legs import CallLegs
from sip.pool import SipPool

__all__ = ["InboundService"]

log = structlog.get_logger(__name__)


class InboundService(CallMoves):
    """Takes the calls to reception lines and offers them to agents.

    Use ``async with InboundService(pool, config=..., bus=..., store=...,
    presence=...) as inbound:`` or :meth:`start` / :meth:`aclose`. It installs
    itself as the pool's incoming-call handler. Call :meth:`poke` whenever an
    agent's availability changes (``PresenceBook.add_listener(inbound.poke)``).
    """

    def __init__(
        self,
        pool: SipPool,
        *,
        config: Config,
        bus: Bus,
        store: Store,
        presence: Presence,
        move_timeout: float = 8.0,
        max_moves: int = 3,
        forward_ring_timeout: float | None = None,
        close_grace: float = 5.0,
    ) -> None:
        super().__init__(close_grace=close_grace)
        self._pool = pool
        self._config = config
        self._bus = bus
        self._store = store
        self._presence = presence
        #: Longest wait, from a call's redirect, for its INVITE on the new worker;
        #: past it the caller is taken for gone (or the PBX for not following 3xx).
        self.move_timeout = move_timeout
        #: Redirects per call at most (PBXs bound them too: 3 is safe).
        self.max_moves = max_moves
        self.forward_ring_timeout = float(forward_ring_timeout or config.dialer.ring_timeout)
        self._loser_code = losing_branch_code(config.inbound.reject_code)
        self.stats = InboundStats()
        self._by_sip: dict[str, Session] = {}
        self._moving: dict[str, Session] = {}
        self._calls: dict[uuid.UUID, Session] = {}
        self._tombstones = Tombstones()
        self._waiting: WaitingCalls[Session] = WaitingCalls()
        self._seq = itertools.count()
        self._user_ids: dict[str, uuid.UUID] = {}
        self._policy = OutboundPolicy.from_config(config)

    # ------------------------------------------------------------------ lifespan

    _runner_name = "sip-inbound"

    async def start(self) -> None:
        """Start the service and take the pool's incoming calls."""
        await super().start()
        await warm_up(self._store, self._config.site.default_region)
        self._pool.on_incoming(self._on_incoming)

    async def aclose(self) -> None:
        """Stop taking calls (the pool refuses new ones with 480), end every call
        (a ringing caller is rejected with 480), wait up to ``close_grace`` s, stop.

        Calls still not over after the grace are cancelled: their records stay
        open and are closed as ``interrupted`` at the next start-up. Idempotent.
        """
        await super().aclose()

    def _end_calls(self) -> None:
        self._pool.on_incoming(None)
        for session in list(self._by_sip.values()):
            session.queue.put_nowait(HangupRequest())

    # ------------------------------------------------------------------ API

    def poke(self) -> None:
        """Agents' availability changed: offer waiting calls to available agents.

        Waiting calls are served oldest first; each takes the first agent of
        ``presence.offer_order()`` it has not tried yet. Cheap and re-entrant:
        call it on every change.
        """
        if not self._waiting.begin():
            return
        try:
            again = True
            while again:
                for s in self._waiting:
                    if s.held is not None or s.pending is not None or s.move_token is not None:
                        continue
                    if (
                        s.chosen is not None
                        and not s.reserved
                        and not has_slot(self._pool, s.chosen.worker_id)
                    ):
                        continue  # its worker has no room for an agent's leg (yet)
                    agent = self._pick_agent(s)
                    if agent is None:
                        continue
                    self._leave_waiting(s)
                    s.pending = agent
                    s.queue.put_nowait(Wake())
                again = self._waiting.round_again()
        finally:
            self._waiting.end()

    def live_calls(self) -> set[uuid.UUID]:
        """The ids of the inbound calls this service holds (announced, not yet over)."""
        return set(self._calls)

    def active_calls(self) -> list[ActiveInboundCall]:
        """The inbound calls in progress (those with a call record)."""
        return [self._snapshot(s) for s in self._calls.values()]

    def legs(self, call_id: uuid.UUID) -> CallLegs | None:
        """Where call ``call_id`` is (:class:`~sip.control.LegDirectory`), or None if
        this service does not hold it.

        ``agent_leg`` and ``agent`` are None while no agent's phone is rung; for a
        forwarded call ``agent_leg`` is the overflow leg, ``agent`` None. ``line`` is
        one of the lines registered on the call's worker: extra legs (a consulted
        colleague, a supervisor) are placed from it.
        """
        s = self._calls.get(call_id)
        if s is None:
            return None
        lines = self._pool.status()[s.worker_id].lines
        return CallLegs(
            call_id=call_id,
            worker_id=s.worker_id,
            customer_leg=s.customer_leg,
            agent_leg=s.other_leg,
            agent=agent_of(s),
            line=lines[0] if lines else None,
        )

    async def hangup(self, call_id: uuid.UUID, *, timeout: float = 10.0) -> None:
        """End the call ``call_id`` and wait until it has ended (a ringing caller is
        rejected with 480). Raises :class:`UnknownCall`, or ``TimeoutError``."""
        s = self._calls.get(call_id)
        if s is None:
            raise UnknownCall(f"no inbound call {call_id} in progress")
        s.queue.put_nowait(HangupRequest())
        async with asyncio.timeout(timeout):
            await s.done.wait()

    async def record_ready(self, call_id: uuid.UUID, *, timeout: float = 10.0) -> None:
        """Wait until the record of call ``call_id`` is written, if it is an inbound call
        in progress whose record is not written yet (``call.ringing`` is published
        first); return at once otherwise. Raises ``TimeoutError``."""
        s = self._calls.get(call_id)
        if s is None or s.recorded.is_set():
            return
        async with asyncio.timeout(timeout):
            await s.recorded.wait()

    async def answer(
        self, call_id: uuid.UUID, agents: Iterable[str], *, timeout: float = 10.0
    ) -> str:
        """Answer from the widget the call ringing at the phone of one of ``agents``.

        The ringing leg to the agent's phone is cancelled and replaced by one that
        asks the phone to answer by itself (``Call-Info: ...;answer-after=0``, which
        desk phones and softphones with auto-answer allowed follow); the call then
        goes on as if the agent had picked up: ``call.answered``, ``call.bridged``. A
        phone that ignores the request rings as before. Returns the agent's key once
        the new leg is placed (at once if that agent has already answered).
        Raises :class:`UnknownCall`, :class:`CallNotReady` (not ringing at one of
        ``agents``, or ended), or ``TimeoutError``.
        """
        s = self._calls.get(call_id)
        if s is None:
            raise UnknownCall(f"no inbound call {call_id} in progress")
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        s.queue.put_nowait(AnswerRequest(frozenset(agents), done))
        async with asyncio.timeout(timeout):
            return await done

    def hand_over(self, call_id: uuid.UUID, new_leg: str) -> str:
        """Carry on the call with ``new_leg`` in place of the agent's leg (an attended
        transfer, :class:`~sip.control.CallControl`); return the agent's leg, whose
        events are ignored from now on. Raises :class:`UnknownCall`."""
        s = self._calls.get(call_id)
        if s is None or s.chosen is None or s.other_leg is None or not s.other_answered:
            raise UnknownCall(f"no connected inbound call {call_id}")
        old, worker = s.other_leg, s.chosen.worker_id
        self._pool.adopt(worker, old, ignore)
        self._pool.adopt(worker, new_leg, partial(s.put, new_leg))
        s.other_leg = new_leg
        s.hung_up.add(old)
        s.media.discard(old)
        s.media.add(new_leg)
        log.info("inbound.handed_over", call_id=str(call_id), leg=new_leg)
        return old

    @staticmethod
    def _snapshot(s: Session) -> ActiveInboundCall:
        assert s.call_id is not None
        return ActiveInboundCall(
            call_id=s.call_id,
            agent=agent_of(s),
            worker_id=s.worker_id,
            customer_leg=s.customer_leg,
            agent_leg=s.other_leg,
            state=s.phase,
            from_number=s.from_number,
            to_number=s.to_number,
            line=s.first.line,
        )

    # ------------------------------------------------------------------ branches

    def _on_incoming(self, worker_id: str, event: p.IncomingCall) -> None:
        """The pool's handler: runs on the loop for every branch, must not block."""
        now = time.monotonic()
        if event.target_user.startswith(MOVE_PREFIX):
            self._on_moved(worker_id, event, now)
            return
        session = self._by_sip.get(event.sip_call_id)
        if session is None:
            refusal = self._refusal(event, now)
            if refusal is not None:
                log.info(
                    "inbound.branch_refused",
                    leg=event.call_id,
                    line=event.line,
                    worker_id=worker_id,
                    why=refusal,
                )
                self._adopt(worker_id, event.call_id, ignore)
                self._reject_branch(event.call_id, self._loser_code if refusal == "late" else 480)
                return
            session = self._open_session(worker_id, event, now)
        branch = Branch(worker_id, event.call_id, event, now)
        if not self._adopt(worker_id, event.call_id, partial(session.put, event.call_id)):
            return
        session.branches[event.call_id] = branch
        if session.chosen is not None or session.phase is not InboundPhase.NEW:
            # The carrying branch is chosen: this one is late.
            session.branches.pop(event.call_id, None)
            self._reject_branch(event.call_id, self._loser_code)
            return
        session.queue.put_nowait(Wake())

    def _on_moved(self, worker_id: str, event: p.IncomingCall, now: float) -> None:
        """A call this service redirected arrives on the worker it was sent to."""
        session = self._moving.get(event.target_user)
        if session is None or session.move_target != worker_id:
            log.info(
                "inbound.branch_refused",
                leg=event.call_id,
                worker_id=worker_id,
                why="not an expected move",
            )
            self._adopt(worker_id, event.call_id, ignore)
            self._reject_branch(event.call_id, 480)
            return
        del self._moving[event.target_user]
        if not self._adopt(worker_id, event.call_id, partial(session.put, event.call_id)):
            return
        session.queue.put_nowait(Arrived(Branch(worker_id, event.call_id, event, now)))

    def _refusal(self, event: p.IncomingCall, now: float) -> str | None:
        if self._closing:
            return "closing"
        if self._tombstones.recent(event.sip_call_id, now):
            return "late"
        if event.line is None:
            return "not a line"
        try:
            role = self._config.line(event.line).role
        except KeyError:
            return "unknown line"
        if role is not LineRole.RECEPTION:
            return "not a reception line"
        return None

    def _open_session(self, worker_id: str, event: p.IncomingCall, now: float) -> Session:
        assert event.line is not None
        try:
            home = self._pool.worker_for_line(event.line)
        except UnknownLine:
            home = worker_id
        session = Session(
            sip_call_id=event.sip_call_id,
            seq=next(self._seq),
            first=event,
            home=home,
            arrived=now,
            worker_id=worker_id,
        )
        self._by_sip[event.sip_call_id] = session
        self._spawn(self._drive(session), name=f"inbound-{event.call_id}")
        return session

    # ------------------------------------------------------------------ agents

    def _join_waiting(self, s: Session) -> None:
        self._waiting.join(s)
        self.poke()

    def _leave_waiting(self, s: Session) -> None:
        self._waiting.leave(s)

    def _pick_agent(self, s: Session) -> AgentConfig | None:
        for key in self._presence.offer_order():
            if key in s.tried:
                continue
            try:
                agent = self._pool.agent(key)
            except UnknownAgent:
                continue
            s.tried.add(key)
            # Held before call_started, which may call poke() back (a presence
            # listener): the re-entrant poke is deferred, and sees s as served.
            s.held = key
            self._presence.call_started(key)
            return agent
        return None

    def _release_agent(self, s: Session) -> None:
        key, s.held = s.held, None
        s.pending = None
        if key is not None:
            self._presence.call_ended(key)
            self.poke()

    # ------------------------------------------------------------------ the call

    async def _drive(self, s: Session) -> None:
        # The task was created from the pool's supervisor of the first branch's
        # worker and copied its context (worker_id=...): start from a clean one.
        structlog.contextvars.clear_contextvars()
        with structlog.contextvars.bound_contextvars(sip_call_id=s.sip_call_id):
            try:
                self._arm(s, "deadline", self._config.inbound.no_agent_timeout)
                await self._open(s)
                await self._maybe_decide(s)
                while not s.ended:
                    await self._handle(s, await s.queue.get())
                    await self._hang_up_leftovers(s)
                await self._finish(s)
            finally:
                s.recorded.set()
                for timer in s.timers.values():
                    timer.cancel()
                self._settle_answers(s, None, "the call has ended")
                while not s.queue.empty():
                    item = s.queue.get_nowait()
                    if isinstance(item, AnswerRequest) and not item.done.done():
                        item.done.set_exception(CallNotReady("the call has ended"))
                self._leave_waiting(s)
                if s.reserved and s.chosen is not None:
                    self._pool.release(s.chosen.worker_id, 1)
                self._release_agent(s)
                self._by_sip.pop(s.sip_call_id, None)
                if s.move_token is not None:
                    self._moving.pop(s.move_token, None)
                if s.call_id is not None:
                    self._calls.pop(s.call_id, None)
                self._tombstones.add(s.sip_call_id, time.monotonic())
                s.done.set()
                self.poke()  # the call's slots are free: a waiting call may use them

    async def _open(self, s: Session) -> None:
        """Identify the caller, pick an agent, write the record, publish the ringing."""
        first = s.first
        region = self._config.site.default_region
        e164 = try_normalize_phone(first.from_number, region) if first.from_number else None
        s.from_number = e164 or first.from_number
        s.to_number = first.to_number or first.line or ""
        if e164 is not None:
            s.match, s.lead_created = await identify(
                self._store, e164, create_lead=self._config.leads.from_incoming_calls
            )
        s.card = caller_card(s.match, created=s.lead_created)
        self._join_waiting(s)
        # The worker that is to carry the call (it moves there next): named in the
        # record from the start, so that a crash of it closes the record.
        s.worker_id = carrier(self._pool, s.worker_id, self._agent_worker(s.pending))
        # Announce first, then write the record under the id announced: the pop-up
        # waits for nothing but the caller's identity. Every later store step of the
        # call runs after this one, in this task.
        s.call_id = new_id()
        s.conversation = Conversation(
            s.call_id,
            pool=self._pool,
            bus=self._bus,
            store=self._store,
            config=self._config,
            name="inbound",
            stored=False,
        )
        self._calls[s.call_id] = s
        self.stats.calls += 1
        self._bus.publish(
            CallCreated(
                call_id=s.call_id,
                direction=CallDirection.INBOUND.value,
                from_number=s.from_number,
                to_number=s.to_number,
                line=first.line or "",
                agent=None,
                worker_id=s.worker_id,
            )
        )
        self._bus.publish(
            CallRinging(
                call_id=s.call_id,
                leg="customer",
                agent=None,
                direction=CallDirection.INBOUND.value,
                from_number=s.from_number,
                to_number=s.to_number,
                card=s.card,
            )
        )
        self.stats.ringing_latency.append(time.monotonic() - s.arrived)
        structlog.contextvars.bind_contextvars(call_id=str(s.call_id))
        log.info(
            "inbound.ringing",
            from_number=s.from_number,
            line=first.line,
            card=s.card["kind"] if s.card else None,
            lead_created=s.lead_created,
        )
        match = s.match
        try:
            await self._store.calls.create(
                CallDirection.INBOUND,
                s.from_number or "anonymous",
                s.to_number,
                client_id=match.id if match is not None and match.kind == "client" else None,
                lead_id=match.id if match is not None and match.kind == "lead" else None,
                origin=self._config.site.id,
                worker_id=s.worker_id,
                line=first.line,
                sip_call_id=s.sip_call_id,
                call_id=s.call_id,
            )
            s.stored = s.conversation.stored = True
            s.record_worker = s.worker_id
        except StoreError as exc:
            log.error("inbound.record_failed", error=str(exc))
        finally:
            s.recorded.set()
