"""The CRM store: clients, leads, calls, tasks, call lists, users and the audit log.

SQLAlchemy 2 async over SQLite (aiosqlite, the embedded default) or PostgreSQL
(asyncpg), with one set of models and Alembic migrations for both. Repositories
return frozen dataclasses, never ORM objects. Phone numbers are normalised to E.164
on the way in, so caller lookup is one indexed equality match.
"""

from __future__ import annotations

from ._journal import StoreHealth
from .dto import (
    Address,
    ApiToken,
    AuditEntry,
    Call,
    CallerMatch,
    CallList,
    CallListEntry,
    CallListItem,
    CallListReport,
    Client,
    Lead,
    LoginOutcome,
    LoginResult,
    Phone,
    Task,
    User,
    WebSession,
)
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
from .exceptions import (
    Conflict,
    InvalidPassword,
    InvalidPhone,
    NotFound,
    SchemaOutOfDate,
    StoreError,
    StoreUnavailable,
)
from .ids import new_id
from .importing import ImportLimits, ImportRejected, RowError, read_numbers
from .migrate import downgrade, head_revision, upgrade
from .phones import normalize_phone
from .repos import (
    AgentPresenceRecord,
    AuditRepository,
    CallListRepository,
    CallRepository,
    ClientRepository,
    DialerRepository,
    DialerSessionRecord,
    DoNotCallEntry,
    LeadRepository,
    PendingAttempt,
    PresenceRepository,
    SessionRepository,
    TaskRepository,
    UserRepository,
)
from .store import Store, open_store

__all__ = [
    "Address",
    "AgentPresenceRecord",
    "ApiToken",
    "AuditEntry",
    "AuditRepository",
    "Call",
    "CallDirection",
    "CallEndReason",
    "CallList",
    "CallListEntry",
    "CallListItem",
    "CallListItemState",
    "CallListReport",
    "CallListRepository",
    "CallRepository",
    "CallerMatch",
    "Client",
    "ClientKind",
    "ClientRepository",
    "Conflict",
    "CustomFieldType",
    "DialerRepository",
    "DialerSessionRecord",
    "DoNotCallEntry",
    "ImportLimits",
    "ImportRejected",
    "InvalidPassword",
    "InvalidPhone",
    "Lead",
    "LeadRepository",
    "LeadSource",
    "LeadStatus",
    "LoginOutcome",
    "LoginResult",
    "NotFound",
    "PendingAttempt",
    "Phone",
    "PhoneKind",
    "PresenceRepository",
    "Role",
    "RowError",
    "SchemaOutOfDate",
    "SessionRepository",
    "Store",
    "StoreError",
    "StoreHealth",
    "StoreUnavailable",
    "Task",
    "TaskKind",
    "TaskRepository",
    "TaskStatus",
    "User",
    "UserRepository",
    "Visibility",
    "WebSession",
    "downgrade",
    "head_revision",
    "new_id",
    "normalize_phone",
    "open_store",
    "read_numbers",
    "upgrade",
]
