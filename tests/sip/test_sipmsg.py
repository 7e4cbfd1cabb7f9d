"""Text the SIP worker copies from a peer's messages into events."""

from __future__ import annotations

import subprocess
import sys

from sip._sipmsg import clean_text


def test_clean_text_keeps_what_it_can_and_encodes() -> None:
    cleaned = clean_text("Bell\x07 \ud800Alexander\r\n\x7f", max_chars=100)
    assert cleaned == "Bell \ufffdAlexander  "
    cleaned.encode("utf-8")
    assert clean_text("x" * 10, max_chars=4) == "xxxx"


def test_a_worker_process_does_not_import_the_bus_package() -> None:
    # Every worker imports the engine; bus/ would bring the MQTT client, ssl and
    # asyncio into each of them (about 13 MiB of RSS per worker).
    probe = (
        "import sys, sip.worker, sip._engine; print(sorted({'bus', 'aiomqtt'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
