"""Phone-number normalisation to E.164.

Numbers are normalised once, on the way into the store, so that caller lookup is an
exact, indexed string match. Everything that stores or searches a number goes through
:func:`normalize_phone`.
"""

from __future__ import annotations

import phonenumbers
from phonenumbers import NumberParseException, ValidationResult

from .exceptions import InvalidPhone

__all__ = ["normalize_phone", "try_normalize_phone"]

_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
    NumberParseException.NOT_A_NUMBER: "not a number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}

_LENGTH_REASONS = {
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    ValidationResult.INVALID_LENGTH: "invalid length",
}


def normalize_phone(raw: str, region: str) -> str:
    """Return ``raw`` as an E.164 string such as ``"+33612345678"``.

    ``region`` is the ISO 3166 country code used for numbers written without an
    international prefix (``"06 12 34 56 78"`` with ``"FR"``). Numbers written with
    ``+`` or ``00`` keep their own country. Raises :class:`InvalidPhone` with a short
    reason when the input is not a valid, dialable number.
    """
    text = raw.strip()
    if not text:
        raise InvalidPhone(raw, "empty")
    try:
        parsed = phonenumbers.parse(text, region.upper())
    except NumberParseException as exc:
        raise InvalidPhone(raw, _PARSE_REASONS.get(exc.error_type, "not a number")) from None
    possible = phonenumbers.is_possible_number_with_reason(parsed)
    if possible not in (ValidationResult.IS_POSSIBLE, ValidationResult.IS_POSSIBLE_LOCAL_ONLY):
        raise InvalidPhone(raw, _LENGTH_REASONS.get(possible, "invalid length"))
    if not phonenumbers.is_valid_number(parsed):
        number_region = phonenumbers.region_code_for_country_code(parsed.country_code or 0)
        shown = number_region if number_region != "ZZ" else region.upper()
        raise InvalidPhone(raw, f"not a valid number for region {shown}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def try_normalize_phone(raw: str, region: str) -> str | None:
    """Like :func:`normalize_phone` but return ``None`` instead of raising."""
    try:
        return normalize_phone(raw, region)
    except InvalidPhone:
        return None
