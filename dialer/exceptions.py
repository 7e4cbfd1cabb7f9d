"""Errors raised by :mod:`dialer`.

Every error the dialer raises on purpose derives from :class:`DialerError`::

    DialerError
    ├── InvalidState     the session's phase does not allow the request
    ├── NoSession        the agent has no dialing session
    ├── SessionExists    the agent already dials a list
    ├── UnknownList      no call list with that id
    └── DialerClosed     the dialer is not running

Each carries a stable ``error_id`` for the API layers.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "DialerClosed",
    "DialerError",
    "InvalidState",
    "NoSession",
    "SessionExists",
    "UnknownList",
]


class DialerError(Exception):
    """Root of the dialer's errors."""

    error_id: ClassVar[str] = "dialer_error"


class InvalidState(DialerError):
    error_id: ClassVar[str] = "dialer_invalid_state"


class NoSession(DialerError):
    error_id: ClassVar[str] = "dialer_no_session"


class SessionExists(DialerError):
    error_id: ClassVar[str] = "dialer_session_exists"


class UnknownList(DialerError):
    error_id: ClassVar[str] = "dialer_unknown_list"


class DialerClosed(DialerError):
    error_id: ClassVar[str] = "dialer_closed"
