"""Transfers, hold/resume and DTMF of one SIP worker against the lab.

Real Kamailio, real pjsua2 lab phones that each play their own tone and record what
they hear, real RTP. The worker registers line 2001 and calls the phones through the
PBX. Every wait is on an event with a timeout; the sleeps are talk time, the audio
being measured.

What a phone heard is measured on its own recording, in time windows: a phone's
``media`` event carries the wall-clock time (``at``) at which it started recording, so
an instant of the test (``time.time()``, same host) is an offset into the WAV. Windows
are trimmed by ``_MARGIN`` at both ends to absorb signalling latency and clock jitter.

Levels are RMS amplitudes (full scale 1.0; the phones send their tone at half scale
with a 40 % tremolo, so about 0.29 undistorted), measured per 100 ms block with a
Hann-windowed Goertzel filter (``tone_level`` below). Over repeated runs on this
machine (alone and with two test files running at once) a tone that is heard read
0.27-0.29, through the worker's conference bridge or phone to phone, and one that is
not heard at most 0.0011 (0.0000 when the phone hears silence; G.711 quantisation of
another tone otherwise). Hence ``HEARD`` = 0.1 and ``SILENT`` = 0.01: each an order of
magnitude from what it must reject. The phones speak G.711 only (see docs/lab.md): with
speex a heard tone read anywhere from 0.02 to 0.35 per 100 ms after a hold/resume.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab import audio
from lab.customers import Behaviour, customer_number
from lab.phones import LabPhone, PhoneEvent, PhoneSpec
from lab.runner import Lab
from sip import protocol as p
from sip.exceptions import WorkerCommandError
from tests.sip.conftest import Worker

StartWorker = Callable[..., Awaitable[Worker]]

LINE = "2001"
#: Waits on events: generous, for a loaded 2-core machine.
WAIT = 20.0
#: Talk time per measured phase, seconds.
TALK = 2.0
_MARGIN = 0.4
#: A tone heard reads above this (measured 0.27-0.29) ...
HEARD = 0.1
#: ... and a tone not heard below this (measured at most 0.0011).
SILENT = 0.01


@pytest.fixture
def lab_phones() -> list[str | PhoneSpec]:
    """Three auto-answering phones: 1001 (440 Hz), 1002 (620 Hz), 1003 (780 Hz)."""
    return ["1001", "1002", "1003"]


@dataclass
class Leg:
    """One call of the worker to a lab phone."""

    call_id: str  # the worker's
    phone: LabPhone
    sip_call_id: str  # the phone's, which is the worker's SIP Call-ID too
    recording: Path  # what the phone hears on this call
    started: float  # epoch at which the phone started that recording

    @property
    def hz(self) -> float:
        return self.phone.tone_hz

    async def phone_ended(self) -> PhoneEvent:
        """Wait for the phone's ``ended`` (its WAV is complete then)."""
        return await self.phone.wait_call_ended(call_id=self.sip_call_id, timeout=WAIT)


async def start_pbx_worker(lab: Lab, start_worker: StartWorker, recording_dir: Path) -> Worker:
    """A worker with line 2001 registered on the lab's Kamailio."""
    worker = await start_worker(
        pbx_host=lab.pbx_host,
        pbx_port=lab.pbx_port,
        domain=lab.domain,
        recording_dir=str(recording_dir),
    )
    await worker.send(p.Register, line=LINE, extension=LINE, password=lab.extensions[LINE])
    await worker.wait_for(
        p.Registration, lambda e: e.line == LINE and e.state == "registered", within=WAIT
    )
    return worker


@pytest.fixture
async def worker(lab: Lab, start_worker: StartWorker, tmp_path: Path) -> Worker:
    return await start_pbx_worker(lab, start_worker, tmp_path / "recordings")


