"""A lab agent phone: one pjsua2 process registering a single extension.

Run as ``python -m lab.phone --config CONFIG.json``. The process registers its extension
on the lab PBX with digest authentication, then per its ``mode``

- ``answer``: rings, answers after ``answer_delay`` seconds, plays its own tone into the
  call and records what it hears to ``<record_dir>/<n>-<call-id>.wav``;
- ``never``: rings until the caller gives up;
- ``reject``: answers every call with ``reject_code`` (default 603).

Unless it rejects, it honours an auto-answer request as desk phones with intercom
allowed do: an INVITE with ``Call-Info: <...>;answer-after=N`` is answered after N
seconds whatever the mode (``incoming`` then says ``auto_answer``).

Whatever the mode, it follows a REFER (blind transfer) as a desk phone does: it accepts
it and calls the target, and that call plays the tone and is recorded like any other.

It writes one JSON object per line on stdout for every event (``ready``, ``registered``,
``unregistered``, ``incoming``, ``ringing``, ``answered``, ``media``, ``media_state``,
``dtmf``, ``transfer_request``, ``ended``, ``outgoing``, ``progress``, ``error``) and reads
commands as JSON lines on stdin::

    {"cmd": "call", "token": "t1", "to": "sip:+49301991020301@127.0.0.1:5060"}
    {"cmd": "hangup", "token": "t1"}          (or "call_id": "<SIP Call-ID>")
    {"cmd": "dtmf", "token": "t1", "digits": "12#"}   (or "call_id"; RFC 4733)
    {"cmd": "register"}                        (register again now)
    {"cmd": "quit"}

A REFER received on a call gives ``transfer_request`` (``call_id`` of that call, ``to``
the target, ``token`` of the new call, ``x1``, ``x2``...), then the new call's
``outgoing``, ``progress``, ``answered``... under that token.

The lab runner (``lab.runner``) owns this protocol; nothing else should depend on it.

pjsua2 rules followed here, because breaking them crashes or hangs the process:
every pj object is created, used and deleted on the main thread (``threadCnt = 0``,
``mainThreadOnly = True``, a loop around ``libHandleEvents``); callbacks only record
plain values; ``Call`` objects are deleted after their callback has returned, never
inside it; recorders are deleted before the call so the WAV header is finalised. The
``Call`` handed to pjsua2 for a transfer (``prm.newCall``) is created in
``onCallTransferRequest`` and referenced from its slot like any call: pjsua2 does not own
it, and without it the new call would be driven through the old ``Call`` object.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pjsua2 as pj  # type: ignore[import-untyped]

__all__ = ["main"]

# pjsua2-python 2.15.1 is built with PJSUA_MAX_CALLS = 4.
_MAX_CALLS = 4
# Codecs the phones offer and accept (0 disables the others).
_CODEC_PRIORITY = {"PCMU": 255, "PCMA": 254}
_MEDIA_STATES = {
    pj.PJSUA_CALL_MEDIA_NONE: "none",
    pj.PJSUA_CALL_MEDIA_ACTIVE: "active",
    pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "local_hold",
    pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "remote_hold",
    pj.PJSUA_CALL_MEDIA_ERROR: "error",
}


_events: Any = sys.stdout


def _claim_stdout() -> None:
    """Keep fd 1 for events only: pjlib prints to it before logging is configured."""
    global _events
    _events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)


def _emit(event: str, **fields: Any) -> None:
    """Write one event line; flushed at once because the runner waits on it."""
    fields["event"] = event
    fields["at"] = time.time()
    _events.write(json.dumps(fields) + "\n")
    _events.flush()


@dataclass
class _Settings:
    extension: str
    password: str
    pbx_host: str
    pbx_port: int
    domain: str
    record_dir: Path
    tone_wav: Path
    mode: str = "answer"
    answer_delay: float = 0.2
    reject_code: int = 603
    rtp_port: int = 0
    rtp_port_range: int = 0
    log_level: int = 1
    display_name: str = ""

    @classmethod
    def load(cls, path: Path) -> _Settings:
        raw = json.loads(path.read_text())
        return cls(
            extension=str(raw["extension"]),
            password=str(raw["password"]),
            pbx_host=str(raw["pbx_host"]),
            pbx_port=int(raw["pbx_port"]),
            domain=str(raw["domain"]),
            record_dir=Path(raw["record_dir"]),
            tone_wav=Path(raw["tone_wav"]),
            mode=str(raw.get("mode", "answer")),
            answer_delay=float(raw.get("answer_delay", 0.2)),
            reject_code=int(raw.get("reject_code", 603)),
            rtp_port=int(raw.get("rtp_port", 0)),
            rtp_port_range=int(raw.get("rtp_port_range", 0)),
            log_level=int(raw.get("log_level", 1)),
            display_name=str(raw.get("display_name", "")),
        )


@dataclass
class _CallSlot:
    """What the loop knows about one call; pj objects stay on the main thread."""

    call: Any
    direction: str
    token: str | None = None
    call_id: str = ""
    answer_at: float | None = None
    recorder: Any = None
    recording: Path | None = None
    media_started: bool = False
    media_state: str = ""
    last_code: int = 0
    reported_progress: set[int] = field(default_factory=set)
    transfer: bool = False  # placed because of a REFER; "outgoing" not yet reported


_ANSWER_AFTER = re.compile(
    r"^(?:Call-Info)\s*:.*?;\s*answer-after\s*=\s*(\d+(?:\.\d+)?)",
    re.IGNORECASE | re.MULTILINE,
)


def auto_answer_after(message: str) -> float | None:
    """Seconds after which the INVITE ``message`` asks to be answered, or None."""
    match = _ANSWER_AFTER.search(message)
    return None if match is None else float(match[1])


def _wav_complete(path: Path) -> bool:
    """True once the RIFF header states the file's real length (written on close)."""
    try:
        with path.open("rb") as wav:
            head = wav.read(8)
            size = wav.seek(0, os.SEEK_END)
    except OSError:
        return False
    return (
        len(head) == 8 and head[:4] == b"RIFF" and int.from_bytes(head[4:8], "little") == size - 8
    )


