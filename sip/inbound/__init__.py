"""Inbound calls: a reception line rings the agents, one worker carries the call.

Every reception line is registered by its own (home) worker *and* by every agent
worker (:func:`sip.pool.plan_workers`), so the PBX forks a call to a reception
line to all of them: each worker receives a *branch* of the same SIP dialog
(same SIP Call-ID), answers it ``180`` and hands it to the pool, which hands it to
:class:`InboundService`. The service groups the branches by SIP Call-ID and, for
each call, in one task (see ``docs/sip-pool.md``):

1. at the first branch, looks the caller up (creating a lead for an unknown
   number when ``leads.from_incoming_calls``), publishes ``CallCreated`` and
   ``CallRinging(leg="customer")`` with the caller's card, then writes the call
   record under the id just published;
2. picks the agent to offer the call to from :class:`Presence` (available, not
   on a call, ordered by ``inbound.strategy``) and keeps the branch on that
   agent's own worker (else the reception line's home worker, else any worker
   with a free slot); every other branch is rejected at once with a 4xx, so the
   PBX keeps the chosen branch ringing;
3. from the chosen worker, rings the agent's phone (``CallDialing``,
   ``CallRinging(leg="agent")`` with the card); on no answer within
   ``inbound.agent_ring_seconds``, a rejection or busy, offers the call to the
   next agent;
4. when an agent answers, answers the caller, bridges the two legs once both
   have audio and records the caller's leg (``CallAnswered``, ``CallBridged``);
   the record gets the answering agent, and a lead created by this call gets
   the agent as its owner;
5. with no agent (or none answering), keeps the caller ringing, offers again
   whenever presence changes (:meth:`InboundService.poke`), and after
   ``inbound.no_agent_timeout`` rejects the call with ``inbound.reject_code`` or
   forwards it to ``inbound.overflow_number``;
6. ends with ``CallEnded`` (``completed``; or a missed call: ``no_answer``,
   ``cancelled`` when the caller hung up first, with ``agent`` None) and, for a
   recorded call, ``RecordingReady``.

:class:`Presence` is what the service reads of the agents' presence; the one
presence model, :class:`bus.presence.PresenceBook`, implements it (re-exported here).
The call's phase is a pure state machine (:class:`~sip.inbound.state.InboundCall`);
the service does the I/O and feeds it. The steps from the bridge on are
:class:`sip.conversation.Conversation`'s.
"""

from sip.inbound.branches import losing_branch_code
from sip.inbound.card import caller_card
from sip.inbound.presence import Presence, PresenceBook, Strategy
from sip.inbound.service import InboundService
from sip.inbound.session import ActiveInboundCall, InboundStats
from sip.inbound.state import InboundCall, InboundPhase, Outcome

__all__ = [
    "ActiveInboundCall",
    "InboundCall",
    "InboundPhase",
    "InboundService",
    "InboundStats",
    "Outcome",
    "Presence",
    "PresenceBook",
    "Strategy",
    "caller_card",
    "losing_branch_code",
]
