"""Tasks and the calendar: call-backs, e-mails and meetings with a due time, a
duration and a reminder; the lists (mine, overdue, today, upcoming, done), the
kanban's columns, a calendar's range, "call now", a dialer list of today's call
tasks, and the reminders the widget shows.

Agents see and change the tasks assigned to them; supervisors and admins
everyone's (see :func:`ws_gateway.rights.can_open_task`). "Today" is the site's
day (``[site] timezone``)."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from crm_store import CallListEntry, NotFound, Task, TaskKind, TaskStatus
from crm_store.repos.tasks import REMIND_MINUTES, UNSET
from ws_gateway import Principal
from ws_gateway.exceptions import BadRequest, Forbidden
from ws_gateway.exceptions import Conflict as ApiConflict
from ws_gateway.exceptions import NotFound as ApiNotFound
from ws_gateway.rights import can_open_task, check_contact

from ._api_common import NOTE_MAX_CHARS, Directory
from ._services import Services, services
from .security import CurrentPrincipal

__all__ = ["day_bounds", "list_tasks", "router", "task_row"]

router = APIRouter(tags=["tasks"])

Svc = Annotated[Services, Depends(services)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad input; details.path names the field"},
    403: {"description": "the task (or its contact) is not yours"},
    404: {"description": "no such task, user, client or lead"},
}

View = Literal["mine", "overdue", "today", "upcoming", "done", "all"]
_MAX_RANGE = timedelta(days=62)
_LOW, _HIGH = REMIND_MINUTES


class TaskRow(BaseModel):
    id: uuid.UUID
    title: str
    kind: TaskKind
    description: str | None
    due_at: str | None
    duration_minutes: int | None
    remind_minutes: int | None
    assignee: dict[str, str] | None
    contact: dict[str, str] | None
    status: TaskStatus
    done: bool
    overdue: bool
    created_at: str


class TaskList(BaseModel):
    tasks: list[TaskRow]
    total: int


def task_row(
    task: Task, directory: Directory, names: dict[uuid.UUID, str], now: datetime
) -> dict[str, Any]:
    contact = None
    if task.client_id is not None:
        contact = {
            "kind": "client",
            "id": str(task.client_id),
            "display_name": names.get(task.client_id, ""),
        }
    elif task.lead_id is not None:
        contact = {
            "kind": "lead",
            "id": str(task.lead_id),
            "display_name": names.get(task.lead_id, ""),
        }
    return {
        "id": str(task.id),
        "title": task.title,
        "kind": task.kind.value,
        "description": task.note,
        "due_at": None if task.due_at is None else task.due_at.isoformat(),
        "duration_minutes": task.duration_minutes,
        "remind_minutes": task.remind_minutes,
        "assignee": directory.person(task.assignee_user_id),
        "contact": contact,
        "status": task.status.value,
        "done": task.done,
        "overdue": not task.done and task.due_at is not None and task.due_at < now,
        "created_at": task.created_at.isoformat(),
    }


async def contact_names(svc: Services, tasks: list[Task]) -> dict[uuid.UUID, str]:
    names = dict(await svc.store.clients.display_names(t.client_id for t in tasks if t.client_id))
    for lead_id in {t.lead_id for t in tasks if t.lead_id is not None}:
        with contextlib.suppress(NotFound):
            names[lead_id] = (await svc.store.leads.get(lead_id)).display_name
    return names


async def rows(svc: Services, tasks: list[Task]) -> list[dict[str, Any]]:
    directory = await Directory.load(svc)
    names = await contact_names(svc, tasks)
    now = datetime.now(UTC)
    return [task_row(t, directory, names, now) for t in tasks]


def day_bounds(svc: Services, now: datetime) -> tuple[datetime, datetime]:
    """The start and end (UTC) of the site's day that holds ``now``."""
    tz = ZoneInfo(svc.config().site.timezone) if svc.config().site.timezone else UTC
    local = now.astimezone(tz)
    start = datetime(local.year, local.month, local.day, tzinfo=tz)
    end = start + timedelta(days=1)
    return start.astimezone(UTC), end.astimezone(UTC)


