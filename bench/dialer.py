"""Auto-dialer scheduling: overhead per item, and how many agents keep exact gaps.

Each step runs N agents dialing one shared list in the lab, every number a
customer that answers busy or declines at once (``ring=0``), so every item is an
unanswered call followed by the configured gap (default 5 s). The agents'
persistent legs go to lab customers on ``00…`` numbers (answered after 1 s, talk
until hung up), so no phone process is needed per agent. The daemon side is the
real thing: a ``SipPool`` with one worker per agent line, a SQLite store, the bus
and the ``Dialer``.

Figures per step:

- **lab gap**: from the customer's final response to the agent's next INVITE, on
  SIPp's clock (``invites()``; with ``ring=0`` the final response leaves as the
  INVITE arrives), minus the gap: the whole scheduling overhead, including the
  store write before the INVITE, the worker, Kamailio's 407 round trip;
- **session**: from the final response's arrival on the loop to the originate
  command leaving (``DialingSession.timings``), minus the gap: the dialer's own part.

The ramp stops at the first step where a gap is off by more than ``--tolerance``;
the largest passing N is reported. By default the N sessions start together and run
in lockstep (their gaps end at the same instant: the worst case); ``--stagger``
spreads their starts over one gap. Prints a table, then one JSON line.

    .venv/bin/python bench/dialer.py [--steps 1,2,4,8,16,24] [--items 4] [--gap 5] [--stagger]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, this file's directory comes first on sys.path, and this file
# is named like the package it measures: drop the directory so that `import
# dialer` below finds the package, not this file.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import structlog  # noqa: E402

from bus import Bus, DialerDialing, DialerSessionFinished, RegistrationChanged  # noqa: E402
from config import parse_config  # noqa: E402
from crm_store import Store, upgrade  # noqa: E402
from dialer import Dialer  # noqa: E402
from lab import free_port_block  # noqa: E402
from lab.customers import Behaviour, customer_number  # noqa: E402
from lab.runner import Lab  # noqa: E402
from sip.pool import SipPool  # noqa: E402

RTP_FIRST, RTP_LAST = 30000, 32767


@dataclass
class StepResult:
    agents: int
    items: int
    gaps: int = 0
    ok: bool = False
    error: str | None = None
    seconds: float = 0.0
    lab_p50_ms: float = float("nan")
    lab_p99_ms: float = float("nan")
    lab_max_abs_ms: float = float("nan")
    session_p50_ms: float = float("nan")
    session_p99_ms: float = float("nan")
    lab_overheads_ms: list[float] = field(default_factory=list, repr=False)


_CONFIG = """\
[site]
id = "bench"
default_region = "DE"
timezone = "Europe/Berlin"
working_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
working_hours = "00:00-23:59"

[pbx]
host = "{pbx_host}"
port = {pbx_port}
transport = "udp"
domain = "{domain}"
register_expires = 300

[sip]
bind_address = "127.0.0.1"
port_range_start = {sip_base}
max_workers = {workers}
rtp_port_range = [{rtp_first}, {rtp_last}]

{lines}

[recording]
enabled = false
directory = "recordings"

[store]
url = "{store_url}"

