"""Runner side of the lab B2BUA: one ``python -m lab.b2bua`` process and what it reported.

The B2BUA binds a free UDP port itself and reports it (``ready``) before Kamailio's
configuration is written, so there is no window for another program to take it. Every
event it writes becomes a record tests can read: ``lab.b2bua.calls`` (one
:class:`B2buaCall` per incoming INVITE, in order), :meth:`B2bua.call` by the caller's
Call-ID, :attr:`B2bua.calls_handled`, :meth:`B2bua.branch_call_ids`,
:attr:`B2bua.redirects_followed`, and
:meth:`B2bua.wait_call` to wait until a call reaches a state.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import _proc

__all__ = ["B2bua", "B2buaBranch", "B2buaCall", "B2buaError"]


class B2buaError(RuntimeError):
    """The B2BUA process did not start, or died."""


@dataclass(slots=True)
class B2buaBranch:
    """One dialog the B2BUA placed toward a contact (or a redirect's target)."""

    call_id: str
    target: str
    redirected_from: str | None = None  # Call-ID of the branch whose 3xx it follows
    final_code: int | None = None  # the contact's final answer (408: none came)
    cancel_reason: str | None = None  # the Reason header of our CANCEL, if any
    cancelled: bool = False


@dataclass(slots=True)
class B2buaCall:
    """One incoming INVITE the B2BUA handled, as its events told it."""

    serial: int
    call_id: str  # the caller's Call-ID
    caller: str  # From URI
    display: str  # From display name, unquoted
    line: str  # the dialled line's URI
    contacts: list[str]  # the contacts Kamailio listed
    branches: list[B2buaBranch] = field(default_factory=list)
    redirects: int = 0
    answered_by: str | None = None  # Call-ID of the branch that answered
    final_code: int | None = None  # the caller's final answer when not answered
    ended_by: str | None = None  # "caller", "callee" or "no ACK" once answered and over

    def branch(self, call_id: str) -> B2buaBranch:
        for branch in self.branches:
            if branch.call_id == call_id:
                return branch
        raise KeyError(call_id)

    @property
    def over(self) -> bool:
        return self.final_code is not None or self.ended_by is not None


class B2bua(_proc.Child):
    """The lab B2BUA process; start with :meth:`start`, stop with :meth:`stop`."""

    def __init__(self, run_dir: Path, *, host: str, ring_timeout: float | None = None) -> None:
        self.host = host
        self.port = 0
        self.log_path = run_dir / "b2bua.log"
        self._ring_timeout = ring_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._ready: asyncio.Future[int] | None = None
        #: Every event line, in order (``event`` names its kind).
        self.events: list[dict[str, Any]] = []
        #: The calls handled, in arrival order.
        self.calls: list[B2buaCall] = []
        self._by_serial: dict[int, B2buaCall] = {}

    @property
    def calls_handled(self) -> int:
        """Incoming INVITEs the B2BUA took on (one per caller's call)."""
        return len(self.calls)

    @property
    def redirects_followed(self) -> int:
        """3xx answers followed with a new INVITE, over all calls."""
        return sum(call.redirects for call in self.calls)

    def call(self, caller_call_id: str) -> B2buaCall:
        """The call whose incoming INVITE had ``caller_call_id`` (``KeyError`` if none)."""
        for call in self.calls:
            if call.call_id == caller_call_id:
                return call
        raise KeyError(caller_call_id)

    def branch_call_ids(self, caller_call_id: str) -> list[str]:
        """The Call-IDs of the dialogs placed for one caller, in order."""
        return [branch.call_id for branch in self.call(caller_call_id).branches]

    async def start(self, *, timeout: float = 10.0) -> None:
        """Start the process; return once it has bound its port (``self.port``).

        Raises ``B2buaError`` if it exits first or does not report within ``timeout`` s
        (it is then killed).
        """
        if self._proc is not None:
            return
        argv = [sys.executable, "-m", "lab.b2bua", "--host", self.host]
        if self._ring_timeout is not None:
            argv += ["--ring-timeout", str(self._ring_timeout)]
        self._ready = asyncio.get_running_loop().create_future()
        self._proc = await _proc.spawn(
            argv,
            log_path=self.log_path,
            stdout=asyncio.subprocess.PIPE,
            death_signal=signal.SIGTERM,
        )
        self._reader = asyncio.create_task(self._read(), name="b2bua-events")
        try:
            async with asyncio.timeout(timeout):
                self.port = await self._ready
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, TimeoutError | B2buaError):
                raise B2buaError(f"the B2BUA did not start; see {self.log_path}") from exc
            raise

    async def stop(self) -> None:
        """Stop the process (SIGTERM, SIGKILL after 1 s). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            await _proc.kill_group(proc, grace=1.0)
        if self._reader is not None:
            await self._reader
            self._reader = None

    async def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        async for event in _proc.json_events(self._proc.stdout):
            self._apply(event)
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(B2buaError("the B2BUA exited"))
        async with self._changed:
            self.events.append({"event": "exited"})
            self._changed.notify_all()

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(int(event["port"]))
            return
        if kind == "call":
            call = B2buaCall(
                serial=int(event["call"]),
                call_id=str(event["call_id"]),
                caller=str(event["caller"]),
                display=str(event["display"]),
                line=str(event["line"]),
                contacts=[str(c) for c in event["contacts"]],
            )
            self.calls.append(call)
            self._by_serial[call.serial] = call
            return
        known = self._by_serial.get(int(event.get("call", 0)))
        if known is None:
            return
        call = known
        if kind == "branch":
            call.branches.append(
                B2buaBranch(
                    str(event["call_id"]), str(event["target"]), event.get("redirected_from")
                )
            )
        elif kind == "branch_final":
            call.branch(str(event["call_id"])).final_code = int(event["code"])
        elif kind == "cancel":
            branch = call.branch(str(event["call_id"]))
            branch.cancelled = True
            branch.cancel_reason = event.get("reason")
        elif kind == "redirect":
            call.redirects += 1
        elif kind == "answered":
            call.answered_by = str(event["call_id"])
        elif kind == "final":
            call.final_code = int(event["code"])
        elif kind == "ended":
            call.ended_by = str(event["by"])

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float, start: int = 0
    ) -> dict[str, Any]:
        """The first event from index ``start`` on that satisfies ``predicate``.

        Raises ``TimeoutError`` after ``timeout`` s, ``B2buaError`` if the process exits.
        """
        async with asyncio.timeout(timeout), self._changed:
            index = start
            while True:
                while index < len(self.events):
                    event = self.events[index]
                    index += 1
                    if predicate(event):
                        return event
                    if event["event"] == "exited":
                        raise B2buaError(f"the B2BUA exited; see {self.log_path}")
                await self._changed.wait()

    async def wait_call(
        self,
        caller_call_id: str,
        predicate: Callable[[B2buaCall], bool] = lambda call: True,
        *,
        timeout: float = 10.0,
    ) -> B2buaCall:
        """Wait until the call of ``caller_call_id`` exists and satisfies ``predicate``.

        Raises ``TimeoutError`` after ``timeout`` s, ``B2buaError`` if the process exits.
        """
        async with asyncio.timeout(timeout), self._changed:
            while True:
                try:
                    call = self.call(caller_call_id)
                except KeyError:
                    pass
                else:
                    if predicate(call):
                        return call
                if self.events and self.events[-1]["event"] == "exited":
                    raise B2buaError(f"the B2BUA exited; see {self.log_path}")
                await self._changed.wait()
