"""The lifespan the services that drive calls share: a task group for their call tasks.

:class:`CallTaskService` starts a task group in a runner task (``start``), spawns one
task per call into it (``_spawn``), and on ``aclose`` asks every call to end
(``_end_calls``, the subclass's), waits up to ``close_grace`` seconds for their
tasks, cancels those still running and stops. It is an async context manager.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, ClassVar, Self

__all__ = ["CallTaskService"]


class CallTaskService:
    """Base of :class:`~sip.calls.CallService` and :class:`~sip.inbound.InboundService`."""

    #: The runner task's name, also in the "called twice" error.
    _runner_name: ClassVar[str] = "sip-service"

    def __init__(self, *, close_grace: float) -> None:
        self._close_grace = close_grace
        self._tasks: set[asyncio.Task[None]] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._stop = asyncio.Event()
        self._closing = False

    async def start(self) -> None:
        """Start the task group. Cancellation stops it again."""
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__}.start() called twice")
        self._runner = asyncio.create_task(self._run(), name=self._runner_name)
        await self._started.wait()

    async def aclose(self) -> None:
        """End every call, wait up to ``close_grace`` s for their tasks, stop.

        Call tasks still running after the grace are cancelled. Idempotent. If
        cancelled, the call tasks are cancelled too before it propagates.
        """
        if self._runner is None:
            return
        if not self._closing:
            self._closing = True
            self._end_calls()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=self._close_grace)
            self._stop.set()
        await asyncio.shield(self._runner)

    def _end_calls(self) -> None:
        """Ask every call in progress to end (closing): the subclass's."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._started.set()
            await self._stop.wait()
            for task in self._tasks:
                task.cancel()
        self._tg = None

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> bool:
        """Run ``coro`` as a call task; False (and ``coro`` closed) once closing
        has stopped the task group."""
        if self._tg is None:
            coro.close()
            return False
        task = self._tg.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True
