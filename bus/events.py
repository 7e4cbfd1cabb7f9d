"""Every event Switchboard publishes, defined once.

An event is a frozen, slotted dataclass with a ``TYPE`` name and a ``VERSION``
of its schema. The bus wraps each published event in an :class:`Envelope` that
adds what only the publisher knows: the origin (the daemon's site id), a
per-origin monotonic sequence number, and the UTC time of publication. The same
envelopes feed the websocket protocol, the MQTT topics and the store.

A change that removes or retypes a field bumps ``VERSION``; adding an optional
field does not.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

__all__ = [
    "EVENT_TYPES",
    "AgentStateChanged",
    "CallAnswered",
    "CallBridged",
    "CallCreated",
    "CallDialing",
    "CallDtmf",
    "CallEnded",
    "CallHeld",
    "CallRinging",
    "CallSupervised",
    "CallTransferred",
    "DialerDialing",
    "DialerGap",
    "DialerItemClaimed",
    "DialerItemSkipped",
    "DialerResult",
    "DialerSessionFinished",
    "DialerSessionPaused",
    "DialerSessionResumed",
    "DialerSessionStarted",
    "DialerSessionStopped",
    "Envelope",
    "Event",
    "EventsDropped",
    "RecordingReady",
    "RegistrationChanged",
    "WorkerCrashed",
    "WorkerStarted",
    "to_data",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event; subclasses set ``TYPE`` and, when it changes, ``VERSION``."""

    TYPE: ClassVar[str] = "event"
    VERSION: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class Envelope:
    """An event as published: with its origin, sequence number and time."""

    origin: str
    seq: int
    at: datetime
    event: Event

    @property
    def type(self) -> str:
        return self.event.TYPE

    def to_data(self) -> dict[str, Any]:
        """Plain JSON-ready data: ``{"type", "v", "origin", "seq", "at", "data"}``."""
        return {
            "type": self.event.TYPE,
            "v": self.event.VERSION,
            "origin": self.origin,
            "seq": self.seq,
            "at": self.at.isoformat(),
            "data": to_data(self.event),
        }


def to_data(event: Event) -> dict[str, Any]:
    """The event's fields as JSON-ready values (UUIDs and enums as strings)."""
    return {f.name: _plain(getattr(event, f.name)) for f in dataclasses.fields(event)}


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --- SIP lines -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegistrationChanged(Event):
    """A line's registration with the PBX changed state."""

    TYPE: ClassVar[str] = "registration.changed"

    line: str
    state: str  # registering | registered | failed | unregistered
    code: int
    reason: str
    worker_id: str


# --- Calls -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallCreated(Event):
    """A call record exists: an originate was accepted or an INVITE arrived."""

    TYPE: ClassVar[str] = "call.created"

    call_id: uuid.UUID
    direction: str  # inbound | outbound | internal
    from_number: str
    to_number: str
    line: str
    agent: str | None
    worker_id: str


@dataclass(frozen=True, slots=True)
class CallDialing(Event):
    """The INVITE of the call's leg toward ``leg`` (``agent`` or ``customer``) is sent.

    ``dialed_at`` is the wall-clock time the originate command left for the worker;
    benchmarks compare it with the time the far end saw the INVITE.
    """

    TYPE: ClassVar[str] = "call.dialing"

    call_id: uuid.UUID
    leg: str
    agent: str | None
    dialed_at: datetime


@dataclass(frozen=True, slots=True)
class CallRinging(Event):
    """The call's leg toward ``leg`` is ringing (``agent`` or ``customer``).

    For an inbound call it is published twice: ``leg="customer"``, ``agent`` None,
    as soon as the caller is known (the supervisors' feed, the pop-up data), and
    ``leg="agent"`` with the agent the call is offered to (their widget pops the
    card). ``card`` is the caller's client or lead (see ``docs/protocol.md``),
    None when the number matches neither or is withheld.
    """

    TYPE: ClassVar[str] = "call.ringing"

    call_id: uuid.UUID
    leg: str
    agent: str | None
    direction: str = "outbound"  # inbound | outbound
    from_number: str | None = None
    to_number: str | None = None
    card: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CallAnswered(Event):
    """The ``leg`` of the call was answered."""

    TYPE: ClassVar[str] = "call.answered"

    call_id: uuid.UUID
    leg: str
    agent: str | None


