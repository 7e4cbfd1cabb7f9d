"""Faults made for real: a private PostgreSQL cluster that a test may stop, and a
small filesystem that a test may fill.

The shared PostgreSQL server and the machine's disks are never touched: the cluster
lives in a temporary directory on a free loopback port, run as the ``postgres`` user
(PostgreSQL refuses to run as root), and the filesystem is a tmpfs mounted on a
temporary directory (which needs root; the fixtures skip with the reason otherwise).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PrivatePostgres", "SmallFilesystem", "free_port", "running_private_postgres"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (Debian package postgresql)")
    return found[-1]


class PrivatePostgres:
    """A PostgreSQL cluster of our own: ``start()``, ``stop()`` (a fast shutdown, as
    an operator or a crash of the server would), ``start()`` again on the same port."""

    def __init__(self, base: Path) -> None:
        self.data = base / "pgdata"
        self.sockets = base / "pgsock"
        self.port = free_port()
        self.log = base / "postgres.log"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        for path in (self.data, self.sockets):
            path.mkdir(parents=True)
        for path in (base, self.data, self.sockets):
            if os.geteuid() == 0:
                shutil.chown(path, "postgres", "postgres")
        self.log.touch()
        if os.geteuid() == 0:
            shutil.chown(self.log, "postgres", "postgres")
        self._run(
            _postgres_bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._as_postgres, *argv], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """Start the server and return once it accepts connections (``pg_ctl -w``)."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self.sockets} -c fsync=off"
        )
        self._run(
            _postgres_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        """Stop the server, disconnecting every client (``-m fast``), and wait for it."""
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        """Stop the server if it runs (immediate mode: nothing left to keep)."""
        subprocess.run(
            [
                *self._as_postgres,
                _postgres_bin("pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            timeout=60,
        )


@contextlib.contextmanager
def running_private_postgres() -> Iterator[PrivatePostgres]:
    """A started :class:`PrivatePostgres`, removed with its data on exit."""
    # Not under pytest's tmp_path: its parents are closed to the postgres user.
    base = Path(tempfile.mkdtemp(prefix="sb-pg-"))
    base.chmod(0o755)
    try:
        server = PrivatePostgres(base / "cluster")
        try:
            server.start()
            yield server
        finally:
            server.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


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
