"""Password hashing: argon2id through argon2-cffi, off the event loop.

A hash costs tens of milliseconds of CPU and 64 MiB of memory by design, so it
runs in a worker thread; a cancelled caller does not stop the thread (the hash
finishes and its answer is dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .exceptions import InvalidPassword

__all__ = ["MAX_PASSWORD_LENGTH", "MIN_PASSWORD_LENGTH", "check_policy", "hash_password", "verify"]

MIN_PASSWORD_LENGTH = 8
"""Shorter passwords are refused when set."""

MAX_PASSWORD_LENGTH = 1024
"""Longer ones too: hashing megabytes on request would be a denial of service."""

_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    # Made once, with the same parameters as real hashes, so that checking a
    # password of an unknown user costs what checking a real one does.
    return _HASHER.hash("no user has this password")


def check_policy(password: str) -> None:
    """Raise :class:`InvalidPassword` unless ``password`` may be set."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidPassword(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidPassword(f"a password has at most {MAX_PASSWORD_LENGTH} characters")


async def hash_password(password: str) -> str:
    """The argon2id hash (PHC string) of ``password``, computed in a thread."""
    return await asyncio.to_thread(_HASHER.hash, password)


def _verify_sync(stored: str | None, password: str) -> tuple[bool, bool]:
    if stored is None or len(password) > MAX_PASSWORD_LENGTH:
        with contextlib.suppress(VerificationError):
            _HASHER.verify(_dummy_hash(), password[:MAX_PASSWORD_LENGTH])
        return False, False
    try:
        _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False, False
    return True, _HASHER.check_needs_rehash(stored)


async def verify(stored: str | None, password: str) -> tuple[bool, bool]:
    """Whether ``password`` matches the ``stored`` hash, and whether that hash
    should be made again with the current parameters.

    ``stored`` ``None`` (no password, or no such user) is checked against a dummy
    hash so that the answer takes as long as a real check, and is ``False``.
    """
    return await asyncio.to_thread(_verify_sync, stored, password)