@dataclass(frozen=True, slots=True)
class CallBridged(Event):
    """Agent and customer hear each other; recording started if enabled."""

    TYPE: ClassVar[str] = "call.bridged"

    call_id: uuid.UUID
    agent: str | None
    recording: bool


@dataclass(frozen=True, slots=True)
class CallEnded(Event):
    """The call is over; ``reason`` is a ``crm_store.CallEndReason`` value."""

    TYPE: ClassVar[str] = "call.ended"

    call_id: uuid.UUID
    reason: str
    sip_code: int
    agent: str | None
    talk_seconds: float | None
    #: The leg whose outcome gave ``reason`` (``agent``/``customer``); None if neither
    #: (an interrupted call, a hang-up requested through the API).
    leg: str | None = None
    #: Why the call's recording failed (``"no space left on device"``) when it failed
    #: before the call ended; None otherwise (recorded, not recorded, or the failure
    #: comes with ``recording.ready``).
    recording_failed: str | None = None


@dataclass(frozen=True, slots=True)
class CallHeld(Event):
    """The customer was put on hold (``held``) or taken off it."""

    TYPE: ClassVar[str] = "call.held"

    call_id: uuid.UUID
    agent: str | None
    held: bool


@dataclass(frozen=True, slots=True)
class CallTransferred(Event):
    """A transfer of the customer: ``kind`` blind (REFER) or attended (consult leg,
    then connect); ``state`` started, consulting, completed or failed (``reason``)."""

    TYPE: ClassVar[str] = "call.transferred"

    call_id: uuid.UUID
    agent: str | None
    kind: str
    target: str
    state: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class CallSupervised(Event):
    """A supervisor joined a live call as ``mode`` (listen, whisper, barge), changed
    mode, or left (``mode`` None)."""

    TYPE: ClassVar[str] = "call.supervised"

    call_id: uuid.UUID
    agent: str | None
    supervisor: str
    mode: str | None


@dataclass(frozen=True, slots=True)
class CallDtmf(Event):
    """A DTMF digit received from (``leg="customer"``) or sent to the customer."""

    TYPE: ClassVar[str] = "call.dtmf"

    call_id: uuid.UUID
    agent: str | None
    leg: str
    digit: str
    direction: str  # received | sent


@dataclass(frozen=True, slots=True)
class RecordingReady(Event):
    """A call's recording is complete on disk and linked to the call record, or failed.

    When it failed, ``recording_failed`` says why, ``path`` is empty and
    ``duration_seconds`` 0, and the call record's ``recording_status`` is ``failed``.
    """

    TYPE: ClassVar[str] = "recording.ready"

    call_id: uuid.UUID
    path: str
    duration_seconds: float
    recording_failed: str | None = None


# --- Agents ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentStateChanged(Event):
    """An agent became available, paused (with a reason) or offline.

    ``agent`` is the agent's name in the configuration; ``user`` the CRM user name
    when the agent has one.
    """

    TYPE: ClassVar[str] = "agent.state"

    agent: str
    user: str | None
    #: The state the agent declared: a ``bus.presence.PresenceState`` value
    #: (available | paused | wrap_up | offline); being on a call is not sent.
    state: str
    reason: str | None = None


# --- SIP workers -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerStarted(Event):
    """A SIP worker process is up (first start or restart)."""

    TYPE: ClassVar[str] = "worker.started"

    worker_id: str
    pid: int
    restarts: int


@dataclass(frozen=True, slots=True)
class WorkerCrashed(Event):
    """A SIP worker process died; its calls were closed as interrupted."""

    TYPE: ClassVar[str] = "worker.crashed"

    worker_id: str
    returncode: int | None
    crashes: int
    interrupted_calls: tuple[uuid.UUID, ...]
    restart_in_seconds: float


# --- Auto-dialer -------------------------------------------------------------
#
# Every dialer event names the session's ``agent`` (so the websocket gateway
# routes it to that agent and to supervisors) and carries the session's counters:
# ``dialed`` and ``answered`` by this session, ``remaining`` items of the list
# still to dial (pending, claimed or being dialed, by any agent).


@dataclass(frozen=True, slots=True)
class DialerSessionStarted(Event):
    """An agent started dialing a call list (or a restarted dialer resumed it)."""

    TYPE: ClassVar[str] = "dialer.session.started"

    session_id: uuid.UUID
    agent: str
    list_id: uuid.UUID
    dialed: int
    answered: int
    remaining: int
    agent_leg: str  # persistent | per_call
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class DialerSessionPaused(Event):
    """The session stopped taking new numbers; ``reason`` says who or what paused it."""

    TYPE: ClassVar[str] = "dialer.session.paused"

    session_id: uuid.UUID
    agent: str
    list_id: uuid.UUID
    dialed: int
    answered: int
    remaining: int
    reason: str


