"""``python -m sip.worker``: one SIP worker process.

Reads command frames on stdin, writes event frames on stdout, logs on stderr.
Two threads:

* the *pj thread* (this process's main thread) owns the pjsua2 endpoint: it
  loops on ``libHandleEvents`` and, between iterations, drains the command
  queue; it is also the only writer of stdout. It waits in ``libHandleEvents``
  as long as nothing is due (:meth:`sip._engine.Engine.wait_ms`: seconds when
  idle), so that an idle worker costs next to nothing;
* the *reader thread* only reads and decodes frames from stdin, puts them on
  the queue and wakes the pj thread (:mod:`sip._wake`: a keep-alive to the
  worker's own SIP socket, which ends the wait at once). It never calls pjsua2.

Before anything else, file descriptor 1 is moved: the protocol gets a private
duplicate and fd 1 becomes a copy of stderr, because pjsip prints to the
console during ``libCreate`` (before its log configuration applies) and any C
library may ``printf``; a stray byte on the protocol pipe would desynchronise
the framing.

Exit codes: 0 after ``shutdown`` or when stdin closes (the daemon is gone),
2 on a fatal protocol error, 3 if configure fails.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from typing import TYPE_CHECKING, BinaryIO

from sip import protocol as p
from sip.exceptions import ProtocolError

if TYPE_CHECKING:
    from sip._engine import Engine

_EOF = object()


class _Output:
    """The protocol side of stdout; used from the pj thread only."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def __call__(self, event: p.Event) -> None:
        self._stream.write(p.encode(event))
        self._stream.flush()


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class _Wake:
    """Wakes the pj thread once its engine can (after configure); until then the
    pj thread polls every few milliseconds."""

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def __call__(self) -> None:
        engine = self.engine
        if engine is not None:
            engine.wake()


def _reader(stream: BinaryIO, inbox: queue.SimpleQueue[object], wake: _Wake) -> None:
    """Decode frames into ``inbox``: commands, ProtocolErrors, then ``_EOF``;
    wake the pj thread after each."""
    try:
        while True:
            header = _read_exactly(stream, p.HEADER_SIZE)
            if header is None:
                break
            try:
                length = p.frame_length(header)
            except ProtocolError as exc:
                inbox.put(exc)  # framing is lost: the pj thread exits
                break
            payload = _read_exactly(stream, length)
            if payload is None:
                break
            try:
                inbox.put(p.decode_command(payload))
            except ProtocolError as exc:
                inbox.put(_Recoverable(exc))
            wake()
    finally:
        inbox.put(_EOF)
        wake()


class _Recoverable:
    """A bad frame whose length was fine: report it and carry on."""

    def __init__(self, error: ProtocolError) -> None:
        self.error = error


def _traceback() -> str:
    import traceback

    return traceback.format_exc()


def _take_stdout() -> BinaryIO:
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "wb", buffering=0)


def main() -> int:
    out_stream = _take_stdout()
    emit = _Output(out_stream)
    inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
    wake = _Wake()
    thread = threading.Thread(
        target=_reader, args=(sys.stdin.buffer, inbox, wake), name="sip-worker-stdin", daemon=True
    )
    thread.start()

    # Imported here so that ``python -m sip.worker`` fails loudly, but importing
    # the module (for tests or docs) does not need pjsua2.
    from sip._engine import Engine
    from sip._pj import EngineError, log

    engine = Engine(emit)
    code = 0
    try:
        while True:
            # A command already queued is handled at once; otherwise wait for
            # pjsip, a timer, or the reader's wake-up.
            engine.poll(0 if not inbox.empty() else engine.wait_ms())
            stop = False
            while True:
                try:
                    item = inbox.get_nowait()
                except queue.Empty:
                    break
                if item is _EOF:
                    log("info", "stdin closed: shutting down")
                    stop = True
                    break
                if isinstance(item, ProtocolError):
                    log("error", "fatal protocol error", error=str(item))
                    emit(p.Error(code="protocol_error", message=str(item)))
                    code, stop = 2, True
                    break
                if isinstance(item, _Recoverable):
                    emit(p.Error(code="protocol_error", message=str(item.error)))
                    continue
                assert isinstance(item, p.Command)
                if isinstance(item, p.Shutdown):
                    engine.shutdown()
                    emit(p.Ok(cmd_id=item.cmd_id))
                    stop = True
                    break
                if isinstance(item, p.Configure):
                    try:
                        port = engine.configure(item.settings)
                    except EngineError as exc:
                        emit(p.Error(cmd_id=item.cmd_id, code=exc.code, message=exc.message))
                        continue
                    except Exception as exc:  # pj.Error and friends: cannot run
                        emit(p.Error(cmd_id=item.cmd_id, code="configure_failed", message=str(exc)))
                        return 3
                    emit(p.Ok(cmd_id=item.cmd_id))
                    emit(p.Ready(pid=os.getpid(), sip_port=port))
                    wake.engine = engine
                    continue
                try:
                    reply = engine.handle(item)
                except Exception as exc:
                    # A bug, not a SIP failure: the command's effects are
                    # unknown, so say so; the daemon decides (it may restart us).
                    log("error", "command failed", command=item.TYPE, tb=repr(_traceback()))
                    reply = p.Error(
                        cmd_id=item.cmd_id,
                        call_id=getattr(item, "call_id", None),
                        code="internal_error",
                        message=repr(exc),
                    )
                emit(reply)
            if stop:
                break
    except BrokenPipeError:
        code = 0  # the daemon went away; nobody to tell
    finally:
        try:
            engine.shutdown()
        except Exception as exc:
            log("error", "shutdown failed", error=repr(exc))
    sys.stderr.flush()
    # Skip interpreter teardown: garbage collection of leftover SWIG proxies in
    # arbitrary order after libDestroy can crash; everything is released above.
    os._exit(code)


if __name__ == "__main__":
    main()
