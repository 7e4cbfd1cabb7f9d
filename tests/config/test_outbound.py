"""The outbound policy, pure: numbers and extensions against ``[outbound]``."""

from __future__ import annotations

import pytest

from config import ConfigError, NumberType, parse_config
from config.outbound import OutboundPolicy, Refusal, is_extension, number_type

BASE = """\
[site]
default_region = "FR"

[pbx]
host = "127.0.0.1"
domain = "switchboard.lab"

[[lines]]
extension = "2001"
secret = "s"
role = "agent"

[[lines]]
extension = "2002"
secret = "s"
role = "agent"

[[agents]]
name = "Alice"
extension = "1001"
line = "2001"
user = "alice"

[[agents]]
name = "Bob"
extension = "1002"
line = "2002"
"""

FR_FIXED = "+33140000000"
FR_MOBILE = "+33612345678"
FR_PREMIUM = "+33891123456"
FR_SHARED_COST = "+33884012345"
DE_FIXED = "+4930199100000"
GB_PREMIUM = "+449012345678"
GB_FIXED = "+442079460000"
SATELLITE = "+881612345678"
INTERNATIONAL_FREEPHONE = "+80012345678"


def policy(extra: str = "") -> OutboundPolicy:
    return OutboundPolicy.from_config(parse_config(BASE + extra))


def issues(extra: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + extra)
    return [(issue.path, issue.message) for issue in caught.value.issues]


def test_default_region_numbers_are_allowed_by_default() -> None:
    rules = policy()
    assert rules.check_number(FR_FIXED) is None
    assert rules.check_number(FR_MOBILE, agent="alice") is None


@pytest.mark.parametrize(
    ("number", "message"),
    [
        (FR_PREMIUM, "forbidden: premium-rate numbers are not allowed (outbound.refused_types)"),
        (FR_SHARED_COST, "forbidden: shared-cost numbers are not allowed (outbound.refused_types)"),
        (SATELLITE, "forbidden: satellite numbers are not allowed (outbound.refused_types)"),
        (
            DE_FIXED,
            "forbidden: numbers in DE are not allowed (outbound.allowed_countries)",
        ),
        (
            INTERNATIONAL_FREEPHONE,
            "forbidden: numbers outside any country are not allowed (outbound.allowed_countries)",
        ),
    ],
)
def test_refused_by_default_naming_the_rule(number: str, message: str) -> None:
    refusal = policy().check_number(number)
    assert refusal is not None
    assert str(refusal) == message


def test_listed_country_is_allowed_but_its_premium_numbers_are_not() -> None:
    rules = policy('[outbound]\nallowed_countries = ["de", "GB"]\n')
    assert rules.check_number(DE_FIXED) is None
    assert rules.check_number(GB_FIXED) is None
    assert rules.check_number(FR_FIXED) is None  # the default region stays allowed
    assert rules.check_number(GB_PREMIUM) == Refusal(
        "outbound.refused_types", "premium-rate numbers are not allowed"
    )


def test_star_allows_every_country_and_the_refused_types_still_apply() -> None:
    rules = policy('[outbound]\nallowed_countries = ["*"]\n')
    assert rules.check_number(GB_FIXED) is None
    assert rules.check_number(INTERNATIONAL_FREEPHONE) is None
    refusal = rules.check_number(SATELLITE)
    assert refusal is not None
    assert refusal.rule == "outbound.refused_types"


def test_refused_types_can_be_emptied_or_widened() -> None:
    assert policy("[outbound]\nrefused_types = []\n").check_number(FR_PREMIUM) is None
    refusal = policy('[outbound]\nrefused_types = ["mobile"]\n').check_number(FR_MOBILE)
    assert str(refusal) == "forbidden: mobile numbers are not allowed (outbound.refused_types)"


def test_an_agents_override_replaces_the_lists_for_that_agent_only() -> None:
    rules = policy(
        "[outbound]\n"
        "[[outbound.overrides]]\n"
        'agents = ["alice"]\n'
        'allowed_countries = ["GB"]\n'
        'refused_types = ["satellite"]\n'
    )
    assert rules.check_number(GB_PREMIUM, agent="alice") is None
    assert rules.check_number(FR_PREMIUM, agent="alice") is None
    assert str(rules.check_number(SATELLITE, agent="alice")) == (
        "forbidden: satellite numbers are not allowed (outbound.overrides[0].refused_types)"
    )
    assert str(rules.check_number(DE_FIXED, agent="alice")) == (
        "forbidden: numbers in DE are not allowed (outbound.overrides[0].allowed_countries)"
    )
    # Bob, and a check without an agent, keep the table's rules.
    assert rules.check_number(GB_FIXED, agent="Bob") is not None
    assert rules.check_number(FR_PREMIUM) is not None


