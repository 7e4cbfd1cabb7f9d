"""Call legs as the services see them: one vocabulary, translated from the worker once.

A *leg* is one SIP dialog held by one worker. The services (click-to-call in
:mod:`sip.calls`, inbound in :mod:`sip.inbound`, the dialer, call control) never
read the worker's wire protocol (:mod:`sip.protocol`): :func:`translate` turns each
event of a leg into one of the frozen values below, and that is all they match on.

==================  ======================================================
:class:`Ringing`    the far end rings (``180``/``183``)
:class:`Answered`   the far end picked up (``200``)
:class:`MediaUp`    the leg's audio flows: it can be bridged or recorded
:class:`Ended`      the leg is over, with the worker's reason and SIP code
:class:`Gone`       the worker holding the leg died under it
:class:`Digit`      a DTMF digit came in on the leg
:class:`Transfer`   progress of a blind transfer (REFER) of the leg
:class:`Recorded`   the leg's recording is complete on disk
:class:`RecordingLost`  the leg's recording could not be written, and why
:class:`Failed`     the worker reported an error about the leg
==================  ======================================================

:func:`end_reason` maps a leg that ended before it was answered to the store's
:class:`~crm_store.CallEndReason`; :class:`CallLegs` says where a connected call's
legs are (for transfers and supervision).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from crm_store import CallEndReason
from sip import protocol as p
from sip.client import WorkerExited
from sip.exceptions import PoolError, UnknownCall, WorkerCommandError, WorkerGone

__all__ = [
    "GONE",
    "Answered",
    "CallLegs",
    "Digit",
    "Ended",
    "Failed",
    "Gone",
    "LegEvent",
    "LegListener",
    "MediaUp",
    "Recorded",
    "RecordingLost",
    "Ringing",
    "Transfer",
    "end_reason",
    "translate",
]

#: Errors of a leg command that mean the leg or its worker is already gone; when
#: hanging up, that is the wanted result anyway.
GONE = (UnknownCall, PoolError, WorkerCommandError, WorkerGone, TimeoutError)


@dataclass(frozen=True, slots=True)
class Ringing:
    """The far end of ``leg_id`` rings (a provisional 180 or 183)."""

    leg_id: str


@dataclass(frozen=True, slots=True)
class Answered:
    """The far end of ``leg_id`` answered (or we answered an incoming leg)."""

    leg_id: str


@dataclass(frozen=True, slots=True)
class MediaUp:
    """The audio of ``leg_id`` flows; it can now be bridged and recorded."""

    leg_id: str


@dataclass(frozen=True, slots=True)
class Ended:
    """``leg_id`` is over.

    ``reason`` is the worker's end reason (``busy``, ``declined``, ``no_answer``,
    ``remote_hangup``, ``transferred``... see ``docs/sip-worker.md``), None when
    the worker gave none; ``sip_code`` the final SIP status (0 if none).
    """

    leg_id: str
    reason: str | None
    sip_code: int

    @property
    def transferred(self) -> bool:
        """The leg left us by a REFER we accepted."""
        return self.reason == "transferred"


@dataclass(frozen=True, slots=True)
class Gone:
    """The worker holding the leg exited; the leg is lost (no :class:`Ended` follows)."""

    returncode: int | None


@dataclass(frozen=True, slots=True)
class Digit:
    """The DTMF ``digit`` came in on ``leg_id``."""

    leg_id: str
    digit: str


@dataclass(frozen=True, slots=True)
class Transfer:
    """Progress of a blind transfer of ``leg_id``.

    ``code``/``reason`` are first the REFER's acceptance, then each NOTIFY's status
    line; ``final`` marks the last report; ``target`` is the user part of the
    transfer target.
    """

    leg_id: str
    code: int
    reason: str
    final: bool
    target: str

    @property
    def succeeded(self) -> bool:
        return 200 <= self.code < 300


@dataclass(frozen=True, slots=True)
class Recorded:
    """The recording of ``leg_id`` is complete at ``path``."""

    leg_id: str
    path: str
    duration_seconds: float


@dataclass(frozen=True, slots=True)
class RecordingLost:
    """The recording of ``leg_id`` could not be written; ``reason`` says why."""

    leg_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The worker reported an error ``code`` (``message``) about ``leg_id``."""

    leg_id: str
    code: str
    message: str


LegEvent: TypeAlias = (
    Ringing
    | Answered
    | MediaUp
    | Ended
    | Gone
    | Digit
    | Transfer
    | Recorded
    | RecordingLost
    | Failed
)
#: Called on the loop with every event of one leg; must not block.
LegListener = Callable[[LegEvent], None]


def translate(event: p.Event) -> LegEvent | None:
    """The leg event a worker event means, or None if it means nothing to a leg.

    Pure. A ``call_state`` of ``calling`` (the INVITE left) says nothing the
    service does not know and gives None; so do events that name no call.
    """
    match event:
        case WorkerExited():
            return Gone(event.returncode)
        case p.CallState(state="ringing" | "early"):
            return Ringing(event.call_id)
        case p.CallState(state="answered"):
            return Answered(event.call_id)
        case p.CallState(state="ended"):
            return Ended(event.call_id, event.end_reason, event.sip_code)
        case p.MediaActive():
            return MediaUp(event.call_id)
        case p.Dtmf():
            return Digit(event.call_id, event.digit)
        case p.TransferStatus():
            return Transfer(event.call_id, event.code, event.reason, event.final, event.target_user)
        case p.RecordingFinished():
            return Recorded(event.call_id, event.path, event.duration_seconds)
        case p.Error(code="recording_failed", call_id=str() as leg_id):
            return RecordingLost(leg_id, event.message)
        case p.Error(call_id=str() as leg_id):
            return Failed(leg_id, event.code, event.message)
    return None


def end_reason(worker_reason: str | None, sip_code: int, *, rang: bool) -> CallEndReason:
    """Map a leg that ended *before being answered* to a :class:`CallEndReason`.

    ``worker_reason`` is the worker's ``end_reason`` (``docs/sip-worker.md``).
    ``480 Temporarily Unavailable`` means "no answer" after the far end rang, and
    "unreachable" when it came at once, without ringing (an unregistered
    extension, a switched-off mobile). A leg we cancelled is ``cancelled``: the
    caller of this function knows whether it was our ring timer (``no_answer``).
    """
    if sip_code == 403:
        return CallEndReason.REJECTED
    match worker_reason:
        case "busy":
            return CallEndReason.BUSY
        case "declined":
            return CallEndReason.REJECTED
        case "no_answer":
            return CallEndReason.NO_ANSWER if rang else CallEndReason.UNREACHABLE
        case "timeout":
            return CallEndReason.NO_ANSWER
        case "not_found" | "unreachable":
            return CallEndReason.UNREACHABLE
        case "cancelled" | "caller_cancelled" | "rejected":
            return CallEndReason.CANCELLED
        case "local_hangup" | "remote_hangup":
            # Answered, then hung up before the call was connected to the
            # customer: the calling side gave up.
            return CallEndReason.CANCELLED
        case _:
            return CallEndReason.FAILED


@dataclass(frozen=True, slots=True)
class CallLegs:
    """Where a connected call is: its worker and legs, who handles it.

    The same for every kind of call (click-to-call, inbound, dialer), so that call
    control (transfers, supervision) needs no knowledge of the service holding it.
    """

    call_id: uuid.UUID
    worker_id: str
    customer_leg: str
    agent_leg: str | None
    agent: str | None
    line: str | None
