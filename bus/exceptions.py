"""Errors raised by :mod:`bus`.

::

    BusError
    ├── SubscriptionClosed   get() on a subscription that is closed and drained
    └── FeedUnavailable      the gateway's feed has no broker connection to send on
"""

from __future__ import annotations

__all__ = ["BusError", "FeedUnavailable", "SubscriptionClosed"]


class BusError(Exception):
    """Root of the bus's errors."""


class SubscriptionClosed(BusError):
    """The subscription was closed and every event queued before has been read."""


class FeedUnavailable(BusError):
    """The feed is not connected to the broker (or lost it while waiting)."""