def test_an_override_without_a_list_inherits_it_and_names_the_tables_rule() -> None:
    rules = policy('[[outbound.overrides]]\nagents = ["Bob"]\nrefused_types = []\n')
    assert rules.check_number(FR_PREMIUM, agent="Bob") is None
    assert str(rules.check_number(GB_FIXED, agent="Bob")) == (
        "forbidden: numbers in GB are not allowed (outbound.allowed_countries)"
    )


def test_list_screening_allows_what_some_agent_may_call() -> None:
    rules = policy('[[outbound.overrides]]\nagents = ["alice"]\nallowed_countries = ["GB"]\n')
    assert rules.check_any_agent(GB_FIXED) is None
    assert rules.screen([FR_FIXED, GB_FIXED, FR_PREMIUM, DE_FIXED]) == {
        FR_PREMIUM: Refusal("outbound.refused_types", "premium-rate numbers are not allowed"),
        DE_FIXED: Refusal("outbound.allowed_countries", "numbers in DE are not allowed"),
    }


def test_transfer_extensions_are_the_agents_phones_and_the_listed_ones() -> None:
    rules = policy('[outbound]\nextensions = ["2100"]\n')
    assert rules.check_extension("1001") is None
    assert rules.check_extension("1002") is None
    assert rules.check_extension("2100") is None
    assert str(rules.check_extension("4711")) == (
        "forbidden: extension 4711 is neither an agent's phone nor a listed extension "
        "(outbound.extensions)"
    )


def test_extensions_are_up_to_six_ascii_digits() -> None:
    assert is_extension("1")
    assert is_extension("123456")
    assert not is_extension("1234567")
    assert not is_extension("+1234")
    assert not is_extension("١٢٣")  # Arabic-Indic digits are digits, not an extension


def test_number_types_come_from_phonenumbers_with_satellite_apart() -> None:
    assert number_type(FR_FIXED) is NumberType.FIXED_LINE
    assert number_type(FR_PREMIUM) is NumberType.PREMIUM_RATE
    assert number_type(SATELLITE) is NumberType.SATELLITE
    assert number_type("+870772123456") is NumberType.SATELLITE
    assert number_type("not a number") is NumberType.UNKNOWN


def test_bad_outbound_values_are_reported_with_their_key_paths() -> None:
    found = issues(
        "[outbound]\n"
        'allowed_countries = ["XX", "DE"]\n'
        'refused_types = ["premium"]\n'
        'extensions = ["12a"]\n'
    )
    assert [path for path, _message in found] == [
        "outbound.allowed_countries[0]",
        "outbound.refused_types[0]",
        "outbound.extensions[0]",
    ]
    assert "'XX' is not a two-letter region code" in found[0][1]
    assert found[1][1].startswith("must be one of: fixed_line, mobile,")
    assert issues('[outbound]\nallowed_countries = ["DE", "de"]\n') == [
        ("outbound.allowed_countries", "must not list a value twice")
    ]


def test_overrides_must_name_configured_agents_once() -> None:
    found = issues(
        '[[outbound.overrides]]\nagents = ["alice", "nobody"]\n'
        '[[outbound.overrides]]\nagents = ["alice"]\n'
    )
    assert found == [
        ("outbound.overrides[0].agents[1]", "no agent 'nobody' in [[agents]] (by user, else name)"),
        ("outbound.overrides[1].agents[0]", "'alice' already has outbound.overrides[0]"),
    ]


def test_a_forbidden_overflow_number_is_refused_by_the_configuration() -> None:
    inbound = '[inbound]\nno_agent_action = "forward"\noverflow_number = "{}"\n'
    assert issues(inbound.format("+33891123456")) == [
        (
            "inbound.overflow_number",
            "forbidden: premium-rate numbers are not allowed (outbound.refused_types)",
        )
    ]
    assert issues(inbound.format("4711")) == [
        (
            "inbound.overflow_number",
            "forbidden: extension 4711 is neither an agent's phone nor a listed extension "
            "(outbound.extensions)",
        )
    ]
    # A national number and an agent's phone are fine.
    parse_config(BASE + inbound.format("0140000000"))
    parse_config(BASE + inbound.format("1002"))


def test_the_example_configuration_allows_the_labs_numbers() -> None:
    from lab.demo import EXAMPLE

    config = parse_config(EXAMPLE.read_text(), base_dir=EXAMPLE.parent)
    rules = OutboundPolicy.from_config(config)
    assert rules.check_number("+49301991020301", agent="alice") is None
    assert rules.check_number(FR_PREMIUM, agent="alice") is not None
