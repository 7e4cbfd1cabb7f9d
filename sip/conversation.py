"""The steps every call shares once its customer is connected, written once.

Click-to-call (:mod:`sip.calls`), inbound (:mod:`sip.inbound`) and the dialer differ
in how they reach the customer and the agent; from there on a call is the same:

1. :meth:`Conversation.bridge_and_record` connects the two legs' audio, starts the
   recording when ``recording.enabled`` (a refused recording does not stop the
   call: the record and the bus say it failed, and why) and publishes
   ``call.bridged``;
2. :meth:`Conversation.store_step` writes a step of the call record (ringing,
   answered...) without letting a store hiccup drop the customer;
3. :meth:`Conversation.end` ends the record and publishes ``call.ended``;
4. :meth:`Conversation.wait_for_recording` waits (up to :data:`RECORDING_WAIT`)
   for the worker's word on the recording, and :meth:`Conversation.on_recording`
   attaches it to the record and publishes ``recording.ready`` (with
   ``recording_failed`` when the worker could not write it).

:data:`~sip.legs.GONE` (re-exported here) is the one list of errors that mean "the
leg or its worker is already gone".
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import structlog

from bus import Bus, CallBridged, CallEnded, RecordingReady
from config import Config
from crm_store import CallEndReason, Conflict, Store, StoreError
from sip.exceptions import WorkerCommandError
from sip.legs import GONE, Gone, LegEvent, LegListener, Recorded, RecordingLost
from sip.pool import SipPool

__all__ = ["GONE", "RECORDING_WAIT", "Conversation"]

log = structlog.get_logger(__name__)

#: How long a finished call waits for its recording to be complete on disk; the
#: worker needs a clock tick or two after the call to write the WAV header.
RECORDING_WAIT = 10.0


class Conversation:
    """The store and bus side of one call from its bridge to its recording.

    ``name`` prefixes the log events (``click_to_call``, ``inbound``, ``dialer``).
    ``stored`` False means the call has no record (an inbound call whose record
    could not be written): the record's own steps are then skipped, the rest
    published. ``agent`` is the agent named in
    ``call.bridged``; the driver may change it until then.
    """

    def __init__(
        self,
        call_id: uuid.UUID,
        *,
        pool: SipPool,
        bus: Bus,
        store: Store,
        config: Config,
        name: str,
        agent: str | None = None,
        stored: bool = True,
    ) -> None:
        self.call_id = call_id
        self.agent = agent
        self.stored = stored
        self._pool = pool
        self._bus = bus
        self._store = store
        self._config = config
        self._name = name
        #: The recording was started.
        self.recording = False
        #: The worker has said how the recording ended (file or failure).
        self.recording_done = False
        #: Why the recording failed, once it did (start refused, or the worker's word).
        self.recording_failed: str | None = None

    async def store_step(self, step: Awaitable[object]) -> None:
        """Await ``step``, a write to the store; log a store error instead of raising.

        The call goes on when the store hiccups: a missing ringing time is better
        than a dropped customer. Only store errors are caught.
        """
        try:
            await step
        except Conflict:
            log.warning(f"{self._name}.store_conflict", call_id=str(self.call_id))
        except StoreError as exc:
            log.error(f"{self._name}.store_failed", call_id=str(self.call_id), error=str(exc))

    async def bridge_and_record(
        self,
        customer_leg: str,
        other_leg: str,
        *,
        listener: LegListener,
        path: str | None = None,
    ) -> None:
        """Bridge ``customer_leg`` with ``other_leg``, record the customer's leg, and
        publish ``call.bridged``.

        Raises one of :data:`GONE` when the bridge failed (a leg ended meanwhile, or
        the worker refused); then nothing was recorded or published. ``listener``
        gets the recording's end (:class:`~sip.legs.Recorded`,
        :class:`~sip.legs.RecordingLost` or :class:`~sip.legs.Gone`); ``path`` None
        means ``<recording.directory>/<customer leg>.wav``. Cancellation stops the
        wait for the worker: the bridge may still be made.
        """
        await self._pool.bridge(customer_leg, other_leg)
        if self._config.recording.enabled:
            try:
                await self._pool.record_start(customer_leg, listener, path=path)
                self.recording = True
            except GONE as exc:
                # The conversation matters more than its recording: carry on
                # unrecorded, and say so on the bus (CallBridged.recording) and in
                # the record (recording_status failed, CallEnded.recording_failed).
                log.error(f"{self._name}.recording_failed", error=str(exc))
                if isinstance(exc, WorkerCommandError) and exc.code == "recording_failed":
                    self.recording_failed = exc.message
                    if self.stored:
                        await self.store_step(
                            self._store.calls.recording_failed(self.call_id, exc.message)
                        )
        self._bus.publish(
            CallBridged(call_id=self.call_id, agent=self.agent, recording=self.recording)
        )

    async def end(
        self,
        reason: CallEndReason,
        *,
        sip_code: int,
        agent: str | None,
        talk_seconds: float | None,
        leg: str | None,
    ) -> bool:
        """End the call record with ``reason`` and publish ``call.ended``.

        Returns False, publishing nothing, when the record was closed already (the
        pool closed it: the worker died as the call ended). A store error is logged
        and the end is still published.
        """
        if self.stored:
            try:
                await self._store.calls.end(self.call_id, reason)
            except Conflict:
                return False
            except StoreError as exc:
                log.error(f"{self._name}.store_failed", step="end", error=str(exc))
        self._bus.publish(
            CallEnded(
                call_id=self.call_id,
                reason=reason.value,
                sip_code=sip_code,
                agent=agent,
                talk_seconds=talk_seconds,
                leg=leg,
                recording_failed=self.recording_failed,
            )
        )
        return True

    async def on_recording(self, event: LegEvent) -> bool:
        """Take the worker's word on the recording; True if ``event`` was about it.

        :class:`~sip.legs.Recorded` attaches the file to the record,
        :class:`~sip.legs.RecordingLost` marks the recording failed; both publish
        ``recording.ready``. Anything else (and a second word) is left alone.
        """
        if not self.recording or self.recording_done:
            return False
        if isinstance(event, Recorded):
            self.recording_done = True
            if self.stored:
                await self.store_step(
                    self._store.calls.attach_recording(
                        self.call_id, event.path, event.duration_seconds
                    )
                )
            self._bus.publish(
                RecordingReady(
                    call_id=self.call_id, path=event.path, duration_seconds=event.duration_seconds
                )
            )
            return True
        if isinstance(event, RecordingLost):
            # The worker could not write the recording (a full disk): the call went
            # on; the record and the bus say the recording failed, and why.
            self.recording_done = True
            self.recording_failed = event.reason
            if self.stored:
                await self.store_step(
                    self._store.calls.recording_failed(self.call_id, event.reason)
                )
            self._bus.publish(
                RecordingReady(
                    call_id=self.call_id,
                    path="",
                    duration_seconds=0.0,
                    recording_failed=event.reason,
                )
            )
            return True
        return False

    async def wait_for_recording(
        self, next_event: Callable[[], Awaitable[LegEvent | None]]
    ) -> None:
        """After the end, wait up to :data:`RECORDING_WAIT` s for the recording's word.

        ``next_event`` returns the call's next leg event (None for anything else the
        driver received). Returns at once when no recording is pending, and when the
        worker died (:class:`~sip.legs.Gone`). A missing recording is logged, not
        raised. Cancellation propagates.
        """
        if not self.recording or self.recording_done:
            return
        try:
            async with asyncio.timeout(RECORDING_WAIT):
                while not self.recording_done:
                    event = await next_event()
                    if isinstance(event, Gone):
                        return
                    if event is not None:
                        await self.on_recording(event)
        except TimeoutError:
            log.error(f"{self._name}.recording_missing", waited=RECORDING_WAIT)
