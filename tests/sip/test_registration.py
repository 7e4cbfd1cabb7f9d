"""Lines registering on a real PBX: the lab's Kamailio with digest authentication."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import pytest

from lab.phones import PhoneSpec
from lab.pytest_plugin import TEST_EXTENSIONS
from lab.runner import Lab
from sip import protocol as p
from tests.sip.conftest import Sipp, Worker

StartWorker = Callable[..., Awaitable[Worker]]
RunSipp = Callable[..., Awaitable[Sipp]]
PASSWORD = TEST_EXTENSIONS["2001"]


@pytest.fixture
def lab_phones() -> list[str | PhoneSpec]:
    """No agent phones: these tests need only the PBX."""
    return []


async def _pbx_worker(start_worker: StartWorker, lab: Lab) -> Worker:
    return await start_worker(
        pbx_host=lab.pbx_host,
        pbx_port=lab.pbx_port,
        domain=lab.domain,
        allowed_sources=(f"{lab.pbx_host}/32",),
        register_retry_seconds=2,
    )


def _line_is(line: str, state: str) -> Callable[[p.Registration], bool]:
    return lambda e: e.line == line and e.state == state


async def test_line_registers_and_unregisters(start_worker: StartWorker, lab: Lab) -> None:
    worker = await _pbx_worker(start_worker, lab)
    await worker.send(p.Register, line="sales", extension="2001", password=PASSWORD, expires=120)
    registered = await worker.wait_for(p.Registration, _line_is("sales", "registered"))
    assert registered.code == 200
    assert 0 < registered.expires <= 120
    first = next(e for e in worker.seen if isinstance(e, p.Registration))
    assert first.state == "registering"

    await worker.send(p.Unregister, line="sales")
    await worker.wait_for(p.Registration, _line_is("sales", "unregistered"))


async def test_wrong_password_fails(start_worker: StartWorker, lab: Lab) -> None:
    worker = await _pbx_worker(start_worker, lab)
    await worker.send(p.Register, line="sales", extension="2001", password="wrong", expires=120)
    failed = await worker.wait_for(p.Registration, _line_is("sales", "failed"))
    assert failed.code in (401, 403, 407)


async def test_line_registers_within_5s_of_the_pbx_coming_back(
    start_worker: StartWorker, lab: Lab
) -> None:
    pbx = lab.pbx
    await pbx.stop()
    worker = await _pbx_worker(start_worker, lab)
    await worker.send(p.Register, line="sales", extension="2001", password=PASSWORD, expires=120)
    await worker.wait_for(p.Registration, _line_is("sales", "registering"))
    await asyncio.sleep(3)  # the PBX stays down a while: REGISTERs go unanswered
    assert not any(isinstance(e, p.Registration) and e.state == "registered" for e in worker.seen)
    await pbx.start()
    back = time.monotonic()
    await worker.wait_for(p.Registration, _line_is("sales", "registered"), within=5.0)
    assert time.monotonic() - back < 5.0


async def test_register_needs_a_pbx(start_worker: StartWorker) -> None:
    from sip.exceptions import WorkerCommandError

    worker = await start_worker()
    with pytest.raises(WorkerCommandError) as err:
        await worker.send(p.Register, line="x", extension="1", password="pw")
    assert err.value.code == "no_pbx"


async def test_423_min_expires_is_honoured(start_worker: StartWorker, sipp: RunSipp) -> None:
    # pjsip retries by itself with the registrar's Min-Expires; the daemon only
    # sees the line registered, for the longer lifetime.
    registrar = await sipp("registrar_423.xml")
    worker = await start_worker(pbx_host="127.0.0.1", pbx_port=registrar.port, domain="127.0.0.1")
    await worker.send(p.Register, line="sales", extension="2001", password="pw", expires=60)
    registered = await worker.wait_for(p.Registration, _line_is("sales", "registered"))
    assert registered.expires == 120
    assert not any(isinstance(e, p.Registration) and e.state == "failed" for e in worker.seen)
    assert await registrar.wait() == 0


async def test_pbx_answering_503_is_retried_with_backoff_and_the_line_comes_back(
    start_worker: StartWorker, lab: Lab
) -> None:
    worker = await start_worker(
        pbx_host=lab.pbx_host,
        pbx_port=lab.pbx_port,
        domain=lab.domain,
        allowed_sources=(f"{lab.pbx_host}/32",),
        register_retry_seconds=1,
        register_retry_max_seconds=4,
    )
    # A short lifetime: pjsip refreshes it a few seconds after registering.
    await worker.send(p.Register, line="sales", extension="2001", password=PASSWORD, expires=8)
    await worker.wait_for(p.Registration, _line_is("sales", "registered"))
    await lab.pbx.refuse_registrations(True)
    try:
        # The refresh is refused: the line says so, then the worker asks again,
        # less and less often (1 s, 2 s, 4 s, 4 s: the maximum).
        failures: list[float] = []
        counted: list[p.Registration] = []
        while len(failures) < 5:
            failed = await worker.wait_for(
                p.Registration,
                # Events are compared by identity: equal ones are distinct refusals.
                lambda e: (
                    e.line == "sales" and e.state == "failed" and all(e is not c for c in counted)
                ),
                within=15.0,
            )
            failures.append(time.monotonic())
            counted.append(failed)
            assert failed.code == 503, failed
        gaps = [b - a for a, b in itertools.pairwise(failures)]
        assert gaps[0] < 1.8, gaps
        assert 1.5 < gaps[1] < 3.0, gaps
        assert 3.5 < gaps[2] < 5.5, gaps
        assert 3.5 < gaps[3] < 5.5, gaps  # capped
    finally:
        await lab.pbx.refuse_registrations(False)
    back = time.monotonic()
    await worker.wait_for(p.Registration, _line_is("sales", "registered"), within=6.0)
    assert time.monotonic() - back < 5.0
