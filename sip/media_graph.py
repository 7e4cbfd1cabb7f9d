"""Who hears whom among the calls of one SIP worker; pure.

The worker's conference bridge connects the audio of its calls: two bridged
calls hear each other; a supervisor's leg hears a bridged pair (``listen``),
talks to the agent (``whisper``) or to both (``barge``); a held call hears
nobody and is heard by nobody. :class:`MediaGraph` keeps that bookkeeping over
call ids — no pjsua2, no I/O — and answers two questions: which conference
connections (source call, sink call) are wanted (:meth:`MediaGraph.edges`), and
what a recording of a call hears (:meth:`MediaGraph.recording_sources`).

A change returns a :class:`Rewire`: the connections to stop and the ones to
(re)make. The engine (``sip._engine``) carries them out on the bridge, on the
worker's pj thread. A connection stays *booked* while one of its calls is on
hold (:meth:`MediaGraph.hold` says which to stop); :meth:`MediaGraph.live` is
what actually transmits.

Supervision modes, for customer ``c`` bridged to agent ``a`` and supervisor ``s``::

    listen    c -> s, a -> s
    whisper   c -> s, a -> s, s -> a
    barge     c -> s, a -> s, s -> a, s -> c

A wrong request raises :class:`MediaGraphError` (its ``code`` is the worker
protocol's error code) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sip.exceptions import SipError
from sip.protocol import SuperviseMode

__all__ = ["Edge", "MediaGraph", "MediaGraphError", "Rewire", "Supervision"]

#: A conference connection: audio of the first call is sent to the second.
Edge = tuple[str, str]


class MediaGraphError(SipError):
    """A media change the graph's state does not allow; ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Rewire:
    """What a change asks of the conference bridge: connections to stop, then
    connections to make (making one that exists already is harmless)."""

    stop: frozenset[Edge] = frozenset()
    start: frozenset[Edge] = frozenset()


@dataclass(frozen=True, slots=True)
class Supervision:
    """A supervisor's leg listening to (or talking into) a customer/agent bridge."""

    supervisor: str
    customer: str
    agent: str
    mode: SuperviseMode

    def legs(self) -> tuple[str, str, str]:
        return (self.customer, self.agent, self.supervisor)

    def edges(self) -> set[Edge]:
        """Conference-bridge connections (source, sink) this mode needs."""
        c, a, s = self.customer, self.agent, self.supervisor
        edges = {(c, s), (a, s)}
        if self.mode in ("whisper", "barge"):
            edges.add((s, a))
        if self.mode == "barge":
            edges.add((s, c))
        return edges


