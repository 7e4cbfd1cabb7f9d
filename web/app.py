"""The HTTP app: pages, the JSON API under ``/api`` and its OpenAPI description.

:func:`create_app` wires the routers, the health endpoints for load balancers,
the request body limit and the security headers every response carries.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config import Config

from . import _api_import, _pages_clients, _pages_import, _pages_leads, api, auth, i18n, pages
from ._api_settings import websocket_url
from ._services import Services
from .errors import error_body, install_handlers

__all__ = ["create_app"]

#: Pages that may load only what Switchboard serves; the websocket and the CRM
#: pages allowed to frame the embedded panel are added per request.
_CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; "
    "form-action 'self'"
)
#: The interactive docs page starts the vendored Swagger UI with an inline
#: script; that page alone gets it.
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; "
    "frame-ancestors 'none'"
)


def create_app(svc: Services) -> FastAPI:
    """The app serving ``svc``'s daemon; started by :class:`web.server.HttpServer`.

    Raises :class:`web.i18n.MissingCatalogues` when the compiled translations are
    not installed."""
    catalogues = i18n.load()
    version = pages.static_version()
    app = FastAPI(
        title="Switchboard",
        summary="Telephony companion for CRMs: contacts, calls, recordings, agents.",
        openapi_url="/api/openapi.json",
        # The docs page is web.pages.api_docs, on the vendored Swagger UI.
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = svc
    app.state.renderer = pages.Renderer(catalogues, version)
    install_handlers(app)

    @app.get("/healthz", tags=["health"], summary="The process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Started, and the store answers",
        responses={503: {"description": "starting, or the store does not answer"}},
    )
    async def readyz() -> JSONResponse:
        if not svc.ready():
            return JSONResponse({"status": "starting"}, status_code=503)
        health = await svc.store.check_health(timeout=2.0)
        if health.degraded and health.reason is not None:
            # The cause is in the daemon's log and STATUS; a probe needs only the verdict.
            return JSONResponse(
                {"status": "store_unavailable", "pending": health.pending}, status_code=503
            )
        return JSONResponse({"status": "ready"})

    app.include_router(auth.router)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(_pages_clients.router)
    app.include_router(_pages_leads.router)
    app.include_router(_pages_import.router)
    app.mount(
        "/static",
        pages.VersionedStatic(directory=pages.STATIC_DIR, version=version),
        name="static",
    )

    app.add_middleware(SecurityHeaders, config=svc.config)
    # Outermost: a body over the limit is refused before anything reads it.
    app.add_middleware(
        BodyLimit,
        limit=svc.config().http.max_body_bytes,
        # Imported files have their own limit (the import's, named in its errors).
        larger={"/api/imports": _api_import.MAX_UPLOAD_BYTES},
    )
    return app


class SecurityHeaders:
    """Add the content security policy, ``nosniff`` and the referrer policy to
    every response (a header the app set itself is kept).

    Pages may be framed by the origins of ``[websocket] allowed_origins`` (the
    CRM pages embedding the panel), and connect to the websocket.
    """

    def __init__(self, app: ASGIApp, *, config: Callable[[], Config]) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/api/docs":
            csp = _DOCS_CSP
        else:
            cfg = self.config()
            host = Headers(scope=scope).get("host")
            ancestors = " ".join(("'self'", *cfg.websocket.allowed_origins))
            ws = websocket_url(host, cfg)
            csp = f"{_CSP}; connect-src 'self' {ws}; frame-ancestors {ancestors}"
        extra = (
            (b"content-security-policy", csp.encode("latin-1")),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
        )

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyLimit:
    """Refuse a request body over ``limit`` bytes with 413 ``too_large``.

    A declared ``Content-Length`` over the limit is refused without handing
    anything to the app; a body sent without one (chunked) is read up to the limit
    first and refused as soon as it goes over, so the app never sees a part of it.
    Either way the rest of the body is read and discarded (up to 16 MiB) before
    the answer, so that the client reads a 413, not a reset connection.
    """

    def __init__(
        self, app: ASGIApp, *, limit: int, larger: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.default = limit
        #: Paths (and what is under them) allowed a larger body, with their limit.
        self.larger = dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = next(
            (
                size
                for prefix, size in self.larger.items()
                if path == prefix or path.startswith(prefix + "/")
            ),
            self.default,
        )
        declared: int | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _refuse(send, 400, "bad_request", "invalid Content-Length")
                    return
        if declared is not None and declared > limit:
            await _drain(receive, _DRAIN_MAX)
            await _too_large(send, limit)
            return
        if declared is not None or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, _capped(receive, limit), send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                if message.get("more_body", False):
                    await _drain(receive, _DRAIN_MAX - size)
                await _too_large(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


_DRAIN_MAX = 16 * 1024 * 1024
"""How much of a refused body is read and thrown away before the 413, so that a
client still sending gets the answer rather than a reset connection (a socket
closed with unread data is reset). A longer body is cut off."""


async def _drain(receive: Receive, budget: int) -> None:
    """Read and discard the request body, up to ``budget`` bytes."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _capped(receive: Receive, limit: int) -> Receive:
    """``receive`` that stops a body longer than its declared length at ``limit``."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                # The server enforces Content-Length; this is a second fence.
                return {"type": "http.disconnect"}
        return message

    return wrapped


async def _too_large(send: Send, limit: int) -> None:
    await _refuse(send, 413, "too_large", f"request body over {limit} bytes", {"limit": limit})


async def _refuse(
    send: Send, status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> None:
    body = json.dumps(error_body(code, message, details)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-content-type-options", b"nosniff"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
