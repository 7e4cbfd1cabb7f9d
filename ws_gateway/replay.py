"""The replay buffer: recent events kept so a reconnecting client can resume.

Each entry is an event as the gateway streamed it: its stream sequence number,
its audience (see :mod:`ws_gateway.rights`) and its encoded message, so a
replay re-sends exactly the bytes the live stream sent.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

__all__ = ["ReplayBuffer", "StreamedEvent"]


@dataclass(frozen=True, slots=True)
class StreamedEvent:
    """One event of the gateway's stream."""

    seq: int
    audience: str | None
    text: str


class ReplayBuffer:
    """The last ``size`` streamed events (``size`` may be 0: no resume)."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        self.size = size
        self._items: deque[StreamedEvent] = deque(maxlen=size or None)
        self.last_seq = 0

    def __len__(self) -> int:
        return len(self._items)

    def append(self, item: StreamedEvent) -> None:
        """Keep ``item``; its ``seq`` must follow the previous one's."""
        if item.seq <= self.last_seq:
            raise ValueError(f"seq {item.seq} does not follow {self.last_seq}")
        self.last_seq = item.seq
        if self.size:
            self._items.append(item)

    def after(self, seq: int) -> list[StreamedEvent] | None:
        """The events after ``seq``, or ``None`` if some of them are gone.

        ``seq`` beyond the last one (a client of an earlier run) also gives
        ``None``: nothing here can be trusted to follow it.
        """
        if seq > self.last_seq or seq < 0:
            return None
        if seq == self.last_seq:
            return []
        first = self._items[0].seq if self._items else self.last_seq + 1
        if seq < first - 1:
            return None
        # Sequence numbers are contiguous, so the position is arithmetic.
        return list(itertools.islice(self._items, seq - first + 1, None))
