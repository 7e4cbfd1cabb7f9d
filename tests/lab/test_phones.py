"""Agent phones: registration with digest auth, auto-answer, audio both ways."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lab import audio
from lab.runner import Lab

from ._helpers import wait_progress


async def test_agent_phones_register_with_digest_auth(lab: Lab) -> None:
    for extension in ("1001", "1002"):
        contacts = await lab.pbx.contacts(extension)
        assert len(contacts) == 1
        assert contacts[0].startswith(f"sip:{extension}@127.0.0.1:")


async def test_phone_call_is_answered_and_each_side_records_the_other(lab: Lab) -> None:
    caller, callee = lab.phones["1002"], lab.phones["1001"]
    call = await caller.call(lab.uri("1001"))
    await wait_progress(caller, call, 180)
    answered = await callee.wait_call_answered(timeout=5)
    await wait_progress(caller, call, 200)
    await asyncio.sleep(1.5)  # the conversation itself: 1.5 s of audio each way
    await caller.hangup(call)
    caller_end = await caller.wait_call_ended(timeout=5)
    callee_end = await callee.wait_call_ended(timeout=5, call_id=answered.call_id)

    heard_by_callee = Path(str(callee_end.data["recording"]))
    heard_by_caller = Path(str(caller_end.data["recording"]))
    assert audio.rms(heard_by_callee) > 0.05
    assert audio.rms(heard_by_caller) > 0.05
    assert audio.tone_level(heard_by_callee, caller.tone_hz) > 0.05
    assert audio.tone_level(heard_by_callee, callee.tone_hz) < 0.01
    assert audio.tone_level(heard_by_caller, callee.tone_hz) > 0.05
    assert audio.tone_level(heard_by_caller, caller.tone_hz) < 0.01


async def test_call_the_phone_cannot_place_ends_with_its_error(lab: Lab) -> None:
    call = await lab.phones["1001"].call("not a sip uri")
    async with asyncio.timeout(5):
        await call.ended.wait()
    assert call.error
    assert call.final_code is None
