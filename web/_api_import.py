"""Importing clients and leads from CSV or XLSX: a preview with the column
mapping, the import in one transaction, the history and its undo.

The file is sent as ``multipart/form-data`` (``file``, and ``options``: a JSON
object, :class:`ImportOptions`) to both ``/api/imports/preview`` and
``/api/imports``: the server keeps nothing between the two, and the import checks
every row again before writing. A file with a bad row is refused whole (400, the
rows listed by line in ``details.rows``), nothing written. Importing and undoing
need the supervisor or admin role: an import touches contacts of everyone.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crm_store import Conflict, NotFound
from crm_store.contact_import import (
    FIELDS,
    Target,
    check_mapping,
    read_drafts,
    suggest_mapping,
)
from crm_store.importing import MAX_IMPORT_BYTES, ImportLimits, ImportRejected, RowError, Table
from crm_store.importing import read_table as _read_table
from crm_store.repos.imports import ImportPlan, ImportRecord, Skipped
from ws_gateway import Principal
from ws_gateway.exceptions import BadRequest, Forbidden
from ws_gateway.exceptions import Conflict as ApiConflict
from ws_gateway.exceptions import NotFound as ApiNotFound

from ._services import Services, services
from .errors import TooLarge
from .security import CurrentPrincipal

__all__ = ["MAX_UPLOAD_BYTES", "router"]

log = structlog.get_logger(__name__)

router = APIRouter(tags=["import"])

Svc = Annotated[Services, Depends(services)]

#: The largest request an upload may be: the file's limit and the form around it.
MAX_UPLOAD_BYTES = MAX_IMPORT_BYTES + 64 * 1024
_SAMPLE_ROWS = 10
_LISTED = 1000
_XLSX_MAGIC = b"PK\x03\x04"
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "a bad option, mapping or row (listed by line in details.rows)"},
    403: {"description": "importing needs the supervisor or admin role"},
    413: {"description": "the file is over its limit in bytes"},
}


class ImportOptions(BaseModel):
    """How to read the file and what to do with it."""

    model_config = ConfigDict(extra="forbid")

    target: Literal["clients", "leads"] = "clients"
    format: Literal["csv", "xlsx"] | None = Field(
        default=None, description="Guessed from the file's first bytes when absent."
    )
    encoding: Literal["utf-8", "windows-1251", "windows-1250", "latin-1"] | None = Field(
        default=None, description="A CSV's encoding; guessed when absent."
    )
    delimiter: Literal[",", ";", "\t", "|"] | None = Field(
        default=None, description="A CSV's delimiter; guessed when absent."
    )
    header: bool = Field(default=True, description="The first row names the columns.")
    mapping: dict[int, str] | None = Field(
        default=None,
        description="Column index (0-based) to field (see `fields` in the preview, or "
        "`custom:<name>` for a client's custom field); suggested from the header when "
        "absent.",
    )
    skip_bad_rows: bool = Field(
        default=False,
        description="Import the good rows and leave the bad ones out (they are listed); "
        "without it a file with a bad row is refused whole.",
    )
    duplicates: Literal["skip", "update", "create"] = Field(
        default="skip",
        description="What a row whose phone or email an existing contact has does: "
        "nothing, update that contact, or make a new one anyway.",
    )


class RowProblem(BaseModel):
    line: int
    message: str


class ImportCounts(BaseModel):
    rows: int = Field(description="Rows read, header excluded, empty rows excluded.")
    create: int
    update: int
    skip: int
    bad: int


class ImportPreview(BaseModel):
    format: Literal["csv", "xlsx"]
    encoding: str | None
    delimiter: str | None
    columns: list[str]
    sample: list[list[str]]
    sample_lines: list[int] = Field(description="The line each sample row starts on.")
    mapping: dict[int, str]
    fields: list[str]
    mapping_problems: list[str]
    counts: ImportCounts
    bad_rows: list[RowProblem] = Field(description=f"The first {_LISTED} bad rows.")
    skipped: list[RowProblem] = Field(description=f"The first {_LISTED} duplicates left out.")


class ImportSummary(BaseModel):
    id: uuid.UUID
    target: str
    filename: str | None
    user_id: uuid.UUID | None
    created_at: datetime
    rows: int
    created: int
    updated: int
    skipped: int
    undone_at: datetime | None


class ImportResult(BaseModel):
    record: ImportSummary
    skipped: list[RowProblem] = Field(description="Duplicates left out (the first 1000).")
    bad_rows: list[RowProblem] = Field(description="Bad rows left out (the first 1000).")


class ImportHistory(BaseModel):
    imports: list[ImportSummary]


def _summary(record: ImportRecord) -> ImportSummary:
    return ImportSummary(
        id=record.id,
        target=record.target,
        filename=record.filename,
        user_id=record.user_id,
        created_at=record.created_at,
        rows=record.rows,
        created=record.created,
        updated=record.updated,
        skipped=record.skipped,
        undone_at=record.undone_at,
    )


def _importer(principal: Principal) -> None:
    if not principal.sees_all:
        raise Forbidden("importing needs the supervisor or admin role")


def _options(text: str) -> ImportOptions:
    try:
        return ImportOptions.model_validate(json.loads(text or "{}"))
    except json.JSONDecodeError as exc:
        raise BadRequest(f"options: not JSON ({exc.msg})", details={"path": "options"}) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(["options", *(str(p) for p in first["loc"])])
        raise BadRequest(f"invalid {path}: {first['msg']}", details={"path": path}) from None


async def _read(file: UploadFile, options: ImportOptions) -> tuple[Table, bytes]:
    data = await file.read(MAX_IMPORT_BYTES + 1)
    if len(data) > MAX_IMPORT_BYTES:
        raise TooLarge(
            f"the file is larger than {MAX_IMPORT_BYTES} bytes",
            details={"path": "file", "limit": MAX_IMPORT_BYTES},
        )
    if not data.strip():
        raise BadRequest("the file is empty", details={"path": "file"})
    fmt = options.format or ("xlsx" if data.startswith(_XLSX_MAGIC) else "csv")
    try:
        # Seconds of parsing for a large file: off the daemon's loop.
        table = await asyncio.to_thread(
            _read_table,
            data,
            format=fmt,
            encoding=options.encoding,
            delimiter=options.delimiter,
            limits=ImportLimits(),
        )
    except ImportRejected as exc:
        raise _rejected(exc.errors, "the file cannot be read") from None
    return table, data


def _rejected(errors: list[RowError], what: str) -> BadRequest:
    shown = "; ".join(f"line {e.line}: {e.message}" for e in errors[:3])
    return BadRequest(
        f"{what}: {shown}" + (f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""),
        details={
            "path": "file",
            "rows": [{"line": e.line, "message": e.message} for e in errors[:_LISTED]],
            "bad": len(errors),
        },
    )


def _columns(table: Table, header: bool) -> list[str]:
    width = table.width
    names = table.rows[0][1] if header and table.rows else []
    return [
        (names[i].strip() if i < len(names) and names[i].strip() else f"#{i + 1}")
        for i in range(width)
    ]


def _skipped(skip: list[Skipped]) -> list[RowProblem]:
    return [RowProblem(line=s.line, message=s.reason) for s in skip[:_LISTED]]


async def _prepare(
    svc: Services, table: Table, options: ImportOptions, *, plan: bool = True
) -> tuple[dict[int, str], list[str], list[Any], list[RowError], ImportPlan | None]:
    target: Target = options.target
    header_cells = table.rows[0][1] if options.header and table.rows else []
    mapping = (
        dict(options.mapping)
        if options.mapping is not None
        else suggest_mapping(header_cells, target)
    )
    problems = check_mapping(mapping, table.width, target)
    if problems:
        return mapping, problems, [], [], None
    drafts, errors = await asyncio.to_thread(
        read_drafts, table, mapping, region=svc.store.region, header=options.header
    )
    found = await svc.store.imports.plan(target, drafts, options.duplicates) if plan else None
    return mapping, problems, drafts, errors, found


@router.post(
    "/api/imports/preview",
    summary="Read a file: columns, first rows, mapping, bad rows and duplicates",
    response_model=ImportPreview,
    responses=_ERRORS,
)
async def preview(
    principal: CurrentPrincipal,
    svc: Svc,
    file: Annotated[UploadFile, File(description="The CSV or XLSX file")],
    options: Annotated[str, Form(description="ImportOptions as JSON")] = "{}",
) -> ImportPreview:
    _importer(principal)
    opts = _options(options)
    table, _ = await _read(file, opts)
    mapping, problems, _, errors, plan = await _prepare(svc, table, opts)
    body_rows = table.rows[1:] if opts.header else table.rows
    rows = sum(1 for _, cells in body_rows if any(c.strip() for c in cells))
    return ImportPreview(
        format=table.format,
        encoding=table.encoding,
        delimiter=table.delimiter,
        columns=_columns(table, opts.header),
        sample=[cells for _, cells in body_rows[:_SAMPLE_ROWS]],
        sample_lines=[line for line, _ in body_rows[:_SAMPLE_ROWS]],
        mapping=mapping,
        fields=[*FIELDS, "custom:"],
        mapping_problems=problems,
        counts=ImportCounts(
            rows=rows,
            create=len(plan.create) if plan else 0,
            update=len(plan.update) if plan else 0,
            skip=len(plan.skip) if plan else 0,
            bad=len(errors),
        ),
        bad_rows=[RowProblem(line=e.line, message=e.message) for e in errors[:_LISTED]],
        skipped=_skipped(plan.skip) if plan else [],
    )


@router.post(
    "/api/imports",
    status_code=201,
    summary="Import a file in one transaction (refused whole if any row is bad)",
    response_model=ImportResult,
    responses=_ERRORS,
)
async def run_import(
    principal: CurrentPrincipal,
    svc: Svc,
    file: Annotated[UploadFile, File(description="The CSV or XLSX file")],
    options: Annotated[str, Form(description="ImportOptions as JSON")] = "{}",
) -> JSONResponse:
    _importer(principal)
    opts = _options(options)
    table, _ = await _read(file, opts)
    # The plan is made again inside the import's transaction.
    _, problems, drafts, errors, _ = await _prepare(svc, table, opts, plan=False)
    if problems:
        raise BadRequest(
            f"the mapping cannot be used: {problems[0]}",
            details={"path": "options.mapping", "problems": problems},
        )
    if errors and not opts.skip_bad_rows:
        raise _rejected(errors, "nothing was imported")
    outcome = await svc.store.imports.run(
        opts.target,
        drafts,
        opts.duplicates,
        filename=(file.filename or None),
        rows=len(drafts) + len(errors),
        responsible_user_id=principal.user_id,
        actor=principal.user_id,
    )
    result = ImportResult(
        record=_summary(outcome.record),
        skipped=_skipped(outcome.skipped),
        bad_rows=[RowProblem(line=e.line, message=e.message) for e in errors[:_LISTED]],
    )
    return JSONResponse(result.model_dump(mode="json"), status_code=201)


@router.get(
    "/api/imports",
    summary="The import history, newest first",
    response_model=ImportHistory,
    responses={403: _ERRORS[403]},
)
async def history(principal: CurrentPrincipal, svc: Svc) -> ImportHistory:
    _importer(principal)
    return ImportHistory(imports=[_summary(r) for r in await svc.store.imports.history()])


@router.post(
    "/api/imports/{import_id}/undo",
    summary="Undo an import: remove what it created, restore what it updated",
    response_model=ImportSummary,
    responses={
        403: _ERRORS[403],
        404: {"description": "no such import"},
        409: {"description": "already undone"},
    },
)
async def undo(import_id: uuid.UUID, principal: CurrentPrincipal, svc: Svc) -> ImportSummary:
    _importer(principal)
    try:
        record = await svc.store.imports.undo(import_id, actor=principal.user_id)
    except NotFound:
        raise ApiNotFound("no such import", details={"id": str(import_id)}) from None
    except Conflict:
        raise ApiConflict(
            "this import was already undone", details={"id": str(import_id)}
        ) from None
    return _summary(record)
