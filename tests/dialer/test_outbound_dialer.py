"""The outbound policy on the dialer's lists: screened at import, checked at dial time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import bus
from config import Config, parse_config
from crm_store import CallListItemState
from lab.customers import Behaviour, customer_number
from lab.runner import Lab
from tests.dialer.conftest import DialerEnv, dialer_config_text

MakeEnv = Callable[..., Awaitable[DialerEnv]]

DE_PREMIUM = "+499001234567"
GB_FIXED = "+442079460000"


def _config(lab: Lab, tmp_path: Path, outbound: str) -> Config:
    text = dialer_config_text(lab, tmp_path, gap_seconds=0.5)
    # The builder's own [outbound] (every country) is replaced by the test's.
    head, _, _ = text.partition("[outbound]")
    return parse_config(head + "[outbound]\n" + outbound, base_dir=tmp_path)


async def test_forbidden_rows_are_refused_at_import_with_the_rule(
    lab: Lab, tmp_path: Path, dialer_env: MakeEnv
) -> None:
    env = await dialer_env(_config(lab, tmp_path, ""))
    national = customer_number(Behaviour.BUSY, ring=0, suffix=51)
    call_list, report = await env.dialer.create_list(
        "screened", [national, DE_PREMIUM, GB_FIXED, "not a number"]
    )
    assert (report.total, report.added) == (4, 2)  # the national and the invalid one
    assert dict(report.invalid) == {
        "not a number": "not a number",
        DE_PREMIUM: "forbidden: premium-rate numbers are not allowed (outbound.refused_types)",
        GB_FIXED: "forbidden: numbers in GB are not allowed (outbound.allowed_countries)",
    }
    items = await env.store.call_lists.items(call_list.id)
    assert [(i.number_e164, i.state) for i in items] == [
        (national, CallListItemState.PENDING),
        (None, CallListItemState.INVALID),
    ]


async def test_forbidden_numbers_are_skipped_at_dial_time_and_allowed_ones_dialed(
    lab: Lab, tmp_path: Path, dialer_env: MakeEnv
) -> None:
    # Bob may call the UK; alice, who dials the list, may not.
    env = await dialer_env(
        _config(
            lab,
            tmp_path,
            '[[outbound.overrides]]\nagents = ["bob"]\nallowed_countries = ["GB"]\n',
        )
    )
    national = customer_number(Behaviour.BUSY, ring=0, suffix=52)
    # The UK number passes the import (bob may call it); the premium number is
    # put in the store directly, as a list written before the policy would be.
    call_list, report = await env.dialer.create_list("mixed", [GB_FIXED, national])
    assert report.invalid == ()
    stored, _ = await env.store.call_lists.create_list("old", None, [DE_PREMIUM, national])

    for list_id in (call_list.id, stored.id):
        info = await env.dialer.start_session("alice", list_id)
        await env.log.wait_for(
            bus.DialerSessionFinished, lambda e, s=info.session_id: e.session_id == s, within=30
        )
        await env.dialer.wait_session("alice", timeout=10)

    # Only the national number was dialed (once per list); the others were skipped.
    assert [i.number for i in lab.customers.invites()] == [national, national]
    skipped = {e.number: e for e in env.log.events(bus.DialerItemSkipped)}
    assert (skipped[GB_FIXED].reason, skipped[GB_FIXED].detail) == (
        "forbidden",
        "numbers in GB are not allowed (outbound.allowed_countries)",
    )
    assert (skipped[DE_PREMIUM].reason, skipped[DE_PREMIUM].detail) == (
        "forbidden",
        "premium-rate numbers are not allowed (outbound.refused_types)",
    )
    items = {i.number_e164: i for i in await env.store.call_lists.items(stored.id)}
    assert items[DE_PREMIUM].state is CallListItemState.SKIPPED
    assert items[DE_PREMIUM].skip_reason == (
        "forbidden: premium-rate numbers are not allowed (outbound.refused_types)"
    )
    assert items[national].last_result == "busy"
