"""SQLAlchemy declarative models: the single source of the schema.

The migrations under ``crm_store/migrations`` must reproduce exactly this metadata; a
test compares them. Repositories use the tables through Core statements and return
plain DTOs, so no ORM object ever escapes a transaction.

Enums are stored as ``VARCHAR`` with a named ``CHECK`` constraint (not PostgreSQL
native enums) so that the same migration runs on both databases and adding a value
does not need ``ALTER TYPE``.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ._types import UTCDateTime, utcnow
from .enums import (
    CallDirection,
    CallEndReason,
    CallListItemState,
    ClientKind,
    CustomFieldType,
    LeadSource,
    LeadStatus,
    PhoneKind,
    Role,
    TaskKind,
    TaskStatus,
    Visibility,
)
from .ids import new_id

# Explicit constraint names make migrations reproducible and let SQLite's batch mode
# find constraints again when it rebuilds a table.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _enum(cls: type[enum.Enum], name: str) -> SAEnum:
    return SAEnum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        validate_strings=True,
        values_callable=lambda members: [m.value for m in members],
        length=max(len(m.value) for m in cls),
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        uuid.UUID: Uuid(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
    }


def _pk() -> Mapped[uuid.UUID]:
    return mapped_column(primary_key=True, default=new_id)


def _fk(target: str, ondelete: str, *, index: bool = True) -> Mapped[uuid.UUID | None]:
    return mapped_column(ForeignKey(target, ondelete=ondelete), index=index)


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = _pk()
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    extension: Mapped[str | None] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # An argon2 hash (PHC string); NULL: the user cannot log in with a password.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    # Wrong passwords in a row since the last success or lock-out.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None]
    # Where the user's task reminders are mailed; NULL: in the widget only.
    email: Mapped[str | None] = mapped_column(String(254))


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class WebSessionRow(Base):
    """A browser session: the cookie's token (hashed) and its CSRF token."""

    __tablename__ = "web_sessions"

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The absolute end; the idle end is ``last_seen_at`` plus the idle limit.
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime | None]
    address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(200))


class WsTicketRow(Base):
    """A single-use websocket ticket, issued to a browser session or an API token.

    The row outlives its use: the websocket session it opened lasts as long as the
    browser session (or the token) it came from, and is re-checked through it.
    """

    __tablename__ = "ws_tickets"
    __table_args__ = (
        CheckConstraint("(session_id IS NULL) <> (api_token_id IS NULL)", name="one_issuer"),
    )

    id: Mapped[uuid.UUID] = _pk()
    ticket_hash: Mapped[str] = mapped_column(String(64), unique=True)
    session_id: Mapped[uuid.UUID | None] = _fk("web_sessions.id", "CASCADE")
    api_token_id: Mapped[uuid.UUID | None] = _fk("api_tokens.id", "CASCADE")
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None]


class ClientRow(Base):
    __tablename__ = "clients"

    id: Mapped[uuid.UUID] = _pk()
    kind: Mapped[ClientKind] = mapped_column(_enum(ClientKind, "client_kind"))
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    company_name: Mapped[str | None] = mapped_column(String(200))
    # Computed on write from the name fields: one column to search and to show.
    display_name: Mapped[str] = mapped_column(String(300), index=True)
    company_id: Mapped[uuid.UUID | None] = _fk("clients.id", "SET NULL")
    emails: Mapped[list[str]] = mapped_column(default=list)
    address_street: Mapped[str | None] = mapped_column(String(300))
    address_postcode: Mapped[str | None] = mapped_column(String(20))
    address_city: Mapped[str | None] = mapped_column(String(100))
    address_region: Mapped[str | None] = mapped_column(String(100))
    address_country: Mapped[str | None] = mapped_column(String(2))
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    responsible_user_id: Mapped[uuid.UUID | None] = _fk("users.id", "SET NULL")
    visibility: Mapped[Visibility] = mapped_column(_enum(Visibility, "visibility"))
    timezone: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    website: Mapped[str | None] = mapped_column(String(300))


