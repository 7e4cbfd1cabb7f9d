"""The auto-dialer: agents' dialing sessions over shared call lists.

:class:`Dialer` is the component (``start()``/``aclose()``); each agent dialing
runs a :class:`~dialer.session.DialingSession` whose state machine is
:class:`~dialer.state.SessionState`. See ``docs/dialer.md``.
"""

from __future__ import annotations

from .agent_leg import AgentLeg, AgentLegPhase
from .attempt import Attempt, AttemptPhase, Outcome
from .exceptions import (
    DialerClosed,
    DialerError,
    InvalidState,
    NoSession,
    SessionExists,
    UnknownList,
)
from .rules import CallingHours, OutsideHours, callee_zones, retry_at
from .service import Dialer, screen_entries
from .session import DialingSession, GapTiming, SessionInfo
from .state import Phase, SessionState

__all__ = [
    "AgentLeg",
    "AgentLegPhase",
    "Attempt",
    "AttemptPhase",
    "CallingHours",
    "Dialer",
    "DialerClosed",
    "DialerError",
    "DialingSession",
    "GapTiming",
    "InvalidState",
    "NoSession",
    "Outcome",
    "OutsideHours",
    "Phase",
    "SessionExists",
    "SessionInfo",
    "SessionState",
    "UnknownList",
    "callee_zones",
    "retry_at",
    "screen_entries",
]
