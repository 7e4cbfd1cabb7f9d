"""Inbound calls: a reception line rings the agents, one worker carries the call.

Every reception line is registered by its own (home) worker *and* by every agent
worker (:func:`sip.pool.plan_workers`), so the PBX forks a call to a reception
line to all of them: each worker receives a *branch* of the same SIP dialog
(same SIP Call-ID), answers it ``180`` and hands it to the pool, which hands it to
:class:`InboundService`. The service groups the branches by SIP Call-ID and, for
each call, in one task (see ``docs/sip-pool.md``):

1. at the first branch, looks the caller up (creating a lead for an unknown
   number when ``leads.from_incoming_calls``), publishes ``CallCreated`` and
   ``CallRinging(leg="customer")`` with the caller's card, then writes the call
   record under the id just published;
2. picks the agent to offer the call to from :class:`Presence` (available, not
   on a call, ordered by ``inbound.strategy``) and keeps the branch on that
   agent's own worker (else the reception line's home worker, else any worker
   with a free slot); every other branch is rejected at once with a 4xx, so the
   PBX keeps the chosen branch ringing;
3. from the chosen worker, rings the agent's phone (``CallDialing``,
   ``CallRinging(leg="agent")`` with the card); on no answer within
   ``inbound.agent_ring_seconds``, a rejection or busy, offers the call to the
   next agent;
4. when an agent answers, answers the caller, bridges the two legs once both
   have audio and records the caller's leg (``CallAnswered``, ``CallBridged``);
   the record gets the answering agent, and a lead created by this call gets
   the agent as its owner;
5. with no agent (or none answering), keeps the caller ringing, offers again
   whenever presence changes (:meth:`InboundService.poke`), and after
   ``inbound.no_agent_timeout`` rejects the call with ``inbound.reject_code`` or
   forwards it to ``inbound.overflow_number``;
6. ends with ``CallEnded`` (``completed``; or a missed call: ``no_answer``,
   ``cancelled`` when the caller hung up first, with ``agent`` None) and, for a
   recorded call, ``RecordingReady``.

:class:`PresenceBook` is an in-memory :class:`Presence` the daemon may use as is.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

import phonenumbers
import structlog

from bus import (
    Bus,
    CallAnswered,
    CallBridged,
    CallCreated,
    CallDialing,
    CallDtmf,
    CallEnded,
    CallRinging,
    RecordingReady,
)
from config import AgentConfig, Config, LineRole
from config.outbound import OutboundPolicy, Refusal, is_extension
from crm_store import (
    CallDirection,
    CallEndReason,
    CallerMatch,
    Conflict,
    LeadSource,
    Store,
    StoreError,
    new_id,
)
from crm_store.phones import try_normalize_phone
from sip import protocol as p
from sip.control import transfer_outcome
from sip.exceptions import (
    CallNotReady,
    PoolError,
    UnknownAgent,
    UnknownCall,
    UnknownLine,
    WorkerCommandError,
    WorkerGone,
)
from sip.legs import (
    Answered,
    Digit,
    Ended,
    Failed,
    Gone,
    LegEvent,
    LegListener,
    MediaUp,
    Recorded,
    RecordingLost,
    Ringing,
    Transfer,
)
from sip.pool import SipPool, pbx_uri

from ._service import CallTaskService

__all__ = [
    "InboundCall",
    "InboundPhase",
    "InboundService",
    "InboundStats",
    "Presence",
    "PresenceBook",
    "caller_card",
    "losing_branch_code",
]

log = structlog.get_logger(__name__)

Strategy = Literal["longest_idle", "in_order"]
AgentState = Literal["available", "paused", "offline"]

# How long a finished call waits for its recording to be complete on disk.
_RECORDING_WAIT = 10.0
# Commands that may fail because the leg or its worker is already gone.
_GONE = (UnknownCall, PoolError, WorkerCommandError, WorkerGone, TimeoutError)
# A SIP Call-ID is remembered this long after its call ended, so that a branch
# arriving late (a slow fork, a retransmitted INVITE) is rejected, not taken
# for a new call. 64 s is SIP's Timer B/H for UDP.
_TOMBSTONE_SECONDS = 64.0
_TOMBSTONES_MAX = 10_000
# Status a branch is refused with when the service is not taking it (a line
# that is not a reception line, a late branch).
_NOT_HERE = 480


def losing_branch_code(reject_code: int) -> int:
    """The 4xx the branches that do not carry a call are rejected with.

    A forking proxy answers the caller with the "best" final response of all
    branches once every branch has one: RFC 3261 16.7 leaves the choice to it,
    and Kamailio (``tm``) takes a 6xx over anything, then the lowest 4xx (401,
    407, 415, 420 and 484 first). The losing branches answer long before the
    carrying branch, so their code must not beat ``inbound.reject_code``: 486
    (Busy Here) loses to 480 and every lower 4xx and to every 6xx; a reject
    code between 487 and 499 is used for the losers too. A 6xx is never used for
    a losing branch: it would make the proxy cancel the carrying branch.
    """
    return reject_code if 486 < reject_code < 500 else 486


def caller_card(match: CallerMatch | None, *, created: bool = False) -> dict[str, Any] | None:
    """The caller's card for ``CallRinging.card``: plain JSON values, or None.

    Always ``kind`` (``client``/``lead``), ``id``, ``display_name``, ``phone``
    (E.164) and ``created`` (the lead was created by this call); a client adds
    ``client_kind``, ``company``, ``tags``, ``responsible_user_id``; a lead
    ``status``, ``source``, ``owner_user_id``, ``tags`` (see ``docs/protocol.md``).
    """
    if match is None:
        return None
    card: dict[str, Any] = {
        "kind": match.kind,
        "id": str(match.id),
        "display_name": match.display_name,
        "phone": match.phone,
        "created": created,
    }
    if match.client is not None:
        client = match.client
        card["client_kind"] = client.kind.value
        card["company"] = client.company_name
        card["tags"] = list(client.tags)
        card["responsible_user_id"] = (
            str(client.responsible_user_id) if client.responsible_user_id is not None else None
        )
    elif match.lead is not None:
        lead = match.lead
        card["status"] = lead.status.value
        card["source"] = lead.source.value
        card["owner_user_id"] = str(lead.owner_user_id) if lead.owner_user_id is not None else None
        card["tags"] = []  # leads have no tags (yet); the key is there for the widget
    return card


# --------------------------------------------------------------------------- presence


class Presence(Protocol):
    """Who may be offered a call; implemented by the daemon from the agents' states.

    The service calls :meth:`call_started` as it picks an agent (before ringing
    the phone) and :meth:`call_ended` once that agent is free again (the offer
    failed, or the call is over), so an agent is never offered two calls. All
    three are called on the event loop and must not block.
    """

    def offer_order(self) -> Sequence[str]:
        """Agent keys (``AgentConfig.key``) available and not on a call, best first."""
        ...

    def call_started(self, agent: str) -> None:
        """``agent`` is being offered (or carries) a call."""
        ...

    def call_ended(self, agent: str) -> None:
        """``agent`` is no longer offered (nor carrying) the call it was given."""
        ...


class PresenceBook:
    """An in-memory :class:`Presence`: agents' states, calls and idle times.

    ``agents`` are the agent keys in configuration order (``in_order`` offers in
    that order); ``longest_idle`` offers first the agent idle the longest, where
    idle means available and not on a call: the clock starts when the agent
    becomes available or ends a call. Agents start ``offline``. Listeners given
    to :meth:`add_listener` are called after every change (a state, a call
    started or ended): hand it :meth:`InboundService.poke`.
    """

    def __init__(
        self,
        agents: Iterable[str],
        *,
        strategy: Strategy = "longest_idle",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.strategy: Strategy = strategy
        self._clock = clock
        self._order: dict[str, int] = {}
        self._states: dict[str, AgentState] = {}
        self._reasons: dict[str, str | None] = {}
        self._idle_since: dict[str, float] = {}
        self._calls: dict[str, int] = {}
        self._listeners: list[Callable[[], None]] = []
        for agent in agents:
            self._know(agent)

    @classmethod
    def from_config(
        cls, config: Config, *, clock: Callable[[], float] = time.monotonic
    ) -> PresenceBook:
        """A book of the configured agents with ``inbound.strategy``."""
        return cls(
            [agent.key for agent in config.agents], strategy=config.inbound.strategy, clock=clock
        )

    def _know(self, agent: str) -> None:
        if agent not in self._order:
            self._order[agent] = len(self._order)
            self._states[agent] = "offline"
            self._reasons[agent] = None
            self._calls[agent] = 0

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after every change; returns a function removing it."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    def _set(self, agent: str, state: AgentState, reason: str | None = None) -> None:
        self._know(agent)
        old = self._states[agent]
        self._states[agent] = state
        self._reasons[agent] = reason
        if state == "available" and old != "available" and not self._calls[agent]:
            self._idle_since[agent] = self._clock()
        self._changed()

    def set_available(self, agent: str) -> None:
        """``agent`` takes calls (their idle time starts now, unless on a call)."""
        self._set(agent, "available")

    def set_paused(self, agent: str, reason: str | None = None) -> None:
        """``agent`` takes no calls for now (a call in progress goes on)."""
        self._set(agent, "paused", reason)

    def set_offline(self, agent: str) -> None:
        """``agent`` is logged out."""
        self._set(agent, "offline")

    def state(self, agent: str) -> str:
        """``available``, ``paused``, ``offline``, or ``busy`` while on a call."""
        self._know(agent)
        return "busy" if self._calls[agent] else self._states[agent]

    def reason(self, agent: str) -> str | None:
        """The reason given with the last :meth:`set_paused`, if paused."""
        return self._reasons.get(agent) if self._states.get(agent) == "paused" else None

    def idle_since(self, agent: str) -> float | None:
        """Clock time since which ``agent`` has been idle (available, no call)."""
        if self.state(agent) != "available":
            return None
        return self._idle_since.get(agent)

    def offer_order(self) -> list[str]:
        """Available agents not on a call, longest idle (or configured order) first."""
        free = [a for a, s in self._states.items() if s == "available" and not self._calls[a]]
        if self.strategy == "longest_idle":
            free.sort(key=lambda a: (self._idle_since.get(a, 0.0), self._order[a]))
        else:
            free.sort(key=self._order.__getitem__)
        return free

    def call_started(self, agent: str) -> None:
        self._know(agent)
        self._calls[agent] += 1
        self._changed()

    def call_ended(self, agent: str) -> None:
        self._know(agent)
        if self._calls[agent] == 0:
            return
        self._calls[agent] -= 1
        if not self._calls[agent]:
            self._idle_since[agent] = self._clock()
        self._changed()


# --------------------------------------------------------------------------- snapshots


class InboundPhase(StrEnum):
    """Where an inbound call stands."""

    #: The caller is being identified and the carrying branch chosen.
    NEW = "new"
    #: The caller rings; no agent is being offered the call.
    WAITING = "waiting"
    #: An agent's phone rings.
    OFFERING = "offering"
    #: The overflow number rings (``no_agent_action = "forward"``).
    FORWARDING = "forwarding"
    #: The agent (or the overflow) answered; the caller is answered, audio awaited.
    CONNECTING = "connecting"
    #: Caller and agent (or overflow) hear each other.
    BRIDGED = "bridged"
    #: The outcome is decided; the legs still up are being hung up.
    ENDING = "ending"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class InboundCall:
    """A snapshot of an inbound call in progress.

    ``agent_leg`` is the leg toward the agent being offered or connected (or the
    overflow number's leg, with ``agent`` None).
    """

    call_id: uuid.UUID
    agent: str | None
    worker_id: str
    customer_leg: str
    agent_leg: str | None
    state: InboundPhase
    from_number: str
    to_number: str
    line: str | None


@dataclass(slots=True)
class InboundStats:
    """Timings for operations and benchmarks, seconds; read them, do not write them."""

    #: From the first branch's ``incoming_call`` reaching the service to the
    #: ``CallRinging(leg="customer")`` publication, per call.
    ringing_latency: deque[float] = field(default_factory=lambda: deque(maxlen=10000))
    #: From the first to the last branch seen before the carrying one was chosen.
    branch_spread: deque[float] = field(default_factory=lambda: deque(maxlen=10000))
    #: From the first branch to the choice of the carrying branch.
    decision_wait: deque[float] = field(default_factory=lambda: deque(maxlen=10000))
    calls: int = 0
    missed: int = 0


# --------------------------------------------------------------------------- one call


@dataclass(eq=False)
class _Branch:
    worker_id: str
    leg: str
    event: p.IncomingCall
    at: float


@dataclass(frozen=True, slots=True)
class _LegEvent:
    leg: str
    event: LegEvent


@dataclass(frozen=True, slots=True)
class _Timer:
    kind: Literal["decide", "deadline", "agent", "forward"]
    serial: int = 0


@dataclass(frozen=True, slots=True)
class _Wake:
    """A new branch arrived, or presence gave the call an agent."""


@dataclass(frozen=True, slots=True)
class _HangupRequest:
    pass


@dataclass(frozen=True, slots=True)
class _AnswerRequest:
    """An agent answers from the widget: any of ``agents`` (the user's)."""

    agents: frozenset[str]
    done: asyncio.Future[str]


_Item = _LegEvent | _Timer | _Wake | _HangupRequest | _AnswerRequest


@dataclass(frozen=True, slots=True)
class _Outcome:
    reason: CallEndReason
    sip_code: int
    leg: str | None


@dataclass(eq=False)
class _Session:
    sip_call_id: str
    seq: int
    first: p.IncomingCall
    home: str
    arrived: float
    branches: dict[str, _Branch] = field(default_factory=dict)
    queue: asyncio.Queue[_Item] = field(default_factory=asyncio.Queue)
    phase: InboundPhase = InboundPhase.NEW
    call_id: uuid.UUID | None = None
    stored: bool = False
    worker_id: str = ""
    #: The worker named in the call record (whose crash makes the pool close it).
    record_worker: str | None = None
    from_number: str = ""
    to_number: str = ""
    match: CallerMatch | None = None
    lead_created: bool = False
    card: dict[str, Any] | None = None
    chosen: _Branch | None = None
    reserved: bool = False
    #: An agent presence gave the call, not offered yet.
    pending: AgentConfig | None = None
    #: The agent key the service called ``call_started`` for and not yet ``call_ended``.
    held: str | None = None
    tried: set[str] = field(default_factory=set)
    agent: AgentConfig | None = None
    connected_agent: str | None = None
    other_leg: str | None = None
    other_kind: Literal["agent", "overflow"] | None = None
    other_alive: bool = False
    other_rang: bool = False
    other_answered: bool = False
    serial: int = 0
    #: The last leg could not be placed for want of a free slot on the worker.
    no_slot: bool = False
    #: Answered from the widget: the agent whose ringing leg is being replaced by
    #: one that asks their phone to answer by itself.
    reoffer: AgentConfig | None = None
    #: Set once the call record's write is over (written or failed).
    recorded: asyncio.Event = field(default_factory=asyncio.Event)
    #: The widget's answer requests accepted, resolved when the new leg is placed.
    answer_waiters: list[asyncio.Future[str]] = field(default_factory=list)
    customer_alive: bool = True
    answer_sent: bool = False
    customer_answered: bool = False
    answered_at: float | None = None
    media: set[str] = field(default_factory=set)
    outcome: _Outcome | None = None
    hung_up: set[str] = field(default_factory=set)
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    recording: bool = False
    recording_done: bool = False
    #: Why the recording failed, once it did (start refused, or the worker's word).
    recording_failed: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, leg: str, event: LegEvent) -> None:
        self.queue.put_nowait(_LegEvent(leg, event))

    @property
    def customer_leg(self) -> str:
        return self.chosen.leg if self.chosen is not None else self.first.call_id

    @property
    def ended(self) -> bool:
        return self.phase is InboundPhase.ENDED


class InboundService(CallTaskService):
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
        branch_wait: float = 0.25,
        forward_ring_timeout: float | None = None,
        close_grace: float = 5.0,
    ) -> None:
        super().__init__(close_grace=close_grace)
        self._pool = pool
        self._config = config
        self._bus = bus
        self._store = store
        self._presence = presence
        #: Longest wait, from the first branch, for the branch on the preferred
        #: worker (the chosen agent's, else the line's home worker).
        self.branch_wait = branch_wait
        self.forward_ring_timeout = float(forward_ring_timeout or config.dialer.ring_timeout)
        self._loser_code = losing_branch_code(config.inbound.reject_code)
        self.stats = InboundStats()
        self._by_sip: dict[str, _Session] = {}
        self._calls: dict[uuid.UUID, _Session] = {}
        self._tombstones: OrderedDict[str, float] = OrderedDict()
        self._waiting: list[_Session] = []
        self._seq = itertools.count()
        self._dispatching = False
        self._redispatch = False
        self._user_ids: dict[str, uuid.UUID] = {}
        self._policy = OutboundPolicy.from_config(config)

    # ------------------------------------------------------------------ lifespan

    _runner_name = "sip-inbound"

    async def start(self) -> None:
        """Start the service and take the pool's incoming calls."""
        await super().start()
        await self._warm_up()
        self._pool.on_incoming(self._on_incoming)

    async def _warm_up(self) -> None:
        # The first caller lookup of a process opens the store's reader
        # connection: pay for it now rather than on the first caller's ringing.
        example = phonenumbers.example_number(self._config.site.default_region)
        if example is None:
            return
        number = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
        try:
            await self._store.lookup_caller(number)
        except StoreError as exc:
            log.warning("inbound.warm_up_failed", error=str(exc))

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
            session.queue.put_nowait(_HangupRequest())

    # ------------------------------------------------------------------ API

    def poke(self) -> None:
        """Agents' availability changed: offer waiting calls to available agents.

        Waiting calls are served oldest first; each takes the first agent of
        ``presence.offer_order()`` it has not tried yet. Cheap and re-entrant:
        call it on every change.
        """
        if self._dispatching:
            self._redispatch = True
            return
        self._dispatching = True
        try:
            again = True
            while again:
                self._redispatch = False
                for s in list(self._waiting):
                    if s.held is not None or s.pending is not None:
                        continue
                    if (
                        s.chosen is not None
                        and not s.reserved
                        and not self._has_slot(s.chosen.worker_id)
                    ):
                        continue  # its worker has no room for an agent's leg (yet)
                    agent = self._pick_agent(s)
                    if agent is None:
                        continue
                    self._leave_waiting(s)
                    s.pending = agent
                    s.queue.put_nowait(_Wake())
                again = self._redispatch
        finally:
            self._dispatching = False

    def live_calls(self) -> set[uuid.UUID]:
        """The ids of the inbound calls this service holds (announced, not yet over)."""
        return set(self._calls)

    def active_calls(self) -> list[InboundCall]:
        """The inbound calls in progress (those with a call record)."""
        return [self._snapshot(s) for s in self._calls.values()]

    def legs(self, call_id: uuid.UUID) -> tuple[str, str, str | None, str | None]:
        """``(worker_id, customer_leg, agent_leg, agent)`` of the call in progress.

        ``agent_leg`` and ``agent`` are None while no agent's phone is rung;
        for a forwarded call ``agent_leg`` is the overflow leg, ``agent`` None.
        Raises :class:`UnknownCall`.
        """
        s = self._calls.get(call_id)
        if s is None:
            raise UnknownCall(f"no inbound call {call_id} in progress")
        agent = s.agent.key if s.agent is not None and s.other_kind == "agent" else None
        return s.worker_id, s.customer_leg, s.other_leg, agent

    async def hangup(self, call_id: uuid.UUID, *, timeout: float = 10.0) -> None:
        """End the call ``call_id`` and wait until it has ended (a ringing caller is
        rejected with 480). Raises :class:`UnknownCall`, or ``TimeoutError``."""
        s = self._calls.get(call_id)
        if s is None:
            raise UnknownCall(f"no inbound call {call_id} in progress")
        s.queue.put_nowait(_HangupRequest())
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
        s.queue.put_nowait(_AnswerRequest(frozenset(agents), done))
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
        self._pool.adopt(worker, old, _ignore)
        self._pool.adopt(worker, new_leg, partial(s.put, new_leg))
        s.other_leg = new_leg
        s.hung_up.add(old)
        s.media.discard(old)
        s.media.add(new_leg)
        log.info("inbound.handed_over", call_id=str(call_id), leg=new_leg)
        return old

    def _snapshot(self, s: _Session) -> InboundCall:
        assert s.call_id is not None
        worker_id, customer, other, agent = self.legs(s.call_id)
        return InboundCall(
            call_id=s.call_id,
            agent=agent,
            worker_id=worker_id,
            customer_leg=customer,
            agent_leg=other,
            state=s.phase,
            from_number=s.from_number,
            to_number=s.to_number,
            line=s.first.line,
        )

    # ------------------------------------------------------------------ branches

    def _on_incoming(self, worker_id: str, event: p.IncomingCall) -> None:
        """The pool's handler: runs on the loop for every branch, must not block."""
        now = time.monotonic()
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
                self._adopt(worker_id, event.call_id, _ignore)
                self._reject_branch(event.call_id, self._loser_code if refusal == "late" else 480)
                return
            session = self._open_session(worker_id, event, now)
        branch = _Branch(worker_id, event.call_id, event, now)
        if not self._adopt(worker_id, event.call_id, partial(session.put, event.call_id)):
            return
        session.branches[event.call_id] = branch
        if session.chosen is not None or session.phase is not InboundPhase.NEW:
            # The carrying branch is chosen: this one is late.
            session.branches.pop(event.call_id, None)
            self._reject_branch(event.call_id, self._loser_code)
            return
        session.queue.put_nowait(_Wake())

    def _refusal(self, event: p.IncomingCall, now: float) -> str | None:
        if self._closing:
            return "closing"
        stamp = self._tombstones.get(event.sip_call_id)
        if stamp is not None and now - stamp < _TOMBSTONE_SECONDS:
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

    def _open_session(self, worker_id: str, event: p.IncomingCall, now: float) -> _Session:
        assert event.line is not None
        try:
            home = self._pool.worker_for_line(event.line)
        except UnknownLine:
            home = worker_id
        session = _Session(
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

    def _adopt(self, worker_id: str, leg: str, listener: LegListener) -> bool:
        try:
            self._pool.adopt(worker_id, leg, listener)
        except PoolError:
            return False  # the pool is closing: its workers hang everything up
        return True

    def _reject_branch(self, leg: str, code: int) -> None:
        self._spawn(self._reject(leg, code), name=f"inbound-reject-{leg}")

    async def _reject(self, leg: str, code: int) -> None:
        with contextlib.suppress(*_GONE):
            await self._pool.reject(leg, code)

    # ------------------------------------------------------------------ agents

    def _join_waiting(self, s: _Session) -> None:
        if s not in self._waiting:
            bisect.insort(self._waiting, s, key=lambda x: x.seq)
        self.poke()

    def _leave_waiting(self, s: _Session) -> None:
        with contextlib.suppress(ValueError):
            self._waiting.remove(s)

    def _pick_agent(self, s: _Session) -> AgentConfig | None:
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

    def _release_agent(self, s: _Session) -> None:
        key, s.held = s.held, None
        s.pending = None
        if key is not None:
            self._presence.call_ended(key)
            self.poke()

    # ------------------------------------------------------------------ the call

    async def _drive(self, s: _Session) -> None:
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
                    if isinstance(item, _AnswerRequest) and not item.done.done():
                        item.done.set_exception(CallNotReady("the call has ended"))
                self._leave_waiting(s)
                if s.reserved and s.chosen is not None:
                    self._pool.release(s.chosen.worker_id, 1)
                self._release_agent(s)
                self._by_sip.pop(s.sip_call_id, None)
                if s.call_id is not None:
                    self._calls.pop(s.call_id, None)
                self._tombstone(s.sip_call_id)
                s.done.set()
                self.poke()  # the call's slots are free: a waiting call may use them

    def _tombstone(self, sip_call_id: str) -> None:
        now = time.monotonic()
        self._tombstones[sip_call_id] = now
        self._tombstones.move_to_end(sip_call_id)
        while self._tombstones and (
            len(self._tombstones) > _TOMBSTONES_MAX
            or now - next(iter(self._tombstones.values())) > _TOMBSTONE_SECONDS
        ):
            self._tombstones.popitem(last=False)

    async def _open(self, s: _Session) -> None:
        """Identify the caller, pick an agent, write the record, publish the ringing."""
        first = s.first
        region = self._config.site.default_region
        e164 = try_normalize_phone(first.from_number, region) if first.from_number else None
        s.from_number = e164 or first.from_number
        s.to_number = first.to_number or first.line or ""
        if e164 is not None:
            try:
                s.match = await self._store.lookup_caller(e164)
                if s.match is None and self._config.leads.from_incoming_calls:
                    s.match, s.lead_created = await self._store.leads.find_or_create_for_number(
                        e164, LeadSource.INCOMING_CALL
                    )
            except StoreError as exc:
                # The call matters more than its card: ring on without one.
                log.error("inbound.lookup_failed", error=str(exc))
        s.card = caller_card(s.match, created=s.lead_created)
        self._join_waiting(s)
        best = self._best_branch(s)
        s.worker_id = best.worker_id if best is not None else s.worker_id
        # Announce first, then write the record under the id announced: the pop-up
        # waits for nothing but the caller's identity. Every later store step of the
        # call runs after this one, in this task.
        s.call_id = new_id()
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
            s.stored = True
            s.record_worker = s.worker_id
        except StoreError as exc:
            log.error("inbound.record_failed", error=str(exc))
        finally:
            s.recorded.set()

    # ------------------------------------------------------------------ the branch

    def _preferred_worker(self, s: _Session) -> str:
        agent = s.pending
        if agent is not None:
            try:
                return self._pool.worker_for_line(agent.line)
            except UnknownLine:
                pass
        return s.home

    def _best_branch(self, s: _Session) -> _Branch | None:
        """The branch to keep: on the preferred worker, else the home worker,
        else any worker with a slot free for the agent's leg, else any."""
        branches = list(s.branches.values())
        if not branches:
            return None
        preferred = self._preferred_worker(s)
        for wanted in (preferred, s.home):
            for b in branches:
                if b.worker_id == wanted and self._has_slot(b.worker_id):
                    return b
        for b in branches:
            if self._has_slot(b.worker_id):
                return b
        home = [b for b in branches if b.worker_id == s.home]
        return (home or branches)[0]

    def _has_slot(self, worker_id: str) -> bool:
        try:
            return self._pool.free_slots(worker_id) >= 1
        except PoolError:
            return False

    def _may_still_come(self, s: _Session, worker_id: str) -> bool:
        """Whether a branch on ``worker_id`` can still be expected."""
        if any(b.worker_id == worker_id for b in s.branches.values()):
            return False
        try:
            # The branch itself needs a slot to be handed over, the agent leg another.
            return self._pool.alive(worker_id) and self._pool.free_slots(worker_id) >= 2
        except PoolError:
            return False

    async def _maybe_decide(self, s: _Session, *, timed_out: bool = False) -> None:
        if s.phase is not InboundPhase.NEW or s.call_id is None:
            return
        if not s.branches:
            return
        elapsed = time.monotonic() - s.arrived
        if not timed_out and elapsed < self.branch_wait:
            # The first choice present decides; a better one still expected is awaited.
            for wanted in dict.fromkeys((self._preferred_worker(s), s.home)):
                if any(b.worker_id == wanted for b in s.branches.values()) and self._has_slot(
                    wanted
                ):
                    break
                if self._may_still_come(s, wanted):
                    if "decide" not in s.timers:
                        self._arm(s, "decide", self.branch_wait - elapsed)
                    return
        await self._decide(s)

    async def _decide(self, s: _Session) -> None:
        chosen = self._best_branch(s)
        assert chosen is not None
        assert s.call_id is not None
        now = time.monotonic()
        self.stats.decision_wait.append(now - s.arrived)
        self.stats.branch_spread.append(max(b.at for b in s.branches.values()) - s.arrived)
        self._disarm(s, "decide")
        s.chosen = chosen
        for leg in list(s.branches):
            if leg != chosen.leg:
                del s.branches[leg]
                self._reject_branch(leg, self._loser_code)
        if s.pending is not None:
            # The agent's leg is placed right away: hold its slot from now on. A
            # call with no agent yet holds only its own slot while it rings.
            try:
                self._pool.reserve(chosen.worker_id, 1)
                s.reserved = True
            except PoolError:
                s.reserved = False  # tried again when the leg is placed
        log.info(
            "inbound.branch_chosen",
            worker_id=chosen.worker_id,
            leg=chosen.leg,
            waited=round(now - s.arrived, 4),
            agent=s.pending.key if s.pending is not None else None,
        )
        if chosen.worker_id != s.worker_id:
            s.worker_id = chosen.worker_id
            if s.stored:
                try:
                    await self._store.calls.set_worker(s.call_id, chosen.worker_id)
                    s.record_worker = chosen.worker_id
                except StoreError as exc:
                    log.error("inbound.store_failed", step="worker", error=str(exc))
        s.phase = InboundPhase.WAITING
        await self._next_offer(s)

    # ------------------------------------------------------------------ events

    async def _handle(self, s: _Session, item: _Item) -> None:
        if isinstance(item, _AnswerRequest):
            await self._answer_request(s, item)
        elif isinstance(item, _HangupRequest):
            if s.outcome is None:
                reason = CallEndReason.COMPLETED if s.answer_sent else CallEndReason.CANCELLED
                self._decide_outcome(s, _Outcome(reason, 0, None))
        elif isinstance(item, _Wake):
            if s.phase is InboundPhase.NEW:
                await self._maybe_decide(s)
            elif s.phase is InboundPhase.WAITING and s.pending is not None:
                await self._offer(s)
        elif isinstance(item, _Timer):
            await self._on_timer(s, item)
        else:
            await self._on_leg_event(s, item.leg, item.event)
        self._check_ended(s)

    async def _answer_request(self, s: _Session, req: _AnswerRequest) -> None:
        def refuse(why: str) -> None:
            if not req.done.done():
                req.done.set_exception(CallNotReady(why))

        agent = s.agent if s.other_kind == "agent" else None
        if s.outcome is not None or s.phase in (InboundPhase.ENDING, InboundPhase.ENDED):
            refuse("the call has ended")
        elif s.connected_agent is not None:
            if s.connected_agent in req.agents:
                req.done.set_result(s.connected_agent)  # answered already, on the phone
            else:
                refuse("the call was answered by another agent")
        elif s.phase is not InboundPhase.OFFERING or agent is None or s.other_leg is None:
            refuse("the call is not ringing at an agent's phone")
        elif agent.key not in req.agents:
            refuse("the call rings at another agent's phone")
        elif s.other_answered or s.reoffer is not None:
            req.done.set_result(agent.key)  # being answered already
        else:
            log.info("inbound.answer_from_widget", agent=agent.key)
            s.reoffer = agent
            s.answer_waiters.append(req.done)
            await self._hang_up(s, s.other_leg)

    async def _on_timer(self, s: _Session, timer: _Timer) -> None:
        s.timers.pop(timer.kind, None)
        if timer.kind == "decide":
            await self._maybe_decide(s, timed_out=True)
        elif timer.kind == "deadline":
            await self._no_agent(s)
        elif timer.serial == s.serial and s.other_leg is not None and not s.other_answered:
            # The agent's (or the overflow's) phone rang out.
            log.info("inbound.ring_timeout", leg_kind=timer.kind)
            await self._hang_up(s, s.other_leg)

    async def _on_leg_event(self, s: _Session, leg: str, event: LegEvent) -> None:
        if leg == s.other_leg:
            await self._on_other_event(s, leg, event)
        elif s.chosen is not None and leg == s.chosen.leg:
            await self._on_customer_event(s, event)
        elif leg in s.branches:
            # A branch before the choice: only its end matters.
            if isinstance(event, Gone | Ended):
                del s.branches[leg]
                if not s.branches and s.phase is InboundPhase.NEW:
                    ended = event if isinstance(event, Ended) else None
                    reason = ended.reason if ended is not None else None
                    self._decide_outcome(
                        s,
                        _Outcome(
                            CallEndReason.INTERRUPTED if ended is None else CallEndReason.CANCELLED,
                            ended.sip_code if ended is not None else 0,
                            "customer",
                        ),
                    )
                    log.info("inbound.gone_before_choice", end_reason=reason)
                else:
                    await self._maybe_decide(s)
        elif isinstance(event, Recorded):
            await self._recording_finished(s, event)

    async def _on_customer_event(self, s: _Session, event: LegEvent) -> None:
        if isinstance(event, Gone):
            self._interrupted(s)
        elif isinstance(event, Recorded):
            await self._recording_finished(s, event)
        elif isinstance(event, MediaUp):
            s.media.add(s.customer_leg)
            await self._maybe_bridge(s)
        elif isinstance(event, Digit):
            assert s.call_id is not None
            self._bus.publish(
                CallDtmf(
                    call_id=s.call_id,
                    agent=s.connected_agent,
                    leg="customer",
                    digit=event.digit,
                    direction="received",
                )
            )
        elif isinstance(event, Transfer):
            # A blind transfer (CallControl) of the caller: its outcome; the caller's
            # leg then ends "transferred" after a success.
            if event.final:
                assert s.call_id is not None
                self._bus.publish(transfer_outcome(s.call_id, s.connected_agent, event))
        elif isinstance(event, Failed):
            log.warning("inbound.leg_error", leg_kind="customer", code=event.code)
        elif isinstance(event, RecordingLost):
            log.warning("inbound.leg_error", leg_kind="customer", code="recording_failed")
            if s.recording and not s.recording_done:
                await self._recording_lost(s, event.reason)
        elif isinstance(event, Answered):
            await self._customer_answered(s)
        elif isinstance(event, Ended):
            s.customer_alive = False
            if s.outcome is None:
                if event.transferred:
                    reason = CallEndReason.TRANSFERRED
                elif s.answer_sent:
                    reason = CallEndReason.COMPLETED
                else:
                    reason = CallEndReason.CANCELLED  # the caller gave up ringing
                self._decide_outcome(s, _Outcome(reason, event.sip_code, "customer"))

    async def _on_other_event(self, s: _Session, leg: str, event: LegEvent) -> None:
        kind = s.other_kind
        if isinstance(event, Gone):
            self._interrupted(s)
        elif isinstance(event, MediaUp):
            s.media.add(leg)
            await self._maybe_bridge(s)
        elif isinstance(event, Failed | RecordingLost):
            code = event.code if isinstance(event, Failed) else "recording_failed"
            log.warning("inbound.leg_error", leg_kind=kind, code=code)
        elif isinstance(event, Ringing):
            if not s.other_rang and kind == "agent" and s.outcome is None:
                s.other_rang = True
                self._publish_agent_ringing(s)
        elif isinstance(event, Answered):
            await self._other_answered(s, leg)
        elif isinstance(event, Ended):
            s.other_alive = False
            self._disarm(s, "forward" if kind == "overflow" else "agent")
            if s.other_answered:
                if s.outcome is None:
                    self._decide_outcome(s, _Outcome(CallEndReason.COMPLETED, event.sip_code, kind))
                return
            log.info(
                "inbound.leg_not_answered",
                leg_kind=kind,
                end_reason=event.reason,
                sip_code=event.sip_code,
            )
            s.other_leg = None
            s.media.discard(leg)
            if kind == "agent":
                again, s.reoffer = s.reoffer, None
                s.agent = None
                if again is not None and s.outcome is None and s.phase is InboundPhase.OFFERING:
                    # Answered from the widget: the same agent (still held in
                    # presence) is rung again, asked to answer by itself.
                    s.phase = InboundPhase.WAITING
                    s.pending = again
                    await self._offer(s, auto_answer=True)
                    return
                self._settle_answers(s, None, "the call is no longer offered to you")
                self._release_agent(s)
                if s.outcome is None and s.phase is InboundPhase.OFFERING:
                    s.phase = InboundPhase.WAITING
                    await self._next_offer(s)
                elif s.outcome is None and s.phase is InboundPhase.FORWARDING:
                    await self._forward(s)  # the no-agent deadline hung the agent up
            elif s.outcome is None:
                # The overflow number did not answer: the call is missed.
                self._miss(s)

    # ------------------------------------------------------------------ offering

    async def _next_offer(self, s: _Session) -> None:
        """Offer the call to the next agent, or wait for one."""
        if s.outcome is not None or s.phase is not InboundPhase.WAITING:
            return
        if s.pending is None and s.held is None:
            self._join_waiting(s)
        if s.pending is not None:
            await self._offer(s)

    async def _offer(self, s: _Session, *, auto_answer: bool = False) -> None:
        agent, s.pending = s.pending, None
        assert agent is not None
        assert s.chosen is not None
        assert s.call_id is not None
        self._leave_waiting(s)
        worker = s.chosen.worker_id
        try:
            own = self._pool.worker_for_line(agent.line) == worker
        except UnknownLine:
            own = False
        # From the agent's own line on their worker, else from the reception
        # line (registered on every agent worker too).
        line = agent.line if own else s.chosen.event.line
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
        s.phase = InboundPhase.OFFERING
        self._arm(s, "agent", self._config.inbound.agent_ring_seconds, serial=s.serial)
        self._settle_answers(s, agent.key)

    @staticmethod
    def _settle_answers(s: _Session, agent: str | None, why: str = "") -> None:
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
        s: _Session,
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

    def _publish_agent_ringing(self, s: _Session) -> None:
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

    async def _no_agent(self, s: _Session) -> None:
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
            s.phase = InboundPhase.FORWARDING
            if s.other_leg is not None:
                return  # forwarded when the agent's leg has ended (_on_other_event)
            await self._forward(s)
        else:
            self._miss(s)

    async def _forward(self, s: _Session) -> None:
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
        leg = await self._place(s, "overflow", s.chosen.event.line, number)
        if leg is None:
            self._miss(s)
            return
        self._arm(s, "forward", self.forward_ring_timeout, serial=s.serial)

    def _overflow_refusal(self, number: str) -> Refusal | None:
        if is_extension(number):
            return self._policy.check_extension(number)
        e164 = try_normalize_phone(number, self._config.site.default_region)
        if e164 is None:
            return None  # the PBX is given it as configured, and answers for it
        return self._policy.check_number(e164)

    def _miss(self, s: _Session) -> None:
        """Nobody answers: reject the caller with ``inbound.reject_code``."""
        code = self._config.inbound.reject_code
        self._decide_outcome(s, _Outcome(CallEndReason.NO_ANSWER, code, "customer"))

    # ------------------------------------------------------------------ connecting

    async def _other_answered(self, s: _Session, leg: str) -> None:
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
        s.phase = InboundPhase.CONNECTING
        try:
            await self._pool.answer(s.chosen.leg)
        except UnknownCall:
            return  # the caller left meanwhile: the end of their leg is queued
        except _GONE as exc:
            log.error("inbound.answer_failed", error=str(exc))
            self._decide_outcome(s, _Outcome(CallEndReason.FAILED, 0, "customer"))
            return
        s.answer_sent = True
        s.answered_at = time.monotonic()
        await self._maybe_bridge(s)

    async def _customer_answered(self, s: _Session) -> None:
        if s.customer_answered or s.call_id is None:
            return
        s.customer_answered = True
        user_id = await self._user_id(s.agent) if s.other_kind == "agent" else None
        if s.stored:
            await self._store_step(self._store.calls.mark_answered_by(s.call_id, user_id))
        self._bus.publish(CallAnswered(call_id=s.call_id, leg="customer", agent=s.connected_agent))
        if s.lead_created and user_id is not None and s.match is not None:
            await self._store_step(self._store.leads.give_if_unowned(s.match.id, user_id))

    async def _maybe_bridge(self, s: _Session) -> None:
        if s.phase is not InboundPhase.CONNECTING or not s.answer_sent or s.outcome is not None:
            return
        if s.other_leg is None or not {s.customer_leg, s.other_leg} <= s.media:
            return
        assert s.call_id is not None
        try:
            await self._pool.bridge(s.customer_leg, s.other_leg)
        except UnknownCall:
            return  # a leg ended meanwhile: its end is queued and decides
        except _GONE as exc:
            log.error("inbound.bridge_failed", error=str(exc))
            self._decide_outcome(s, _Outcome(CallEndReason.FAILED, 0, None))
            return
        if self._config.recording.enabled:
            path = Path(self._config.recording.directory) / f"{s.call_id}.wav"
            try:
                await self._pool.record_start(
                    s.customer_leg, partial(s.put, s.customer_leg), path=str(path)
                )
                s.recording = True
            except _GONE as exc:
                # The conversation matters more than its recording; the record and
                # CallEnded say it failed, and why.
                log.error("inbound.recording_failed", error=str(exc))
                if isinstance(exc, WorkerCommandError) and exc.code == "recording_failed":
                    s.recording_failed = exc.message
                    if s.stored:
                        await self._store_step(
                            self._store.calls.recording_failed(s.call_id, exc.message)
                        )
        s.phase = InboundPhase.BRIDGED
        self._bus.publish(
            CallBridged(call_id=s.call_id, agent=s.connected_agent, recording=s.recording)
        )
        log.info("inbound.bridged", agent=s.connected_agent, recording=s.recording)

    # ------------------------------------------------------------------ ending

    def _decide_outcome(self, s: _Session, outcome: _Outcome) -> None:
        if s.outcome is None:
            s.outcome = outcome
            log.info("inbound.ending", reason=outcome.reason.value, sip_code=outcome.sip_code)
        if s.reserved and s.chosen is not None:
            # No leg is placed any more: the slot is free for other calls now.
            s.reserved = False
            self._pool.release(s.chosen.worker_id, 1)
        self._leave_waiting(s)
        if s.phase is not InboundPhase.ENDED:
            s.phase = InboundPhase.ENDING

    def _interrupted(self, s: _Session) -> None:
        """The carrying worker died; the pool closes its records."""
        s.customer_alive = s.other_alive = False
        s.reserved = False  # the pool dropped the dead worker's reservations
        s.branches.clear()
        if s.outcome is None:
            s.outcome = _Outcome(CallEndReason.INTERRUPTED, 0, None)
        s.phase = InboundPhase.ENDED

    def _check_ended(self, s: _Session) -> None:
        if s.phase is InboundPhase.ENDING and not self._alive_legs(s):
            s.phase = InboundPhase.ENDED

    def _alive_legs(self, s: _Session) -> list[str]:
        legs = []
        if s.chosen is not None:
            if s.customer_alive:
                legs.append(s.chosen.leg)
        else:
            legs += list(s.branches)
        if s.other_leg is not None and s.other_alive:
            legs.append(s.other_leg)
        return legs

    async def _hang_up_leftovers(self, s: _Session) -> None:
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
                with contextlib.suppress(*_GONE):
                    await self._pool.reject(leg, code)
            else:
                await self._hang_up(s, leg)
        self._check_ended(s)

    async def _hang_up(self, s: _Session, leg: str) -> None:
        if leg in s.hung_up:
            return
        s.hung_up.add(leg)
        with contextlib.suppress(*_GONE):
            await self._pool.hangup(leg)

    async def _finish(self, s: _Session) -> None:
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
        if s.stored:
            try:
                await self._store.calls.end(s.call_id, outcome.reason)
            except Conflict:
                # The pool closed it first: the worker died as the call ended.
                self._release_agent(s)
                return
            except StoreError as exc:
                log.error("inbound.store_failed", step="end", error=str(exc))
        if missed and not interrupted:
            self.stats.missed += 1
        log.info(
            "inbound.ended",
            reason=outcome.reason.value,
            sip_code=outcome.sip_code,
            agent=agent,
            missed=missed,
        )
        self._bus.publish(
            CallEnded(
                call_id=s.call_id,
                reason=outcome.reason.value,
                sip_code=outcome.sip_code,
                agent=agent,
                talk_seconds=talk,
                leg=outcome.leg,
                recording_failed=s.recording_failed,
            )
        )
        self._release_agent(s)
        if s.recording and not s.recording_done:
            try:
                async with asyncio.timeout(_RECORDING_WAIT):
                    while not s.recording_done:
                        item = await s.queue.get()
                        if isinstance(item, _LegEvent):
                            if isinstance(item.event, Recorded):
                                await self._recording_finished(s, item.event)
                            elif isinstance(item.event, RecordingLost):
                                await self._recording_lost(s, item.event.reason)
                            elif isinstance(item.event, Gone):
                                return
            except TimeoutError:
                log.error("inbound.recording_missing", waited=_RECORDING_WAIT)

    async def _recording_lost(self, s: _Session, reason: str) -> None:
        # The worker could not write the recording (a full disk): the call went on.
        assert s.call_id is not None
        s.recording_done = True
        s.recording_failed = reason
        if s.stored:
            await self._store_step(self._store.calls.recording_failed(s.call_id, reason))
        self._bus.publish(
            RecordingReady(
                call_id=s.call_id, path="", duration_seconds=0.0, recording_failed=reason
            )
        )

    async def _recording_finished(self, s: _Session, event: Recorded) -> None:
        assert s.call_id is not None
        s.recording_done = True
        if s.stored:
            await self._store_step(
                self._store.calls.attach_recording(s.call_id, event.path, event.duration_seconds)
            )
        self._bus.publish(
            RecordingReady(
                call_id=s.call_id, path=event.path, duration_seconds=event.duration_seconds
            )
        )

    # ------------------------------------------------------------------ helpers

    def _arm(
        self,
        s: _Session,
        kind: Literal["decide", "deadline", "agent", "forward"],
        delay: float,
        *,
        serial: int = 0,
    ) -> None:
        self._disarm(s, kind)
        loop = asyncio.get_running_loop()
        s.timers[kind] = loop.call_later(max(delay, 0.0), s.queue.put_nowait, _Timer(kind, serial))

    @staticmethod
    def _disarm(s: _Session, kind: str) -> None:
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

    async def _store_step(self, step: Awaitable[object]) -> None:
        # The call goes on when the store hiccups: a missing answer time is
        # better than a dropped caller. Only store errors are caught.
        try:
            await step
        except Conflict:
            log.warning("inbound.store_conflict")
        except StoreError as exc:
            log.error("inbound.store_failed", error=str(exc))


def _ignore(_event: LegEvent) -> None:
    """Listener of a branch refused at once: its events do not matter."""
