"""Claiming a dialing session's next number, mixed into
:class:`dialer.session.DialingSession`.

The claim is atomic in the store; the number then passes the do-not-call
list, the outbound policy and the calling hours, or is skipped or deferred,
and the next one is claimed.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from bus import DialerItemClaimed, DialerItemSkipped
from config.outbound import OutboundPolicy
from crm_store import CallListItem, Conflict

from ._calls import CallSteps
from .rules import CallingHours, callee_zones

__all__ = ["ClaimSteps"]

log = structlog.get_logger(__name__)


class ClaimSteps(CallSteps):
    """The claim steps; the session provides the attributes."""

    _hours: CallingHours
    _policy: OutboundPolicy
    _lease: timedelta
    _prepared: CallListItem | None

    async def _prepare(self) -> CallListItem | None:
        """Claim the next due number the rules allow; skip or defer the others."""
        loop = asyncio.get_running_loop()
        while True:
            now = self._clock()
            began = loop.time()
            item = await self._store.call_lists.claim_next(
                self.list_id, self.user_id, now=now, lease=self._lease
            )
            # A claim is a write like the attempt's: its duration tells how busy
            # the store is right now, before the first attempt has been timed.
            self._note_write(loop.time() - began)
            if item is None:
                return None
            number = item.number_e164 or item.raw_number
            log.info("dialer.claimed", number=number, item_id=str(item.id))
            self._publish(
                DialerItemClaimed, item_id=item.id, number=number, attempt=item.attempts + 1
            )
            dnc = await self._store.dialer.do_not_call_match(number)
            if dnc is not None:
                kind = "prefix" if dnc.prefix else "number"
                detail = f"{kind} {dnc.number}" + (f": {dnc.reason}" if dnc.reason else "")
                await self._skip_item(item, "do_not_call", detail)
                continue
            # Again at dial time: the list may predate the policy, or have been
            # screened for another agent's rules.
            refusal = self._policy.check_number(number, agent=self.agent_name)
            if refusal is not None:
                await self._skip_item(item, "forbidden", f"{refusal.message} ({refusal.rule})")
                continue
            explicit = (
                await self._store.dialer.client_timezone(item.client_id)
                if item.client_id is not None
                else None
            )
            zones = callee_zones(number, explicit, self._config.site.timezone)
            outside = self._hours.check(now, zones)
            if outside is not None:
                reason = f"outside_calling_hours: {outside.detail}"
                await self._store.dialer.defer(item.id, outside.until, reason)
                log.info("dialer.deferred", number=number, until=outside.until.isoformat())
                self._publish(
                    DialerItemSkipped,
                    item_id=item.id,
                    number=number,
                    reason="outside_calling_hours",
                    detail=outside.detail,
                    until=outside.until,
                )
                continue
            return item

    async def _skip_item(self, item: CallListItem, reason: str, detail: str) -> None:
        number = item.number_e164 or item.raw_number
        try:
            await self._store.call_lists.skip(item.id, f"{reason}: {detail}"[:200])
        except Conflict as exc:
            log.warning("dialer.skip_conflict", error=str(exc))
            return
        self.remaining = await self._store.dialer.remaining(self.list_id)
        log.info("dialer.skipped", number=number, reason=reason, detail=detail)
        self._publish(
            DialerItemSkipped, item_id=item.id, number=number, reason=reason, detail=detail
        )

    async def _release_prepared(self) -> None:
        item, self._prepared = self._prepared, None
        if item is not None:
            await self._store.dialer.release_item(item.id)
