"""Shared helpers for the config tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

MINIMAL = """\
[pbx]
host = "127.0.0.1"
domain = "switchboard.lab"
"""


WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write a config file (and optional side files) into tmp_path; return its path."""

    def write(text: str, **files: str) -> Path:
        for name, content in files.items():
            file = tmp_path / name.replace("__", "/")
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(content, encoding="utf-8")
        path = tmp_path / "switchboard.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write
