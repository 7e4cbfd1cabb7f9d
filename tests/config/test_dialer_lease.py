"""``dialer.claim_lease_seconds`` must outlast a live claim (about one gap)."""

from __future__ import annotations

import pytest

from config import ConfigError, parse_config

from .conftest import MINIMAL


def test_claim_lease_not_longer_than_the_gap_is_refused_at_its_key() -> None:
    text = MINIMAL + "\n[dialer]\ngap_seconds = 10\nclaim_lease_seconds = 10\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="switchboard.toml")
    [issue] = caught.value.issues
    assert (issue.line, issue.path) == (7, "dialer.claim_lease_seconds")
    assert issue.message.endswith(
        "must exceed gap_seconds (10.0) by more than 1 s: a live claim lasts about one gap"
    )


def test_claim_lease_defaults_to_two_minutes() -> None:
    config = parse_config(MINIMAL, source="switchboard.toml")
    assert config.dialer.claim_lease_seconds == 120.0
    lease = parse_config(MINIMAL + "\n[dialer]\nclaim_lease_seconds = 30\n", source="x.toml")
    assert lease.dialer.claim_lease_seconds == 30.0
