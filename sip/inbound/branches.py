"""Which branch of a forked inbound call carries it, and what the others are told.

Every worker registering a reception line receives a branch of the same call; the
service keeps one (:func:`best_branch`), waits a little for a better one still
expected (:func:`may_still_come`), and rejects the others with
:func:`losing_branch_code`. A branch of a call just ended (:class:`Tombstones`) is
late, not a new call."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from sip import protocol as p
from sip.exceptions import PoolError
from sip.pool import SipPool

__all__ = [
    "Branch",
    "Tombstones",
    "best_branch",
    "has_slot",
    "losing_branch_code",
    "may_still_come",
]

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


def best_branch(
    pool: SipPool, branches: Iterable[Branch], *, preferred: str, home: str
) -> Branch | None:
    """The branch to keep: on the ``preferred`` worker, else the ``home`` worker,
    else any worker with a slot free for the agent's leg, else any (None if there
    is no branch)."""
    found = list(branches)
    if not found:
        return None
    for wanted in (preferred, home):
        for b in found:
            if b.worker_id == wanted and has_slot(pool, b.worker_id):
                return b
    for b in found:
        if has_slot(pool, b.worker_id):
            return b
    at_home = [b for b in found if b.worker_id == home]
    return (at_home or found)[0]


def may_still_come(pool: SipPool, branches: Iterable[Branch], worker_id: str) -> bool:
    """Whether a branch on ``worker_id`` can still be expected."""
    if any(b.worker_id == worker_id for b in branches):
        return False
    try:
        # The branch itself needs a slot to be handed over, the agent leg another.
        return pool.alive(worker_id) and pool.free_slots(worker_id) >= 2
    except PoolError:
        return False


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
