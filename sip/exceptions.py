"""Exceptions of the SIP engine.

Every exception the ``sip`` package raises derives from :class:`SipError`::

    SipError
    ├── ProtocolError            a frame or message on a worker pipe is malformed
    ├── InvalidState             a call state machine was asked for a wrong transition
    ├── WorkerError              something went wrong with one worker process
    │   ├── WorkerStartError     the worker did not start or did not report ready
    │   ├── WorkerCommandError   the worker answered a command with an error
    │   │                        (``code`` is stable, ``message`` is for humans)
    │   └── WorkerGone           the worker process exited (crash, kill, shutdown)
    │                            while a command was pending or was being sent
    └── PoolError                the pool refused a request (``error_id`` is stable)
        ├── PoolConfigError      the configuration cannot be planned onto workers
        ├── PoolClosed           the pool is not running (not started, or closing)
        ├── UnknownAgent         no agent by that name or user
        ├── UnknownLine          no line by that extension
        ├── UnknownCall          no live call (or leg) by that id
        ├── CallNotReady         the call's state does not allow it (answer elsewhere)
        ├── InvalidNumber        the number to dial cannot be read as a phone number
        ├── CallForbidden        the outbound policy refuses the number or extension
        ├── NoCapacity           the worker has no free call slot
        └── WorkerUnavailable    the worker is down (crashed, restarting)

``WorkerGone`` is the signal that a call's fate is unknown: the pool closes the
calls of that worker and restarts it.
"""

from __future__ import annotations

__all__ = [
    "CallForbidden",
    "CallNotReady",
    "InvalidNumber",
    "InvalidState",
    "NoCapacity",
    "PoolClosed",
    "PoolConfigError",
    "PoolError",
    "ProtocolError",
    "SipError",
    "UnknownAgent",
    "UnknownCall",
    "UnknownLine",
    "WorkerCommandError",
    "WorkerError",
    "WorkerGone",
    "WorkerStartError",
    "WorkerUnavailable",
]


class SipError(Exception):
    """Root of all exceptions raised by the ``sip`` package."""


class ProtocolError(SipError):
    """A frame or message on a worker pipe does not follow the protocol."""


class InvalidState(SipError):
    """A call state machine was asked for a transition its state does not allow.

    Always a bug in the caller: the machines ignore the races the SIP world
    produces (a late 180, a timer firing after an answer) on their own.
    """


class WorkerError(SipError):
    """Something went wrong with one SIP worker process."""


class WorkerStartError(WorkerError):
    """The worker process could not be started or did not report ``ready`` in time."""


class WorkerCommandError(WorkerError):
    """The worker answered a command with ``error``.

    ``code`` is a stable identifier (see ``docs/sip-worker.md``), for example
    ``too_many_calls``, ``unknown_call``, ``not_implemented``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class WorkerGone(WorkerError):
    """The worker process exited; ``returncode`` is its exit status if known."""

    def __init__(self, returncode: int | None) -> None:
        super().__init__(f"SIP worker exited (returncode {returncode})")
        self.returncode = returncode


class PoolError(SipError):
    """The pool refused a request. ``error_id`` is a stable identifier for APIs."""

    error_id = "pool_error"


class PoolConfigError(PoolError):
    """The configuration cannot be laid out on workers (limits, transport)."""

    error_id = "pool_config"


class PoolClosed(PoolError):
    """The pool is not running: not started yet, or closing."""

    error_id = "pool_closed"


class UnknownAgent(PoolError):
    """No configured agent has that user name or name."""

    error_id = "unknown_agent"


class UnknownLine(PoolError):
    """No configured line has that extension."""

    error_id = "unknown_line"


class UnknownCall(PoolError):
    """No live call or call leg has that id (it never existed, or it has ended)."""

    error_id = "unknown_call"


class CallNotReady(PoolError):
    """The call is not in a state that allows the request (answer a call that
    rings at another agent's phone, or has ended)."""

    error_id = "call_not_ready"


class InvalidNumber(PoolError):
    """The number to dial cannot be normalised to E.164."""

    error_id = "invalid_number"


class CallForbidden(PoolError):
    """The outbound policy (``[outbound]``) refuses the number or extension; the
    message names the rule (``forbidden: ... (outbound.refused_types)``) and nothing
    was dialed."""

    error_id = "forbidden"


class NoCapacity(PoolError):
    """The worker holds as many calls as ``sip.calls_per_worker`` allows."""

    error_id = "no_capacity"


class WorkerUnavailable(PoolError):
    """The worker that would carry the call is down (crashed and restarting)."""

    error_id = "worker_unavailable"
