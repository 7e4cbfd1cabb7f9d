"""The outbound policy: which numbers and extensions may be called, against toll fraud.

:class:`OutboundPolicy` reads ``[outbound]`` (and ``site.default_region``, ``[[agents]]``)
and answers one question, with no I/O: may this agent call this number, or transfer to
this extension? A refusal is a :class:`Refusal` naming the configuration key that made
it, so that an agent, a log reader and the administrator who can change it all read the
same rule::

    forbidden: premium-rate numbers are not allowed (outbound.refused_types)

It lives beside the configuration because every part that places calls applies it:
click-to-call and transfers (``sip``), the auto-dialer's lists at import and at dial
time (``dialer``), the inbound overflow number (checked with the configuration).
Numbers are given in E.164, as ``crm_store.normalize_phone`` makes them; reading what
an agent typed stays with the caller, so a number that cannot be read is an invalid
number there, not a refusal here.

The rules, in the order they are applied to a number:

1. ``outbound.refused_types``: the number's kind (``phonenumbers.number_type``; the
   satellite codes +870 and +881 count as ``satellite``) must not be listed.
2. ``outbound.allowed_countries``: the number's region must be ``site.default_region``
   or be listed (``*`` lists every region, and the non-geographic codes).

An agent named in an ``[[outbound.overrides]]`` entry has that entry's lists instead of
the table's. Extensions (targets of up to six digits) are checked against the agents'
own phones and ``outbound.extensions``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

from config._models import Config, NumberType, OutboundConfig

__all__ = ["MAX_EXTENSION_DIGITS", "OutboundPolicy", "Refusal", "is_extension", "number_type"]

#: A transfer or overflow target of at most this many digits is an extension on
#: the PBX, not a phone number.
MAX_EXTENSION_DIGITS = 6

_SATELLITE_CODES = frozenset({870, 881})
_TYPES = {
    PhoneNumberType.FIXED_LINE: NumberType.FIXED_LINE,
    PhoneNumberType.MOBILE: NumberType.MOBILE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE: NumberType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.TOLL_FREE: NumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE: NumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST: NumberType.SHARED_COST,
    PhoneNumberType.VOIP: NumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER: NumberType.PERSONAL_NUMBER,
    PhoneNumberType.PAGER: NumberType.PAGER,
    PhoneNumberType.UAN: NumberType.UAN,
    PhoneNumberType.VOICEMAIL: NumberType.VOICEMAIL,
}
_TYPE_TEXT = {
    NumberType.FIXED_LINE: "fixed-line",
    NumberType.FIXED_LINE_OR_MOBILE: "fixed-line or mobile",
    NumberType.TOLL_FREE: "toll-free",
    NumberType.PREMIUM_RATE: "premium-rate",
    NumberType.SHARED_COST: "shared-cost",
    NumberType.VOIP: "VoIP",
    NumberType.PERSONAL_NUMBER: "personal",
    NumberType.UAN: "universal access (UAN)",
    NumberType.UNKNOWN: "unclassified",
}
_ANY_COUNTRY = "*"
_NON_GEOGRAPHIC = "001"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call may not be placed: ``message`` for people, ``rule`` the key to change.

    ``str()`` gives the whole sentence clients see:
    ``forbidden: <message> (<rule>)``.
    """

    rule: str
    message: str

    def __str__(self) -> str:
        return f"forbidden: {self.message} ({self.rule})"


@dataclass(frozen=True, slots=True)
class _Rules:
    countries: frozenset[str]
    refused: frozenset[NumberType]
    countries_path: str
    refused_path: str


def is_extension(target: str) -> bool:
    """True when ``target`` reads as a PBX extension (up to six digits)."""
    return target.isascii() and target.isdigit() and len(target) <= MAX_EXTENSION_DIGITS


def number_type(e164: str) -> NumberType:
    """The kind of the E.164 number ``e164`` (``unknown`` when it cannot be read)."""
    return _kind(_parse(e164))


