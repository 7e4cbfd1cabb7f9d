"""The MQTT side of the bridge without I/O: topic names, command parsing, replies.

Kept apart from :mod:`bus.mqtt` so the rules a remote client sees (which topics,
which error codes, which reply topics are allowed) can be read and tested on their
own.
"""

from __future__ import annotations

import json
import random
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from .codec import json_default
from .exceptions import BusError
from .safejson import BadJson, loads

__all__ = [
    "MAX_COMMAND_BYTES",
    "BadCommand",
    "BrokerAddress",
    "Command",
    "CommandError",
    "Topics",
    "error_reply",
    "parse_command",
    "reconnect_delay",
    "result_reply",
    "status_payload",
    "topic_level",
]

#: Larger command messages are refused unread: no command needs more, and parsing
#: an arbitrary blob from the broker is a memory risk.
MAX_COMMAND_BYTES = 64 * 1024
_MAX_ID_CHARS = 128
_MAX_TOPIC_BYTES = 65535  # MQTT's limit on a topic name


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where a broker is, read from an ``mqtt://`` or ``mqtts://`` URL.

    The URL must not carry the password (it would be logged with the URL); it is
    passed on its own, as a secret, when connecting.
    """

    host: str
    port: int
    username: str | None
    tls: ssl.SSLContext | None

    @classmethod
    def parse(cls, url: str, *, tls_context: ssl.SSLContext | None = None) -> BrokerAddress:
        """Raises ``ValueError`` for another scheme, no host, or a password in the URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("the MQTT URL must be mqtt://[user@]host[:port] or mqtts://...")
        if parts.password is not None:
            raise ValueError("the MQTT URL must not contain the password; pass it apart")
        secure = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if secure else 1883),
            username=unquote(parts.username) if parts.username else None,
            tls=tls_context or (ssl.create_default_context() if secure else None),
        )


