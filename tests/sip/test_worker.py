"""A real SIP worker process against real peers: SIPp customers and another worker."""

from __future__ import annotations

import array
import asyncio
import fcntl
import math
import os
import signal
import termios
import time
import uuid
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from sip import protocol as p
from sip.client import WorkerClient, WorkerExited
from sip.exceptions import WorkerCommandError, WorkerGone
from tests.sip.conftest import Sipp, Worker, settings

StartWorker = Callable[..., Awaitable[Worker]]
RunSipp = Callable[..., Awaitable[Sipp]]


# RMS of 16-bit samples: pjsua's silence is 0, G.711 idle noise a few units,
# the SIPp sample speech some hundreds.
_AUDIBLE = 50


def _call_id() -> str:
    return str(uuid.uuid4())


def _files(directory: Path) -> list[Path]:
    return [x for x in directory.iterdir() if x.is_file()]


def _rms(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2
        samples = array.array("h", wav.readframes(wav.getnframes()))
    return math.sqrt(sum(s * s for s in samples) / max(len(samples), 1))


async def _wait_until(check: Callable[[], bool], *, within: float) -> None:
    """Return once ``check()`` holds; ``TimeoutError`` after ``within`` seconds.

    For states of another process, which give no notification: polled.
    """
    async with asyncio.timeout(within):
        while True:
            if check():
                return
            await asyncio.sleep(0.005)


def _all_threads_stopped(pid: int) -> bool:
    """Every thread of process ``pid`` is stopped (``T``): SIGSTOP is delivered
    asynchronously, and a thread still running could read the pipe meanwhile."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        # The state follows the command name, which is in parentheses.
        if stat[stat.rindex(")") + 2] != "T":
            return False
    return True


def _unread_bytes_in_stdin(pid: int) -> int:
    """How many bytes wait unread in process ``pid``'s stdin pipe (``FIONREAD`` on
    a second descriptor of the same pipe, opened through /proc; nothing is read)."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        unread = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, unread)
        return unread[0]
    finally:
        os.close(fd)


async def test_worker_starts_and_reports_ready(start_worker: StartWorker) -> None:
    worker = await start_worker()
    ready = await worker.wait_for(p.Ready)
    assert ready.pid == worker.client.pid
    assert ready.sip_port == worker.client.sip_port > 0
    assert worker.client.returncode is None


async def test_call_answered_by_customer_gets_media(
    start_worker: StartWorker, sipp: RunSipp
) -> None:
    customer = await sipp("uas_answer_audio.xml")
    worker = await start_worker()
    call = _call_id()
    await worker.send(p.Originate, call_id=call, line=None, to_uri=customer.uri())
    await worker.call_state(call, "ringing")
    answered = await worker.call_state(call, "answered")
    assert answered.sip_code == 200
    await worker.wait_for(p.MediaActive, lambda e: e.call_id == call)
    await worker.send(p.Hangup, call_id=call)
    ended = await worker.call_state(call, "ended")
    assert ended.end_reason == "local_hangup"
    assert await customer.wait() == 0


