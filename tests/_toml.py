"""TOML text for the configurations the tests write."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["toml_keys"]


def toml_keys(values: Mapping[str, Any]) -> str:
    """The ``key = value`` lines of a TOML table holding ``values`` (strings, numbers,
    booleans and lists of them, which JSON writes as TOML does)."""
    return "\n".join(f"{key} = {json.dumps(value)}" for key, value in values.items())