class ClientAccessRow(Base):
    """The users a private client is also shown to, besides its responsible user."""

    __tablename__ = "client_access"

    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class ClientNoteRow(Base):
    """A note written on a client's card (its timeline shows them)."""

    __tablename__ = "client_notes"

    id: Mapped[uuid.UUID] = _pk()
    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    author_user_id: Mapped[uuid.UUID | None] = _fk("users.id", "SET NULL", index=False)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CustomFieldDefRow(Base):
    """A client field an admin defined; the values live in ``clients.custom_fields``
    under ``key``."""

    __tablename__ = "custom_field_defs"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(100))
    type: Mapped[CustomFieldType] = mapped_column(_enum(CustomFieldType, "custom_field_type"))
    choices: Mapped[list[str]] = mapped_column(default=list)
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TagDefRow(Base):
    """A tag an admin defined: the ones offered when tagging a client."""

    __tablename__ = "tag_defs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ClientTagRow(Base):
    """Tags as a child table: filtering by tag is an indexed equality on both
    databases, which a JSON list is not."""

    __tablename__ = "client_tags"

    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class LeadRow(Base):
    __tablename__ = "leads"
    __table_args__ = (Index("ix_leads_pool", "owner_user_id", "status", "created_at"),)

    id: Mapped[uuid.UUID] = _pk()
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    company_name: Mapped[str | None] = mapped_column(String(200))
    display_name: Mapped[str] = mapped_column(String(300), index=True)
    emails: Mapped[list[str]] = mapped_column(default=list)
    source: Mapped[LeadSource] = mapped_column(_enum(LeadSource, "lead_source"))
    status: Mapped[LeadStatus] = mapped_column(_enum(LeadStatus, "lead_status"))
    owner_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    converted_client_id: Mapped[uuid.UUID | None] = _fk("clients.id", "SET NULL")
    # Set only on leads created automatically for an unknown number. The unique
    # constraint is what makes find_or_create_for_number race-safe across processes
    # and hosts: a second concurrent insert for the same number fails instead of
    # creating a duplicate lead.
    origin_number: Mapped[str | None] = mapped_column(String(20), unique=True)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Why a lead was closed as unsuitable (or a word on a done one), and when.
    close_reason: Mapped[str | None] = mapped_column(String(500))
    closed_at: Mapped[datetime | None]


class PhoneRow(Base):
    """Phone numbers of clients and leads in one table, so that caller lookup is one
    indexed equality match whichever kind of owner the number belongs to."""

    __tablename__ = "phones"
    __table_args__ = (
        CheckConstraint(
            "(client_id IS NOT NULL AND lead_id IS NULL)"
            " OR (client_id IS NULL AND lead_id IS NOT NULL)",
            name="one_owner",
        ),
        UniqueConstraint("client_id", "number_e164"),
        UniqueConstraint("lead_id", "number_e164"),
    )

    id: Mapped[uuid.UUID] = _pk()
    number_e164: Mapped[str] = mapped_column(String(20), index=True)
    kind: Mapped[PhoneKind] = mapped_column(_enum(PhoneKind, "phone_kind"))
    client_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE")
    )
    lead_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))


class CallRow(Base):
    __tablename__ = "calls"

    id: Mapped[uuid.UUID] = _pk()
    direction: Mapped[CallDirection] = mapped_column(_enum(CallDirection, "call_direction"))
    # E.164 when the number could be normalised, the raw text otherwise (extensions,
    # "anonymous", service numbers).
    from_number: Mapped[str] = mapped_column(String(64))
    to_number: Mapped[str] = mapped_column(String(64))
    agent_user_id: Mapped[uuid.UUID | None] = _fk("users.id", "SET NULL")
    client_id: Mapped[uuid.UUID | None] = _fk("clients.id", "SET NULL")
    lead_id: Mapped[uuid.UUID | None] = _fk("leads.id", "SET NULL")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    ringing_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None] = mapped_column(index=True)
    end_reason: Mapped[CallEndReason | None] = mapped_column(
        _enum(CallEndReason, "call_end_reason")
    )
    disposition: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    recording_path: Mapped[str | None] = mapped_column(String(500))
    recording_duration: Mapped[float | None] = mapped_column(Float)
    # "ok" once a recording is attached, "failed" when it could not be written (a full
    # disk); NULL for a call that was never recorded.
    recording_status: Mapped[str | None] = mapped_column(String(16))
    recording_error: Mapped[str | None] = mapped_column(String(200))
    # The site id of the daemon that carried the call: with several daemons on one
    # database, each closes only its own calls after a crash.
    origin: Mapped[str | None] = mapped_column(String(64), index=True)
    worker_id: Mapped[str | None] = mapped_column(String(64), index=True)
    line: Mapped[str | None] = mapped_column(String(32))
    # No foreign key: call_list_items.last_call_id already points at calls, and a
    # cycle of foreign keys cannot be created on SQLite without table rebuilds.
    dialer_item_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    sip_call_id: Mapped[str | None] = mapped_column(String(200), index=True)


