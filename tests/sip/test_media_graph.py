"""Who hears whom among one worker's calls; pure, no pjsua2, no worker.

Customer ``c`` is bridged to agent ``a``; supervisor ``s`` joins as listen,
whisper or barge; ``t`` is a consult leg for an attended transfer.
"""

from __future__ import annotations

import pytest

from sip.media_graph import MediaGraph, MediaGraphError, Rewire


def _graph(*calls: str) -> MediaGraph:
    graph = MediaGraph()
    for call in calls:
        graph.add(call)
    return graph


def _supervised(mode: str) -> MediaGraph:
    graph = _graph("c", "a", "s")
    graph.bridge("c", "a")
    graph.supervise("c", "s", mode)  # type: ignore[arg-type]
    return graph


def test_bridged_calls_hear_each_other_and_nobody_else() -> None:
    graph = _graph("c", "a", "x")
    rewire = graph.bridge("c", "a")
    assert rewire == Rewire(stop=frozenset(), start=frozenset({("c", "a"), ("a", "c")}))
    assert graph.live() == {("c", "a"), ("a", "c")}
    assert graph.hears("c") == {"a"}
    assert graph.hears("x") == set()


@pytest.mark.parametrize(
    ("mode", "connections"),
    [
        ("listen", {("c", "s"), ("a", "s")}),
        ("whisper", {("c", "s"), ("a", "s"), ("s", "a")}),
        ("barge", {("c", "s"), ("a", "s"), ("s", "a"), ("s", "c")}),
    ],
)
def test_each_supervision_mode_transmits_its_connections(
    mode: str, connections: set[tuple[str, str]]
) -> None:
    graph = _supervised(mode)
    assert graph.live() == {("c", "a"), ("a", "c")} | connections


def test_who_hears_the_supervisor_per_mode() -> None:
    heard_by = {
        mode: {call for call in "ca" if "s" in _supervised(mode).hears(call)}
        for mode in ("listen", "whisper", "barge")
    }
    assert heard_by == {"listen": set(), "whisper": {"a"}, "barge": {"a", "c"}}
    for mode in ("listen", "whisper", "barge"):
        assert _supervised(mode).hears("s") == {"c", "a"}


def test_changing_the_mode_stops_what_the_new_mode_does_not_need() -> None:
    graph = _supervised("barge")
    rewire = graph.supervise("c", "s", "listen")
    assert rewire.stop == {("s", "a"), ("s", "c")}
    # The three legs are touched: every connection of theirs is made again.
    assert rewire.start == {("c", "a"), ("a", "c"), ("c", "s"), ("a", "s")}
    assert graph.hears("a") == {"c"}


def test_hold_silences_a_call_both_ways_and_keeps_its_connections_booked() -> None:
    graph = _supervised("whisper")
    stop = graph.hold("a")
    assert stop == {("c", "a"), ("a", "c"), ("a", "s"), ("s", "a")}
    assert graph.hears("a") == set()
    assert graph.hears("c") == set()
    assert graph.hears("s") == {"c"}
    graph.resume("a")
    assert graph.edges_of("a") == stop
    assert graph.hears("c") == {"a"}


def test_consult_then_attended_transfer_connects_only_the_two_calls() -> None:
    graph = _graph("c", "a", "t")
    graph.bridge("c", "a")
    graph.hold("c")
    graph.bridge("a", "t")
    assert graph.hears("a") == {"t"}
    graph.resume("c")
    rewire = graph.connect("c", "t")
    assert rewire.stop == {("c", "a"), ("a", "c"), ("a", "t"), ("t", "a")}
    assert rewire.start == {("c", "t"), ("t", "c")}
    assert graph.hears("c") == {"t"}
    assert graph.hears("a") == set()


def test_a_leg_ending_ends_its_supervision_and_the_other_legs_connections() -> None:
    graph = _supervised("barge")
    graph.drop_bridges("a")
    rewire = graph.end_supervisions("a")
    assert rewire is not None
    assert rewire.stop == {("c", "s"), ("s", "c"), ("a", "s"), ("s", "a")}
    graph.remove("a")
    assert graph.live() == set()
    assert graph.end_supervisions("c") is None


@pytest.mark.parametrize(
    ("mode", "customer_recording"),
    [("listen", {"c", "a"}), ("whisper", {"c", "a"}), ("barge", {"c", "a", "s"})],
)
def test_a_recording_hears_a_barging_supervisor_only(
    mode: str, customer_recording: set[str]
) -> None:
    graph = _supervised(mode)
    assert graph.recording_sources("c") == customer_recording
    assert graph.recording_sources("s") == {"s", "c", "a"}
    assert graph.recording_sources("gone") == set()


@pytest.mark.parametrize(
    ("setup", "request_", "code"),
    [
        (lambda g: None, lambda g: g.bridge("c", "c"), "invalid_bridge"),
        (lambda g: None, lambda g: g.unbridge("c", "a"), "not_bridged"),
        (lambda g: None, lambda g: g.bridge("c", "nobody"), "unknown_call"),
        (lambda g: None, lambda g: g.supervise("c", "s", "listen"), "invalid_state"),
        (lambda g: g.bridge("c", "a"), lambda g: g.supervise("c", "c", "listen"), "invalid_bridge"),
        (lambda g: g.bridge("c", "a"), lambda g: g.supervise("c", "a", "listen"), "invalid_state"),
        (
            lambda g: (g.bridge("c", "a"), g.bridge("s", "t")),
            lambda g: g.supervise("c", "s", "listen"),
            "invalid_state",
        ),
        (
            # s supervises t's bridge, then asks to supervise c's.
            lambda g: (g.bridge("c", "a"), g.bridge("t", "x"), g.supervise("t", "s", "listen")),
            lambda g: g.supervise("c", "s", "listen"),
            "invalid_state",
        ),
        (
            # s is supervised by x (its bridge to t has gone since).
            lambda g: (
                g.bridge("c", "a"),
                g.bridge("s", "t"),
                g.supervise("s", "x", "listen"),
                g.unbridge("s", "t"),
            ),
            lambda g: g.supervise("c", "s", "listen"),
            "invalid_state",
        ),
        (lambda g: None, lambda g: g.connect("t", "t"), "invalid_bridge"),
    ],
)
def test_a_wrong_request_raises_its_code_and_changes_nothing(
    setup: object, request_: object, code: str
) -> None:
    graph = _graph("c", "a", "s", "t", "x")
    setup(graph)  # type: ignore[operator]
    edges = graph.edges()
    with pytest.raises(MediaGraphError) as caught:
        request_(graph)  # type: ignore[operator]
    assert caught.value.code == code, caught.value.message
    assert graph.edges() == edges
