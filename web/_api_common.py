"""What the API's modules share: who is who, and the JSON shapes of the contract
(``ContactHit``, ``Card``, ``CallSummary``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from crm_store import Client, Lead, Store, Task, User
from crm_store.repos.contacts import HistoryEntry, SearchHit
from ws_gateway import Principal
from ws_gateway.rights import can_open_call

from ._services import Services

__all__ = [
    "NOTE_MAX_CHARS",
    "Directory",
    "call_summary",
    "client_card",
    "client_hit",
    "companies_of",
    "lead_card",
    "lead_hit",
    "search_hit",
]

#: A note longer than this is refused with 413 ``too_large`` (the contract's limit).
NOTE_MAX_CHARS = 10_000
_LAST_CALLS = 5
_OPEN_TASKS = 10


@dataclass(frozen=True, slots=True)
class Directory:
    """Users by id and the configured agent key of each user, read once per request."""

    users: dict[uuid.UUID, User]
    agent_of_user: dict[uuid.UUID, str]
    user_of_agent: dict[str, uuid.UUID]

    @classmethod
    async def load(cls, svc: Services) -> Directory:
        users = {u.id: u for u in await svc.store.users.list()}
        by_name = {u.username: u.id for u in users.values()}
        agent_of_user: dict[uuid.UUID, str] = {}
        user_of_agent: dict[str, uuid.UUID] = {}
        for agent in svc.config().agents:
            user_id = by_name.get(agent.user) if agent.user is not None else None
            if user_id is not None:
                agent_of_user.setdefault(user_id, agent.key)
                user_of_agent[agent.key] = user_id
        return cls(users, agent_of_user, user_of_agent)

    def call_agent(self, agent_user_id: uuid.UUID | None) -> str | None:
        """The agent key of a call's user (``None``: no agent, or not configured)."""
        return None if agent_user_id is None else self.agent_of_user.get(agent_user_id)

    def person(self, user_id: uuid.UUID | None) -> dict[str, str] | None:
        user = self.users.get(user_id) if user_id is not None else None
        return None if user is None else {"id": str(user.id), "display_name": user.display_name}


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def call_summary(entry: HistoryEntry, directory: Directory) -> dict[str, Any]:
    call = entry.call
    talk = (
        round((call.ended_at - call.answered_at).total_seconds())
        if call.answered_at is not None and call.ended_at is not None
        else None
    )
    missed = (
        call.direction.value == "inbound" and call.answered_at is None and call.ended_at is not None
    )
    contact = entry.contact
    return {
        "id": str(call.id),
        "direction": call.direction.value,
        "from_number": call.from_number,
        "to_number": call.to_number,
        "agent": directory.call_agent(call.agent_user_id),
        "created_at": _iso(call.created_at),
        "answered_at": _iso(call.answered_at),
        "ended_at": _iso(call.ended_at),
        "talk_seconds": talk,
        "end_reason": call.end_reason.value if call.end_reason is not None else None,
        "missed": missed,
        "disposition": call.disposition,
        "note": call.note,
        "recording": call.recording_status == "ok" and call.recording_path is not None,
        "contact": None
        if contact is None
        else {"kind": contact.kind, "id": str(contact.id), "display_name": contact.display_name},
    }


def _phones(owner: Client | Lead) -> list[dict[str, str]]:
    # The contract's kinds; a fax number is shown as "other".
    known = {"mobile", "work", "home"}
    return [
        {"number": p.number_e164, "kind": p.kind.value if p.kind.value in known else "other"}
        for p in owner.phones
    ]


def client_hit(
    client: Client, directory: Directory, companies: Mapping[uuid.UUID, str] | None = None
) -> dict[str, Any]:
    """``companies``: display names by id, for a person's company (see :func:`companies_of`)."""
    company = client.company_name
    if company is None and client.company_id is not None and companies is not None:
        company = companies.get(client.company_id)
    return {
        "kind": "client",
        "id": str(client.id),
        "display_name": client.display_name,
        "company": company,
        "phones": _phones(client),
        "emails": list(client.emails),
        "responsible": directory.person(client.responsible_user_id),
    }


def lead_hit(lead: Lead, directory: Directory) -> dict[str, Any]:
    return {
        "kind": "lead",
        "id": str(lead.id),
        "display_name": lead.display_name,
        "company": lead.company_name,
        "phones": _phones(lead),
        "emails": list(lead.emails),
        "responsible": directory.person(lead.owner_user_id),
    }


async def companies_of(store: Store, clients: Iterable[Client]) -> dict[uuid.UUID, str]:
    """The names of the companies the people among ``clients`` work for."""
    return await store.clients.display_names(
        c.company_id for c in clients if c.company_name is None and c.company_id is not None
    )


def search_hit(
    hit: SearchHit, directory: Directory, companies: Mapping[uuid.UUID, str] | None = None
) -> dict[str, Any]:
    if hit.client is not None:
        return client_hit(hit.client, directory, companies)
    assert hit.lead is not None
    return lead_hit(hit.lead, directory)


async def _extras(
    store: Store,
    principal: Principal,
    directory: Directory,
    *,
    client_id: uuid.UUID | None = None,
    lead_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    # Only the calls the principal may open: a card does not show through the
    # back door what the call log would refuse.
    page = await store.contacts.history(client_id=client_id, lead_id=lead_id, limit=50)
    calls = [
        call_summary(e, directory)
        for e in page.entries
        if can_open_call(principal, directory.call_agent(e.call.agent_user_id))
    ][:_LAST_CALLS]
    tasks = await store.tasks.for_entity(client_id=client_id, lead_id=lead_id)
    open_tasks = sorted(
        (t for t in tasks if not t.done),
        key=lambda t: (t.due_at is None, t.due_at or t.created_at, t.created_at),
    )[:_OPEN_TASKS]
    return {"last_calls": calls, "open_tasks": [_task(t) for t in open_tasks]}


def _task(task: Task) -> dict[str, Any]:
    return {
        "id": str(task.id),
        "title": task.title,
        "kind": task.kind.value,
        "due_at": _iso(task.due_at),
    }


async def client_card(
    store: Store, principal: Principal, directory: Directory, client: Client
) -> dict[str, Any]:
    card = client_hit(client, directory, await companies_of(store, [client]))
    card["tags"] = list(client.tags)
    card["visibility"] = client.visibility.value
    card.update(_client_details(client))
    card.update(await _extras(store, principal, directory, client_id=client.id))
    return card


def _client_details(client: Client) -> dict[str, Any]:
    """The fields of the workspace's card beyond the widget's."""
    address = client.address
    return {
        "client_kind": client.kind.value,
        "first_name": client.first_name,
        "last_name": client.last_name,
        "company_name": client.company_name,
        "company_id": None if client.company_id is None else str(client.company_id),
        "website": client.website,
        "address": {
            "street": address.street,
            "postcode": address.postcode,
            "city": address.city,
            "region": address.region,
            "country": address.country,
        },
        "custom_fields": dict(client.custom_fields),
        "responsible_user_id": None
        if client.responsible_user_id is None
        else str(client.responsible_user_id),
        "created_at": _iso(client.created_at),
        "updated_at": _iso(client.updated_at),
    }


async def lead_card(
    store: Store, principal: Principal, directory: Directory, lead: Lead
) -> dict[str, Any]:
    card = lead_hit(lead, directory)
    card["tags"] = []
    card["visibility"] = "shared"
    card["status"] = lead.status.value
    card["source"] = lead.source.value
    card.update(await _extras(store, principal, directory, lead_id=lead.id))
    return card
