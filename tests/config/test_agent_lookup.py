"""``Config.agent``: one lookup of an agent by user name or name, for every package."""

from __future__ import annotations

import pytest

from config import parse_config

from .conftest import MINIMAL

AGENTS = """
[[lines]]
extension = "2001"
secret = "s1"
role = "agent"

[[lines]]
extension = "2002"
secret = "s2"
role = "agent"

[[agents]]
name = "Alice Martin"
extension = "1001"
line = "2001"
user = "alice"

[[agents]]
name = "Bob Durand"
extension = "1002"
line = "2002"
"""


def test_agent_is_found_by_user_name_or_by_name() -> None:
    cfg = parse_config(MINIMAL + AGENTS)
    assert cfg.agent("alice").line == "2001"
    assert cfg.agent("Alice Martin").line == "2001"
    assert cfg.agent("Bob Durand").line == "2002"
    assert cfg.agent(cfg.agent("Bob Durand").key).name == "Bob Durand"


def test_unknown_agent_is_a_key_error() -> None:
    cfg = parse_config(MINIMAL + AGENTS)
    with pytest.raises(KeyError):
        cfg.agent("carol")
    with pytest.raises(KeyError):
        cfg.agent("")
