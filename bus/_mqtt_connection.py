"""One broker connection, kept up: the loop the MQTT bridge and the feed share.

:class:`ConnectionLoop` connects, hands the connected client to its owner's
``serve`` coroutine, and when the connection fails connects again after a capped
exponential backoff with jitter, until it is cancelled. The owner decides what a
connection is for (subscriptions, publishing, reading); the loop decides how long
to wait before the next attempt, bounds the connect and the disconnect, and logs
each loss as ``{name}.disconnected``.

:meth:`ConnectionLoop.supervise` runs the loop (and the owner's other tasks) and
restarts them all, after a backoff, when one ends on its own: a bug must cost a
reconnection, not the connection for good. Each such restart is logged as
``{name}.crashed``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import aiomqtt
import structlog

from ._mqtt_protocol import reconnect_delay

__all__ = ["ConnectionLoop", "stop"]

log = structlog.get_logger(__name__)

#: The errors that end one connection and start the backoff towards the next.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (aiomqtt.MqttError, TimeoutError, OSError)


class ConnectionLoop:
    """Connects to a broker again and again, for as long as :meth:`run` runs.

    ``new_client()`` builds a fresh client for every attempt (paho keeps the
    unacknowledged messages of a dead connection and would resend them behind the
    owner's back). ``serve(client)`` runs on the connected client until the
    connection fails, by raising one of ``aiomqtt.MqttError``, ``TimeoutError`` or
    ``OSError`` (alone or in an exception group); it calls :meth:`succeeded` once
    its session is set up, which resets the backoff. Any other exception ends
    :meth:`run`: that is a bug for the owner's supervisor to restart.

    ``timeout``, ``reconnect_min`` and ``reconnect_max`` are read at each use, so
    an owner (or a test) may change them between attempts.
    """

    def __init__(
        self,
        *,
        name: str,
        url_for_logs: str,
        new_client: Callable[[], aiomqtt.Client],
        serve: Callable[[aiomqtt.Client], Awaitable[None]],
        timeout: float,
        reconnect_min: float,
        reconnect_max: float,
        on_failure: Callable[[], None] | None = None,
        log_context: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        if not 0 < reconnect_min <= reconnect_max:
            raise ValueError("need 0 < reconnect_min <= reconnect_max")
        self._name = name
        self._url_for_logs = url_for_logs
        self._new_client = new_client
        self._serve = serve
        self._on_failure = on_failure
        self._log_context = log_context
        self.timeout = timeout
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        #: Failed attempts since the last connection that :meth:`succeeded`.
        self.failures = 0
        #: Restarts by :meth:`supervise` since the last connection that succeeded.
        self.crashes = 0
        #: Restarts by :meth:`supervise` in all.
        self.restarts = 0

    def succeeded(self) -> None:
        """The owner's session is set up: the next failure (or crash) starts the
        backoff over."""
        self.failures = 0
        self.crashes = 0

    def backoff(self) -> float:
        """Capped exponential delay with jitter (half fixed, half random), so that
        many clients cut off by one broker restart do not reconnect in lockstep."""
        return reconnect_delay(self.failures, self.reconnect_min, self.reconnect_max)

    async def run(self) -> None:
        """Connect and serve, and again after each failure; never returns.

        Cancelling it cancels ``serve`` and disconnects (bounded by ``timeout``)
        before the cancellation propagates.
        """
        while True:
            error: BaseException | None = None
            try:
                await self._connect_and_serve()
            except* CONNECTION_ERRORS as group:
                error = group.exceptions[0]
            self.failures += 1
            if self._on_failure is not None:
                self._on_failure()
            delay = self.backoff()
            context = self._log_context() if self._log_context is not None else {}
            log.warning(
                f"{self._name}.disconnected",
                url=self._url_for_logs,
                error=str(error) or type(error).__name__,
                retry_in=round(delay, 2),
                **context,
            )
            await asyncio.sleep(delay)

    async def _connect_and_serve(self) -> None:
        """One connection, until it fails (raises) or the loop is cancelled."""
        client = self._new_client()
        # aiomqtt bounds the TCP connect (paho: 5 s) and the CONNACK (``timeout``) and
        # cleans up after either; this outer bound is only a backstop, because a
        # cancelled __aenter__ leaves the client's socket open.
        async with asyncio.timeout(self.timeout * 2 + 5):
            await client.__aenter__()
        try:
            await self._serve(client)
        finally:
            # Bounded: a broker that vanished does not answer DISCONNECT.
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await client.__aexit__(None, None, None)

    async def supervise(
        self,
        tasks: Callable[[], Mapping[str, Coroutine[Any, Any, None]]],
        *,
        finished: Callable[[Mapping[str, asyncio.Task[None]]], bool] | None = None,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        """Run the coroutines ``tasks()`` makes (:meth:`run` among them), each in
        a task named by its key; whenever one ends on its own (an exception, a
        return, or a cancellation not of this coroutine), cancel the others, log
        it, call ``on_restart``, back off and start them all again.

        Returns only when ``finished(tasks)``, asked as soon as one task ended,
        says that end was expected: then it waits for the others to end. Its own
        cancellation cancels the tasks and waits for them before it propagates.
        """
        while True:
            running = {
                name: asyncio.create_task(coroutine, name=name)
                for name, coroutine in tasks().items()
            }
            ended: set[asyncio.Task[None]] = set()
            try:
                ended, _ = await asyncio.wait(running.values(), return_when=asyncio.FIRST_COMPLETED)
                if finished is not None and finished(running):
                    await asyncio.wait(running.values())
                    return
            finally:
                for task in running.values():
                    task.cancel()
                # asyncio.wait never raises the tasks' own CancelledError.
                await asyncio.wait(running.values())
            self.crashes += 1
            self.restarts += 1
            delay = reconnect_delay(self.crashes, self.reconnect_min, self.reconnect_max)
            for task in ended:
                error = None if task.cancelled() else task.exception()
                log.error(
                    f"{self._name}.crashed",
                    task=task.get_name(),
                    error="cancelled" if task.cancelled() else repr(error) if error else "returned",
                    exc_info=error,
                    restart_in=round(delay, 2),
                    restarts=self.restarts,
                )
            if on_restart is not None:
                on_restart()
            await asyncio.sleep(delay)


async def stop(task: asyncio.Task[None]) -> BaseException | None:
    """Cancel ``task``, wait for it to end, and return what it raised (``None``
    if it was cancelled or returned).

    Only a cancellation of the caller propagates from here, possibly before the
    task has ended.
    """
    task.cancel()
    # asyncio.wait never raises the task's own CancelledError.
    await asyncio.wait([task])
    return None if task.cancelled() else task.exception()
