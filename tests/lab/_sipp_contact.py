"""A SIPp UAS registered as one contact of a line, to see on the wire what reaches it.

The test registers the SIPp socket on Kamailio with a digest-authenticated REGISTER of
its own (:func:`register`), then reads every message SIPp received from its message
trace (:meth:`SippContact.received`). Scenarios: ``ring`` (rings until CANCELed),
``redirect`` (answers ``302`` with a Contact of the test's choosing) and ``reinvite``
(answers, then puts the call on hold with a re-INVITE and waits for the BYE).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lab import _ports, _proc, _sip
from lab.runner import Lab

Kind = Literal["ring", "redirect", "reinvite"]

# What a scenario keeps of the INVITE (SIPp refuses a variable used only once).
_CAPTURES = {
    "invite_cseq": '<ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" check_it="true"'
    ' assign_to="invite_cseq"/>',
    "remote_from": '<ereg regexp=".*" search_in="hdr" header="From:" check_it="true"'
    ' assign_to="remote_from"/>',
    "local_to": '<ereg regexp=".*" search_in="hdr" header="To:" check_it="true"'
    ' assign_to="local_to"/>',
    "peer_contact": '<ereg regexp="sip:[^&gt; ]*" search_in="hdr" header="Contact:"'
    ' check_it="true" assign_to="peer_contact"/>',
}


def _invite(*captures: str) -> str:
    actions = "".join(f"      {_CAPTURES[name]}\n" for name in captures)
    return f'  <recv request="INVITE">\n    <action>\n{actions}    </action>\n  </recv>\n'


_RING = (
    r"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="lab contact that rings until cancelled">
"""
    + _invite("invite_cseq", "local_to")
    + r"""  <send>
    <![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
To: [$local_to];tag=[pid]c[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:contact@[local_ip]:[local_port]>
Content-Length: 0
]]>
  </send>
  <recv request="CANCEL"/>
  <send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
To: [$local_to];tag=[pid]c[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]>
  </send>
  <send>
    <![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
To: [$local_to];tag=[pid]c[call_number]
[last_Call-ID:]
CSeq: [$invite_cseq] INVITE
Content-Length: 0
]]>
  </send>
  <recv request="ACK"/>
</scenario>
"""
)