[dialer]
gap_seconds = {gap}
ring_timeout = 20
max_attempts = 1
"""


def _agent_number(index: int) -> str:
    # Outside the lab's number plan: answered after 1 s, talks until hung up.
    return f"0033100{index:06d}"


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


async def run_step(
    lab: Lab,
    lines: Sequence[str],
    agents: int,
    items: int,
    gap: float,
    tol: float,
    out: Path,
    *,
    stagger: bool,
) -> StepResult:
    result = StepResult(agents, items)
    await asyncio.to_thread(out.mkdir, parents=True)
    url = f"sqlite+aiosqlite:///{out / 'store.sqlite3'}"
    sections = [
        f'[[lines]]\nextension = "{lines[i]}"\nrole = "agent"\n'
        f'secret = "{lab.extensions[lines[i]]}"\n\n'
        f'[[agents]]\nname = "Agent {i}"\nextension = "{_agent_number(i)}"\n'
        f'line = "{lines[i]}"\nuser = "agent-{i}"\n'
        for i in range(agents)
    ]
    config = parse_config(
        _CONFIG.format(
            pbx_host=lab.pbx_host,
            pbx_port=lab.pbx_port,
            domain=lab.domain,
            sip_base=free_port_block(agents),
            workers=agents,
            rtp_first=RTP_FIRST,
            rtp_last=RTP_LAST,
            lines="\n".join(sections),
            store_url=url,
            gap=gap,
        ),
        base_dir=out,
    )
    await upgrade(url)
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        store = await Store.open(url, default_region="DE")
        stack.push_async_callback(store.aclose)
        for i in range(agents):
            await store.users.add(f"agent-{i}", f"Agent {i}")
        events = Bus(config.site.id)
        stack.callback(events.close)
        sub = events.subscribe("bench", maxsize=1_000_000)
        pool = SipPool(config, bus=events, store=store, ready_timeout=30.0)
        await stack.enter_async_context(pool)
        waiting = set(lines[:agents])
        async with asyncio.timeout(30):
            while waiting:
                event = (await sub.get()).event
                if isinstance(event, RegistrationChanged) and event.state == "registered":
                    waiting.discard(event.line)
        dialer = Dialer(pool, config=config, bus=events, store=store)
        await stack.enter_async_context(dialer)
        # Suffixes unique within the run (the lab's log is per run), at most 5
        # digits (the number plan's limit): the step's agent count, then the item.
        numbers = [
            customer_number(
                Behaviour.BUSY if n % 2 else Behaviour.REJECT, ring=0, suffix=agents * 1000 + n
            )
            for n in range(agents * items)
        ]
        call_list, _ = await dialer.create_list(f"bench-{agents}", numbers)
        for i in range(agents):
            if stagger and i:
                # Spread the sessions over one gap, as agents starting their day
                # would be; without it they run in lockstep (the worst case).
                await asyncio.sleep(gap / agents)
            await dialer.start_session(f"agent-{i}", call_list.id)
        by_agent: dict[str, list[str]] = defaultdict(list)
        finished = 0
        try:
            async with asyncio.timeout(60 + items * (gap + 2) * 2):
                while finished < agents:
                    event = (await sub.get()).event
                    if isinstance(event, DialerDialing):
                        by_agent[event.agent].append(event.number)
                    elif isinstance(event, DialerSessionFinished):
                        finished += 1
        except TimeoutError:
            result.error = f"only {finished} of {agents} sessions finished"
        result.seconds = time.monotonic() - started
    # After the exit stack: every session has ended and handed its timings over.
    session_overheads = [(t.sent_at - t.ended_at - t.gap) * 1000 for t in dialer.gap_timings]
    invites = {i.number: i.at for i in lab.customers.invites()}
    if not by_agent:
        result.error = result.error or "nothing was dialed"
    overheads = []
    for numbers_dialed in by_agent.values():
        times = [invites[n] for n in numbers_dialed if n in invites]
        if len(times) != len(numbers_dialed):
            result.error = result.error or "an INVITE is missing from the lab's log"
        overheads += [(b - a - gap) * 1000 for a, b in itertools.pairwise(times)]
    result.gaps = len(overheads)
    result.lab_overheads_ms = overheads
    if overheads:
        result.lab_p50_ms = statistics.median(overheads)
        result.lab_p99_ms = _percentile(overheads, 0.99)
        result.lab_max_abs_ms = max(abs(o) for o in overheads)
    if session_overheads:
        result.session_p50_ms = statistics.median(session_overheads)
        result.session_p99_ms = _percentile(session_overheads, 0.99)
    result.ok = (
        result.error is None
        and result.gaps == agents * (items - 1)
        and result.lab_max_abs_ms <= tol * 1000
    )
    if not result.ok and result.error is None:
        result.error = f"a gap off by {result.lab_max_abs_ms:.1f} ms"
    return result


_COLUMNS = [
    ("agents", "agents", "{:d}"),
    ("gaps", "gaps", "{:d}"),
    ("lab p50 ms", "lab_p50_ms", "{:.1f}"),
    ("lab p99 ms", "lab_p99_ms", "{:.1f}"),
    ("lab max |off| ms", "lab_max_abs_ms", "{:.1f}"),
    ("session p50 ms", "session_p50_ms", "{:.2f}"),
    ("session p99 ms", "session_p99_ms", "{:.2f}"),
    ("ok", "ok", "{}"),
]


def _print_row(result: StepResult) -> None:
    cells = []
    for title, key, fmt in _COLUMNS:
        cells.append(fmt.format(getattr(result, key)).rjust(len(title)))
    line = " | ".join(cells)
    if result.error:
        line += f"  ({result.error})"
    print(line, flush=True)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    steps = [int(n) for n in args.steps.split(",")]
    lines = [str(3001 + i) for i in range(max(steps))]
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="bench-dialer-"))
    extensions = {ext: secrets.token_hex(8) for ext in lines}
    print(
        f"run directory: {run_dir}; {os.cpu_count()} CPUs; gap {args.gap:g} s, "
        f"{args.items} items per agent, tolerance ±{args.tolerance * 1000:.0f} ms, "
        f"{'staggered' if args.stagger else 'lockstep'} starts",
        flush=True,
    )
    print(" | ".join(title for title, _, _ in _COLUMNS), flush=True)
    results: list[StepResult] = []
    async with await Lab.start(run_dir / "lab", extensions=extensions, phones=[]) as lab:
        for n in steps:
            result = await run_step(
                lab,
                lines,
                n,
                args.items,
                args.gap,
                args.tolerance,
                run_dir / f"{n:03d}",
                stagger=args.stagger,
            )
            results.append(result)
            _print_row(result)
            if not result.ok:
                break
    all_lab = [o for r in results if r.ok for o in r.lab_overheads_ms]
    largest = max((r.agents for r in results if r.ok), default=0)
    print(
        f"largest N with every gap within ±{args.tolerance * 1000:.0f} ms: {largest}; "
        f"overhead over all passing steps p50 {statistics.median(all_lab):.1f} ms, "
        f"p99 {_percentile(all_lab, 0.99):.1f} ms"
        if all_lab
        else "no step passed",
        flush=True,
    )
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "bench": "dialer",
        "cpus": os.cpu_count(),
        "gap_seconds": args.gap,
        "items_per_agent": args.items,
        "stagger": args.stagger,
        "largest_n": largest,
        "overhead_p50_ms": statistics.median(all_lab) if all_lab else None,
        "overhead_p99_ms": _percentile(all_lab, 0.99) if all_lab else None,
        "steps": [{k: v for k, v in asdict(r).items() if k != "lab_overheads_ms"} for r in results],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", default="1,2,4,8,16,24", help="agents per step")
    parser.add_argument("--items", type=int, default=4, help="numbers per agent per step")
    parser.add_argument("--gap", type=float, default=5.0, help="dialer.gap_seconds")
    parser.add_argument("--tolerance", type=float, default=0.1, help="seconds")
    parser.add_argument(
        "--stagger", action="store_true", help="start the agents spread over one gap"
    )
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    try:
        report = asyncio.run(bench(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    print(json.dumps(report, default=lambda v: None))


if __name__ == "__main__":
    main()
