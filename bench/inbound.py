"""How fast an inbound call reaches ``call.ringing``, with and without 50 calls up.

One lab (Kamailio, SIPp customers), one daemon side in this process: a ``SipPool``
of 25 agent lines plus one reception line (26 workers; every agent worker also
registers the reception line, so Kamailio forks each inbound call to all 26), a
``CallService``, an ``InboundService`` with a ``PresenceBook`` where every agent
is offline, a SQLite store (migrated with ``crm_store.upgrade``), a bus, and a
``ws_gateway.Gateway`` on that bus (default settings, on 127.0.0.1 with a free
port, authenticating against the store). One websocket client of that gateway
runs in a separate process (``bench/_ringing_client.py``): a supervisor (sees
every call) with a token issued by the store, connected and authenticated
before the pool starts.

Two phases, back to back in the same pool:

- **0 active**: ``--calls`` customers (SIPp UACs of ``lab.customers``) call the
  reception line, one every ``--spacing`` s, each from a new number (so the
  service looks it up, creates a lead, writes the call record and publishes);
- **50 active**: 50 click-to-call conversations are set up exactly as
  ``bench/calls.py`` does (agent side and customer both SIPp, bridged, recorded,
  talking until hung up), then the same number of inbound calls; the 50 are
  hung up afterwards.

No agent is available, so every inbound call rings in the queue and, after
``[inbound] no_agent_timeout = 1`` s, is rejected with 480 (the customer expects
exactly that).

Clock: the INVITEs are timed on the wire. An ``AF_PACKET`` socket on ``lo`` (root
needed) with a BPF filter on Kamailio's port takes the kernel's receive
timestamp (``SO_TIMESTAMPNS``, CLOCK_REALTIME) of every INVITE to and from
Kamailio: ``pbx_in`` is the customer's authenticated INVITE reaching Kamailio,
``fork`` the first INVITE Kamailio forwards to a worker (Switchboard's ingress).
The daemon side stamps ``time.time()`` (same clock) when the first branch's
``incoming_call`` reaches the pool's handler (a wrapper around the handler the
service installs with ``pool.on_incoming``) and when a bus subscriber receives
the ``CallRinging(leg="customer")`` of that caller. The websocket client stamps
``time.time()`` (same clock, same machine, its own process) as soon as
``recv()`` returns the gateway's ``call.ringing`` event message with ``leg``
``customer`` of that caller, before parsing it, and reports it to the bench on
its stdout. Per phase, p50/p99 of:

- ``fork -> incoming``: the baseline (pjsua2 worker + pipe to the daemon);
- ``fork -> ringing``: to the bus subscriber in this process;
- ``fork -> ws``: to the websocket client, the product requirement's figure
  (INVITE-in to ``call.ringing`` at a websocket client, p99 < 50 ms with 50
  calls active): ``fork -> ringing`` plus the gateway's fan-out, the loopback
  socket and the client's receive;
- ``bus -> ws``: ws minus ringing, that last stretch alone (in the JSON, and in
  the lines after the verdict);
- ``pbx_in -> ringing``: the bus figure, Kamailio's auth, lookup and fork included;
- ``own``: ringing minus incoming (lookup, lead creation, publish,
  delivery to a subscriber); and the ratio ringing / incoming.

The goal is stated against both ``fork -> ringing`` and ``fork -> ws`` of the
loaded phase; ``goal_met`` in the JSON is true only when both are under 50 ms.

    .venv/bin/python bench/inbound.py [--calls 40] [--spacing 0.5] [--active 50] [--json out.json]

About one minute.
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bus import Bus, CallBridged, CallEnded, CallRinging, RegistrationChanged
from config import parse_config
from crm_store import Role, Store, upgrade
from lab import Lab, free_port_block
from sip import protocol as p
from sip.calls import CallService
from sip.inbound import InboundService, PresenceBook
from sip.pool import SipPool
from ws_gateway import Gateway, GatewaySettings, Principal, store_authenticator

try:
    from bench import calls as calls_bench
except ImportError:  # run as a script: bench/ is sys.path[0]
    import calls as calls_bench  # type: ignore[no-redef]

RECEPTION = "2100"
_ETH_P_IP = 0x0800
_SO_ATTACH_FILTER = 26
_SO_TIMESTAMPNS = 35  # == SCM_TIMESTAMPNS
_CALL_ID = re.compile(rb"\r\n(?:Call-ID|i)\s*:\s*([^\r\n]+)", re.IGNORECASE)
_AUTH = re.compile(rb"\r\nProxy-Authorization\s*:", re.IGNORECASE)
CLIENT_SCRIPT = Path(__file__).with_name("_ringing_client.py")
_CLIENT_READY_TIMEOUT = 30.0
_CLIENT_EXIT_TIMEOUT = 10.0


# --------------------------------------------------------------------------- the wire


@dataclass(frozen=True)
class _WireInvite:
    at: float  # kernel timestamp, CLOCK_REALTIME seconds
    from_pbx: bool
    authenticated: bool
    call_id: str


class WireClock:
    """Kernel timestamps of the INVITEs to and from Kamailio, on ``lo``."""

    def __init__(self, pbx_port: int) -> None:
        self._port = pbx_port
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.invites: list[_WireInvite] = []

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
            if not payload.startswith(b"INVITE "):
                continue
            at = math.nan
            for level, kind, cdata in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    at = sec + nsec / 1e9
            if math.isnan(at):
                continue
            sport, _dport = struct.unpack("!HH", data[ihl : ihl + 4])
            match = _CALL_ID.search(payload)
            if match is None:
                continue
            invite = _WireInvite(
                at,
                from_pbx=sport == self._port,
                authenticated=_AUTH.search(payload) is not None,
                call_id=match[1].decode(errors="replace").strip(),
            )
            with self._lock:
                self.invites.append(invite)

    def times(self, call_id: str) -> tuple[float, float]:
        """``(pbx_in, fork)`` of ``call_id``: NaN where not seen."""
        with self._lock:
            mine = [i for i in self.invites if i.call_id == call_id]
        pbx_in = min((i.at for i in mine if not i.from_pbx and i.authenticated), default=math.nan)
        fork = min((i.at for i in mine if i.from_pbx), default=math.nan)
        return pbx_in, fork

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
    rejected_480: int = 0
    fork_incoming_p50_ms: float = math.nan
    fork_incoming_p99_ms: float = math.nan
    fork_ringing_p50_ms: float = math.nan
    fork_ringing_p99_ms: float = math.nan
    ws_seen: int = 0  # call.ringing received by the websocket client
    fork_ws_p50_ms: float = math.nan
    fork_ws_p99_ms: float = math.nan
    bus_ws_p50_ms: float = math.nan  # websocket client minus bus subscriber
    bus_ws_p99_ms: float = math.nan
    pbx_ringing_p50_ms: float = math.nan
    pbx_ringing_p99_ms: float = math.nan
    own_p50_ms: float = math.nan
    own_p99_ms: float = math.nan
    own_mean_ms: float = math.nan
    service_p50_ms: float = math.nan  # InboundService.stats.ringing_latency
    service_p99_ms: float = math.nan
    ratio_p50: float = math.nan  # fork->ringing / fork->incoming
    ratio_p99: float = math.nan
    failures: list[str] = field(default_factory=list)


@dataclass
class _State:
    registered: dict[str, set[str]] = field(default_factory=dict)  # line -> workers
    bridged: set[uuid.UUID] = field(default_factory=set)
    ended: dict[uuid.UUID, CallEnded] = field(default_factory=dict)
    ringing: dict[str, tuple[float, uuid.UUID]] = field(default_factory=dict)  # number ->
    ws_ringing: dict[str, float] = field(default_factory=dict)  # number -> at the ws client
    incoming: dict[str, float] = field(default_factory=dict)  # SIP Call-ID -> first branch
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


def _config(lab: Lab, plan: calls_bench._Plan, lines: Sequence[str], out: Path, url: str) -> Any:
    sections = []
    for w in range(plan.workers):
        ext = lines[w]
        sections.append(
            f'[[lines]]\nextension = "{ext}"\nrole = "agent"\nsecret = "{lab.extensions[ext]}"\n\n'
            f'[[agents]]\nname = "Agent {ext}"\nextension = "{plan.agent_number(w)}"\n'
            f'line = "{ext}"\nuser = "agent-{ext}"\n'
        )
    sections.append(
        f'[[lines]]\nextension = "{RECEPTION}"\nrole = "reception"\n'
        f'secret = "{lab.extensions[RECEPTION]}"\n'
    )
    workers = plan.workers + 1
    text = calls_bench._CONFIG.format(
        pbx_host=lab.pbx_host,
        pbx_port=lab.pbx_port,
        domain=lab.domain,
        sip_base=free_port_block(workers),
        workers=workers,
        rtp_first=calls_bench.RTP_FIRST,
        rtp_last=calls_bench.RTP_LAST,
        lines="\n".join(sections),
        store_url=url,
    )
    text += "\n[inbound]\nno_agent_timeout = 1\n\n[leads]\nfrom_incoming_calls = true\n"
    return parse_config(text, base_dir=out)


async def _measure(
    lab: Lab,
    wire: WireClock,
    state: _State,
    inbound: InboundService,
    client: RingingClient,
    *,
    active: int,
    calls: int,
    spacing: float,
    prefix: str,
) -> PhaseResult:
    result = PhaseResult(active, calls)
    before = len(inbound.stats.ringing_latency)
    placed: list[tuple[str, Any]] = []
    start = time.monotonic()
    for i in range(calls):
        await asyncio.sleep(max(0.0, start + i * spacing - time.monotonic()))
        number = f"+4930555{prefix}{i:04d}"
        customer = await lab.customers.call(RECEPTION, number, expect_code=480, timeout=10)
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
    result.rejected_480 = sum(1 for o in outcomes if o is True)
    ids = {state.ringing[n][1] for n in numbers if n in state.ringing}
    with contextlib.suppress(TimeoutError):
        await _until(state, lambda: ids <= set(state.ended), timeout=15)
    await asyncio.sleep(0.5)  # the last INVITEs' capture
    fork_inc, fork_ring, fork_ws, bus_ws, pbx_ring, own = [], [], [], [], [], []
    if client.returncode is not None:
        result.failures.append(f"the websocket client exited ({client.returncode})")
    for number, customer in placed:
        pbx_in, fork = wire.times(customer.call_id)
        incoming = state.incoming.get(customer.call_id, math.nan)
        ringing = state.ringing.get(number, (math.nan, None))[0]
        ws = state.ws_ringing.get(number, math.nan)
        if math.isnan(fork):
            result.failures.append(f"{number}: no forked INVITE on the wire")
        if math.isnan(incoming):
            result.failures.append(f"{number}: no incoming_call")
        if math.isnan(ringing):
            result.failures.append(f"{number}: no call.ringing")
        if math.isnan(ws):
            result.failures.append(f"{number}: no call.ringing at the websocket client")
        fork_inc.append(incoming - fork)
        fork_ring.append(ringing - fork)
        fork_ws.append(ws - fork)
        bus_ws.append(ws - ringing)
        pbx_ring.append(ringing - pbx_in)
        own.append(ringing - incoming)
    result.ringing_seen = sum(1 for n in numbers if n in state.ringing)
    result.ws_seen = sum(1 for n in numbers if n in state.ws_ringing)
    if result.rejected_480 != calls:
        result.failures.append(f"{calls - result.rejected_480} customers not refused with 480")
    service = [v * 1000 for v in list(inbound.stats.ringing_latency)[before:]]
    for name, values in (
        ("fork_incoming", _ms(fork_inc)),
        ("fork_ringing", _ms(fork_ring)),
        ("fork_ws", _ms(fork_ws)),
        ("bus_ws", _ms(bus_ws)),
        ("pbx_ringing", _ms(pbx_ring)),
        ("own", _ms(own)),
        ("service", service),
    ):
        setattr(result, f"{name}_p50_ms", calls_bench._percentile(values, 0.50))
        setattr(result, f"{name}_p99_ms", calls_bench._percentile(values, 0.99))
    own_ms = _ms(own)
    result.own_mean_ms = statistics.fmean(own_ms) if own_ms else math.nan
    result.ratio_p50 = result.fork_ringing_p50_ms / result.fork_incoming_p50_ms
    result.ratio_p99 = result.fork_ringing_p99_ms / result.fork_incoming_p99_ms
    return result


async def run(
    lab: Lab, store: Store, url: str, args: argparse.Namespace, lines: Sequence[str], out: Path
) -> list[PhaseResult]:
    plan = calls_bench._Plan(1, args.active)
    config = _config(lab, plan, lines, out, url)
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

    # The baseline: when the first branch's incoming_call reaches the handler the
    # service installs (public API only: the pool's on_incoming is wrapped).
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
            if isinstance(event, CallRinging):
                if event.leg == "customer" and event.direction == "inbound":
                    state.ringing.setdefault(event.from_number or "", (now, event.call_id))
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
            agents = set(lines[: plan.workers])
            await _until(
                state,
                lambda: (
                    all(state.registered.get(line) for line in agents)
                    and len(state.registered.get(RECEPTION, ())) >= plan.workers + 1
                ),
                timeout=60,
            )
            presence = PresenceBook.from_config(config)  # every agent offline
            async with (
                CallService(
                    pool, config=config, bus=events, store=store, agent_timeout=20, ring_timeout=20
                ) as calls,
                InboundService(
                    pool, config=config, bus=events, store=store, presence=presence
                ) as inbound,
            ):
                remove = presence.add_listener(inbound.poke)
                kw = {"calls": args.calls, "spacing": args.spacing}
                results.append(
                    await _measure(lab, wire, state, inbound, client, active=0, prefix="0", **kw)
                )
                print(_row(results[-1]), flush=True)
                ids = [
                    await calls.click_to_call(
                        agent=f"agent-{lines[c // 2]}", number=plan.customer(c)
                    )
                    for c in range(args.active)
                ]
                try:
                    await _until(state, lambda: state.bridged >= set(ids), timeout=60)
                except TimeoutError:
                    n = len(state.bridged & set(ids))
                    raise RuntimeError(f"only {n} of {args.active} conversations bridged") from None
                result = await _measure(
                    lab, wire, state, inbound, client, active=args.active, prefix="1", **kw
                )
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
    ("fork->incoming p50", "fork_incoming_p50_ms", "{:.1f}"),
    ("p99", "fork_incoming_p99_ms", "{:.1f}"),
    ("fork->ringing p50", "fork_ringing_p50_ms", "{:.1f}"),
    ("p99", "fork_ringing_p99_ms", "{:.1f}"),
    ("ws", "ws_seen", "{:d}"),
    ("fork->ws p50", "fork_ws_p50_ms", "{:.1f}"),
    ("p99", "fork_ws_p99_ms", "{:.1f}"),
    ("pbx_in->ringing p50", "pbx_ringing_p50_ms", "{:.1f}"),
    ("p99", "pbx_ringing_p99_ms", "{:.1f}"),
    ("own p50", "own_p50_ms", "{:.1f}"),
    ("p99", "own_p99_ms", "{:.1f}"),
    ("ratio p50", "ratio_p50", "{:.2f}"),
    ("ratio p99", "ratio_p99", "{:.2f}"),
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
    workers = math.ceil(args.active / calls_bench.CONVERSATIONS_PER_WORKER)
    lines = [str(3001 + w) for w in range(workers)]
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="bench-inbound-"))
    extensions = {ext: secrets.token_hex(8) for ext in [*lines, RECEPTION]}
    url = f"sqlite+aiosqlite:///{run_dir / 'store.sqlite3'}"
    print(
        f"run directory: {run_dir}; {os.cpu_count()} CPUs; {args.calls} inbound calls per "
        f"phase, one every {args.spacing:g} s; {workers + 1} workers",
        flush=True,
    )
    print(
        "times in ms; clock: kernel timestamps of the INVITEs on lo, time.time() in-process"
        " and in the websocket client"
    )
    print(" | ".join(title.rjust(max(len(title), 5)) for title, _, _ in _COLUMNS), flush=True)
    await upgrade(url)
    store = await Store.open(url, default_region="DE")
    try:
        for ext in lines:
            await store.users.add(f"agent-{ext}", f"Agent {ext}", extension=ext)
        async with await Lab.start(run_dir / "lab", extensions=extensions, phones=[]) as lab:
            out = run_dir / "switchboard"
            await asyncio.to_thread(out.mkdir, parents=True)
            results = await run(lab, store, url, args, lines, out)
    finally:
        await store.aclose()
    loaded = results[-1]
    # A call that never rang there is not under 50 ms: the goal needs every call seen.
    bus_met = loaded.fork_ringing_p99_ms < 50 and loaded.ringing_seen == loaded.calls
    ws_met = loaded.fork_ws_p99_ms < 50 and loaded.ws_seen == loaded.calls
    print(
        f"goal p99 < 50 ms with {loaded.active} calls active: "
        f"fork->ringing (bus subscriber) {'met' if bus_met else 'NOT met'} "
        f"({loaded.fork_ringing_p99_ms:.1f} ms; from pbx_in {loaded.pbx_ringing_p99_ms:.1f} ms), "
        f"fork->ws (websocket client) {'met' if ws_met else 'NOT met'} "
        f"({loaded.fork_ws_p99_ms:.1f} ms)"
        f"{'; with failures' if loaded.failures else ''}"
    )
    for r in results:
        print(
            f"    {r.active} active: ringing/incoming p50 {r.ratio_p50:.2f}, p99 "
            f"{r.ratio_p99:.2f}; service's own stat (first branch -> publish) p50 "
            f"{r.service_p50_ms:.1f} p99 {r.service_p99_ms:.1f} ms; bus->ws p50 "
            f"{r.bus_ws_p50_ms:.1f} p99 {r.bus_ws_p99_ms:.1f} ms"
        )
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "bench": "inbound",
        "cpus": os.cpu_count(),
        "spacing_seconds": args.spacing,
        "goal_p99_ms": 50,
        "goal_met": bus_met and ws_met,
        "goal_met_fork_ringing": bus_met,
        "goal_met_fork_ws": ws_met,
        "phases": [asdict(r) for r in results],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=40, help="inbound calls per phase")
    parser.add_argument("--spacing", type=float, default=0.5, help="seconds between calls")
    parser.add_argument("--active", type=int, default=50, help="conversations up (even)")
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