async def dial(worker: Worker, lab: Lab, extension: str) -> Leg:
    """Call a lab phone through the PBX; return once both ends have audio."""
    phone = lab.phones[extension]
    mark = len(phone.events)
    call_id = str(uuid.uuid4())
    await worker.send(p.Originate, call_id=call_id, line=LINE, to_uri=lab.uri(extension))
    await worker.wait_for(p.MediaActive, lambda e: e.call_id == call_id, within=WAIT)
    media = await phone.wait_for(lambda e: e.kind == "media", timeout=WAIT, start=mark)
    return Leg(
        call_id=call_id,
        phone=phone,
        sip_call_id=str(media.call_id),
        recording=Path(str(media.data["recording"])),
        started=float(media.data["at"]),
    )


async def hang_up(worker: Worker, *legs: Leg) -> None:
    """Hang the worker's legs up and wait until each phone's recording is complete."""
    for leg in legs:
        await worker.send(p.Hangup, call_id=leg.call_id)
    for leg in legs:
        await worker.call_state(leg.call_id, "ended", within=WAIT)
        await leg.phone_ended()


async def talk(seconds: float = TALK) -> tuple[float, float]:
    """Let the audio flow for ``seconds`` (the content measured); return (start, end)."""
    start = time.time()
    await asyncio.sleep(seconds)
    return start, time.time()


def tone_between(path: Path, hz: float, started: float, span: tuple[float, float]) -> float:
    """RMS level of the ``hz`` tone in a recording between two epochs.

    ``started`` is the epoch of the recording's first sample; the span is trimmed by
    ``_MARGIN`` at both ends and must keep at least half a second.
    """
    samples, rate = audio.read_samples(path)
    first = max(int((span[0] - started + _MARGIN) * rate), 0)
    last = int((span[1] - started - _MARGIN) * rate)
    assert last - first >= rate // 2, f"{path.name}: window {span} too short ({len(samples)})"
    return tone_level(samples[first:last], rate, hz)


def tone_in(path: Path, hz: float) -> float:
    """RMS level of the ``hz`` tone over a whole recording."""
    samples, rate = audio.read_samples(path)
    return tone_level(samples, rate, hz)


def tone_level(samples: Sequence[int], rate: int, hz: float) -> float:
    """RMS level (full scale 1.0) of the ``hz`` tone in 16-bit samples.

    Measured per 100 ms block (Hann-windowed Goertzel, then the RMS of the blocks),
    so that a jitter-buffer adjustment (a phase jump) does not cancel the tone out
    and a neighbouring tone does not leak in.
    """
    size = rate // 10
    window = [0.5 - 0.5 * math.cos(2.0 * math.pi * i / size) for i in range(size)]
    gain = sum(window)
    coeff = 2.0 * math.cos(2.0 * math.pi * hz / rate)
    blocks = range(0, len(samples) - size + 1, size)
    assert len(blocks) > 0, "no audio to measure"
    power = 0.0
    for start in blocks:
        s1 = s2 = 0.0
        for w, x in zip(window, samples[start : start + size], strict=True):
            s1, s2 = w * x + coeff * s1 - s2, s1
        amplitude = 2.0 * math.sqrt(max(s1 * s1 + s2 * s2 - coeff * s1 * s2, 0.0)) / gain
        power += (amplitude / 32768.0) ** 2 / 2.0
    return math.sqrt(power / len(blocks))


def heard(leg: Leg, other: Leg | LabPhone, span: tuple[float, float]) -> float:
    """How loud ``other``'s tone is in what ``leg``'s phone heard during ``span``."""
    hz = other.tone_hz if isinstance(other, LabPhone) else other.hz
    return tone_between(leg.recording, hz, leg.started, span)


def phone_leg(phone: LabPhone, media: PhoneEvent, ended: PhoneEvent) -> Leg:
    """A call between two phones (no worker leg), from its ``media`` and ``ended``."""
    return Leg(
        call_id="",
        phone=phone,
        sip_call_id=str(media.call_id),
        recording=Path(str(ended.data["recording"])),
        started=float(media.data["at"]),
    )


# --------------------------------------------------------------------------- blind


