"""What the web app needs from the daemon, handed over once at start-up.

The app never reaches into the daemon: it gets this bundle, built by the
daemon's lifespan (or by a test), and keeps it on ``app.state.services``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request

from bus.agent_states import AgentStates
from config import Config
from crm_store import Store
from ws_gateway import Principal
from ws_gateway.rights import CallDirectory

__all__ = ["CommandRunner", "Services", "services"]

CommandRunner = Callable[[Principal, str, Mapping[str, Any]], Awaitable[Mapping[str, Any]]]
"""``await run(principal, name, args)``: a websocket command, validated against its
schema and checked against the principal's rights exactly as the gateway does,
then carried out. Raises :class:`ws_gateway.exceptions.CommandError`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """The daemon's components the HTTP app uses."""

    store: Store
    #: The configuration as it is now (``[[agents]]`` is reloadable).
    config: Callable[[], Config]
    #: The agents' declared states (available, paused, offline); ``None`` in a
    #: process without telephony.
    agents: AgentStates | None
    #: Live-call commands, with the websocket's validation and rights.
    commands: CommandRunner
    #: The gateway's view of active and recently ended calls.
    calls: CallDirectory
    #: Whether the daemon has finished starting (``/readyz``).
    ready: Callable[[], bool]
    #: Where recordings are kept; paths in the store are checked to be inside it.
    recordings: Path | None = None


def services(request: Request) -> Services:
    """FastAPI dependency: the bundle of the app serving ``request``."""
    found: Services = request.app.state.services
    return found
