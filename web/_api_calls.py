"""The call log: history, a call's detail and recording, notes and dispositions,
and contacts created from a call."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse, JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from crm_store import CallDirection, NotFound, TaskKind
from crm_store.repos.contacts import HistoryEntry
from ws_gateway import Principal
from ws_gateway.exceptions import BadRequest, Forbidden
from ws_gateway.exceptions import NotFound as ApiNotFound
from ws_gateway.rights import can_open_call, check_call

from ._api_common import NOTE_MAX_CHARS, Directory, call_summary, client_card, lead_card
from ._services import Services, services
from .errors import TooLarge
from .security import CurrentPrincipal

__all__ = ["call_detail", "history_page", "router", "set_note"]

log = structlog.get_logger(__name__)

router = APIRouter(tags=["calls"])

Svc = Annotated[Services, Depends(services)]
_CALL_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "someone else's call"},
    404: {"description": "no such call"},
}


def _cursor(at: datetime, call_id: uuid.UUID) -> str:
    raw = f"{at.astimezone(UTC).isoformat()}|{call_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(text: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        at, _, call_id = raw.partition("|")
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed, uuid.UUID(call_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("before: not a cursor of this API", details={"path": "before"}) from None


@router.get("/api/calls", summary="Call history, newest first, paged")
async def list_calls(
    principal: CurrentPrincipal,
    svc: Svc,
    direction: Literal["inbound", "outbound", "internal"] | None = None,
    missed: bool | None = None,
    since: Annotated[AwareDatetime | None, Query()] = None,
    until: Annotated[AwareDatetime | None, Query()] = None,
    agent: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
    before: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    return await history_page(
        svc,
        principal,
        direction=direction,
        missed=missed,
        since=since,
        until=until,
        agent=agent,
        limit=limit,
        before=before,
    )


async def history_page(
    svc: Services,
    principal: Principal,
    *,
    direction: str | None = None,
    missed: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    agent: str | None = None,
    limit: int = 25,
    before: str | None = None,
) -> dict[str, Any]:
    """A page of the call log ``principal`` may see (the API's and the page's):
    ``{"calls": [...], "next": cursor or None}``."""
    directory = await Directory.load(svc)
    if principal.sees_all:
        user_id = None
        if agent is not None:
            user_id = directory.user_of_agent.get(agent)
            if user_id is None:
                return {"calls": [], "next": None}
    else:
        if agent is not None and agent not in principal.agents:
            raise Forbidden("this agent is not yours", details={"agent": agent})
        if not principal.agents:
            return {"calls": [], "next": None}
        # An agent's calls are stored under its user: the principal's own.
        user_id = principal.user_id
    page = await svc.store.contacts.history(
        agent_user_id=user_id,
        direction=CallDirection(direction) if direction is not None else None,
        missed=missed,
        since=since,
        until=until,
        before=_parse_cursor(before) if before is not None else None,
        limit=limit,
    )
    return {
        "calls": [call_summary(e, directory) for e in page.entries],
        "next": _cursor(*page.next) if page.next is not None else None,
    }


async def _open(
    svc: Services, principal: Principal, call_id: uuid.UUID
) -> tuple[HistoryEntry, Directory]:
    entry = await svc.store.contacts.entry(call_id)
    if entry is None:
        raise ApiNotFound("no such call", details={"call_id": str(call_id)})
    directory = await Directory.load(svc)
    stored_agent = directory.call_agent(entry.call.agent_user_id)
    if not can_open_call(principal, stored_agent):
        # A live call is also its current agent's: an inbound call ringing at
        # an agent's phone has no agent on its record until it is answered.
        live_agent = svc.calls.call_agent(call_id) if svc.calls.knows_call(call_id) else None
        check_call(principal, live_agent, call_id)
    return entry, directory


async def _open_for_command(svc: Services, principal: Principal, call_id: uuid.UUID) -> None:
    """Check ``call_id`` before a call command. A call the telephony still knows
    is left to the command, which checks the same rights against the live call
    and waits for its record (an inbound call's pop-up comes before its record
    is written)."""
    if not svc.calls.knows_call(call_id):
        await _open(svc, principal, call_id)


def _detail(entry: HistoryEntry, directory: Directory) -> dict[str, Any]:
    out = call_summary(entry, directory)
    out["recording_url"] = f"/api/calls/{entry.call.id}/recording" if out["recording"] else None
    out["recording_duration"] = entry.call.recording_duration if out["recording"] else None
    return out


@router.get("/api/calls/{call_id}", summary="One call", responses=_CALL_ERRORS)
async def get_call(call_id: uuid.UUID, principal: CurrentPrincipal, svc: Svc) -> dict[str, Any]:
    return await call_detail(svc, principal, call_id)


async def call_detail(svc: Services, principal: Principal, call_id: uuid.UUID) -> dict[str, Any]:
    """One call, after the rights check (the API's and the page's)."""
    entry, directory = await _open(svc, principal, call_id)
    return _detail(entry, directory)


def _recording_file(svc: Services, stored: str | None) -> Path | None:
    """The recording's file if it exists inside the recordings directory."""
    if stored is None:
        return None
    path = Path(stored)
    if svc.recordings is not None:
        root = svc.recordings.resolve()
        path = (root / path).resolve()
        if not path.is_relative_to(root):
            log.warning("http.recording_outside_directory", call_recording=stored)
            return None
    return path if path.is_file() else None