@dataclass(frozen=True, slots=True)
class DialerSessionResumed(Event):
    """A paused session takes numbers again."""

    TYPE: ClassVar[str] = "dialer.session.resumed"

    session_id: uuid.UUID
    agent: str
    list_id: uuid.UUID
    dialed: int
    answered: int
    remaining: int


@dataclass(frozen=True, slots=True)
class DialerSessionStopped(Event):
    """The session ended before the list did (asked to, or it could not go on)."""

    TYPE: ClassVar[str] = "dialer.session.stopped"

    session_id: uuid.UUID
    agent: str
    list_id: uuid.UUID
    dialed: int
    answered: int
    remaining: int
    reason: str


@dataclass(frozen=True, slots=True)
class DialerSessionFinished(Event):
    """The list has nothing left for this session to dial."""

    TYPE: ClassVar[str] = "dialer.session.finished"

    session_id: uuid.UUID
    agent: str
    list_id: uuid.UUID
    dialed: int
    answered: int
    remaining: int


@dataclass(frozen=True, slots=True)
class DialerItemClaimed(Event):
    """The session claimed the list's next number (nobody else will dial it)."""

    TYPE: ClassVar[str] = "dialer.item.claimed"

    session_id: uuid.UUID
    agent: str
    list_id: uuid.UUID
    dialed: int
    answered: int
    remaining: int
    item_id: uuid.UUID
    number: str
    attempt: int


@dataclass(frozen=True, slots=True)
class DialerItemSkipped(Event):
    """A claimed number was not dialed: ``reason`` is ``do_not_call``,
    ``outside_calling_hours`` (deferred to ``until``) or ``agent``."""

    TYPE: ClassVar[str] = "dialer.item.skipped"

    session_id: uuid.UUID
    agent: str
    list_id: uuid.UUID
    dialed: int
    answered: int
    remaining: int
    item_id: uuid.UUID
    number: str
    reason: str
    detail: str | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class DialerDialing(Event):
    """The customer's INVITE for an item is being sent; ``call_id`` is its record."""

    TYPE: ClassVar[str] = "dialer.dialing"

    session_id: uuid.UUID
    agent: str
    list_id: uuid.UUID
    dialed: int
    answered: int
    remaining: int
    item_id: uuid.UUID
    call_id: uuid.UUID
    number: str
    attempt: int


@dataclass(frozen=True, slots=True)
class DialerResult(Event):
    """An attempt's outcome is stored: ``result`` is a call end reason (or
    ``skipped``); ``retry_at`` is set when the number will be dialed again."""

    TYPE: ClassVar[str] = "dialer.result"

    session_id: uuid.UUID
    agent: str
    list_id: uuid.UUID
    dialed: int
    answered: int
    remaining: int
    item_id: uuid.UUID
    call_id: uuid.UUID | None
    number: str
    result: str
    retry_at: datetime | None = None
    lead_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class DialerGap(Event):
    """The pause after an unanswered call: the next INVITE goes at ``until``."""

    TYPE: ClassVar[str] = "dialer.gap"

    session_id: uuid.UUID
    agent: str
    list_id: uuid.UUID
    dialed: int
    answered: int
    remaining: int
    seconds: float
    until: datetime


# --- The bus itself ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventsDropped(Event):
    """A subscriber's queue was full: ``count`` events were not delivered to it."""

    TYPE: ClassVar[str] = "bus.dropped"

    subscriber: str
    count: int


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        RegistrationChanged,
        AgentStateChanged,
        CallCreated,
        CallDialing,
        CallRinging,
        CallAnswered,
        CallBridged,
        CallEnded,
        CallHeld,
        CallTransferred,
        CallSupervised,
        CallDtmf,
        RecordingReady,
        WorkerStarted,
        WorkerCrashed,
        DialerSessionStarted,
        DialerSessionPaused,
        DialerSessionResumed,
        DialerSessionStopped,
        DialerSessionFinished,
        DialerItemClaimed,
        DialerItemSkipped,
        DialerDialing,
        DialerResult,
        DialerGap,
        EventsDropped,
    )
}