class _Call(pj.Call):  # type: ignore[misc]
    def __init__(self, phone: _Phone, acc: Any, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(acc, call_id)
        self._phone = phone
        self.slot: _CallSlot | None = None

    def onCallState(self, prm: Any) -> None:
        self._phone.on_call_state(self)

    def onCallMediaState(self, prm: Any) -> None:
        self._phone.on_call_media(self)

    def onDtmfDigit(self, prm: Any) -> None:
        self._phone.on_dtmf(self, str(prm.digit))

    def onCallTransferRequest(self, prm: Any) -> None:
        try:
            self._phone.on_transfer_request(self, prm)
        except Exception as exc:  # never into C++: refuse the REFER instead
            prm.statusCode = 500
            _emit("error", what="transfer_request", info=repr(exc))


class _Account(pj.Account):  # type: ignore[misc]
    def __init__(self, phone: _Phone) -> None:
        super().__init__()
        self._phone = phone

    def onRegState(self, prm: Any) -> None:
        self._phone.on_reg_state(int(prm.code), int(prm.expiration))

    def onIncomingCall(self, prm: Any) -> None:
        self._phone.on_incoming(int(prm.callId), str(prm.rdata.wholeMsg))


class _Phone:
    def __init__(self, settings: _Settings) -> None:
        self.s = settings
        self.commands: queue.Queue[dict[str, Any]] = queue.Queue()
        self.slots: list[_CallSlot] = []
        self.doomed: list[_CallSlot] = []
        self.ending: list[tuple[_CallSlot, str, float]] = []
        self.quit = False
        self.registered = False
        self.recordings = 0
        self.transfers = 0
        self.ep: Any = None
        self.acc: Any = None
        self.player: Any = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        ep = pj.Endpoint()
        ep.libCreate()
        self.ep = ep
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = _MAX_CALLS
        cfg.uaConfig.userAgent = f"switchboard-lab-phone/{self.s.extension}"
        cfg.logConfig.level = self.s.log_level
        cfg.logConfig.consoleLevel = 0
        cfg.medConfig.noVad = True
        # No echo canceller: it would colour the recorded audio for nothing.
        cfg.medConfig.ecTailLen = 0
        ep.libInit(cfg)
        tcfg = pj.TransportConfig()
        tcfg.port = 0
        tcfg.boundAddress = self.s.pbx_host
        ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        ep.libStart()
        # A null device still clocks the conference bridge, so players and recorders run.
        ep.audDevManager().setNullDev()
        # G.711 only, as desk phones behind a PBX (and the lab's customers) speak. The
        # wheel would otherwise offer and accept speex first, a vocoder that renders
        # the tones at a level varying with its state, which blurs what a recording
        # heard.
        for codec in ep.codecEnum2():
            name = str(codec.codecId).split("/", 1)[0]
            ep.codecSetPriority(codec.codecId, _CODEC_PRIORITY.get(name, 0))

        player = pj.AudioMediaPlayer()
        player.createPlayer(str(self.s.tone_wav), 0)
        self.player = player

        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{self.s.extension}@{self.s.domain}"
        if self.s.display_name:
            acfg.idUri = f'"{self.s.display_name}" <{acfg.idUri}>'
        pbx = f"sip:{self.s.pbx_host}:{self.s.pbx_port}"
        acfg.regConfig.registrarUri = pbx
        acfg.regConfig.timeoutSec = 300
        acfg.regConfig.retryIntervalSec = 1
        acfg.regConfig.firstRetryIntervalSec = 1
        acfg.sipConfig.proxies.append(f"{pbx};lr")
        cred = pj.AuthCredInfo("digest", "*", self.s.extension, 0, self.s.password)
        acfg.sipConfig.authCreds.append(cred)
        acfg.mediaConfig.transportConfig.boundAddress = self.s.pbx_host
        if self.s.rtp_port:
            acfg.mediaConfig.transportConfig.port = self.s.rtp_port
            acfg.mediaConfig.transportConfig.portRange = self.s.rtp_port_range
            acfg.mediaConfig.transportConfig.randomizePort = True
        acfg.natConfig.sipOutboundUse = 0
        acfg.natConfig.contactRewriteUse = 0
        acfg.natConfig.viaRewriteUse = 0
        acfg.natConfig.sdpNatRewriteUse = 0
        acc = _Account(self)
        acc.create(acfg)
        self.acc = acc
        _emit("ready", extension=self.s.extension, pid=os.getpid())

    def run(self) -> None:
        while not self.quit:
            self.ep.libHandleEvents(20)
            self._reap()
            self._report_ended()
            self._drain_commands()
            self._answer_due()
        self._shutdown()

    def _shutdown(self) -> None:
        ep = self.ep
        ep.hangupAllCalls()
        # Let the BYEs leave before the library goes away.
        deadline = time.monotonic() + 1.0
        while self.slots and time.monotonic() < deadline:
            ep.libHandleEvents(20)
            self._reap()
        for slot in list(self.slots):
            self._finish(slot, reason="shutdown")
        self._reap()
        while self.ending:
            ep.libHandleEvents(20)
            self._report_ended()
        if self.acc is not None:
            if self.registered:
                # Unregister here, waiting for the answer on our own loop: libDestroy()
                # would otherwise busy-sleep up to a second for it.
                self.acc.setRegistration(False)
                deadline = time.monotonic() + 1.0
                while self.registered and time.monotonic() < deadline:
                    ep.libHandleEvents(20)
            self.acc.shutdown()
            del self.acc
        if self.player is not None:
            del self.player
        ep.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)
        del self.ep

    # --- pjsua2 callbacks (main thread, inside libHandleEvents) ----------------------

    def on_reg_state(self, code: int, expiration: int) -> None:
        self.registered = 200 <= code < 300 and expiration > 0
        if self.registered:
            _emit("registered", extension=self.s.extension, code=code, expires=expiration)
        else:
            _emit("unregistered", extension=self.s.extension, code=code)

    def on_incoming(self, pj_call_id: int, message: str) -> None:
        call = _Call(self, self.acc, pj_call_id)
        info = call.getInfo()
        slot = _CallSlot(call=call, direction="in", call_id=info.callIdString)
        call.slot = slot
        self.slots.append(slot)
        _emit(
            "incoming",
            extension=self.s.extension,
            call_id=slot.call_id,
            remote=info.remoteUri,
            auto_answer=auto_answer_after(message),
        )
        prm = pj.CallOpParam()
        if self.s.mode == "reject":
            prm.statusCode = self.s.reject_code
            call.answer(prm)
            return
        prm.statusCode = 180
        call.answer(prm)
        _emit("ringing", extension=self.s.extension, call_id=slot.call_id)
        after = auto_answer_after(message)
        if after is not None:
            slot.answer_at = time.monotonic() + after
        elif self.s.mode == "answer":
            slot.answer_at = time.monotonic() + self.s.answer_delay

    def on_call_state(self, call: Any) -> None:
        slot = call.slot
        if slot is None or slot not in self.slots:
            return
        info = call.getInfo()
        slot.call_id = info.callIdString
        slot.last_code = int(info.lastStatusCode)
        if slot.transfer:
            slot.transfer = False
            _emit("outgoing", token=slot.token, call_id=slot.call_id)
        if slot.direction == "out" and info.state in (
            pj.PJSIP_INV_STATE_EARLY,
            pj.PJSIP_INV_STATE_CONNECTING,
        ):
            code = int(info.lastStatusCode)
            if code not in slot.reported_progress:
                slot.reported_progress.add(code)
                _emit("progress", token=slot.token, call_id=slot.call_id, code=code)
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            _emit(
                "answered",
                extension=self.s.extension,
                direction=slot.direction,
                token=slot.token,
                call_id=slot.call_id,
            )
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._finish(slot, reason=str(info.lastReason))

    def on_call_media(self, call: Any) -> None:
        slot = call.slot
        if slot is None or slot not in self.slots:
            return
        info = call.getInfo()
        for index, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            state = _MEDIA_STATES.get(int(media.status), "none")
            if state != slot.media_state:
                slot.media_state = state
                _emit(
                    "media_state",
                    extension=self.s.extension,
                    call_id=slot.call_id,
                    token=slot.token,
                    state=state,
                )
            if media.audioConfSlot < 0:  # no conference port (media none or failed)
                break
            audio = call.getAudioMedia(index)
            if not slot.media_started:
                self.recordings += 1
                path = self.s.record_dir / f"{self.s.extension}-{self.recordings:03d}.wav"
                recorder = pj.AudioMediaRecorder()
                recorder.createRecorder(str(path))
                slot.recorder = recorder
                slot.recording = path
            # After a hold/resume pjsua may have rebuilt the stream on a new
            # conference port: connect again (harmless if still connected). On
            # hold too: the recording then holds the silence the phone hears.
            audio.startTransmit(slot.recorder)
            self.player.startTransmit(audio)
            if not slot.media_started:
                slot.media_started = True
                _emit(
                    "media",
                    extension=self.s.extension,
                    call_id=slot.call_id,
                    token=slot.token,
                    recording=str(slot.recording),
                )
            break

    def on_dtmf(self, call: Any, digit: str) -> None:
        slot = call.slot
        if slot is None or slot not in self.slots:
            return
        _emit(
            "dtmf", extension=self.s.extension, call_id=slot.call_id, token=slot.token, digit=digit
        )

    def on_transfer_request(self, call: Any, prm: Any) -> None:
        """A REFER: accept it and hand pjsua2 our own Call for the new call."""
        slot = call.slot
        if slot is None or slot not in self.slots or len(self.slots) >= _MAX_CALLS:
            prm.statusCode = 603
            _emit("error", what="transfer_request", info="no call slot for the transfer")
            return
        self.transfers += 1
        new_call = _Call(self, self.acc)
        new_slot = _CallSlot(call=new_call, direction="out", token=f"x{self.transfers}")
        new_slot.transfer = True
        new_call.slot = new_slot
        # Referenced from the slot until DISCONNECTED, like every call: pjsua2
        # keeps only a pointer to it.
        self.slots.append(new_slot)
        prm.newCall = new_call
        _emit(
            "transfer_request",
            extension=self.s.extension,
            call_id=slot.call_id,
            to=str(prm.dstUri),
            token=new_slot.token,
        )

    # --- loop-side work ---------------------------------------------------------------

    def _finish(self, slot: _CallSlot, *, reason: str) -> None:
        if slot not in self.slots:
            return
        self.slots.remove(slot)
        if slot.recorder is not None:
            # Deleting the recorder closes the WAV and writes its final header, but
            # pjmedia 2.15 removes conference ports asynchronously (on the bridge's
            # clock): the file is complete only some milliseconds later.
            del slot.recorder
            slot.recorder = None
        # The Call is still inside its own callback here: delete it after it returns.
        self.doomed.append(slot)
        self.ending.append((slot, reason, time.monotonic() + 2.0))

    def _report_ended(self) -> None:
        """Emit ``ended`` for calls whose recording is complete (or given up on)."""
        still = []
        now = time.monotonic()
        for slot, reason, deadline in self.ending:
            if slot.recording is not None and not _wav_complete(slot.recording) and now < deadline:
                still.append((slot, reason, deadline))
                continue
            _emit(
                "ended",
                extension=self.s.extension,
                direction=slot.direction,
                token=slot.token,
                call_id=slot.call_id,
                code=slot.last_code,
                reason=reason,
                recording=str(slot.recording) if slot.recording else None,
            )
        self.ending = still

    def _reap(self) -> None:
        while self.doomed:
            slot = self.doomed.pop()
            del slot.call

    def _answer_due(self) -> None:
        now = time.monotonic()
        for slot in list(self.slots):
            if slot.answer_at is not None and now >= slot.answer_at:
                slot.answer_at = None
                prm = pj.CallOpParam()
                prm.statusCode = 200
                try:
                    slot.call.answer(prm)
                except pj.Error as exc:  # the caller may have cancelled meanwhile
                    _emit("error", call_id=slot.call_id, what="answer", info=exc.info())

    def _drain_commands(self) -> None:
        while True:
            try:
                cmd = self.commands.get_nowait()
            except queue.Empty:
                return
            try:
                self._command(cmd)
            except pj.Error as exc:
                _emit("error", token=cmd.get("token"), what=cmd.get("cmd"), info=exc.info())

    def _command(self, cmd: dict[str, Any]) -> None:
        name = cmd.get("cmd")
        if name == "quit":
            self.quit = True
        elif name == "call":
            call = _Call(self, self.acc)
            slot = _CallSlot(call=call, direction="out", token=str(cmd["token"]))
            # Callbacks raised on this thread run *inside* makeCall() (only other threads'
            # are queued for libHandleEvents), so the slot must be known before it.
            call.slot = slot
            self.slots.append(slot)
            try:
                call.makeCall(str(cmd["to"]), pj.CallOpParam(True))
            except pj.Error:
                self.slots.remove(slot)
                self.doomed.append(slot)
                raise
            if slot in self.slots:
                slot.call_id = call.getInfo().callIdString
            _emit("outgoing", token=slot.token, call_id=slot.call_id)
        elif name == "register":
            self.acc.setRegistration(True)
        elif name == "dtmf":
            slots = self._match(cmd)
            if not slots:  # no token in the event: it would mark that call failed
                _emit(
                    "error", what="dtmf", info=f"no call {cmd.get('token') or cmd.get('call_id')}"
                )
            for slot in slots:
                slot.call.dialDtmf(str(cmd["digits"]))
        elif name == "hangup":
            for slot in self._match(cmd):
                slot.call.hangup(pj.CallOpParam())
        else:
            _emit("error", what="command", info=f"unknown command {name!r}")

    def _match(self, cmd: dict[str, Any]) -> list[_CallSlot]:
        """The live calls a command names by ``token`` or ``call_id``."""
        token, call_id = cmd.get("token"), cmd.get("call_id")
        return [
            slot
            for slot in self.slots
            if (token is not None and slot.token == token)
            or (call_id is not None and slot.call_id == call_id)
        ]


def _read_stdin(commands: queue.Queue[dict[str, Any]]) -> None:
    """Feed stdin lines to the loop; end of input means the runner is gone."""
    for line in sys.stdin:
        try:
            command = json.loads(line)
        except ValueError:
            continue
        if isinstance(command, dict):
            commands.put(command)
    commands.put({"cmd": "quit"})


def main(argv: list[str] | None = None) -> int:
    """Run one lab phone until stdin closes or a ``quit`` command arrives."""
    parser = argparse.ArgumentParser(prog="python -m lab.phone")
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    _claim_stdout()
    phone = _Phone(_Settings.load(args.config))
    reader = threading.Thread(target=_read_stdin, args=(phone.commands,), name="stdin", daemon=True)
    reader.start()
    phone.start()
    phone.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
