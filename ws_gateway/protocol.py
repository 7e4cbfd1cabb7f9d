"""The gateway's protocol without I/O: messages, states, close codes, rate limit.

Everything here is synchronous and deterministic (the rate limiter takes the
time as an argument), so it is tested without a socket. :mod:`ws_gateway.server`
puts it on asyncio.

Client messages are JSON text frames checked against the JSON Schemas in
``ws_gateway/schemas/`` (the published contract, see ``docs/protocol.md``).
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

from bus import safejson

from .exceptions import BadRequest, CommandError

__all__ = [
    "CLOSE_CODE_MEANINGS",
    "MAX_DEPTH",
    "MAX_MESSAGE_BYTES",
    "RESUME_REASONS",
    "Auth",
    "CloseCode",
    "Command",
    "FailureThrottle",
    "RateLimiter",
    "SessionState",
    "auth_ok",
    "command_args",
    "encode",
    "error",
    "event",
    "parse_auth",
    "parse_command",
    "peek_id",
    "result",
    "snapshot",
]


class SessionState(enum.IntEnum):
    """The life of one client connection."""

    AUTHENTICATING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class CloseCode(enum.IntEnum):
    """Close codes the gateway uses; the 4xxx are the gateway's own."""

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    TOO_SLOW = 4008
    RATE_LIMITED = 4029
    UNAUTHORIZED = 4401
    TOO_MANY_SESSIONS = 4409
    AUTH_THROTTLED = 4429


CLOSE_CODE_MEANINGS: Mapping[CloseCode, str] = {
    CloseCode.NORMAL: "Normal closure.",
    CloseCode.GOING_AWAY: "The gateway is shutting down; reconnect and resume.",
    CloseCode.MESSAGE_TOO_BIG: "A message was larger than max_message_bytes.",
    CloseCode.INTERNAL_ERROR: "The gateway could not check the token (store down) or hit a bug; "
    "retry later.",
    CloseCode.TRY_AGAIN_LATER: "Too many connections are authenticating (max_unauthenticated "
    "in all, max_unauthenticated_per_address from the client's address); retry later.",
    CloseCode.TOO_SLOW: "The client did not read its events fast enough: its queue of "
    "client_queue messages overflowed. Reconnect and resume.",
    CloseCode.RATE_LIMITED: "The client kept sending commands over commands_per_second after "
    "rate_limited errors.",
    CloseCode.UNAUTHORIZED: "No valid auth message within the authentication timeout, or an "
    "unknown, revoked or disabled token: do not retry with the same token. Also closes an open "
    "session within a second when its token is revoked, its user disabled or its rights "
    "changed (reason `access revoked` or `rights changed`); after `rights changed`, "
    "reconnect to get a session with the current rights.",
    CloseCode.TOO_MANY_SESSIONS: "The user already has max_sessions_per_user open sessions; "
    "close one first.",
    CloseCode.AUTH_THROTTLED: "Too many failed authentications from the client's address "
    "(auth_failures_per_address within auth_failure_window seconds); the address is refused "
    "until the window has passed.",
}

RESUME_REASONS: tuple[str, ...] = ("too_old", "unknown_seq")
"""Why a resume gave a fresh snapshot: ``too_old``, the missed events are no longer
buffered; ``unknown_seq``, the seq or stream is not this gateway's (it restarted)."""


# --- schemas -------------------------------------------------------------------


@functools.cache
def _registry() -> Registry[Any]:
    resources_: list[tuple[str, Resource[Any]]] = []
    for entry in (resources.files(__package__) / "schemas").iterdir():
        if entry.name.endswith(".json"):
            contents = json.loads(entry.read_text(encoding="utf-8"))
            resources_.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources_)


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    """The validator of schema file ``name`` (``"client.auth.json"``...)."""
    registry = _registry()
    uri = next(uri for uri in registry if uri.endswith("/" + name))
    return jsonschema.Draft202012Validator(
        registry.contents(uri), registry=registry, format_checker=jsonschema.FormatChecker()
    )


