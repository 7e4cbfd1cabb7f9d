"""Time-ordered identifiers (UUID version 7, RFC 9562).

Python 3.11 has no ``uuid.uuid7``. Version 7 puts a millisecond Unix timestamp in the
high 48 bits, so new ids land at the right-hand edge of B-tree indexes instead of at
random pages: inserts stay cheap as tables grow, on SQLite and PostgreSQL alike. Ids are
generated here, in Python, so they are globally unique across daemons sharing one
database without a round trip.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid

__all__ = ["new_id", "new_id_ints", "new_ids"]

_VERSION = 0x7
_VARIANT = 0b10
_RAND_A_MAX = 0xFFF

_lock = threading.Lock()
_last = (0, 0)  # (milliseconds, rand_a) of the previous id


def new_id() -> uuid.UUID:
    """Return a new UUIDv7.

    Within one process ids are strictly increasing (RFC 9562 method 3: inside one
    millisecond the 12-bit ``rand_a`` field is a counter, and the clock is never
    allowed to go backwards), so sorting by id gives creation order. Across processes
    ids only sort by millisecond; order events by their timestamps, not their ids.
    """
    global _last
    with _lock:
        millis = time.time_ns() // 1_000_000
        last_millis, last_counter = _last
        if millis > last_millis:
            counter = secrets.randbits(11)  # start low: leaves room to count up
        elif last_counter < _RAND_A_MAX:
            millis, counter = last_millis, last_counter + 1
        else:
            millis, counter = last_millis + 1, secrets.randbits(11)
        _last = (millis, counter)
    value = (
        (millis & 0xFFFF_FFFF_FFFF) << 80
        | _VERSION << 76
        | counter << 64
        | _VARIANT << 62
        | secrets.randbits(62)
    )
    return uuid.UUID(int=value)


def new_ids(count: int) -> list[uuid.UUID]:
    """``count`` new UUIDv7s at once, in increasing order, as :func:`new_id` would
    make them one by one: for bulk writes such as imports."""
    return [uuid.UUID(int=value) for value in new_id_ints(count)]


def new_id_ints(count: int) -> list[int]:
    """:func:`new_ids` as integers (``uuid.UUID(int=...)``; ``f"{value:032x}"`` is
    the form SQLite stores): one lock and one draw of random bits for all."""
    global _last
    if count <= 0:
        return []
    with _lock:
        millis = time.time_ns() // 1_000_000
        last_millis, last_counter = _last
        if millis > last_millis:
            counter = secrets.randbits(11)
        else:
            millis, counter = last_millis, last_counter + 1
        stamps: list[int] = []
        for _ in range(count):
            if counter > _RAND_A_MAX:
                millis, counter = millis + 1, secrets.randbits(11)
            stamps.append((millis & 0xFFFF_FFFF_FFFF) << 80 | counter << 64)
            counter += 1
        _last = (millis, counter - 1)
    noise = secrets.token_bytes(8 * count)
    head = _VERSION << 76 | _VARIANT << 62
    mask = 0x3FFF_FFFF_FFFF_FFFF
    return [
        stamp | head | int.from_bytes(noise[8 * i : 8 * i + 8], "big") & mask
        for i, stamp in enumerate(stamps)
    ]
