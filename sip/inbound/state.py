"""The inbound call state machine.

Pure: no I/O, no clock. :class:`InboundCall` holds where one inbound call stands
(its :class:`InboundPhase`) and how it ends (its :class:`Outcome`); the service in
:mod:`sip.inbound.service` performs the I/O and tells it what happened. Every
transition is logged; one the table below does not allow raises
:class:`~sip.exceptions.InvalidState`.

Phases::

    NEW ──branch chosen──> WAITING ──agent picked──> OFFERING ──answered──> CONNECTING
                              ^    <──not answered──    │                      │
                              │                         └──deadline──┐    both audio
                              └──deadline──> FORWARDING <────────────┘         │
                                                 └──answered──> CONNECTING ──> BRIDGED
    any phase before ENDING ──decide(outcome)──> ENDING ──no leg left──> ENDED
        (the outcome: hangup_requested and caller_left compute it from whether the
        caller was answered; the service decides the others: missed, failed...)
    any phase ──interrupted──> ENDED      (the worker carrying the call died)

The races SIP produces (an answer crossing our CANCEL, a deadline after the
answer) are absorbed by the service asking :attr:`InboundCall.phase` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import structlog

from crm_store import CallEndReason
from sip.exceptions import InvalidState

__all__ = ["InboundCall", "InboundPhase", "Outcome"]

log = structlog.get_logger(__name__)


class InboundPhase(StrEnum):
    """Where an inbound call stands."""

    #: The caller is being identified and the carrying branch chosen.
    NEW = "new"
    #: The caller rings; no agent is being offered the call.
    WAITING = "waiting"
    #: An agent's phone rings.
    OFFERING = "offering"
    #: The overflow number rings (``no_agent_action = "forward"``).
    FORWARDING = "forwarding"
    #: The agent (or the overflow) answered; the caller is answered, audio awaited.
    CONNECTING = "connecting"
    #: Caller and agent (or overflow) hear each other.
    BRIDGED = "bridged"
    #: The outcome is decided; the legs still up are being hung up.
    ENDING = "ending"
    ENDED = "ended"


_P = InboundPhase
#: The phases each phase may move to (ENDING and ENDED through :meth:`decide`,
#: :meth:`interrupted` and :meth:`legs_gone` only).
TRANSITIONS: dict[InboundPhase, frozenset[InboundPhase]] = {
    _P.NEW: frozenset({_P.WAITING}),
    _P.WAITING: frozenset({_P.OFFERING, _P.FORWARDING}),
    _P.OFFERING: frozenset({_P.WAITING, _P.FORWARDING, _P.CONNECTING}),
    _P.FORWARDING: frozenset({_P.CONNECTING}),
    _P.CONNECTING: frozenset({_P.BRIDGED}),
    _P.BRIDGED: frozenset(),
    _P.ENDING: frozenset({_P.ENDED}),
    _P.ENDED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the call ended: the reason, the SIP code that said so, and which leg
    (``customer``, ``agent``, ``overflow``; None when neither)."""

    reason: CallEndReason
    sip_code: int
    leg: str | None


class InboundCall:
    """State of one inbound call, from its first branch to its end."""

    def __init__(self, sip_call_id: str) -> None:
        self.sip_call_id = sip_call_id
        self.phase = InboundPhase.NEW
        self.outcome: Outcome | None = None
        #: The caller's leg was answered (by us, for an agent or the overflow).
        self.answered = False

    def _move(self, phase: InboundPhase, **why: object) -> None:
        log.info(
            "inbound_call.transition",
            sip_call_id=self.sip_call_id,
            old=self.phase.value,
            new=phase.value,
            **why,
        )
        self.phase = phase

    def to(self, phase: InboundPhase) -> bool:
        """Move to ``phase``; True if it did.

        Once the outcome is decided (ENDING, ENDED) the call only ends: the move is
        ignored and False returned (a late answer, a timer). Any other move the
        table forbids raises :class:`InvalidState`.
        """
        if self.phase in (InboundPhase.ENDING, InboundPhase.ENDED):
            return False
        if phase not in TRANSITIONS[self.phase]:
            raise InvalidState(
                f"inbound call {self.sip_call_id}: cannot go from {self.phase.value}"
                f" to {phase.value}"
            )
        self._move(phase)
        return True

    def decide(self, outcome: Outcome) -> bool:
        """The call is to end with ``outcome`` (the first one decided stays).

        Moves to ENDING unless the call is ENDED already; True if ``outcome`` is
        the one that decided.
        """
        first = self.outcome is None
        if first:
            self.outcome = outcome
        if self.phase is not InboundPhase.ENDING and self.phase is not InboundPhase.ENDED:
            assert self.outcome is not None
            self._move(InboundPhase.ENDING, reason=self.outcome.reason.value)
        return first

    def caller_answered(self) -> None:
        """We answered the caller's leg: an end from now on is ``completed``."""
        if self.phase is not InboundPhase.CONNECTING:
            raise InvalidState(
                f"inbound call {self.sip_call_id}: cannot answer the caller in phase"
                f" {self.phase.value}"
            )
        self.answered = True
        log.info("inbound_call.caller_answered", sip_call_id=self.sip_call_id)

    def hangup_requested(self) -> bool:
        """Someone asked to end the call; True if that decided its outcome
        (``completed`` once the caller was answered, else ``cancelled``)."""
        if self.outcome is not None:
            return False
        reason = CallEndReason.COMPLETED if self.answered else CallEndReason.CANCELLED
        return self.decide(Outcome(reason, 0, None))

    def caller_left(self, *, transferred: bool, sip_code: int) -> bool:
        """The caller's leg ended; True if that decided the outcome: ``transferred``
        (it left by a REFER), ``completed`` once answered, else ``cancelled`` (the
        caller gave up ringing)."""
        if self.outcome is not None:
            return False
        if transferred:
            reason = CallEndReason.TRANSFERRED
        elif self.answered:
            reason = CallEndReason.COMPLETED
        else:
            reason = CallEndReason.CANCELLED
        return self.decide(Outcome(reason, sip_code, "customer"))

    def legs_gone(self) -> None:
        """No leg of the call is up any more: an ENDING call is ENDED."""
        if self.phase is InboundPhase.ENDING:
            self._move(InboundPhase.ENDED)

    def interrupted(self) -> None:
        """The worker carrying the call died; the pool closes its record."""
        if self.outcome is None:
            self.outcome = Outcome(CallEndReason.INTERRUPTED, 0, None)
        if self.phase is not InboundPhase.ENDED:
            self._move(InboundPhase.ENDED, reason=self.outcome.reason.value)

    @property
    def decided(self) -> bool:
        """An outcome is decided (the call is ending or ended)."""
        return self.outcome is not None

    @property
    def ended(self) -> bool:
        return self.phase is InboundPhase.ENDED