async def test_bridged_calls_are_recorded_with_sound(
    start_worker: StartWorker, sipp: RunSipp, tmp_path: Path
) -> None:
    customer = await sipp("uas_answer_audio.xml")
    agent_phone = await start_worker()
    worker = await start_worker(recording_dir=str(tmp_path))
    customer_leg, agent_leg = _call_id(), _call_id()

    # The agent's leg: the worker calls the agent's phone, which answers.
    await worker.send(
        p.Originate,
        call_id=agent_leg,
        line=None,
        to_uri=f"sip:2001@127.0.0.1:{agent_phone.client.sip_port}",
    )
    incoming = await agent_phone.wait_for(p.IncomingCall)
    assert incoming.to_number == "2001"
    assert incoming.source_address == "127.0.0.1"
    await agent_phone.send(p.Answer, call_id=incoming.call_id)
    await worker.wait_for(p.MediaActive, lambda e: e.call_id == agent_leg)
    await agent_phone.wait_for(p.MediaActive, lambda e: e.call_id == incoming.call_id)

    # The customer's leg.
    await worker.send(p.Originate, call_id=customer_leg, line=None, to_uri=customer.uri())
    await worker.wait_for(p.MediaActive, lambda e: e.call_id == customer_leg)

    await worker.send(p.Bridge, call_a=customer_leg, call_b=agent_leg)
    await worker.send(p.RecordStart, call_id=customer_leg)
    started = time.monotonic()
    await asyncio.sleep(2.5)  # talk time, not a wait for a state
    await worker.send(p.RecordStop, call_id=customer_leg)
    talk_time = time.monotonic() - started

    finished = await worker.wait_for(p.RecordingFinished)
    final = tmp_path / f"{customer_leg}.wav"
    assert finished.path == str(final)
    assert sorted(x.name for x in _files(tmp_path)) == [final.name]
    assert finished.bytes == final.stat().st_size
    assert abs(finished.duration_seconds - talk_time) <= 0.5
    with wave.open(str(final), "rb") as wav:
        assert abs(wav.getnframes() / wav.getframerate() - talk_time) <= 0.5
    assert _rms(final) > _AUDIBLE, "the recording is silent"

    await worker.send(p.Hangup, call_id=customer_leg)
    await worker.send(p.Hangup, call_id=agent_leg)
    assert (await worker.call_state(customer_leg, "ended")).end_reason == "local_hangup"
    remote = await agent_phone.call_state(incoming.call_id, "ended")
    assert remote.end_reason == "remote_hangup"
    assert await customer.wait() == 0


async def test_recording_ends_when_the_call_ends(
    start_worker: StartWorker, sipp: RunSipp, tmp_path: Path
) -> None:
    customer = await sipp("uas_answer_audio.xml")
    worker = await start_worker(recording_dir=str(tmp_path))
    call = _call_id()
    path = tmp_path / "sub" / "custom.wav"
    await worker.send(p.Originate, call_id=call, line=None, to_uri=customer.uri())
    await worker.wait_for(p.MediaActive, lambda e: e.call_id == call)
    await worker.send(p.RecordStart, call_id=call, path=str(path))
    await asyncio.sleep(1.0)  # talk time
    await worker.send(p.Hangup, call_id=call)
    finished = await worker.wait_for(p.RecordingFinished)
    assert finished.path == str(path)
    assert [x.name for x in _files(path.parent)] == ["custom.wav"]
    assert _rms(path) > _AUDIBLE
    assert await customer.wait() == 0


@pytest.mark.parametrize(
    ("scenario", "code", "end_reason"),
    [("uas_busy.xml", 486, "busy"), ("uas_decline.xml", 603, "declined")],
)
async def test_refused_calls_end_with_their_code(
    start_worker: StartWorker, sipp: RunSipp, scenario: str, code: int, end_reason: str
) -> None:
    customer = await sipp(scenario)
    worker = await start_worker()
    call = _call_id()
    await worker.send(p.Originate, call_id=call, line=None, to_uri=customer.uri())
    ended = await worker.call_state(call, "ended")
    assert (ended.sip_code, ended.end_reason) == (code, end_reason)
    assert not any(isinstance(e, p.MediaActive) for e in worker.seen)
    assert await customer.wait() == 0


async def test_unanswered_call_is_cancelled_after_ring_timeout(
    start_worker: StartWorker, sipp: RunSipp
) -> None:
    customer = await sipp("uas_ring_forever.xml")
    worker = await start_worker()
    call = _call_id()
    await worker.send(p.Originate, call_id=call, line=None, to_uri=customer.uri())
    await worker.call_state(call, "ringing")
    # The ring timeout is the daemon's: it hangs up an unanswered call.
    await worker.send(p.Hangup, call_id=call)
    ended = await worker.call_state(call, "ended")
    assert (ended.sip_code, ended.end_reason) == (487, "cancelled")
    assert await customer.wait() == 0


async def test_unreachable_customer_fails_fast(start_worker: StartWorker) -> None:
    from tests.sip.conftest import free_port

    worker = await start_worker(pbx_transport="tcp")  # a worker listens on one transport
    call = _call_id()
    # Over TCP a dead port is refused at once (over UDP pjsip waits Timer B, 32 s).
    dead = f"sip:100@127.0.0.1:{free_port()};transport=tcp"
    await worker.send(p.Originate, call_id=call, line=None, to_uri=dead)
    ended = await worker.call_state(call, "ended", within=5)
    assert (ended.sip_code, ended.end_reason) == (503, "unreachable")


