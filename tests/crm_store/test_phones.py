from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from crm_store import InvalidPhone, normalize_phone
from crm_store.phones import try_normalize_phone


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("0612345678", "FR", "+33612345678"),
        ("+33 6 12 34 56 78", "FR", "+33612345678"),
        ("0033612345678", "FR", "+33612345678"),
        ("+33612345678", "DE", "+33612345678"),
        ("030 1234567", "DE", "+49301234567"),
        ("(202) 555-0143", "US", "+12025550143"),
    ],
)
def test_numbers_normalise_to_e164(raw: str, region: str, expected: str) -> None:
    assert normalize_phone(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("06", "too short"),
        ("", "empty"),
        ("hello", "not a number"),
        ("09 99 99 99 99 99 99", "too long"),
        ("07 00 00 00 00", "not a valid number for region FR"),
    ],
)
def test_invalid_numbers_are_rejected_with_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhone) as caught:
        normalize_phone(raw, "FR")
    assert caught.value.reason == reason
    assert caught.value.number == raw


@given(st.integers(min_value=100_000_000, max_value=999_999_999))
def test_normalising_is_idempotent(national: int) -> None:
    first = try_normalize_phone(f"0{national}", "FR")
    assume(first is not None)
    assert first is not None
    assert normalize_phone(first, "FR") == first
    assert normalize_phone(first, "US") == first
