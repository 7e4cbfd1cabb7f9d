"""The gateway's settings (how it listens, what it tolerates) and its counters."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from config import WebsocketConfig

from .protocol import MAX_MESSAGE_BYTES

__all__ = ["GatewaySettings", "GatewayStats", "tls_context"]


@dataclass(frozen=True, kw_only=True, slots=True)
class GatewaySettings:
    """How the gateway listens and what it tolerates.

    ``port=0`` picks a free port (read it from :attr:`Gateway.port`).
    ``allow_missing_origin`` admits clients that send no ``Origin`` header:
    browsers always send one, so this only lets non-browser integrations in
    (they still need a token). ``compression`` (permessage-deflate) is off by
    default: the fan-out sends each event to every client, and deflate would
    compress it once per client and keep a compression context per connection.

    A client is too slow (closed with 4008) when more than ``client_queue``
    messages wait in its backlog, or when its transport, holding more than
    ``client_buffer`` bytes, does not drain within ``send_timeout``.
    ``client_buffer`` is also the websocket write limit (flow control's high
    water mark); up to it, events are written to the client directly.

    Admission: at most ``max_unauthenticated`` connections wait for their auth
    message at once, ``max_unauthenticated_per_address`` of them from one
    address (more are closed with 1013); a user has at most
    ``max_sessions_per_user`` sessions (one more is closed with 4409); an
    address with ``auth_failures_per_address`` failed authentications within
    ``auth_failure_window`` seconds is closed with 4429 before its token is
    read. Open sessions are re-checked every ``session_check_interval``
    seconds when the gateway has a session check.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    allowed_origins: tuple[str, ...] = ()
    allow_missing_origin: bool = True
    ssl: ssl.SSLContext | None = None
    max_message_bytes: int = MAX_MESSAGE_BYTES
    commands_per_second: float = 20
    ping_interval: float = 20.0
    replay_buffer: int = 10000
    client_queue: int = 1000
    client_buffer: int = 32768
    auth_timeout: float = 5.0
    command_timeout: float = 10.0
    send_timeout: float = 10.0
    close_timeout: float = 5.0
    bus_queue: int = 10000
    compression: bool = False
    max_unauthenticated: int = 256
    max_unauthenticated_per_address: int = 32
    max_sessions_per_user: int = 16
    auth_failures_per_address: int = 30
    auth_failure_window: float = 60.0
    session_check_interval: float = 0.5

    @classmethod
    def from_config(cls, cfg: WebsocketConfig, **overrides: Any) -> GatewaySettings:
        """Settings from ``[websocket]``; TLS is on when ``tls_cert`` is set."""
        context = None
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            context = tls_context(Path(cfg.tls_cert), Path(cfg.tls_key))
        settings = cls(
            host=cfg.host,
            port=cfg.port,
            allowed_origins=tuple(cfg.allowed_origins),
            ssl=context,
            max_message_bytes=cfg.max_message_bytes,
            commands_per_second=cfg.commands_per_second,
            ping_interval=cfg.ping_interval,
            replay_buffer=cfg.replay_buffer,
            client_queue=cfg.client_queue,
            max_unauthenticated=cfg.max_unauthenticated,
            max_unauthenticated_per_address=cfg.max_unauthenticated_per_address,
            max_sessions_per_user=cfg.max_sessions_per_user,
            auth_failures_per_address=cfg.auth_failures_per_address,
            auth_failure_window=cfg.auth_failure_window,
            session_check_interval=cfg.session_check_interval,
        )
        return replace(settings, **overrides)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+) from PEM certificate chain and key files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


@dataclass(slots=True)
class GatewayStats:
    """Counters for metrics and tests; a copy, not live.

    ``events_direct`` and ``events_queued`` count event deliveries (one event
    to one client) written directly by the fan-out and appended to a client's
    backlog. ``authenticating`` is the connections waiting for their auth
    message now; ``closed_revoked`` counts sessions closed by the session
    check, ``closed_over_capacity`` connections refused with 1013 or 4409.
    """

    connected: int = 0
    authenticating: int = 0
    authenticated: int = 0
    events: int = 0
    events_direct: int = 0
    events_queued: int = 0
    seq: int = 0
    closed_unauthorized: int = 0
    closed_too_slow: int = 0
    closed_rate_limited: int = 0
    closed_revoked: int = 0
    closed_auth_throttled: int = 0
    closed_over_capacity: int = 0
