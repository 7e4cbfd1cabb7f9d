"""The agent's leg of a dialing session: the one way to ring it, and its state.

An agent leg is a call from the agent's line to the agent's own phone, which the
customer's leg is bridged to. With ``dialer.agent_leg = "persistent"`` the
session rings it once and keeps it between customers; with ``"per_call"`` it is
rung each time a customer answers. Both kinds are placed by :func:`ring_agent`
and followed by an :class:`AgentLeg`, a pure state machine (no I/O) that logs
each transition and raises :class:`~dialer.exceptions.InvalidState` on a wrong
one. Phases::

    CALLING ──answered──> ANSWERED ──media──> CONNECTED
    CALLING ──media──> EARLY_MEDIA ──answered──> CONNECTED
    any live phase ──end──> ENDED

Media may come again on a connected leg (a re-INVITE): that is no transition.
"""

from __future__ import annotations

from enum import StrEnum

import structlog

from config import AgentConfig, Config
from sip.legs import LegListener
from sip.pool import SipPool, pbx_uri

from .exceptions import InvalidState

__all__ = ["AgentLeg", "AgentLegPhase", "ring_agent"]

log = structlog.get_logger(__name__)


class AgentLegPhase(StrEnum):
    """Where an agent leg stands."""

    #: The INVITE to the agent's phone is out.
    CALLING = "calling"
    #: Media flows but the phone has not answered (early media).
    EARLY_MEDIA = "early_media"
    #: Answered, media not active yet.
    ANSWERED = "answered"
    #: Answered with media: ready to be bridged.
    CONNECTED = "connected"
    ENDED = "ended"


_ALLOWED: dict[AgentLegPhase, frozenset[AgentLegPhase]] = {
    AgentLegPhase.CALLING: frozenset(
        {AgentLegPhase.EARLY_MEDIA, AgentLegPhase.ANSWERED, AgentLegPhase.ENDED}
    ),
    AgentLegPhase.EARLY_MEDIA: frozenset({AgentLegPhase.CONNECTED, AgentLegPhase.ENDED}),
    AgentLegPhase.ANSWERED: frozenset({AgentLegPhase.CONNECTED, AgentLegPhase.ENDED}),
    AgentLegPhase.CONNECTED: frozenset({AgentLegPhase.ENDED}),
    AgentLegPhase.ENDED: frozenset(),
}


class AgentLeg:
    """The state of one agent leg, told what its worker reported.

    ``timer`` is the driver's token for the answer timeout, kept with the leg
    it belongs to.
    """

    def __init__(self, leg_id: str) -> None:
        self.leg_id = leg_id
        self.phase = AgentLegPhase.CALLING
        self.timer: int | None = None

    def __repr__(self) -> str:
        return f"AgentLeg({self.leg_id}, {self.phase.value})"

    @property
    def up(self) -> bool:
        """The agent answered (and has not hung up)."""
        return self.phase in (AgentLegPhase.ANSWERED, AgentLegPhase.CONNECTED)

    @property
    def has_media(self) -> bool:
        """Media flows to the agent's phone: the leg can be bridged."""
        return self.phase in (AgentLegPhase.EARLY_MEDIA, AgentLegPhase.CONNECTED)

    @property
    def connected(self) -> bool:
        return self.phase is AgentLegPhase.CONNECTED

    @property
    def ended(self) -> bool:
        return self.phase is AgentLegPhase.ENDED

    def _go(self, new: AgentLegPhase, why: str) -> None:
        if new not in _ALLOWED[self.phase]:
            raise InvalidState(f"agent leg is {self.phase.value}; cannot {why}")
        log.info(
            "dialer.agent_leg.transition",
            leg_id=self.leg_id,
            old=self.phase.value,
            new=new.value,
            why=why,
        )
        self.phase = new

    def answered(self) -> None:
        """The agent's phone answered; a repeated answer changes nothing."""
        if self.up:
            return
        if self.phase is AgentLegPhase.EARLY_MEDIA:
            self._go(AgentLegPhase.CONNECTED, "answer")
        else:
            self._go(AgentLegPhase.ANSWERED, "answer")

    def media(self) -> None:
        """Media became active; again on a leg that has it changes nothing."""
        if self.has_media:
            return
        if self.phase is AgentLegPhase.ANSWERED:
            self._go(AgentLegPhase.CONNECTED, "start media")
        else:
            self._go(AgentLegPhase.EARLY_MEDIA, "start media")

    def end(self, why: str) -> None:
        """The leg is over (``why``: its end, its worker's exit, an unanswered
        hang-up); raises :class:`InvalidState` if it already was."""
        self._go(AgentLegPhase.ENDED, f"end ({why})")


async def ring_agent(
    pool: SipPool,
    config: Config,
    agent: AgentConfig,
    *,
    worker_id: str,
    leg_id: str,
    listener: LegListener,
) -> AgentLeg:
    """Ring ``agent``'s phone from their own line, as leg ``leg_id``.

    Returns the new leg once the worker has sent the INVITE; its events go to
    ``listener``. Raises what :meth:`sip.pool.SipPool.originate` raises when the
    leg cannot be placed. Cancellation stops the wait; the leg may still have
    been placed.
    """
    await pool.originate(
        worker_id=worker_id,
        line=agent.line,
        leg_id=leg_id,
        to_uri=pbx_uri(config, agent.extension),
        listener=listener,
    )
    log.info("dialer.agent_leg.ringing", leg_id=leg_id)
    return AgentLeg(leg_id)
