"""Private PostgreSQL and Mosquitto servers for the tests.

A fresh machine runs no database and no broker, and a test that skips for want of
one hides what it checks. So the test session uses the servers named by
``SWITCHBOARD_TEST_PG_URL`` and ``SWITCHBOARD_TEST_MQTT_URL`` when they are set, and
otherwise starts its own: a PostgreSQL cluster and a Mosquitto broker on free loopback
ports, with their data in a temporary directory, stopped (and the directory removed)
at the end of the session. ``SWITCHBOARD_TEST_SERVICES=private`` forces private servers
even when the variables are set; ``make test`` runs that way, so CI always takes the
fresh-machine path.

:class:`PrivatePostgres` and :class:`PrivateMosquitto` are also what fault tests use
to take a server away mid-test: each has ``start()`` and ``stop()`` that can be called
again and again, and keeps its port and its data across a restart.

PostgreSQL refuses to run as root. When the tests run as root, the cluster is created
and run as the ``postgres`` system user (``runuser``), in a directory that user owns.
"""

from __future__ import annotations

import asyncio
import atexit
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from lab._ports import free_port

__all__ = [
    "HOST",
    "MQTT_URL_VARIABLE",
    "PG_URL_VARIABLE",
    "SERVICES_VARIABLE",
    "PrivateMosquitto",
    "PrivatePostgres",
    "ServiceError",
    "mqtt_address",
    "postgres_admin_dsn",
    "stop_session_services",
]

PG_URL_VARIABLE = "SWITCHBOARD_TEST_PG_URL"
MQTT_URL_VARIABLE = "SWITCHBOARD_TEST_MQTT_URL"
SERVICES_VARIABLE = "SWITCHBOARD_TEST_SERVICES"

HOST = "127.0.0.1"
START_TIMEOUT = 30.0


