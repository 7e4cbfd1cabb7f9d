"""A wideband phone for the tests: a pjsua2 process that speaks G.722 only.

Run as ``python -m tests.sip.g722_peer TONE.wav RECORD_DIR``. It listens for SIP on
127.0.0.1 (a free port), answers every call at once with G.722, plays ``TONE.wav``
(16 kHz) into it and records what it hears to ``RECORD_DIR/<n>.wav`` at 16 kHz. It
prints ``ready <port>`` once listening, ``recorded <path>`` once a call's recording
is complete, and exits when stdin closes. SIPp cannot do this: its RTP streams are
G.711 (8 kHz) files.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import pjsua2 as pj  # type: ignore[import-untyped]


class _Call(pj.Call):  # type: ignore[misc]
    def __init__(self, account: Any, call_id: int, events: list[tuple[str, Any]]) -> None:
        super().__init__(account, call_id)
        self.events = events

    def onCallState(self, prm: Any) -> None:
        if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.events.append(("ended", self))

    def onCallMediaState(self, prm: Any) -> None:
        self.events.append(("media", self))


class _Account(pj.Account):  # type: ignore[misc]
    def __init__(self, events: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.events = events

    def onIncomingCall(self, prm: Any) -> None:
        # pjsua2 hangs up a call no Call object was made for in this callback.
        self.events.append(("incoming", _Call(self, prm.callId, self.events)))


def _wav_complete(path: Path) -> bool:
    try:
        with path.open("rb") as wav:
            head = wav.read(8)
        return len(head) == 8 and int.from_bytes(head[4:8], "little") + 8 == path.stat().st_size
    except OSError:
        return False


def main() -> None:
    tone, record_dir = sys.argv[1], Path(sys.argv[2])
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.consoleLevel = 0
    cfg.logConfig.level = 1
    cfg.medConfig.clockRate = 16000
    cfg.medConfig.sndClockRate = 16000
    cfg.medConfig.noVad = True
    cfg.medConfig.ecTailLen = 0
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.boundAddress = "127.0.0.1"
    transport = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    ep.audDevManager().setNullDev()
    for codec in ep.codecEnum2():
        ep.codecSetPriority(codec.codecId, 255 if str(codec.codecId).startswith("G722") else 0)
    port = int(ep.transportGetInfo(transport).localName.rsplit(":", 1)[1])
    events: list[tuple[str, Any]] = []
    account = _Account(events)
    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:wideband@127.0.0.1:{port}"
    acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    account.create(acfg, True)
    player = pj.AudioMediaPlayer()
    player.createPlayer(tone, 0)
    calls: dict[int, tuple[Any, Any, Path]] = {}
    answered = 0
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    out.write(f"ready {port}\n")
    while not done.is_set():
        ep.libHandleEvents(20)
        pending, events[:] = list(events), []
        for kind, item in pending:
            if kind == "incoming":
                answered += 1
                calls[item.getId()] = (item, None, record_dir / f"{answered}.wav")
                prm = pj.CallOpParam()
                prm.statusCode = 200
                item.answer(prm)
            elif kind == "media":
                call, recorder, path = calls[item.getId()]
                info = item.getInfo()
                for medium in info.media:
                    if medium.type == pj.PJMEDIA_TYPE_AUDIO and medium.audioConfSlot >= 0:
                        audio = item.getAudioMedia(medium.index)
                        if recorder is None:
                            recorder = pj.AudioMediaRecorder()
                            recorder.createRecorder(str(path))
                            calls[item.getId()] = (call, recorder, path)
                        audio.startTransmit(recorder)
                        if path.name == "1.wav":  # the first call only
                            player.startTransmit(audio)
            elif kind == "ended":
                for key, (call, recorder, path) in list(calls.items()):
                    if call is item:
                        del calls[key]
                        del recorder  # writes the WAV header on a later clock tick
                        # The call is released after its callback returned (here).
                        events.append(("release", (call, path)))
            elif kind == "release":
                call, path = item
                if _wav_complete(path):
                    out.write(f"recorded {path}\n")
                else:
                    events.append(("release", (call, path)))
    ep.hangupAllCalls()
    os._exit(0)


if __name__ == "__main__":
    main()
