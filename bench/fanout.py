"""Websocket fan-out: the gateway against bare ``websockets.broadcast``, same run.

``--clients`` websocket clients run in ``--procs`` separate processes
(``bench/_fanout_clients.py``; two by default, so that the clients can use
both cores while the server runs here). For each rate of ``--rate``, two sides
run back to back against the same client code:

- **gateway**: a real :class:`ws_gateway.Gateway` on a real :class:`bus.Bus`,
  authenticating against a real SQLite store (``crm_store``) holding
  ``--tokens`` supervisor users, one token each, shared round-robin by the
  clients: supervisors receive every event, so every client receives every
  event. Events are published on the bus at the fixed rate for ``--seconds``.
- **bare** (the baseline): a ``websockets`` server on the same loopback whose
  handler answers the auth message with ``auth.ok`` and registers the
  connection; each event is stamped by a subscriber-less bus, encoded as the
  gateway encodes it (so the messages are the same JSON, the same size) and
  sent with ``websockets.broadcast`` to every registered connection.

The events are a deterministic cycle of call lifecycles (created, ringing,
answered, bridged, ended), the same on both sides. Each client timestamps
every event it receives; its latency is the receive time minus the envelope's
``at``, the bus's publish time. Figures per side: p50/p99/max delivery latency,
deliveries per second (deliveries over the time from the first publish to the
last delivery), the server process's CPU per delivery, the clients' CPU, and
clients connected, failed or closed early. Ratios gateway/bare, then one JSON
line. The machine is shared and noisy: compare ratios, not absolute figures.

    .venv/bin/python bench/fanout.py [--clients 1000] [--rate 200] [--seconds 10]

``--rate`` takes a comma-separated list of steps (default ``20,50,200``).
``--profile FILE`` runs cProfile over each side's publishing window and prints
where the time goes (into ``FILE.bare.<rate>`` and ``FILE.gateway.<rate>``); it
slows both sides, so the figures of such a run are not a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import logging
import pstats
import resource
import sys
import tempfile
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from websockets.asyncio.server import ServerConnection, broadcast, serve

from bus import Bus, CallAnswered, CallBridged, CallCreated, CallEnded, CallRinging, Event
from config import AgentConfig
from crm_store import Role, Store, upgrade
from ws_gateway import Gateway, GatewaySettings, Principal, store_authenticator
from ws_gateway import protocol as proto

CLIENTS_SCRIPT = Path(__file__).with_name("_fanout_clients.py")
AGENTS = tuple(
    AgentConfig(name=f"Agent{n:02d}", extension=f"1{n:02d}", line=f"20{n:02d}") for n in range(20)
)
_READY_TIMEOUT = 120.0
_REPLY_TIMEOUT = 30.0
_EXIT_TIMEOUT = 10.0


class _NoCommands:
    """The command handler: the bench's clients only listen."""

    async def handle(
        self, principal: Principal, name: str, args: dict[str, Any]
    ) -> Mapping[str, Any]:
        raise AssertionError(f"unexpected command {name}")


def events(count: int) -> Iterator[Event]:
    """``count`` events: call lifecycles of five events each, deterministic."""
    n = 0
    while True:
        call_id = uuid.UUID(int=n + 1)
        agent = AGENTS[n % len(AGENTS)].name
        lifecycle: tuple[Event, ...] = (
            CallCreated(
                call_id=call_id,
                direction="inbound",
                from_number=f"+336{12000000 + n:08d}",
                to_number="2001",
                line="2001",
                agent=agent,
                worker_id="w1",
            ),
            CallRinging(call_id=call_id, leg="agent", agent=agent),
            CallAnswered(call_id=call_id, leg="agent", agent=agent),
            CallBridged(call_id=call_id, agent=agent, recording=True),
            CallEnded(
                call_id=call_id,
                reason="completed",
                sip_code=200,
                agent=agent,
                talk_seconds=61.5,
                leg="customer",
            ),
        )
        for event in lifecycle:
            if count == 0:
                return
            count -= 1
            yield event
        n += 1


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class _Proc:
    process: asyncio.subprocess.Process
    out: Path


