"""Errors raised by :mod:`bus`.

::

    BusError
    └── SubscriptionClosed   get() on a subscription that is closed and drained
"""

from __future__ import annotations

__all__ = ["BusError", "SubscriptionClosed"]


class BusError(Exception):
    """Root of the bus's errors."""


class SubscriptionClosed(BusError):
    """The subscription was closed and every event queued before has been read."""
