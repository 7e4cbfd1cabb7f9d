"""The registration state of one line, as the pool knows it.

Pure: no I/O, no clock. The worker registering a line reports each step of its
registration with the PBX (``docs/sip-worker.md``: a REGISTER sent, the PBX's
answer, an un-REGISTER answered); :class:`LineRegistration` moves between the
:class:`RegistrationState` values those reports stand for, logs each transition
and raises :class:`~sip.exceptions.InvalidState` for one the table below does
not allow. The pool publishes every accepted state as
:class:`~bus.RegistrationChanged`, whose ``state`` is the enum's string value.

States::

    UNREGISTERED ──REGISTER sent──> REGISTERING ──2xx──> REGISTERED
    REGISTERING ──refused, no answer──> FAILED
    REGISTERED ──refresh sent──> REGISTERING        (or its 2xx straight away)
    FAILED ──retry sent──> REGISTERING              (or its answer straight away)
    REGISTERING / REGISTERED / FAILED ──un-REGISTER answered──> UNREGISTERED
    any state ──worker exited──> UNREGISTERED       (:meth:`LineRegistration.lost`)

Refused: a line that is not registered being reported unregistered again, and a
second REGISTER reported sent while one is outstanding. Either means the pool
and its worker disagree about the line.
"""

from __future__ import annotations

from enum import StrEnum

import structlog

from bus import RegistrationChanged
from sip.exceptions import InvalidState

__all__ = ["LineRegistration", "RegistrationState"]

log = structlog.get_logger(__name__)


class RegistrationState(StrEnum):
    """Where a line's registration with the PBX stands (the wire values of
    ``registration.changed``)."""

    #: Not registered: never yet, unregistered on purpose, or its worker is gone.
    UNREGISTERED = "unregistered"
    #: A REGISTER (first, refresh or retry) is on its way to the PBX.
    REGISTERING = "registering"
    #: The PBX accepted the registration.
    REGISTERED = "registered"
    #: The PBX refused it or did not answer; the worker may retry.
    FAILED = "failed"


_S = RegistrationState

#: The states a worker's report may move a line to, by current state.
_ALLOWED: dict[RegistrationState, frozenset[RegistrationState]] = {
    _S.UNREGISTERED: frozenset({_S.REGISTERING, _S.REGISTERED, _S.FAILED}),
    _S.REGISTERING: frozenset({_S.REGISTERED, _S.FAILED, _S.UNREGISTERED}),
    _S.REGISTERED: frozenset({_S.REGISTERING, _S.REGISTERED, _S.FAILED, _S.UNREGISTERED}),
    _S.FAILED: frozenset({_S.REGISTERING, _S.REGISTERED, _S.FAILED, _S.UNREGISTERED}),
}


class LineRegistration:
    """The registration state of line ``line`` on worker ``worker_id``.

    Starts :attr:`RegistrationState.UNREGISTERED`; ``code`` and ``reason`` are
    those of the last report (0 and ``""`` until one arrives).
    """

    __slots__ = ("code", "line", "reason", "state", "worker_id")

    def __init__(self, line: str, *, worker_id: str) -> None:
        self.line = line
        self.worker_id = worker_id
        self.state = RegistrationState.UNREGISTERED
        self.code = 0
        self.reason = ""

    def reported(self, state: RegistrationState | str, *, code: int, reason: str) -> None:
        """Take the worker's report that the line is now ``state``.

        Raises :class:`ValueError` for a ``state`` that is not a registration
        state, and :class:`InvalidState` for a transition the table refuses; in
        both cases nothing changes.
        """
        new = RegistrationState(state)
        if new not in _ALLOWED[self.state]:
            raise InvalidState(
                f"line {self.line}: registration cannot go from {self.state.value} to {new.value}"
            )
        self._to(new, code=code, reason=reason)

    def lost(self, reason: str) -> None:
        """The worker holding the line exited: the line is unregistered, whatever
        it was (the PBX keeps the binding until it expires, but nobody answers it)."""
        self._to(RegistrationState.UNREGISTERED, code=0, reason=reason)

    def resync(self, state: RegistrationState | str, *, code: int, reason: str) -> None:
        """Take ``state`` as the line's state whatever the table says: the worker
        is the authority on what the PBX answered, and a report out of order
        (which :meth:`reported` refused) must not leave the pool believing a
        state the line has left."""
        self._to(RegistrationState(state), code=code, reason=reason, resync=True)

    def changed(self) -> RegistrationChanged:
        """The ``registration.changed`` event saying where the line stands now."""
        return RegistrationChanged(
            line=self.line,
            state=self.state.value,
            code=self.code,
            reason=self.reason,
            worker_id=self.worker_id,
        )

    def _to(self, new: RegistrationState, *, code: int, reason: str, resync: bool = False) -> None:
        log.info(
            "registration.transition",
            line=self.line,
            worker_id=self.worker_id,
            old=self.state.value,
            new=new.value,
            code=code,
            reason=reason,
            resync=resync,
        )
        self.state = new
        self.code = code
        self.reason = reason