def _check(name: str, message: Mapping[str, Any]) -> None:
    error = jsonschema.exceptions.best_match(validator(name).iter_errors(message))
    if error is not None:
        path = "/" + "/".join(str(p) for p in error.absolute_path)[:200]
        # The validator's message quotes the offending value: keep it short.
        text = error.message if len(error.message) <= 200 else error.message[:199] + "…"
        raise BadRequest(f"{path}: {text}", details={"path": path})


# --- client messages ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Auth:
    """The first message: the token (never logged) and an optional resume point."""

    token: str = field(repr=False)
    resume_from: int | None = None
    stream: str | None = None


@dataclass(frozen=True, slots=True)
class Command:
    """A command: the client's ``id``, the command ``name`` and its ``args``."""

    id: str
    name: str
    args: dict[str, Any]


MAX_MESSAGE_BYTES = 65536
"""The default bound on a client message, bytes (``[websocket] max_message_bytes``)."""

MAX_DEPTH = 16
"""How deeply arrays and objects may nest in a client message (no command needs 4)."""


def _load(raw: str | bytes, max_bytes: int) -> dict[str, Any]:
    if isinstance(raw, bytes):
        raise BadRequest("binary messages are not accepted; send JSON text")
    try:
        message = safejson.loads(raw, max_bytes=max_bytes, max_depth=MAX_DEPTH)
    except safejson.BadJson as exc:
        # The text is the reader's own (what was wrong), never the client's input.
        raise BadRequest(str(exc)) from None
    if not isinstance(message, dict):
        raise BadRequest("a message is a JSON object")
    return message