async def test_fifth_call_is_refused_and_worker_survives(
    start_worker: StartWorker, sipp: RunSipp
) -> None:
    customer = await sipp("uas_ring_forever.xml", calls=4)
    worker = await start_worker(max_calls=4)
    calls = [_call_id() for _ in range(5)]
    for call in calls[:4]:
        await worker.send(p.Originate, call_id=call, line=None, to_uri=customer.uri())
    for call in calls[:4]:
        await worker.call_state(call, "ringing")
    with pytest.raises(WorkerCommandError) as refused:
        await worker.send(p.Originate, call_id=calls[4], line=None, to_uri=customer.uri())
    assert refused.value.code == "too_many_calls"
    error = await worker.wait_for(p.Error, lambda e: e.call_id == calls[4])
    assert error.code == "too_many_calls"

    # Still alive, and the slot frees up when a call ends.
    await worker.send(p.Hangup, call_id=calls[0])
    await worker.call_state(calls[0], "ended")
    for call in calls[1:4]:
        await worker.send(p.Hangup, call_id=call)
        await worker.call_state(call, "ended")
    assert worker.client.returncode is None
    assert await customer.wait() == 0


async def test_pjsua_own_call_limit_is_reported_not_crashed(
    start_worker: StartWorker, sipp: RunSipp
) -> None:
    # With max_calls above the compiled PJSUA_MAX_CALLS, pjsua itself refuses
    # the 5th call with PJ_ETOOMANY; that must come back as too_many_calls.
    customer = await sipp("uas_ring_forever.xml", calls=4)
    worker = await start_worker(max_calls=8)
    calls = [_call_id() for _ in range(5)]
    for call in calls[:4]:
        await worker.send(p.Originate, call_id=call, line=None, to_uri=customer.uri())
        await worker.call_state(call, "ringing")
    with pytest.raises(WorkerCommandError) as refused:
        await worker.send(p.Originate, call_id=calls[4], line=None, to_uri=customer.uri())
    assert refused.value.code == "too_many_calls"
    for call in calls[:4]:
        await worker.send(p.Hangup, call_id=call)
        await worker.call_state(call, "ended")
    assert worker.client.returncode is None
    assert await customer.wait() == 0


async def test_killed_worker_is_noticed_and_pending_commands_fail(
    start_worker: StartWorker,
) -> None:
    worker = await start_worker()
    await worker.wait_for(p.Ready)
    pid = worker.client.pid
    # Freeze the worker so the command stays pending, then kill it.
    os.kill(pid, signal.SIGSTOP)
    await _wait_until(lambda: _all_threads_stopped(pid), within=5.0)
    pending = asyncio.create_task(worker.send(p.Hangup, call_id="whatever"), name="pending-command")
    # The command is in the pipe, where the frozen worker cannot read it.
    await _wait_until(lambda: _unread_bytes_in_stdin(pid) > 0, within=5.0)
    assert not pending.done()
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    exited = await worker.wait_for(WorkerExited, within=1.0)
    assert time.monotonic() - killed_at < 1.0
    assert exited.returncode == -signal.SIGKILL
    with pytest.raises(WorkerGone):
        await pending
    with pytest.raises(WorkerGone):
        await worker.send(p.Hangup, call_id="whatever")
    await worker.client.aclose()  # idempotent on a dead worker


async def test_aclose_shuts_down_cleanly_and_is_idempotent() -> None:
    client = await WorkerClient.start(worker_id="solo", config=settings())
    await client.aclose()
    await client.aclose()
    assert client.returncode == 0
    events = [e async for e in client.events()]
    assert isinstance(events[-1], WorkerExited)
    assert events[-1].returncode == 0


async def test_call_commands_on_an_unknown_call_are_refused(start_worker: StartWorker) -> None:
    worker = await start_worker()
    with pytest.raises(WorkerCommandError) as err:
        await worker.send(p.TransferBlind, call_id="c", to_uri="sip:1@127.0.0.1")
    assert err.value.code == "unknown_call"
    with pytest.raises(WorkerCommandError) as err:
        await worker.send(p.Supervise, call_id="c", supervisor_call_id="s", mode="listen")
    assert err.value.code == "unknown_call"


