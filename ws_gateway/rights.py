"""Who sees what and who may command what: pure functions, no I/O.

Visibility is decided per event by its *audience*: the name of the agent the
event is about, or ``None`` for events about no agent (worker crashes, line
registrations, bus drop reports, calls not yet given to an agent). Agents see
the events whose audience is one of their own agents; supervisors and admins
see everything.

Commands have a :class:`Scope` that says what must be checked before the
command reaches the handler:

``call``
    ``args.call_id`` must be a call the gateway knows (active, or ended
    recently: notes and dispositions come after the hang-up), and the call's
    agent must be one of the principal's agents, unless the principal is a
    supervisor or admin.
``agent``
    ``args.agent`` (default: the principal's only agent) must be one of the
    principal's agents, unless supervisor or admin; the gateway fills it in.
``supervise``
    supervisors and admins only, on a known call.
``admin``
    admins only.

CRM data (the HTTP API, and the caller's card on the websocket) follows the same
rule through :func:`can_open_call` and :func:`can_open_contact`: a call is seen
by the principal its agent belongs to (and by supervisors and admins); a
private contact by its responsible user and the users it is shared with (and by
supervisors and admins); lists, searches and exports of clients apply the same
rule in SQL (``ClientRepository.visible_to``).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from bus import Event

from .auth import Principal
from .exceptions import BadRequest, Forbidden, NotFound

__all__ = [
    "COMMANDS",
    "CallDirectory",
    "Scope",
    "audience",
    "authorize",
    "can_open_call",
    "can_open_contact",
    "can_open_task",
    "can_see",
    "can_work_lead",
    "check_call",
    "check_contact",
]


class Scope(enum.StrEnum):
    """What a command acts on, hence what is checked before it runs."""

    CALL = "call"
    AGENT = "agent"
    SUPERVISE = "supervise"
    ADMIN = "admin"


COMMANDS: Mapping[str, Scope] = {
    "call.originate": Scope.AGENT,
    "call.answer": Scope.CALL,
    "call.hangup": Scope.CALL,
    "call.hold": Scope.CALL,
    "call.resume": Scope.CALL,
    "call.transfer": Scope.CALL,
    "call.transfer.complete": Scope.CALL,
    "call.transfer.cancel": Scope.CALL,
    "call.dtmf": Scope.CALL,
    "call.note": Scope.CALL,
    "call.disposition": Scope.CALL,
    "call.create_client": Scope.CALL,
    "call.create_lead": Scope.CALL,
    "dialer.start": Scope.AGENT,
    "dialer.pause": Scope.AGENT,
    "dialer.resume": Scope.AGENT,
    "dialer.stop": Scope.AGENT,
    "dialer.skip": Scope.AGENT,
    "agent.state.set": Scope.AGENT,
    "supervisor.listen": Scope.SUPERVISE,
    "supervisor.whisper": Scope.SUPERVISE,
    "supervisor.barge": Scope.SUPERVISE,
    "admin.users.list": Scope.ADMIN,
    "admin.users.add": Scope.ADMIN,
    "admin.users.token": Scope.ADMIN,
    "admin.users.revoke": Scope.ADMIN,
}
"""Every command name and its scope; the schemas define their arguments."""


class CallDirectory(Protocol):
    """What the rights need to know about calls (the projection provides it)."""

    def knows_call(self, call_id: uuid.UUID) -> bool:
        """True for an active call or one that ended recently."""
        ...

    def call_agent(self, call_id: uuid.UUID) -> str | None:
        """The agent of a known call, ``None`` if it has none or is unknown."""
        ...


def audience(event: Event, calls: CallDirectory) -> str | None:
    """The agent ``event`` is about, or ``None`` if it is about no agent.

    An event's own ``agent`` field wins; an event that names only a call (a
    recording, a call event published before the agent was known) gets the
    call's agent.
    """
    agent = getattr(event, "agent", None)
    if isinstance(agent, str):
        return agent
    call_id = getattr(event, "call_id", None)
    if isinstance(call_id, uuid.UUID):
        return calls.call_agent(call_id)
    return None


def can_see(principal: Principal, event_audience: str | None) -> bool:
    """Whether ``principal`` receives an event whose audience is ``event_audience``."""
    if principal.sees_all:
        return True
    return event_audience is not None and event_audience in principal.agents


def can_open_call(principal: Principal, call_agent: str | None) -> bool:
    """Whether ``principal`` may read a call (its record, note, recording) whose
    agent is ``call_agent`` (``None``: a call given to no agent, for supervisors
    and admins only). The same rule as :func:`can_see` for the call's events."""
    return can_see(principal, call_agent)