async def test_blind_transfer_connects_customer_to_target(worker: Worker, lab: Lab) -> None:
    customer = await dial(worker, lab, "1001")
    agent = await dial(worker, lab, "1002")
    target = lab.phones["1003"]
    await worker.send(p.Bridge, call_a=customer.call_id, call_b=agent.call_id)
    bridged = await talk(1.5)

    mark = len(customer.phone.events)
    target_mark = len(target.events)
    await worker.send(p.TransferBlind, call_id=customer.call_id, to_uri=lab.uri("1003"))
    new_call = await customer.phone.wait_transfer(timeout=WAIT, start=mark)
    assert new_call.referred_by == customer.sip_call_id
    assert "1003@" in str(new_call.target)

    final = await worker.wait_for(
        p.TransferStatus, lambda e: e.call_id == customer.call_id and e.final, within=WAIT
    )
    assert (final.code, final.final, final.target_user) == (200, True, "1003")
    assert final.target == lab.uri("1003")
    progress = [
        e
        for e in worker.seen
        if isinstance(e, p.TransferStatus) and e.call_id == customer.call_id and not e.final
    ]
    # pjsua reports the REFER's 202 as "100 Accepted" and each NOTIFY's sipfrag
    # ("100 Trying" first); a PBX may relay the first NOTIFY ahead of the 202.
    assert (100, "Accepted") in [(e.code, e.reason) for e in progress]
    assert progress[0].code == 100
    assert all(100 <= e.code < 200 for e in progress)
    ended = await worker.call_state(customer.call_id, "ended", within=WAIT)
    assert ended.end_reason == "transferred"
    old = await customer.phone_ended()
    assert old.data["reason"]  # the worker's BYE ended the phone's first call

    # The customer's phone now talks to the target's phone, through the PBX only.
    answered = await customer.phone.wait_for(
        lambda e: e.kind == "media" and e.data.get("token") == new_call.token,
        timeout=WAIT,
        start=mark,
    )
    target_media = await target.wait_for(
        lambda e: e.kind == "media", timeout=WAIT, start=target_mark
    )
    assert new_call.answered
    after = await talk()
    await customer.phone.hangup(new_call)
    async with asyncio.timeout(WAIT):
        await new_call.ended.wait()
    customer_end = await customer.phone.wait_call_ended(call_id=new_call.call_id, timeout=WAIT)
    target_end = await target.wait_call_ended(call_id=target_media.call_id, timeout=WAIT)
    await hang_up(worker, agent)

    # Before the transfer the customer heard the agent (the measurement works) ...
    assert heard(customer, agent, bridged) > HEARD
    # ... after it, customer and target hear each other and not the agent.
    new_leg = phone_leg(customer.phone, answered, customer_end)
    target_leg = phone_leg(target, target_media, target_end)
    assert heard(new_leg, target, after) > HEARD, "the customer does not hear the target"
    assert heard(target_leg, customer.phone, after) > HEARD, "the target does not hear the customer"
    assert heard(new_leg, agent, after) < SILENT
    assert heard(target_leg, agent, after) < SILENT


async def ringing_customer(worker: Worker, lab: Lab) -> str:
    """A call of the worker to a lab customer who rings and never answers."""
    call_id = str(uuid.uuid4())
    number = customer_number(Behaviour.NEVER_ANSWER, suffix=7)
    await worker.send(p.Originate, call_id=call_id, line=LINE, to_uri=lab.uri(number))
    await worker.call_state(call_id, "ringing", within=WAIT)
    return call_id


async def test_blind_transfer_refusals(worker: Worker, lab: Lab) -> None:
    with pytest.raises(WorkerCommandError) as unknown:
        await worker.send(p.TransferBlind, call_id="nope", to_uri=lab.uri("1003"))
    assert unknown.value.code == "unknown_call"

    ringing = await ringing_customer(worker, lab)
    with pytest.raises(WorkerCommandError) as early:
        await worker.send(p.TransferBlind, call_id=ringing, to_uri=lab.uri("1003"))
    assert early.value.code == "invalid_state"
    await worker.send(p.Hangup, call_id=ringing)
    assert (await worker.call_state(ringing, "ended", within=WAIT)).end_reason == "cancelled"


