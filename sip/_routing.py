"""Routing inside the pool: which worker holds which line and which leg, and
where each event a worker sends goes.

:class:`Router` keeps the maps (line to home worker and to every worker
registering it, leg to worker) and turns a worker's events into their effect:
a registration report moves the line's :class:`~sip.registration.LineRegistration`
and is published as ``RegistrationChanged``; an incoming call goes to the
incoming handler (or is refused); a recording's end goes to the recording's
listener; every other event naming a call goes to that leg's listener. Listeners
get each event as :func:`sip.legs.translate` puts it, in the leg vocabulary.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

import structlog

from bus import Bus
from sip import protocol as p
from sip._supervision import LegListener, WorkerSlot
from sip.client import WorkerClient, WorkerExited
from sip.exceptions import (
    InvalidState,
    UnknownCall,
    UnknownLine,
    WorkerCommandError,
    WorkerGone,
)
from sip.legs import translate
from sip.registration import LineRegistration

__all__ = ["IncomingHandler", "Router"]

log = structlog.get_logger(__name__)

#: Called on the loop with an incoming call and the id of the worker holding it.
IncomingHandler = Callable[[str, p.IncomingCall], None]

# SIP status the pool answers an incoming call with when nobody handles it.
_NOBODY_HOME = 480


class Router:
    """Lines, legs and events of the pool's workers (``slots``, in plan order)."""

    def __init__(
        self,
        slots: Iterable[WorkerSlot],
        *,
        bus: Bus,
        calls_per_worker: int,
        command_timeout: float,
    ) -> None:
        self._bus = bus
        self._calls_per_worker = calls_per_worker
        self._command_timeout = command_timeout
        self.workers = {w.worker_id: w for w in slots}
        self._by_line = {line.extension: w for w in self.workers.values() for line in w.plan.lines}
        self._leg_worker: dict[str, WorkerSlot] = {}
        self.incoming: IncomingHandler | None = None
        #: Where the router runs its own small tasks (refusing a call); None
        #: while the pool is not supervising.
        self.tg: asyncio.TaskGroup | None = None

    # ------------------------------------------------------------------ lookup

    def home_of_line(self, extension: str) -> WorkerSlot:
        """The worker line ``extension`` is planned on; raises UnknownLine."""
        w = self._by_line.get(extension)
        if w is None:
            raise UnknownLine(f"no line {extension}")
        return w

    def holder(self, leg_id: str) -> WorkerSlot:
        """The worker holding leg ``leg_id``; raises UnknownCall."""
        w = self._leg_worker.get(leg_id)
        if w is None:
            raise UnknownCall(f"no call leg {leg_id}")
        return w

    # ------------------------------------------------------------------ legs

    def add_leg(self, w: WorkerSlot, leg_id: str, listener: LegListener) -> None:
        """Route the events of ``leg_id`` (on ``w``) to ``listener`` from now on."""
        w.legs[leg_id] = listener
        self._leg_worker[leg_id] = w

    def drop_leg(self, w: WorkerSlot, leg_id: str) -> None:
        """Stop routing ``leg_id`` (an originate that failed)."""
        if w.legs.pop(leg_id, None) is not None:
            self._leg_worker.pop(leg_id, None)

    def forget_legs(self, w: WorkerSlot, returncode: int | None) -> None:
        """``w``'s process exited: tell every listener of its legs and recordings,
        once, with :class:`WorkerExited`, and forget them and its reservations."""
        legs, w.legs = w.legs, {}
        recordings, w.recordings = w.recordings, {}
        w.reserved = 0
        exited = translate(WorkerExited(returncode=returncode))
        assert exited is not None
        for leg_id in legs:
            self._leg_worker.pop(leg_id, None)
        for listener in {**recordings, **legs}.values():
            listener(exited)

    async def leg_command(self, leg_id: str, build: Callable[[str], p.Command]) -> None:
        """Send the command ``build(cmd_id)`` to the worker holding ``leg_id``."""
        w = self.holder(leg_id)
        client = w.live_client()
        try:
            await client.command(build(client.next_cmd_id()), timeout=self._command_timeout)
        except WorkerCommandError as exc:
            if exc.code == "unknown_call":
                raise UnknownCall(f"no call leg {leg_id}: it has ended") from exc
            raise

    # ------------------------------------------------------------------ events

    def dispatch(self, w: WorkerSlot, event: p.Event) -> None:
        """Deliver one event of worker ``w``; runs on the loop, never blocks."""
        if isinstance(event, p.Registration):
            self._registration(w, event)
        elif isinstance(event, p.IncomingCall):
            self._on_incoming(w, event)
        elif isinstance(event, p.RecordingFinished) or (
            isinstance(event, p.Error)
            and event.code == "recording_failed"
            and event.cmd_id is None
            and event.call_id in w.recordings
        ):
            # A recording ends in its file or in the reason it has none; either
            # way it goes to the recording's listener (the call may be over).
            listener = w.recordings.pop(event.call_id or "", None)
            leg_event = translate(event)
            if listener is not None and leg_event is not None:
                listener(leg_event)
        else:
            # Every other event naming a call (call_state, media_active, dtmf,
            # transfer_status, error...) goes to that leg's listener, so that
            # events added to the protocol later reach their call unchanged.
            call_id = getattr(event, "call_id", None)
            if not isinstance(call_id, str):
                return
            listener = w.legs.get(call_id)
            if isinstance(event, p.CallState) and event.state == "ended":
                w.legs.pop(call_id, None)
                self._leg_worker.pop(call_id, None)
            leg_event = translate(event)
            if listener is not None and leg_event is not None:
                listener(leg_event)

    def _registration(self, w: WorkerSlot, event: p.Registration) -> None:
        registration = w.registrations.get(event.line)
        if registration is None:
            # Not a line of the plan (a worker bug): tracked and published all
            # the same, as the worker reports it.
            log.warning("sip_pool.registration_of_unknown_line", line=event.line)
            registration = LineRegistration(event.line, worker_id=w.worker_id)
            w.registrations[event.line] = registration
        try:
            registration.reported(event.state, code=event.code, reason=event.reason)
        except InvalidState as exc:
            # The worker speaks for the PBX: take its word, and say that the
            # pool's view had drifted.
            log.warning("sip_pool.registration_out_of_order", error=str(exc))
            registration.resync(event.state, code=event.code, reason=event.reason)
        self._bus.publish(registration.changed())

    def _on_incoming(self, w: WorkerSlot, event: p.IncomingCall) -> None:
        if self.incoming is not None and w.used < self._calls_per_worker:
            self.incoming(w.worker_id, event)
            return
        # Nobody takes inbound calls (the inbound service is not running) or no
        # slot is free: refuse it rather than let it ring forever.
        log.info("sip_pool.incoming_refused", call_id=event.call_id, line=event.line)
        if self.tg is not None and w.client is not None:
            self.tg.create_task(
                self._refuse(w.client, event.call_id), name=f"sip-pool-refuse-{event.call_id}"
            )

    async def _refuse(self, client: WorkerClient, call_id: str) -> None:
        with contextlib.suppress(WorkerGone, WorkerCommandError, TimeoutError):
            await client.command(
                p.Reject(cmd_id=client.next_cmd_id(), call_id=call_id, code=_NOBODY_HOME),
                timeout=self._command_timeout,
            )
