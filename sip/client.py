"""The asyncio side of one SIP worker process.

:class:`WorkerClient` spawns ``python -m sip.worker``, configures it, sends it
commands and turns its event frames into an async stream. It knows nothing of
pools, stores or buses: the pool builds routing and supervision on top.

The worker dies with the daemon: the child is started with
``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (Linux), so it is killed when the *thread*
that forked it exits — for ``asyncio.create_subprocess_exec`` that is the event
loop's thread, which lives as long as the daemon. The worker also exits on its
own when its stdin reaches end of file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog

from sip import protocol as p
from sip.exceptions import (
    ProtocolError,
    WorkerCommandError,
    WorkerGone,
    WorkerStartError,
)

__all__ = ["Reply", "WorkerClient", "WorkerExited"]

log = structlog.get_logger(__name__)

Reply = p.Ok
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerExited(p.Event):
    """Last item of :meth:`WorkerClient.events`: the process has exited.

    Not a wire message: the client makes it up when the worker's stdout closes.
    """

    TYPE: ClassVar[str] = "worker_exited"
    returncode: int | None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # Runs between fork and exec: only async-signal-safe work. The signal is
    # sent when the parent *thread* exits; see the module docstring.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class WorkerClient:
    """One running SIP worker process. Create it with :meth:`start`.

    Events are delivered in order through :meth:`events`; the last one is always
    :class:`WorkerExited`. Replies to commands (``ok``, and ``error`` with a
    ``cmd_id``) resolve :meth:`command` and are not delivered as events.
    """

    def __init__(self, worker_id: str, process: asyncio.subprocess.Process) -> None:
        self.worker_id = worker_id
        self._process = process
        self._log = log.bind(worker_id=worker_id, pid=process.pid)
        self._pending: dict[str, asyncio.Future[p.Ok]] = {}
        self._events: asyncio.Queue[p.Event] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._gone = False
        self._closing: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[p.Ready] = asyncio.get_running_loop().create_future()
        self._tasks: list[asyncio.Task[None]] = []
        self.sip_port = 0

    # ------------------------------------------------------------------ start

    @classmethod
    async def start(
        cls,
        *,
        worker_id: str,
        config: p.WorkerSettings,
        ready_timeout: float = 10.0,
        python: str = sys.executable,
    ) -> WorkerClient:
        """Spawn a worker, configure it and wait until it reports ``ready``.

        Raises :class:`WorkerStartError` if the process cannot be spawned, if it
        refuses the configuration, exits, or is not ready within
        ``ready_timeout`` seconds; the process is killed in those cases.
        Cancellation kills the process too, then propagates.
        """
        try:
            process = await asyncio.create_subprocess_exec(
                python,
                "-m",
                "sip.worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                preexec_fn=_die_with_parent,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        except OSError as exc:
            raise WorkerStartError(f"cannot spawn SIP worker: {exc}") from exc
        client = cls(worker_id, process)
        client._tasks = [
            asyncio.create_task(client._read_events(), name=f"sip-worker-{worker_id}-events"),
            asyncio.create_task(client._read_stderr(), name=f"sip-worker-{worker_id}-stderr"),
        ]
        try:
            async with asyncio.timeout(ready_timeout):
                await client.command(p.Configure(cmd_id=client._next_id(), settings=config))
                ready = await asyncio.shield(client._ready)
        except (TimeoutError, WorkerCommandError, WorkerGone) as exc:
            await client._kill()
            raise WorkerStartError(f"SIP worker {worker_id} did not start: {exc!r}") from exc
        except BaseException:
            await client._kill()
            raise
        client.sip_port = ready.sip_port
        client._log.info("sip worker ready", sip_port=ready.sip_port)
        return client

    # ------------------------------------------------------------------ properties

    @property
    def pid(self) -> int:
        """Process id of the worker."""
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """Exit status, or None while the process runs (negative: killed by signal)."""
        return self._process.returncode

    @property
    def alive(self) -> bool:
        """Whether the worker still accepts commands."""
        return not self._gone and self._closing is None

    def next_cmd_id(self) -> str:
        """Return a fresh command id for this worker."""
        return self._next_id()

    # ------------------------------------------------------------------ commands

    async def command(self, message: p.Command, *, timeout: float = 5.0) -> Reply:
        """Send ``message`` and wait for the worker's reply.

        Returns the :class:`~sip.protocol.Ok` reply. Raises
        :class:`WorkerCommandError` when the worker answers ``error``,
        :class:`WorkerGone` if the process exits before answering (or is gone
        already), and :class:`TimeoutError` after ``timeout`` seconds.

        Cancellation (or the timeout) only stops the wait: the command has been
        sent and the worker still carries it out; its events arrive as usual
        and its late reply is dropped.
        """
        if self._gone:
            raise WorkerGone(self.returncode)
        if message.cmd_id in self._pending:
            raise ValueError(f"command id {message.cmd_id!r} is already pending")
        future: asyncio.Future[p.Ok] = asyncio.get_running_loop().create_future()
        self._pending[message.cmd_id] = future
        self._log.debug(
            "sip command",
            command=message.TYPE,
            cmd_id=message.cmd_id,
            call_id=getattr(message, "call_id", None),
        )
        try:
            stdin = self._process.stdin
            assert stdin is not None
            try:
                stdin.write(p.encode(message))
                await stdin.drain()
            except (ConnectionError, RuntimeError) as exc:
                raise WorkerGone(self.returncode) from exc
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._pending.pop(message.cmd_id, None)

    async def events(self) -> AsyncIterator[p.Event]:
        """Yield the worker's events in order, ending after :class:`WorkerExited`.

        There must be one consumer. Cancelling the consumer loses nothing: the
        events stay queued for the next call.
        """
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, WorkerExited):
                return

    async def next_event(self, *, timeout: float) -> p.Event:
        """Return the next event; :class:`TimeoutError` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            return await self._events.get()

    # ------------------------------------------------------------------ shutdown

    async def aclose(self, timeout: float = 5.0) -> None:
        """Shut the worker down; idempotent.

        Sends ``shutdown`` (the worker hangs up its calls and unregisters its
        lines), waits up to ``timeout`` seconds for it to exit, and kills it
        otherwise. If cancelled, the process is killed before the cancellation
        propagates, so no worker is ever left behind.
        """
        if self._closing is None:
            self._closing = asyncio.create_task(
                self._close(timeout), name=f"sip-worker-{self.worker_id}-close"
            )
        try:
            await asyncio.shield(self._closing)
        except asyncio.CancelledError:
            await self._kill()
            raise

    async def _close(self, grace: float) -> None:
        try:
            async with asyncio.timeout(grace):
                if not self._gone:
                    with contextlib.suppress(WorkerGone, WorkerCommandError, TimeoutError):
                        await self.command(p.Shutdown(cmd_id=self._next_id()), timeout=grace)
                await self._process.wait()
        except TimeoutError:
            self._log.warning("sip worker did not exit in time: killing it")
        await self._kill()

    async def _kill(self) -> None:
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        await self._process.wait()
        for task in self._tasks:
            # The readers finish on EOF, right after the process is reaped.
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------------ readers

    async def _read_events(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        try:
            while True:
                try:
                    header = await stdout.readexactly(p.HEADER_SIZE)
                    payload = await stdout.readexactly(p.frame_length(header))
                except asyncio.IncompleteReadError:
                    break
                try:
                    event = p.decode_event(payload)
                except ProtocolError as exc:
                    self._log.error("bad frame from sip worker", error=str(exc))
                    continue
                self._dispatch(event)
        except ProtocolError as exc:
            # A broken length header: framing is lost, the worker is useless.
            self._log.error("sip worker framing lost: killing it", error=str(exc))
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        finally:
            await self._on_exit()

    def _dispatch(self, event: p.Event) -> None:
        call_id = getattr(event, "call_id", None)
        if isinstance(event, p.Error):
            self._log.warning(
                "sip worker error", code=event.code, message=event.message, call_id=call_id
            )
        elif call_id is not None:
            self._log.debug("sip event", kind=event.TYPE, call_id=call_id)
        if isinstance(event, p.Ok | p.Error) and event.cmd_id is not None:
            future = self._pending.get(event.cmd_id)
            if future is not None and not future.done():
                if isinstance(event, p.Ok):
                    future.set_result(event)
                else:
                    future.set_exception(WorkerCommandError(event.code, event.message))
            if isinstance(event, p.Error) and event.call_id is not None:
                # A failed call command is also an event for that call.
                self._events.put_nowait(event)
            return
        if isinstance(event, p.Ready) and not self._ready.done():
            self._ready.set_result(event)
        self._events.put_nowait(event)

    async def _on_exit(self) -> None:
        self._gone = True
        # stdout closes before the process is reaped; wait for the status so
        # WorkerExited carries it (the kernel has it within microseconds).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._process.wait()
        code = self._process.returncode
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerGone(code))
        if not self._ready.done():
            self._ready.set_exception(WorkerGone(code))
            self._ready.exception()  # retrieved: nobody may be waiting
        stdin = self._process.stdin
        if stdin is not None:
            stdin.close()
        log_method = self._log.info if code == 0 else self._log.warning
        log_method("sip worker exited", returncode=code)
        self._events.put_nowait(WorkerExited(returncode=code))

    async def _read_stderr(self) -> None:
        stderr = self._process.stderr
        assert stderr is not None
        while line := await stderr.readline():
            text = line.decode(errors="replace").rstrip()
            level, _, rest = text.partition(" ")
            method: Any = {
                "error": self._log.error,
                "warning": self._log.warning,
                "info": self._log.info,
            }.get(level)
            if method is None:
                # pjsip's own lines ("pj4 ...") and the continuation lines of its
                # message dumps: logged whole (a bound method is a new object at
                # each access, so this cannot be told by comparing methods).
                self._log.debug("sip worker: " + text)
            else:
                method("sip worker: " + rest)

    def _next_id(self) -> str:
        return f"{self.worker_id}-{next(self._ids)}"
