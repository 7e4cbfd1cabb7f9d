"""Agents: the principal's own states, colleagues with presence, call lists."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from bus.agent_states import AgentStates
from ws_gateway.exceptions import BadRequest, Forbidden, NotFound, Unavailable

from ._services import Services, services
from .security import CurrentPrincipal

__all__ = ["router"]

router = APIRouter(tags=["agents"])

Svc = Annotated[Services, Depends(services)]


def _states(svc: Services) -> AgentStates:
    if svc.agents is None:
        raise Unavailable("this process has no telephony: agent states are not kept here")
    return svc.agents


def _state(states: AgentStates, agent: str) -> dict[str, Any]:
    status = states.presence.status(agent)
    return {
        "agent": agent,
        "state": status.declared.value,
        "reason": status.reason,
        "since": status.since.isoformat(),
    }


@router.get("/api/agents/me", summary="The declared state of each of my agents")
async def my_agents(principal: CurrentPrincipal, svc: Svc) -> list[dict[str, Any]]:
    states = _states(svc)
    known = set(states.presence.agents())
    return [_state(states, a) for a in sorted(principal.agents) if a in known]


class StateChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Literal["available", "paused", "offline"]
    reason: str | None = Field(default=None, min_length=1, max_length=200)


@router.put(
    "/api/agents/{agent}/state",
    summary="Become available, paused (with a reason of [widget] pause_reasons) or offline",
    responses={403: {"description": "not your agent"}, 404: {"description": "no such agent"}},
)
async def set_state(
    agent: str, body: StateChange, principal: CurrentPrincipal, svc: Svc
) -> dict[str, Any]:
    states = _states(svc)
    if not principal.sees_all and agent not in principal.agents:
        raise Forbidden("this agent is not yours", details={"agent": agent})
    if agent not in states.presence.agents():
        raise NotFound("no such agent", details={"agent": agent})
    reasons = svc.config().widget.pause_reasons
    if body.state == "paused" and body.reason not in reasons:
        raise BadRequest(
            "a pause needs a reason of [widget] pause_reasons",
            details={"path": "reason", "allowed": list(reasons)},
        )
    args: dict[str, Any] = {"agent": agent, "state": body.state}
    if body.state == "paused":
        args["reason"] = body.reason
    # The websocket's command: the same schema, rights and store as agent.state.set.
    await svc.commands(principal, "agent.state.set", args)
    return _state(states, agent)


@router.get("/api/colleagues", summary="Every agent with their presence and extension")
async def colleagues(principal: CurrentPrincipal, svc: Svc) -> list[dict[str, Any]]:
    states = _states(svc)
    out = []
    for a in svc.config().agents:
        status = states.presence.status(a.key)
        out.append(
            {
                "agent": a.key,
                "display_name": a.name,
                "extension": a.extension,
                "state": status.declared.value,
                "on_call": status.calls > 0,
            }
        )
    return out


@router.get("/api/call-lists", summary="The auto-dialer's call lists and their progress")
async def call_lists(principal: CurrentPrincipal, svc: Svc) -> list[dict[str, Any]]:
    rows = await svc.store.contacts.call_list_progress()
    return [
        {"id": str(list_id), "name": name, "total": total, "done": done, "left": total - done}
        for list_id, name, total, done in rows
    ]