class TaskRow(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_due", "assignee_user_id", "done", "due_at"),
        # The reminder service's scan: open tasks whose reminder is not sent yet.
        Index("ix_tasks_remind", "done", "reminded_at", "remind_at"),
    )

    id: Mapped[uuid.UUID] = _pk()
    title: Mapped[str] = mapped_column(String(300))
    kind: Mapped[TaskKind] = mapped_column(_enum(TaskKind, "task_kind"))
    note: Mapped[str | None] = mapped_column(Text)
    due_at: Mapped[datetime | None]
    remind_at: Mapped[datetime | None]
    assignee_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    client_id: Mapped[uuid.UUID | None] = _fk("clients.id", "CASCADE")
    lead_id: Mapped[uuid.UUID | None] = _fk("leads.id", "CASCADE")
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    done_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Minutes the task takes (a meeting's length on the calendar); NULL: a point in time.
    duration_minutes: Mapped[int | None] = mapped_column(Integer)
    # The kanban's column; ``done`` is kept equal to ``status == "done"``.
    status: Mapped[TaskStatus] = mapped_column(
        _enum(TaskStatus, "task_status"), default=TaskStatus.TODO, server_default="todo"
    )
    # The reminder as minutes before ``due_at`` (``remind_at`` follows the due time).
    remind_minutes: Mapped[int | None] = mapped_column(Integer)
    # When the reminder service delivered the reminder; when the assignee dismissed it.
    reminded_at: Mapped[datetime | None]
    reminder_seen_at: Mapped[datetime | None]


class CallListRow(Base):
    __tablename__ = "call_lists"

    id: Mapped[uuid.UUID] = _pk()
    name: Mapped[str] = mapped_column(String(200))
    owner_user_id: Mapped[uuid.UUID | None] = _fk("users.id", "SET NULL")
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CallListItemRow(Base):
    __tablename__ = "call_list_items"
    __table_args__ = (
        # NULL numbers (invalid entries) are distinct from each other on both
        # databases, so several invalid entries can coexist while valid duplicates
        # cannot.
        UniqueConstraint("list_id", "number_e164"),
        UniqueConstraint("list_id", "position"),
        Index("ix_call_list_items_claim", "list_id", "state", "position"),
    )

    id: Mapped[uuid.UUID] = _pk()
    list_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("call_lists.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    number_e164: Mapped[str | None] = mapped_column(String(20))
    raw_number: Mapped[str] = mapped_column(String(64))
    invalid_reason: Mapped[str | None] = mapped_column(String(200))
    client_id: Mapped[uuid.UUID | None] = _fk("clients.id", "SET NULL", index=False)
    lead_id: Mapped[uuid.UUID | None] = _fk("leads.id", "SET NULL", index=False)
    state: Mapped[CallListItemState] = mapped_column(
        _enum(CallListItemState, "call_list_item_state")
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[uuid.UUID | None] = _fk("users.id", "SET NULL", index=False)
    claimed_at: Mapped[datetime | None]
    last_result: Mapped[str | None] = mapped_column(String(32))
    last_call_id: Mapped[uuid.UUID | None] = _fk("calls.id", "SET NULL", index=False)
    next_attempt_at: Mapped[datetime | None]
    skip_reason: Mapped[str | None] = mapped_column(String(200))


class DoNotCallRow(Base):
    """Numbers (``prefix`` false) and number prefixes (``prefix`` true) never to be
    dialed by the auto-dialer; checked when an item is claimed."""

    __tablename__ = "do_not_call"
    __table_args__ = (UniqueConstraint("number", "prefix"),)

    id: Mapped[uuid.UUID] = _pk()
    # E.164 for a whole number; for a prefix, "+" and the leading digits.
    number: Mapped[str] = mapped_column(String(20))
    prefix: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DialerSessionRow(Base):
    """An agent's dialing session, stored so that a restarted dialer resumes it."""

    __tablename__ = "dialer_sessions"
    __table_args__ = (Index("ix_dialer_sessions_active", "origin", "state"),)

    id: Mapped[uuid.UUID] = _pk()
    # The agent's key in the configuration (its CRM user name, else its name).
    agent: Mapped[str] = mapped_column(String(128), index=True)
    list_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("call_lists.id", ondelete="CASCADE"), index=True
    )
    # running | paused | stopped | finished; free text so that a new state is no
    # migration (the dialer's state machine owns the vocabulary).
    state: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str | None] = mapped_column(String(64))
    dialed: Mapped[int] = mapped_column(Integer, default=0)
    answered: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentPresenceRow(Base):
    """The presence an agent declared, stored so that a restart keeps it."""

    __tablename__ = "agent_presence"

    # The daemon's site (``site.id``): agents of sites sharing one database are
    # apart even when their keys are alike.
    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The agent's key in the configuration (its CRM user name, else its name).
    agent: Mapped[str] = mapped_column(String(128), primary_key=True)
    # available | paused | wrap_up | offline; free text so that a new state is no
    # migration (bus.presence owns the vocabulary).
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(200))
    since: Mapped[datetime] = mapped_column()


