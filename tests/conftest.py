"""Session plumbing shared by every test: the private servers' lifetime."""

from __future__ import annotations

import pytest

from tests._services import stop_session_services


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the PostgreSQL and Mosquitto this session started, if any."""
    stop_session_services()
