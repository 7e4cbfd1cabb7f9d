"""Calling hours in the callee's time zone and the do-not-call list, at claim time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import bus
from crm_store import CallListEntry, CallListItemState, ClientKind
from lab.customers import Behaviour, customer_number
from lab.runner import Lab
from tests.dialer.conftest import DialerEnv, dialer_config

MakeEnv = Callable[..., Awaitable[DialerEnv]]

# A Wednesday, 12:00 UTC: 13:00 in Berlin (the lab's numbers), 07:00 in New York.
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


async def test_outside_hours_and_do_not_call_are_skipped_with_reasons(
    lab: Lab, tmp_path: Path, dialer_env: MakeEnv
) -> None:
    config = dialer_config(lab, tmp_path, hours="09:00-19:00", gap_seconds=0.5)
    env = await dialer_env(config, clock=lambda: NOW)
    new_york = "+12125550123"
    listed = customer_number(Behaviour.BUSY, ring=0, suffix=41)
    by_prefix = customer_number(Behaviour.BUSY, ring=0, suffix=4299)
    tokyo_client_number = customer_number(Behaviour.BUSY, ring=0, suffix=43)
    dialable = customer_number(Behaviour.BUSY, ring=0, suffix=44)
    await env.dialer.add_do_not_call(listed, reason="asked not to be called")
    await env.dialer.add_do_not_call(by_prefix[:-2], prefix=True)
    # A client with an explicit zone overrides the number's (Berlin): 21:00 in Tokyo.
    client = await env.store.clients.create(
        ClientKind.PERSON, first_name="Tokyo", last_name="Client", timezone="Asia/Tokyo"
    )
    call_list, _ = await env.dialer.create_list(
        "rules",
        [
            new_york,
            listed,
            by_prefix,
            CallListEntry(tokyo_client_number, client_id=client.id),
            dialable,
        ],
    )
    info = await env.dialer.start_session("alice", call_list.id)
    await env.log.wait_for(bus.DialerResult, lambda e: e.number == dialable, within=20)
    # The deferred numbers are due later: the session waits for them.
    await env.log.wait_for(bus.DialerItemSkipped, lambda e: e.number == tokyo_client_number)
    await env.dialer.stop("alice")
    await env.log.wait_for(bus.DialerSessionStopped, lambda e: e.session_id == info.session_id)

    assert [i.number for i in lab.customers.invites()] == [dialable]
    skipped = {e.number: e for e in env.log.events(bus.DialerItemSkipped)}
    assert skipped[new_york].reason == "outside_calling_hours"
    assert skipped[new_york].detail == "Wed 07:00 in America/New_York"
    assert skipped[new_york].until == datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
    assert skipped[tokyo_client_number].reason == "outside_calling_hours"
    assert skipped[tokyo_client_number].detail == "Wed 21:00 in Asia/Tokyo"
    assert skipped[listed].reason == "do_not_call"
    assert skipped[by_prefix].reason == "do_not_call"
    assert skipped[by_prefix].detail == f"prefix {by_prefix[:-2]}"

    items = {i.number_e164: i for i in await env.store.call_lists.items(call_list.id)}
    assert items[listed].state is CallListItemState.SKIPPED
    assert items[listed].skip_reason == f"do_not_call: number {listed}: asked not to be called"
    assert items[by_prefix].state is CallListItemState.SKIPPED
    ny = items[new_york]
    assert ny.state is CallListItemState.PENDING
    assert ny.attempts == 0
    assert ny.next_attempt_at == datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
    assert ny.skip_reason == "outside_calling_hours: Wed 07:00 in America/New_York"
    assert items[dialable].last_result == "busy"