def _whose(principal: Principal, assignee: uuid.UUID | None) -> uuid.UUID | None:
    """The assignee filter: agents always their own; supervisors who they ask for."""
    if not principal.sees_all:
        if assignee is not None and assignee != principal.user_id:
            raise Forbidden("agents see their own tasks", details={"path": "assignee"})
        return principal.user_id
    return assignee


async def list_tasks(
    svc: Services,
    principal: Principal,
    view: View,
    *,
    assignee: uuid.UUID | None = None,
    kind: TaskKind | None = None,
    limit: int = 200,
    offset: int = 0,
) -> dict[str, Any]:
    """One page of a task list (the API's and the page's)."""
    who = _whose(principal, assignee if view != "mine" else principal.user_id)
    now = datetime.now(UTC)
    start, end = day_bounds(svc, now)
    filters: dict[str, Any] = {}
    if view == "mine":
        filters = {"done": False}
    elif view == "overdue":
        filters = {"done": False, "due_before": now}
    elif view == "today":
        filters = {"done": False, "due_from": start, "due_before": end}
    elif view == "upcoming":
        filters = {"done": False, "due_from": end}
    elif view == "done":
        filters = {"done": True}
    tasks, total = await svc.store.tasks.query(
        assignee_user_id=who, kind=kind, limit=limit, offset=offset, **filters
    )
    return {"tasks": await rows(svc, tasks), "total": total}


