"""The in-process publish/subscribe bus.

Publishing is synchronous and never waits: each subscriber has its own bounded
queue, and an event that does not fit is dropped *for that subscriber only* and
counted. Drops are reported as :class:`~bus.events.EventsDropped` events, one
per subscriber per loop iteration, so a slow consumer can never hold up the SIP
engine or the other consumers.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Collection
from datetime import UTC, datetime

import structlog

from .events import Envelope, Event, EventsDropped
from .exceptions import SubscriptionClosed

__all__ = ["Bus", "Subscription"]

log = structlog.get_logger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Subscription:
    """One consumer's bounded queue of envelopes; iterate it with ``async for``.

    Iteration ends when the subscription (or the bus) is closed and the events
    queued before that have been read.
    """

    def __init__(self, bus: Bus, name: str, maxsize: int, types: frozenset[str] | None) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.name = name
        self.maxsize = maxsize
        self.types = types
        self.dropped = 0
        self._bus = bus
        self._items: deque[Envelope] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def _offer(self, envelope: Envelope) -> bool:
        """Queue ``envelope`` if wanted; False if it had to be dropped."""
        if self._closed or (self.types is not None and envelope.type not in self.types):
            return True
        if len(self._items) >= self.maxsize:
            self.dropped += 1
            return False
        self._items.append(envelope)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    async def get(self) -> Envelope:
        """The next envelope, waiting for one.

        Raises :class:`SubscriptionClosed` once closed and drained. Cancelling a
        waiting ``get`` loses nothing: the envelope stays queued.
        """
        while not self._items:
            if self._closed:
                raise SubscriptionClosed(self.name)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def get_nowait(self) -> Envelope | None:
        """The next envelope if one is queued, else ``None``."""
        return self._items.popleft() if self._items else None

    def close(self) -> None:
        """Stop receiving; events already queued can still be read. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._bus._forget(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Envelope:
        try:
            return await self.get()
        except SubscriptionClosed:
            raise StopAsyncIteration from None


class Bus:
    """Publishes events stamped with ``origin``, a sequence number and the time."""

    def __init__(self, origin: str, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.origin = origin
        self._clock = clock
        self._seq = itertools.count(1)
        self._subscriptions: list[Subscription] = []
        self._pending_drops: dict[str, int] = {}
        self._drop_report_scheduled = False
        self.published = 0
        self.relayed = 0

    def subscribe(
        self, name: str, *, maxsize: int = 1000, types: Collection[str] | None = None
    ) -> Subscription:
        """A new subscription receiving every event published from now on.

        ``types`` limits it to those event type names. ``name`` appears in the
        drop reports and logs.
        """
        sub = Subscription(self, name, maxsize, frozenset(types) if types is not None else None)
        self._subscriptions.append(sub)
        return sub

    def publish(self, event: Event) -> Envelope:
        """Stamp ``event`` and offer it to every subscriber; never blocks.

        Must be called on the event loop's thread (the SIP engine's callbacks hop
        to the loop first).
        """
        envelope = Envelope(origin=self.origin, seq=next(self._seq), at=self._clock(), event=event)
        self.published += 1
        self._offer_all(envelope)
        return envelope

    def relay(self, envelope: Envelope) -> None:
        """Offer an envelope stamped elsewhere to every subscriber, unchanged.

        For events that came from another daemon (through MQTT): they keep their
        own origin, seq and time, and take no number from this bus. Drops are
        counted and reported as for :meth:`publish` (the reports are this bus's
        own events). Never blocks; must be called on the event loop's thread.
        """
        self.relayed += 1
        self._offer_all(envelope)

    def _offer_all(self, envelope: Envelope) -> None:
        for sub in self._subscriptions:
            if not sub._offer(envelope) and not isinstance(envelope.event, EventsDropped):
                self._pending_drops[sub.name] = self._pending_drops.get(sub.name, 0) + 1
                self._schedule_drop_report()

    def _schedule_drop_report(self) -> None:
        if self._drop_report_scheduled:
            return
        self._drop_report_scheduled = True
        try:
            asyncio.get_running_loop().call_soon(self._report_drops)
        except RuntimeError:
            # No loop (a synchronous caller in a test): report at once.
            self._report_drops()

    def _report_drops(self) -> None:
        self._drop_report_scheduled = False
        drops, self._pending_drops = self._pending_drops, {}
        for name, count in drops.items():
            log.warning("bus.dropped", subscriber=name, count=count)
            self.publish(EventsDropped(subscriber=name, count=count))

    def _forget(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)

    def close(self) -> None:
        """Close every subscription; their queued events can still be read."""
        for sub in list(self._subscriptions):
            sub.close()
