"""Session plumbing shared by every test: the PostgreSQL and MQTT broker the tests
use and a private broker for a test to take away (tests/_services.py), and the skip
allow-list (tests/_skips.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# The lab's mode fixtures, for every directory that imports the ``lab`` fixture (it
# depends on them): a test overrides them by name, e.g. with
# ``@pytest.mark.parametrize("lab_pbx_mode", ["proxy", "b2bua"])``.
from lab.pytest_plugin import lab_b2bua_lines, lab_pbx_mode  # noqa: F401
from tests._services import (
    PrivateMosquitto,
    mqtt_address,
    postgres_admin_dsn,
    stop_session_services,
)

pytest_plugins = ["tests._skips"]


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The libpq URL of a PostgreSQL database the test may create databases from: the
    one ``SWITCHBOARD_TEST_PG_URL`` names, or the session's private server's."""
    return postgres_admin_dsn()


@pytest.fixture(scope="session")
def mqtt_broker() -> tuple[str, int]:
    """Host and port of the session's MQTT broker (``SWITCHBOARD_TEST_MQTT_URL``, or a
    private Mosquitto). Shared: use a topic prefix of your own."""
    return mqtt_address()


@pytest.fixture
def private_broker() -> Iterator[PrivateMosquitto]:
    """A started Mosquitto of this test's own (plain listener, persistence on), which
    the test may stop and start again; stopped and its data removed afterwards."""
    broker = PrivateMosquitto()
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the PostgreSQL and Mosquitto this session started, if any."""
    stop_session_services()
