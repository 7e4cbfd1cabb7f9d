"""The click-to-call state machine.

Pure: no I/O, no clock. :class:`ClickToCall` is told what happened (a leg rang,
answered, ended; a timer fired; someone asked to hang up) and moves between the
:class:`Phase` values, logging each transition and raising
:class:`~sip.exceptions.InvalidState` when asked for one its phase does not
allow. The service in :mod:`sip.calls` performs the I/O the new phase calls for.

The races SIP produces are not errors and are absorbed here: a 180 or a 200
that crosses our CANCEL, a ring timer that fires just after the answer, a leg
ending while the other is already being hung up. Those methods return ``False``
("nothing to do") instead of raising.

Phases::

    CREATED ──dial_agent──> AGENT_CALLING ──agent_answered──> AGENT_ANSWERED
        ──dial_customer──> CUSTOMER_CALLING ──customer_answered──> CONNECTED
        ──bridged──> BRIDGED
    any active phase ──(a leg ended, a timer, a hang-up request)──> ENDING
    ENDING ──(the last live leg ended)──> ENDED
    any phase ──interrupted──> ENDED      (the worker died under the call)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

import structlog

from crm_store import CallEndReason
from sip.exceptions import InvalidState
from sip.legs import end_reason

__all__ = ["ClickToCall", "Leg", "Outcome", "Phase", "end_reason"]

log = structlog.get_logger(__name__)


class Phase(IntEnum):
    """Where a click-to-call call stands."""

    CREATED = 0
    #: The agent's phone is being called.
    AGENT_CALLING = 1
    #: The agent answered; the customer is about to be called.
    AGENT_ANSWERED = 2
    #: The customer is being called.
    CUSTOMER_CALLING = 3
    #: The customer answered; waiting for both legs' audio to bridge them.
    CONNECTED = 4
    #: Agent and customer hear each other.
    BRIDGED = 5
    #: The outcome is decided; the legs still up are being hung up.
    ENDING = 6
    ENDED = 7


class Leg(StrEnum):
    """The two legs of a click-to-call call."""

    AGENT = "agent"
    CUSTOMER = "customer"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the call ended: the reason, the SIP code that said so, and which leg."""

    reason: CallEndReason
    sip_code: int
    leg: Leg | None


_ACTIVE = frozenset(
    {
        Phase.AGENT_CALLING,
        Phase.AGENT_ANSWERED,
        Phase.CUSTOMER_CALLING,
        Phase.CONNECTED,
        Phase.BRIDGED,
    }
)