def _parse(e164: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(e164)
    except NumberParseException:
        return None


def _kind(parsed: phonenumbers.PhoneNumber | None) -> NumberType:
    if parsed is None:
        return NumberType.UNKNOWN
    if parsed.country_code in _SATELLITE_CODES:
        return NumberType.SATELLITE
    return _TYPES.get(phonenumbers.number_type(parsed), NumberType.UNKNOWN)


class OutboundPolicy:
    """``outbound`` asked about one number or extension at a time.

    ``default_region`` is always allowed; ``agent_extensions`` are the agents' own
    phones, which calls may always be transferred to. Pure and cheap: build one per
    component with :meth:`from_config`.
    """

    def __init__(
        self, outbound: OutboundConfig, *, default_region: str, agent_extensions: Iterable[str]
    ) -> None:
        region = self._region = default_region
        self._base = _Rules(
            countries=frozenset({region, *outbound.allowed_countries}),
            refused=frozenset(outbound.refused_types),
            countries_path="outbound.allowed_countries",
            refused_path="outbound.refused_types",
        )
        self._by_agent: dict[str, _Rules] = {}
        self._overrides: list[_Rules] = []
        for index, override in enumerate(outbound.overrides):
            path = f"outbound.overrides[{index}]"
            countries = override.allowed_countries
            refused = override.refused_types
            rules = _Rules(
                countries=(
                    self._base.countries if countries is None else frozenset({region, *countries})
                ),
                refused=self._base.refused if refused is None else frozenset(refused),
                countries_path=(
                    self._base.countries_path if countries is None else f"{path}.allowed_countries"
                ),
                refused_path=(
                    self._base.refused_path if refused is None else f"{path}.refused_types"
                ),
            )
            self._overrides.append(rules)
            for agent in override.agents:
                self._by_agent.setdefault(agent, rules)
        self._extensions = frozenset({*agent_extensions, *outbound.extensions})

    @classmethod
    def from_config(cls, config: Config) -> OutboundPolicy:
        """The policy of ``config``: its ``[outbound]``, region and agents' phones."""
        return cls(
            config.outbound,
            default_region=config.site.default_region,
            agent_extensions=[agent.extension for agent in config.agents],
        )

    def check_number(self, e164: str, *, agent: str | None = None) -> Refusal | None:
        """``None`` if ``agent`` (its key; ``None``: the table's rules) may call the
        E.164 number ``e164``, else the :class:`Refusal` of the first rule against it."""
        rules = self._by_agent.get(agent, self._base) if agent is not None else self._base
        return _check(rules, e164)

    def check_any_agent(self, e164: str) -> Refusal | None:
        """``None`` if the table's rules or any override allow ``e164``; else the
        table's refusal. What a call list is screened with at import, before an agent
        is known; the dialing agent's own rules apply again at dial time."""
        refusal = _check(self._base, e164)
        if refusal is None or any(_check(rules, e164) is None for rules in self._overrides):
            return None
        return refusal

    def check_extension(self, extension: str) -> Refusal | None:
        """``None`` if ``extension`` is an agent's phone or listed in
        ``outbound.extensions``, else the refusal."""
        if extension in self._extensions:
            return None
        return Refusal(
            "outbound.extensions",
            f"extension {extension} is neither an agent's phone nor a listed extension",
        )

    def check_target(self, target: str) -> Refusal | None:
        """:meth:`check_extension` for an extension, else :meth:`check_number` for
        ``target`` read as a number of ``site.default_region`` (a configured overflow
        number). Raises :class:`ValueError` if it is neither an extension nor a valid
        phone number."""
        if is_extension(target):
            return self.check_extension(target)
        try:
            parsed = phonenumbers.parse(target, self._region)
        except NumberParseException:
            parsed = None
        if parsed is None or not phonenumbers.is_valid_number(parsed):
            raise ValueError(f"{target!r} is not a valid phone number")
        return self.check_number(
            phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        )

    def screen(self, numbers: Iterable[str]) -> dict[str, Refusal]:
        """The refusals (:meth:`check_any_agent`) of ``numbers``, by number."""
        found: dict[str, Refusal] = {}
        for e164 in numbers:
            refusal = self.check_any_agent(e164)
            if refusal is not None:
                found[e164] = refusal
        return found


def _check(rules: _Rules, e164: str) -> Refusal | None:
    # Parsed once for both rules: lists are screened a number at a time.
    parsed = _parse(e164)
    kind = _kind(parsed)
    if kind in rules.refused:
        text = _TYPE_TEXT.get(kind, kind.value.replace("_", " "))
        return Refusal(rules.refused_path, f"{text} numbers are not allowed")
    if _ANY_COUNTRY in rules.countries:
        return None
    region = None if parsed is None else phonenumbers.region_code_for_number(parsed)
    if region is None or region == _NON_GEOGRAPHIC:
        return Refusal(rules.countries_path, "numbers outside any country are not allowed")
    if region not in rules.countries:
        return Refusal(rules.countries_path, f"numbers in {region} are not allowed")
    return None
