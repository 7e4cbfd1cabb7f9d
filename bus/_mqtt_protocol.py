"""The MQTT side of the bridge without I/O: topic names, command parsing, replies.

Kept apart from :mod:`bus.mqtt` so the rules a remote client sees (which topics,
which error codes, which reply topics are allowed) can be read and tested on their
own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
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
    "MAX_ASSERTION_SECONDS",
    "MAX_COMMAND_BYTES",
    "BadAssertion",
    "BadCommand",
    "BrokerAddress",
    "Command",
    "CommandError",
    "Topics",
    "error_reply",
    "parse_command",
    "reconnect_delay",
    "result_reply",
    "sign_assertion",
    "status_payload",
    "topic_level",
    "verify_assertion",
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
    """A well-formed command message (its credential is not checked yet).

    Exactly one of ``token`` (a user's API token, from an integration) and
    ``assertion`` (a gateway's signed word for a user, see :func:`sign_assertion`)
    is set.
    """

    id: str
    token: str | None
    name: str
    args: dict[str, Any]
    reply_to: str
    assertion: str | None = None

    def __repr__(self) -> str:
        # The credential must never reach a log line, whatever gets printed.
        return f"Command(id={self.id!r}, name={self.name!r}, reply_to={self.reply_to!r})"


# --- gateway assertions -------------------------------------------------------------

#: The longest an assertion may be valid for: the gateway signs one per command,
#: just before publishing it.
MAX_ASSERTION_SECONDS = 120
_ASSERTION_VERSION = 1
# Domain separation: a MAC made for anything else with the same key never verifies.
_ASSERTION_CONTEXT = b"switchboard mqtt gateway assertion\0"
_MAX_ASSERTION_CHARS = 1024


class BadAssertion(BusError, ValueError):
    """A gateway assertion that does not hold; the message says why (for the log)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, _ASSERTION_CONTEXT + body.encode(), hashlib.sha256).digest())


def sign_assertion(secret: bytes, *, user_id: str, site: str, command_id: str, expires: int) -> str:
    """A gateway's word that user ``user_id`` sends command ``command_id`` to
    ``site``, valid until the Unix time ``expires``: ``BODY.MAC``, with an
    HMAC-SHA256 over the body under the secret the gateway shares with the
    daemons (``[bus] gateway_secret``). It names one command of one site, so it
    cannot be replayed elsewhere, and carries no user secret."""
    claims = {"v": _ASSERTION_VERSION, "user": user_id, "site": site, "id": command_id}
    claims["exp"] = expires
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_mac(secret, body)}"


def verify_assertion(
    secret: bytes, assertion: str, *, site: str, command_id: str, now: float
) -> tuple[str, int]:
    """The user id an assertion vouches for, and when it expires.

    Raises :class:`BadAssertion` unless the MAC is right (checked first, in
    constant time), the assertion is for this ``site`` and this ``command_id``,
    and it is valid at ``now`` for no more than :data:`MAX_ASSERTION_SECONDS`.
    """
    if len(assertion) > _MAX_ASSERTION_CHARS or assertion.count(".") != 1:
        raise BadAssertion("malformed")
    body, mac = assertion.split(".")
    if not hmac.compare_digest(_mac(secret, body), mac):
        raise BadAssertion("bad signature")
    try:
        claims = loads(_unb64(body), max_bytes=_MAX_ASSERTION_CHARS, max_depth=2)
    except (BadJson, ValueError):
        raise BadAssertion("malformed claims") from None
    if not isinstance(claims, dict) or claims.get("v") != _ASSERTION_VERSION:
        raise BadAssertion("unknown version")
    user, expires = claims.get("user"), claims.get("exp")
    if not isinstance(user, str) or not isinstance(expires, int) or isinstance(expires, bool):
        raise BadAssertion("malformed claims")
    if claims.get("site") != site:
        raise BadAssertion("made for another site")
    if claims.get("id") != command_id:
        raise BadAssertion("made for another command")
    if expires < now:
        raise BadAssertion("expired")
    if expires > now + MAX_ASSERTION_SECONDS:
        raise BadAssertion("valid for too long")
    return user, expires


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
    token, assertion = data.get("token"), data.get("assertion")
    if token is not None and assertion is not None:
        raise BadCommand(
            "bad_request",
            "give either 'token' or 'assertion', not both",
            id=command_id,
            reply_to=fallback,
        )
    if assertion is not None:
        if not isinstance(assertion, str) or not assertion:
            raise BadCommand("unauthorized", "invalid assertion", id=command_id, reply_to=fallback)
    elif not isinstance(token, str) or not token:
        raise BadCommand("unauthorized", "a token is required", id=command_id, reply_to=fallback)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise BadCommand("bad_request", "'name' must be a string", id=command_id, reply_to=fallback)
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise BadCommand(
            "bad_request", "'args' must be an object", id=command_id, reply_to=fallback
        )
    return Command(
        id=command_id,
        token=token if assertion is None else None,
        name=name,
        args=args,
        reply_to=fallback,
        assertion=assertion,
    )


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
