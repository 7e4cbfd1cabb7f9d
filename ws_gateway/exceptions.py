"""Exceptions of the websocket gateway.

The tree::

    GatewayError                 root of everything ws_gateway raises
    ├── InvalidState             a Gateway method called in the wrong state
    │                            (start twice, start after close)
    └── CommandError             a command (or a client message) was refused;
        │                        carries the stable ``code`` sent to the client
        ├── BadRequest           bad_request: malformed message or arguments
        ├── Forbidden            forbidden: outside the principal's rights
        ├── NotFound             not_found: no such call, user, token...
        ├── Conflict             conflict: the state does not allow it now
        ├── Unavailable          unavailable: the telephony side cannot do it now
        ├── RateLimited          rate_limited: too many commands per second
        └── InternalError        internal: a bug; details are logged, not sent

A :class:`~ws_gateway.CommandHandler` raises the :class:`CommandError` subclasses
to refuse a command; the gateway turns them into ``error`` replies with the
same ``code``. Any other exception from a handler is logged and answered with
``internal``: the connection stays open.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BadRequest",
    "CommandError",
    "Conflict",
    "Forbidden",
    "GatewayError",
    "InternalError",
    "InvalidState",
    "NotFound",
    "RateLimited",
    "Unavailable",
]


class GatewayError(Exception):
    """Root of the gateway's exceptions."""


class InvalidState(GatewayError):
    """A method was called in a state that does not allow it."""


class CommandError(GatewayError):
    """A refused command; ``code`` is the stable error code sent to the client.

    ``message`` is for humans and may change; ``details`` is JSON-ready data
    (never secrets: it is sent to the client as is).
    """

    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


class BadRequest(CommandError):
    """The message or the command's arguments are malformed."""

    code = "bad_request"


class Forbidden(CommandError):
    """The command is outside the principal's rights; nothing was done."""

    code = "forbidden"


class NotFound(CommandError):
    """The command names something that does not exist (a call, a user...)."""

    code = "not_found"


class Conflict(CommandError):
    """The command does not fit the current state (hold an ended call...)."""

    code = "conflict"


class Unavailable(CommandError):
    """The telephony side cannot do it now (worker down, timeout); retry later."""

    code = "unavailable"


class RateLimited(CommandError):
    """The connection sent commands faster than ``commands_per_second``."""

    code = "rate_limited"


class InternalError(CommandError):
    """An unexpected failure; the details are in the server's log."""

    code = "internal"


ERROR_CODES: tuple[str, ...] = tuple(
    cls.code
    for cls in (
        BadRequest,
        Forbidden,
        NotFound,
        Conflict,
        Unavailable,
        RateLimited,
        InternalError,
    )
)
"""Every error code a client can receive, in documentation order."""