class ClickToCall:
    """State of one click-to-call call: agent leg first, then the customer's."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.phase = Phase.CREATED
        self.alive: set[Leg] = set()
        self.rang: set[Leg] = set()
        self.media: set[Leg] = set()
        self.outcome: Outcome | None = None
        #: The customer answered: the call counts as talked, whatever comes next.
        self.talked = False

    # ------------------------------------------------------------------ helpers

    def _to(self, phase: Phase, **why: object) -> None:
        log.info(
            "click_to_call.transition",
            call_id=self.call_id,
            old=self.phase.name,
            new=phase.name,
            **why,
        )
        self.phase = phase

    def _require(self, action: str, *phases: Phase) -> None:
        if self.phase not in phases:
            raise InvalidState(f"call {self.call_id}: cannot {action} in phase {self.phase.name}")

    def _decide(self, outcome: Outcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
        self._to(Phase.ENDING if self.alive else Phase.ENDED, reason=self.outcome.reason.value)

    # ------------------------------------------------------------------ transitions

    def dial_agent(self) -> None:
        """The agent leg's originate is being sent."""
        self._require("dial the agent", Phase.CREATED)
        self.alive.add(Leg.AGENT)
        self._to(Phase.AGENT_CALLING)

    def dial_customer(self) -> None:
        """The customer leg's originate is being sent."""
        self._require("dial the customer", Phase.AGENT_ANSWERED)
        self.alive.add(Leg.CUSTOMER)
        self._to(Phase.CUSTOMER_CALLING)

    def leg_ringing(self, leg: Leg) -> bool:
        """``leg`` rings; True the first time (when the ringing is news)."""
        if leg not in self.alive or self.phase not in _ACTIVE or leg in self.rang:
            return False
        self.rang.add(leg)
        log.info("click_to_call.ringing", call_id=self.call_id, leg=leg.value)
        return True

    def agent_answered(self) -> bool:
        """The agent picked up; True if the customer is to be dialed now."""
        if self.phase in (Phase.ENDING, Phase.ENDED):
            return False  # crossed our CANCEL: the hang-up is under way
        self._require("take the agent's answer", Phase.AGENT_CALLING)
        self._to(Phase.AGENT_ANSWERED)
        return True

    def customer_answered(self) -> bool:
        """The customer picked up; True if the call is now connected."""
        if self.phase in (Phase.ENDING, Phase.ENDED):
            return False
        self._require("take the customer's answer", Phase.CUSTOMER_CALLING)
        self.talked = True
        self._to(Phase.CONNECTED)
        return True

    def media_active(self, leg: Leg) -> bool:
        """``leg``'s audio is up; True when both legs' audio is up and they are to be
        bridged now."""
        self.media.add(leg)
        return self.phase is Phase.CONNECTED and self.media >= {Leg.AGENT, Leg.CUSTOMER}

    def bridged(self) -> None:
        """The two legs are bridged."""
        self._require("bridge", Phase.CONNECTED)
        self._to(Phase.BRIDGED)

    def timed_out(self, leg: Leg) -> bool:
        """The ring timer of ``leg`` fired; True if the leg is to be hung up."""
        calling = Phase.AGENT_CALLING if leg is Leg.AGENT else Phase.CUSTOMER_CALLING
        if self.phase is not calling:
            return False  # answered (or ended) just before the timer fired
        self._decide(Outcome(CallEndReason.NO_ANSWER, 0, leg))
        return True

    def hangup_requested(self) -> bool:
        """Someone asked to end the call; True if legs are to be hung up."""
        if self.phase not in _ACTIVE and self.phase is not Phase.CREATED:
            return False
        reason = CallEndReason.COMPLETED if self.talked else CallEndReason.CANCELLED
        self._decide(Outcome(reason, 0, None))
        return True

    def leg_failed(self, leg: Leg, reason: CallEndReason = CallEndReason.FAILED) -> None:
        """``leg`` could not be placed at all (the worker refused the originate)."""
        self.alive.discard(leg)
        if self.phase is Phase.ENDED:
            return
        self._decide(Outcome(reason, 0, leg))

    def leg_ended(self, leg: Leg, worker_reason: str | None, sip_code: int) -> None:
        """``leg`` is over. The first leg to end (unless a timer or a request came
        first) decides the outcome; the call is ENDED when no leg is left."""
        if leg not in self.alive:
            return
        self.alive.discard(leg)
        if self.phase is Phase.ENDED:
            return
        if self.outcome is not None:
            if not self.alive:
                self._to(Phase.ENDED, reason=self.outcome.reason.value)
            return
        if worker_reason == "transferred":
            reason = CallEndReason.TRANSFERRED  # the customer left us by a REFER
        elif self.talked:
            reason = CallEndReason.COMPLETED
        elif leg is Leg.AGENT and self.phase in (Phase.AGENT_ANSWERED, Phase.CUSTOMER_CALLING):
            reason = CallEndReason.CANCELLED  # the agent gave up on a ringing customer
        else:
            reason = end_reason(worker_reason, sip_code, rang=leg in self.rang)
        self._decide(Outcome(reason, sip_code, leg))

    def interrupted(self) -> None:
        """The worker holding the call died; the pool has closed the record."""
        self.alive.clear()
        if self.phase is Phase.ENDED:
            return
        if self.outcome is None:
            self.outcome = Outcome(CallEndReason.INTERRUPTED, 0, None)
        self._to(Phase.ENDED, reason=self.outcome.reason.value)

    @property
    def ended(self) -> bool:
        return self.phase is Phase.ENDED
