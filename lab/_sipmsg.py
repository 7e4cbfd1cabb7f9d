"""SIP messages for the lab B2BUA: parse a datagram, read headers, build one.

Just what a signalling-only B2BUA on loopback needs (RFC 3261 text format over UDP):
compact header names are expanded, folded lines unfolded, header values that may be
comma-joined (Via, Route, Record-Route, Contact) split on the commas outside quotes and
angle brackets. Anything that cannot be read raises :class:`SipError`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

__all__ = [
    "Message",
    "NameAddr",
    "SipError",
    "new_branch",
    "new_tag",
    "parse",
    "parse_nameaddr",
    "split_commas",
    "uri_hostport",
]

_COMPACT = {
    "v": "Via",
    "f": "From",
    "t": "To",
    "i": "Call-ID",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
    "e": "Content-Encoding",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "u": "Allow-Events",
}
# Canonical spelling of the headers the B2BUA writes or reads by name.
_CANONICAL = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
        "Content-Type",
        "Max-Forwards",
        "Record-Route",
        "Route",
        "Reason",
        "Allow",
        "User-Agent",
        "Supported",
        "Subject",
        "Content-Encoding",
        "Event",
        "Refer-To",
        "Referred-By",
        "Session-Expires",
        "Allow-Events",
    )
}
_REQUEST_LINE = re.compile(r"^([A-Z]+) (\S+) SIP/2\.0$")
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6][0-9][0-9]) ?(.*)$")


class SipError(ValueError):
    """A datagram that is not a SIP message the B2BUA can read."""


def _canonical(name: str) -> str:
    lower = name.strip().lower()
    if lower in _COMPACT:
        return _COMPACT[lower]
    return _CANONICAL.get(lower, name.strip())


def new_branch() -> str:
    """A fresh RFC 3261 Via branch (magic cookie first)."""
    return "z9hG4bK" + secrets.token_hex(8)


def new_tag() -> str:
    """A fresh From/To tag."""
    return secrets.token_hex(6)


def split_commas(value: str) -> list[str]:
    """``a, <b,c>, "d,e" <f>`` -> three values: commas inside quotes or <> do not split."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    index = 0
    while index < len(value):
        char = value[index]
        if quoted:
            if char == "\\":
                index += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "<":
            depth += 1
        elif char == ">":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            parts.append(value[start:index].strip())
            start = index + 1
        index += 1
    parts.append(value[start:].strip())
    return [part for part in parts if part]


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact/Route value: display name, URI and header parameters."""

    display: str
    uri: str
    params: str  # ";tag=...;..." as written, possibly empty

    @property
    def tag(self) -> str | None:
        return param(self.params, "tag")

    def with_tag(self, tag: str | None) -> str:
        """The value again, with its ``tag`` parameter replaced (removed if None)."""
        kept = [p for p in self.params.split(";") if p and p.split("=", 1)[0].strip() != "tag"]
        if tag is not None:
            kept.append(f"tag={tag}")
        params = "".join(f";{p}" for p in kept)
        display = f"{self.display} " if self.display else ""
        return f"{display}<{self.uri}>{params}"


def param(params: str, name: str) -> str | None:
    """The value of parameter ``name`` in ``;a=1;b;c=2`` (``""`` for a flag), or None."""
    for item in params.split(";"):
        key, _, value = item.partition("=")
        if key.strip().lower() == name:
            return value.strip()
    return None


def parse_nameaddr(value: str) -> NameAddr:
    """Read ``"Display" <sip:u@h>;tag=x`` or ``sip:u@h;tag=x``."""
    value = value.strip()
    if "<" in value:
        display, _, rest = value.partition("<")
        uri, closed, params = rest.partition(">")
        if not closed or not uri.strip():
            raise SipError(f"unreadable address {value!r}")
        return NameAddr(display.strip(), uri.strip(), params.strip())
    uri, _, params = value.partition(";")
    if not uri.strip():
        raise SipError(f"unreadable address {value!r}")
    return NameAddr("", uri.strip(), f";{params}" if params else "")


def uri_hostport(uri: str) -> tuple[str, int]:
    """Host and port a ``sip:`` URI designates (port 5060 when absent)."""
    match = re.match(r"^sips?:(?:[^@;?>]*@)?(\[[^\]]+\]|[^:;?>]+)(?::(\d+))?", uri.strip())
    if match is None:
        raise SipError(f"not a sip URI: {uri!r}")
    return match[1], int(match[2] or 5060)


@dataclass(slots=True)
class Message:
    """One SIP request or response; header names in canonical spelling, order kept."""

    start: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    # --- the start line --------------------------------------------------------------

    @property
    def is_request(self) -> bool:
        return not self.start.startswith("SIP/2.0 ")

    @property
    def method(self) -> str:
        """The request's method, or the CSeq method of a response."""
        if self.is_request:
            return self.start.split(" ", 1)[0]
        return self.cseq[1]

    @property
    def uri(self) -> str:
        """The Request-URI."""
        return self.start.split(" ")[1]

    @property
    def status(self) -> int:
        return int(self.start.split(" ")[1])

    @property
    def reason(self) -> str:
        return self.start.split(" ", 2)[2] if self.start.count(" ") >= 2 else ""

    # --- headers ---------------------------------------------------------------------

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (any spelling), or None."""
        wanted = _canonical(name).lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name``, comma-joined values split, in order."""
        wanted = _canonical(name).lower()
        values: list[str] = []
        for key, value in self.headers:
            if key.lower() == wanted:
                values.extend(split_commas(value))
        return values

    def need(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise SipError(f"{self.start!r} has no {name} header")
        return value

    @property
    def call_id(self) -> str:
        return self.need("Call-ID").strip()

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = self.need("CSeq").strip().partition(" ")
        if not number.isdigit() or not method.strip():
            raise SipError(f"unreadable CSeq {self.get('CSeq')!r}")
        return int(number), method.strip().upper()

    @property
    def from_(self) -> NameAddr:
        return parse_nameaddr(self.need("From"))

    @property
    def to(self) -> NameAddr:
        return parse_nameaddr(self.need("To"))

    @property
    def top_via_branch(self) -> str:
        vias = self.get_all("Via")
        if not vias:
            raise SipError(f"{self.start!r} has no Via")
        branch = param(vias[0].partition(";")[2], "branch")
        if not branch:
            raise SipError(f"Via without a branch: {vias[0]!r}")
        return branch

    @property
    def contact_uri(self) -> str | None:
        contacts = self.get_all("Contact")
        return parse_nameaddr(contacts[0]).uri if contacts else None

    # --- writing ---------------------------------------------------------------------

    def encode(self) -> bytes:
        """The message on the wire; Content-Length written from the body."""
        lines = [self.start]
        lines += [f"{k}: {v}" for k, v in self.headers if k.lower() != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def parse(data: bytes) -> Message:
    """Read one datagram; raise :class:`SipError` if it is not a SIP message."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    if not sep and data.strip():
        head, body = data, b""  # no blank line: headers only (tolerated)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipError("headers are not UTF-8") from exc
    raw_lines = text.replace("\r\n", "\n").split("\n")
    while raw_lines and not raw_lines[0].strip():
        raw_lines.pop(0)  # keep-alive CRLFs before a message
    if not raw_lines:
        raise SipError("empty datagram")
    start = raw_lines[0].strip()
    if not (_REQUEST_LINE.match(start) or _STATUS_LINE.match(start)):
        raise SipError(f"not a SIP start line: {start[:80]!r}")
    unfolded: list[str] = []
    for line in raw_lines[1:]:
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1] += " " + line.strip()
        elif line.strip():
            unfolded.append(line)
    headers: list[tuple[str, str]] = []
    for line in unfolded:
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or " " in name.strip():
            raise SipError(f"unreadable header line {line[:80]!r}")
        headers.append((_canonical(name), value.strip()))
    message = Message(start, headers, body)
    length = message.get("Content-Length")
    if length is not None:
        if not length.isdigit() or int(length) > len(body):
            raise SipError(f"Content-Length {length!r} does not fit the body ({len(body)} bytes)")
        message.body = body[: int(length)]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        message.need(name)
    message.cseq  # noqa: B018  (validates it)
    return message
