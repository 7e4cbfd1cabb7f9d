"""Who may be offered an inbound call.

:class:`Presence` is what the service needs; the one agent presence model,
:class:`bus.presence.PresenceBook` (persisted and published by
:class:`bus.agent_states.AgentStates`), implements it and is re-exported here for
the callers that build the service themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bus.presence import PresenceBook, Strategy

__all__ = ["Presence", "PresenceBook", "Strategy"]


class Presence(Protocol):
    """Who may be offered a call; implemented by the daemon from the agents' states.

    The service calls :meth:`call_started` as it picks an agent (before ringing
    the phone) and :meth:`call_ended` once that agent is free again (the offer
    failed, or the call is over), so an agent is never offered two calls. All
    three are called on the event loop and must not block.
    """

    def offer_order(self) -> Sequence[str]:
        """Agent keys (``AgentConfig.key``) available and not on a call, best first."""
        ...

    def call_started(self, agent: str) -> None:
        """``agent`` is being offered (or carries) a call."""
        ...

    def call_ended(self, agent: str) -> None:
        """``agent`` is no longer offered (nor carrying) the call it was given."""
        ...
