"""A stand-alone dialer process: store, bus, SIP pool and dialer from a config file.

Used by the durability tests and the benchmark, which need a dialer in a real
process they can ``kill -9``; the daemon (``switchboard``) wires the same parts in
its lifespan. It lives in the composition root because it wires the dialer to
the SIP pool. Usage::

    python -m switchboard.dialer_runner CONFIG [--start AGENT=LIST_ID ...] [--exit-when-idle]

At start it migrates the store, closes the call records a killed predecessor
left open (``interrupted``), starts the pool, waits for the agents' lines to
register, and starts the dialer — which resumes the stored sessions of this
site. ``--start`` begins new sessions (ignored for an agent whose session was
resumed). It logs JSON lines on stderr and stops on SIGTERM/SIGINT, or, with
``--exit-when-idle``, once no session is left.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import structlog

import bus
from config import load_config
from crm_store import Store, upgrade
from dialer import Dialer, SessionExists
from sip.pool import SipPool, agent_key

__all__ = ["main", "run"]

log = structlog.get_logger(__name__)

_REGISTER_TIMEOUT = 15.0
_SESSION_TIMEOUT = 24 * 3600.0


def _configure_logging() -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


async def run(config_path: str, starts: Sequence[tuple[str, uuid.UUID]], *, idle_exit: bool) -> int:
    """Run until signalled (or idle); returns the process exit status."""
    config = load_config(config_path)
    url = config.store.url_with_secret()
    await upgrade(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        store = await Store.open(url, default_region=config.site.default_region)
        stack.push_async_callback(store.aclose)
        closed = await store.calls.close_interrupted(origin=config.site.id)
        events = bus.Bus(config.site.id)
        stack.callback(events.close)
        registered = events.subscribe("runner", types=frozenset({"registration.changed"}))
        pool = SipPool(config, bus=events, store=store)
        await stack.enter_async_context(pool)
        lines = {agent.line for agent in config.agents}
        async with asyncio.timeout(_REGISTER_TIMEOUT):
            while lines:
                envelope = await registered.get()
                event = envelope.event
                if isinstance(event, bus.RegistrationChanged) and event.state == "registered":
                    lines.discard(event.line)
        registered.close()
        dialer = Dialer(pool, config=config, bus=events, store=store)
        await stack.enter_async_context(dialer)
        log.info("runner.ready", closed_calls=closed, resumed=len(dialer.sessions()))
        for agent, list_id in starts:
            try:
                await dialer.start_session(agent, list_id)
            except SessionExists:
                log.info("runner.session_resumed_instead", agent=agent)
        waiter = asyncio.create_task(stop.wait(), name="runner-stop")
        try:
            if idle_exit:
                names = [agent_key(pool.agent(s.agent)) for s in dialer.sessions()]
                idle = asyncio.gather(
                    *(dialer.wait_session(name, timeout=_SESSION_TIMEOUT) for name in names)
                )
                futures: list[asyncio.Future[Any]] = [waiter, idle]
                await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
                if not idle.done():
                    idle.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await idle
            else:
                await waiter
        finally:
            waiter.cancel()
        log.info("runner.stopping")
    return 0


def _start_arg(text: str) -> tuple[str, uuid.UUID]:
    agent, _, list_id = text.partition("=")
    if not agent or not list_id:
        raise argparse.ArgumentTypeError("expected AGENT=LIST_ID")
    return agent, uuid.UUID(list_id)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m switchboard.dialer_runner", description=__doc__
    )
    parser.add_argument("config")
    parser.add_argument("--start", action="append", type=_start_arg, default=[])
    parser.add_argument("--exit-when-idle", action="store_true")
    args = parser.parse_args(argv)
    _configure_logging()
    return asyncio.run(run(args.config, args.start, idle_exit=args.exit_when_idle))


if __name__ == "__main__":
    sys.exit(main())
