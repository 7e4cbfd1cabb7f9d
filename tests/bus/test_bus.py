"""The in-process bus: stamping, bounded queues, drop reports, closing."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC

import pytest

from bus import (
    Bus,
    CallEnded,
    EventsDropped,
    RegistrationChanged,
    Subscription,
    SubscriptionClosed,
)


async def _until_waiting(sub: Subscription) -> None:
    """Yield to the loop until a get() is parked on ``sub`` (bounded)."""
    for _ in range(100):
        if sub._waiter is not None:
            return
        await asyncio.sleep(0)
    raise AssertionError("get() never started waiting")


def _reg(n: int) -> RegistrationChanged:
    return RegistrationChanged(
        line=str(2000 + n), state="registered", code=200, reason="OK", worker_id="w1"
    )


async def test_events_are_stamped_with_origin_increasing_seq_and_utc_time() -> None:
    bus = Bus("paris")
    sub = bus.subscribe("t")
    sent = [bus.publish(_reg(n)) for n in range(3)]
    got = [await sub.get() for _ in range(3)]
    assert got == sent
    assert [e.seq for e in got] == [1, 2, 3]
    assert {e.origin for e in got} == {"paris"}
    assert all(e.at.tzinfo is UTC for e in got)
    assert got[0].at <= got[1].at <= got[2].at


async def test_slow_subscriber_loses_only_its_own_events_and_drops_are_reported() -> None:
    bus = Bus("paris")
    slow = bus.subscribe("slow", maxsize=2)
    fast = bus.subscribe("fast", maxsize=100)
    for n in range(5):
        bus.publish(_reg(n))
    # The drop report is published on the next loop iteration.
    received = [await asyncio.wait_for(fast.get(), 1) for _ in range(6)]
    assert [e.event.TYPE for e in received] == ["registration.changed"] * 5 + ["bus.dropped"]
    assert received[-1].event == EventsDropped(subscriber="slow", count=3)
    # The report itself did not fit either; it is counted but not reported again.
    assert slow.dropped == 4
    assert [(await slow.get()).seq for _ in range(2)] == [1, 2]


async def test_type_filter_delivers_only_chosen_types() -> None:
    bus = Bus("paris")
    sub = bus.subscribe("calls", types={"call.ended"})
    bus.publish(_reg(1))
    ended = CallEnded(
        call_id=uuid.uuid4(), reason="busy", sip_code=486, agent=None, talk_seconds=None
    )
    bus.publish(ended)
    assert (await sub.get()).event == ended
    assert len(sub) == 0


async def test_closing_ends_iteration_after_queued_events() -> None:
    bus = Bus("paris")
    sub = bus.subscribe("t")
    bus.publish(_reg(1))
    bus.close()
    bus.publish(_reg(2))
    seen = [env.seq async for env in sub]
    assert seen == [1]
    with pytest.raises(SubscriptionClosed):
        await sub.get()


async def test_waiting_get_wakes_on_publish_and_on_close() -> None:
    bus = Bus("paris")
    sub = bus.subscribe("t")
    waiting = asyncio.create_task(sub.get())
    await _until_waiting(sub)
    bus.publish(_reg(1))
    assert (await asyncio.wait_for(waiting, 1)).seq == 1
    waiting = asyncio.create_task(sub.get())
    await _until_waiting(sub)
    sub.close()
    with pytest.raises(SubscriptionClosed):
        await asyncio.wait_for(waiting, 1)


def test_envelope_data_is_json_ready() -> None:
    bus = Bus("paris")
    call_id = uuid.uuid4()
    env = bus.publish(
        CallEnded(
            call_id=call_id, reason="completed", sip_code=200, agent="alice", talk_seconds=3.5
        )
    )
    data = json.loads(json.dumps(env.to_data()))
    assert data["type"] == "call.ended"
    assert data["v"] == 1
    assert data["origin"] == "paris"
    assert data["seq"] == 1
    assert data["data"]["call_id"] == str(call_id)
    assert data["data"]["talk_seconds"] == 3.5


async def test_relay_keeps_origin_seq_and_time_and_takes_no_local_number() -> None:
    paris = Bus("paris")
    elsewhere = [paris.publish(_reg(n)) for n in range(3)]
    gateway = Bus("gateway")
    sub = gateway.subscribe("t")
    for envelope in reversed(elsewhere):
        gateway.relay(envelope)
    own = gateway.publish(_reg(9))
    got = [await sub.get() for _ in range(4)]
    assert got[:3] == list(reversed(elsewhere))
    assert all(a is b for a, b in zip(got[:3], reversed(elsewhere), strict=True))
    # Relayed envelopes do not advance the bus's own numbering.
    assert (own.origin, own.seq) == ("gateway", 1)
    assert got[3] == own
    assert (gateway.relayed, gateway.published) == (3, 1)


async def test_relayed_events_that_do_not_fit_are_reported_as_local_drops() -> None:
    paris = Bus("paris")
    gateway = Bus("gateway")
    gateway.subscribe("slow", maxsize=1)
    fast = gateway.subscribe("fast", maxsize=10)
    for n in range(3):
        gateway.relay(paris.publish(_reg(n)))
    received = [await asyncio.wait_for(fast.get(), 1) for _ in range(4)]
    assert [e.origin for e in received] == ["paris"] * 3 + ["gateway"]
    assert received[-1].event == EventsDropped(subscriber="slow", count=2)
