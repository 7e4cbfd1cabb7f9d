"""One dialing attempt's state machine; pure (no I/O, no clock).

An :class:`Attempt` follows one customer call placed by a dialing session, from
the INVITE to its outcome. The driver (:mod:`dialer.session`) tells it what
happened — the customer rang, answered, ended; the ring timer fired; the agent
skipped the number; nobody came to talk; the worker died — and does the I/O the
answer calls for. Every transition is logged; one the phase does not allow
raises :class:`~dialer.exceptions.InvalidState`.

The outcome is not computed from flags: the phase the customer's leg ended in
says it (:meth:`Attempt.outcome`). Phases::

    DIALING ──ringing──> RINGING
    DIALING | RINGING ──answered──> ANSWERED ──bridged──> TALKING
    DIALING | RINGING ──ring timer──> NO_ANSWER          (we hang up)
    DIALING | RINGING | CANCELLING ──skip──> SKIPPING    (we hang up)
    NO_ANSWER ──skip──> NO_ANSWER_SKIPPED
    DIALING | RINGING ──cancel──> CANCELLING             (stop, agent gone)
    CANCELLING ──ring timer──> NO_ANSWER; SKIPPING ──ring timer──> NO_ANSWER_SKIPPED
    ANSWERED ──abandon──> ABANDONING                     (no agent came)
    any live phase ──customer ended──> ENDED
    any phase but INTERRUPTED ──worker died──> INTERRUPTED

An answer crossing our hang-up (the CANCEL met the 200) is no answer: the
worker hangs that leg up. An answered call counts as ``completed`` whatever
ends it, and as ``abandoned`` when no agent came to talk — also when the
customer hung up while the agent's phone was still ringing.

With a per-call agent leg (:class:`~dialer.agent_leg.AgentLeg`, attached as
:attr:`Attempt.agent`) the attempt is settled once both legs are over.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

import structlog

from crm_store import CallEndReason, CallListItem
from sip.legs import end_reason

from .agent_leg import AgentLeg
from .exceptions import InvalidState

__all__ = ["Attempt", "AttemptPhase", "Leg", "Outcome"]

log = structlog.get_logger(__name__)


class Leg(StrEnum):
    """The two legs of a dialer call, as events and records name them."""

    AGENT = "agent"
    CUSTOMER = "customer"


class AttemptPhase(StrEnum):
    """Where one dialing attempt stands."""

    #: The customer's INVITE is out; nothing heard yet.
    DIALING = "dialing"
    #: The customer's phone rings.
    RINGING = "ringing"
    #: The ring timer fired: hanging up a customer who did not answer.
    NO_ANSWER = "no_answer"
    #: Hanging up an unanswered customer: the session stops or lost its agent.
    CANCELLING = "cancelling"
    #: Hanging up an unanswered customer the agent skipped.
    SKIPPING = "skipping"
    #: Skipped while the ring timer's hang-up was under way.
    NO_ANSWER_SKIPPED = "no_answer_skipped"
    #: The customer answered; no agent is bridged yet.
    ANSWERED = "answered"
    #: Customer and agent are bridged.
    TALKING = "talking"
    #: The customer answered and no agent came: hanging up.
    ABANDONING = "abandoning"
    #: The customer's leg is over (a per-call agent leg may still be ending).
    ENDED = "ended"
    #: The worker carrying the call died.
    INTERRUPTED = "interrupted"


_P = AttemptPhase
_UNANSWERED = frozenset({_P.DIALING, _P.RINGING})
_HANGING_UP = frozenset({_P.NO_ANSWER, _P.CANCELLING, _P.SKIPPING, _P.NO_ANSWER_SKIPPED})
_ANSWERED = frozenset({_P.ANSWERED, _P.TALKING, _P.ABANDONING})
_LIVE = _UNANSWERED | _HANGING_UP | _ANSWERED
_OVER = frozenset({_P.ENDED, _P.INTERRUPTED})

_ALLOWED: dict[AttemptPhase, frozenset[AttemptPhase]] = {
    _P.DIALING: frozenset({_P.RINGING, _P.ANSWERED, _P.NO_ANSWER, _P.CANCELLING, _P.SKIPPING})
    | _OVER,
    _P.RINGING: frozenset({_P.ANSWERED, _P.NO_ANSWER, _P.CANCELLING, _P.SKIPPING}) | _OVER,
    _P.NO_ANSWER: frozenset({_P.NO_ANSWER_SKIPPED}) | _OVER,
    _P.CANCELLING: frozenset({_P.NO_ANSWER, _P.SKIPPING}) | _OVER,
    _P.SKIPPING: frozenset({_P.NO_ANSWER_SKIPPED}) | _OVER,
    _P.NO_ANSWER_SKIPPED: _OVER,
    _P.ANSWERED: frozenset({_P.TALKING, _P.ABANDONING}) | _OVER,
    _P.TALKING: _OVER,
    _P.ABANDONING: _OVER,
    _P.ENDED: frozenset({_P.INTERRUPTED}),
    _P.INTERRUPTED: frozenset(),
}

#: The reason of a call whose customer's leg ended in these phases, unless its
#: worker died first (then ``interrupted``). Other unanswered phases take the
#: customer's final response.
_REASONS: dict[AttemptPhase, CallEndReason] = {
    _P.NO_ANSWER: CallEndReason.NO_ANSWER,
    _P.NO_ANSWER_SKIPPED: CallEndReason.NO_ANSWER,
    _P.CANCELLING: CallEndReason.CANCELLED,
    _P.SKIPPING: CallEndReason.CANCELLED,
}
#: The item's result, where it is not the reason.
_RESULTS: dict[AttemptPhase, str] = {
    _P.SKIPPING: "skipped",
    _P.NO_ANSWER_SKIPPED: "skipped",
    _P.ABANDONING: "abandoned",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended: the call's reason, the item's result (the reason's
    value, ``skipped`` or ``abandoned``), whether the customer answered and
    whether the call was cut by its worker's death (its record is then closed
    at the dialer's next start)."""

    reason: CallEndReason
    result: str
    answered: bool
    interrupted: bool


