"""Runner side of the lab agent phones (one ``python -m lab.phone`` process each).

A :class:`LabPhone` starts the process, reads its JSON event lines and lets tests wait
on states: ``await phone.wait_registered()``, ``await phone.wait_call_answered()``,
``await phone.wait_call_ended()``. The phone can also place calls, send DTMF and follow
blind transfers (REFER), which makes it the test user agent for anything that needs a
real SIP caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lab import _proc, audio

__all__ = ["LabPhone", "OutgoingCall", "PhoneError", "PhoneEvent", "PhoneSpec"]

Mode = Literal["answer", "never", "reject"]


class PhoneError(RuntimeError):
    """A lab phone died, or reported an error for a command."""


@dataclass(frozen=True, slots=True)
class PhoneSpec:
    """How to run one lab phone.

    ``name`` defaults to the extension; give two specs of one extension different names
    to have two registrations (parallel forking).
    """

    extension: str
    name: str = ""
    mode: Mode = "answer"
    answer_delay: float = 0.2
    reject_code: int = 603
    tone_hz: float = 0.0  # 0: the runner picks a distinct tone
    password: str | None = None  # None: the extension's; set to test failing auth
    display_name: str = ""  # shown in From and Contact, as desk phones do

    @property
    def key(self) -> str:
        return self.name or self.extension


@dataclass(frozen=True, slots=True)
class PhoneEvent:
    """One event line of a phone process."""

    kind: str
    data: dict[str, Any]

    @property
    def call_id(self) -> str | None:
        value = self.data.get("call_id")
        return str(value) if value is not None else None


@dataclass(slots=True)
class OutgoingCall:
    """A call the phone placed; updated as its events arrive."""

    token: str
    call_id: str = ""
    progress: list[int] = field(default_factory=list)
    answered: bool = False
    final_code: int | None = None
    error: str | None = None  # set, with ``ended``, if the phone could not place it
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: For a call placed because of a REFER: the target and the Call-ID of the call
    #: the REFER came on.
    target: str | None = None
    referred_by: str | None = None


class LabPhone(_proc.Child):
    """One lab phone process and the events it has reported."""

    def __init__(
        self,
        spec: PhoneSpec,
        *,
        run_dir: Path,
        password: str,
        pbx_host: str,
        pbx_port: int,
        domain: str,
        tone_wav: Path,
        tone_hz: float,
        rtp_port: int,
        rtp_port_range: int,
    ) -> None:
        self.spec = spec
        self.extension = spec.extension
        self.tone_hz = tone_hz
        self.tone_wav = tone_wav
        self.record_dir = run_dir / f"phone-{spec.key}"
        self._config_path = run_dir / f"phone-{spec.key}.json"
        self._log_path = run_dir / f"phone-{spec.key}.log"
        self._config = {
            "extension": spec.extension,
            "password": password,
            "pbx_host": pbx_host,
            "pbx_port": pbx_port,
            "domain": domain,
            "record_dir": str(self.record_dir),
            "tone_wav": str(tone_wav),
            "mode": spec.mode,
            "display_name": spec.display_name,
            "answer_delay": spec.answer_delay,
            "reject_code": spec.reject_code,
            "rtp_port": rtp_port,
            "rtp_port_range": rtp_port_range,
        }
        self.events: list[PhoneEvent] = []
        self._changed = asyncio.Condition()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tokens = itertools.count(1)
        self._outgoing: dict[str, OutgoingCall] = {}
        #: Calls placed because of a REFER, in order.
        self.transfers: list[OutgoingCall] = []
        self.registered = False

    async def start(self) -> None:
        """Make its tone, start the phone process (does not wait for registration).

        If cancelled after the process started, the process is left to :meth:`stop`.
        """
        self.record_dir.mkdir(parents=True, exist_ok=True)
        await audio.make_tone(self.tone_wav, self.tone_hz, seconds=10.0)
        self._config_path.write_text(json.dumps(self._config))
        argv = [sys.executable, "-m", "lab.phone", "--config", str(self._config_path)]
        self._proc = await _proc.spawn(
            argv,
            log_path=self._log_path,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read(), name=f"phone-{self.spec.key}-events")

    async def stop(self) -> None:
        """Ask the phone to hang up and quit; kill its group after 3 s. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None and proc.returncode is None:
                with contextlib.suppress(ConnectionError):
                    proc.stdin.write(b'{"cmd": "quit"}\n')
                    await proc.stdin.drain()
                proc.stdin.close()
            try:
                async with asyncio.timeout(3.0):
                    await proc.wait()
            except TimeoutError:
                pass
            await _proc.kill_group(proc, grace=1.0)
        if self._reader is not None:
            await self._reader
            self._reader = None

    async def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        async for raw in _proc.json_events(self._proc.stdout):
            event = PhoneEvent(str(raw.pop("event")), raw)
            self._apply(event)
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        async with self._changed:
            self.events.append(PhoneEvent("exited", {}))
            self._changed.notify_all()

    def _apply(self, event: PhoneEvent) -> None:
        if event.kind == "registered":
            self.registered = True
        elif event.kind == "unregistered":
            self.registered = False
        elif event.kind == "transfer_request":
            transfer = OutgoingCall(
                str(event.data["token"]),
                target=str(event.data.get("to")),
                referred_by=event.call_id,
            )
            self._outgoing[transfer.token] = transfer
            self.transfers.append(transfer)
            return
        token = event.data.get("token")
        call = self._outgoing.get(str(token)) if token is not None else None
        if call is None:
            return
        if event.call_id:
            call.call_id = event.call_id
        if event.kind == "progress":
            call.progress.append(int(event.data["code"]))
        elif event.kind == "answered":
            call.answered = True
        elif event.kind == "ended":
            call.final_code = int(event.data.get("code") or 0)
            call.ended.set()
        elif event.kind == "error":
            call.error = str(event.data.get("info"))
            call.ended.set()

    async def wait_for(
        self, predicate: Callable[[PhoneEvent], bool], *, timeout: float, start: int = 0
    ) -> PhoneEvent:
        """The first event from index ``start`` on that satisfies ``predicate``.

        Waits for it up to ``timeout`` s (``TimeoutError``); raises ``PhoneError`` if the
        process exits first. Cancellation just stops waiting.
        """
        async with asyncio.timeout(timeout), self._changed:
            index = start
            while True:
                while index < len(self.events):
                    event = self.events[index]
                    index += 1
                    if predicate(event):
                        return event
                    if event.kind == "exited":
                        raise PhoneError(f"phone {self.spec.key} exited; see {self._log_path}")
                await self._changed.wait()

    async def wait_registered(self, *, timeout: float = 10.0, start: int = 0) -> PhoneEvent:
        """Wait for a successful registration reported at or after event ``start``."""
        return await self.wait_for(lambda e: e.kind == "registered", timeout=timeout, start=start)

    async def wait_incoming(self, *, timeout: float = 10.0, start: int = 0) -> PhoneEvent:
        """Wait for an incoming call (the phone starts ringing)."""
        return await self.wait_for(lambda e: e.kind == "incoming", timeout=timeout, start=start)

    async def wait_call_answered(
        self, *, timeout: float = 10.0, call_id: str | None = None, start: int = 0
    ) -> PhoneEvent:
        """Wait until a call (of ``call_id`` if given) is confirmed on this phone."""
        return await self.wait_for(
            lambda e: e.kind == "answered" and call_id in (None, e.call_id),
            timeout=timeout,
            start=start,
        )

    async def wait_call_ended(
        self, *, timeout: float = 10.0, call_id: str | None = None, start: int = 0
    ) -> PhoneEvent:
        """Wait until a call ends; the event carries ``code``, ``reason``, ``recording``."""
        return await self.wait_for(
            lambda e: e.kind == "ended" and call_id in (None, e.call_id),
            timeout=timeout,
            start=start,
        )

    async def wait_media_state(
        self, state: str, *, call_id: str | None = None, timeout: float = 10.0, start: int = 0
    ) -> PhoneEvent:
        """Wait until a call's audio reaches ``state``: ``active``, ``remote_hold``
        (the other side put it on hold), ``local_hold``, ``none``, ``error``."""
        return await self.wait_for(
            lambda e: (
                e.kind == "media_state"
                and e.data.get("state") == state
                and call_id in (None, e.call_id)
            ),
            timeout=timeout,
            start=start,
        )

    async def wait_transfer(self, *, timeout: float = 10.0, start: int = 0) -> OutgoingCall:
        """Wait for a REFER to be accepted; returns the live record of the new call."""
        event = await self.wait_for(
            lambda e: e.kind == "transfer_request", timeout=timeout, start=start
        )
        return self._outgoing[str(event.data["token"])]

    def dtmf_received(self, *, call_id: str | None = None, start: int = 0) -> str:
        """The DTMF digits received (on ``call_id`` if given) from event ``start`` on."""
        return "".join(
            str(e.data["digit"])
            for e in self.events[start:]
            if e.kind == "dtmf" and call_id in (None, e.call_id)
        )

    async def wait_dtmf(
        self, count: int, *, call_id: str | None = None, timeout: float = 10.0, start: int = 0
    ) -> str:
        """Wait until ``count`` DTMF digits have arrived; return the first ``count``."""
        seen: list[str] = []

        def enough(event: PhoneEvent) -> bool:
            if event.kind == "dtmf" and call_id in (None, event.call_id):
                seen.append(str(event.data["digit"]))
            return len(seen) >= count

        await self.wait_for(enough, timeout=timeout, start=start)
        return "".join(seen[:count])

    async def send_dtmf(
        self, digits: str, *, call: OutgoingCall | None = None, call_id: str | None = None
    ) -> None:
        """Send ``digits`` (RFC 4733) on a call this phone placed, or on the call with
        SIP Call-ID ``call_id``; the phone reports an ``error`` event if there is none."""
        if (call is None) == (call_id is None):
            raise ValueError("give exactly one of call and call_id")
        target = {"token": call.token} if call is not None else {"call_id": call_id}
        await self._send({"cmd": "dtmf", "digits": digits, **target})

    async def _send(self, command: dict[str, Any]) -> None:
        if self._proc is None or self._proc.stdin is None:
            raise PhoneError(f"phone {self.spec.key} is not running")
        self._proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self._proc.stdin.drain()

    async def call(self, uri: str) -> OutgoingCall:
        """Place a call to ``uri`` (``sip:user@host:port``); returns its live record.

        Await ``call.ended.wait()`` (under a timeout) for the final status in
        ``call.final_code`` (or ``call.error`` if it could not be placed). Cancelling
        this coroutine does not withdraw a command already written to the phone.
        """
        token = f"c{next(self._tokens)}"
        call = OutgoingCall(token)
        self._outgoing[token] = call
        await self._send({"cmd": "call", "token": token, "to": uri})
        return call

    async def register(self) -> None:
        """Send a REGISTER now (e.g. after a PBX restart); await :meth:`wait_registered`."""
        await self._send({"cmd": "register"})

    async def hangup(self, call: OutgoingCall) -> None:
        """Hang up (or cancel, if still ringing) a call this phone placed."""
        await self._send({"cmd": "hangup", "token": call.token})

    async def hangup_call_id(self, call_id: str) -> None:
        """Hang up the call with SIP Call-ID ``call_id`` (incoming or outgoing)."""
        await self._send({"cmd": "hangup", "call_id": call_id})
