"""Errors raised by :mod:`crm_store`.

Every error the store raises on purpose derives from :class:`StoreError`, so a caller
can catch the whole package with one clause::

    StoreError
    ├── NotFound          the id names no row (or names a row of another kind)
    ├── Conflict          the row exists but is not in a state that allows the change:
    │                     a duplicate unique value, a lead already taken, a call
    │                     already ended
    ├── InvalidPhone      a phone number could not be normalised to E.164
    ├── SchemaOutOfDate   the database is not migrated to this code's head revision
    └── StoreUnavailable  the database cannot be reached, opened or written (at open,
                          at migrate, or later: a lost connection, a server that is
                          down, a full disk)

Driver errors that are about the database's health rather than the data (SQLAlchemy's
``OperationalError`` and ``InterfaceError``, an invalidated connection, a refused
socket) are raised as :class:`StoreUnavailable`, with the driver's error as its cause,
so that callers handling :class:`StoreError` survive them. Steps of a call's record are
not even that: they are queued and written when the database returns (see
:class:`~crm_store.CallRepository`).
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "InvalidPassword",
    "InvalidPhone",
    "NotFound",
    "SchemaOutOfDate",
    "StoreError",
    "StoreUnavailable",
]


class StoreError(Exception):
    """Root of every error raised on purpose by the CRM store."""


class NotFound(StoreError):
    """The requested entity does not exist."""

    def __init__(self, entity: str, entity_id: object) -> None:
        super().__init__(f"{entity} {entity_id} not found")
        self.entity = entity
        self.entity_id = entity_id


class Conflict(StoreError):
    """The change clashes with the current state of the data."""


class InvalidPassword(StoreError):
    """A password refused by the policy (too short, too long); the message says why
    and never contains the password."""


class InvalidPhone(StoreError):
    """A phone number could not be normalised.

    ``number`` is the input as given; ``reason`` is a short human-readable explanation
    such as ``"too short"`` or ``"not a valid number for region FR"``.
    """

    def __init__(self, number: str, reason: str) -> None:
        super().__init__(f"invalid phone number {number!r}: {reason}")
        self.number = number
        self.reason = reason


class SchemaOutOfDate(StoreError):
    """The database schema revision differs from the code's head revision."""

    def __init__(self, current: str | None, head: str) -> None:
        super().__init__(
            f"database schema is at revision {current or 'none'}, code expects {head};"
            " run the migrations"
        )
        self.current = current
        self.head = head


class StoreUnavailable(StoreError):
    """The database could not be reached or opened; ``str()`` says why, without
    the URL's password."""
