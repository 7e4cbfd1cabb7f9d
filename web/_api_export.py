"""Exports of the lists (clients, leads, calls, tasks) to CSV and XLSX.

Rows are those the principal may see (:mod:`web._lists`), in the list's order and
with its filters. A cell a spreadsheet would take for a formula (starting with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is written with a leading
``'`` in CSV; in XLSX every cell is written as a string, which no spreadsheet runs.
The file is built on disk batch by batch, so memory stays bounded whatever the
list's length (at most :data:`~web._lists.MAX_LIST_ROWS` rows).
"""

from __future__ import annotations

import csv
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from crm_store import Call, Client, Lead, LeadStatus, Task
from ws_gateway.exceptions import BadRequest

from ._api_common import Directory
from ._lists import (
    MAX_LIST_ROWS,
    ListTooLong,
    visible_calls,
    visible_clients,
    visible_leads,
    visible_tasks,
)
from ._services import Services, services
from .errors import TooLarge
from .security import CurrentPrincipal

__all__ = ["neutralise", "router"]

router = APIRouter(tags=["export"])

Svc = Annotated[Services, Depends(services)]
Format = Literal["csv", "xlsx"]
_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file (UTF-8 CSV with a BOM, or an XLSX workbook)",
        "content": {"text/csv": {}, _MEDIA["xlsx"]: {}},
    },
    400: {"description": "a bad filter"},
    413: {"description": f"more than {MAX_LIST_ROWS} rows: narrow the filter"},
}


def neutralise(value: str) -> str:
    """``value`` safe in a CSV cell: a leading formula character gets a ``'``."""
    return "'" + value if value.startswith(_TRIGGERS) else value


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


class _Sheet:
    """A file written row by row on disk, CSV or XLSX."""

    def __init__(self, fmt: Format, delimiter: str) -> None:
        self.fmt = fmt
        fd, self.path = tempfile.mkstemp(prefix="switchboard-export-", suffix=f".{fmt}")
        os.close(fd)
        self._text: Any = None
        self._writer: Any = None
        self._book: Any = None
        if fmt == "csv":
            # utf-8-sig: the BOM makes spreadsheets read the file as UTF-8.
            self._text = open(self.path, "w", encoding="utf-8-sig", newline="")  # noqa: SIM115
            self._writer = csv.writer(self._text, delimiter=delimiter, lineterminator="\r\n")
        else:
            import openpyxl  # type: ignore[import-untyped]

            self._book = openpyxl.Workbook(write_only=True)
            self._sheet = self._book.create_sheet("Export")

    def row(self, values: Sequence[str]) -> None:
        if self.fmt == "csv":
            self._writer.writerow([neutralise(v) for v in values])
            return
        from openpyxl.cell import WriteOnlyCell  # type: ignore[import-untyped]

        cells = []
        for value in values:
            cell = WriteOnlyCell(self._sheet, value=value)
            # A string, never a formula, whatever it starts with.
            cell.data_type = "s"
            cells.append(cell)
        self._sheet.append(cells)

    def close(self) -> None:
        if self._text is not None:
            self._text.close()
        if self._book is not None:
            self._book.save(self.path)
            self._book.close()

    def discard(self) -> None:
        self.close()
        os.unlink(self.path)


async def _write(
    fmt: Format,
    delimiter: str,
    name: str,
    header: Sequence[str],
    batches: AsyncIterator[list[Any]],
    cells: Callable[[Any], Sequence[str]],
) -> FileResponse:
    sheet = _Sheet(fmt, delimiter)
    try:
        sheet.row(header)
        async for batch in batches:
            for item in batch:
                sheet.row(cells(item))
    except ListTooLong:
        sheet.discard()
        raise TooLarge(
            f"more than {MAX_LIST_ROWS} rows: narrow the filter",
            details={"limit": MAX_LIST_ROWS},
        ) from None
    except BaseException:
        sheet.discard()
        raise
    sheet.close()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    return FileResponse(
        sheet.path,
        media_type=_MEDIA[fmt],
        filename=f"{name}-{stamp}.{fmt}",
        background=BackgroundTask(os.unlink, sheet.path),
    )


def _delimiter(text: str) -> str:
    if text not in (",", ";", "\t"):
        raise BadRequest("delimiter: one of , ; or a tab", details={"path": "delimiter"})
    return text


FormatQ = Annotated[Format, Query(description="csv or xlsx")]
DelimiterQ = Annotated[str, Query(description="The CSV delimiter: , ; or a tab")]
IdsQ = Annotated[
    list[uuid.UUID] | None, Query(description="A selection: only these rows", max_length=10_000)
]


def _person(directory: Directory, user_id: uuid.UUID | None) -> str:
    found = directory.person(user_id)
    return found["display_name"] if found else ""