async def test_bad_configuration_fails_start() -> None:
    from sip.exceptions import WorkerStartError

    with pytest.raises(WorkerStartError, match="configure_failed"):
        # An address of no interface here: the worker cannot create its transport.
        await WorkerClient.start(worker_id="bad", config=settings(bind_address="192.0.2.1"))


async def test_only_the_configured_codecs_are_offered_in_their_order(
    start_worker: StartWorker,
) -> None:
    phone = await start_worker()  # the default: PCMA, PCMU, G722
    for codecs, expected in ((("PCMU",), "PCMU/8000"), (("G722", "PCMA"), "G722/16000")):
        worker = await start_worker(codecs=codecs)
        call = _call_id()
        await worker.send(
            p.Originate,
            call_id=call,
            line=None,
            to_uri=f"sip:2001@127.0.0.1:{phone.client.sip_port}",
        )
        answered = {e.call_id for e in phone.seen if isinstance(e, p.IncomingCall)}
        incoming = await phone.wait_for(
            p.IncomingCall, lambda e, done=frozenset(answered): e.call_id not in done
        )
        await phone.send(p.Answer, call_id=incoming.call_id)
        ours = await worker.wait_for(p.MediaActive, lambda e, c=call: e.call_id == c)
        theirs = await phone.wait_for(p.MediaActive, lambda e, c=incoming.call_id: e.call_id == c)
        assert (ours.codec, theirs.codec) == (expected, expected)
        await worker.send(p.Hangup, call_id=call)
        await worker.call_state(call, "ended")

    # No codec in common: the call is refused (488), no audio.
    only_gsm = await start_worker(codecs=("GSM",))
    call = _call_id()
    await only_gsm.send(
        p.Originate, call_id=call, line=None, to_uri=f"sip:2001@127.0.0.1:{phone.client.sip_port}"
    )
    ended = await only_gsm.call_state(call, "ended")
    assert ended.sip_code == 488
    assert not any(isinstance(e, p.MediaActive) and e.call_id == call for e in only_gsm.seen)


async def test_a_worker_without_any_configured_codec_does_not_start() -> None:
    from sip.exceptions import WorkerStartError

    with pytest.raises(WorkerStartError, match="no_codec"):
        await WorkerClient.start(worker_id="mute", config=settings(codecs=("AMR-WB",)))


async def test_dtmf_and_hold_between_two_workers(start_worker: StartWorker) -> None:
    phone = await start_worker()
    worker = await start_worker()
    call = _call_id()
    await worker.send(
        p.Originate, call_id=call, line=None, to_uri=f"sip:2001@127.0.0.1:{phone.client.sip_port}"
    )
    incoming = await phone.wait_for(p.IncomingCall)
    await phone.send(p.Answer, call_id=incoming.call_id)
    await worker.wait_for(p.MediaActive, lambda e: e.call_id == call)
    await phone.wait_for(p.MediaActive, lambda e: e.call_id == incoming.call_id)

    await worker.send(p.SendDtmf, call_id=call, digits="12#")
    for digit in "12#":
        await phone.wait_for(p.Dtmf, lambda e, d=digit: e.digit == d)  # type: ignore[misc]
    with pytest.raises(WorkerCommandError) as bad:
        await worker.send(p.SendDtmf, call_id=call, digits="x")
    assert bad.value.code == "invalid_digits"

    await worker.send(p.Hold, call_id=call)
    await worker.send(p.Resume, call_id=call)
    await phone.send(p.Hangup, call_id=incoming.call_id)
    ended = await worker.call_state(call, "ended")
    assert ended.end_reason == "remote_hangup"


async def test_malformed_frame_is_reported_and_worker_carries_on(
    start_worker: StartWorker,
) -> None:
    worker = await start_worker()
    stdin = worker.client._process.stdin  # the raw pipe, to send what the client never would
    assert stdin is not None
    stdin.write(len(b"{oops").to_bytes(4, "big") + b"{oops")
    await stdin.drain()
    error = await worker.wait_for(p.Error, lambda e: e.code == "protocol_error")
    assert "not valid JSON" in error.message
    with pytest.raises(WorkerCommandError, match="unknown_call"):
        await worker.send(p.Hangup, call_id="nope")
    assert worker.client.returncode is None
