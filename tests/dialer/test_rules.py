"""Calling hours in the callee's zone, working days in the site's, retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from config import DialerConfig, SiteConfig
from crm_store import CallEndReason
from dialer import CallingHours, callee_zones, retry_at

SITE = SiteConfig(
    timezone="Europe/Paris",
    working_days=("mon", "tue", "wed", "thu", "fri"),
    working_hours="09:00-19:00",
)
WEDNESDAY_NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_zone_comes_from_the_number_or_the_client() -> None:
    assert [z.key for z in callee_zones("+12125550123", None, "UTC")] == ["America/New_York"]
    assert [z.key for z in callee_zones("+33612345678", "Asia/Tokyo", "UTC")] == ["Asia/Tokyo"]
    # A number that tells no zone falls back to the site's.
    assert [z.key for z in callee_zones("+80012345678", None, "Europe/Paris")] == ["Europe/Paris"]


def test_hours_are_read_in_the_callee_zone() -> None:
    hours = CallingHours(SITE)
    paris = callee_zones("+33612345678", None, "UTC")
    assert hours.check(WEDNESDAY_NOON, paris) is None
    new_york = callee_zones("+12125550123", None, "UTC")
    outside = hours.check(WEDNESDAY_NOON, new_york)
    assert outside is not None
    assert outside.detail == "Wed 07:00 in America/New_York"
    assert outside.until == datetime(2026, 11, 25, 14, 0, tzinfo=UTC)


def test_working_days_are_the_company_s() -> None:
    hours = CallingHours(SITE)
    saturday = WEDNESDAY_NOON + timedelta(days=3)
    paris = callee_zones("+33612345678", None, "UTC")
    outside = hours.check(saturday, paris)
    assert outside is not None
    assert outside.detail == "Sat is not a working day"
    # Monday 09:00 in Paris.
    assert outside.until == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def test_evening_defers_to_the_next_morning() -> None:
    hours = CallingHours(SITE)
    evening = datetime(2026, 11, 25, 19, 30, tzinfo=UTC)  # 20:30 in Paris
    outside = hours.check(evening, callee_zones("+33612345678", None, "UTC"))
    assert outside is not None
    assert outside.until == datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def test_retries_per_outcome_until_the_maximum() -> None:
    dialer = DialerConfig(max_attempts=3, retry_busy_minutes=10, retry_no_answer_minutes=60)
    now = WEDNESDAY_NOON
    assert retry_at(CallEndReason.BUSY, 1, dialer, now) == now + timedelta(minutes=10)
    assert retry_at(CallEndReason.NO_ANSWER, 2, dialer, now) == now + timedelta(minutes=60)
    assert retry_at(CallEndReason.NO_ANSWER, 3, dialer, now) is None
    assert retry_at(CallEndReason.REJECTED, 1, dialer, now) is None
    assert retry_at(CallEndReason.COMPLETED, 1, dialer, now) is None