def can_open_contact(
    principal: Principal,
    visibility: str,
    responsible_user_id: uuid.UUID | None,
    shared_with: Collection[uuid.UUID] = (),
) -> bool:
    """Whether ``principal`` may see a client or lead card: shared ones by all,
    a private one by its responsible user, the users it is shared with
    (``shared_with``), supervisors and admins."""
    if principal.sees_all or visibility != "private":
        return True
    if responsible_user_id is not None and responsible_user_id == principal.user_id:
        return True
    return principal.user_id in shared_with


def can_work_lead(principal: Principal, owner_user_id: uuid.UUID | None) -> bool:
    """Whether ``principal`` may close, release or change a lead: its owner,
    supervisors and admins. Any user may read a lead and take one from the pool."""
    return principal.sees_all or (owner_user_id is not None and owner_user_id == principal.user_id)


def can_open_task(principal: Principal, assignee_user_id: uuid.UUID | None) -> bool:
    """Whether ``principal`` may see and change a task, or give one to
    ``assignee_user_id``: agents their own tasks, supervisors and admins anyone's
    (and the unassigned ones)."""
    return principal.sees_all or (
        assignee_user_id is not None and assignee_user_id == principal.user_id
    )


def check_call(principal: Principal, call_agent: str | None, call_id: uuid.UUID) -> None:
    """Raise :class:`~ws_gateway.Forbidden` unless :func:`can_open_call`."""
    if not can_open_call(principal, call_agent):
        raise Forbidden("this call is not yours", details={"call_id": str(call_id)})


def check_contact(
    principal: Principal,
    visibility: str,
    responsible_user_id: uuid.UUID | None,
    contact_id: uuid.UUID,
    shared_with: Collection[uuid.UUID] = (),
) -> None:
    """Raise :class:`~ws_gateway.Forbidden` unless :func:`can_open_contact`."""
    if not can_open_contact(principal, visibility, responsible_user_id, shared_with):
        raise Forbidden("this contact is private", details={"id": str(contact_id)})


def authorize(
    principal: Principal, name: str, args: Mapping[str, Any], calls: CallDirectory
) -> dict[str, Any]:
    """Check that ``principal`` may run command ``name`` with ``args``.

    Returns the arguments to hand to the handler (``agent`` filled in for
    agent-scoped commands). Raises :class:`~ws_gateway.Forbidden`,
    :class:`~ws_gateway.NotFound` or :class:`~ws_gateway.BadRequest`; ``args``
    must already be valid against the command's schema.
    """
    scope = COMMANDS.get(name)
    if scope is None:
        raise BadRequest(f"unknown command {name!r}", details={"name": name})
    out = dict(args)
    if scope is Scope.ADMIN:
        if not principal.is_admin:
            raise Forbidden(f"{name} needs the admin role")
        return out
    if scope is Scope.SUPERVISE:
        if not principal.sees_all:
            raise Forbidden(f"{name} needs the supervisor role")
        _known_call(out, calls)
        return out
    if scope is Scope.CALL:
        call_id = _known_call(out, calls)
        if not principal.sees_all and calls.call_agent(call_id) not in principal.agents:
            raise Forbidden("this call is not yours", details={"call_id": str(call_id)})
        return out
    out["agent"] = _agent_arg(principal, out.get("agent"))
    return out


def _known_call(args: Mapping[str, Any], calls: CallDirectory) -> uuid.UUID:
    try:
        call_id = uuid.UUID(str(args["call_id"]))
    except (KeyError, ValueError):
        raise BadRequest("call_id must be a UUID") from None
    if not calls.knows_call(call_id):
        raise NotFound("no such call", details={"call_id": str(call_id)})
    return call_id


def _agent_arg(principal: Principal, agent: object) -> str:
    if isinstance(agent, str):
        if principal.sees_all or agent in principal.agents:
            return agent
        raise Forbidden("this agent is not yours", details={"agent": agent})
    if len(principal.agents) == 1:
        (only,) = principal.agents
        return only
    if not principal.agents and not principal.sees_all:
        raise Forbidden("your user is not bound to an agent")
    raise BadRequest("name the agent: args.agent is required for this user")
