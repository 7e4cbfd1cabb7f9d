"""Reconciliation: the live views rebuilt from the calls the daemon really holds.

The supervisor feed's projection, the agents' "busy on a call" and the store's open
call records all follow ``call.created`` / ``call.ended`` events. An event can be
lost to one of them (a subscriber whose queue overflowed drops it); then a call
stays on the wall, its agent stays busy (no inbound call is offered to them again)
and its record stays open, until the daemon restarts.

:class:`CallReconciler` compares, every ``sip.reconcile_interval`` seconds, the calls
those views show for this site with the calls the services hold (click-to-call,
inbound, dialer: each from the moment it announces a call until it has published its
end). A call the services do not hold at two comparisons in a row is over: its
record, if still open, is closed ``interrupted``, and ``call.ended`` is published
with reason ``lost``, which every view applies like any other end. Two comparisons,
because a service writes a call's record just before it starts holding the call.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence

import structlog

from bus import Bus, CallEnded
from crm_store import CallEndReason, Conflict, NotFound, Store, StoreError
from ws_gateway.state import Projection

__all__ = ["LOST", "CallReconciler"]

log = structlog.get_logger(__name__)

#: The ``call.ended`` reason of a call whose end the live views missed.
LOST = "lost"

LiveCalls = Callable[[], set[uuid.UUID]]
ShownCalls = Callable[[], Mapping[uuid.UUID, str | None]]


class CallReconciler:
    """Ends, with reason ``lost``, the calls the views show and no service holds.

    ``live`` are the services' ``live_calls``; ``shown`` give the calls each view
    holds as in progress, with their agent (None if unknown). The store's open
    records of ``site`` are a view too. Run :meth:`run` in a task it owns; call
    :meth:`sweep` to compare once.
    """

    def __init__(
        self,
        *,
        bus: Bus,
        store: Store | None,
        site: str,
        live: Sequence[LiveCalls],
        shown: Sequence[ShownCalls],
        interval: float,
    ) -> None:
        self._bus = bus
        self._store = store
        self._site = site
        self._live = list(live)
        self._shown = list(shown)
        self.interval = interval
        self._suspects: set[uuid.UUID] = set()
        #: How many calls were ended as lost since start, for status pages and tests.
        self.lost = 0

    @classmethod
    def for_projection(cls, projection: Projection, site: str) -> ShownCalls:
        """The ``shown`` of a websocket gateway's projection: the site's calls."""
        return lambda: projection.active_calls_of(site)

    async def run(self) -> None:
        """Compare every ``interval`` seconds until cancelled.

        Store errors are logged and leave the records for a later comparison; the
        other views are put right regardless. Any other failure of one comparison is
        logged and the next runs on time. Cancellation propagates (a comparison cut
        short has published what it had decided).
        """
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception:
                # A bug in one comparison must not stop the next ones (nor, through
                # the daemon's task group, the daemon): each starts afresh.
                log.exception("reconcile.failed")

    async def sweep(self) -> list[uuid.UUID]:
        """Compare once; return the calls ended as lost by this comparison."""
        shown: dict[uuid.UUID, str | None] = {}
        for view in self._shown:
            for call_id, agent in view().items():
                if shown.get(call_id) is None:
                    shown[call_id] = agent
        if self._store is not None:
            try:
                records = await self._store.calls.open_calls()
            except StoreError as exc:
                # The other views are still put right; the records wait for the store.
                log.error("reconcile.store_failed", error=str(exc))
                records = []
            for record in records:
                if record.origin == self._site:
                    shown.setdefault(record.id, None)
        # Read after the views: a call that ended meanwhile is shown and not live
        # once, then no longer shown.
        live: set[uuid.UUID] = set()
        for source in self._live:
            live |= source()
        suspects = set(shown) - live
        lost = suspects & self._suspects
        self._suspects = suspects - lost
        for call_id in sorted(lost):
            await self._end(call_id, shown[call_id])
        return sorted(lost)

    async def _end(self, call_id: uuid.UUID, agent: str | None) -> None:
        if self._store is not None:
            try:
                await self._store.calls.end(call_id, CallEndReason.INTERRUPTED)
            except (Conflict, NotFound):
                pass  # ended already, or never stored: only the views missed its end
            except StoreError as exc:
                # Still open; the next comparisons close it when the store answers.
                log.error("reconcile.store_failed", call_id=str(call_id), error=str(exc))
        self.lost += 1
        log.warning("reconcile.call_lost", call_id=str(call_id), agent=agent)
        self._bus.publish(
            CallEnded(
                call_id=call_id,
                reason=LOST,
                sip_code=0,
                agent=agent,
                talk_seconds=None,
            )
        )
