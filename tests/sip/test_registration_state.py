"""The registration state machine of one line, and the pool publishing it; no worker, no PBX."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from bus import Bus, RegistrationChanged, Subscription
from config import parse_config
from sip import protocol as p
from sip._routing import Router
from sip._supervision import Backoff, WorkerSlot
from sip.exceptions import InvalidState
from sip.plan import plan_workers
from sip.registration import LineRegistration, RegistrationState

S = RegistrationState


def _line() -> LineRegistration:
    return LineRegistration("2001", worker_id="t/agent-2001")


def test_a_line_starts_unregistered_and_registers_through_registering() -> None:
    line = _line()
    assert line.state is S.UNREGISTERED
    line.reported("registering", code=0, reason="")
    line.reported("registered", code=200, reason="OK")
    assert (line.state, line.code, line.reason) == (S.REGISTERED, 200, "OK")


def test_refresh_retry_and_unregister_are_allowed() -> None:
    line = _line()
    for state, code in [
        (S.REGISTERING, 0),
        (S.FAILED, 503),
        (S.REGISTERING, 0),
        (S.REGISTERED, 200),
        (S.REGISTERING, 0),
        (S.REGISTERED, 200),
        (S.REGISTERED, 200),
        (S.UNREGISTERED, 200),
    ]:
        line.reported(state, code=code, reason="")
        assert line.state is state


@pytest.mark.parametrize(
    ("before", "report"),
    [
        ((), "unregistered"),
        (("registering",), "registering"),
    ],
)
def test_a_wrong_transition_raises_and_changes_nothing(
    before: tuple[str, ...], report: str
) -> None:
    line = _line()
    for state in before:
        line.reported(state, code=0, reason="")
    was = line.state
    with pytest.raises(InvalidState, match="registration cannot go from"):
        line.reported(report, code=0, reason="late")
    assert line.state is was
    assert line.reason == ""


def test_an_unknown_state_is_refused() -> None:
    line = _line()
    with pytest.raises(ValueError, match="'gone'"):
        line.reported("gone", code=0, reason="")
    assert line.state is S.UNREGISTERED


@pytest.mark.parametrize("state", list(RegistrationState))
def test_a_worker_exit_unregisters_the_line_from_any_state(state: RegistrationState) -> None:
    line = _line()
    line.resync(state, code=200, reason="")
    line.lost("SIP worker exited")
    assert (line.state, line.code, line.reason) == (S.UNREGISTERED, 0, "SIP worker exited")


def test_each_transition_is_logged() -> None:
    line = _line()
    with structlog.testing.capture_logs() as logs:
        line.reported("registering", code=0, reason="")
        line.reported("failed", code=408, reason="Request Timeout")
    transitions = [
        (entry["old"], entry["new"], entry["code"])
        for entry in logs
        if entry["event"] == "registration.transition"
    ]
    assert transitions == [("unregistered", "registering", 0), ("registering", "failed", 408)]


def test_states_keep_the_wire_values_of_registration_changed() -> None:
    assert [s.value for s in RegistrationState] == [
        "unregistered",
        "registering",
        "registered",
        "failed",
    ]
    assert S.REGISTERED == "registered"


# --- where the pool publishes it: the router, fed worker reports (no worker runs)

_CONFIG = """\
[site]
id = "paris"
[pbx]
host = "192.0.2.10"
domain = "pbx.example.org"
[[lines]]
extension = "2100"
role = "reception"
secret = "s-2100"
"""


def _router(tmp_path: Path) -> tuple[Router, WorkerSlot, Subscription]:
    (plan,) = plan_workers(parse_config(_CONFIG, base_dir=tmp_path))
    slot = WorkerSlot(plan, Backoff(maximum=1.0, stable_after=1.0))
    bus = Bus("paris")
    router = Router([slot], bus=bus, calls_per_worker=4, command_timeout=1.0)
    return router, slot, bus.subscribe("test", types=[RegistrationChanged.TYPE])


def _published(sub: Subscription) -> list[tuple[str, str, int]]:
    out = []
    while (envelope := sub.get_nowait()) is not None:
        event = envelope.event
        assert isinstance(event, RegistrationChanged)
        out.append((event.line, event.state, event.code))
    return out


def test_worker_reports_move_the_line_and_are_published_in_their_wire_form(
    tmp_path: Path,
) -> None:
    router, slot, sub = _router(tmp_path)
    for state, code in [("registering", 0), ("registered", 200)]:
        router.dispatch(
            slot, p.Registration(line="2100", state=state, code=code, reason="", expires=60)
        )
    assert _published(sub) == [("2100", "registering", 0), ("2100", "registered", 200)]
    assert slot.registrations["2100"].state is S.REGISTERED


def test_a_report_out_of_order_is_logged_taken_as_the_worker_says_and_published(
    tmp_path: Path,
) -> None:
    router, slot, sub = _router(tmp_path)
    with structlog.testing.capture_logs() as logs:
        router.dispatch(
            slot, p.Registration(line="2100", state="unregistered", code=200, reason="", expires=0)
        )
        router.dispatch(
            slot, p.Registration(line="2100", state="registering", code=0, reason="", expires=0)
        )
    assert [e["event"] for e in logs if e["event"].startswith("sip_pool.")] == [
        "sip_pool.registration_out_of_order"
    ]
    assert _published(sub) == [("2100", "unregistered", 200), ("2100", "registering", 0)]
    assert slot.registrations["2100"].state is S.REGISTERING