class MediaGraph:
    """The bridges, supervisions and holds among one worker's calls."""

    def __init__(self) -> None:
        # Every call the worker holds, with the calls bridged to it.
        self._bridged: dict[str, set[str]] = {}
        self._held: set[str] = set()
        # Keyed by the supervisor's call id.
        self._supervisions: dict[str, Supervision] = {}

    # ------------------------------------------------------------------ queries

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._bridged

    def bridged(self, call_id: str) -> frozenset[str]:
        """The calls bridged to ``call_id`` (none for an unknown call)."""
        return frozenset(self._bridged.get(call_id, ()))

    def is_held(self, call_id: str) -> bool:
        """Whether ``call_id`` is on hold (held, and not resumed since)."""
        return call_id in self._held

    def edges(self) -> set[Edge]:
        """Every connection (source call, sink call) the bookkeeping asks for,
        held calls' included."""
        edges = {(call, other) for call, others in self._bridged.items() for other in others}
        for supervision in self._supervisions.values():
            edges |= supervision.edges()
        return edges

    def edges_of(self, call_id: str) -> set[Edge]:
        """The wanted connections ``call_id`` is the source or the sink of."""
        return {edge for edge in self.edges() if call_id in edge}

    def live(self) -> set[Edge]:
        """The connections that carry audio: the wanted ones between calls not on hold."""
        return {(src, dst) for src, dst in self.edges() if not self._held & {src, dst}}

    def hears(self, call_id: str) -> set[str]:
        """The calls whose audio reaches ``call_id``."""
        return {src for src, dst in self.live() if dst == call_id}

    def recording_sources(self, call_id: str) -> set[str]:
        """What a recording of ``call_id`` hears: the call itself, the calls
        bridged to it, a barging supervisor (whisper and listen are not
        recorded), and for a supervisor's own leg the two legs it listens to."""
        if call_id not in self._bridged:
            return set()
        wanted = {call_id} | self._bridged[call_id]
        for supervision in self._supervisions.values():
            if supervision.supervisor == call_id:
                wanted |= {supervision.customer, supervision.agent}
            elif supervision.mode == "barge" and call_id in supervision.legs():
                wanted.add(supervision.supervisor)
        return {c for c in wanted if c in self._bridged}

    # ------------------------------------------------------------------ calls

    def add(self, call_id: str) -> None:
        """A call exists (placed or arrived); it is connected to nothing."""
        self._bridged.setdefault(call_id, set())

    def remove(self, call_id: str) -> None:
        """A call is released; call :meth:`drop_bridges` and
        :meth:`end_supervisions` first, when it ends."""
        self._bridged.pop(call_id, None)
        self._held.discard(call_id)

    def drop_bridges(self, call_id: str) -> None:
        """``call_id`` ended: forget its bridges. Nothing is stopped: its conference
        port goes with it."""
        for other in self._bridged.get(call_id, set()):
            if other in self._bridged:
                self._bridged[other].discard(call_id)
        if call_id in self._bridged:
            self._bridged[call_id].clear()

    def end_supervisions(self, call_id: str) -> Rewire | None:
        """End every supervision ``call_id`` is one of the three legs of; the
        connections between the remaining legs go with it. None when there was none."""
        ended = [s for s in self._supervisions.values() if call_id in s.legs()]
        if not ended:
            return None
        before = self.edges()
        for supervision in ended:
            del self._supervisions[supervision.supervisor]
        return self._rewire(before, touched=())

    # ------------------------------------------------------------------ bridges

    def check_bridge(self, a: str, b: str) -> None:
        """Raise unless ``a`` and ``b`` may be bridged (two distinct calls)."""
        self._known(a, b)
        if a == b:
            raise MediaGraphError("invalid_bridge", "cannot bridge a call with itself")

    def bridge(self, a: str, b: str) -> Rewire:
        """``a`` and ``b`` hear each other (on top of their other bridges)."""
        self.check_bridge(a, b)
        before = self.edges()
        self._bridged[a].add(b)
        self._bridged[b].add(a)
        return self._rewire(before, touched=(a, b))

    def unbridge(self, a: str, b: str) -> Rewire:
        """``a`` and ``b`` no longer hear each other; raises ``not_bridged``."""
        self._known(a, b)
        if b not in self._bridged[a]:
            raise MediaGraphError("not_bridged", "the calls are not bridged")
        before = self.edges()
        self._bridged[a].discard(b)
        self._bridged[b].discard(a)
        return self._rewire(before, touched=())

    def check_connect(self, a: str, b: str) -> None:
        """Raise unless ``a`` and ``b`` may be connected to each other only."""
        self._known(a, b)
        if a == b:
            raise MediaGraphError("invalid_bridge", "cannot connect a call with itself")

    def connect(self, a: str, b: str) -> Rewire:
        """``a`` and ``b`` hear each other and nobody else they were bridged to
        (the attended transfer's last step)."""
        self.check_connect(a, b)
        before = self.edges()
        for call in (a, b):
            for other in self._bridged[call]:
                if other in self._bridged:
                    self._bridged[other].discard(call)
            self._bridged[call].clear()
        self._bridged[a].add(b)
        self._bridged[b].add(a)
        return self._rewire(before, touched=(a, b))

    # ------------------------------------------------------------------ supervision

    def check_supervise(self, customer: str, supervisor: str) -> str:
        """Raise unless ``supervisor`` may supervise ``customer``'s bridge; return
        the agent's call (the one ``customer`` is bridged to)."""
        self._known(customer, supervisor)
        if customer == supervisor:
            raise MediaGraphError("invalid_bridge", "a call cannot supervise itself")
        if len(self._bridged[customer]) != 1:
            raise MediaGraphError(
                "invalid_state", "the supervised call must be bridged to exactly one other call"
            )
        (agent,) = self._bridged[customer]
        if self._bridged[supervisor] or supervisor == agent:
            raise MediaGraphError("invalid_state", "the supervisor's call is bridged to a call")
        current = self._supervisions.get(supervisor)
        if current is not None and current.customer != customer:
            raise MediaGraphError("invalid_state", "the supervisor's call supervises another call")
        if any(s.customer == supervisor for s in self._supervisions.values()):
            raise MediaGraphError("invalid_state", "the supervisor's call is itself supervised")
        return agent

    def supervise(self, customer: str, supervisor: str, mode: SuperviseMode) -> Rewire:
        """``supervisor`` joins ``customer``'s bridge as ``mode``; again to change the mode."""
        agent = self.check_supervise(customer, supervisor)
        before = self.edges()
        self._supervisions[supervisor] = Supervision(
            supervisor=supervisor, customer=customer, agent=agent, mode=mode
        )
        return self._rewire(before, touched=(customer, agent, supervisor))

    # ------------------------------------------------------------------ hold

    def hold(self, call_id: str) -> frozenset[Edge]:
        """``call_id`` is put on hold: it hears nobody and nobody hears it. Its
        connections stay booked; returns those to stop now."""
        self._known(call_id)
        self._held.add(call_id)
        return frozenset(self.edges_of(call_id))

    def resume(self, call_id: str) -> None:
        """``call_id`` is taken off hold; its connections are made again once its
        audio is back (:meth:`edges_of`)."""
        self._known(call_id)
        self._held.discard(call_id)

    # ------------------------------------------------------------------ helpers

    def _known(self, *calls: str) -> None:
        for call in calls:
            if call not in self._bridged:
                raise MediaGraphError("unknown_call", f"no call {call}")

    def _rewire(self, before: set[Edge], *, touched: Iterable[str]) -> Rewire:
        """Stop the connections no longer wanted; make the new ones and every one
        of a ``touched`` call (its port may be new)."""
        after = self.edges()
        touched = set(touched)
        return Rewire(
            stop=frozenset(before - after),
            start=frozenset(
                (src, dst)
                for src, dst in after
                if (src, dst) not in before or src in touched or dst in touched
            ),
        )
