"""The lists exports and call lists are made of, as the principal may see them.

This module is the one place that decides which rows of a whole list a principal
gets (:mod:`ws_gateway.rights` decides each row): clients by
:func:`~ws_gateway.rights.can_open_contact`, calls by
:func:`~ws_gateway.rights.can_open_call`, tasks by their assignee. Exports and
call lists built from a filter read their rows through it and nowhere else, so a
store-side visibility query can replace the per-row check here alone.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from crm_store import Call, Client, Lead, LeadStatus, Task
from crm_store.repos.exports import ExportRepository
from ws_gateway import Principal
from ws_gateway.rights import can_open_call, can_open_contact

from ._api_common import Directory
from ._services import Services

__all__ = [
    "MAX_LIST_ROWS",
    "ListTooLong",
    "visible_calls",
    "visible_clients",
    "visible_leads",
    "visible_tasks",
]

#: The most rows an export or a call list built from a filter may hold.
MAX_LIST_ROWS = 100_000


class ListTooLong(Exception):
    """The list has more than :data:`MAX_LIST_ROWS` rows."""


def _exports(svc: Services) -> ExportRepository:
    return svc.store.exports


async def _may_open(svc: Services, principal: Principal, client: Client) -> bool:
    """Whether ``principal`` may open ``client``: as on its card and in the list, a
    private client is open to the users it is shared with too (read only for the
    private clients the principal could not open otherwise)."""
    args = (principal, client.visibility.value, client.responsible_user_id)
    if can_open_contact(*args):
        return True
    return can_open_contact(*args, await svc.store.clients.shared_with(client.id))


async def visible_clients(
    svc: Services,
    principal: Principal,
    *,
    tags: Sequence[str] = (),
    mine: bool = False,
    ids: Sequence[uuid.UUID] | None = None,
) -> AsyncIterator[list[Client]]:
    """Batches of the clients ``principal`` may open, by display name."""
    seen = 0
    async for batch in _exports(svc).clients(
        tags=tags, responsible_user_id=principal.user_id if mine else None, ids=ids
    ):
        shown = [c for c in batch if await _may_open(svc, principal, c)]
        seen += len(shown)
        if seen > MAX_LIST_ROWS:
            raise ListTooLong
        yield shown


async def visible_leads(
    svc: Services,
    principal: Principal,
    *,
    statuses: Sequence[LeadStatus] = (),
    owner: str | None = None,
    ids: Sequence[uuid.UUID] | None = None,
) -> AsyncIterator[list[Lead]]:
    """Batches of leads (every lead is shared), newest first; ``owner``: ``"me"``
    or ``"none"`` (the pool)."""
    seen = 0
    async for batch in _exports(svc).leads(
        statuses=statuses,
        owner_user_id=principal.user_id if owner == "me" else None,
        unowned=owner == "none",
        ids=ids,
    ):
        seen += len(batch)
        if seen > MAX_LIST_ROWS:
            raise ListTooLong
        yield batch


async def visible_calls(
    svc: Services,
    principal: Principal,
    directory: Directory,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AsyncIterator[list[Call]]:
    """Batches of the calls ``principal`` may open, newest first."""
    seen = 0
    async for batch in _exports(svc).calls(since=since, until=until):
        shown = [
            c for c in batch if can_open_call(principal, directory.call_agent(c.agent_user_id))
        ]
        seen += len(shown)
        if seen > MAX_LIST_ROWS:
            raise ListTooLong
        yield shown


async def visible_tasks(
    svc: Services, principal: Principal, *, done: bool | None = None
) -> AsyncIterator[list[Task]]:
    """Batches of tasks, newest first: an agent's own, everyone's for supervisors."""
    seen = 0
    async for batch in _exports(svc).tasks(
        assignee_user_id=None if principal.sees_all else principal.user_id, done=done
    ):
        seen += len(batch)
        if seen > MAX_LIST_ROWS:
            raise ListTooLong
        yield batch