@dataclass
class ClientProcesses:
    """The client processes of one side: started, driven and reaped by the bench.

    ``async with`` starts them and, on exit (including an error or Ctrl-C),
    closes their stdin, waits a bounded time, then terminates and kills
    whatever is left: no client process outlives a step.
    """

    url: str
    tokens: list[str]
    clients: int
    procs: int
    workdir: Path
    label: str
    _procs: list[_Proc] = field(default_factory=list)

    async def __aenter__(self) -> ClientProcesses:
        try:
            for n in range(self.procs):
                count = self.clients // self.procs + (n < self.clients % self.procs)
                out = self.workdir / f"{self.label}-{n}.lat"
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(CLIENTS_SCRIPT),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
                self._procs.append(_Proc(process, out))
                # Tokens go over the pipe, not on the command line (visible to `ps`).
                self._send(
                    self._procs[-1],
                    {"url": self.url, "tokens": self.tokens, "count": count, "out": str(out)},
                )
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _send(self, proc: _Proc, message: dict[str, Any]) -> None:
        assert proc.process.stdin is not None
        proc.process.stdin.write(json.dumps(message).encode() + b"\n")

    async def _replies(self, timeout: float) -> list[dict[str, Any]]:
        async def one(proc: _Proc) -> dict[str, Any]:
            assert proc.process.stdout is not None
            line = await proc.process.stdout.readline()
            if not line:
                raise RuntimeError(f"client process exited ({await proc.process.wait()})")
            reply: dict[str, Any] = json.loads(line)
            return reply

        async with asyncio.timeout(timeout):
            return list(await asyncio.gather(*(one(p) for p in self._procs)))

    async def ready(self) -> tuple[int, int]:
        """Wait until every client is authenticated or failed: (ready, failed)."""
        replies = await self._replies(_READY_TIMEOUT)
        return sum(r["ready"] for r in replies), sum(r["failed"] for r in replies)

    def go(self) -> None:
        for proc in self._procs:
            self._send(proc, {"go": True})

    async def finish(self, expect: int, drain: float) -> tuple[list[dict[str, Any]], array[int]]:
        """Tell the clients ``expect`` events were published; their reports and latencies."""
        for proc in self._procs:
            self._send(proc, {"expect": expect, "drain": drain})
        replies = await self._replies(drain + _REPLY_TIMEOUT)
        latencies = array("q")
        for proc in self._procs:
            with proc.out.open("rb") as f:
                latencies.frombytes(f.read())
            proc.out.unlink()
        return replies, latencies

    async def aclose(self) -> None:
        """Close the clients and reap the processes; idempotent, bounded."""
        for proc in self._procs:
            if proc.process.stdin is not None and not proc.process.stdin.is_closing():
                proc.process.stdin.close()
        try:
            for proc in self._procs:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_EXIT_TIMEOUT):
                        await proc.process.wait()
        finally:
            # Also when cancelled (Ctrl-C) half-way: kill and reap every process
            # still running, not only the one being waited for.
            for proc in self._procs:
                if proc.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.process.kill()
                    await proc.process.wait()
            self._procs.clear()


