"""Supervision (listen, whisper, barge) by one SIP worker, against the lab.

Three legs of one worker to three lab phones through Kamailio: the customer (1001,
440 Hz), the agent (1002, 620 Hz) and the supervisor (1003, 780 Hz). Who heard whom is
measured on the phones' own recordings, per time window (see test_worker_transfer.py
for the method and the measured levels behind ``HEARD`` and ``SILENT``). Every wait is
on an event with a timeout; the sleeps are talk time, the audio being measured.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from lab.phones import PhoneSpec
from lab.runner import Lab
from sip import protocol as p
from sip.exceptions import WorkerCommandError
from tests.sip.conftest import Worker
from tests.sip.test_worker_transfer import (
    HEARD,
    SILENT,
    WAIT,
    Leg,
    dial,
    hang_up,
    heard,
    start_pbx_worker,
    talk,
    tone_in,
)

StartWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
def lab_phones() -> list[str | PhoneSpec]:
    """Customer 1001 (440 Hz), agent 1002 (620 Hz), supervisor 1003 (780 Hz)."""
    return ["1001", "1002", "1003"]


@pytest.fixture
async def worker(lab: Lab, start_worker: StartWorker, tmp_path: Path) -> Worker:
    return await start_pbx_worker(lab, start_worker, tmp_path / "recordings")


async def three_legs(worker: Worker, lab: Lab) -> tuple[Leg, Leg, Leg]:
    """Customer and agent legs bridged, and a supervisor leg on its own."""
    customer = await dial(worker, lab, "1001")
    agent = await dial(worker, lab, "1002")
    supervisor = await dial(worker, lab, "1003")
    await worker.send(p.Bridge, call_a=customer.call_id, call_b=agent.call_id)
    return customer, agent, supervisor


def check(level: float, expected: bool) -> bool:
    return level > HEARD if expected else level < SILENT


@pytest.mark.parametrize(
    ("mode", "agent_hears_supervisor", "customer_hears_supervisor"),
    [("listen", False, False), ("whisper", True, False), ("barge", True, True)],
)
async def test_supervision_mode_decides_who_hears_the_supervisor(
    worker: Worker,
    lab: Lab,
    mode: p.SuperviseMode,
    agent_hears_supervisor: bool,
    customer_hears_supervisor: bool,
) -> None:
    customer, agent, supervisor = await three_legs(worker, lab)
    await worker.send(
        p.Supervise, call_id=customer.call_id, supervisor_call_id=supervisor.call_id, mode=mode
    )
    await worker.send(p.RecordStart, call_id=customer.call_id)
    span = await talk()
    await worker.send(p.RecordStop, call_id=customer.call_id)
    finished = await worker.wait_for(p.RecordingFinished, lambda e: e.call_id == customer.call_id)
    await hang_up(worker, supervisor, customer, agent)

    # The supervisor hears both sides in every mode; they still hear each other.
    assert heard(supervisor, customer, span) > HEARD
    assert heard(supervisor, agent, span) > HEARD
    assert heard(customer, agent, span) > HEARD
    assert heard(agent, customer, span) > HEARD
    level = heard(agent, supervisor, span)
    assert check(level, agent_hears_supervisor), f"agent hears supervisor at {level}"
    level = heard(customer, supervisor, span)
    assert check(level, customer_hears_supervisor), f"customer hears supervisor at {level}"

    # The call's recording holds the supervisor only when the customer hears it.
    recording = Path(finished.path)
    assert tone_in(recording, customer.hz) > HEARD
    assert tone_in(recording, agent.hz) > HEARD
    level = tone_in(recording, supervisor.hz)
    assert check(level, customer_hears_supervisor), f"supervisor in the recording at {level}"


async def test_changing_mode_reconnects(worker: Worker, lab: Lab) -> None:
    customer, agent, supervisor = await three_legs(worker, lab)

    async def supervise(mode: p.SuperviseMode) -> None:
        await worker.send(
            p.Supervise, call_id=customer.call_id, supervisor_call_id=supervisor.call_id, mode=mode
        )

    await supervise("barge")
    barging = await talk()
    await supervise("listen")
    listening = await talk()
    await supervise("whisper")
    whispering = await talk()
    await hang_up(worker, supervisor, customer, agent)

    assert heard(customer, supervisor, barging) > HEARD
    assert heard(agent, supervisor, barging) > HEARD
    assert heard(customer, supervisor, listening) < SILENT
    assert heard(agent, supervisor, listening) < SILENT
    assert heard(customer, supervisor, whispering) < SILENT
    assert heard(agent, supervisor, whispering) > HEARD
    for span in (barging, listening, whispering):
        assert heard(supervisor, customer, span) > HEARD
        assert heard(supervisor, agent, span) > HEARD
        assert heard(customer, agent, span) > HEARD


async def test_supervision_ends_with_the_agent_leg(worker: Worker, lab: Lab) -> None:
    customer, agent, supervisor = await three_legs(worker, lab)
    await worker.send(
        p.Supervise,
        call_id=customer.call_id,
        supervisor_call_id=supervisor.call_id,
        mode="barge",
    )
    supervised = await talk()
    await hang_up(worker, agent)
    # The customer and the supervisor legs stay up, no longer connected.
    after = await talk()
    with pytest.raises(WorkerCommandError) as refused:
        await worker.send(
            p.Supervise,
            call_id=customer.call_id,
            supervisor_call_id=supervisor.call_id,
            mode="listen",
        )
    assert refused.value.code == "invalid_state"
    await hang_up(worker, supervisor, customer)

    assert heard(supervisor, customer, supervised) > HEARD
    assert heard(customer, supervisor, supervised) > HEARD
    assert heard(supervisor, customer, after) < SILENT
    assert heard(customer, supervisor, after) < SILENT


async def test_supervisor_hanging_up_leaves_the_call_alone(worker: Worker, lab: Lab) -> None:
    customer, agent, supervisor = await three_legs(worker, lab)
    await worker.send(
        p.Supervise,
        call_id=customer.call_id,
        supervisor_call_id=supervisor.call_id,
        mode="whisper",
    )
    await talk(1.0)
    await hang_up(worker, supervisor)
    after = await talk()
    await hang_up(worker, customer, agent)
    assert heard(customer, agent, after) > HEARD
    assert heard(agent, customer, after) > HEARD
    assert heard(agent, supervisor, after) < SILENT


async def test_supervision_survives_hold_and_resume(worker: Worker, lab: Lab) -> None:
    customer, agent, supervisor = await three_legs(worker, lab)
    await worker.send(
        p.Supervise,
        call_id=customer.call_id,
        supervisor_call_id=supervisor.call_id,
        mode="barge",
    )
    mark = len(customer.phone.events)
    await worker.send(p.Hold, call_id=customer.call_id)
    held_at = await customer.phone.wait_media_state(
        "remote_hold", call_id=customer.sip_call_id, timeout=WAIT, start=mark
    )
    held = await talk()
    await worker.send(p.Resume, call_id=customer.call_id)
    resumed_at = await customer.phone.wait_media_state(
        "active", call_id=customer.sip_call_id, timeout=WAIT, start=mark
    )
    after = await talk()
    await hang_up(worker, supervisor, customer, agent)

    span = (max(held[0], float(held_at.data["at"])), held[1])
    assert heard(supervisor, customer, span) < SILENT
    assert heard(customer, supervisor, span) < SILENT
    assert heard(customer, agent, span) < SILENT
    assert heard(supervisor, agent, span) > HEARD  # the agent is not on hold
    assert heard(agent, supervisor, span) > HEARD
    span = (max(after[0], float(resumed_at.data["at"])), after[1])
    assert heard(supervisor, customer, span) > HEARD
    assert heard(customer, supervisor, span) > HEARD
    assert heard(customer, agent, span) > HEARD
    assert heard(agent, customer, span) > HEARD


async def test_supervise_refusals(worker: Worker, lab: Lab) -> None:
    customer = await dial(worker, lab, "1001")
    agent = await dial(worker, lab, "1002")
    supervisor = await dial(worker, lab, "1003")

    async def refused(call_id: str, supervisor_call_id: str) -> str:
        with pytest.raises(WorkerCommandError) as error:
            await worker.send(
                p.Supervise, call_id=call_id, supervisor_call_id=supervisor_call_id, mode="listen"
            )
        return error.value.code

    # Not bridged to anyone yet.
    assert await refused(customer.call_id, supervisor.call_id) == "invalid_state"
    await worker.send(p.Bridge, call_a=customer.call_id, call_b=agent.call_id)
    assert await refused(customer.call_id, "nope") == "unknown_call"
    assert await refused("nope", supervisor.call_id) == "unknown_call"
    assert await refused(customer.call_id, customer.call_id) == "invalid_bridge"
    # The agent's leg is bridged: it cannot be the supervisor's.
    assert await refused(customer.call_id, agent.call_id) == "invalid_state"
    # Bridged to two calls: which one is the agent?
    await worker.send(p.Bridge, call_a=customer.call_id, call_b=supervisor.call_id)
    assert await refused(customer.call_id, supervisor.call_id) == "invalid_state"
    await hang_up(worker, supervisor, customer, agent)
