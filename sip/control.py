"""Control of live calls: hold, DTMF, blind transfer and supervisor legs.

The services that own calls (click-to-call, inbound) know which legs make up a
call; :class:`CallControl` asks them through the :class:`LegDirectory` protocol
and commands the worker that holds the legs. Every action stays inside that
worker: a supervisor's phone is called *from the call's worker*, into one of its
spare call slots, and connected there (listen, whisper or barge).

What each action publishes:

- ``hold``/``resume``: ``call.held``;
- ``dtmf``: one ``call.dtmf`` (``direction="sent"``) per digit;
- ``transfer_blind``: ``call.transferred`` ``started``; the owning service
  publishes ``completed``/``failed`` from the worker's transfer progress, and
  the call then ends ``transferred``;
- ``transfer_attended`` (consult, then ``transfer_complete`` or
  ``transfer_cancel``): ``call.transferred`` ``started``, ``consulting`` once the
  colleague answered and talks with the agent (the customer, detached, hears
  silence), then ``completed`` (the customer talks with the colleague; the owning
  service carries on with the colleague's leg in place of the agent's, and the
  call ends when one of them hangs up) or ``failed`` (no answer, cancelled, the
  colleague hung up: the customer is connected back to the agent);
- ``supervise``: ``call.supervised`` with the mode once the supervisor's phone
  answered and is connected, again on a mode change, and with ``mode`` None
  when the supervisor leg ends (hung up by the supervisor, or by us when the call
  ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import structlog

from bus import (
    Bus,
    CallDtmf,
    CallEnded,
    CallHeld,
    CallSupervised,
    CallTransferred,
    Subscription,
)
from config import AgentConfig, Config
from config.outbound import OutboundPolicy, is_extension
from crm_store import InvalidPhone, normalize_phone
from sip.exceptions import (
    CallForbidden,
    CallNotReady,
    InvalidNumber,
    PoolClosed,
    UnknownCall,
    WorkerCommandError,
)
from sip.legs import GONE as _GONE
from sip.legs import CallLegs, Ended, Gone, LegEvent, MediaUp, Transfer
from sip.pool import SipPool, pbx_uri

__all__ = ["CallControl", "InboundLegs", "LegDirectory", "SupervisionMode"]

log = structlog.get_logger(__name__)

SupervisionMode = Literal["listen", "whisper", "barge"]


def transfer_outcome(call_id: uuid.UUID, agent: str | None, status: Transfer) -> CallTransferred:
    """The ``call.transferred`` ``completed``/``failed`` that the service owning a
    call publishes from the leg's final :class:`~sip.legs.Transfer` report."""
    ok = status.succeeded
    return CallTransferred(
        call_id=call_id,
        agent=agent,
        kind="blind",
        target=status.target,
        state="completed" if ok else "failed",
        reason=None if ok else f"{status.code} {status.reason}",
    )


class LegDirectory(Protocol):
    """A service that owns calls and can say where one is."""

    def legs(self, call_id: uuid.UUID) -> CallLegs | None:
        """The legs of live call ``call_id``, or None if this service does not hold it."""
        ...

    def hand_over(self, call_id: uuid.UUID, new_leg: str) -> str:
        """Carry on call ``call_id`` with ``new_leg`` (answered, connected to the
        customer, on the call's worker) in place of its agent leg; return the
        replaced leg, whose events the service ignores from now on (the caller
        hangs it up). Raises :class:`UnknownCall`."""
        ...


class InboundLegs:
    """:class:`LegDirectory` over :class:`sip.inbound.InboundService`.

    The inbound service says where its calls are itself (the same
    :class:`~sip.legs.CallLegs` as click-to-call); this wrapper stays for the
    callers that build it.
    """

    def __init__(self, inbound: LegDirectory, pool: SipPool) -> None:
        self._inbound = inbound
        self._pool = pool

    def legs(self, call_id: uuid.UUID) -> CallLegs | None:
        return self._inbound.legs(call_id)

    def hand_over(self, call_id: uuid.UUID, new_leg: str) -> str:
        return self._inbound.hand_over(call_id, new_leg)


