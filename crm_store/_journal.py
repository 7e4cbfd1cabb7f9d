"""The call journal: call record steps kept in order while the database is away.

A call in progress must not depend on the database: when a call record step (the
record's creation, ringing, answer, worker, end, recording) cannot be written because
the store is unavailable (a lost or refused connection, a full disk), the step is
queued here and the caller goes on. A drainer task writes the queued steps, oldest
first, as soon as the store answers again, retrying with capped exponential backoff.
While anything is queued every new step queues behind it, so the record's steps
always land in the order they happened.

Each step is idempotent, keyed by the call id and the step: replaying it checks the
row first and writes (with its audit row) only what is not there yet. A step whose
first attempt was committed but whose answer was lost is therefore never written
twice. A step that fails for another reason than the store's health (a constraint,
a bug) is logged and dropped, so that it cannot hold back every call behind it.

The queue lives in memory: a daemon stopped while steps are queued loses them (it
says how many in its log), and the calls they belong to are closed as
``interrupted`` at its next start-up as for any crash. ``max_pending`` bounds it:
when that many steps wait, :meth:`CallJournal.full` is true and new calls are
refused, while the steps of calls already carried are still queued.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy.engine import Connection

from ._base import Database
from .exceptions import StoreUnavailable

__all__ = ["CallJournal", "JournalStep", "StoreHealth"]

log = structlog.get_logger(__name__)

DEFAULT_MAX_PENDING = 10_000
_RETRY_FIRST = 0.2
_RETRY_MAX = 5.0


@dataclass(frozen=True, slots=True)
class JournalStep:
    """One queued call record step: ``apply`` writes it if it is not there yet."""

    call_id: uuid.UUID
    step: str
    apply: Callable[[Connection], None]


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """What the store can say about itself without failing.

    ``degraded`` is true while the database does not answer or call record steps
    wait to be written; ``pending`` counts those steps; ``reason`` is the last
    failure (the driver's words, no password); ``since`` the ``time.monotonic()`` at
    which it began.
    """

    degraded: bool
    pending: int
    reason: str | None = None
    since: float | None = None


class CallJournal:
    """The ordered queue of call record steps waiting for the store.

    Owned by :class:`~crm_store.Store`, which closes it (:meth:`aclose`) before its
    connections. Its drainer task exists only while steps are queued.
    """

    def __init__(self, db: Database, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self._db = db
        self.max_pending = max_pending
        """How many steps may wait before new calls are refused."""
        self._queue: collections.deque[JournalStep] = collections.deque()
        self._drainer: asyncio.Task[None] | None = None
        self._reason: str | None = None
        self._since: float | None = None
        self._closed = False
        self.written = 0
        """Steps written from the queue since the store opened."""
        self.dropped = 0
        """Steps dropped because they failed for a reason other than the store's health."""

    @property
    def pending(self) -> int:
        """How many steps wait to be written."""
        return len(self._queue)

    @property
    def full(self) -> bool:
        """True when ``max_pending`` steps wait: new calls are refused."""
        return len(self._queue) >= self.max_pending

    def health(self) -> StoreHealth:
        """The journal's view of the store: degraded while it holds steps or since
        the last failure that :meth:`recovered` has not cleared."""
        return StoreHealth(
            degraded=self._since is not None,
            pending=len(self._queue),
            reason=self._reason,
            since=self._since,
        )

    def failed(self, exc: StoreUnavailable) -> None:
        """Note that the store failed to answer (from any caller)."""
        if self._since is None:
            self._since = time.monotonic()
            log.error("store.degraded", reason=str(exc), pending=len(self._queue))
        self._reason = str(exc)

    def recovered(self) -> None:
        """Note that the store answered; clears the degraded state if nothing waits."""
        if self._since is not None and not self._queue:
            log.warning(
                "store.recovered",
                after_seconds=round(time.monotonic() - self._since, 1),
                written=self.written,
            )
            self._since = None
            self._reason = None

    @property
    def waiting(self) -> bool:
        """True while steps are queued: a new step must queue behind them."""
        return bool(self._queue)

    def queue(self, step: JournalStep) -> None:
        """Append ``step`` behind every queued step and make sure a drainer runs.
        Raises :class:`StoreUnavailable` once the journal is closed."""
        if self._closed:
            raise StoreUnavailable("the store is closed")
        self._queue.append(step)
        log.warning(
            "store.step_queued", call_id=str(step.call_id), step=step.step, pending=len(self._queue)
        )
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(
                self._drain(), name="store-journal"
            )

    async def _drain(self) -> None:
        delay = _RETRY_FIRST
        while self._queue:
            step = self._queue[0]
            try:
                await self._db.run_write(step.apply)
            except StoreUnavailable as exc:
                self.failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            except Exception as exc:
                # Not the store's health: retrying would fail again and hold back
                # every step behind this one.
                self.dropped += 1
                log.error(
                    "store.step_dropped",
                    call_id=str(step.call_id),
                    step=step.step,
                    error=type(exc).__name__,
                    exc_info=True,
                )
            else:
                self.written += 1
                log.info("store.step_written", call_id=str(step.call_id), step=step.step)
            self._queue.popleft()
            delay = _RETRY_FIRST
        self.recovered()

    async def aclose(self, *, timeout: float = 5.0) -> None:
        """Give queued steps ``timeout`` seconds to be written, then stop the drainer.
        Steps still queued are lost; their number is logged. Idempotent."""
        if self._closed:
            return
        self._closed = True
        drainer = self._drainer
        if drainer is not None and not drainer.done():
            # wait() neither raises the drainer's outcome nor cancels it; a
            # cancellation of aclose itself propagates after the drainer is stopped.
            try:
                await asyncio.wait([drainer], timeout=timeout)
            finally:
                drainer.cancel()
                await asyncio.wait([drainer])
        if self._queue:
            log.error(
                "store.steps_lost",
                count=len(self._queue),
                calls=len({s.call_id for s in self._queue}),
                reason="store closed while unavailable",
            )
            self._queue.clear()
