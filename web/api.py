"""The JSON API under ``/api``: one router including each concern's.

Every endpoint takes the caller's principal (:data:`web.security.CurrentPrincipal`)
and decides what it may see with :mod:`ws_gateway.rights`, the module the
websocket uses; live call control stays on the websocket's commands.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import (
    _api_agents,
    _api_calls,
    _api_clients,
    _api_contacts,
    _api_dialer_lists,
    _api_export,
    _api_import,
    _api_leads,
    _api_settings,
    _api_tasks,
)

__all__ = ["router"]

router = APIRouter()
router.include_router(_api_settings.router)
router.include_router(_api_clients.router)
router.include_router(_api_contacts.router)
router.include_router(_api_calls.router)
router.include_router(_api_agents.router)
router.include_router(_api_leads.router)
router.include_router(_api_tasks.router)
router.include_router(_api_import.router)
router.include_router(_api_export.router)
router.include_router(_api_dialer_lists.router)
