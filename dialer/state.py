"""The state machine of one agent's dialing session; pure (no I/O, no clock).

:class:`SessionState` is told what happened (an agent's request, the customer
answering, a call ending) and moves between :class:`Phase` values, logging every
transition and raising :class:`~dialer.exceptions.InvalidState` for one its phase
does not allow. The driver in :mod:`dialer.session` does the I/O the new phase
calls for.

Pause and stop requests never cut a conversation: made while a call is up, a
pause waits for the call to end; a stop hangs up a customer still ringing
(``STOPPING``) and waits for the end of a customer already talking. Phases::

    STARTING ──> CONNECTING_AGENT ──> READY            (persistent agent leg)
    STARTING ──> READY                                 (per-call agent leg)
    READY ──prepare──> (GAP | READY) ──dial──> DIALING
    DIALING ──answered──> TALKING                      (persistent)
    DIALING ──answered──> AGENT_CALLING ──agent_joined──> TALKING   (per call)
    DIALING ──unanswered──> GAP ──dial──> DIALING ...  (the gap is exact)
    TALKING ──call_ended──> WRAP_UP ──> READY
    READY ──nothing due yet──> WAITING ──> READY
    READY ──list exhausted──> FINISHED
    most phases ──pause──> PAUSED ──resume──> READY | CONNECTING_AGENT
    DIALING | AGENT_CALLING ──stop──> STOPPING ──call ended──> STOPPED
    a call phase ──its worker died──> PAUSED (STOPPED if a stop was requested)
    any other live phase ──stop──> STOPPED
"""

from __future__ import annotations

from enum import StrEnum

import structlog

from .exceptions import InvalidState

__all__ = ["CALL_PHASES", "Phase", "SessionState"]

log = structlog.get_logger(__name__)


class Phase(StrEnum):
    """Where a dialing session stands."""

    STARTING = "starting"
    #: Ringing the agent's phone for the session's persistent leg.
    CONNECTING_AGENT = "connecting_agent"
    #: Between items, about to claim (no gap to wait).
    READY = "ready"
    #: A customer's INVITE is out; ringing.
    DIALING = "dialing"
    #: Per-call agent leg: the customer answered, the agent's phone is ringing.
    AGENT_CALLING = "agent_calling"
    #: Agent and customer are connected.
    TALKING = "talking"
    #: After a conversation, before the next item.
    WRAP_UP = "wrap_up"
    #: After an unanswered call, waiting exactly the gap before the next INVITE.
    GAP = "gap"
    #: No item is due now; some will be later (retries, calling hours).
    WAITING = "waiting"
    PAUSED = "paused"
    #: Stop requested while a customer was ringing: hanging it up.
    STOPPING = "stopping"
    STOPPED = "stopped"
    FINISHED = "finished"


#: Phases with a customer call in progress.
CALL_PHASES = frozenset({Phase.DIALING, Phase.AGENT_CALLING, Phase.TALKING, Phase.STOPPING})
_FINAL = frozenset({Phase.STOPPED, Phase.FINISHED})

_ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.STARTING: frozenset({Phase.CONNECTING_AGENT, Phase.READY, Phase.PAUSED, Phase.STOPPED}),
    Phase.CONNECTING_AGENT: frozenset({Phase.READY, Phase.PAUSED, Phase.STOPPED}),
    Phase.READY: frozenset(
        {Phase.DIALING, Phase.WAITING, Phase.FINISHED, Phase.PAUSED, Phase.STOPPED}
    ),
    Phase.DIALING: frozenset(
        {Phase.TALKING, Phase.AGENT_CALLING, Phase.GAP, Phase.STOPPING, Phase.PAUSED}
    ),
    Phase.AGENT_CALLING: frozenset({Phase.TALKING, Phase.PAUSED, Phase.STOPPING}),
    Phase.TALKING: frozenset({Phase.WRAP_UP, Phase.PAUSED, Phase.STOPPED}),
    Phase.WRAP_UP: frozenset(
        {Phase.READY, Phase.CONNECTING_AGENT, Phase.PAUSED, Phase.STOPPED, Phase.FINISHED}
    ),
    Phase.GAP: frozenset(
        {Phase.DIALING, Phase.FINISHED, Phase.WAITING, Phase.PAUSED, Phase.STOPPED}
    ),
    Phase.WAITING: frozenset({Phase.READY, Phase.PAUSED, Phase.STOPPED}),
    Phase.PAUSED: frozenset({Phase.READY, Phase.CONNECTING_AGENT, Phase.STOPPED}),
    Phase.STOPPING: frozenset({Phase.STOPPED}),
    Phase.STOPPED: frozenset(),
    Phase.FINISHED: frozenset(),
}


