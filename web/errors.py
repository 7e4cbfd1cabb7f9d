"""API errors: the websocket's stable codes, as JSON with an HTTP status.

Every error body is ``{"error": {"code": ..., "message": ..., "details": {...}}}``.
The codes are those of the websocket protocol (``ws_gateway.exceptions``), plus
``unauthenticated`` (no valid session or token: 401) and ``too_large`` (413).
``message`` is written by Switchboard for people, never taken from an exception.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ws_gateway.exceptions import CommandError

__all__ = ["STATUS", "TooLarge", "Unauthenticated", "error_body", "install_handlers"]

log = structlog.get_logger(__name__)


class Unauthenticated(CommandError):
    """No valid session cookie or bearer token."""

    code = "unauthenticated"


class TooLarge(CommandError):
    """A request body or field over its limit."""

    code = "too_large"


STATUS: dict[str, int] = {
    "bad_request": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    "rate_limited": 429,
    "internal": 500,
    "unavailable": 503,
}
"""HTTP status of each error code."""

_BY_STATUS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "bad_request",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _response(code: str, message: str, details: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=STATUS.get(code, 500))


def install_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` a JSON error body with a stable code."""

    @app.exception_handler(CommandError)
    async def command_error(request: Request, exc: CommandError) -> JSONResponse:
        return _response(exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        path = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        # The input itself is not echoed: it may be 10 MB, or HTML.
        return _response(
            "bad_request",
            f"invalid request: {path or 'body'}: {first.get('msg', 'invalid')}",
            {"path": path},
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _BY_STATUS.get(exc.status_code, "internal")
        message = exc.detail if isinstance(exc.detail, str) else code
        return _response(code, message)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("http.internal_error", path=request.url.path, exc_info=exc)
        return _response("internal", "internal error; the details are in the server's log")