def parse_auth(raw: str | bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Auth:
    """The auth message in ``raw``; raises :class:`BadRequest` for anything else.

    ``raw`` is read with :func:`bus.safejson.loads`: at most ``max_bytes`` bytes,
    :data:`MAX_DEPTH` levels, finite numbers and valid Unicode only.
    """
    message = _load(raw, max_bytes)
    if message.get("type") != "auth":
        raise BadRequest("the first message must be auth")
    _check("client.auth.json", message)
    return Auth(
        token=message["token"],
        resume_from=message.get("resume_from"),
        stream=message.get("stream"),
    )


def parse_command(raw: str | bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Command:
    """The command in ``raw``, its args valid against the command's schema.

    Read as :func:`parse_auth` reads, so that a command never carries a value
    that cannot be encoded again (a lone surrogate, NaN, a 400-digit number).
    Raises :class:`BadRequest`, and nothing else, for any input; when the
    message had a usable ``id``, it is in ``details["id"]`` so that the error
    reply can carry it.
    """
    message = _load(raw, max_bytes)
    cid = message.get("id")
    try:
        if message.get("type") != "command":
            raise BadRequest("expected a command message")
        message.setdefault("args", {})
        _check("client.command.json", message)
    except BadRequest as exc:
        if isinstance(cid, str) and 0 < len(cid) <= 64:
            exc.details["id"] = cid
        raise
    return Command(id=str(cid), name=message["name"], args=message["args"])


def peek_id(raw: str | bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> str | None:
    """The ``id`` of a refused message, without validating it (it is not run).

    ``None`` when ``raw`` is not a readable JSON object with a usable id.
    """
    try:
        message = _load(raw, max_bytes)
    except BadRequest:
        return None
    cid = message.get("id")
    return cid if isinstance(cid, str) and 0 < len(cid) <= 64 else None


def command_args(name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` of command ``name``, validated exactly as a websocket command's are.

    For other transports (the MQTT command topic) that must accept the same
    commands under the same rules. Raises :class:`BadRequest`.
    """
    checked = dict(args)
    _check(
        "client.command.json", {"type": "command", "id": "transport", "name": name, "args": checked}
    )
    return checked


# --- server messages ---------------------------------------------------------


_SURROGATE = re.compile("[\ud800-\udfff]")


def encode(message: Mapping[str, Any]) -> str:
    """Compact JSON text of a server message, always valid UTF-8 to send.

    Inputs are refused when they are not valid Unicode, so no value should
    hold a lone surrogate; should one come anyway (a peer's text not cleaned
    upstream), it becomes U+FFFD here rather than make the send fail, which
    would close every client the message goes to (a snapshot: every new one).
    """
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # Surrogates only occur inside JSON strings, so the text stays JSON.
            text = _SURROGATE.sub("\ufffd", text)
    return text


def auth_ok(
    *,
    seq: int,
    stream: str,
    session: str,
    user: str,
    display_name: str,
    role: str,
    agents: frozenset[str],
    resumed: bool | None = None,
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "auth.ok",
        "seq": seq,
        "stream": stream,
        "session": session,
        "user": user,
        "display_name": display_name,
        "role": role,
        "agents": sorted(agents),
    }
    if resumed is not None:
        msg["resumed"] = resumed
    return msg


def snapshot(
    *,
    seq: int,
    stream: str,
    calls: list[dict[str, Any]],
    agents: list[dict[str, Any]],
    dialer: list[dict[str, Any]],
    reason: str | None = None,
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "snapshot",
        "seq": seq,
        "stream": stream,
        "calls": calls,
        "agents": agents,
        "dialer": dialer,
    }
    if reason is not None:
        msg["resumed"] = False
        msg["reason"] = reason
    return msg


def event(*, seq: int, envelope_data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "event", "seq": seq, "event": envelope_data}


def result(*, seq: int, id: str, data: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "result", "seq": seq, "id": id, "data": dict(data)}


def error(*, seq: int, id: str | None, exc: CommandError) -> dict[str, Any]:
    return {
        "type": "error",
        "seq": seq,
        "id": id,
        "code": exc.code,
        "message": exc.message,
        "details": exc.details,
    }


# --- rate limit ----------------------------------------------------------------


class RateLimiter:
    """A token bucket of ``rate`` commands per second (burst ``rate``), plus an
    abuse rule: more than ``abuse_limit`` refusals within ``abuse_window``
    seconds means the client ignores ``rate_limited`` and is to be closed.

    ``now`` is a monotonic time in seconds, passed in by the caller.
    """

    def __init__(
        self,
        rate: float,
        *,
        now: float,
        abuse_limit: int | None = None,
        abuse_window: float = 10.0,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.abuse_limit = abuse_limit if abuse_limit is not None else max(10, int(2 * rate))
        self.abuse_window = abuse_window
        self._tokens = self.capacity
        self._last = now
        self._refusals: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """Take a token if there is one; False means refuse this command."""
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self._refusals.append(now)
        return False

    def abusive(self, now: float) -> bool:
        """Whether the refusals within the window exceed the abuse limit."""
        while self._refusals and self._refusals[0] <= now - self.abuse_window:
            self._refusals.popleft()
        return len(self._refusals) > self.abuse_limit


class FailureThrottle:
    """Failed authentications by address: an address with ``limit`` failures
    within the last ``window`` seconds is throttled until the oldest of them
    leaves the window.

    At most ``max_addresses`` addresses are remembered (the least recently
    failed is forgotten first), so a spray from many addresses costs bounded
    memory. ``now`` is a monotonic time in seconds, passed in by the caller.
    """

    def __init__(self, limit: int, window: float, *, max_addresses: int = 10000) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}

    def failed(self, address: str, now: float) -> None:
        """Count one failed authentication from ``address``."""
        times = self._failures.pop(address, None) or deque(maxlen=self.limit)
        times.append(now)
        self._failures[address] = times  # re-inserted: most recent last
        while len(self._failures) > self.max_addresses:
            del self._failures[next(iter(self._failures))]

    def throttled(self, address: str, now: float) -> bool:
        """Whether ``address`` has used up its failures for now."""
        times = self._failures.get(address)
        if times is None:
            return False
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return False
        return len(times) >= self.limit
