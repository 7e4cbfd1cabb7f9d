"""How an inbound call's task reacts: to a request, a timer, an event of one of its legs.

:class:`CallEvents` adds to :class:`~sip.inbound._flow.CallFlow` the dispatch of
the items of a call's queue; each handler moves the call on through the flow's
steps and its :class:`~sip.inbound.state.InboundCall`."""

from __future__ import annotations

import structlog

from bus import CallDtmf
from crm_store import CallEndReason
from sip.control import transfer_outcome
from sip.exceptions import CallNotReady
from sip.inbound._flow import CallFlow
from sip.inbound.session import (
    AnswerRequest,
    Arrived,
    HangupRequest,
    Item,
    Session,
    TimerItem,
    Wake,
)
from sip.inbound.state import InboundPhase, Outcome
from sip.legs import (
    Answered,
    Digit,
    Ended,
    Failed,
    Gone,
    LegEvent,
    MediaUp,
    Recorded,
    RecordingLost,
    Ringing,
    Transfer,
)

__all__ = ["CallEvents"]

log = structlog.get_logger(__name__)


class CallEvents(CallFlow):
    """The handlers of a call's queue items (see the module docstring)."""

    # ------------------------------------------------------------------ events

    async def _handle(self, s: Session, item: Item) -> None:
        if isinstance(item, AnswerRequest):
            await self._answer_request(s, item)
        elif isinstance(item, HangupRequest):
            if s.state.hangup_requested():
                self._ended_by(s, s.state.outcome)
        elif isinstance(item, Arrived):
            await self._arrived(s, item.branch)
        elif isinstance(item, Wake):
            if s.phase is InboundPhase.NEW:
                await self._maybe_decide(s)
            elif s.phase is InboundPhase.WAITING and s.pending is not None and s.chosen is not None:
                await self._offer(s)
        elif isinstance(item, TimerItem):
            await self._on_timer(s, item)
        else:
            await self._on_leg_event(s, item.leg, item.event)
        self._check_ended(s)

    async def _answer_request(self, s: Session, req: AnswerRequest) -> None:
        def refuse(why: str) -> None:
            if not req.done.done():
                req.done.set_exception(CallNotReady(why))

        agent = s.agent if s.other_kind == "agent" else None
        if s.outcome is not None or s.phase in (InboundPhase.ENDING, InboundPhase.ENDED):
            refuse("the call has ended")
        elif s.connected_agent is not None:
            if s.connected_agent in req.agents:
                req.done.set_result(s.connected_agent)  # answered already, on the phone
            else:
                refuse("the call was answered by another agent")
        elif s.phase is not InboundPhase.OFFERING or agent is None or s.other_leg is None:
            refuse("the call is not ringing at an agent's phone")
        elif agent.key not in req.agents:
            refuse("the call rings at another agent's phone")
        elif s.other_answered or s.reoffer is not None:
            req.done.set_result(agent.key)  # being answered already
        else:
            log.info("inbound.answer_from_widget", agent=agent.key)
            s.reoffer = agent
            s.answer_waiters.append(req.done)
            await self._hang_up(s, s.other_leg)

    async def _on_timer(self, s: Session, timer: TimerItem) -> None:
        s.timers.pop(timer.kind, None)
        if timer.kind == "move":
            await self._move_lost(s)
        elif timer.kind == "deadline":
            await self._no_agent(s)
        elif timer.serial == s.serial and s.other_leg is not None and not s.other_answered:
            # The agent's (or the overflow's) phone rang out.
            log.info("inbound.ring_timeout", leg_kind=timer.kind)
            await self._hang_up(s, s.other_leg)

    async def _on_leg_event(self, s: Session, leg: str, event: LegEvent) -> None:
        if leg == s.other_leg:
            await self._on_other_event(s, leg, event)
        elif s.chosen is not None and leg == s.chosen.leg:
            await self._on_customer_event(s, event)
        elif leg in s.branches:
            # A branch before the choice: only its end matters.
            if isinstance(event, Gone | Ended):
                del s.branches[leg]
                if not s.branches and s.phase is InboundPhase.NEW:
                    ended = event if isinstance(event, Ended) else None
                    reason = ended.reason if ended is not None else None
                    self._decide_outcome(
                        s,
                        Outcome(
                            CallEndReason.INTERRUPTED if ended is None else CallEndReason.CANCELLED,
                            ended.sip_code if ended is not None else 0,
                            "customer",
                        ),
                    )
                    log.info("inbound.gone_before_choice", end_reason=reason)
                else:
                    await self._maybe_decide(s)
        elif isinstance(event, Recorded) and s.conversation is not None:
            await s.conversation.on_recording(event)

    async def _on_customer_event(self, s: Session, event: LegEvent) -> None:
        if isinstance(event, Gone):
            self._interrupted(s)
        elif isinstance(event, Recorded):
            assert s.conversation is not None
            await s.conversation.on_recording(event)
        elif isinstance(event, MediaUp):
            s.media.add(s.customer_leg)
            await self._maybe_bridge(s)
        elif isinstance(event, Digit):
            assert s.call_id is not None
            self._bus.publish(
                CallDtmf(
                    call_id=s.call_id,
                    agent=s.connected_agent,
                    leg="customer",
                    digit=event.digit,
                    direction="received",
                )
            )
        elif isinstance(event, Transfer):
            # A blind transfer (CallControl) of the caller: its outcome; the caller's
            # leg then ends "transferred" after a success.
            if event.final:
                assert s.call_id is not None
                self._bus.publish(transfer_outcome(s.call_id, s.connected_agent, event))
        elif isinstance(event, Failed):
            log.warning("inbound.leg_error", leg_kind="customer", code=event.code)
        elif isinstance(event, RecordingLost):
            log.warning("inbound.leg_error", leg_kind="customer", code="recording_failed")
            assert s.conversation is not None
            await s.conversation.on_recording(event)
        elif isinstance(event, Answered):
            await self._customer_answered(s)
        elif isinstance(event, Ended):
            s.customer_alive = False
            if s.state.caller_left(transferred=event.transferred, sip_code=event.sip_code):
                self._ended_by(s, s.state.outcome)

    async def _on_other_event(self, s: Session, leg: str, event: LegEvent) -> None:
        kind = s.other_kind
        if isinstance(event, Gone):
            self._interrupted(s)
        elif isinstance(event, MediaUp):
            s.media.add(leg)
            await self._maybe_bridge(s)
        elif isinstance(event, Failed | RecordingLost):
            code = event.code if isinstance(event, Failed) else "recording_failed"
            log.warning("inbound.leg_error", leg_kind=kind, code=code)
        elif isinstance(event, Ringing):
            if not s.other_rang and kind == "agent" and s.outcome is None:
                s.other_rang = True
                self._publish_agent_ringing(s)
        elif isinstance(event, Answered):
            await self._other_answered(s, leg)
        elif isinstance(event, Ended):
            s.other_alive = False
            self._disarm(s, "forward" if kind == "overflow" else "agent")
            if s.other_answered:
                if s.outcome is None:
                    self._decide_outcome(s, Outcome(CallEndReason.COMPLETED, event.sip_code, kind))
                return
            log.info(
                "inbound.leg_not_answered",
                leg_kind=kind,
                end_reason=event.reason,
                sip_code=event.sip_code,
            )
            s.other_leg = None
            s.media.discard(leg)
            if kind == "agent":
                again, s.reoffer = s.reoffer, None
                s.agent = None
                if again is not None and s.outcome is None and s.phase is InboundPhase.OFFERING:
                    # Answered from the widget: the same agent (still held in
                    # presence) is rung again, asked to answer by itself.
                    s.state.to(InboundPhase.WAITING)
                    s.pending = again
                    await self._offer(s, auto_answer=True)
                    return
                self._settle_answers(s, None, "the call is no longer offered to you")
                self._release_agent(s)
                if s.outcome is None and s.phase is InboundPhase.OFFERING:
                    s.state.to(InboundPhase.WAITING)
                    await self._next_offer(s)
                elif s.outcome is None and s.phase is InboundPhase.FORWARDING:
                    await self._forward(s)  # the no-agent deadline hung the agent up
            elif s.outcome is None:
                # The overflow number did not answer: the call is missed.
                self._miss(s)