_REDIRECT = (
    r"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="lab contact that redirects">
"""
    + _invite("local_to")
    + r"""  <send>
    <![CDATA[
SIP/2.0 302 Moved Temporarily
[last_Via:]
[last_From:]
To: [$local_to];tag=[pid]c[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <@@TARGET@@>
Content-Length: 0
]]>
  </send>
  <recv request="ACK"/>
</scenario>
"""
)

_SDP = """v=0
o=contact 1 @@VERSION@@ IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 8
a=rtpmap:8 PCMA/8000
a=@@DIRECTION@@"""

_REINVITE = (
    r"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="lab contact that answers, then holds">
"""
    + _invite("remote_from", "local_to", "peer_contact")
    + r"""  <send retrans="500">
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
To: [$local_to];tag=[pid]c[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:contact@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

"""
    + _SDP.replace("@@VERSION@@", "1").replace("@@DIRECTION@@", "sendrecv")
    + r"""
]]>
  </send>
  <recv request="ACK"/>
  <pause milliseconds="300"/>
  <send retrans="500">
    <![CDATA[
INVITE [$peer_contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: [$local_to];tag=[pid]c[call_number]
To: [$remote_from]
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:contact@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

"""
    + _SDP.replace("@@VERSION@@", "2").replace("@@DIRECTION@@", "sendonly")
    + r"""
]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
  <send>
    <![CDATA[
ACK [$peer_contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: [$local_to];tag=[pid]c[call_number]
To: [$remote_from][peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
]]>
  </send>
  <recv request="BYE"/>
  <send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]>
  </send>
</scenario>
"""
)

_SCENARIOS: dict[Kind, str] = {"ring": _RING, "redirect": _REDIRECT, "reinvite": _REINVITE}
_BLOCK = re.compile(r"^-{20,}.*$", re.MULTILINE)


@dataclass
class SippContact:
    """One SIPp UAS on ``port``; ``uri`` is what to register as a contact."""

    proc: asyncio.subprocess.Process
    port: int
    uri: str
    trace: Path

    def received(self, method: str | None = None) -> list[str]:
        """The messages SIPp received (requests of ``method`` only, if given)."""
        try:
            text = self.trace.read_text(errors="replace")
        except FileNotFoundError:
            return []
        messages = []
        for block in _BLOCK.split(text):
            head, _, message = block.partition("\n\n")
            if "message received" not in head:
                continue
            message = message.strip()
            if method is None or message.startswith(f"{method} "):
                messages.append(message)
        return messages

    async def wait_received(self, method: str, count: int = 1, *, timeout: float = 5) -> list[str]:
        """Wait until SIPp has traced ``count`` requests of ``method``; return them all.

        The trace is a file SIPp appends to: it is read again every 20 ms.
        """
        async with asyncio.timeout(timeout):
            while True:
                messages = self.received(method)
                if len(messages) >= count:
                    return messages
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        await _proc.kill_group(self.proc, grace=0.0, sig=signal.SIGKILL)


def header(message: str, name: str) -> str | None:
    """The first value of header ``name`` in ``message`` (text as traced)."""
    match = re.search(rf"^{re.escape(name)}\s*:\s*(.*?)\s*$", message, re.MULTILINE | re.I)
    return match[1] if match else None


async def start_contact(
    lab: Lab, name: str, kind: Kind, *, redirect_to: str | None = None
) -> SippContact:
    """Start a SIPp UAS playing ``kind`` (``redirect_to``: the 302's Contact URI)."""
    if (kind == "redirect") != (redirect_to is not None):
        raise ValueError("redirect_to goes with kind='redirect' only")
    scenario = lab.run_dir / f"contact-{name}.xml"
    scenario.write_text(_SCENARIOS[kind].replace("@@TARGET@@", redirect_to or ""))
    port = _ports.free_port(lab.host)
    trace = lab.run_dir / f"contact-{name}-messages.log"
    argv = [
        "sipp",
        "-sf", str(scenario),
        "-i", lab.host,
        "-p", str(port),
        "-bind_local",
        "-mi", lab.host,
        "-mp", str(_ports.free_port(lab.host)),
        "-cp", str(_ports.free_port(lab.host)),
        "-nostdin",
        "-aa",
        "-trace_msg", "-message_file", str(trace),
        "-trace_err", "-error_file", str(lab.run_dir / f"contact-{name}-errors.log"),
    ]  # fmt: skip
    proc = await _proc.spawn(
        argv,
        log_path=lab.run_dir / f"contact-{name}.log",
        stdout=asyncio.subprocess.DEVNULL,
        cwd=lab.run_dir,
    )
    contact = SippContact(proc, port, f"sip:{name}@{lab.host}:{port}", trace)
    try:
        await _sip.wait_answering(lab.host, port, timeout=5)
    except BaseException:
        await contact.stop()
        raise
    return contact


class Responses(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.queue.put_nowait(data.decode(errors="replace"))


async def register(
    lab: Lab, extension: str, contact: str, *, expires: int = 300, timeout: float = 5.0
) -> int:
    """REGISTER ``contact`` for ``extension`` on the lab's Kamailio, answering its digest
    challenge with the extension's password; returns the final status (200 if bound)."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        Responses, local_addr=(lab.host, 0), remote_addr=(lab.pbx_host, lab.pbx_port)
    )
    try:
        local = int(transport.get_extra_info("sockname")[1])
        uri = f"sip:{lab.pbx_host}:{lab.pbx_port}"
        call_id = secrets.token_hex(8)
        tag = secrets.token_hex(4)

        def request(cseq: int, authorization: str | None) -> bytes:
            lines = [
                f"REGISTER {uri} SIP/2.0",
                f"Via: SIP/2.0/UDP {lab.host}:{local};branch=z9hG4bK{secrets.token_hex(8)};rport",
                "Max-Forwards: 70",
                f"From: <sip:{extension}@{lab.domain}>;tag={tag}",
                f"To: <sip:{extension}@{lab.domain}>",
                f"Call-ID: {call_id}@test",
                f"CSeq: {cseq} REGISTER",
                f"Contact: <{contact}>;expires={expires}",
            ]
            if authorization is not None:
                lines.append(f"Authorization: {authorization}")
            return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()

        async with asyncio.timeout(timeout):
            transport.sendto(request(1, None))
            answer = await _final(protocol)
            challenge = header(answer, "WWW-Authenticate")
            if not answer.startswith("SIP/2.0 401") or challenge is None:
                return int(answer.split(" ", 2)[1])
            fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
            password = lab.extensions[extension]

            def md5(text: str) -> str:
                return hashlib.md5(text.encode()).hexdigest()

            ha1 = md5(f"{extension}:{fields['realm']}:{password}")
            ha2 = md5(f"REGISTER:{uri}")
            digest = md5(f"{ha1}:{fields['nonce']}:{ha2}")
            authorization = (
                f'Digest username="{extension}", realm="{fields["realm"]}", '
                f'nonce="{fields["nonce"]}", uri="{uri}", response="{digest}", algorithm=MD5'
            )
            transport.sendto(request(2, authorization))
            return int((await _final(protocol)).split(" ", 2)[1])
    finally:
        transport.close()


async def _final(protocol: Responses) -> str:
    while True:
        message = await protocol.queue.get()
        if message.startswith("SIP/2.0 ") and not message.startswith("SIP/2.0 1"):
            return message
