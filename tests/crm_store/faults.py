"""Faults made for real: a private PostgreSQL cluster that a test may stop, and a
small filesystem that a test may fill.

The shared PostgreSQL server and the machine's disks are never touched: the cluster is
the test session's kind (:class:`tests._services.PrivatePostgres`: a temporary
directory, a free loopback port), one per test, and the filesystem is a tmpfs mounted
on a temporary directory (which needs root; the fixtures skip with the reason
otherwise).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests._services import PrivatePostgres

__all__ = ["PrivatePostgres", "SmallFilesystem", "running_private_postgres"]


@contextlib.contextmanager
def running_private_postgres() -> Iterator[PrivatePostgres]:
    """A started cluster of its own (database ``test``), removed with its data on exit."""
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()


class SmallFilesystem:
    """A tmpfs of ``size`` bytes mounted on ``path`` (created), unmounted by
    :meth:`close`. :meth:`fill` takes every free byte with a filler file and
    :meth:`free` gives them back."""

    def __init__(self, path: Path, size: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.path = path
        self._filler = path / "filler"

    def fill(self) -> None:
        """Write until the filesystem says it is full (ENOSPC)."""
        with open(self._filler, "ab", buffering=0) as out:
            chunk = b"\0" * 4096
            while True:
                try:
                    out.write(chunk)
                except OSError as exc:
                    if exc.errno != 28:
                        raise
                    break
        # A filesystem can still take a few bytes less than a block.
        while True:
            try:
                with open(self._filler, "ab", buffering=0) as out:
                    out.write(b"\0")
            except OSError:
                return

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)

    def close(self) -> None:
        """Unmount; a filesystem still busy after 10 s (a file left open) is an error,
        not a mount left behind in silence."""
        deadline = time.monotonic() + 10
        while True:
            done = subprocess.run(["umount", str(self.path)], capture_output=True, timeout=30)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot unmount {self.path}: {done.stderr.decode().strip()}")
            time.sleep(0.1)
