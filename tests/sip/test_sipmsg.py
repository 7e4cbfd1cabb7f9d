"""Text the SIP worker copies from a peer's messages into events."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sip._sipmsg import clean_text, is_contact_uri, request_user


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


def test_the_request_uri_user_names_a_moved_call() -> None:
    invite = "INVITE sip:sb-move-0a1b-1@192.0.2.20:25061;transport=tcp SIP/2.0\r\nVia: x\r\n"
    assert request_user(invite) == "sb-move-0a1b-1"
    assert request_user("INVITE sip:192.0.2.20:25061 SIP/2.0\r\n") == ""
    assert request_user("SIP/2.0 200 OK\r\n") == ""
    assert request_user("INVITE sip:" + "9" * 300 + "@h SIP/2.0\r\n") == ""


@pytest.mark.parametrize(
    ("uri", "fit"),
    [
        ("sip:sb-move-1@192.0.2.20:25061", True),
        ("sip:sb-move-1@[2001:db8::1]:25061;transport=tcp", True),
        ("sip:a@b>\r\nX-Evil: 1", False),
        ("<sip:a@b>", False),
        ("tel:+33612345678", False),
        ("sip:a b@c", False),
        ("", False),
    ],
)
def test_only_a_plain_sip_uri_may_be_a_redirect_target(uri: str, fit: bool) -> None:
    assert is_contact_uri(uri) is fit