class ServiceError(RuntimeError):
    """A private server could not be set up, started or stopped; the message says why
    and, when the server wrote one, ends with the tail of its log."""


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --- PostgreSQL ------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    """The path of a PostgreSQL program: in Debian's versioned directory
    (``/usr/lib/postgresql/<version>/bin``, newest first), else on PATH. Debian's
    ``/usr/bin`` wrappers are avoided: they look for the system's clusters."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for directory in versions:
        if (directory / name).is_file():
            return str(directory / name)
    found = shutil.which(name)
    if found:
        return found
    raise ServiceError(f"{name} not found: install the Debian package postgresql")


class PrivatePostgres:
    """A PostgreSQL cluster of our own: trust authentication for user ``postgres`` on
    127.0.0.1 at a free port, a database named ``test``, data in ``directory``.

    ``start()`` and ``stop()`` block until the server answers or has exited, and may be
    called repeatedly; the port and the data stay across a restart. ``close()`` stops
    the server and removes the directory. Durability is traded for speed (no fsync):
    a stop loses nothing, a machine crash would, which tests do not care about.

    Run as root, the server runs as the ``postgres`` user, so ``directory`` (by
    default a new directory under the system's temporary directory) must be one that
    user can reach: not under pytest's ``tmp_path``, which only root may enter.
    """

    def __init__(self, directory: Path | None = None, *, port: int | None = None) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="sb-pg-")) if directory is None else directory
        self.port = free_port(HOST, tcp_too=True) if port is None else port
        self.data = self.directory / "data"
        self.logfile = self.directory / "postgres.log"
        self._as_user: str | None = "postgres" if os.geteuid() == 0 else None
        self._created = False

    @property
    def admin_dsn(self) -> str:
        """The libpq URL of the ``test`` database, as user ``postgres`` (no password)."""
        return f"postgresql://postgres@{HOST}:{self.port}/test"

    def url(self, database: str = "test") -> str:
        """The SQLAlchemy URL (asyncpg driver) of ``database`` on this server."""
        return f"postgresql+asyncpg://postgres@{HOST}:{self.port}/{database}"

    @property
    def running(self) -> bool:
        """Whether the server accepts TCP connections now."""
        return _answers(self.port)

    def _run(self, *argv: str, timeout: float = START_TIMEOUT) -> None:
        command = list(argv)
        if self._as_user is not None:
            command = ["runuser", "-u", self._as_user, "--", *command]
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise ServiceError(
                f"{Path(argv[0]).name} {argv[1]} exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}\n{_tail(self.logfile)}"
            )

    def _create(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._as_user is not None:
            # The cluster's owner must be able to enter and write the directory.
            shutil.chown(self.directory, user=self._as_user, group=self._as_user)
            self.directory.chmod(0o700)
        self._run(
            _pg_bin("initdb"),
            "--pgdata",
            str(self.data),
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{HOST}'\n"
                f"port = {self.port}\n"
                # Sockets in the data directory: the system's /var/run/postgresql may
                # not exist, and must never be shared with the system's server.
                f"unix_socket_directories = '{self.data}'\n"
                "max_connections = 200\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "log_min_messages = warning\n"
            )
        self._created = True
        self.start()
        self._run(
            _pg_bin("psql"),
            "--no-psqlrc",
            "--quiet",
            f"--host={HOST}",
            f"--port={self.port}",
            "--username=postgres",
            "--dbname=postgres",
            "--command=CREATE DATABASE test",
        )

    def start(self) -> None:
        """Create the cluster on first use, then start the server and return once it
        accepts connections. A no-op if it runs already."""
        if not self._created:
            self._create()
            return
        if self.running:
            return
        self._run(
            _pg_bin("pg_ctl"),
            "start",
            "--pgdata",
            str(self.data),
            "--log",
            str(self.logfile),
            "--wait",
            f"--timeout={int(START_TIMEOUT)}",
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.running:  # pg_ctl -w waited for the socket; TCP follows
            if time.monotonic() > deadline:
                raise ServiceError(f"PostgreSQL did not answer on {self.port}")
            time.sleep(0.05)

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m mode``: ``fast`` disconnects clients and
        shuts down cleanly, ``immediate`` is a crash) and return once it has exited.
        A no-op if it does not run."""
        if not self._created or not (self.data / "postmaster.pid").exists():
            return
        self._run(
            _pg_bin("pg_ctl"),
            "stop",
            "--pgdata",
            str(self.data),
            f"--mode={mode}",
            "--wait",
            f"--timeout={int(START_TIMEOUT)}",
        )

    async def astart(self) -> None:
        """:meth:`start` off the event loop's thread."""
        await asyncio.to_thread(self.start)

    async def astop(self, *, mode: str = "fast") -> None:
        """:meth:`stop` off the event loop's thread."""
        await asyncio.to_thread(self.stop, mode=mode)

    def close(self) -> None:
        """Stop the server and remove its directory. Idempotent."""
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


# --- Mosquitto -------------------------------------------------------------------------


class PrivateMosquitto:
    """A Mosquitto broker of our own on 127.0.0.1 at a free port, anonymous access,
    persistence in ``directory`` (so persistent sessions and their queued messages
    survive a restart).

    ``listener_options`` are ``mosquitto.conf`` lines that configure the listener, such
    as a TLS listener's ``cafile``, ``certfile``, ``keyfile`` and
    ``require_certificate``; without them the listener is plain MQTT.

    ``start()`` and ``stop()`` block until the broker answers or has exited, and may be
    called repeatedly; ``astart()``/``astop()`` do the same off the loop's thread.
    ``close()`` stops it and removes the directory.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        port: int | None = None,
        listener_options: Sequence[str] = (),
    ) -> None:
        self.directory = (
            Path(tempfile.mkdtemp(prefix="sb-mqtt-")) if directory is None else directory
        )
        self.port = free_port(HOST, tcp_too=True) if port is None else port
        self.url = f"mqtt://{HOST}:{self.port}"
        self.host = HOST
        self.logfile = self.directory / "mosquitto.log"
        self._listener_options = tuple(listener_options)
        self._conf = self.directory / "mosquitto.conf"
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _write_config(self) -> None:
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        self._conf.write_text(
            f"listener {self.port} {HOST}\n"
            + "".join(f"{line}\n" for line in self._listener_options)
            + "allow_anonymous true\n"
            # Run as root, mosquitto switches to the user named here (by default
            # "mosquitto", who could not write this directory).
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {self.directory / 'data'}/\n"
            f"log_dest file {self.logfile}\n"
            "log_type error\n"
            "log_type warning\n"
        )

    @property
    def running(self) -> bool:
        """Whether the broker accepts TCP connections now."""
        return _answers(self.port)

    def start(self) -> None:
        """Start the broker and return once it accepts connections; a no-op if it runs."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            if shutil.which("mosquitto") is None:
                raise ServiceError("mosquitto not found: install the Debian package mosquitto")
            if not self._conf.exists():
                self._write_config()
            self._proc = subprocess.Popen(
                ["mosquitto", "-c", str(self._conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + START_TIMEOUT
            while not self.running:
                if self._proc.poll() is not None:
                    raise ServiceError(
                        f"mosquitto exited with {self._proc.returncode}\n{_tail(self.logfile)}"
                    )
                if time.monotonic() > deadline:
                    raise ServiceError(f"mosquitto did not answer on {self.port}")
                time.sleep(0.02)  # polling the port: the state waited for

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its sessions) and return once it has exited;
        a no-op if it does not run."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None or proc.poll() is not None:
                return
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    async def astart(self) -> None:
        """:meth:`start` off the event loop's thread."""
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        """:meth:`stop` off the event loop's thread."""
        await asyncio.to_thread(self.stop)

    def close(self) -> None:
        """Stop the broker and remove its directory. Idempotent."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


# --- the session's servers ---------------------------------------------------------------

_lock = threading.Lock()
_postgres: PrivatePostgres | None = None
_mosquitto: PrivateMosquitto | None = None


def _forced_private() -> bool:
    return os.environ.get(SERVICES_VARIABLE, "").strip().lower() == "private"


def _configured(variable: str) -> str | None:
    value = os.environ.get(variable, "").strip()
    if not value or _forced_private():
        return None
    return value


_Server = TypeVar("_Server", PrivatePostgres, PrivateMosquitto)


def _started(server: _Server) -> _Server:
    """``server``, started; if it cannot start, it is closed (its directory removed)
    and the error raised."""
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


def postgres_admin_dsn() -> str:
    """The libpq URL of a database the tests may create databases from: the one in
    ``SWITCHBOARD_TEST_PG_URL``, or the ``test`` database of this session's private
    PostgreSQL, started on first call. Raises :class:`ServiceError` if it cannot start."""
    global _postgres
    configured = _configured(PG_URL_VARIABLE)
    if configured is not None:
        return configured
    with _lock:
        if _postgres is None:
            _postgres = _started(PrivatePostgres())
        return _postgres.admin_dsn


def mqtt_address() -> tuple[str, int]:
    """Host and port of a broker the tests may use under their own topic prefix: the
    one in ``SWITCHBOARD_TEST_MQTT_URL``, or this session's private Mosquitto, started
    on first call. Raises :class:`ServiceError` if it cannot start."""
    global _mosquitto
    configured = _configured(MQTT_URL_VARIABLE)
    if configured is not None:
        parts = urlsplit(configured)
        return parts.hostname or HOST, parts.port or 1883
    with _lock:
        if _mosquitto is None:
            _mosquitto = _started(PrivateMosquitto())
        return _mosquitto.host, _mosquitto.port


def stop_session_services() -> None:
    """Stop the session's private servers and remove their data. Idempotent."""
    global _postgres, _mosquitto
    with _lock:
        servers: list[PrivatePostgres | PrivateMosquitto | None] = [_postgres, _mosquitto]
        _postgres = _mosquitto = None
    for server in servers:
        if server is not None:
            server.close()


# A session that dies before its end hook still stops what it started.
atexit.register(stop_session_services)
