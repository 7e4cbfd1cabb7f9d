"""The daemon with its store gone: it keeps running and says so, then recovers."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.crm_store.faults import PrivatePostgres, running_private_postgres

from .conftest import DaemonProcess, write_config

StartDaemon = Callable[..., DaemonProcess]


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    with running_private_postgres() as server:
        yield server


def test_daemon_keeps_serving_and_reports_a_degraded_store_while_postgres_is_down(
    tmp_path: Path, start_daemon: StartDaemon, private_postgres: PrivatePostgres
) -> None:
    cfg = write_config(tmp_path / "switchboard.toml")
    cfg.write_text(
        cfg.read_text().replace(
            f'url = "sqlite+aiosqlite:///{tmp_path / "switchboard.sqlite3"}"',
            f'url = "{private_postgres.url()}"',
        )
    )
    assert private_postgres.url() in cfg.read_text()
    daemon = start_daemon(cfg)
    daemon.wait_for("READY=1")
    daemon.wait_for("WATCHDOG=1")

    private_postgres.stop()
    # Said once, then the watchdog goes on: a restart would drop the calls.
    daemon.wait_for_prefix("STATUS=serving; degraded: store unavailable")
    daemon.seen.clear()
    daemon.wait_for("WATCHDOG=1")
    assert daemon.proc.poll() is None

    private_postgres.start()
    daemon.wait_for("STATUS=serving", timeout=30)
    daemon.wait_for("WATCHDOG=1")
    assert daemon.proc.poll() is None
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert '"event": "store.degraded"' in daemon.log()
    assert '"event": "store.recovered"' in daemon.log()