async def test_failed_blind_transfer_leaves_the_call_up(worker: Worker, lab: Lab) -> None:
    customer = await dial(worker, lab, "1001")
    # 2002 exists on the PBX but nothing is registered on it: the phone's INVITE
    # fails (480), the NOTIFY says so, the worker keeps the call.
    await worker.send(p.TransferBlind, call_id=customer.call_id, to_uri=lab.uri("2002"))
    final = await worker.wait_for(
        p.TransferStatus, lambda e: e.call_id == customer.call_id and e.final, within=WAIT
    )
    assert final.code >= 300
    # Still up and usable: a second transfer may be tried, DTMF still flows.
    mark = len(customer.phone.events)
    await worker.send(p.SendDtmf, call_id=customer.call_id, digits="7")
    assert await customer.phone.wait_dtmf(1, call_id=customer.sip_call_id, start=mark) == "7"
    await hang_up(worker, customer)
    ended = await worker.call_state(customer.call_id, "ended")
    assert ended.end_reason == "local_hangup"


# --------------------------------------------------------------------------- attended


async def test_attended_transfer_connects_customer_to_consulted_party(
    worker: Worker, lab: Lab
) -> None:
    customer = await dial(worker, lab, "1001")
    agent = await dial(worker, lab, "1002")
    consult = await dial(worker, lab, "1003")
    recording_started = time.time()
    await worker.send(p.RecordStart, call_id=customer.call_id)
    await worker.send(p.Bridge, call_a=customer.call_id, call_b=agent.call_id)
    talking = await talk()
    # The agent puts the customer aside and consults the target.
    await worker.send(p.Unbridge, call_a=customer.call_id, call_b=agent.call_id)
    await worker.send(p.Bridge, call_a=agent.call_id, call_b=consult.call_id)
    consulting = await talk()
    await worker.send(p.TransferAttended, call_id=customer.call_id, consult_call_id=consult.call_id)
    # The agent's leg stays up (the daemon hangs it up), connected to nobody.
    connected = await talk()
    await hang_up(worker, agent)
    alone = await talk()
    await hang_up(worker, customer, consult)
    finished = await worker.wait_for(p.RecordingFinished, lambda e: e.call_id == customer.call_id)

    assert heard(customer, agent, talking) > HEARD
    assert heard(agent, customer, talking) > HEARD
    # Consulting: the customer hears nobody; agent and target hear each other.
    assert heard(customer, agent, consulting) < SILENT
    assert heard(customer, consult, consulting) < SILENT
    assert heard(agent, consult, consulting) > HEARD
    assert heard(consult, agent, consulting) > HEARD
    # Connected: customer and target hear each other, and no longer the agent,
    # who hears nobody.
    for span in (connected, alone):
        assert heard(customer, consult, span) > HEARD, "the customer does not hear the target"
        assert heard(consult, customer, span) > HEARD, "the target does not hear the customer"
        assert heard(customer, agent, span) < SILENT
        assert heard(consult, agent, span) < SILENT
    assert heard(agent, customer, connected) < SILENT
    assert heard(agent, consult, connected) < SILENT

    # The worker's recording of the customer's leg follows what the customer hears:
    # the agent, nobody while consulting (the agent's consultation is not in it),
    # then the target, across the transfer.
    recording = Path(finished.path)

    def recorded(leg: Leg, span: tuple[float, float]) -> float:
        return tone_between(recording, leg.hz, recording_started, span)

    assert recorded(customer, talking) > HEARD
    assert recorded(agent, talking) > HEARD
    assert recorded(customer, consulting) > HEARD
    assert recorded(agent, consulting) < SILENT
    assert recorded(consult, consulting) < SILENT
    assert recorded(customer, connected) > HEARD
    assert recorded(consult, connected) > HEARD
    assert recorded(agent, connected) < SILENT