def pct(sorted_values: list[int], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ascending values; NaN if none."""
    if not sorted_values:
        return float("nan")
    return float(sorted_values[min(len(sorted_values) - 1, int(q / 100 * len(sorted_values)))])


async def publish_at_rate(
    publish: Callable[[Event], None], rate: float, seconds: float
) -> tuple[int, float, float]:
    """Call ``publish`` for ``rate * seconds`` events on a fixed schedule.

    The schedule is absolute (event i at start + i/rate), so a late wake-up is
    caught up by publishing at once rather than stretching the run. Returns
    (events, seconds taken, largest lateness behind the schedule in seconds).
    The lateness matters: latencies are measured from the envelope's ``at``,
    the actual publish time, so a side whose publishing blocks the loop
    (``broadcast`` is synchronous) hides its backlog there, not in latency.
    """
    loop = asyncio.get_running_loop()
    count = round(rate * seconds)
    start = loop.time()
    late = 0.0
    for i, event in enumerate(events(count)):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        late = max(late, loop.time() - due)
        publish(event)
    return count, loop.time() - start, late


@dataclass
class Side:
    """What one side measured at one rate."""

    side: str
    rate: float
    clients: int
    connected: int = 0
    failed: int = 0
    events: int = 0
    publish_s: float = 0.0
    publish_late_max_s: float = 0.0
    delivered: int = 0
    expected: int = 0
    closed_early: dict[str, int] = field(default_factory=dict)
    server_closed_too_slow: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    deliveries_per_s: float = 0.0
    server_cpu_us_per_delivery: float = 0.0
    client_cpu_s: float = 0.0
    complete: bool = False
    """Every client connected, none closed, every event delivered to each."""


async def measure(
    *,
    side: str,
    url: str,
    tokens: list[str],
    args: argparse.Namespace,
    rate: float,
    workdir: Path,
    publish: Callable[[Event], None],
    profiler: cProfile.Profile | None = None,
    closed_too_slow: Callable[[], int] = lambda: 0,
) -> Side:
    """One side at one rate: connect the clients, publish, drain, collect."""
    result = Side(side=side, rate=rate, clients=args.clients)
    async with ClientProcesses(url, tokens, args.clients, args.procs, workdir, side) as fleet:
        result.connected, result.failed = await fleet.ready()
        fleet.go()
        cpu_start = time.process_time()
        first_publish = time.time_ns()
        if profiler is not None:
            profiler.enable()
        try:
            result.events, result.publish_s, result.publish_late_max_s = await publish_at_rate(
                publish, rate, args.seconds
            )
            reports, latencies = await fleet.finish(result.events, args.drain)
        finally:
            if profiler is not None:
                profiler.disable()
        cpu = time.process_time() - cpu_start
    result.expected = result.events * result.connected
    result.delivered = sum(r["received"] for r in reports)
    closed: Counter[str] = Counter()
    for report in reports:
        closed.update(report["closed_early"])
    result.closed_early = dict(closed)
    result.server_closed_too_slow = closed_too_slow()
    result.client_cpu_s = round(sum(r["cpu_s"] for r in reports), 2)
    result.publish_s = round(result.publish_s, 2)
    result.publish_late_max_s = round(result.publish_late_max_s, 3)
    result.complete = (
        result.connected == result.clients
        and not result.closed_early
        and result.delivered == result.events * result.clients
    )
    last = max((r["last_ns"] for r in reports), default=first_publish)
    values = sorted(latencies)
    result.p50_ms = round(pct(values, 50) / 1e6, 2)
    result.p99_ms = round(pct(values, 99) / 1e6, 2)
    result.max_ms = round(values[-1] / 1e6, 2) if values else float("nan")
    span = (last - first_publish) / 1e9
    result.deliveries_per_s = round(result.delivered / span) if span > 0 else 0
    if result.delivered:
        result.server_cpu_us_per_delivery = round(cpu / result.delivered * 1e6, 2)
    return result


async def run_gateway(
    store: Store, tokens: list[str], args: argparse.Namespace, rate: float, workdir: Path
) -> tuple[Side, cProfile.Profile | None]:
    bus = Bus("bench")
    # Every bench client comes from 127.0.0.1 and shares --tokens users: the
    # admission limits, meant for real clients, would refuse most of them.
    settings = GatewaySettings(
        host="127.0.0.1",
        port=0,
        max_unauthenticated=args.clients,
        max_unauthenticated_per_address=args.clients,
        max_sessions_per_user=args.clients,
    )
    profiler = cProfile.Profile() if args.profile else None
    async with Gateway(
        bus,
        authenticate=store_authenticator(store.users, lambda: AGENTS),
        handler=_NoCommands(),
        settings=settings,
    ) as gateway:
        result = await measure(
            side="gateway",
            url=f"ws://127.0.0.1:{gateway.port}/",
            tokens=tokens,
            args=args,
            rate=rate,
            workdir=workdir,
            publish=lambda event: _discard(bus.publish(event)),
            profiler=profiler,
            closed_too_slow=lambda: gateway.stats.closed_too_slow,
        )
    return result, profiler


async def run_bare(
    tokens: list[str], args: argparse.Namespace, rate: float, workdir: Path
) -> tuple[Side, cProfile.Profile | None]:
    connections: set[ServerConnection] = set()
    auth_ok = proto.encode({"type": "auth.ok"})

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # the auth message; the baseline checks nothing
        await ws.send(auth_ok)
        connections.add(ws)
        try:
            await ws.wait_closed()
        finally:
            connections.discard(ws)

    # Stamped by a bus with no subscriber: the same envelope (origin, seq, UTC
    # time) as the gateway's, so the baseline sends the same bytes, encoded the
    # same way, once per event.
    stamper = Bus("bench")
    seq = 0

    def publish(event: Event) -> None:
        nonlocal seq
        seq += 1
        envelope = stamper.publish(event)
        broadcast(connections, proto.encode(proto.event(seq=seq, envelope_data=envelope.to_data())))

    # As the gateway's defaults: no compression, 20 s pings, 64 KiB messages.
    async with serve(
        handler,
        "127.0.0.1",
        0,
        compression=None,
        ping_interval=20.0,
        ping_timeout=20.0,
        max_size=65536,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        profiler = cProfile.Profile() if args.profile else None
        result = await measure(
            side="bare",
            url=f"ws://127.0.0.1:{port}/",
            tokens=tokens,
            args=args,
            rate=rate,
            workdir=workdir,
            publish=publish,
            profiler=profiler,
        )
    return result, profiler


async def make_tokens(store: Store, count: int) -> list[str]:
    tokens = []
    for n in range(count):
        user = await store.users.add(f"sup{n}", f"Supervisor {n}", Role.SUPERVISOR)
        _, token = await store.users.issue_token(user.id, "bench")
        tokens.append(token)
    return tokens


def _discard(_: object) -> None:
    return None


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    fd_limit = raise_fd_limit()
    if fd_limit < args.clients + 100:
        raise SystemExit(f"open files limit {fd_limit} is too low for {args.clients} clients")
    report: dict[str, Any] = {
        "clients": args.clients,
        "procs": args.procs,
        "seconds": args.seconds,
        "tokens": args.tokens,
        "steps": [],
    }
    with tempfile.TemporaryDirectory(prefix="sb-fanout-") as tmp:
        workdir = Path(tmp)
        url = f"sqlite+aiosqlite:///{workdir / 'crm.sqlite3'}"
        await upgrade(url)
        async with await Store.open(url) as store:
            tokens = await make_tokens(store, args.tokens)
            for rate in args.rate:
                # Bare first, then the gateway, at each rate: alternating keeps
                # a drift in the machine's load from favouring one side throughout.
                bare, bare_profiler = await run_bare(tokens, args, rate, workdir)
                _print_side(bare)
                gateway, profiler = await run_gateway(store, tokens, args, rate, workdir)
                _print_side(gateway)
                # Only a rate both sides carried whole gives comparable figures.
                ratios: dict[str, Any] = {
                    "comparable": bare.complete and gateway.complete,
                    "throughput": _ratio(gateway.deliveries_per_s, bare.deliveries_per_s),
                    "p50": _ratio(gateway.p50_ms, bare.p50_ms),
                    "p99": _ratio(gateway.p99_ms, bare.p99_ms),
                    "cpu_per_delivery": _ratio(
                        gateway.server_cpu_us_per_delivery, bare.server_cpu_us_per_delivery
                    ),
                }
                print(
                    f"  ratio gateway/bare at {rate:g}/s: throughput {ratios['throughput']}"
                    f"  p50 {ratios['p50']}  p99 {ratios['p99']}"
                    f"  server CPU per delivery {ratios['cpu_per_delivery']}"
                    f"{'' if ratios['comparable'] else '  (not comparable: a side is incomplete)'}",
                    flush=True,
                )
                report["steps"].append(
                    {"rate": rate, "bare": vars(bare), "gateway": vars(gateway), "ratio": ratios}
                )
                if bare_profiler is not None and profiler is not None:
                    _print_profile(bare_profiler, f"{args.profile}.bare", rate)
                    _print_profile(profiler, f"{args.profile}.gateway", rate)
    return report


def _print_side(s: Side) -> None:
    print(
        f"{s.side:<8} rate {s.rate:>6g}/s  clients {s.connected}/{s.clients}"
        f" (failed {s.failed}, closed early {s.closed_early or 0}"
        f"{f', {s.server_closed_too_slow} as too slow' if s.side == 'gateway' else ''})"
        f"  events {s.events} in {s.publish_s:.1f} s (late ≤ {s.publish_late_max_s:.2f} s)"
        f"  delivered {s.delivered}/{s.expected}"
        f"  p50 {s.p50_ms} ms  p99 {s.p99_ms} ms  max {s.max_ms} ms"
        f"  {s.deliveries_per_s:,} deliveries/s"
        f"  server CPU {s.server_cpu_us_per_delivery} µs/delivery"
        f"  clients CPU {s.client_cpu_s} s"
        f"{'' if s.complete else '  INCOMPLETE'}",
        flush=True,
    )


def _print_profile(profiler: cProfile.Profile, path: str, rate: float) -> None:
    target = f"{path}.{rate:g}"
    profiler.dump_stats(target)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    print(f"--- cProfile at {rate:g}/s (saved to {target}) ---")
    print(out.getvalue())


def _rates(text: str) -> list[float]:
    return [float(r) for r in text.split(",") if r]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument(
        "--rate", type=_rates, default=[20.0, 50.0, 200.0], help="events/s steps: a,b,..."
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="publishing time per side")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--tokens", type=int, default=10, help="supervisor users/tokens")
    parser.add_argument(
        "--drain", type=float, default=20.0, help="seconds to wait for late deliveries"
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile both sides into FILE.*")
    args = parser.parse_args()
    # 1,000 session log lines per side would be part of the measurement.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.basicConfig(level=logging.WARNING)
    report = asyncio.run(run(args))
    print(json.dumps(report))


if __name__ == "__main__":
    # Ctrl-C cancels the run; the client processes are reaped as it unwinds.
    with contextlib.suppress(KeyboardInterrupt):
        main()