def reconnect_delay(failures: int, low: float, high: float) -> float:
    """Capped exponential delay with jitter (half fixed, half random), so that many
    clients cut off by one broker restart do not reconnect in lockstep."""
    ceiling = min(high, low * 2.0 ** min(failures, 30))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def topic_level(text: str) -> str:
    """``text`` made safe as one topic level: ``%``, ``/``, ``+``, ``#`` and NUL are
    percent-encoded (``%`` first, so the encoding can be undone), nothing else is."""
    return (
        text.replace("%", "%25")
        .replace("/", "%2F")
        .replace("+", "%2B")
        .replace("#", "%23")
        .replace("\0", "%00")
    )


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic of one site under ``prefix`` (see docs/protocol.md, "MQTT")."""

    prefix: str
    site: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}"

    def event(self, type_name: str) -> str:
        return f"{self.base}/events/{topic_level(type_name)}"

    @property
    def events(self) -> str:
        """The filter matching every event of the site."""
        return f"{self.base}/events/#"

    def agent_state(self, agent: str) -> str:
        return f"{self.base}/agents/{topic_level(agent)}/state"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def commands(self) -> str:
        return f"{self.base}/commands"

    @property
    def replies(self) -> str:
        """Where errors go for commands too malformed to name their own reply topic."""
        return f"{self.base}/replies"

    def reply(self, command_id: str) -> str:
        return f"{self.base}/replies/{command_id}"

    def reply_allowed(self, topic: str) -> bool:
        """Whether the bridge may publish a reply on ``topic``.

        Only this site's ``replies/`` subtree is allowed. The bridge publishes with
        the daemon's broker rights, which cover its own event and state topics: a
        client naming one of them (or another site's) as ``reply_to`` would make the
        bridge forge events for it, and a topic outside the prefix would make it
        publish wherever the daemon's account may, for whoever asks. Broker ACLs
        can then give each client read access to the replies it is owed alone.
        """
        if not topic or "+" in topic or "#" in topic or "\0" in topic:
            return False
        if len(topic.encode()) > _MAX_TOPIC_BYTES:
            return False
        own = self.base + "/replies/"
        return topic.startswith(own) and len(topic) > len(own)


@dataclass(frozen=True, slots=True)
class Command:
    """A well-formed command message (the token is not checked yet)."""

    id: str
    token: str
    name: str
    args: dict[str, Any]
    reply_to: str

    def __repr__(self) -> str:
        # The token must never reach a log line, whatever gets printed.
        return f"Command(id={self.id!r}, name={self.name!r}, reply_to={self.reply_to!r})"


class CommandError(BusError):
    """Raised by a command handler to refuse a command with a stable ``code``.

    ``code`` is what remote clients test (``forbidden``, ``not_found``,
    ``unknown_command``...); ``message`` is for people; ``details`` must be JSON-ready.
    """

    def __init__(self, code: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class BadCommand(BusError):
    """A command message that cannot be run; the reply says why.

    ``reply_to`` is where the error reply goes, or ``None`` when the message did not
    even yield a usable id (then there is nowhere sensible to answer).
    """

    def __init__(self, code: str, message: str, *, id: str | None, reply_to: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id
        self.reply_to = reply_to


def parse_command(payload: bytes, topics: Topics) -> Command:
    """Read a command message; raise :class:`BadCommand` (``bad_request`` or
    ``unauthorized``) if it cannot be run."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise BadCommand("bad_request", "command too large", id=None, reply_to=None)
    try:
        # Bounded depth, finite numbers, valid Unicode: what the bridge accepts it can
        # also encode again (in a reply, an event, a log line) and store.
        data = loads(payload, max_bytes=MAX_COMMAND_BYTES)
    except BadJson as exc:
        raise BadCommand(
            "bad_request", f"not a JSON object: {exc}", id=None, reply_to=topics.replies
        ) from None
    if not isinstance(data, dict):
        raise BadCommand("bad_request", "not a JSON object", id=None, reply_to=topics.replies)

    raw_id = data.get("id")
    command_id = (
        raw_id
        if isinstance(raw_id, str)
        and 0 < len(raw_id) <= _MAX_ID_CHARS
        and topic_level(raw_id) == raw_id
        else None
    )
    raw_reply_to = data.get("reply_to")
    reply_to = (
        raw_reply_to
        if isinstance(raw_reply_to, str) and topics.reply_allowed(raw_reply_to)
        else None
    )
    # Where to answer if something below is wrong: the client's topic when it is
    # acceptable, else the default one for a valid id, else the site's catch-all.
    fallback = reply_to or (topics.reply(command_id) if command_id else topics.replies)
    if command_id is None:
        raise BadCommand(
            "bad_request",
            f"'id' must be a string of 1 to {_MAX_ID_CHARS} characters without / + # or NUL",
            id=None,
            reply_to=fallback,
        )
    if raw_reply_to is not None and reply_to is None:
        raise BadCommand(
            "bad_request",
            f"'reply_to' must be a topic under {topics.base}/replies/ without wildcards",
            id=command_id,
            reply_to=fallback,
        )
    token = data.get("token")
    if not isinstance(token, str) or not token:
        raise BadCommand("unauthorized", "a token is required", id=command_id, reply_to=fallback)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise BadCommand("bad_request", "'name' must be a string", id=command_id, reply_to=fallback)
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise BadCommand(
            "bad_request", "'args' must be an object", id=command_id, reply_to=fallback
        )
    return Command(id=command_id, token=token, name=name, args=args, reply_to=fallback)


def result_reply(command_id: str, result: Any) -> bytes:
    """The reply to a command that succeeded; ``TypeError``/``ValueError`` if
    ``result`` is not JSON-ready."""
    return _dumps({"id": command_id, "type": "result", "result": result})


def error_reply(
    command_id: str | None, code: str, message: str, details: dict[str, Any] | None = None
) -> bytes:
    """The reply to a command that failed, with its stable ``code``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    try:
        return _dumps({"id": command_id, "type": "error", "error": error})
    except (TypeError, ValueError):
        # Details a handler filled with something unwritable must not cost the reply.
        error.pop("details", None)
        return _dumps({"id": command_id, "type": "error", "error": error})


def status_payload(state: str, origin: str, at: datetime) -> bytes:
    """The retained ``status`` message: ``online`` or ``offline``."""
    return _dumps({"state": state, "origin": origin, "at": at.isoformat()})


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(
        data, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=json_default
    ).encode()
