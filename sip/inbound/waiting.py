"""The inbound calls waiting for an agent, oldest first."""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["WaitingCalls"]


class _Waiter(Protocol):
    @property
    def seq(self) -> int: ...


T = TypeVar("T", bound=_Waiter)


class WaitingCalls(Generic[T]):
    """Calls waiting for an agent, in arrival order (their ``seq``).

    :meth:`dispatch` guards the service's ``poke`` against re-entrance: a presence
    listener may poke again while an agent is being handed out; that poke is
    deferred and the dispatch loop runs once more.
    """

    def __init__(self) -> None:
        self._calls: list[T] = []
        self._dispatching = False
        self._again = False

    def join(self, call: T) -> None:
        """``call`` waits (once, whatever the number of joins)."""
        if call not in self._calls:
            bisect.insort(self._calls, call, key=lambda c: c.seq)

    def leave(self, call: T) -> None:
        """``call`` no longer waits (a no-op if it did not)."""
        with contextlib.suppress(ValueError):
            self._calls.remove(call)

    def __iter__(self) -> Iterator[T]:
        """The waiting calls oldest first, as they are now (leaving is allowed)."""
        return iter(list(self._calls))

    def __contains__(self, call: object) -> bool:
        return call in self._calls

    def begin(self) -> bool:
        """Start a dispatch round; False (and one more round asked for) if one is
        under way."""
        if self._dispatching:
            self._again = True
            return False
        self._dispatching = True
        return True

    def round_again(self) -> bool:
        """Whether another round was asked for during this one (and reset it)."""
        again, self._again = self._again, False
        return again

    def end(self) -> None:
        """The dispatch is over."""
        self._dispatching = False
