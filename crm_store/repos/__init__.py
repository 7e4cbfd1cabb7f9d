"""Repositories: one per aggregate, each method one transaction."""

from __future__ import annotations

from .audit import AuditRepository
from .call_lists import CallListRepository
from .calls import CallRepository
from .clients import ClientRepository
from .dialer import DialerRepository, DialerSessionRecord, DoNotCallEntry, PendingAttempt
from .imports import ImportRepository
from .leads import LeadRepository
from .presence import AgentPresenceRecord, PresenceRepository
from .sessions import SessionRepository
from .tasks import TaskRepository
from .users import UserRepository

__all__ = [
    "AgentPresenceRecord",
    "AuditRepository",
    "CallListRepository",
    "CallRepository",
    "ClientRepository",
    "DialerRepository",
    "DialerSessionRecord",
    "DoNotCallEntry",
    "ImportRepository",
    "LeadRepository",
    "PendingAttempt",
    "PresenceRepository",
    "SessionRepository",
    "TaskRepository",
    "UserRepository",
]
