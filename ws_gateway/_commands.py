"""Commands from one client: read in order, rate-limited, checked, carried out.

Each message is parsed against the command schemas, checked against the
principal's rights, and handed to the :class:`CommandHandler` under
``command_timeout``; the reply (``result`` or ``error``) goes through the
client's delivery, in order with its events. One bad message gets an error
reply and the reader goes on with the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog
from websockets.exceptions import ConnectionClosed

from . import protocol as proto
from ._delivery import Client
from ._settings import GatewaySettings
from .auth import Principal
from .exceptions import BadRequest, CommandError, InternalError, RateLimited, Unavailable
from .protocol import CloseCode
from .rights import CallDirectory, authorize

__all__ = ["CommandHandler", "CommandReader"]

log = structlog.get_logger(__name__)


class CommandHandler(Protocol):
    """What carries out commands: the telephony side, the dialer, the store.

    ``handle`` gets commands the gateway has already validated against their
    schema and checked against the principal's rights (``args["agent"]`` is
    filled in for agent-scoped commands). It returns the JSON-ready ``data`` of
    the ``result`` reply, or raises a :class:`~ws_gateway.CommandError` subclass
    whose ``code`` the client receives. It runs under ``command_timeout`` and is
    cancelled if the client disconnects or the gateway closes: it must leave
    things consistent when cancelled.
    """

    async def handle(
        self, principal: Principal, name: str, args: dict[str, Any]
    ) -> Mapping[str, Any]: ...


class CommandReader:
    """Reads and runs the commands of each client; ``seq()`` is the gateway's
    current event number, stamped on every reply."""

    def __init__(
        self,
        *,
        handler: CommandHandler,
        settings: GatewaySettings,
        calls: CallDirectory,
        seq: Callable[[], int],
    ) -> None:
        self._handler = handler
        self._settings = settings
        self._calls = calls
        self._seq = seq

    async def read_loop(self, client: Client) -> None:
        """Run ``client``'s commands one at a time, in order, until it closes or
        abuses the rate limit; then ask the connection handler to close it.
        Cancelling it cancels the command in progress."""
        try:
            async for raw in client.ws:
                try:
                    if not await self._take(client, raw):
                        return
                except Exception:
                    # A bug met by one message must not end the reader: the
                    # next message is read as if this one had not come.
                    log.exception("ws.message_failed")
                    self._reply_error(
                        client,
                        proto.peek_id(raw, max_bytes=self._settings.max_message_bytes),
                        InternalError("internal error"),
                    )
        except ConnectionClosed:
            pass
        client.request_close(None)

    async def _take(self, client: Client, raw: str | bytes) -> bool:
        """Handle one client message; False when the client is to be closed."""
        now = asyncio.get_running_loop().time()
        max_bytes = self._settings.max_message_bytes
        if not client.limiter.allow(now):
            if client.limiter.abusive(now):
                client.request_close(CloseCode.RATE_LIMITED, "rate limit ignored")
                return False
            self._reply_error(
                client, proto.peek_id(raw, max_bytes=max_bytes), RateLimited("too many commands")
            )
            return True
        try:
            command = proto.parse_command(raw, max_bytes=max_bytes)
        except BadRequest as exc:
            self._reply_error(client, exc.details.pop("id", None), exc)
            return True
        await self._execute(client, command)
        return True

    async def _execute(self, client: Client, command: proto.Command) -> None:
        # Bound in the context, so that what the handler logs carries the
        # command id too: the client's error reply names the id, the log the why.
        with structlog.contextvars.bound_contextvars(command=command.name, command_id=command.id):
            try:
                args = authorize(client.principal, command.name, command.args, self._calls)
                async with asyncio.timeout(self._settings.command_timeout):
                    data = await self._handler.handle(client.principal, command.name, args)
            except CommandError as exc:
                cause = exc.__cause__
                log.info(
                    "ws.command_refused",
                    code=exc.code,
                    message=exc.message,
                    cause=None if cause is None else f"{type(cause).__name__}: {cause}",
                )
                self._reply_error(client, command.id, exc)
            except TimeoutError:
                log.warning("ws.command_timeout")
                self._reply_error(client, command.id, Unavailable("the command timed out"))
            except Exception:
                # The exception's text (a driver's message, a library's
                # internals) goes to the log only; the client gets the code.
                log.exception("ws.command_failed")
                self._reply_error(client, command.id, InternalError("internal error"))
            else:
                # Results are not logged: some carry secrets (a new API token).
                log.info("ws.command_done")
                client.offer(proto.encode(proto.result(seq=self._seq(), id=command.id, data=data)))

    def _reply_error(self, client: Client, cid: str | None, exc: CommandError) -> None:
        client.offer(proto.encode(proto.error(seq=self._seq(), id=cid, exc=exc)))
