"""The import page: import clients or leads (upload, mapping, preview, confirm),
the import history with undo, exports, call lists from a filter and the
do-not-call list. The page is a shell; ``import.js`` drives it through the JSON API
(``/api/imports``, ``/api/exports``, ``/api/call-lists``, ``/api/do-not-call``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from crm_store.contact_import import FIELDS
from crm_store.importing import ENCODINGS, MAX_COLUMNS, MAX_IMPORT_BYTES, MAX_ROWS

from ._pages_crm import crm_page
from ._services import Services, services
from .pages import Render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get("/import")
async def import_page(
    request: Request, svc: Annotated[Services, Depends(services)], renderer: Render
) -> Response:
    return await crm_page(
        request,
        svc,
        renderer,
        "crm/import.html",
        active="import",
        fields=list(FIELDS),
        encodings=ENCODINGS,
        max_bytes=MAX_IMPORT_BYTES,
        max_rows=MAX_ROWS,
        max_columns=MAX_COLUMNS,
    )
