"""The service-manager notifier never blocks the event loop."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from switchboard.sdnotify import Notifier


def test_a_receiver_that_stops_reading_never_blocks_the_sender(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        try:
            sent = []
            started = time.monotonic()
            # Far more than a datagram socket buffers: a blocking send would hang here.
            for _ in range(5000):
                sent.append(notifier.notify("WATCHDOG=1"))
            assert time.monotonic() - started < 5
            assert sent[0] is True
            assert sent[-1] is False
            assert receiver.recv(64) == b"WATCHDOG=1"
        finally:
            notifier.close()


def test_without_a_service_manager_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.notify("READY=1") is False
    assert notifier.watchdog_interval is None


def test_watchdog_interval_is_half_the_timeout_and_only_for_this_process() -> None:
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
