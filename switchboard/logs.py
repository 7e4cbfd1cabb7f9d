"""Structured logging set-up: console for people, JSON for machines.

Everything in Switchboard logs through structlog. Context such as ``call_id``
or ``agent`` is bound with :func:`structlog.contextvars.bind_contextvars` on
the event loop's side; the processors below merge it into every line.

Secrets never reach the output: :func:`redact_secrets` masks the values of
keys that look like credentials, whatever the call site passed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["LEVELS", "REDACTED", "configure_logging", "redact_secrets", "set_level"]

REDACTED = "**********"

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Substrings of key names whose values are never printed.
_SECRET_MARKERS = ("secret", "password", "passwd", "token", "authorization", "credential")


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask values of keys that name a credential (``line_secret``, ``token`` …).

    A last line of defence: call sites should not pass secrets at all, but a
    slip must not put one into a journal that is shipped off the host.
    """
    for key in list(event_dict):
        lowered = key.lower()
        if any(marker in lowered for marker in _SECRET_MARKERS) and event_dict[key] is not None:
            event_dict[key] = REDACTED
    return event_dict


def set_level(level: str) -> None:
    """Change the minimum level at run time (used by SIGHUP reload)."""
    logging.getLogger().setLevel(LEVELS[level.lower()])


def configure_logging(
    *, fmt: str = "console", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library's logging alike.

    ``fmt`` is ``"console"`` (coloured only on a terminal) or ``"json"`` (one
    object per line, for journald or a log shipper). Third-party libraries that
    use :mod:`logging` (SQLAlchemy, Alembic, websockets) go through the same
    renderer, so a JSON deployment gets JSON lines only.
    """
    out = stream if stream is not None else sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())

    structlog.configure(
        processors=[
            # Checks the stdlib root level, so set_level() takes effect at once.
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)
    # SQLAlchemy's engine logger echoes statements with their parameters at
    # INFO; parameters can hold token hashes, so keep it at WARNING.
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