@router.get("/api/tasks", summary="Tasks: mine, overdue, today, upcoming, done or all")
async def get_tasks(
    principal: CurrentPrincipal,
    svc: Svc,
    view: View = "mine",
    assignee: uuid.UUID | None = None,
    kind: TaskKind | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> TaskList:
    found = await list_tasks(
        svc, principal, view, assignee=assignee, kind=kind, limit=limit, offset=offset
    )
    return TaskList.model_validate(found)


async def range_tasks(
    svc: Services,
    principal: Principal,
    start: datetime,
    end: datetime,
    assignee: uuid.UUID | None = None,
) -> list[dict[str, Any]]:
    if end <= start:
        raise BadRequest("the range ends before it starts", details={"path": "end"})
    if end - start > _MAX_RANGE:
        raise BadRequest(f"a range is at most {_MAX_RANGE.days} days", details={"path": "end"})
    tasks, _ = await svc.store.tasks.query(
        assignee_user_id=_whose(principal, assignee), due_from=start, due_before=end, limit=1000
    )
    return await rows(svc, tasks)


@router.get(
    "/api/calendar",
    summary="The tasks due in a range (a calendar's month, week or day)",
    responses=_ERRORS,
)
async def get_calendar(
    principal: CurrentPrincipal,
    svc: Svc,
    start: AwareDatetime,
    end: AwareDatetime,
    assignee: uuid.UUID | None = None,
) -> list[TaskRow]:
    found = await range_tasks(svc, principal, start, end, assignee)
    return [TaskRow.model_validate(r) for r in found]


@router.get("/api/tasks/board", summary="The kanban: open and done tasks by status")
async def get_board(
    principal: CurrentPrincipal, svc: Svc, assignee: uuid.UUID | None = None
) -> dict[str, list[TaskRow]]:
    return {
        k: [TaskRow.model_validate(r) for r in v]
        for k, v in (await board(svc, principal, assignee)).items()
    }


async def board(
    svc: Services, principal: Principal, assignee: uuid.UUID | None = None
) -> dict[str, list[dict[str, Any]]]:
    who = _whose(principal, assignee)
    out: dict[str, list[dict[str, Any]]] = {}
    for status in TaskStatus:
        tasks, _ = await svc.store.tasks.query(assignee_user_id=who, statuses=[status], limit=100)
        out[status.value] = await rows(svc, tasks)
    return out


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


Minutes = Annotated[int, Field(ge=_LOW, le=_HIGH)]


class NewTask(_Body):
    title: str = Field(min_length=1, max_length=300)
    kind: TaskKind = TaskKind.CALL
    description: str | None = Field(default=None, max_length=NOTE_MAX_CHARS)
    due_at: AwareDatetime | None = None
    duration_minutes: int | None = Field(default=None, ge=1, le=24 * 60)
    #: 5 minutes to 1 day before the due time.
    remind_minutes: Minutes | None = None
    #: Default: the caller. Agents may give tasks only to themselves.
    assignee_id: uuid.UUID | None = None
    client_id: uuid.UUID | None = None
    lead_id: uuid.UUID | None = None
    status: TaskStatus = TaskStatus.TODO


class TaskPatch(_Body):
    title: str | None = Field(default=None, min_length=1, max_length=300)
    kind: TaskKind | None = None
    description: str | None = Field(default=None, max_length=NOTE_MAX_CHARS)
    due_at: AwareDatetime | None = None
    duration_minutes: int | None = Field(default=None, ge=1, le=24 * 60)
    remind_minutes: Minutes | None = None
    assignee_id: uuid.UUID | None = None
    client_id: uuid.UUID | None = None
    lead_id: uuid.UUID | None = None
    status: TaskStatus | None = None


async def _check_links(
    svc: Services,
    principal: Principal,
    assignee: uuid.UUID | None,
    client_id: uuid.UUID | None,
    lead_id: uuid.UUID | None,
) -> None:
    if client_id is not None and lead_id is not None:
        raise BadRequest("a task is for a client or a lead, not both", details={"path": "lead_id"})
    if not can_open_task(principal, assignee):
        raise Forbidden(
            "giving a task to someone else needs the supervisor role",
            details={"path": "assignee_id"},
        )
    if assignee is not None:
        try:
            await svc.store.users.get(assignee)
        except NotFound:
            raise ApiNotFound("no such user", details={"path": "assignee_id"}) from None
    if client_id is not None:
        try:
            client = await svc.store.clients.get(client_id)
        except NotFound:
            raise ApiNotFound("no such client", details={"path": "client_id"}) from None
        check_contact(principal, client.visibility.value, client.responsible_user_id, client.id)
    if lead_id is not None:
        try:
            await svc.store.leads.get(lead_id)
        except NotFound:
            raise ApiNotFound("no such lead", details={"path": "lead_id"}) from None


async def _task(svc: Services, principal: Principal, task_id: uuid.UUID) -> Task:
    try:
        task = await svc.store.tasks.get(task_id)
    except NotFound:
        raise ApiNotFound("no such task", details={"id": str(task_id)}) from None
    if not can_open_task(principal, task.assignee_user_id):
        raise Forbidden("this task is not yours", details={"id": str(task_id)})
    return task


async def _one(svc: Services, task: Task) -> TaskRow:
    return TaskRow.model_validate((await rows(svc, [task]))[0])


@router.post("/api/tasks", status_code=201, summary="Create a task", responses=_ERRORS)
async def create_task(body: NewTask, principal: CurrentPrincipal, svc: Svc) -> JSONResponse:
    assignee = body.assignee_id or principal.user_id
    await _check_links(svc, principal, assignee, body.client_id, body.lead_id)
    if body.remind_minutes is not None and body.due_at is None:
        raise BadRequest("a reminder needs a due time", details={"path": "remind_minutes"})
    task = await svc.store.tasks.create(
        body.title,
        kind=body.kind,
        note=body.description or None,
        due_at=body.due_at,
        remind_minutes=body.remind_minutes,
        duration_minutes=body.duration_minutes,
        assignee_user_id=assignee,
        client_id=body.client_id,
        lead_id=body.lead_id,
        status=body.status,
        actor=principal.user_id,
    )
    return JSONResponse((await _one(svc, task)).model_dump(mode="json"), status_code=201)


@router.get("/api/tasks/{task_id}", summary="One task", responses=_ERRORS)
async def get_task(task_id: uuid.UUID, principal: CurrentPrincipal, svc: Svc) -> TaskRow:
    return await _one(svc, await _task(svc, principal, task_id))


@router.patch(
    "/api/tasks/{task_id}",
    summary="Change a task (the fields given; null clears due, duration, reminder, contact)",
    responses=_ERRORS,
)
async def patch_task(
    task_id: uuid.UUID, body: TaskPatch, principal: CurrentPrincipal, svc: Svc
) -> TaskRow:
    task = await _task(svc, principal, task_id)
    given = body.model_fields_set
    assignee = body.assignee_id if "assignee_id" in given else task.assignee_user_id
    client_id = body.client_id if "client_id" in given else task.client_id
    lead_id = body.lead_id if "lead_id" in given else task.lead_id
    if "client_id" in given and body.client_id is not None and "lead_id" not in given:
        lead_id = None
    if "lead_id" in given and body.lead_id is not None and "client_id" not in given:
        client_id = None
    await _check_links(svc, principal, assignee, client_id, lead_id)
    for required in ("title", "kind", "status"):
        if required in given and getattr(body, required) is None:
            raise BadRequest(f"{required} cannot be cleared", details={"path": required})
    due = body.due_at if "due_at" in given else task.due_at
    minutes = body.remind_minutes if "remind_minutes" in given else task.remind_minutes
    if minutes is not None and due is None:
        raise BadRequest("a reminder needs a due time", details={"path": "remind_minutes"})

    def pick(name: str) -> Any:
        return getattr(body, name) if name in given else UNSET

    task = await svc.store.tasks.update(
        task_id,
        title=pick("title"),
        kind=pick("kind"),
        note=pick("description"),
        due_at=pick("due_at"),
        duration_minutes=pick("duration_minutes"),
        remind_minutes=pick("remind_minutes"),
        assignee_user_id=assignee if "assignee_id" in given else UNSET,
        client_id=client_id if client_id != task.client_id else UNSET,
        lead_id=lead_id if lead_id != task.lead_id else UNSET,
        actor=principal.user_id,
    )
    if body.status is not None and body.status is not task.status:
        task = await svc.store.tasks.set_status(task_id, body.status, actor=principal.user_id)
    return await _one(svc, task)


class StatusBody(_Body):
    status: TaskStatus


@router.post(
    "/api/tasks/{task_id}/status",
    summary="Move a task to a kanban column (done completes it)",
    responses=_ERRORS,
)
async def post_status(
    task_id: uuid.UUID, body: StatusBody, principal: CurrentPrincipal, svc: Svc
) -> TaskRow:
    await _task(svc, principal, task_id)
    task = await svc.store.tasks.set_status(task_id, body.status, actor=principal.user_id)
    return await _one(svc, task)


@router.delete("/api/tasks/{task_id}", status_code=204, summary="Delete a task", responses=_ERRORS)
async def delete_task(task_id: uuid.UUID, principal: CurrentPrincipal, svc: Svc) -> Response:
    await _task(svc, principal, task_id)
    await svc.store.tasks.delete(task_id, actor=principal.user_id)
    return Response(status_code=204)


async def task_number(svc: Services, task: Task) -> str | None:
    """The number a call task calls: its client's or lead's first phone."""
    if task.client_id is not None:
        client = await svc.store.clients.get(task.client_id)
        return client.phones[0].number_e164 if client.phones else None
    if task.lead_id is not None:
        lead = await svc.store.leads.get(task.lead_id)
        return lead.phones[0].number_e164 if lead.phones else None
    return None


@router.post(
    "/api/tasks/{task_id}/call",
    summary="Call now: ring my phone, then dial the task's contact",
    responses={**_ERRORS, 409: {"description": "the contact has no phone"}},
)
async def post_call(task_id: uuid.UUID, principal: CurrentPrincipal, svc: Svc) -> dict[str, Any]:
    task = await _task(svc, principal, task_id)
    try:
        number = await task_number(svc, task)
    except NotFound:
        number = None
    if number is None:
        raise BadRequest("the task's contact has no phone number", details={"path": "contact"})
    args: dict[str, Any] = {"to": number}
    if task.client_id is not None:
        args["client_id"] = str(task.client_id)
    elif task.lead_id is not None:
        args["lead_id"] = str(task.lead_id)
    await svc.commands(principal, "call.originate", args)
    return {"to": number}


class DialerListBody(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)


class DialerListResult(BaseModel):
    list_id: uuid.UUID
    name: str
    added: int
    without_number: int


@router.post(
    "/api/tasks/dialer-list",
    status_code=201,
    summary="Make a dialer list of my open call tasks due today",
    responses={**_ERRORS, 409: {"description": "no call task with a number is due today"}},
)
async def post_dialer_list(
    body: DialerListBody, principal: CurrentPrincipal, svc: Svc
) -> JSONResponse:
    start, end = day_bounds(svc, datetime.now(UTC))
    tasks, _ = await svc.store.tasks.query(
        assignee_user_id=principal.user_id,
        done=False,
        kind=TaskKind.CALL,
        due_from=start,
        due_before=end,
        limit=1000,
    )
    entries: list[CallListEntry] = []
    missing = 0
    for task in tasks:
        try:
            number = await task_number(svc, task)
        except NotFound:
            number = None
        if number is None:
            missing += 1
            continue
        entries.append(CallListEntry(number, client_id=task.client_id, lead_id=task.lead_id))
    if not entries:
        raise ApiConflict("no call task with a phone number is due today")
    name = body.name or f"Call tasks {start.astimezone(UTC).date().isoformat()}"
    call_list, report = await svc.store.call_lists.create_list(
        name, principal.user_id, entries, actor=principal.user_id
    )
    result = DialerListResult(
        list_id=call_list.id, name=call_list.name, added=report.added, without_number=missing
    )
    return JSONResponse(result.model_dump(mode="json"), status_code=201)


class Reminders(BaseModel):
    reminders: list[TaskRow]
    #: When to ask again.
    poll_seconds: float


@router.get("/api/reminders", summary="My task reminders delivered and not dismissed yet")
async def get_reminders(principal: CurrentPrincipal, svc: Svc) -> Reminders:
    tasks = await svc.store.tasks.reminders_for(principal.user_id)
    return Reminders(
        reminders=[TaskRow.model_validate(r) for r in await rows(svc, tasks)],
        poll_seconds=svc.config().tasks.reminder_interval,
    )


@router.post(
    "/api/reminders/{task_id}/dismiss",
    status_code=204,
    summary="Dismiss a task's reminder",
    responses=_ERRORS,
)
async def dismiss_reminder(task_id: uuid.UUID, principal: CurrentPrincipal, svc: Svc) -> Response:
    await _task(svc, principal, task_id)
    await svc.store.tasks.dismiss_reminder(task_id, actor=principal.user_id)
    return Response(status_code=204)


class EmailBody(_Body):
    email: str | None = Field(
        default=None, min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
    )


@router.put("/api/me/email", summary="Where my task reminders are mailed (null: nowhere)")
async def put_email(body: EmailBody, principal: CurrentPrincipal, svc: Svc) -> EmailBody:
    await svc.store.users.set_email(principal.user_id, body.email, actor=principal.user_id)
    return body


@router.get("/api/me/email", summary="Where my task reminders are mailed")
async def get_email(principal: CurrentPrincipal, svc: Svc) -> EmailBody:
    return EmailBody(email=await svc.store.users.email_of(principal.user_id))
