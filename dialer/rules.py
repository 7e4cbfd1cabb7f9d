"""The dialer's rules, pure: calling hours in the callee's time zone, retries.

Calling hours: ``site.working_hours`` is read in the **callee's** local time (the
zone given on the client, else the zones ``phonenumbers`` knows for the number),
and ``site.working_days`` are the company's days, in the site's zone. A number
whose prefix spans several zones (``+1 800``...) may be dialed only when it is
within hours in all of them. A number outside hours is deferred to the next time
it is inside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as pn_timezone

from config import DialerConfig, SiteConfig
from crm_store import CallEndReason

__all__ = ["CallingHours", "OutsideHours", "callee_zones", "retry_at"]

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_UNKNOWN_ZONE = "Etc/Unknown"


@dataclass(frozen=True, slots=True)
class OutsideHours:
    """Why a number may not be dialed now, and when it may."""

    detail: str
    until: datetime


def callee_zones(e164: str, explicit: str | None, fallback: str) -> tuple[ZoneInfo, ...]:
    """The time zones the callee may be in: ``explicit`` if given, else the
    number's (``fallback``, the site's zone, when the number tells none)."""
    if explicit:
        try:
            return (ZoneInfo(explicit),)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        names = pn_timezone.time_zones_for_number(phonenumbers.parse(e164))
    except phonenumbers.NumberParseException:
        names = ()
    zones = []
    for name in names:
        if name == _UNKNOWN_ZONE:
            continue
        try:
            zones.append(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return tuple(zones) or (ZoneInfo(fallback),)


class CallingHours:
    """``site.working_days`` and ``site.working_hours``, asked about one callee."""

    def __init__(self, site: SiteConfig) -> None:
        start, end = site.working_hours.split("-")
        self.start = time.fromisoformat(start.strip())
        end_time = time.fromisoformat(end.strip())
        # "-23:59" means to the end of the day: no minute of the day is lost.
        self._end_of_day = end_time == time(23, 59)
        self.end = end_time
        self.days = frozenset(_WEEKDAYS.index(d) for d in site.working_days)
        self.site_zone = ZoneInfo(site.timezone)

    def _open_at(self, when: datetime, zones: tuple[ZoneInfo, ...]) -> bool:
        if when.astimezone(self.site_zone).weekday() not in self.days:
            return False
        for zone in zones:
            local = when.astimezone(zone).time().replace(tzinfo=None)
            if local < self.start:
                return False
            if not self._end_of_day and local >= self.end:
                return False
        return True

    def check(self, now: datetime, zones: tuple[ZoneInfo, ...]) -> OutsideHours | None:
        """``None`` if a callee in ``zones`` may be called at ``now`` (aware),
        else why not and the next moment they may (within 8 days)."""
        if self._open_at(now, zones):
            return None
        local = now.astimezone(zones[0])
        detail = (
            f"{local:%a %H:%M} in {zones[0].key}"
            if self._site_working(now)
            else f"{now.astimezone(self.site_zone):%a} is not a working day"
        )
        return OutsideHours(detail, self.next_open(now, zones))

    def _site_working(self, now: datetime) -> bool:
        return now.astimezone(self.site_zone).weekday() in self.days

    def next_open(self, now: datetime, zones: tuple[ZoneInfo, ...]) -> datetime:
        """The first moment from ``now`` when the callee may be called: each
        candidate is an opening time in a callee zone or a midnight in the site's."""
        candidates = []
        for zone in (*zones, self.site_zone):
            base = now.astimezone(zone).date()
            for offset in range(9):
                day = base + timedelta(days=offset)
                hour = self.start if zone in zones else time(0, 0)
                at = datetime.combine(day, hour, tzinfo=zone).astimezone(UTC)
                if at > now:
                    candidates.append(at)
        for at in sorted(candidates):
            if self._open_at(at, zones):
                return at
        return now + timedelta(days=1)


def retry_at(
    result: CallEndReason | str, attempts: int, dialer: DialerConfig, now: datetime
) -> datetime | None:
    """When to dial again after ``attempts`` attempts ending with ``result``, or
    ``None`` for never: busy and no answer are retried after their configured
    delay while attempts remain; every other outcome is final."""
    if attempts >= dialer.max_attempts:
        return None
    if result == CallEndReason.BUSY:
        return now + timedelta(minutes=dialer.retry_busy_minutes)
    if result == CallEndReason.NO_ANSWER:
        return now + timedelta(minutes=dialer.retry_no_answer_minutes)
    return None
