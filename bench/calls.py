"""How many bridged, recorded conversations this machine holds, against bare pjsua2.

A conversation is what a click-to-call makes: one leg to the agent side, then,
once it answers, one leg to the customer; both legs bridged in one worker and the
customer leg recorded with the agent mixed in. Both sides are SIPp customers of
the lab, reached through Kamailio: the agent side on a ``00…`` number (answered
after 1 s, talks until hung up), the customer on ``customer_number(ANSWER,
ring=0, talk=0)``. A worker holds two conversations (4 calls, the wheel's limit),
so N conversations take ceil(N/2) workers, each with its own registered line.

For every step N, back to back in one lab:

- **bare**: ceil(N/2) processes of ``bench/_bare_bridge.py`` (pjsua2 only);
- **switchboard**: a ``SipPool`` of ceil(N/2) agent lines with a ``CallService``,
  a SQLite store and a bus — the daemon's own click-to-call path.

Each step places the N conversations, waits until all are bridged, holds them
for ``--hold`` seconds, hangs up and checks every call ended normally and every
recording holds the customers' tone. Figures per step: CPU of the SIP processes
during the hold (seconds per conversation per minute of talk), the lab's CPU
(Kamailio + SIPp) likewise, CPU of the controlling process (the daemon side for
switchboard) per conversation over the whole step, RSS of the SIP processes, and
the time from the originate command to the customer's INVITE (SIPp's arrival
timestamp), p50/p99 over all legs. The ramp stops at the first step switchboard
fails. Prints a table, then one JSON line.

    .venv/bin/python bench/calls.py [--steps 20,60] [--max N] [--hold 10] [--idle 10]

The defaults (20 and 60 conversations, 10 s of talk each) take about three minutes.
``--steps 300`` (150 workers on each side) takes about eight.

**Burst mode** (``--burst N [--stagger 0,3]``): instead of the ramp, for each
value of ``--stagger`` both sides place N conversations over that many seconds
(0: all at once), each on its own: a ``go <conv>`` line to its bare process, a
task of its own calling ``click_to_call()`` (as commands from N agents would
arrive); they are held 2 s, then checked as above. Besides the table it prints
the set-up's stages per conversation (p50 / p99): placed -> the agent leg's
originate -> its INVITE at the customers -> the customer leg's originate (after
the agent side's 1 s of ringing) -> its INVITE -> bridged, and the whole
placed -> bridged. ``--profile PATH`` dumps cProfile's statistics of this
process (the daemon side) over each burst's set-up to ``PATH.<burst>.prof``.

Inbound calls with these conversations up (INVITE in → ``call.ringing`` on the bus
and at a websocket client, 50 conversations active) are measured by
``bench/inbound.py``, which sets the conversations up with this module's lab
configuration and adds a wire clock and a websocket client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import logging
import math
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bus import Bus, CallBridged, CallEnded, Envelope, RecordingReady, RegistrationChanged
from config import parse_config
from crm_store import Store, upgrade
from lab import Behaviour, Lab, audio, customer_number, free_port_block
from lab.customers import CUSTOMER_TONE_HZ, SeenInvite
from sip.calls import CallService
from sip.pool import SipPool

BARE_SCRIPT = Path(__file__).with_name("_bare_bridge.py")
CONVERSATIONS_PER_WORKER = 2  # 4 calls: pjsua2's compiled PJSUA_MAX_CALLS
# Workers' RTP ports: 30000-32767 is left to Switchboard by the lab, below the
# kernel's ephemeral range.
RTP_FIRST, RTP_LAST = 30000, 32767
EPHEMERAL_LAST = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[1])
# Two 1000 Hz customers are mixed in each recording; with opposite phases they
# partly cancel, so the thresholds sit below the lab tests' single-tone 0.05.
MIN_RMS = 0.02
MIN_TONE = 0.02
_TICK = os.sysconf("SC_CLK_TCK")
#: Seconds a burst's conversations are held once all are bridged (then the
#: recordings are checked as in the ramp).
BURST_HOLD = 2.0


# --------------------------------------------------------------------------- /proc


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (0.0 once it has gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # comm (field 2) may hold spaces: split after its closing parenthesis.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children[ppid].append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _total_cpu(pids: Iterable[int]) -> dict[int, float]:
    return {pid: _cpu_seconds(pid) for pid in pids}


def _delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


# --------------------------------------------------------------------------- helpers


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


@dataclass(frozen=True)
class _Plan:
    """The numbers of one step: ``segment`` keeps them unique across the run."""

    segment: int
    conversations: int

    @property
    def workers(self) -> int:
        return math.ceil(self.conversations / CONVERSATIONS_PER_WORKER)

    def agent_number(self, worker: int) -> str:
        # "00" routes to the customers; not of the "+4930199" plan, so SIPp answers
        # it after 1 s and talks until hung up. One per worker (the agent's phone).
        return f"004930198{self.segment:03d}{worker:03d}"

    def customer(self, conv: int) -> str:
        return customer_number(
            Behaviour.ANSWER, ring=0, talk=0, suffix=f"{self.segment % 100:02d}{conv:03d}"
        )


@dataclass
class StepResult:
    kind: str  # "bare" or "switchboard"
    conversations: int
    workers: int
    #: Burst mode: the conversations were placed over this many seconds (0: at
    #: once), each on its own; NaN for a step of the ramp.
    stagger_seconds: float = math.nan
    ok: bool = False
    why: str = ""
    setup_seconds: float = math.nan
    hold_seconds: float = math.nan
    sip_cpu_per_conv_min: float = math.nan
    lab_cpu_per_conv_min: float = math.nan
    ctl_cpu_ms_per_conv: float = math.nan
    rss_mean_mib: float = math.nan
    rss_max_mib: float = math.nan
    invite_p50_ms: float = math.nan
    invite_p99_ms: float = math.nan
    invite_samples: int = 0
    min_rms: float = math.nan
    min_tone: float = math.nan
    #: CPU of one registered SIP process with no call, seconds per minute.
    idle_cpu_per_worker_min: float = math.nan
    #: Burst mode: each conversation's placement to its bridge, ms.
    bridge_p50_ms: float = math.nan
    bridge_p99_ms: float = math.nan
    #: Burst mode: p50/p99 ms of each stage of the set-up (see ``_stages``).
    stages: dict[str, tuple[float, float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _latencies(sent: Sequence[tuple[str, float]], seen: Sequence[SeenInvite]) -> list[float]:
    """Milliseconds from each originate to the customers' INVITE, matched by number.

    Numbers called twice (an agent's phone, once per conversation) are paired in
    time order. Retransmissions do not show: SIPp logs only new dialogs.
    """
    sent_by: dict[str, list[float]] = defaultdict(list)
    for number, at in sent:
        sent_by[number].append(at)
    seen_by: dict[str, list[float]] = defaultdict(list)
    for invite in seen:
        if invite.number in sent_by:
            seen_by[invite.number].append(invite.at)
    out: list[float] = []
    for number, times in sent_by.items():
        for t_sent, t_seen in zip(sorted(times), sorted(seen_by[number]), strict=False):
            out.append((t_seen - t_sent) * 1000)
    return out


def _bridge_timeout(conversations: int) -> float:
    """How long a step may take to bridge all its conversations, seconds."""
    return 30.0 + conversations / 5


def sip_port_block(workers: int) -> int:
    """The first of ``workers`` consecutive SIP ports for the pool, above the kernel's
    ephemeral range (``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 here): with
    150 workers starting at once, a port probed free inside that range is sometimes
    taken by another program's outgoing socket before the worker binds it."""
    return free_port_block(workers, low=EPHEMERAL_LAST + 1, high=65535)


def _offsets(conversations: int, stagger: float) -> list[float]:
    """When each conversation of a burst is placed, seconds from the first."""
    return [c * stagger / conversations for c in range(conversations)]


#: The stages of a conversation's set-up, in order: (name, from, to).
_STAGES = (
    ("placed->agent sent", "placed", "agent_sent"),
    ("agent sent->INVITE", "agent_sent", "agent_invite"),
    ("agent INVITE->customer sent", "agent_invite", "customer_sent"),
    ("customer sent->INVITE", "customer_sent", "customer_invite"),
    ("customer INVITE->bridged", "customer_invite", "bridged"),
)


def _stages(
    result: StepResult,
    placed: dict[int, float],
    sent: Sequence[tuple[int, str, str, float]],
    seen: Sequence[SeenInvite],
    bridged: dict[int, float],
) -> None:
    """Fill ``result``'s set-up figures from epoch-second stamps: ``placed`` and
    ``bridged`` per conversation, ``sent`` as (conversation, leg, number, time) per
    originate; INVITEs are matched to originates by number in time order (an
    agent's number serves two conversations)."""
    stamps: dict[int, dict[str, float]] = defaultdict(dict)
    for conv, at in placed.items():
        stamps[conv]["placed"] = at
    for conv, at in bridged.items():
        stamps[conv]["bridged"] = at
    by_number: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for conv, leg, number, at in sent:
        stamps[conv][f"{leg}_sent"] = at
        by_number[number].append((at, conv, leg))
    arrivals: dict[str, list[float]] = defaultdict(list)
    for invite in seen:
        if invite.number in by_number:
            arrivals[invite.number].append(invite.at)
    for number, originates in by_number.items():
        for (_, conv, leg), at in zip(sorted(originates), sorted(arrivals[number]), strict=False):
            stamps[conv][f"{leg}_invite"] = at
    for name, start, end in _STAGES:
        values = [(t[end] - t[start]) * 1000 for t in stamps.values() if start in t and end in t]
        result.stages[name] = (_percentile(values, 0.5), _percentile(values, 0.99))
    setup = [
        (t["bridged"] - t["placed"]) * 1000
        for t in stamps.values()
        if len(t) >= 2 and "placed" in t and "bridged" in t
    ]
    result.bridge_p50_ms = _percentile(setup, 0.5)
    result.bridge_p99_ms = _percentile(setup, 0.99)


def _check_recordings(result: StepResult, paths: Sequence[Path | None]) -> None:
    levels: list[tuple[float, float]] = []
    for path in paths:
        if path is None or not path.exists():
            result.failures.append(f"recording missing: {path}")
            continue
        level = (audio.rms(path), audio.tone_level(path, CUSTOMER_TONE_HZ))
        levels.append(level)
        if level[0] < MIN_RMS or level[1] < MIN_TONE:
            result.failures.append(f"recording silent: {path.name} rms={level[0]:.3f}")
    if levels:
        result.min_rms = min(rms for rms, _ in levels)
        result.min_tone = min(tone for _, tone in levels)


def _finish(
    result: StepResult,
    *,
    sip_cpu: float,
    lab_cpu: float,
    ctl_cpu: float,
    rss: Sequence[float],
    latencies: Sequence[float],
) -> None:
    talk_minutes = result.hold_seconds / 60 * result.conversations
    result.sip_cpu_per_conv_min = sip_cpu / talk_minutes
    result.lab_cpu_per_conv_min = lab_cpu / talk_minutes
    result.ctl_cpu_ms_per_conv = ctl_cpu * 1000 / result.conversations
    if rss:
        result.rss_mean_mib = statistics.fmean(rss)
        result.rss_max_mib = max(rss)
    result.invite_p50_ms = _percentile(latencies, 0.50)
    result.invite_p99_ms = _percentile(latencies, 0.99)
    result.invite_samples = len(latencies)
    expected = 2 * result.conversations
    if len(latencies) != expected:
        result.failures.append(f"{len(latencies)} of {expected} INVITEs reached the customers")
    result.ok = not result.failures
    result.why = "; ".join(result.failures[:3]) + (
        f" (+{len(result.failures) - 3} more)" if len(result.failures) > 3 else ""
    )


# --------------------------------------------------------------------------- bare


class _BareProcess:
    """One ``_bare_bridge.py`` process and the lines it printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read(), name=f"bare-{proc.pid}")

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            text = line.decode(errors="replace")
            if text.startswith("BARE "):
                self.lines.append(json.loads(text[5:]))
                self.changed.set()
        self.changed.set()

    def count(self, event: str) -> int:
        return sum(1 for line in self.lines if line["ev"] == event)

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            async with asyncio.timeout(5):
                await self.proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


async def _wait_all(procs: Sequence[_BareProcess], event: str, each: int, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while any(p.count(event) < each for p in procs):
            if any(p.proc.returncode is not None for p in procs):
                raise RuntimeError("a bare process exited early")
            waits = [asyncio.ensure_future(p.changed.wait()) for p in procs]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            for p in procs:
                p.changed.clear()


async def _idle_cpu(pids: Sequence[int], seconds: float) -> float:
    """CPU seconds per minute of one of ``pids`` (registered, no call), over ``seconds``."""
    before, t0 = _total_cpu(pids), time.monotonic()
    await asyncio.sleep(seconds)
    spent = _delta(before, _total_cpu(pids))
    return spent / len(pids) / (time.monotonic() - t0) * 60 if pids else math.nan


async def run_bare(
    lab: Lab,
    plan: _Plan,
    lines: Sequence[str],
    hold: float,
    out: Path,
    idle: float = 0.0,
    stagger: float | None = None,
) -> StepResult:
    """One step of bare processes; ``stagger`` not None: a burst, each conversation
    placed on its own over ``stagger`` seconds."""
    result = StepResult("bare", plan.conversations, plan.workers)
    if stagger is not None:
        result.stagger_seconds = stagger
    await asyncio.to_thread(out.mkdir, parents=True)
    block = (RTP_LAST - RTP_FIRST + 1) // plan.workers
    procs: list[_BareProcess] = []
    recordings: list[Path] = []
    try:
        for w in range(plan.workers):
            convs = []
            for c in range(w * 2, min(plan.conversations, w * 2 + 2)):
                recordings.append(out / f"conv-{c:03d}.wav")
                convs.append(
                    {
                        "conv": str(c),
                        "agent_number": plan.agent_number(w),
                        "customer_number": plan.customer(c),
                        "recording": str(recordings[-1]),
                    }
                )
            settings = {
                "pbx_host": lab.pbx_host,
                "pbx_port": lab.pbx_port,
                "extension": lines[w],
                "password": lab.extensions[lines[w]],
                "rtp_port_start": RTP_FIRST + w * block,
                "rtp_port_count": block,
                "conversations": convs,
            }
            with (out / f"bare-{w:03d}.log").open("wb") as errors:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(BARE_SCRIPT),
                    json.dumps(settings),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=errors,
                )
            procs.append(_BareProcess(process))
        await _wait_all(procs, "ready", 1, timeout=30 + plan.workers)
        result.idle_cpu_per_worker_min = await _idle_cpu([p.proc.pid for p in procs], idle)
        ctl0, started = _self_cpu(), time.monotonic()
        placed: dict[int, float] = {}
        if stagger is None:
            for proc in procs:
                await proc.send("go")
        else:
            for c, offset in enumerate(_offsets(plan.conversations, stagger)):
                await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
                placed[c] = time.time()
                await procs[c // CONVERSATIONS_PER_WORKER].send(f"go {c}")
        per_proc = [
            len([c for c in range(w * 2, w * 2 + 2) if c < plan.conversations])
            for w in range(plan.workers)
        ]
        limit = _bridge_timeout(plan.conversations)
        try:
            async with asyncio.timeout(limit):
                for proc, n in zip(procs, per_proc, strict=True):
                    await _wait_all([proc], "bridged", n, timeout=limit)
        except (TimeoutError, RuntimeError) as exc:
            bridged = sum(p.count("bridged") for p in procs)
            result.failures.append(
                f"{bridged} of {plan.conversations} bridged in {limit:g} s ({exc!r})"
            )
            result.why = result.failures[0]
            return result
        result.setup_seconds = time.monotonic() - started
        pids = [p.proc.pid for p in procs]
        lab_pids = _descendants(os.getpid()) - set(pids)
        sip0, lab0, t0 = _total_cpu(pids), _total_cpu(lab_pids), time.monotonic()
        await asyncio.sleep(hold)
        sip1, lab1 = _total_cpu(pids), _total_cpu(lab_pids)
        result.hold_seconds = time.monotonic() - t0
        rss = [_rss_mib(pid) for pid in pids]
        early = [line for p in procs for line in p.lines if line["ev"] == "ended"]
        if early:
            result.failures.append(f"{len(early)} legs ended during the hold: {early[0]}")
        for proc in procs:
            await proc.send("hangup")
        try:
            await _wait_all(procs, "done", 1, timeout=20)
        except (TimeoutError, RuntimeError) as exc:
            result.failures.append(f"recordings not all finished ({exc!r})")
        ctl1 = _self_cpu()
        for line in (line for p in procs for line in p.lines if line["ev"] == "ended"):
            if line["code"] not in (200,) and not early:
                result.failures.append(f"leg ended {line['code']} {line['reason']}")
        sent = [(x["number"], x["at"]) for p in procs for x in p.lines if x["ev"] == "sent"]
        latencies = _latencies(sent, lab.customers.invites())
        if stagger is not None:
            lines_ = [x for p in procs for x in p.lines]
            _stages(
                result,
                placed,
                [
                    (int(x["conv"]), x["leg"], x["number"], x["at"])
                    for x in lines_
                    if x["ev"] == "sent"
                ],
                lab.customers.invites(),
                {int(x["conv"]): x["at"] for x in lines_ if x["ev"] == "bridged"},
            )
        await asyncio.to_thread(_check_recordings, result, recordings)
        _finish(
            result,
            sip_cpu=_delta(sip0, sip1),
            lab_cpu=_delta(lab0, lab1),
            ctl_cpu=ctl1 - ctl0,
            rss=rss,
            latencies=latencies,
        )
        return result
    finally:
        await asyncio.gather(*(p.close() for p in procs))


# --------------------------------------------------------------------------- switchboard


_CONFIG = """\
[site]
id = "bench"
default_region = "DE"

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
enabled = true
directory = "recordings"
retention_days = 0

[store]
url = "{store_url}"

[dialer]
ring_timeout = 20
"""


def _switchboard_config(lab: Lab, plan: _Plan, lines: Sequence[str], out: Path, url: str) -> Any:
    sections = []
    for w in range(plan.workers):
        ext = lines[w]
        sections.append(
            f'[[lines]]\nextension = "{ext}"\nrole = "agent"\nsecret = "{lab.extensions[ext]}"\n\n'
            f'[[agents]]\nname = "Agent {ext}"\nextension = "{plan.agent_number(w)}"\n'
            f'line = "{ext}"\nuser = "agent-{ext}"\n'
        )
    text = _CONFIG.format(
        pbx_host=lab.pbx_host,
        pbx_port=lab.pbx_port,
        domain=lab.domain,
        sip_base=sip_port_block(plan.workers),
        workers=plan.workers,
        rtp_first=RTP_FIRST,
        rtp_last=RTP_LAST,
        lines="\n".join(sections),
        store_url=url,
    )
    return parse_config(text, base_dir=out)


async def run_switchboard(
    lab: Lab,
    store: Store,
    url: str,
    plan: _Plan,
    lines: Sequence[str],
    hold: float,
    out: Path,
    idle: float = 0.0,
    stagger: float | None = None,
    profile: Path | None = None,
) -> StepResult:
    """One step of the daemon's path; ``stagger`` not None: a burst, each
    conversation placed by a task of its own over ``stagger`` seconds (as commands
    from many agents arrive), else one after the other. ``profile``: where to dump
    cProfile's statistics of this process over the set-up."""
    result = StepResult("switchboard", plan.conversations, plan.workers)
    if stagger is not None:
        result.stagger_seconds = stagger
    await asyncio.to_thread(out.mkdir, parents=True)
    config = _switchboard_config(lab, plan, lines, out, url)
    events = Bus(config.site.id)
    sub = events.subscribe("bench", maxsize=1_000_000)
    pool = SipPool(config, bus=events, store=store, ready_timeout=30.0)
    registered: set[str] = set()
    bridged: set[uuid.UUID] = set()
    ended: dict[uuid.UUID, CallEnded] = {}
    recorded: dict[uuid.UUID, Path] = {}

    bridged_at: dict[uuid.UUID, float] = {}

    def handle(envelope: Envelope) -> None:
        event = envelope.event
        if isinstance(event, RegistrationChanged):
            if event.state == "registered":
                registered.add(event.line)
            else:
                registered.discard(event.line)
        elif isinstance(event, CallBridged) and event.recording:
            bridged.add(event.call_id)
            bridged_at[event.call_id] = envelope.at.timestamp()
        elif isinstance(event, CallEnded):
            ended[event.call_id] = event
        elif isinstance(event, RecordingReady):
            recorded[event.call_id] = Path(event.path)

    def pull() -> None:
        while (envelope := sub.get_nowait()) is not None:
            handle(envelope)

    async def until(done: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while True:
                pull()
                if done():
                    return
                handle(await sub.get())

    try:
        async with pool:
            await until(lambda: registered >= set(lines[: plan.workers]), timeout=30)
            result.idle_cpu_per_worker_min = await _idle_cpu(
                [s.pid for s in pool.status().values() if s.pid is not None], idle
            )
            async with CallService(
                pool, config=config, bus=events, store=store, agent_timeout=20, ring_timeout=20
            ) as calls:
                profiler = cProfile.Profile() if profile is not None else None
                ctl0, started = _self_cpu(), time.monotonic()
                if profiler is not None:
                    profiler.enable()
                placed: dict[uuid.UUID, float] = {}
                limit = _bridge_timeout(plan.conversations)
                if stagger is None:
                    ids = [
                        await calls.click_to_call(
                            agent=f"agent-{lines[c // 2]}", number=plan.customer(c)
                        )
                        for c in range(plan.conversations)
                    ]
                else:

                    async def place(c: int, offset: float) -> uuid.UUID:
                        await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
                        at = time.time()
                        call_id = await calls.click_to_call(
                            agent=f"agent-{lines[c // 2]}", number=plan.customer(c)
                        )
                        placed[call_id] = at
                        return call_id

                    offsets = _offsets(plan.conversations, stagger)
                    ids = list(await asyncio.gather(*(place(c, o) for c, o in enumerate(offsets))))
                with contextlib.suppress(TimeoutError):
                    await until(lambda: bridged >= set(ids) or bool(ended), timeout=limit)
                if profiler is not None:
                    profiler.disable()
                    assert profile is not None
                    profiler.dump_stats(profile)
                if not bridged >= set(ids):
                    n = len(bridged & set(ids))
                    why = f"{n} of {plan.conversations} bridged in {limit:g} s"
                    if ended:
                        first = next(iter(ended.values()))
                        why += f"; {len(ended)} ended early, e.g. {first.reason} {first.sip_code}"
                    result.failures.append(why)
                    result.why = why
                    return result
                result.setup_seconds = time.monotonic() - started
                pids = [s.pid for s in pool.status().values() if s.pid is not None]
                lab_pids = _descendants(os.getpid()) - set(pids)
                sip0, lab0, t0 = _total_cpu(pids), _total_cpu(lab_pids), time.monotonic()
                await asyncio.sleep(hold)
                sip1, lab1 = _total_cpu(pids), _total_cpu(lab_pids)
                result.hold_seconds = time.monotonic() - t0
                rss = [_rss_mib(pid) for pid in pids]
                pull()
                if ended:
                    first = next(iter(ended.values()))
                    result.failures.append(
                        f"{len(ended)} calls ended during the hold, e.g. {first.reason}"
                    )
                await asyncio.gather(*(calls.hangup(i, timeout=20) for i in ids))
                with contextlib.suppress(TimeoutError):
                    await until(lambda: set(recorded) >= set(ids), timeout=15)
                ctl1 = _self_cpu()
                pull()
                for i in ids:
                    reason = ended.get(i)
                    if reason is None or reason.reason != "completed":
                        result.failures.append(f"call {i} ended {reason}")
                sent = []
                for call_id in ids:
                    # The customer leg carries the call's id, the agent leg "<id>-agent".
                    for leg_id in (str(call_id), f"{call_id}-agent"):
                        record = pool.stats.originate_of(leg_id)
                        if record is not None:
                            number = record.to_uri.split(":", 1)[1].split("@", 1)[0]
                            sent.append((number, record.sent_at))
                latencies = _latencies(sent, lab.customers.invites())
                if stagger is not None:
                    conv_of = {call_id: c for c, call_id in enumerate(ids)}
                    legs = []
                    for call_id, c in conv_of.items():
                        for leg, leg_id in (
                            ("customer", str(call_id)),
                            ("agent", f"{call_id}-agent"),
                        ):
                            record = pool.stats.originate_of(leg_id)
                            if record is not None:
                                number = record.to_uri.split(":", 1)[1].split("@", 1)[0]
                                legs.append((c, leg, number, record.sent_at))
                    _stages(
                        result,
                        {conv_of[i]: at for i, at in placed.items()},
                        legs,
                        lab.customers.invites(),
                        {conv_of[i]: at for i, at in bridged_at.items() if i in conv_of},
                    )
                await asyncio.to_thread(_check_recordings, result, [recorded.get(i) for i in ids])
                _finish(
                    result,
                    sip_cpu=_delta(sip0, sip1),
                    lab_cpu=_delta(lab0, lab1),
                    ctl_cpu=ctl1 - ctl0,
                    rss=rss,
                    latencies=latencies,
                )
                return result
    finally:
        events.close()


# --------------------------------------------------------------------------- main


_COLUMNS = (
    ("N", "conversations", "{:d}"),
    ("kind", "kind", "{}"),
    ("ok", "ok", "{}"),
    ("setup s", "setup_seconds", "{:.1f}"),
    ("SIP cpu s/conv/min", "sip_cpu_per_conv_min", "{:.3f}"),
    ("lab cpu s/conv/min", "lab_cpu_per_conv_min", "{:.3f}"),
    ("ctl cpu ms/conv", "ctl_cpu_ms_per_conv", "{:.1f}"),
    ("RSS mean MiB", "rss_mean_mib", "{:.1f}"),
    ("RSS max MiB", "rss_max_mib", "{:.1f}"),
    ("INVITE p50 ms", "invite_p50_ms", "{:.1f}"),
    ("INVITE p99 ms", "invite_p99_ms", "{:.1f}"),
    ("min rms", "min_rms", "{:.3f}"),
    ("idle cpu s/worker/min", "idle_cpu_per_worker_min", "{:.4f}"),
)
_RATIOS = (
    ("SIP cpu", "sip_cpu_per_conv_min"),
    ("idle cpu", "idle_cpu_per_worker_min"),
    ("RSS mean", "rss_mean_mib"),
    ("INVITE p50", "invite_p50_ms"),
    ("INVITE p99", "invite_p99_ms"),
)


def _width(title: str) -> int:
    return max(len(title), len("switchboard") if title == "kind" else 5)


def _row(result: StepResult) -> str:
    cells = []
    for title, key, fmt in _COLUMNS:
        value = getattr(result, key)
        text = fmt.format(value) if not (isinstance(value, float) and math.isnan(value)) else "-"
        cells.append(text.rjust(_width(title)))
    return " | ".join(cells)


def _ratio(sb: StepResult, bare: StepResult, key: str) -> float:
    a, b = getattr(sb, key), getattr(bare, key)
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def _print_step(bare: StepResult, sb: StepResult) -> None:
    for result in (bare, sb):
        print(_row(result), flush=True)
        if not result.ok:
            print(f"    {result.kind} failed: {result.why}", flush=True)
    ratios = ", ".join(f"{name} {_ratio(sb, bare, key):.2f}" for name, key in _RATIOS)
    print(f"    switchboard/bare: {ratios}", flush=True)


def _print_stages(bare: StepResult, sb: StepResult) -> None:
    print(
        f"    N = {sb.conversations} placed over {sb.stagger_seconds:g} s; set-up stages,"
        " p50 / p99 ms (bare | switchboard):",
        flush=True,
    )
    for name, _, _ in _STAGES:
        cells = []
        for r in (bare, sb):
            p50, p99 = r.stages.get(name, (math.nan, math.nan))
            cells.append(f"{p50:8.1f} / {p99:8.1f}")
        print(f"      {name:<28} {cells[0]} | {cells[1]}", flush=True)
    print(
        f"      {'placed->bridged':<28} {bare.bridge_p50_ms:8.1f} / {bare.bridge_p99_ms:8.1f} | "
        f"{sb.bridge_p50_ms:8.1f} / {sb.bridge_p99_ms:8.1f}",
        flush=True,
    )
    print(f"      setup s: bare {bare.setup_seconds:.2f}, switchboard {sb.setup_seconds:.2f}")


def _step_report(bare: StepResult, sb: StepResult) -> dict[str, Any]:
    keys = [key for _, key in _RATIOS] + ["setup_seconds", "bridge_p50_ms", "bridge_p99_ms"]
    return {
        "bare": asdict(bare),
        "switchboard": asdict(sb),
        "ratios": {key: _ratio(sb, bare, key) for key in keys},
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    burst = args.burst is not None
    if burst:
        staggers = [float(x) for x in args.stagger.split(",")]
        steps = [args.burst] * len(staggers)
    else:
        steps = [int(n) for n in args.steps.split(",")]
        if args.max is not None:
            steps = [n for n in steps if n <= args.max]
        staggers = []
    if not steps or min(steps) < 1:
        raise SystemExit("nothing to run: give positive step sizes")
    workers = math.ceil(max(steps) / CONVERSATIONS_PER_WORKER)
    lines = [str(3001 + w) for w in range(workers)]
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="bench-calls-"))
    extensions = {ext: secrets.token_hex(8) for ext in lines}
    url = f"sqlite+aiosqlite:///{run_dir / 'store.sqlite3'}"
    results: list[tuple[StepResult, StepResult]] = []
    hold = BURST_HOLD if burst else args.hold
    print(f"run directory: {run_dir}; {os.cpu_count()} CPUs; hold {hold:g} s", flush=True)
    print("switchboard = SipPool + CallService (click-to-call) + SQLite store + bus", flush=True)
    if burst:
        print(f"burst: {args.burst} conversations placed over {args.stagger} s", flush=True)
    print(" | ".join(title.rjust(_width(title)) for title, _, _ in _COLUMNS), flush=True)
    await upgrade(url)
    store = await Store.open(url, default_region="DE")
    try:
        for ext in lines:
            await store.users.add(f"agent-{ext}", f"Agent {ext}", extension=ext)
        async with await Lab.start(run_dir / "lab", extensions=extensions, phones=[]) as lab:
            reference: StepResult | None = None
            for segment, n in enumerate(steps):
                stagger = staggers[segment] if burst else None
                name = f"{n:03d}" + (f"-burst{segment}" if burst else "")
                profile = None
                if args.profile is not None and burst:
                    profile = Path(args.profile).with_suffix(f".{segment}.prof")
                if args.bare_max is not None and n > args.bare_max and reference is not None:
                    # Bare pjsua2 with pjmedia's defaults cannot hold this many on this
                    # machine: compare with its largest step that ran in this run.
                    bare = reference
                else:
                    bare = await run_bare(
                        lab,
                        _Plan(2 * segment, n),
                        lines,
                        hold,
                        run_dir / f"{name}-bare",
                        args.idle,
                        stagger,
                    )
                    if bare.ok:
                        reference = bare
                sb = await run_switchboard(
                    lab, store, url, _Plan(2 * segment + 1, n), lines, hold,
                    run_dir / f"{name}-switchboard", args.idle, stagger, profile,
                )  # fmt: skip
                results.append((bare, sb))
                _print_step(bare, sb)
                if burst:
                    _print_stages(bare, sb)
                    if profile is not None:
                        print(f"    cProfile of the switchboard side: {profile}", flush=True)
                if not sb.ok and not burst:
                    break
    finally:
        await store.aclose()
    passed = [sb.conversations for _, sb in results if sb.ok]
    passed_bare = [bare.conversations for bare, _ in results if bare.ok]
    largest = max(passed, default=0)
    if not burst:
        print(f"largest N held (switchboard): {largest}; bare: {max(passed_bare, default=0)}")
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "bench": "calls-burst" if burst else "calls",
        "cpus": os.cpu_count(),
        "hold_seconds": hold,
        "largest_n": largest,
        "largest_n_bare": max(passed_bare, default=0),
        "steps": [_step_report(bare, sb) for bare, sb in results],
    }