class SessionState:
    """State of one agent's dialing session.

    ``persistent`` says whether the agent's phone stays connected for the whole
    session (``dialer.agent_leg = "persistent"``) or is rung per answered call.
    """

    def __init__(self, session_id: str, *, persistent: bool) -> None:
        self.session_id = session_id
        self.persistent = persistent
        self.phase = Phase.STARTING
        self.pause_requested: str | None = None
        self.stop_requested: str | None = None
        self.reason: str | None = None

    def __repr__(self) -> str:
        return f"SessionState({self.session_id}, {self.phase.value})"

    @property
    def done(self) -> bool:
        return self.phase in _FINAL

    @property
    def in_call(self) -> bool:
        return self.phase in CALL_PHASES

    # ------------------------------------------------------------------ transitions

    def _go(self, new: Phase, why: str) -> None:
        if new not in _ALLOWED[self.phase]:
            raise InvalidState(f"dialing session is {self.phase.value}; cannot {why}")
        log.info(
            "dialer.transition",
            session_id=self.session_id,
            old=self.phase.value,
            new=new.value,
            why=why,
        )
        self.phase = new

    def begin(self, *, paused: bool = False) -> None:
        """Leave ``STARTING``: paused (a session restored paused), or to work."""
        if paused:
            self.reason = "restored"
            self._go(Phase.PAUSED, "start paused")
        elif self.persistent:
            self._go(Phase.CONNECTING_AGENT, "connect the agent")
        else:
            self._go(Phase.READY, "start")

    def agent_connected(self) -> None:
        self._go(Phase.READY, "continue with the agent connected")

    def dial(self) -> None:
        """The next customer's INVITE is going out (from ``READY`` or ``GAP``)."""
        self._go(Phase.DIALING, "dial")

    def waiting(self) -> None:
        """Nothing is due now; wait for the next retry or calling hours."""
        self._go(Phase.WAITING, "wait for due numbers")

    def wake(self) -> None:
        self._go(Phase.READY, "look for due numbers again")

    def exhausted(self) -> None:
        """The list has nothing left for this session."""
        self._go(Phase.FINISHED, "finish")

    def answered(self) -> None:
        """The customer answered."""
        self._go(Phase.TALKING if self.persistent else Phase.AGENT_CALLING, "connect a customer")

    def agent_joined(self) -> None:
        """Per-call agent leg: the agent answered and is bridged."""
        self._go(Phase.TALKING, "join the agent")

    def call_ended(self, *, answered: bool) -> Phase:
        """The customer's call is over; returns the phase it leads to.

        A requested stop or pause now applies; otherwise an unanswered call leads
        to the gap and a conversation to the wrap-up.
        """
        if self.phase is Phase.STOPPING or self.stop_requested is not None:
            self.reason = self.stop_requested or self.reason
            self._go(Phase.STOPPED, "stop after the call")
        elif self.pause_requested is not None:
            self.reason, self.pause_requested = self.pause_requested, None
            self._go(Phase.PAUSED, "pause after the call")
        elif answered and self.phase in (Phase.TALKING, Phase.AGENT_CALLING):
            self._go(Phase.WRAP_UP, "wrap up")
        else:
            self._go(Phase.GAP, "wait the gap")
        return self.phase

    def wrapped_up(self, *, reconnect: bool = False) -> None:
        """Wrap-up over: next item (reconnecting the agent's leg if it dropped)."""
        self._go(Phase.CONNECTING_AGENT if reconnect else Phase.READY, "go on")

    # ------------------------------------------------------------------ requests

    def pause(self, reason: str) -> bool:
        """Pause; ``True`` if it applies now, ``False`` if after the current call."""
        if self.phase is Phase.PAUSED:
            return False
        if self.in_call:
            if self.phase is Phase.STOPPING:
                raise InvalidState("dialing session is stopping; cannot pause")
            self.pause_requested = reason
            return False
        self.reason = reason
        self._go(Phase.PAUSED, "pause")
        return True

    def resume(self) -> None:
        """Resume a paused session, or withdraw a pause requested during a call."""
        if self.phase is Phase.PAUSED:
            self.reason = None
            self._go(
                Phase.CONNECTING_AGENT if self.persistent else Phase.READY,
                "resume",
            )
        elif self.pause_requested is not None:
            self.pause_requested = None
        else:
            raise InvalidState(f"dialing session is {self.phase.value}; cannot resume")

    def stop(self, reason: str) -> bool:
        """Stop; ``True`` if stopped now. A ringing customer makes it ``STOPPING``
        (the driver hangs the call up); a conversation is let finish."""
        if self.done:
            raise InvalidState(f"dialing session is {self.phase.value}; cannot stop")
        if self.phase in (Phase.DIALING, Phase.AGENT_CALLING):
            self.stop_requested = reason
            self._go(Phase.STOPPING, "stop")
            return False
        if self.phase in (Phase.TALKING, Phase.STOPPING):
            self.stop_requested = reason
            return False
        self.reason = reason
        self._go(Phase.STOPPED, "stop")
        return True

    def interrupt(self, reason: str) -> None:
        """The call under the session vanished (its worker died): pause, or stop
        if a stop was requested. Raises :class:`InvalidState` without a call."""
        if not self.in_call:
            raise InvalidState(f"dialing session is {self.phase.value}; no call to interrupt")
        log.warning("dialer.interrupted", session_id=self.session_id, reason=reason)
        if self.phase is Phase.STOPPING or self.stop_requested is not None:
            self._go(Phase.STOPPED, "stop after losing the call")
        else:
            self._go(Phase.PAUSED, "pause after losing the call")
        self.reason = reason
        self.pause_requested = None

    @property
    def stored_state(self) -> str:
        """What the store keeps: ``running``, ``paused``, ``stopped`` or ``finished``."""
        if self.phase is Phase.PAUSED:
            return "paused"
        if self.phase is Phase.STOPPED:
            return "stopped"
        if self.phase is Phase.FINISHED:
            return "finished"
        return "running"
