"""One inbound call as the service holds it: the items its task handles, its
session (I/O side: branches, legs, timers; the phase lives in its
:class:`~sip.inbound.state.InboundCall`), and the snapshots and statistics the
service gives out."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from config import AgentConfig
from crm_store import CallerMatch
from sip import protocol as p
from sip.conversation import Conversation
from sip.inbound.branches import Branch
from sip.inbound.state import InboundCall, InboundPhase, Outcome
from sip.legs import LegEvent

__all__ = [
    "ActiveInboundCall",
    "AnswerRequest",
    "Arrived",
    "HangupRequest",
    "InboundStats",
    "Item",
    "LegItem",
    "Session",
    "TimerItem",
    "Wake",
    "agent_of",
    "ignore",
    "next_leg_event",
]


@dataclass(frozen=True, slots=True)
class ActiveInboundCall:
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
    #: From a call's redirect (``302``) to its INVITE reaching the new worker.
    move_latency: deque[float] = field(default_factory=lambda: deque(maxlen=10000))
    calls: int = 0
    missed: int = 0
    #: Calls moved to another worker, and moves the PBX never completed.
    moves: int = 0
    moves_lost: int = 0


@dataclass(frozen=True, slots=True)
class LegItem:
    leg: str
    event: LegEvent


@dataclass(frozen=True, slots=True)
class TimerItem:
    kind: Literal["move", "deadline", "agent", "forward"]
    serial: int = 0


@dataclass(frozen=True, slots=True)
class Wake:
    """A new branch arrived, or presence gave the call an agent."""


@dataclass(frozen=True, slots=True)
class Arrived:
    """The call, moved by a redirect, reached the worker that is to carry it."""

    branch: Branch


@dataclass(frozen=True, slots=True)
class HangupRequest:
    pass


@dataclass(frozen=True, slots=True)
class AnswerRequest:
    """An agent answers from the widget: any of ``agents`` (the user's)."""

    agents: frozenset[str]
    done: asyncio.Future[str]


Item = LegItem | TimerItem | Wake | Arrived | HangupRequest | AnswerRequest


@dataclass(eq=False)
class Session:
    sip_call_id: str
    seq: int
    first: p.IncomingCall
    home: str
    arrived: float
    branches: dict[str, Branch] = field(default_factory=dict)
    queue: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
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
    chosen: Branch | None = None
    reserved: bool = False
    #: The name the call is redirected to while it moves to another worker.
    move_token: str | None = None
    move_target: str | None = None
    moved_at: float = 0.0
    moves: int = 0
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
    customer_answered: bool = False
    answered_at: float | None = None
    media: set[str] = field(default_factory=set)
    hung_up: set[str] = field(default_factory=set)
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    #: The shared steps from the bridge on, once the call has its id.
    conversation: Conversation | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    #: Where the call stands: the pure state machine the service feeds.
    state: InboundCall = field(init=False)

    def __post_init__(self) -> None:
        self.state = InboundCall(self.sip_call_id)

    @property
    def phase(self) -> InboundPhase:
        return self.state.phase

    @property
    def outcome(self) -> Outcome | None:
        return self.state.outcome

    @property
    def answer_sent(self) -> bool:
        """The caller's leg was answered."""
        return self.state.answered

    def put(self, leg: str, event: LegEvent) -> None:
        self.queue.put_nowait(LegItem(leg, event))

    @property
    def customer_leg(self) -> str:
        return self.chosen.leg if self.chosen is not None else self.first.call_id

    @property
    def ended(self) -> bool:
        return self.state.ended


async def next_leg_event(s: Session) -> LegEvent | None:
    """The next leg event of the call's queue (None for any other item)."""
    item = await s.queue.get()
    return item.event if isinstance(item, LegItem) else None


def agent_of(s: Session) -> str | None:
    """The agent whose phone the call rings or who took it (None: none, or the
    overflow number)."""
    return s.agent.key if s.agent is not None and s.other_kind == "agent" else None


def ignore(_event: LegEvent) -> None:
    """Listener of a branch refused at once: its events do not matter."""
