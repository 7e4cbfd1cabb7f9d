"""Plain read objects returned by the repositories.

They are frozen, slotted dataclasses built from rows inside the transaction that read
them, so callers never hold an ORM object (or a session) across an ``await``. Fields
that hold collections are tuples; ``custom_fields`` and ``settings`` are plain dicts
copied from the row and safe to keep.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from .enums import (
    CallDirection,
    CallEndReason,
    CallListItemState,
    ClientKind,
    LeadSource,
    LeadStatus,
    PhoneKind,
    Role,
    TaskKind,
    TaskStatus,
    Visibility,
)

__all__ = [
    "Address",
    "ApiToken",
    "AuditEntry",
    "Call",
    "CallList",
    "CallListEntry",
    "CallListItem",
    "CallListReport",
    "CallerMatch",
    "Client",
    "Lead",
    "LoginOutcome",
    "LoginResult",
    "Phone",
    "Task",
    "User",
    "WebSession",
]


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    username: str
    display_name: str
    role: Role
    extension: str | None
    active: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiToken:
    """Metadata of an API token. The plaintext is never stored and never appears
    here; only :meth:`UserRepository.issue_token` returns it, once."""

    id: uuid.UUID
    user_id: uuid.UUID
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class WebSession:
    """A browser session. Its token is never stored or shown here: only
    :meth:`SessionRepository.login` returns it, once."""

    id: uuid.UUID
    user_id: uuid.UUID
    csrf_token: str = field(repr=False)
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    address: str | None
    user_agent: str | None


class LoginOutcome(StrEnum):
    OK = "ok"
    #: Unknown user, wrong password, no password set or disabled user, alike.
    WRONG_CREDENTIALS = "wrong_credentials"
    #: Too many wrong passwords in a row; ``retry_after`` says for how long.
    LOCKED = "locked"


@dataclass(frozen=True, slots=True)
class LoginResult:
    """What :meth:`SessionRepository.login` answers. ``user``, ``session`` and
    ``token`` (the cookie's value) are set when ``outcome`` is ``OK``;
    ``retry_after`` (whole seconds) when it is ``LOCKED``."""

    outcome: LoginOutcome
    user: User | None = None
    session: WebSession | None = None
    token: str | None = field(default=None, repr=False)
    retry_after: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is LoginOutcome.OK


@dataclass(frozen=True, slots=True)
class Phone:
    id: uuid.UUID
    number_e164: str
    kind: PhoneKind
    client_id: uuid.UUID | None
    lead_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class Address:
    street: str | None = None
    postcode: str | None = None
    city: str | None = None
    region: str | None = None
    country: str | None = None


@dataclass(frozen=True, slots=True)
class Client:
    id: uuid.UUID
    kind: ClientKind
    display_name: str
    first_name: str | None
    last_name: str | None
    company_name: str | None
    company_id: uuid.UUID | None
    emails: tuple[str, ...]
    phones: tuple[Phone, ...]
    tags: tuple[str, ...]
    address: Address
    custom_fields: dict[str, Any]
    responsible_user_id: uuid.UUID | None
    visibility: Visibility
    timezone: str | None
    created_at: datetime
    updated_at: datetime
    website: str | None = None


@dataclass(frozen=True, slots=True)
class Lead:
    id: uuid.UUID
    display_name: str
    first_name: str | None
    last_name: str | None
    company_name: str | None
    emails: tuple[str, ...]
    phones: tuple[Phone, ...]
    source: LeadSource
    status: LeadStatus
    owner_user_id: uuid.UUID | None
    converted_client_id: uuid.UUID | None
    note: str | None
    created_at: datetime
    updated_at: datetime
    close_reason: str | None = None
    closed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CallerMatch:
    """Who a phone number belongs to.

    ``kind`` says which of ``client`` / ``lead`` is set; ``id`` and ``display_name``
    repeat the owner's for callers that only need a label; ``phone`` is the matching
    number in E.164.
    """

    kind: Literal["client", "lead"]
    id: uuid.UUID
    display_name: str
    phone: str
    client: Client | None = None
    lead: Lead | None = None


@dataclass(frozen=True, slots=True)
class Call:
    id: uuid.UUID
    direction: CallDirection
    from_number: str
    to_number: str
    agent_user_id: uuid.UUID | None
    client_id: uuid.UUID | None
    lead_id: uuid.UUID | None
    created_at: datetime
    ringing_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    end_reason: CallEndReason | None
    disposition: str | None
    note: str | None
    recording_path: str | None
    recording_duration: float | None
    origin: str | None
    worker_id: str | None
    line: str | None
    dialer_item_id: uuid.UUID | None
    sip_call_id: str | None
    recording_status: str | None = None
    """``"ok"`` (a recording is attached), ``"failed"`` (see ``recording_error``), or
    ``None`` (not recorded)."""
    recording_error: str | None = None

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


@dataclass(frozen=True, slots=True)
class Task:
    id: uuid.UUID
    title: str
    kind: TaskKind
    note: str | None
    due_at: datetime | None
    remind_at: datetime | None
    assignee_user_id: uuid.UUID | None
    client_id: uuid.UUID | None
    lead_id: uuid.UUID | None
    done: bool
    done_at: datetime | None
    created_at: datetime
    duration_minutes: int | None = None
    status: TaskStatus = TaskStatus.TODO
    remind_minutes: int | None = None
    reminded_at: datetime | None = None
    reminder_seen_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CallList:
    id: uuid.UUID
    name: str
    owner_user_id: uuid.UUID | None
    settings: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CallListItem:
    id: uuid.UUID
    list_id: uuid.UUID
    position: int
    number_e164: str | None
    raw_number: str
    invalid_reason: str | None
    client_id: uuid.UUID | None
    lead_id: uuid.UUID | None
    state: CallListItemState
    attempts: int
    claimed_by: uuid.UUID | None
    claimed_at: datetime | None
    last_result: str | None
    last_call_id: uuid.UUID | None
    next_attempt_at: datetime | None
    skip_reason: str | None


@dataclass(frozen=True, slots=True)
class CallListEntry:
    """One input line for :meth:`CallListRepository.create_list`."""

    number: str
    client_id: uuid.UUID | None = None
    lead_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class CallListReport:
    """What happened to the input of :meth:`CallListRepository.create_list`.

    ``added`` counts items created (valid and invalid); ``duplicates`` counts input
    lines merged into an earlier line with the same normalised number; ``invalid``
    lists ``(raw number, reason)`` for the lines stored in state ``invalid``.
    """

    total: int
    added: int
    duplicates: int
    invalid: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: uuid.UUID
    at: datetime
    actor: str
    entity_type: str
    entity_id: str
    action: str
    changes: dict[str, Any]