def _no_nan(value: Any) -> Any:
    # JSON has no NaN: a figure that could not be measured is null.
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def _kill_leftovers() -> None:
    # Every process of the run is a descendant of this one (workers, bare
    # processes, Kamailio, SIPp); the owners have stopped them by now, this is
    # the backstop for an interrupted run.
    for pid in _descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


async def _cancel_on_sigterm(work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    # SIGTERM unwinds like Ctrl-C: the lab, the pool and the bare processes stop.
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await work
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def run_report(work: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> Any:
    """Run a benchmark's coroutine as its command does and return its report with
    NaN made null (JSON has no NaN): logs quiet but errors, SIGTERM and Ctrl-C
    unwind it (exit 130), and any process of the run left over is killed."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    try:
        report = asyncio.run(_cancel_on_sigterm(work()))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        _kill_leftovers()
    return _no_nan(report)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", default="20,60", help="conversations per step, comma-separated")
    parser.add_argument("--max", type=int, default=None, help="skip steps above this N")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds of talk per step")
    parser.add_argument(
        "--idle",
        type=float,
        default=10.0,
        help="seconds the registered processes are measured idle before each step's calls",
    )
    parser.add_argument(
        "--bare-max",
        type=int,
        default=None,
        help="run the bare side only for steps up to this N; larger steps are compared"
        " with the largest bare step of the run (pjmedia's defaults need about five cores"
        " for 300 conversations: bare cannot hold them on two)",
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=None,
        help="burst mode: place this many conversations at once (and staggered, see"
        " --stagger) on each side instead of the ramp of --steps",
    )
    parser.add_argument(
        "--stagger",
        default="0,3",
        help="burst mode: seconds over which the conversations are placed, one burst per"
        " value, comma-separated (0: all at once)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="burst mode: dump cProfile statistics of the switchboard side's set-up to"
        " PROFILE.<burst>.prof",
    )
    parser.add_argument("--run-dir", default=None, help="default: a new temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)
    print(json.dumps(run_report(lambda: bench(args))))


if __name__ == "__main__":
    main()