async def test_attended_transfer_refusals(worker: Worker, lab: Lab) -> None:
    customer = await dial(worker, lab, "1001")
    for consult_call_id, code in (("nope", "unknown_call"), (customer.call_id, "invalid_bridge")):
        with pytest.raises(WorkerCommandError) as refused:
            await worker.send(
                p.TransferAttended, call_id=customer.call_id, consult_call_id=consult_call_id
            )
        assert refused.value.code == code
    # A call without audio (still ringing) cannot be connected.
    ringing = await ringing_customer(worker, lab)
    with pytest.raises(WorkerCommandError) as inactive:
        await worker.send(p.TransferAttended, call_id=customer.call_id, consult_call_id=ringing)
    assert inactive.value.code == "media_not_active"
    await worker.send(p.Hangup, call_id=ringing)
    await worker.call_state(ringing, "ended", within=WAIT)
    await hang_up(worker, customer)


# --------------------------------------------------------------------------- hold


async def test_hold_silences_the_bridge_and_resume_restores_it(worker: Worker, lab: Lab) -> None:
    customer = await dial(worker, lab, "1001")
    agent = await dial(worker, lab, "1002")
    await worker.send(p.Bridge, call_a=customer.call_id, call_b=agent.call_id)
    recording_started = time.time()
    await worker.send(p.RecordStart, call_id=customer.call_id)
    before = await talk()

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
    await worker.send(p.RecordStop, call_id=customer.call_id)
    recorded_for = time.time() - recording_started
    finished = await worker.wait_for(p.RecordingFinished, lambda e: e.call_id == customer.call_id)
    await hang_up(worker, customer, agent)

    assert heard(customer, agent, before) > HEARD
    assert heard(agent, customer, before) > HEARD
    held_span = (max(held[0], float(held_at.data["at"])), held[1])
    assert heard(customer, agent, held_span) < SILENT, "the held customer hears the agent"
    assert heard(agent, customer, held_span) < SILENT, "the agent hears the held customer"
    span = (max(after[0], float(resumed_at.data["at"])), after[1])
    assert heard(customer, agent, span) > HEARD, "no agent after resume"
    assert heard(agent, customer, span) > HEARD, "no customer after resume"

    # The recording of the customer's leg keeps wall-clock time across the hold
    # (a held stream delivers no audio: without the worker's silent source the
    # hold would be cut out of the file), holds no customer while on hold, and
    # the customer again after the resume.
    assert abs(finished.duration_seconds - recorded_for) < 0.5
    recording = Path(finished.path)
    assert tone_between(recording, customer.hz, recording_started, before) > HEARD
    assert tone_between(recording, customer.hz, recording_started, held_span) < SILENT
    assert tone_between(recording, customer.hz, recording_started, span) > HEARD


# --------------------------------------------------------------------------- DTMF


async def test_dtmf_both_ways_through_the_pbx(worker: Worker, lab: Lab) -> None:
    customer = await dial(worker, lab, "1001")

    mark = len(customer.phone.events)
    await worker.send(p.SendDtmf, call_id=customer.call_id, digits="12#")
    digits = await customer.phone.wait_dtmf(
        3, call_id=customer.sip_call_id, timeout=WAIT, start=mark
    )
    assert digits == "12#"

    await customer.phone.send_dtmf("4*9D", call_id=customer.sip_call_id)
    assert await worker_dtmf(worker, customer.call_id, 4) == "4*9D"
    await hang_up(worker, customer)


async def worker_dtmf(worker: Worker, call_id: str, count: int) -> str:
    """Wait until the worker reported ``count`` digits on ``call_id``; return them."""

    def digits() -> str:
        return "".join(
            e.digit for e in worker.seen if isinstance(e, p.Dtmf) and e.call_id == call_id
        )

    await worker.wait_for(
        p.Dtmf, lambda e: e.call_id == call_id and len(digits()) >= count, within=WAIT
    )
    return digits()[:count]


def test_transfer_status_round_trips() -> None:
    event = p.TransferStatus(
        call_id="c1", code=180, reason="Ringing", final=False, target="sip:+331@pbx:5060"
    )
    assert p.decode_event(p.encode(event)[p.HEADER_SIZE :]) == event
    assert event.target_user == "+331"
    assert p.EVENTS["transfer_status"] is p.TransferStatus