@router.get(
    "/api/calls/{call_id}/recording",
    summary="The call's recording (audio/wav; Range requests answered 206)",
    response_class=FileResponse,
    responses={**_CALL_ERRORS, 206: {"description": "the requested range"}},
)
async def get_recording(call_id: uuid.UUID, principal: CurrentPrincipal, svc: Svc) -> FileResponse:
    entry, _ = await _open(svc, principal, call_id)
    call = entry.call
    path = _recording_file(svc, call.recording_path) if call.recording_status == "ok" else None
    if path is None:
        raise ApiNotFound("this call has no recording", details={"call_id": str(call_id)})
    # The file's name is the call's id: the server's path never reaches the client.
    return FileResponse(
        path,
        media_type="audio/wav",
        filename=f"{call.id}.wav",
        content_disposition_type="inline",
        headers={"Cache-Control": "private, max-age=3600"},
    )


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Note(_Body):
    # Longer than NOTE_MAX_CHARS is refused with 413 by the endpoint.
    text: str


class FollowUp(_Body):
    title: str = Field(min_length=1, max_length=300)
    due_at: AwareDatetime
    kind: Literal["call", "email", "meeting", "other"] = "call"


class Disposition(_Body):
    disposition: str = Field(min_length=1, max_length=64)
    note: str | None = None
    follow_up: FollowUp | None = None


class NewClientFromCall(_Body):
    display_name: str = Field(min_length=1, max_length=200)


class NewLeadFromCall(_Body):
    name: str = Field(min_length=1, max_length=200)


def _check_note(text: str | None) -> None:
    if text is not None and len(text) > NOTE_MAX_CHARS:
        raise TooLarge(f"note over {NOTE_MAX_CHARS} characters", details={"limit": NOTE_MAX_CHARS})


@router.put("/api/calls/{call_id}/note", summary="Set the call's note", responses=_CALL_ERRORS)
async def put_note(
    call_id: uuid.UUID, body: Note, principal: CurrentPrincipal, svc: Svc
) -> dict[str, Any]:
    return await set_note(svc, principal, call_id, body.text)


async def set_note(
    svc: Services, principal: Principal, call_id: uuid.UUID, text: str
) -> dict[str, Any]:
    """Set a call's note after the checks (the API's and the page's)."""
    _check_note(text)
    await _open(svc, principal, call_id)
    await svc.store.calls.set_note(call_id, text or None, actor=principal.user_id)
    entry, directory = await _open(svc, principal, call_id)
    return call_summary(entry, directory)


@router.post(
    "/api/calls/{call_id}/disposition",
    summary="Wrap-up: the call's outcome, a note, a follow-up task",
    responses=_CALL_ERRORS,
)
async def post_disposition(
    call_id: uuid.UUID, body: Disposition, principal: CurrentPrincipal, svc: Svc
) -> dict[str, Any]:
    _check_note(body.note)
    allowed = svc.config().widget.dispositions
    if body.disposition not in allowed:
        raise BadRequest(
            "not a disposition of [widget] dispositions",
            details={"path": "disposition", "allowed": list(allowed)},
        )
    entry, _ = await _open(svc, principal, call_id)
    if svc.calls.knows_call(call_id):
        # A live or just-ended call: the command also ends a dialer call's wrap-up.
        args: dict[str, Any] = {"call_id": str(call_id), "disposition": body.disposition}
        await svc.commands(principal, "call.disposition", args)
    else:
        await svc.store.calls.set_disposition(call_id, body.disposition, actor=principal.user_id)
    if body.note:
        await svc.store.calls.set_note(call_id, body.note, actor=principal.user_id)
    if body.follow_up is not None:
        contact = entry.contact
        await svc.store.tasks.create(
            body.follow_up.title,
            kind=TaskKind(body.follow_up.kind),
            due_at=body.follow_up.due_at,
            assignee_user_id=principal.user_id,
            client_id=contact.id if contact is not None and contact.kind == "client" else None,
            lead_id=contact.id if contact is not None and contact.kind == "lead" else None,
            note=f"call {call_id}",
            actor=principal.user_id,
        )
    entry, directory = await _open(svc, principal, call_id)
    return call_summary(entry, directory)


@router.post(
    "/api/calls/{call_id}/client",
    status_code=201,
    summary="Create a client from the call's unknown number",
    responses=_CALL_ERRORS,
)
async def post_client(
    call_id: uuid.UUID, body: NewClientFromCall, principal: CurrentPrincipal, svc: Svc
) -> JSONResponse:
    await _open_for_command(svc, principal, call_id)
    args = {"call_id": str(call_id), "display_name": body.display_name}
    result = await svc.commands(principal, "call.create_client", args)
    try:
        client = await svc.store.clients.get(uuid.UUID(str(result["client_id"])))
    except NotFound:
        raise ApiNotFound("the client was removed meanwhile") from None
    card = await client_card(svc.store, principal, await Directory.load(svc), client)
    return JSONResponse(card, status_code=201)


@router.post(
    "/api/calls/{call_id}/lead",
    status_code=201,
    summary="Create a lead from the call's unknown number",
    responses=_CALL_ERRORS,
)
async def post_lead(
    call_id: uuid.UUID, body: NewLeadFromCall, principal: CurrentPrincipal, svc: Svc
) -> JSONResponse:
    await _open_for_command(svc, principal, call_id)
    result = await svc.commands(
        principal, "call.create_lead", {"call_id": str(call_id), "name": body.name}
    )
    try:
        lead = await svc.store.leads.get(uuid.UUID(str(result["lead_id"])))
    except NotFound:
        raise ApiNotFound("the lead was removed meanwhile") from None
    card = await lead_card(svc.store, principal, await Directory.load(svc), lead)
    return JSONResponse(card, status_code=201)
