"""Where an inbound call is carried: the branch that reached the reception line, and
the moves (``302``) to the worker that carries the call (see docs/sip-pool.md, "One
worker per call: received once, moved by a redirect").

:class:`CallMoves` is the part of :class:`~sip.inbound.service.InboundService` that
decides the carrying worker and moves the call there."""

from __future__ import annotations

import contextlib
import time

import structlog

from config import AgentConfig
from crm_store import CallEndReason, StoreError
from sip.exceptions import PoolError, UnknownLine
from sip.inbound._events import CallEvents
from sip.inbound.branches import MOVE_PREFIX, Branch, carrier
from sip.inbound.session import Session, ignore
from sip.inbound.state import InboundPhase, Outcome
from sip.legs import GONE, LegListener

__all__ = ["CallMoves"]

log = structlog.get_logger(__name__)


class CallMoves(CallEvents):
    """The carrying worker of each call, and its moves (see the module docstring)."""

    move_timeout: float
    max_moves: int
    _loser_code: int
    _moving: dict[str, Session]

    # ------------------------------------------------------------------ legs

    def _adopt(self, worker_id: str, leg: str, listener: LegListener) -> bool:
        try:
            self._pool.adopt(worker_id, leg, listener)
        except PoolError:
            return False  # the pool is closing: its workers hang everything up
        return True

    def _reject_branch(self, leg: str, code: int) -> None:
        self._spawn(self._reject(leg, code), name=f"inbound-reject-{leg}")

    async def _reject(self, leg: str, code: int) -> None:
        with contextlib.suppress(*GONE):
            await self._pool.reject(leg, code)

    # ------------------------------------------------------------------ the branch

    def _agent_worker(self, agent: AgentConfig | None) -> str | None:
        if agent is None:
            return None
        try:
            return self._pool.worker_for_line(agent.line)
        except UnknownLine:
            return None

    async def _maybe_decide(self, s: Session, *, timed_out: bool = False) -> None:
        if s.phase is not InboundPhase.NEW or s.call_id is None or not s.branches:
            return
        await self._decide(s)

    async def _decide(self, s: Session) -> None:
        """Take the call's branch (the one a reception line's INVITE made), and
        move the call to the worker that is to carry it."""
        assert s.call_id is not None
        chosen = next(iter(s.branches.values()))
        s.chosen = chosen
        for leg in list(s.branches):
            if leg != chosen.leg:
                del s.branches[leg]
                self._reject_branch(leg, self._loser_code)
        s.state.to(InboundPhase.WAITING)
        target = carrier(self._pool, chosen.worker_id, self._agent_worker(s.pending))
        if target != chosen.worker_id and await self._move(s, target):
            return  # offered once it arrives
        await self._settle_on(s, chosen.worker_id)
        await self._next_offer(s)

    async def _settle_on(self, s: Session, worker_id: str) -> None:
        """The call is carried by ``worker_id`` from now on: say so in its record."""
        assert s.call_id is not None
        if s.pending is not None and not s.reserved:
            # The agent's leg is placed right away: hold its slot from now on. A
            # call with no agent yet holds only its own slot while it rings.
            try:
                self._pool.reserve(worker_id, 1)
                s.reserved = True
            except PoolError:
                s.reserved = False  # tried again when the leg is placed
        log.info(
            "inbound.carried",
            worker_id=worker_id,
            waited=round(time.monotonic() - s.arrived, 4),
            agent=s.pending.key if s.pending is not None else None,
        )
        if worker_id != s.worker_id:
            s.worker_id = worker_id
            if s.stored:
                try:
                    await self._store.calls.set_worker(s.call_id, worker_id)
                    s.record_worker = worker_id
                except StoreError as exc:
                    log.error("inbound.store_failed", step="worker", error=str(exc))

    async def _move(self, s: Session, target: str) -> bool:
        """Redirect the caller's unanswered leg (``302``) to worker ``target``; False
        (nothing changed) when the call cannot move."""
        assert s.call_id is not None
        old = s.chosen
        if old is None or s.moves >= self.max_moves or s.answer_sent:
            return False
        token = f"{MOVE_PREFIX}{s.call_id.hex}-{s.moves + 1}"
        try:
            uri = self._pool.contact_of(target, token)
        except PoolError:
            return False
        # The old leg's end (our 302) is not the caller leaving: its events go.
        if not self._adopt(old.worker_id, old.leg, ignore):
            return False
        s.moves += 1
        s.move_token, s.move_target, s.moved_at = token, target, time.monotonic()
        self._moving[token] = s
        try:
            await self._pool.redirect(old.leg, uri)
        except GONE as exc:
            # The caller's leg is gone (they hung up as it was moved): its end
            # was not seen, so the call ends here.
            log.info("inbound.move_failed", worker_id=target, error=str(exc))
            self._moving.pop(token, None)
            s.move_token = s.move_target = None
            s.customer_alive = False
            s.chosen = None
            s.branches.clear()
            self._decide_outcome(s, Outcome(CallEndReason.CANCELLED, 0, "customer"))
            return True
        s.chosen = None
        s.branches.clear()
        s.customer_alive = False
        self._arm(s, "move", self.move_timeout)
        log.info("inbound.moving", worker_id=target, leg=old.leg)
        return True

    async def _arrived(self, s: Session, branch: Branch) -> None:
        """The moved call reached its new worker: carry it on there."""
        self._disarm(s, "move")
        s.move_token = s.move_target = None
        s.chosen = branch
        s.customer_alive = True
        self.stats.moves += 1
        self.stats.move_latency.append(branch.at - s.moved_at)
        if s.outcome is not None:
            return  # ending: the leftovers (this leg too) are hung up
        await self._settle_on(s, branch.worker_id)
        if s.phase is InboundPhase.WAITING:
            await self._next_offer(s)
        elif s.phase is InboundPhase.FORWARDING:
            await self._forward(s)

    async def _move_lost(self, s: Session) -> None:
        """The moved call never arrived: the caller left meanwhile, or the PBX does
        not follow redirects (docs/operations.md says what each PBX needs)."""
        if s.move_token is None:
            return
        self._moving.pop(s.move_token, None)
        s.move_token = s.move_target = None
        self.stats.moves_lost += 1
        log.error(
            "inbound.move_lost",
            waited=self.move_timeout,
            hint="the caller hung up, or the PBX does not follow a 302",
        )
        if s.outcome is None:
            self._decide_outcome(s, Outcome(CallEndReason.CANCELLED, 0, "customer"))
