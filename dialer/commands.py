"""The requests a dialing session takes from its agent and the dialer.

Each is a frozen value handed to :meth:`dialer.session.DialingSession.command`,
which applies it in the session's own task, between the calls' events.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

__all__ = ["Disposition", "Pause", "Resume", "SessionCommand", "Skip", "Stop"]


@dataclass(frozen=True, slots=True)
class Pause:
    """Take no new number: at once between calls, after the call during one."""

    reason: str = "agent"


@dataclass(frozen=True, slots=True)
class Resume:
    """Go on after a pause, or withdraw a pause requested during a call."""


@dataclass(frozen=True, slots=True)
class Stop:
    """End the session: a ringing customer is hung up, a conversation let finish."""

    reason: str = "agent"


@dataclass(frozen=True, slots=True)
class Skip:
    """Skip the current number: the one waiting for the gap (not dialed), or the
    one ringing or talking (hung up)."""


@dataclass(frozen=True, slots=True)
class Disposition:
    """The agent disposed of call ``call_id``: during its wrap-up, that ends it."""

    call_id: uuid.UUID


SessionCommand = Pause | Resume | Stop | Skip | Disposition