class Attempt:
    """One customer call of a dialing session; see the module doc.

    Besides its phase it keeps facts, not decisions: whether the customer rang
    (for the reason of a refused call), whether the customer's media is up (a
    bridge needs it), the worker's end reason and SIP code, the times of the
    answer and of the end, and which side hung up a conversation.
    """

    def __init__(self, item: CallListItem, number: str, call_id: uuid.UUID) -> None:
        self.item = item
        self.number = number
        self.call_id = call_id
        self.leg_id = str(call_id)
        self.phase = AttemptPhase.DIALING
        #: The phase the customer's leg ended in; ``None`` while it is live.
        self.ended_in: AttemptPhase | None = None
        self.rang = False
        self.customer_media = False
        self.worker_reason: str | None = None
        self.sip_code = 0
        #: ``time.monotonic()`` of the answer, for the talk time.
        self.answered_at: float | None = None
        #: Loop and wall time of the customer's end.
        self.end_loop: float | None = None
        self.end_wall: float | None = None
        self.ended_by: Leg | None = None
        #: The per-call agent leg, once rung.
        self.agent: AgentLeg | None = None
        self.lead_id: uuid.UUID | None = None
        # The driver's bookkeeping: timer tokens, and whether our hang-up of
        # the customer is out (it is sent once).
        self.ring_timer: int | None = None
        self.guard: set[int] = set()
        self.hangup_sent = False

    def __repr__(self) -> str:
        return f"Attempt({self.call_id}, {self.phase.value})"

    # ------------------------------------------------------------------ views

    @property
    def answered(self) -> bool:
        """The customer answered (the call counts as ``completed``)."""
        return self.answered_at is not None

    @property
    def bridged(self) -> bool:
        return self.phase is AttemptPhase.TALKING or self.ended_in is AttemptPhase.TALKING

    @property
    def customer_done(self) -> bool:
        """The customer's leg is over."""
        return self.phase in _OVER

    @property
    def agent_done(self) -> bool:
        """No per-call agent leg is live."""
        return self.agent is None or self.agent.ended

    @property
    def settled(self) -> bool:
        """Both legs are over: the outcome can be stored."""
        return self.customer_done and self.agent_done

    @property
    def awaits_answer(self) -> bool:
        """The customer may still answer: the ring timer matters."""
        return self.phase in _UNANSWERED or self.phase in _HANGING_UP

    def outcome(self) -> Outcome:
        """The attempt's outcome; raises :class:`InvalidState` while the
        customer's leg is live."""
        ended_in = self.ended_in
        if ended_in is None:
            raise InvalidState(f"attempt is {self.phase.value}; it has no outcome yet")
        interrupted = self.phase is AttemptPhase.INTERRUPTED
        if ended_in in _ANSWERED:
            reason = CallEndReason.COMPLETED
        elif interrupted:
            reason = CallEndReason.INTERRUPTED
        elif ended_in in _REASONS:
            reason = _REASONS[ended_in]
        else:
            reason = end_reason(self.worker_reason, self.sip_code, rang=self.rang)
        return Outcome(
            reason=reason,
            result=_RESULTS.get(ended_in, reason.value),
            answered=ended_in in _ANSWERED,
            interrupted=interrupted,
        )

    # ------------------------------------------------------------------ transitions

    def _go(self, new: AttemptPhase, why: str) -> None:
        if new not in _ALLOWED[self.phase]:
            raise InvalidState(f"attempt is {self.phase.value}; cannot {why}")
        log.info(
            "dialer.attempt.transition",
            call_id=str(self.call_id),
            old=self.phase.value,
            new=new.value,
            why=why,
        )
        self.phase = new

    def ringing(self) -> bool:
        """The customer's phone rings; ``True`` the first time (announce it)."""
        if self.rang or self.answered or self.customer_done:
            return False
        self.rang = True
        if self.phase is AttemptPhase.DIALING:
            self._go(AttemptPhase.RINGING, "ring")
        return True

    def answer(self, at: float) -> bool:
        """The customer answered at ``at`` (monotonic); ``True`` if that counts.

        An answer after our hang-up (a CANCEL crossing the 200) or a repeated one
        does not count and changes nothing.
        """
        if self.phase not in _UNANSWERED:
            return False
        self._go(AttemptPhase.ANSWERED, "answer")
        self.answered_at = at
        return True

    def bridge(self) -> None:
        """Customer and agent are bridged."""
        self._go(AttemptPhase.TALKING, "bridge")

    def ring_timeout(self) -> bool:
        """The ring timer fired; ``True`` if the customer must be hung up now."""
        match self.phase:
            case AttemptPhase.DIALING | AttemptPhase.RINGING | AttemptPhase.CANCELLING:
                self._go(AttemptPhase.NO_ANSWER, "time out")
            case AttemptPhase.SKIPPING:
                self._go(AttemptPhase.NO_ANSWER_SKIPPED, "time out")
            case _:
                return False
        return True

    def skip(self) -> None:
        """The agent skipped this number; the driver hangs the customer up.

        Raises :class:`InvalidState` once the customer's leg is over.
        """
        match self.phase:
            case AttemptPhase.DIALING | AttemptPhase.RINGING | AttemptPhase.CANCELLING:
                self._go(AttemptPhase.SKIPPING, "skip")
            case AttemptPhase.NO_ANSWER:
                self._go(AttemptPhase.NO_ANSWER_SKIPPED, "skip")
            case AttemptPhase.ENDED | AttemptPhase.INTERRUPTED:
                raise InvalidState(f"attempt is {self.phase.value}; nothing to skip")
            case _:
                # Being hung up already, or answered: an answered call is
                # completed whoever ends it.
                pass

    def cancel(self) -> None:
        """We hang the customer up (a stop, the agent gone): an unanswered call
        becomes ``cancelled``; an answered one stays ``completed``."""
        if self.phase in _UNANSWERED:
            self._go(AttemptPhase.CANCELLING, "cancel")

    def abandon(self) -> None:
        """No agent came to talk to the customer who answered (the agent's
        phone did not answer, or hung up, before the bridge)."""
        if self.phase is AttemptPhase.ANSWERED:
            self._go(AttemptPhase.ABANDONING, "abandon")
        elif self.phase is AttemptPhase.ABANDONING:
            pass
        elif self.phase is AttemptPhase.ENDED and self.ended_in in (
            AttemptPhase.ANSWERED,
            AttemptPhase.ABANDONING,
        ):
            # The customer hung up while the agent's phone rang.
            log.info("dialer.attempt.abandoned_after_end", call_id=str(self.call_id))
            self.ended_in = AttemptPhase.ABANDONING
        else:
            raise InvalidState(f"attempt is {self.phase.value}; cannot abandon")

    def customer_ended(
        self, *, loop_at: float, wall_at: float, reason: str | None = None, sip_code: int = 0
    ) -> bool:
        """The customer's leg is over; ``False`` if it already was."""
        if self.customer_done:
            return False
        self.ended_in = self.phase
        self.end_loop, self.end_wall = loop_at, wall_at
        if reason is not None:
            self.worker_reason, self.sip_code = reason, sip_code
        self._go(AttemptPhase.ENDED, "end")
        return True

    def interrupt(self, *, loop_at: float, wall_at: float) -> None:
        """The worker carrying the call died: both legs are gone."""
        if self.phase is AttemptPhase.INTERRUPTED:
            return
        if self.ended_in is None:
            self.ended_in = self.phase
            self.end_loop, self.end_wall = loop_at, wall_at
        self._go(AttemptPhase.INTERRUPTED, "lose its worker")
        if self.agent is not None and not self.agent.ended:
            self.agent.end("worker exited")
