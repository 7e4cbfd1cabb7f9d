"""The HTTP app: pages, the JSON API under ``/api`` and its OpenAPI description.

:func:`create_app` wires the routers; it holds no logic of its own.
"""

from __future__ import annotations

from fastapi import FastAPI

from . import api, auth, pages
from ._services import Services
from .errors import install_handlers

__all__ = ["create_app"]


def create_app(svc: Services) -> FastAPI:
    """The app serving ``svc``'s daemon; started by :class:`web.server.HttpServer`."""
    app = FastAPI(
        title="Switchboard",
        summary="Telephony companion for CRMs: contacts, calls, recordings, agents.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.services = svc
    install_handlers(app)
    app.include_router(auth.router)
    app.include_router(api.router)
    app.include_router(pages.router)
    return app
