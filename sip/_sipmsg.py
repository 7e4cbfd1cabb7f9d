"""SIP message helpers of the worker: pure text functions, no pjsua2.

What the engine copies out of SIP messages into events (the caller's number,
a few headers, reason phrases) is cleaned here; pjsip's own message dumps are
redacted here before a line leaves the process; and the end of a call is
classified here from what the engine saw of it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Protocol

__all__ = [
    "RETRYABLE",
    "RETRY_AFTER_RE",
    "clean_text",
    "end_reason",
    "headers",
    "host",
    "is_contact_uri",
    "redact",
    "request_user",
    "source_host",
    "text",
    "user",
]

# Headers of an incoming INVITE copied into ``incoming_call``: custom headers
# (X-*) and the few standard ones a CRM cares about. Never Authorization.
_COPIED_HEADERS = ("p-asserted-identity", "diversion", "user-agent", "subject")
_USER_RE = re.compile(r"sips?:([^@;>]+)@")
# The request line of a request: its Request-URI's user part in group 1.
_REQUEST_USER_RE = re.compile(r"^[A-Z]+ sips?:([^@;>\s]{1,256})@")
# A URI a worker may name as a Contact: sip(s), no spaces, brackets or quotes.
_CONTACT_URI_RE = re.compile(r"sips?:[^\s<>\"\\]{1,256}")
# pjsip's message dumps (log level 5) carry the digest answers: the header and
# any continuation lines of it are replaced before a line leaves the process.
_AUTH_HEADER_RE = re.compile(
    r"^((?:proxy-)?authorization[ \t]*:)[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*",
    re.IGNORECASE | re.MULTILINE,
)
# Text copied from SIP messages into events: valid Unicode, no control
# characters, bounded (clean_text).
_MAX_TEXT = 1024
_MAX_HEADERS = 32
#: Registration failures pjsua would retry: timeouts, server errors, global failures.
RETRYABLE = frozenset({408, 480, 500, 502, 503, 504})
#: A Retry-After header of a SIP response, its seconds in group 1.
RETRY_AFTER_RE = re.compile(r"^retry-after[ \t]*:[ \t]*(\d{1,9})", re.IGNORECASE | re.MULTILINE)


class Ending(Protocol):
    """What :func:`end_reason` needs to know of a call that ended."""

    @property
    def transferred(self) -> bool: ...
    @property
    def answered(self) -> bool: ...
    @property
    def hangup_requested(self) -> bool: ...
    @property
    def incoming(self) -> bool: ...


def redact(message: str) -> str:
    """``message`` with the value of every Authorization/Proxy-Authorization header
    replaced by ``<redacted>``."""
    return _AUTH_HEADER_RE.sub(r"\1 <redacted>", message)


def host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def source_host(src: str) -> str:
    """``1.2.3.4:5060`` / ``[::1]:5060`` → the bare address."""
    if src.startswith("["):
        return src[1:].split("]", 1)[0]
    return src.rsplit(":", 1)[0] if src.count(":") == 1 else src


def user(uri: str) -> str:
    match = _USER_RE.search(uri)
    return match.group(1) if match else ""


# Here rather than in bus/: the worker process imports this module, and importing any
# module of bus/ brings the whole package (the MQTT client, ssl, asyncio) into every
# worker, about 13 MiB of RSS each.
def clean_text(value: str, *, max_chars: int) -> str:
    """``value`` made safe to carry in an event: valid Unicode, no control characters.

    Lone surrogates (from bytes that were not UTF-8) become U+FFFD, control characters
    (C0, DEL, C1) are dropped except that tabs and line breaks become spaces, and the
    result is cut to ``max_chars``. For text from a peer that must not be refused.
    """
    if value.isascii() and value.isprintable() and len(value) <= max_chars:
        return value
    out = []
    for char in value:
        if char in "\t\r\n":
            out.append(" ")
            continue
        category = unicodedata.category(char)
        if category == "Cs":
            out.append("\ufffd")
        elif category != "Cc":
            out.append(char)
    return "".join(out)[:max_chars]


def text(value: str) -> str:
    """SIP text made fit for an event (valid Unicode, no control characters, bounded)."""
    return clean_text(value, max_chars=_MAX_TEXT)


def headers(message: str) -> dict[str, str]:
    """The copied headers of ``message`` (at most ``_MAX_HEADERS``), cleaned."""
    head = message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    out: dict[str, str] = {}
    for line in _unfold(head):
        name, sep, value = line.partition(":")
        key = text(name.strip())
        if sep and (key.lower().startswith("x-") or key.lower() in _COPIED_HEADERS):
            if len(out) >= _MAX_HEADERS and key not in out:
                break
            out[key] = text(value.strip())
    return out


def request_user(message: str) -> str:
    """The user part of the Request-URI of request ``message`` ("" if none)."""
    found = _REQUEST_USER_RE.match(message)
    return found.group(1) if found else ""


def is_contact_uri(uri: str) -> bool:
    """Whether ``uri`` is a plain ``sip:``/``sips:`` URI fit for a Contact header."""
    return _CONTACT_URI_RE.fullmatch(uri) is not None


def _unfold(lines: list[str]) -> Iterator[str]:
    current = ""
    for line in lines:
        if line[:1] in (" ", "\t") and current:
            current += " " + line.strip()
            continue
        if current:
            yield current
        current = line
    if current:
        yield current


def end_reason(record: Ending, code: int) -> str:
    """Classify why a call ended; see docs/sip-worker.md for the list."""
    if record.transferred:
        return "transferred"
    if record.answered:
        return "local_hangup" if record.hangup_requested else "remote_hangup"
    if record.hangup_requested:
        return "rejected" if record.incoming else "cancelled"
    if record.incoming:
        return "caller_cancelled"
    if code in (486, 600):
        return "busy"
    if code in (603, 607):
        return "declined"
    if code in (408, 480):
        return "no_answer" if code == 480 else "timeout"
    if code in (404, 484, 604):
        return "not_found"
    if code in (502, 503, 504) or code < 100:
        return "unreachable"
    return "failed"
