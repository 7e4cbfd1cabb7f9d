"""The baseline of ``bench/calls.py``: bridged, recorded conversations in bare pjsua2.

One process, one ``Endpoint`` on one thread (``threadCnt = 0``, ``mainThreadOnly``,
null audio device), one registered account, no Switchboard at all: no framed
protocol, no pool, no store, no bus. It does what a click-to-call does, the same
way the SIP worker does it: call the agent side, once it answers call the
customer, once both have audio bridge them and record the customer leg with the
agent leg mixed in. It is the floor Switchboard's figures are compared with.

Run as ``python bench/_bare_bridge.py '<json>'`` (see :class:`_Settings`). It talks
to the bench in plain lines, not Switchboard's protocol: stdin ``go`` (place the
calls), ``go <conv>`` (place that conversation only: a staggered burst),
``hangup`` (end them); stdout ``BARE <json>`` lines: ``ready`` once
registered, ``sent`` just before each ``makeCall`` (with ``time.time()``),
``bridged`` (with ``time.time()``), ``ended`` per leg, ``recorded`` per
conversation, ``done`` when all recordings are complete. It exits when stdin closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pjsua2 as pj

_POLL_MS = 10  # as the SIP worker: libHandleEvents(10) between command checks
_RECORDER_CLOSE_TIMEOUT = 2.0


@dataclass
class _Conversation:
    conv: str
    agent_number: str
    customer_number: str
    recording: str
    legs: dict[str, _Leg | None] = field(default_factory=dict)
    media: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)
    recorder: Any = None
    bridged: bool = False
    recorded: bool = False


@dataclass(frozen=True)
class _Settings:
    pbx_host: str
    pbx_port: int
    extension: str
    password: str
    rtp_port_start: int
    rtp_port_count: int
    conversations: list[dict[str, str]]


class _Leg(pj.Call):  # type: ignore[misc]
    """A call whose callbacks only copy plain values onto the loop's list."""

    def __init__(self, account: Any, conv: str, role: str, events: list[tuple[str, ...]]) -> None:
        super().__init__(account)
        self.conv = conv
        self.role = role
        self._events = events

    def onCallState(self, prm: Any) -> None:
        # No exception may cross into C++: pjsua2 would abort the process.
        try:
            info = self.getInfo()
            if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
                self._events.append(("answered", self.conv, self.role))
            elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self._events.append(
                    ("ended", self.conv, self.role, str(info.lastStatusCode), info.lastReason)
                )
        except Exception as exc:
            print(f"onCallState failed: {exc!r}", file=sys.stderr)

    def onCallMediaState(self, prm: Any) -> None:
        try:
            # Keep the CallInfo referenced while reading its media: the vector's
            # items point into it, and a temporary is freed at once (garbage).
            info = self.getInfo()
            for medium in info.media:
                if (
                    medium.type == pj.PJMEDIA_TYPE_AUDIO
                    and medium.status == pj.PJSUA_CALL_MEDIA_ACTIVE
                ):
                    self._events.append(("media", self.conv, self.role))
        except Exception as exc:
            print(f"onCallMediaState failed: {exc!r}", file=sys.stderr)

    def audio(self) -> Any:
        info = self.getInfo()  # referenced while its media are read, as above
        for medium in info.media:
            if medium.type == pj.PJMEDIA_TYPE_AUDIO and medium.status == (
                pj.PJSUA_CALL_MEDIA_ACTIVE
            ):
                return self.getAudioMedia(medium.index)
        return None


class _Account(pj.Account):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.registered = False

    def onRegState(self, prm: Any) -> None:
        try:
            self.registered = prm.code == 200 and self.getInfo().regIsActive
        except Exception as exc:
            print(f"onRegState failed: {exc!r}", file=sys.stderr)


def _wav_complete(path: Path) -> bool:
    # The recorder writes the RIFF size last, when the bridge finally removes it.
    try:
        with path.open("rb") as wav:
            head = wav.read(8)
        return len(head) == 8 and int.from_bytes(head[4:8], "little") + 8 == path.stat().st_size
    except OSError:
        return False


