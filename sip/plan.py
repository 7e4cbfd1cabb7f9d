"""The worker plan: how the configured lines are laid out on SIP worker processes.

Pure: no processes, no I/O. pjsua2 holds at most 4 calls and 8 accounts per
process, so the daemon runs one worker per line (see ``docs/sip-pool.md``);
:func:`plan_workers` decides which worker registers which lines and which
ports it gets. :mod:`sip.pool` starts the workers this plan describes.
"""

from __future__ import annotations

from dataclasses import dataclass

from config import AgentConfig, Config, LineConfig, LineRole
from sip import protocol as p
from sip.exceptions import PoolConfigError

__all__ = ["WorkerPlan", "agent_key", "pbx_uri", "plan_workers"]

# Seconds between failed registration attempts, inside the worker. With TCP to
# the PBX a lost connection is noticed at once and retried at this pace, so
# the lines are back within this long of the PBX coming back.
_REGISTER_RETRY_SECONDS = 3
# Longest wait between registrations while the PBX refuses them (503...).
_REGISTER_RETRY_MAX_SECONDS = 60


def pbx_uri(config: Config, user: str) -> str:
    """``sip:<user>@<pbx host>:<port>`` (with ``;transport=tcp`` over TCP): how a
    worker reaches an extension or a number through the PBX."""
    pbx = config.pbx
    suffix = ";transport=tcp" if pbx.transport == "tcp" else ""
    return f"sip:{user}@{pbx.host}:{pbx.port}{suffix}"


def agent_key(agent: AgentConfig) -> str:
    """The name events and commands use for ``agent`` (:attr:`AgentConfig.key`)."""
    return agent.key


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """What one worker runs: its lines, its agent (for an agent line), its sockets.

    ``lines`` are the lines this worker registers, each on this worker only: a
    PBX, proxy or B2BUA, then sends one INVITE per call to a line.
    """

    worker_id: str
    index: int
    role: LineRole
    lines: tuple[LineConfig, ...]
    agent: AgentConfig | None
    settings: p.WorkerSettings

    @property
    def agent_name(self) -> str | None:
        return agent_key(self.agent) if self.agent is not None else None

    @property
    def registered_lines(self) -> tuple[LineConfig, ...]:
        """Every line the worker registers."""
        return self.lines


def plan_workers(config: Config, *, log_level: p.LogLevel = "warning") -> tuple[WorkerPlan, ...]:
    """Lay the configured lines out on workers; pure.

    One worker per agent line (its call slots are the agent's leg, the
    customer's, a supervisor's and a consult leg), and one per reception and per
    dialer line. If that needs more than ``sip.max_workers``, reception and
    dialer lines of one role share workers, up to ``sip.accounts_per_worker - 1``
    lines each (the worker's local identity takes one account). Worker ``n``
    listens on ``sip.port_range_start + n`` and gets the ``n``-th of
    ``sip.max_workers`` equal blocks of ``sip.rtp_port_range``.

    Each line is registered by one worker only: a call to a reception line
    reaches its reception worker alone, whatever the PBX, and the inbound
    service moves it (a ``302``) to the worker that is to carry it (see
    ``docs/sip-pool.md``).

    Raises :class:`PoolConfigError` when the lines do not fit.
    """
    sip, pbx = config.sip, config.pbx
    per_worker = sip.accounts_per_worker - 1
    if per_worker < 1 and config.lines:
        raise PoolConfigError(
            "sip.accounts_per_worker: must be at least 2 (one account is the worker's own)"
        )
    groups: list[tuple[LineRole, tuple[LineConfig, ...]]] = [
        (LineRole.AGENT, (line,)) for line in config.lines_by_role(LineRole.AGENT)
    ]
    others = [LineRole.RECEPTION, LineRole.DIALER]
    singles = sum(len(config.lines_by_role(role)) for role in others)
    for role in others:
        lines = config.lines_by_role(role)
        if len(groups) + singles <= sip.max_workers:
            groups += [(role, (line,)) for line in lines]
        else:
            groups += [(role, lines[i : i + per_worker]) for i in range(0, len(lines), per_worker)]
    if len(groups) > sip.max_workers:
        raise PoolConfigError(
            f"sip.max_workers: {len(groups)} workers are needed for the configured lines, "
            f"only {sip.max_workers} allowed"
        )
    first, last = sip.rtp_port_range
    block = (last - first + 1) // sip.max_workers
    # Two ports (RTP and RTCP) per call, plus room for pjmedia to skip a busy pair.
    if block < 4 * sip.calls_per_worker:
        raise PoolConfigError(
            f"sip.rtp_port_range: {block} ports per worker is too few for "
            f"{sip.calls_per_worker} calls; widen the range or lower sip.max_workers"
        )
    plans = []
    for index, (role, lines) in enumerate(groups):
        agent = config.agent_for_line(lines[0].extension) if role is LineRole.AGENT else None
        settings = p.WorkerSettings(
            bind_address=sip.bind_address,
            sip_port=sip.sip_port(index),
            rtp_port_start=first + index * block,
            rtp_port_count=block,
            pbx_host=pbx.host,
            pbx_port=pbx.port,
            pbx_transport=pbx.transport,
            domain=pbx.domain,
            allowed_sources=tuple(pbx.allowed_sources),
            recording_dir=str(config.recording.directory),
            max_calls=sip.calls_per_worker,
            max_accounts=sip.accounts_per_worker,
            log_level=log_level,
            realm=pbx.realm,
            register_retry_seconds=_REGISTER_RETRY_SECONDS,
            register_retry_max_seconds=_REGISTER_RETRY_MAX_SECONDS,
            codecs=tuple(sip.codecs),
            clock_rate=0 if sip.bridge_clock_rate == "auto" else sip.bridge_clock_rate,
            echo_tail_ms=sip.echo_canceller_tail,
            vad=sip.vad,
            resample_quality=sip.resample_quality,
            jitter_buffer_max_ms=-1 if sip.jitter_buffer_max is None else sip.jitter_buffer_max,
        )
        plans.append(
            WorkerPlan(
                worker_id=f"{config.site.id}/{role.value}-{lines[0].extension}",
                index=index,
                role=role,
                lines=lines,
                agent=agent,
                settings=settings,
            )
        )
    return tuple(plans)