@dataclass(eq=False, kw_only=True)
class _ExtraLeg:
    """A leg placed into a call's worker besides its own: a colleague's phone
    consulted for a transfer, a supervisor's phone."""

    call: CallLegs
    leg_id: str
    connected: bool = False
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def track(self, event: LegEvent) -> bool:
        """Note an event of the leg; True when it is the leg's end (which also
        releases a wait for the answer)."""
        if isinstance(event, MediaUp):
            self.answered.set()
        elif isinstance(event, Gone | Ended):
            self.ended.set()
            self.answered.set()
            return True
        return False


@dataclass(eq=False, kw_only=True)
class _Consult(_ExtraLeg):
    """An attended transfer in progress."""

    directory: LegDirectory
    target: str


@dataclass(eq=False, kw_only=True)
class _Supervision(_ExtraLeg):
    supervisor: str
    mode: SupervisionMode


class CallControl:
    """Hold, DTMF, blind transfer and supervision of the calls of ``directories``."""

    def __init__(
        self,
        pool: SipPool,
        *,
        config: Config,
        bus: Bus,
        directories: Sequence[LegDirectory],
        supervisor_timeout: float = 30.0,
        consult_timeout: float = 30.0,
    ) -> None:
        self._pool = pool
        self._config = config
        self._bus = bus
        self._directories = list(directories)
        self._supervisor_timeout = supervisor_timeout
        self._consult_timeout = consult_timeout
        self._policy = OutboundPolicy.from_config(config)
        self._supervisions: dict[uuid.UUID, _Supervision] = {}
        self._consults: dict[uuid.UUID, _Consult] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Watch the bus for ended calls, to hang their supervisor legs up."""
        if self._watcher is None:
            sub = self._bus.subscribe("call-control", types={CallEnded.TYPE})
            self._watcher = asyncio.create_task(self._watch(sub), name="call-control")

    async def aclose(self) -> None:
        """Hang up every supervisor and consultation leg and stop watching. Idempotent."""
        for leg_id in [c.leg_id for c in self._consults.values()] + [
            sup.leg_id for sup in self._supervisions.values()
        ]:
            with contextlib.suppress(*_GONE, PoolClosed):
                await self._pool.hangup(leg_id)
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def __aenter__(self) -> CallControl:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def legs(self, call_id: uuid.UUID) -> CallLegs:
        """Where live call ``call_id`` is; :class:`UnknownCall` if nobody holds it."""
        return self._find(call_id)[0]

    def _find(self, call_id: uuid.UUID) -> tuple[CallLegs, LegDirectory]:
        for directory in self._directories:
            found = directory.legs(call_id)
            if found is not None:
                return found, directory
        raise UnknownCall(f"no call {call_id} in progress")

    # ------------------------------------------------------------------ actions

    async def hold(self, call_id: uuid.UUID) -> None:
        legs = self.legs(call_id)
        await self._pool.hold(legs.customer_leg)
        self._bus.publish(CallHeld(call_id=call_id, agent=legs.agent, held=True))

    async def resume(self, call_id: uuid.UUID) -> None:
        legs = self.legs(call_id)
        await self._pool.resume(legs.customer_leg)
        self._bus.publish(CallHeld(call_id=call_id, agent=legs.agent, held=False))

    async def dtmf(self, call_id: uuid.UUID, digits: str) -> None:
        legs = self.legs(call_id)
        await self._pool.send_dtmf(legs.customer_leg, digits)
        for digit in digits:
            self._bus.publish(
                CallDtmf(
                    call_id=call_id,
                    agent=legs.agent,
                    leg="customer",
                    digit=digit,
                    direction="sent",
                )
            )

    async def transfer_blind(self, call_id: uuid.UUID, to: str) -> None:
        """Send the customer a REFER to ``to`` (an extension or a phone number).

        Raises :class:`UnknownCall`, :class:`InvalidNumber`, or :class:`CallForbidden`
        when the outbound policy refuses ``to`` for the call's agent (nothing is
        sent or published then).
        """
        legs = self.legs(call_id)
        target = self._target(to, legs.agent)
        self._bus.publish(
            CallTransferred(
                call_id=call_id, agent=legs.agent, kind="blind", target=target, state="started"
            )
        )
        try:
            await self._pool.transfer_blind(legs.customer_leg, pbx_uri(self._config, target))
        except WorkerCommandError as exc:
            self._bus.publish(
                CallTransferred(
                    call_id=call_id,
                    agent=legs.agent,
                    kind="blind",
                    target=target,
                    state="failed",
                    reason=exc.code,
                )
            )
            raise

    async def transfer_attended(self, call_id: uuid.UUID, to: str) -> None:
        """Consult ``to`` (an extension or a number) before transferring the customer.

        The colleague is called from the call's worker; once they answer, the agent
        talks with them and the customer, detached, hears silence
        (``call.transferred`` ``consulting``). Returns then; finish with
        :meth:`transfer_complete` or :meth:`transfer_cancel`. Raises
        :class:`UnknownCall`, :class:`CallNotReady` (a transfer is already under way,
        or no agent leg), :class:`InvalidNumber`, :class:`CallForbidden` (the outbound
        policy refuses ``to``; nothing is dialed or published),
        :class:`~sip.exceptions.NoCapacity` (no spare slot), or
        ``TimeoutError`` / :class:`CallNotReady` when the colleague does not answer
        (the customer is then back with the agent).
        """
        legs, directory = self._find(call_id)
        if call_id in self._consults:
            raise CallNotReady("a transfer of this call is already under way")
        if legs.agent_leg is None:
            raise CallNotReady("the call has no agent leg to consult from")
        target = self._target(to, legs.agent)
        consult = _Consult(call=legs, directory=directory, target=target, leg_id=f"{call_id}-xfer")
        self._consults[call_id] = consult
        self._publish_transfer(consult, "started")
        try:
            await self._pool.originate(
                worker_id=legs.worker_id,
                line=legs.line,
                leg_id=consult.leg_id,
                to_uri=pbx_uri(self._config, target),
                listener=lambda event: self._on_consult_event(consult, event),
            )
            async with asyncio.timeout(self._consult_timeout):
                await consult.answered.wait()
            if consult.ended.is_set():
                raise CallNotReady(f"{target} did not answer")
            # Agent with colleague; the customer's bridge to the agent goes with it.
            await self._pool.transfer_attended(legs.agent_leg, consult.leg_id)
        except BaseException as exc:
            # The agent was still with the customer: only the colleague's leg goes.
            self._consults.pop(call_id, None)
            with contextlib.suppress(*_GONE, PoolClosed):
                await self._pool.hangup(consult.leg_id)
            reason = "no_answer" if isinstance(exc, TimeoutError | CallNotReady) else "error"
            self._publish_transfer(consult, "failed", reason)
            raise
        consult.connected = True
        log.info("call_control.consulting", call_id=str(call_id), target=target)
        self._publish_transfer(consult, "consulting")

    async def transfer_complete(self, call_id: uuid.UUID) -> None:
        """Connect the customer with the consulted colleague; the agent's leg ends."""
        consult = self._consults.get(call_id)
        if consult is None or not consult.connected:
            raise CallNotReady("no consultation of this call is connected")
        legs = consult.call
        await self._pool.transfer_attended(legs.customer_leg, consult.leg_id)
        del self._consults[call_id]
        replaced = consult.directory.hand_over(call_id, consult.leg_id)
        with contextlib.suppress(*_GONE, PoolClosed):
            await self._pool.hangup(replaced)
        log.info("call_control.transferred", call_id=str(call_id), target=consult.target)
        self._publish_transfer(consult, "completed")

    async def transfer_cancel(self, call_id: uuid.UUID) -> None:
        """Hang the colleague up and connect the customer back to the agent."""
        consult = self._consults.pop(call_id, None)
        if consult is None:
            raise CallNotReady("no transfer of this call is under way")
        with contextlib.suppress(*_GONE, PoolClosed):
            await self._pool.hangup(consult.leg_id)
        await self._reconnect(consult.call)
        self._publish_transfer(consult, "failed", "cancelled")

    async def supervise(
        self, call_id: uuid.UUID, supervisor: AgentConfig, mode: SupervisionMode
    ) -> None:
        """Connect ``supervisor``'s phone to the call as ``mode``, or switch mode.

        Returns once the supervisor's phone answered and is connected. Raises
        :class:`UnknownCall`, :class:`~sip.exceptions.NoCapacity` (no spare slot on
        the call's worker), ``TimeoutError`` if the phone did not answer.
        """
        legs = self.legs(call_id)
        current = self._supervisions.get(call_id)
        if current is not None:
            await self._pool.supervise(legs.customer_leg, current.leg_id, mode)
            current.mode = mode
            self._publish_supervised(current, mode)
            return
        sup = _Supervision(call=legs, supervisor=supervisor.key, leg_id=f"{call_id}-sup", mode=mode)
        self._supervisions[call_id] = sup
        try:
            await self._pool.originate(
                worker_id=legs.worker_id,
                line=legs.line,
                leg_id=sup.leg_id,
                to_uri=pbx_uri(self._config, supervisor.extension),
                listener=lambda event: self._on_supervisor_event(sup, event),
            )
            async with asyncio.timeout(self._supervisor_timeout):
                await sup.answered.wait()
            if sup.ended.is_set():
                raise UnknownCall("the supervisor's phone did not answer")
            await self._pool.supervise(legs.customer_leg, sup.leg_id, mode)
        except BaseException:
            self._supervisions.pop(call_id, None)
            with contextlib.suppress(*_GONE, PoolClosed):
                await self._pool.hangup(sup.leg_id)
            raise
        sup.connected = True
        self._publish_supervised(sup, mode)

    # ------------------------------------------------------------------ internals

    def _target(self, to: str, agent: str | None) -> str:
        """``to`` as an extension or an E.164 number that ``agent`` may transfer to."""
        if is_extension(to):
            refusal = self._policy.check_extension(to)
            target = to
        else:
            try:
                target = normalize_phone(to, self._config.site.default_region)
            except InvalidPhone as exc:
                raise InvalidNumber(f"cannot transfer to {to!r}: {exc}") from exc
            refusal = self._policy.check_number(target, agent=agent)
        if refusal is not None:
            log.warning(
                "call_control.transfer_forbidden", agent=agent, target=target, rule=refusal.rule
            )
            raise CallForbidden(str(refusal))
        return target

    async def _reconnect(self, legs: CallLegs) -> None:
        """The customer back with the agent, after a consultation."""
        if legs.agent_leg is None:
            return
        with contextlib.suppress(*_GONE, PoolClosed):
            await self._pool.transfer_attended(legs.customer_leg, legs.agent_leg)

    def _on_consult_event(self, consult: _Consult, event: LegEvent) -> None:
        if not consult.track(event):
            return
        call_id = consult.call.call_id
        if consult.connected and self._consults.get(call_id) is consult:
            # The colleague hung up during the consultation: back to the agent.
            del self._consults[call_id]
            task = asyncio.get_running_loop().create_task(self._reconnect(consult.call))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self._publish_transfer(consult, "failed", "hung_up")

    def _publish_transfer(
        self,
        consult: _Consult,
        state: Literal["started", "consulting", "completed", "failed"],
        reason: str | None = None,
    ) -> None:
        self._bus.publish(
            CallTransferred(
                call_id=consult.call.call_id,
                agent=consult.call.agent,
                kind="attended",
                target=consult.target,
                state=state,
                reason=reason,
            )
        )

    def _on_supervisor_event(self, sup: _Supervision, event: LegEvent) -> None:
        if not sup.track(event):
            return
        if self._supervisions.get(sup.call.call_id) is sup:
            del self._supervisions[sup.call.call_id]
        if sup.connected:
            self._publish_supervised(sup, None)

    def _publish_supervised(self, sup: _Supervision, mode: SupervisionMode | None) -> None:
        self._bus.publish(
            CallSupervised(
                call_id=sup.call.call_id,
                agent=sup.call.agent,
                supervisor=sup.supervisor,
                mode=mode,
            )
        )

    async def _watch(self, sub: Subscription) -> None:
        async for envelope in sub:
            event = envelope.event
            if isinstance(event, CallEnded):
                consult = self._consults.pop(event.call_id, None)
                if consult is not None:
                    with contextlib.suppress(*_GONE, PoolClosed):
                        await self._pool.hangup(consult.leg_id)
                    self._publish_transfer(consult, "failed", "call_ended")
                sup = self._supervisions.get(event.call_id)
                if sup is not None:
                    with contextlib.suppress(*_GONE, PoolClosed):
                        await self._pool.hangup(sup.leg_id)