def main() -> None:
    raw = json.loads(sys.argv[1])
    settings = _Settings(**raw)
    # pjsip prints to fd 1 during libCreate, before the log config applies: keep a
    # private copy of stdout for our lines and send fd 1 to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def say(event: str, **data: object) -> None:
        out.write("BARE " + json.dumps({"ev": event, **data}) + "\n")

    commands: queue.SimpleQueue[str] = queue.SimpleQueue()

    def read_stdin() -> None:
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put("eof")

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.maxCalls = 4
    cfg.uaConfig.stunServer.clear()
    # No media thread: RTP is polled inside libHandleEvents (needs the ioqueue).
    cfg.medConfig.threadCnt = 0
    cfg.medConfig.hasIoqueue = True
    cfg.logConfig.consoleLevel = 0
    cfg.logConfig.level = 1
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    tcfg = pj.TransportConfig()
    tcfg.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()

    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{settings.extension}@{settings.pbx_host}"
    acfg.regConfig.registrarUri = f"sip:{settings.pbx_host}:{settings.pbx_port}"
    acfg.sipConfig.authCreds.append(
        pj.AuthCredInfo("digest", "*", settings.extension, 0, settings.password)
    )
    acfg.natConfig.iceEnabled = False
    acfg.natConfig.sipStunUse = pj.PJSUA_STUN_USE_DISABLED
    acfg.natConfig.mediaStunUse = pj.PJSUA_STUN_USE_DISABLED
    acfg.natConfig.contactRewriteUse = 0
    acfg.natConfig.viaRewriteUse = 0
    acfg.natConfig.sdpNatRewriteUse = 0
    acfg.natConfig.udpKaIntervalSec = 0
    acfg.mediaConfig.transportConfig.port = settings.rtp_port_start
    acfg.mediaConfig.transportConfig.portRange = settings.rtp_port_count
    acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    account = _Account()
    account.create(acfg)

    events: list[tuple[str, ...]] = []
    convs = {
        c["conv"]: _Conversation(c["conv"], c["agent_number"], c["customer_number"], c["recording"])
        for c in settings.conversations
    }
    uri = f"@{settings.pbx_host}:{settings.pbx_port}"
    ready_said = False
    closing_at: dict[str, float] = {}

    def dial(c: _Conversation, role: str) -> None:
        number = c.agent_number if role == "agent" else c.customer_number
        leg = _Leg(account, c.conv, role, events)
        c.legs[role] = leg
        say("sent", conv=c.conv, leg=role, number=number, at=time.time())
        leg.makeCall(f"sip:{number}{uri}", pj.CallOpParam(True))

    running = True
    while running:
        ep.libHandleEvents(_POLL_MS)
        if not ready_said and account.registered:
            ready_said = True
            say("ready", pid=os.getpid())
        # Calls are created and released here, after libHandleEvents has returned:
        # never inside a callback of the call itself.
        pending, events[:] = list(events), []
        for kind, conv, role, *rest in pending:
            c = convs[conv]
            if kind == "answered" and role == "agent" and "customer" not in c.legs:
                dial(c, "customer")
            elif kind == "media":
                c.media.add(role)
                if c.media == {"agent", "customer"} and not c.bridged:
                    a = c.legs["agent"].audio()  # type: ignore[union-attr]
                    b = c.legs["customer"].audio()  # type: ignore[union-attr]
                    a.startTransmit(b)
                    b.startTransmit(a)
                    c.recorder = pj.AudioMediaRecorder()
                    c.recorder.createRecorder(str(Path(c.recording).with_suffix(".part.wav")))
                    b.startTransmit(c.recorder)
                    a.startTransmit(c.recorder)
                    c.bridged = True
                    say("bridged", conv=conv, at=time.time())
            elif kind == "ended":
                say("ended", conv=conv, leg=role, code=int(rest[0]), reason=rest[1])
                c.ended.add(role)
                c.legs[role] = None  # released outside its own callback
                other = "customer" if role == "agent" else "agent"
                peer = c.legs.get(other)
                if peer is not None and other not in c.ended:
                    # Already disconnecting (hangupAllCalls) is the wanted outcome.
                    with contextlib.suppress(pj.Error):
                        peer.hangup(pj.CallOpParam())
                if c.ended >= set(c.legs) and c.recorder is not None:
                    # Dropping the recorder writes its header a clock tick later.
                    c.recorder = None
                    closing_at[conv] = time.monotonic()
        for conv, since in list(closing_at.items()):
            c = convs[conv]
            part = Path(str(Path(c.recording).with_suffix(".part.wav")))
            if _wav_complete(part) or time.monotonic() - since > _RECORDER_CLOSE_TIMEOUT:
                if part.exists():
                    os.replace(part, c.recording)
                del closing_at[conv]
                c.recorded = True
                say("recorded", conv=conv, path=c.recording)
                if all(x.recorded for x in convs.values()):
                    say("done")
        while True:
            try:
                command = commands.get_nowait()
            except queue.Empty:
                break
            if command == "go":
                for c in convs.values():
                    dial(c, "agent")
            elif command.startswith("go "):
                dial(convs[command[3:]], "agent")
            elif command == "hangup":
                ep.hangupAllCalls()
            elif command == "eof":
                running = False
    ep.hangupAllCalls()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and any(
        leg is not None for c in convs.values() for leg in c.legs.values()
    ):
        ep.libHandleEvents(_POLL_MS)
    for c in convs.values():
        c.legs.clear()
        c.recorder = None
    account.shutdown()
    ep.libDestroy(pj.PJSUA_DESTROY_NO_RX_MSG)
    out.flush()
    # As the SIP worker: interpreter teardown would collect SWIG proxies after
    # libDestroy in no particular order.
    os._exit(0)


if __name__ == "__main__":
    main()
