"""The HTTP server inside the daemon's loop.

:class:`HttpServer` runs ``uvicorn.Server.serve()`` as a named task of the
running loop. The daemon owns SIGTERM, SIGINT and SIGHUP: uvicorn installs no
signal handler of its own (:class:`_Server` disables ``capture_signals``), and
the app has no lifespan (the daemon's is the only one). The listening socket is
bound here, before uvicorn starts, so that a port in use is an ``OSError`` the
caller can report, not uvicorn's ``sys.exit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from types import TracebackType
from typing import Self

import structlog
import uvicorn
from starlette.types import ASGIApp

__all__ = ["HttpServer"]

log = structlog.get_logger(__name__)


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers (the daemon owns them)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking TCP socket on ``host:port``.

    Made with ``IPPROTO_TCP`` spelled out (``socket.create_server`` leaves the
    protocol 0): asyncio sets ``TCP_NODELAY`` only on accepted sockets whose
    protocol says TCP, and without it every small response waits for the
    peer's delayed ACK (about 40 ms on Linux).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class HttpServer:
    """``async with HttpServer(app, host=..., port=...) as server:`` serves ``app``.

    ``port=0`` takes any free port; :attr:`port` is the real one once started.
    Entering binds the socket (``OSError`` if it cannot: port in use, address
    not of this host) and returns once the server accepts connections, or raises
    ``TimeoutError`` after ``start_timeout`` seconds. Leaving (or :meth:`aclose`)
    stops accepting, lets requests in flight finish for up to
    ``shutdown_timeout`` seconds, and waits for the server's task.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str,
        port: int,
        start_timeout: float = 10.0,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self._app = app
        self.host = host
        self.port = port
        self._start_timeout = start_timeout
        self._shutdown_timeout = shutdown_timeout
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server (IPv6 hosts bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve; see the class. Cancellation stops the server again."""
        if self._task is not None:
            raise RuntimeError("HttpServer already started")
        sock = _listening_socket(self.host, self.port)
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=int(max(1, self._shutdown_timeout)),
        )
        server = _Server(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="http-server")
        try:
            async with asyncio.timeout(self._start_timeout):
                while not server.started:
                    if self._task.done():
                        # serve() ended before listening: its exception, if any.
                        self._task.result()
                        raise OSError(f"the HTTP server stopped while starting on {self.url}")
                    await asyncio.sleep(0.01)
        except BaseException:
            await self.aclose()
            raise
        log.debug("http.started", url=self.url)

    async def aclose(self) -> None:
        """Stop serving; idempotent. Cancelled, it cancels the server's task."""
        server, task, sock = self._server, self._task, self._socket
        self._server = self._task = self._socket = None
        if server is not None:
            server.should_exit = True
        try:
            if task is not None:
                try:
                    await task
                except SystemExit as exc:
                    # uvicorn exits on a start-up failure; it is not ours to exit.
                    log.error("http.server_failed", code=exc.code)
        finally:
            if sock is not None:
                sock.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
