"""Enumerations stored in the CRM database.

Values are stored as their lowercase string value (``VARCHAR`` plus a ``CHECK``
constraint, the same on SQLite and PostgreSQL), so renaming a member is a migration.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "CallDirection",
    "CallEndReason",
    "CallListItemState",
    "ClientKind",
    "CustomFieldType",
    "LeadSource",
    "LeadStatus",
    "PhoneKind",
    "Role",
    "TaskKind",
    "TaskStatus",
    "Visibility",
]


class Role(StrEnum):
    """What a user may see and do: agents their own calls, supervisors all calls,
    admins also manage users."""

    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class ClientKind(StrEnum):
    PERSON = "person"
    COMPANY = "company"


class Visibility(StrEnum):
    """``private`` clients are visible to their responsible user (and supervisors);
    ``shared`` clients to every agent."""

    PRIVATE = "private"
    SHARED = "shared"


class CustomFieldType(StrEnum):
    """What the value of an admin-defined client field is: free text, a number, a day
    (``YYYY-MM-DD``) or one of the field's choices."""

    TEXT = "text"
    NUMBER = "number"
    DATE = "date"
    CHOICE = "choice"


class PhoneKind(StrEnum):
    WORK = "work"
    MOBILE = "mobile"
    HOME = "home"
    FAX = "fax"
    OTHER = "other"


class LeadSource(StrEnum):
    MANUAL = "manual"
    IMPORT = "import"
    INCOMING_CALL = "incoming_call"
    OUTGOING_CALL = "outgoing_call"
    DIALER = "dialer"
    WEB_FORM = "web_form"


class LeadStatus(StrEnum):
    """``unprocessed`` and ``in_progress`` are *open*; ``done`` and ``unsuitable`` are
    closed."""

    UNPROCESSED = "unprocessed"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    UNSUITABLE = "unsuitable"

    @property
    def is_open(self) -> bool:
        return self in (LeadStatus.UNPROCESSED, LeadStatus.IN_PROGRESS)


class CallDirection(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class CallEndReason(StrEnum):
    """Why a call ended. Exactly one applies to every ended call.

    - ``completed``: the call was answered and then hung up normally by either side.
    - ``busy``: the callee signalled busy (SIP 486/600).
    - ``no_answer``: nobody answered before the ring timeout (SIP 408/480 or our timer).
    - ``rejected``: the callee declined (SIP 603, 403).
    - ``cancelled``: the calling side gave up before answer (SIP CANCEL).
    - ``unreachable``: the number does not exist or cannot be routed (SIP 404/484/604).
    - ``failed``: any other signalling or media failure before or during the call.
    - ``transferred``: the call left this agent by a transfer; the new leg is a new call.
    - ``interrupted``: the record was closed without a SIP ending because the daemon or
      the call's worker process stopped (see :meth:`CallRepository.close_interrupted`).
    """

    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    UNREACHABLE = "unreachable"
    FAILED = "failed"
    TRANSFERRED = "transferred"
    INTERRUPTED = "interrupted"


class TaskKind(StrEnum):
    CALL = "call"
    EMAIL = "email"
    MEETING = "meeting"
    OTHER = "other"


class TaskStatus(StrEnum):
    """A task's column on the kanban: ``todo`` → ``in_progress`` → ``done``. A task is
    ``done`` exactly when its ``done`` flag is set (the repository keeps both)."""

    TODO = "todo"
    IN_PROGRESS = "in_progress"
    DONE = "done"


class CallListItemState(StrEnum):
    """Life of one number in a dialer call list.

    ``pending`` → ``claimed`` (a dialer owns it) → ``dialing`` (the call was placed) →
    ``done`` | ``failed`` | back to ``pending`` with ``next_attempt_at`` for a retry.
    ``skipped`` is set by a person or a rule; ``invalid`` at import when the number
    cannot be normalised. Only ``pending`` items are ever claimed.
    """

    PENDING = "pending"
    CLAIMED = "claimed"
    DIALING = "dialing"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    INVALID = "invalid"
