"""Session plumbing shared by every test: the private servers' lifetime and the
skip allow-list (tests/_skips.py)."""

from __future__ import annotations

import pytest

from tests._services import stop_session_services

pytest_plugins = ["tests._skips"]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the PostgreSQL and Mosquitto this session started, if any."""
    stop_session_services()