CLIENT_COLUMNS = (
    "name", "kind", "first_name", "last_name", "company", "phones", "emails", "street",
    "postcode", "city", "region", "country", "tags", "custom_fields", "responsible",
    "visibility", "created_at",
)  # fmt: skip


@router.get("/api/exports/clients", summary="The clients list as a file", responses=_RESPONSES)
async def export_clients(
    principal: CurrentPrincipal,
    svc: Svc,
    format: FormatQ = "csv",
    delimiter: DelimiterQ = ",",
    tag: Annotated[list[str] | None, Query(max_length=20)] = None,
    mine: bool = False,
    ids: IdsQ = None,
) -> FileResponse:
    directory = await Directory.load(svc)

    def cells(c: Client) -> list[str]:
        a = c.address
        return [
            c.display_name, c.kind.value, c.first_name or "", c.last_name or "",
            c.company_name or "", "; ".join(p.number_e164 for p in c.phones),
            "; ".join(c.emails), a.street or "", a.postcode or "", a.city or "",
            a.region or "", a.country or "", "; ".join(c.tags),
            "; ".join(f"{k}={v}" for k, v in sorted(c.custom_fields.items())),
            _person(directory, c.responsible_user_id), c.visibility.value, _iso(c.created_at),
        ]  # fmt: skip

    batches = visible_clients(svc, principal, tags=tag or (), mine=mine, ids=ids)
    return await _write(format, _delimiter(delimiter), "clients", CLIENT_COLUMNS, batches, cells)


LEAD_COLUMNS = (
    "name", "company", "phones", "emails", "source", "status", "owner", "created_at", "note",
)  # fmt: skip


@router.get("/api/exports/leads", summary="The leads list as a file", responses=_RESPONSES)
async def export_leads(
    principal: CurrentPrincipal,
    svc: Svc,
    format: FormatQ = "csv",
    delimiter: DelimiterQ = ",",
    status: Annotated[list[LeadStatus] | None, Query()] = None,
    owner: Annotated[Literal["me", "none"] | None, Query()] = None,
    ids: IdsQ = None,
) -> FileResponse:
    directory = await Directory.load(svc)

    def cells(lead: Lead) -> list[str]:
        return [
            lead.display_name, lead.company_name or "",
            "; ".join(p.number_e164 for p in lead.phones), "; ".join(lead.emails),
            lead.source.value, lead.status.value, _person(directory, lead.owner_user_id),
            _iso(lead.created_at), lead.note or "",
        ]  # fmt: skip

    batches = visible_leads(svc, principal, statuses=status or (), owner=owner, ids=ids)
    return await _write(format, _delimiter(delimiter), "leads", LEAD_COLUMNS, batches, cells)


CALL_COLUMNS = (
    "created_at", "direction", "from", "to", "agent", "answered_at", "ended_at",
    "end_reason", "disposition", "note",
)  # fmt: skip


@router.get("/api/exports/calls", summary="The call log as a file", responses=_RESPONSES)
async def export_calls(
    principal: CurrentPrincipal,
    svc: Svc,
    format: FormatQ = "csv",
    delimiter: DelimiterQ = ",",
    since: datetime | None = None,
    until: datetime | None = None,
) -> FileResponse:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise BadRequest(f"{name}: give a time zone", details={"path": name})
    directory = await Directory.load(svc)

    def cells(call: Call) -> list[str]:
        return [
            _iso(call.created_at), call.direction.value, call.from_number, call.to_number,
            directory.call_agent(call.agent_user_id) or "", _iso(call.answered_at),
            _iso(call.ended_at), call.end_reason.value if call.end_reason else "",
            call.disposition or "", call.note or "",
        ]  # fmt: skip

    batches = visible_calls(svc, principal, directory, since=since, until=until)
    return await _write(format, _delimiter(delimiter), "calls", CALL_COLUMNS, batches, cells)


TASK_COLUMNS = ("title", "kind", "due_at", "done", "assignee", "client_id", "lead_id", "note")


@router.get("/api/exports/tasks", summary="The tasks list as a file", responses=_RESPONSES)
async def export_tasks(
    principal: CurrentPrincipal,
    svc: Svc,
    format: FormatQ = "csv",
    delimiter: DelimiterQ = ",",
    done: bool | None = None,
) -> FileResponse:
    directory = await Directory.load(svc)

    def cells(task: Task) -> list[str]:
        return [
            task.title, task.kind.value, _iso(task.due_at), "yes" if task.done else "no",
            _person(directory, task.assignee_user_id), str(task.client_id or ""),
            str(task.lead_id or ""), task.note or "",
        ]  # fmt: skip

    batches = visible_tasks(svc, principal, done=done)
    return await _write(format, _delimiter(delimiter), "tasks", TASK_COLUMNS, batches, cells)
