"""The branches of an inbound call: the leg a worker received, and where it may go.

A reception line is registered by one worker, so a call reaches Switchboard as one
branch; the service may move it (a ``302``) to the worker that is to carry it
(:func:`carrier`). A second branch of the same SIP call (a PBX still forking to a
stale registration) is refused with :func:`losing_branch_code`, and a branch of a
call just ended (:class:`Tombstones`) is late, not a new call."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import structlog

from sip import protocol as p
from sip.exceptions import PoolError
from sip.pool import SipPool

__all__ = [
    "MOVE_PREFIX",
    "Branch",
    "Tombstones",
    "carrier",
    "has_slot",
    "losing_branch_code",
]

#: The user part a moved call is addressed to (``sb-move-<call id>-<n>``): the
#: worker receiving it is told which call it is by this name alone, since a
#: B2BUA places the redirected call with a new Call-ID.
MOVE_PREFIX = "sb-move-"

log = structlog.get_logger(__name__)


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


@dataclass(eq=False)
class Branch:
    """One branch of a forked inbound call: the leg a worker received."""

    worker_id: str
    leg: str
    event: p.IncomingCall
    at: float


def has_slot(pool: SipPool, worker_id: str) -> bool:
    """``worker_id`` has a call slot free (for the agent's leg)."""
    try:
        return pool.free_slots(worker_id) >= 1
    except PoolError:
        return False


def carrier(pool: SipPool, current: str, agent_worker: str | None) -> str:
    """The worker that should carry a call held on ``current``.

    The agent's worker when one is being offered the call and it has room for
    both legs (the customer's and the agent's); with no agent yet, the call stays
    where it is while that leaves a slot for the next arrival, else it goes to
    the worker with the most room for both legs (ties: the first in plan order).
    ``current`` when nothing better has room.
    """
    if agent_worker is not None:
        if agent_worker == current or _free(pool, agent_worker) >= 2:
            return agent_worker
        return current if _free(pool, current) >= 1 else _roomiest(pool, current)
    if _free(pool, current) >= 2:
        return current
    return _roomiest(pool, current)


def _roomiest(pool: SipPool, current: str) -> str:
    best, room = current, 1
    for worker_id, status in pool.status().items():
        if not status.alive or worker_id == current:
            continue
        free = _free(pool, worker_id)
        if free > room:
            best, room = worker_id, free
    return best


def _free(pool: SipPool, worker_id: str) -> int:
    try:
        return pool.free_slots(worker_id) if pool.alive(worker_id) else 0
    except PoolError:
        return 0


class Tombstones:
    """The SIP Call-IDs of calls just ended, so that a branch arriving late (a slow
    fork, a retransmitted INVITE) is rejected, not taken for a new call.

    A Call-ID is remembered ``seconds`` (64 s is SIP's Timer B/H for UDP), at most
    ``limit`` of them.
    """

    def __init__(self, *, seconds: float = 64.0, limit: int = 10_000) -> None:
        self._seconds = seconds
        self._limit = limit
        self._stamps: OrderedDict[str, float] = OrderedDict()

    def add(self, sip_call_id: str, now: float) -> None:
        """The call ``sip_call_id`` ended at clock time ``now``."""
        self._stamps[sip_call_id] = now
        self._stamps.move_to_end(sip_call_id)
        while self._stamps and (
            len(self._stamps) > self._limit
            or now - next(iter(self._stamps.values())) > self._seconds
        ):
            self._stamps.popitem(last=False)

    def recent(self, sip_call_id: str, now: float) -> bool:
        """Whether the call ``sip_call_id`` ended less than ``seconds`` before ``now``."""
        stamp = self._stamps.get(sip_call_id)
        return stamp is not None and now - stamp < self._seconds