class AuditRow(Base):
    """Append-only history of every mutation made through the repositories."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_entity", "entity_type", "entity_id"),)

    id: Mapped[uuid.UUID] = _pk()
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    changes: Mapped[dict[str, Any]] = mapped_column(default=dict)


class SearchTermRow(Base):
    """Words, email parts and phone-digit suffixes of clients and leads, folded:
    contact search is a prefix range scan of ``term`` (see ``crm_store._search``).
    The column compares bytes on PostgreSQL too (collation ``C``), as on SQLite."""

    __tablename__ = "search_terms"
    __table_args__ = (
        CheckConstraint(
            "(client_id IS NOT NULL AND lead_id IS NULL)"
            " OR (client_id IS NULL AND lead_id IS NOT NULL)",
            name="one_owner",
        ),
        # Covering: a prefix scan yields the owners without reading the table.
        Index("ix_search_terms_term", "term", "client_id", "lead_id"),
        # One owner's terms: rewriting them, and checking a second word.
        Index("ix_search_terms_client", "client_id", "term"),
        Index("ix_search_terms_lead", "lead_id", "term"),
    )

    id: Mapped[uuid.UUID] = _pk()
    term: Mapped[str] = mapped_column(
        String(101).with_variant(String(101, collation="C"), "postgresql")
    )
    client_id: Mapped[uuid.UUID | None] = _fk("clients.id", "CASCADE", index=False)
    lead_id: Mapped[uuid.UUID | None] = _fk("leads.id", "CASCADE", index=False)


class ImportRow(Base):
    """A file of clients or leads imported in one transaction, and whether it was
    undone."""

    __tablename__ = "imports"

    id: Mapped[uuid.UUID] = _pk()
    # "clients" or "leads"
    target: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str | None] = mapped_column(String(200))
    user_id: Mapped[uuid.UUID | None] = _fk("users.id", "SET NULL")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    undone_at: Mapped[datetime | None]
    undone_by: Mapped[uuid.UUID | None] = _fk("users.id", "SET NULL", index=False)


class ImportItemRow(Base):
    """A contact an import created or updated: undo deletes the first and puts
    ``before`` back into the second. No foreign key to the contact: one deleted
    since is simply no longer there to undo."""

    __tablename__ = "import_items"

    import_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("imports.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    entity_id: Mapped[uuid.UUID] = mapped_column()
    # "created" or "updated"
    action: Mapped[str] = mapped_column(String(8))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)


metadata = Base.metadata

users = cast(Table, UserRow.__table__)
api_tokens = cast(Table, ApiTokenRow.__table__)
web_sessions = cast(Table, WebSessionRow.__table__)
ws_tickets = cast(Table, WsTicketRow.__table__)
clients = cast(Table, ClientRow.__table__)
client_tags = cast(Table, ClientTagRow.__table__)
client_access = cast(Table, ClientAccessRow.__table__)
client_notes = cast(Table, ClientNoteRow.__table__)
custom_field_defs = cast(Table, CustomFieldDefRow.__table__)
tag_defs = cast(Table, TagDefRow.__table__)
leads = cast(Table, LeadRow.__table__)
phones = cast(Table, PhoneRow.__table__)
calls = cast(Table, CallRow.__table__)
tasks = cast(Table, TaskRow.__table__)
call_lists = cast(Table, CallListRow.__table__)
call_list_items = cast(Table, CallListItemRow.__table__)
audit_log = cast(Table, AuditRow.__table__)
do_not_call = cast(Table, DoNotCallRow.__table__)
dialer_sessions = cast(Table, DialerSessionRow.__table__)
agent_presence = cast(Table, AgentPresenceRow.__table__)
search_terms = cast(Table, SearchTermRow.__table__)
imports = cast(Table, ImportRow.__table__)
import_items = cast(Table, ImportItemRow.__table__)

# The call history of one agent, newest first (the widget's history, keyset paged).
Index("ix_calls_agent_created", calls.c.agent_user_id, calls.c.created_at)
# "My clients" in name order: an index walk (the clients' list).
Index("ix_clients_responsible_name", clients.c.responsible_user_id, clients.c.display_name)
# A client's last contact (the clients' list filters and sorts by it).
Index("ix_calls_client_created", calls.c.client_id, calls.c.created_at)
