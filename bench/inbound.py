"""How fast an inbound call reaches ``call.ringing``, with and without 50 calls up.

One lab (Kamailio, SIPp customers), one daemon side in this process: a ``SipPool``
with one reception line (registered by its own worker only), ``--active / 2`` busy
agent lines for the click-to-call conversations, and ``--agents`` agents who are
available, each on a worker of their own; a ``CallService``, an ``InboundService``
with a ``PresenceBook`` where the available agents are available and the others
offline, a SQLite store (migrated with ``crm_store.upgrade``), a bus, and a
``ws_gateway.Gateway`` on that bus (default settings, on 127.0.0.1 with a free
port, authenticating against the store). One websocket client of that gateway
runs in a separate process (``bench/_ringing_client.py``): a supervisor (sees
every call) with a token issued by the store, connected and authenticated before
the pool starts.

Two phases, back to back in the same pool:

- **0 active**: ``--calls`` customers (SIPp UACs of ``lab.customers``) call the
  reception line, one every ``--spacing`` s, each from a new number (so the
  service looks it up, creates a lead, publishes, then writes the call record);
- **50 active**: 50 click-to-call conversations are set up exactly as
  ``bench/calls.py`` does (agent side and customer both SIPp, bridged, recorded,
  talking until hung up) on the busy agents' workers, then the same number of
  inbound calls; the 50 are hung up afterwards.

Each inbound call goes the whole way of the design (docs/sip-pool.md, "Inbound
calls"): the INVITE reaches the reception worker once; the service publishes
``call.created`` and ``call.ringing``, picks the available agent idle the longest
and moves the call with a ``302`` to that agent's worker; Kamailio follows the
redirect (``uac_redirect``) with an INVITE to ``sb-move-<call>-<n>`` on it; from
there the agent's phone is rung (a trunk number SIPp answers after 1 s). The
agent answers, the call is bridged and recorded on that worker, the caller talks
for 1 s and hangs up (``lab.customers.call``, which checks the call was answered
and ended cleanly), and the agent is available again.

Clock: the SIP messages are timed on the wire. An ``AF_PACKET`` socket on ``lo``
(root needed) with a BPF filter on Kamailio's port takes the kernel's receive
timestamp (``SO_TIMESTAMPNS``, CLOCK_REALTIME) of every INVITE and ``302`` to and
from Kamailio: ``pbx_in`` is the customer's authenticated INVITE reaching
Kamailio, ``recv`` the INVITE Kamailio sends to the reception worker
(Switchboard's ingress), ``302`` the reception worker's redirect, ``carrier`` the
INVITE Kamailio sends on to the ``sb-move-`` name, ``phone`` the INVITE reaching the
agent's phone. The daemon side stamps ``time.time()`` (same clock) when the
reception leg's ``incoming_call`` reaches the pool's handler (a wrapper around the
handler the service installs with ``pool.on_incoming``), when a bus subscriber
receives the ``CallRinging(leg="customer")`` of that caller, and when it receives
the ``CallRinging(leg="agent")`` (the agent's pop-up). The websocket client stamps
``time.time()`` (same clock, same machine, its own process) as soon as ``recv()``
returns the gateway's ``call.ringing`` event message with ``leg`` ``customer`` of
that caller, before parsing it, and reports it to the bench on its stdout. Per
phase, p50/p99 of:

- ``recv -> incoming``: the baseline (pjsua2 worker + pipe to the daemon);
- ``recv -> ringing``: to the bus subscriber in this process;
- ``recv -> ws``: to the websocket client, the product requirement's figure
  (INVITE to ``call.ringing`` at a websocket client, p99 < 30 ms with 50 calls
  active); ``pbx_in -> ws``: the same from the customer's INVITE into Kamailio
  (its authentication and location lookup included);
- ``own``: ringing minus incoming (lookup, lead creation, publish, delivery to a
  subscriber); ``bus -> ws``: ws minus ringing (the gateway, the loopback, the
  client); the ratio ringing / incoming;
- ``move``: ``302`` -> ``carrier`` on the wire (the redirect's cost: Kamailio's
  failure route and the new branch), and the service's own ``move_latency``
  (the 302 command sent to the INVITE's ``incoming_call`` on the new worker);
- ``pbx_in -> phone``: to the INVITE reaching the agent's phone, and
  ``pbx_in -> agent ringing``: to ``CallRinging(leg="agent")`` on the bus (its
  180 back through the carrier), the whole way to the agent's pop-up.

The goal is stated against ``recv -> ws`` of the loaded phase; ``goal_met`` in
the JSON is true only when its p99 is under 30 ms and every call was seen.

    .venv/bin/python bench/inbound.py [--calls 100] [--spacing 0.5] [--active 50] \
        [--agents 8] [--json out.json]

About three minutes. With 100 calls per phase the p99 is the second largest
sample (with 40 it would be the largest).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import re
import secrets
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bus import Bus, CallBridged, CallDialing, CallEnded, CallRinging, RegistrationChanged
from config import parse_config
from crm_store import Role, Store, upgrade
from lab import Lab
from sip import protocol as p
from sip.calls import CallService
from sip.inbound import InboundService, PresenceBook
from sip.inbound.branches import MOVE_PREFIX
from sip.pool import SipPool
from ws_gateway import Gateway, GatewaySettings, Principal, store_authenticator

try:
    from bench import calls as calls_bench
except ImportError:  # run as a script: bench/ is sys.path[0]
    import calls as calls_bench  # type: ignore[no-redef]

RECEPTION = "2100"
GOAL_MS = 30
CALLER_TALK = 1.0  # s the caller talks once answered
_ETH_P_IP = 0x0800
_SO_ATTACH_FILTER = 26
_SO_TIMESTAMPNS = 35  # == SCM_TIMESTAMPNS
_CALL_ID = re.compile(rb"\r\n(?:Call-ID|i)\s*:\s*([^\r\n]+)", re.IGNORECASE)
_AUTH = re.compile(rb"\r\nProxy-Authorization\s*:", re.IGNORECASE)
_RURI_USER = re.compile(rb"INVITE sips?:([^@;> ]+)@")
CLIENT_SCRIPT = Path(__file__).with_name("_ringing_client.py")
_CLIENT_READY_TIMEOUT = 30.0
_CLIENT_EXIT_TIMEOUT = 10.0


# --------------------------------------------------------------------------- the wire


@dataclass(frozen=True)
class _WireMessage:
    at: float  # kernel timestamp, CLOCK_REALTIME seconds
    from_pbx: bool
    call_id: str
    #: "INVITE" or the response code ("302").
    kind: str
    authenticated: bool = False
    #: The Request-URI's user of an INVITE ("" for a response).
    user: str = ""


@dataclass(frozen=True)
class WireTrace:
    """The wire times of one inbound call (NaN where not seen), CLOCK_REALTIME s."""

    pbx_in: float  # the customer's authenticated INVITE reaching Kamailio
    recv: float  # Kamailio's INVITE to the reception worker
    redirect: float  # the reception worker's 302 to Kamailio
    carrier: float  # Kamailio's INVITE to the sb-move- name on the carrying worker


class WireClock:
    """Kernel timestamps of the INVITEs and 302s to and from Kamailio, on ``lo``."""

    def __init__(self, pbx_port: int) -> None:
        self._port = pbx_port
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.messages: list[_WireMessage] = []

    def start(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_IP))
        # Classic BPF, offsets from the IP header (SOCK_DGRAM): UDP with Kamailio's
        # port as source or destination, everything else (the RTP) dropped in the kernel.
        port = self._port
        program = [
            (0x30, 0, 0, 9),  # ldb [9]            (IP protocol)
            (0x15, 0, 6, 17),  # jeq #17 else drop  (UDP)
            (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf)   (IP header length)
            (0x48, 0, 0, 0),  # ldh [x+0]          (source port)
            (0x15, 2, 0, port),  # jeq port -> accept
            (0x48, 0, 0, 2),  # ldh [x+2]          (destination port)
            (0x15, 0, 1, port),  # jeq port -> accept else drop
            (0x06, 0, 0, 0xFFFF),  # accept
            (0x06, 0, 0, 0),  # drop
        ]
        buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in program))
        fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        sock.bind(("lo", _ETH_P_IP))
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="wire-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, ancillary, _flags, addr = self._sock.recvmsg(65535, 256)
            except TimeoutError:
                continue
            except OSError:
                return
            # lo shows every packet twice (sent, received): keep the received copy.
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            ihl = (data[0] & 0x0F) * 4
            payload = data[ihl + 8 :]
            if payload.startswith(b"INVITE "):
                kind = "INVITE"
            elif payload.startswith(b"SIP/2.0 302 "):
                kind = "302"
            else:
                continue
            at = math.nan
            for level, kind_, cdata in ancillary:
                if level == socket.SOL_SOCKET and kind_ == _SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    at = sec + nsec / 1e9
            if math.isnan(at):
                continue
            sport, _dport = struct.unpack("!HH", data[ihl : ihl + 4])
            match = _CALL_ID.search(payload)
            if match is None:
                continue
            user = _RURI_USER.match(payload) if kind == "INVITE" else None
            message = _WireMessage(
                at,
                from_pbx=sport == self._port,
                call_id=match[1].decode(errors="replace").strip(),
                kind=kind,
                authenticated=_AUTH.search(payload) is not None,
                user=user[1].decode(errors="replace") if user else "",
            )
            with self._lock:
                self.messages.append(message)

    def _of(self, call_id: str) -> list[_WireMessage]:
        with self._lock:
            return [m for m in self.messages if m.call_id == call_id]

    def times(self, call_id: str) -> tuple[float, float]:
        """``(pbx_in, recv)`` of ``call_id``: the customer's authenticated INVITE
        into Kamailio, and Kamailio's first INVITE out (to the worker that
        registered the called line); NaN where not seen."""
        trace = self.trace(call_id)
        return trace.pbx_in, trace.recv

    def trace(self, call_id: str) -> WireTrace:
        """Where the inbound call ``call_id`` was when (NaN where not seen)."""
        mine = self._of(call_id)
        invites = [m for m in mine if m.kind == "INVITE"]
        return WireTrace(
            pbx_in=min(
                (m.at for m in invites if not m.from_pbx and m.authenticated), default=math.nan
            ),
            recv=min(
                (m.at for m in invites if m.from_pbx and not m.user.startswith(MOVE_PREFIX)),
                default=math.nan,
            ),
            redirect=min(
                (m.at for m in mine if m.kind == "302" and not m.from_pbx), default=math.nan
            ),
            carrier=min(
                (m.at for m in invites if m.from_pbx and m.user.startswith(MOVE_PREFIX)),
                default=math.nan,
            ),
        )

    def invite_to(self, user: str, after: float) -> float:
        """The first INVITE Kamailio sent to Request-URI user ``user`` at or after
        ``after`` (an agent's phone being rung); NaN if none."""
        with self._lock:
            return min(
                (
                    m.at
                    for m in self.messages
                    if m.kind == "INVITE" and m.from_pbx and m.user == user and m.at >= after
                ),
                default=math.nan,
            )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()


# --------------------------------------------------------------------------- results


def _ms(values: Sequence[float]) -> list[float]:
    return [v * 1000 for v in values if not math.isnan(v)]


@dataclass
class PhaseResult:
    active: int
    calls: int
    ringing_seen: int = 0
    completed: int = 0  # callers answered, talked and hung up
    ws_seen: int = 0  # call.ringing received by the websocket client
    moved: int = 0  # calls whose INVITE reached the carrying worker
    agent_rung: int = 0  # calls whose agent's phone got an INVITE
    recv_incoming_p50_ms: float = math.nan
    recv_incoming_p99_ms: float = math.nan
    recv_ringing_p50_ms: float = math.nan
    recv_ringing_p99_ms: float = math.nan
    recv_ws_p50_ms: float = math.nan
    recv_ws_p99_ms: float = math.nan
    pbx_ws_p50_ms: float = math.nan
    pbx_ws_p99_ms: float = math.nan
    bus_ws_p50_ms: float = math.nan  # websocket client minus bus subscriber
    bus_ws_p99_ms: float = math.nan
    own_p50_ms: float = math.nan
    own_p99_ms: float = math.nan
    own_mean_ms: float = math.nan
    service_p50_ms: float = math.nan  # InboundService.stats.ringing_latency
    service_p99_ms: float = math.nan
    ratio_p50: float = math.nan  # recv->ringing / recv->incoming
    ratio_p99: float = math.nan
    move_wire_p50_ms: float = math.nan  # 302 -> INVITE to sb-move-, on the wire
    move_wire_p99_ms: float = math.nan
    move_service_p50_ms: float = math.nan  # InboundService.stats.move_latency
    move_service_p99_ms: float = math.nan
    pbx_phone_p50_ms: float = math.nan  # pbx_in -> INVITE at the agent's phone
    pbx_phone_p99_ms: float = math.nan
    pbx_agent_ringing_p50_ms: float = math.nan  # pbx_in -> CallRinging(leg="agent")
    pbx_agent_ringing_p99_ms: float = math.nan
    #: Per call, in placing order (ms; null where not measured): the goal's figure
    #: and the service's own share, to see what the tail is made of.
    recv_ws_ms: list[float] = field(default_factory=list)
    own_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class _State:
    registered: dict[str, set[str]] = field(default_factory=dict)  # line -> workers
    bridged: set[uuid.UUID] = field(default_factory=set)
    ended: dict[uuid.UUID, CallEnded] = field(default_factory=dict)
    ringing: dict[str, tuple[float, uuid.UUID]] = field(default_factory=dict)  # number ->
    ws_ringing: dict[str, float] = field(default_factory=dict)  # number -> at the ws client
    incoming: dict[str, float] = field(default_factory=dict)  # SIP Call-ID -> reception leg
    #: call id -> (agent, the agent leg's originate time), the first agent only.
    agent_dialed: dict[uuid.UUID, tuple[str, float]] = field(default_factory=dict)
    agent_ringing: dict[uuid.UUID, float] = field(default_factory=dict)  # first agent ringing
    changed: asyncio.Event = field(default_factory=asyncio.Event)


async def _until(state: _State, done: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not done():
            state.changed.clear()
            await state.changed.wait()


# --------------------------------------------------------------------------- the websocket client


class _NoCommands:
    """The gateway's command handler: the bench's client only listens."""

    async def handle(self, principal: Principal, name: str, args: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError(f"unexpected command {name}")


class RingingClient:
    """The process of ``bench/_ringing_client.py``: started, read and reaped here.

    ``async with`` starts it, hands it the settings over its stdin (the token is
    not put on the command line, visible to ``ps``) and waits for its
    ``{"ready": true}``; then a task reads its reports into
    ``state.ws_ringing`` (caller's number -> receive time, the first one wins)
    and wakes ``state.changed``. On exit (including an error or Ctrl-C) stdin is
    closed, which ends the client, and the process is waited for a bounded
    time, then killed: it never outlives the run.
    """

    def __init__(self, url: str, token: str, state: _State) -> None:
        self._url = url
        self._token = token
        self._state = state
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has ended, else None."""
        return None if self._process is None else self._process.returncode

    async def __aenter__(self) -> RingingClient:
        try:
            self._process = process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(CLIENT_SCRIPT),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert process.stdin is not None
            assert process.stdout is not None
            settings = {"url": self._url, "token": self._token}
            process.stdin.write(json.dumps(settings).encode() + b"\n")
            await process.stdin.drain()
            async with asyncio.timeout(_CLIENT_READY_TIMEOUT):
                line = await process.stdout.readline()
            if not line:
                raise RuntimeError(f"websocket client exited ({await process.wait()})")
            if json.loads(line).get("ready") is not True:
                raise RuntimeError(f"websocket client not ready: {line!r}")
            self._reader = asyncio.create_task(self._read(process.stdout), name="bench-ws")
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        state = self._state
        while line := await stdout.readline():
            seen = json.loads(line)
            number = seen.get("from_number")
            if number:  # null for click-to-call customer legs
                state.ws_ringing.setdefault(number, float(seen["at"]))
                state.changed.set()
        state.changed.set()  # the client is gone: let waiters look again

    async def aclose(self) -> None:
        """Close the client and reap the process; idempotent, bounded."""
        process = self._process
        reader, self._reader = self._reader, None
        try:
            if process is not None:
                if process.stdin is not None and not process.stdin.is_closing():
                    process.stdin.close()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_CLIENT_EXIT_TIMEOUT):
                        await process.wait()
        finally:
            # Also when cancelled half-way: kill and reap a process still running.
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            if reader is not None:
                # The process is gone, so its stdout is at EOF and the reader ends.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_CLIENT_EXIT_TIMEOUT):
                        await asyncio.wait({reader})
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader


# --------------------------------------------------------------------------- the run


def _idle_agent_number(index: int) -> str:
    """The phone of available agent ``index``: a number of the trunk outside the
    customers' plan, so SIPp answers it after 1 s of ringing and talks until hung up."""
    return f"004930197000{index:03d}"


def _config(
    lab: Lab,
    plan: calls_bench._Plan,
    busy: Sequence[str],
    idle: Sequence[str],
    out: Path,
    url: str,
) -> Any:
    sections = []
    for w, ext in enumerate(busy):
        sections.append(
            f'[[lines]]\nextension = "{ext}"\nrole = "agent"\nsecret = "{lab.extensions[ext]}"\n\n'
            f'[[agents]]\nname = "Agent {ext}"\nextension = "{plan.agent_number(w)}"\n'
            f'line = "{ext}"\nuser = "agent-{ext}"\n'
        )
    for i, ext in enumerate(idle):
        sections.append(
            f'[[lines]]\nextension = "{ext}"\nrole = "agent"\nsecret = "{lab.extensions[ext]}"\n\n'
            f'[[agents]]\nname = "Agent {ext}"\nextension = "{_idle_agent_number(i)}"\n'
            f'line = "{ext}"\nuser = "agent-{ext}"\n'
        )
    sections.append(
        f'[[lines]]\nextension = "{RECEPTION}"\nrole = "reception"\n'
        f'secret = "{lab.extensions[RECEPTION]}"\n'
    )
    workers = len(busy) + len(idle) + 1
    text = calls_bench._CONFIG.format(
        pbx_host=lab.pbx_host,
        pbx_port=lab.pbx_port,
        domain=lab.domain,
        sip_base=calls_bench.sip_port_block(workers),
        workers=workers,
        rtp_first=calls_bench.RTP_FIRST,
        rtp_last=calls_bench.RTP_LAST,
        lines="\n".join(sections),
        store_url=url,
    )
    text += (
        "\n[inbound]\nno_agent_timeout = 20\nagent_ring_seconds = 10\n"
        "\n[leads]\nfrom_incoming_calls = true\n"
    )
    return parse_config(text, base_dir=out)


async def _records_settled(store: Store, ids: Sequence[uuid.UUID], *, timeout: float) -> None:
    """Wait until the click-to-call records ``ids`` are answered and linked to their
    lead (the last steps the call service writes behind a bridged call)."""
    async with asyncio.timeout(timeout):
        while True:
            records = [await store.calls.get(i) for i in ids]
            if all(r.answered_at is not None and r.lead_id is not None for r in records):
                return
            await asyncio.sleep(0.2)


async def _measure(
    lab: Lab,
    wire: WireClock,
    state: _State,
    inbound: InboundService,
    client: RingingClient,
    agent_numbers: dict[str, str],
    *,
    active: int,
    calls: int,
    spacing: float,
    prefix: str,
) -> PhaseResult:
    result = PhaseResult(active, calls)
    ringing_before = len(inbound.stats.ringing_latency)
    moves_before = len(inbound.stats.move_latency)
    placed: list[tuple[str, Any]] = []
    start = time.monotonic()
    for i in range(calls):
        await asyncio.sleep(max(0.0, start + i * spacing - time.monotonic()))
        number = f"+4930555{prefix}{i:04d}"
        customer = await lab.customers.call(RECEPTION, number, talk_seconds=CALLER_TALK, timeout=15)
        placed.append((number, customer))
    numbers = [n for n, _ in placed]

    def all_ringing() -> bool:
        if not all(n in state.ringing for n in numbers):
            return False
        # A websocket client that is gone will report nothing more.
        return client.returncode is not None or all(n in state.ws_ringing for n in numbers)

    with contextlib.suppress(TimeoutError):
        await _until(state, all_ringing, timeout=15)
    outcomes = await asyncio.gather(
        *(c.wait(timeout=30) for _, c in placed), return_exceptions=True
    )
    result.completed = sum(1 for o in outcomes if o is True)
    ids = {state.ringing[n][1] for n in numbers if n in state.ringing}
    with contextlib.suppress(TimeoutError):
        await _until(state, lambda: ids <= set(state.ended), timeout=15)
    await asyncio.sleep(0.5)  # the last messages' capture
    series: dict[str, list[float]] = defaultdict(list)
    if client.returncode is not None:
        result.failures.append(f"the websocket client exited ({client.returncode})")
    for number, customer in placed:
        trace = wire.trace(customer.call_id)
        incoming = state.incoming.get(customer.call_id, math.nan)
        ringing, call_id = state.ringing.get(number, (math.nan, None))
        ws = state.ws_ringing.get(number, math.nan)
        if math.isnan(trace.recv):
            result.failures.append(f"{number}: no INVITE to the reception worker on the wire")
        if math.isnan(incoming):
            result.failures.append(f"{number}: no incoming_call")
        if math.isnan(ringing):
            result.failures.append(f"{number}: no call.ringing")
        if math.isnan(ws):
            result.failures.append(f"{number}: no call.ringing at the websocket client")
        series["recv_incoming"].append(incoming - trace.recv)
        series["recv_ringing"].append(ringing - trace.recv)
        series["recv_ws"].append(ws - trace.recv)
        series["pbx_ws"].append(ws - trace.pbx_in)
        series["bus_ws"].append(ws - ringing)
        series["own"].append(ringing - incoming)
        if not math.isnan(trace.carrier):
            result.moved += 1
            series["move_wire"].append(trace.carrier - trace.redirect)
        dialed = state.agent_dialed.get(call_id) if call_id is not None else None
        if dialed is not None:
            agent, dialed_at = dialed
            phone = wire.invite_to(agent_numbers[agent], dialed_at)
            if not math.isnan(phone):
                result.agent_rung += 1
            series["pbx_phone"].append(phone - trace.pbx_in)
            agent_ringing = state.agent_ringing.get(call_id, math.nan) if call_id else math.nan
            series["pbx_agent_ringing"].append(agent_ringing - trace.pbx_in)
    result.ringing_seen = sum(1 for n in numbers if n in state.ringing)
    result.ws_seen = sum(1 for n in numbers if n in state.ws_ringing)
    if result.completed != calls:
        result.failures.append(f"{calls - result.completed} callers not answered and ended")
    series_ms = {name: _ms(values) for name, values in series.items()}
    series_ms["service"] = [v * 1000 for v in list(inbound.stats.ringing_latency)[ringing_before:]]
    series_ms["move_service"] = [v * 1000 for v in list(inbound.stats.move_latency)[moves_before:]]
    for name, values in series_ms.items():
        setattr(result, f"{name}_p50_ms", calls_bench._percentile(values, 0.50))
        setattr(result, f"{name}_p99_ms", calls_bench._percentile(values, 0.99))
    result.recv_ws_ms = [v * 1000 for v in series["recv_ws"]]
    result.own_ms = [v * 1000 for v in series["own"]]
    own_ms = series_ms["own"]
    result.own_mean_ms = statistics.fmean(own_ms) if own_ms else math.nan
    result.ratio_p50 = result.recv_ringing_p50_ms / result.recv_incoming_p50_ms
    result.ratio_p99 = result.recv_ringing_p99_ms / result.recv_incoming_p99_ms
    return result


async def run(
    lab: Lab,
    store: Store,
    url: str,
    args: argparse.Namespace,
    busy: Sequence[str],
    idle: Sequence[str],
    out: Path,
) -> list[PhaseResult]:
    plan = calls_bench._Plan(1, args.active)
    config = _config(lab, plan, busy, idle, out, url)
    agent_numbers = {f"agent-{ext}": _idle_agent_number(i) for i, ext in enumerate(idle)}
    events = Bus(config.site.id)
    sub = events.subscribe("bench", maxsize=1_000_000)
    pool = SipPool(config, bus=events, store=store, ready_timeout=30.0)
    state = _State()
    # The websocket side: the real gateway on the same bus, a supervisor's token.
    supervisor = await store.users.add("bench-supervisor", "Bench supervisor", Role.SUPERVISOR)
    _, token = await store.users.issue_token(supervisor.id, "bench")
    gateway = Gateway(
        events,
        authenticate=store_authenticator(store.users, lambda: config.agents),
        handler=_NoCommands(),
        settings=GatewaySettings(host="127.0.0.1", port=0),
    )

    # The baseline: when the reception leg's incoming_call reaches the handler the
    # service installs (public API only: the pool's on_incoming is wrapped). The
    # moved call's INVITE has the same SIP Call-ID on Kamailio: the first one wins.
    real_on_incoming = pool.on_incoming

    def stamped(handler: Callable[[str, p.IncomingCall], None]) -> Callable[..., None]:
        def wrapped(worker_id: str, event: p.IncomingCall) -> None:
            state.incoming.setdefault(event.sip_call_id, time.time())
            handler(worker_id, event)

        return wrapped

    def on_incoming(handler: Callable[[str, p.IncomingCall], None] | None) -> None:
        real_on_incoming(None if handler is None else stamped(handler))

    pool.on_incoming = on_incoming  # type: ignore[method-assign]

    async def consume() -> None:
        while True:
            envelope = await sub.get()
            now = time.time()
            event = envelope.event
            if isinstance(event, CallRinging) and event.direction == "inbound":
                if event.leg == "customer":
                    state.ringing.setdefault(event.from_number or "", (now, event.call_id))
                elif event.leg == "agent":
                    state.agent_ringing.setdefault(event.call_id, now)
            elif isinstance(event, CallDialing) and event.leg == "agent" and event.agent:
                if event.call_id not in state.agent_dialed:
                    state.agent_dialed[event.call_id] = (event.agent, event.dialed_at.timestamp())
            elif isinstance(event, RegistrationChanged):
                workers = state.registered.setdefault(event.line, set())
                if event.state == "registered":
                    workers.add(event.worker_id or "")
                else:
                    workers.discard(event.worker_id or "")
            elif isinstance(event, CallBridged) and event.recording:
                state.bridged.add(event.call_id)
            elif isinstance(event, CallEnded):
                state.ended[event.call_id] = event
            state.changed.set()

    wire = WireClock(lab.pbx_port)
    wire.start()
    consumer = asyncio.create_task(consume(), name="bench-consumer")
    results: list[PhaseResult] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            # Unwound in reverse: the pool stops, then the client, then the gateway.
            await stack.enter_async_context(gateway)
            client = await stack.enter_async_context(
                RingingClient(f"ws://127.0.0.1:{gateway.port}/", token, state)
            )
            await stack.enter_async_context(pool)
            await _until(
                state,
                lambda: all(state.registered.get(line) for line in [*busy, *idle, RECEPTION]),
                timeout=60,
            )
            presence = PresenceBook.from_config(config)  # every agent offline...
            async with (
                CallService(
                    pool, config=config, bus=events, store=store, agent_timeout=20, ring_timeout=20
                ) as calls,
                InboundService(
                    pool, config=config, bus=events, store=store, presence=presence
                ) as inbound,
            ):
                remove = presence.add_listener(inbound.poke)
                for agent in agent_numbers:  # ...but the idle ones
                    presence.set_available(agent)
                measure = partial(
                    _measure,
                    lab,
                    wire,
                    state,
                    inbound,
                    client,
                    agent_numbers,
                    calls=args.calls,
                    spacing=args.spacing,
                )
                results.append(await measure(active=0, prefix="0"))
                print(_row(results[-1]), flush=True)
                ids = [
                    await calls.click_to_call(
                        agent=f"agent-{busy[c // 2]}", number=plan.customer(c)
                    )
                    for c in range(args.active)
                ]
                try:
                    await _until(state, lambda: state.bridged >= set(ids), timeout=60)
                except TimeoutError:
                    n = len(state.bridged & set(ids))
                    raise RuntimeError(f"only {n} of {args.active} conversations bridged") from None
                # Measured with the conversations up, not while their set-up is still
                # being written: wait until every record has its answer and its lead.
                await _records_settled(store, ids, timeout=60)
                result = await measure(active=args.active, prefix="1")
                gone = [i for i in ids if i in state.ended]
                if gone:
                    result.failures.append(f"{len(gone)} conversations ended during measurement")
                bridged_now = len(state.bridged & set(ids)) - len(gone)
                print(_row(result), flush=True)
                print(f"    conversations up during the measurement: {bridged_now}", flush=True)
                results.append(result)
                await asyncio.gather(
                    *(calls.hangup(i, timeout=20) for i in ids), return_exceptions=True
                )
                with contextlib.suppress(TimeoutError):
                    await _until(state, lambda: set(ids) <= set(state.ended), timeout=20)
                remove()
                stats = inbound.stats
                if stats.moves_lost:
                    results[-1].failures.append(f"{stats.moves_lost} moves lost")
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        wire.stop()
        events.close()
    return results


# --------------------------------------------------------------------------- main


_COLUMNS = (
    ("active", "active", "{:d}"),
    ("calls", "calls", "{:d}"),
    ("ringing", "ringing_seen", "{:d}"),
    ("ws", "ws_seen", "{:d}"),
    ("moved", "moved", "{:d}"),
    ("rung", "agent_rung", "{:d}"),
    ("recv->incoming p50", "recv_incoming_p50_ms", "{:.1f}"),
    ("p99", "recv_incoming_p99_ms", "{:.1f}"),
    ("recv->ringing p50", "recv_ringing_p50_ms", "{:.1f}"),
    ("p99", "recv_ringing_p99_ms", "{:.1f}"),
    ("recv->ws p50", "recv_ws_p50_ms", "{:.1f}"),
    ("p99", "recv_ws_p99_ms", "{:.1f}"),
    ("pbx_in->ws p50", "pbx_ws_p50_ms", "{:.1f}"),
    ("p99", "pbx_ws_p99_ms", "{:.1f}"),
    ("own p50", "own_p50_ms", "{:.1f}"),
    ("p99", "own_p99_ms", "{:.1f}"),
    ("ratio p50", "ratio_p50", "{:.2f}"),
    ("ratio p99", "ratio_p99", "{:.2f}"),
    ("move p50", "move_wire_p50_ms", "{:.1f}"),
    ("p99", "move_wire_p99_ms", "{:.1f}"),
    ("pbx_in->phone p50", "pbx_phone_p50_ms", "{:.1f}"),
    ("p99", "pbx_phone_p99_ms", "{:.1f}"),
    ("pbx_in->agent ringing p50", "pbx_agent_ringing_p50_ms", "{:.1f}"),
    ("p99", "pbx_agent_ringing_p99_ms", "{:.1f}"),
)


def _row(result: PhaseResult) -> str:
    cells = []
    for title, key, fmt in _COLUMNS:
        value = getattr(result, key)
        nan = isinstance(value, float) and math.isnan(value)
        cells.append(("-" if nan else fmt.format(value)).rjust(max(len(title), 5)))
    line = " | ".join(cells)
    if result.failures:
        line += f"\n    failures: {'; '.join(result.failures[:4])}"
    return line


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    if args.agents < 1:
        raise SystemExit("--agents must be at least 1")
    workers = math.ceil(args.active / calls_bench.CONVERSATIONS_PER_WORKER)
    busy = [str(3001 + w) for w in range(workers)]
    idle = [str(3001 + workers + a) for a in range(args.agents)]
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="bench-inbound-"))
    extensions = {ext: secrets.token_hex(8) for ext in [*busy, *idle, RECEPTION]}
    url = f"sqlite+aiosqlite:///{run_dir / 'store.sqlite3'}"
    print(
        f"run directory: {run_dir}; {os.cpu_count()} CPUs; {args.calls} inbound calls per "
        f"phase, one every {args.spacing:g} s; {workers} busy agent workers, "
        f"{args.agents} available agents' workers, 1 reception worker",
        flush=True,
    )
    print(
        "times in ms; clock: kernel timestamps of the SIP messages on lo, time.time()"
        " in-process and in the websocket client"
    )
    print(" | ".join(title.rjust(max(len(title), 5)) for title, _, _ in _COLUMNS), flush=True)
    await upgrade(url)
    store = await Store.open(url, default_region="DE")
    try:
        for ext in [*busy, *idle]:
            await store.users.add(f"agent-{ext}", f"Agent {ext}", extension=ext)
        async with await Lab.start(run_dir / "lab", extensions=extensions, phones=[]) as lab:
            out = run_dir / "switchboard"
            await asyncio.to_thread(out.mkdir, parents=True)
            results = await run(lab, store, url, args, busy, idle, out)
    finally:
        await store.aclose()
    loaded = results[-1]
    # A call that never rang there is not under the goal: it needs every call seen.
    met = loaded.recv_ws_p99_ms < GOAL_MS and loaded.ws_seen == loaded.calls
    print(
        f"goal p99 < {GOAL_MS} ms with {loaded.active} calls active, INVITE to the reception"
        f" worker -> call.ringing at the websocket client: {'met' if met else 'NOT met'} "
        f"({loaded.recv_ws_p99_ms:.1f} ms; from the customer's INVITE into Kamailio "
        f"{loaded.pbx_ws_p99_ms:.1f} ms; baseline recv->incoming "
        f"{loaded.recv_incoming_p99_ms:.1f} ms)"
        f"{'; with failures' if loaded.failures else ''}"
    )
    for r in results:
        print(
            f"    {r.active} active: ringing/incoming p50 {r.ratio_p50:.2f}, p99 "
            f"{r.ratio_p99:.2f}; service's own stat (incoming -> publish) p50 "
            f"{r.service_p50_ms:.1f} p99 {r.service_p99_ms:.1f} ms; bus->ws p50 "
            f"{r.bus_ws_p50_ms:.1f} p99 {r.bus_ws_p99_ms:.1f} ms; move (service: 302 sent"
            f" -> incoming on the carrier) p50 {r.move_service_p50_ms:.1f} p99 "
            f"{r.move_service_p99_ms:.1f} ms"
        )
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "bench": "inbound",
        "cpus": os.cpu_count(),
        "spacing_seconds": args.spacing,
        "goal_p99_ms": GOAL_MS,
        "goal_met": met,
        "phases": [asdict(r) for r in results],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=100, help="inbound calls per phase")
    parser.add_argument("--spacing", type=float, default=0.5, help="seconds between calls")
    parser.add_argument("--active", type=int, default=50, help="conversations up (even)")
    parser.add_argument("--agents", type=int, default=8, help="available agents, one worker each")
    parser.add_argument("--json", default=None, help="also write the report to this file")
    parser.add_argument("--run-dir", default=None, help="default: a new temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)
    text = json.dumps(calls_bench.run_report(lambda: bench(args)))
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
