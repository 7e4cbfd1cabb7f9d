"""The websocket gateway: how CRM front ends see and drive the telephony.

Clients authenticate with an API token in their first message, receive a
snapshot of what they may see (active calls, agent states, dialer sessions)
and then every bus event they may see, numbered, and send commands that are
validated, checked against their rights and handed to a
:class:`CommandHandler`. The protocol is in ``docs/protocol.md``; its JSON
Schemas are in ``ws_gateway/schemas/``.
"""

from .auth import (
    Authenticator,
    Principal,
    SessionCheck,
    principal_from_user,
    store_authenticator,
    store_session_check,
)
from .exceptions import (
    BadRequest,
    CommandError,
    Conflict,
    Forbidden,
    GatewayError,
    InternalError,
    InvalidState,
    NotFound,
    RateLimited,
    Unavailable,
)
from .protocol import CloseCode, SessionState
from .rights import COMMANDS, Scope
from .server import CommandHandler, Gateway, GatewaySettings, GatewayStats, tls_context
from .state import Projection

__all__ = [
    "COMMANDS",
    "Authenticator",
    "BadRequest",
    "CloseCode",
    "CommandError",
    "CommandHandler",
    "Conflict",
    "Forbidden",
    "Gateway",
    "GatewayError",
    "GatewaySettings",
    "GatewayStats",
    "InternalError",
    "InvalidState",
    "NotFound",
    "Principal",
    "Projection",
    "RateLimited",
    "Scope",
    "SessionCheck",
    "SessionState",
    "Unavailable",
    "principal_from_user",
    "store_authenticator",
    "store_session_check",
    "tls_context",
]
