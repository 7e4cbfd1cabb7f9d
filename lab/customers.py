"""Simulated customers behind the lab trunk: one SIPp UAS where the number is the script.

Number plan (``+49 30 199…`` has the shape of a Berlin number, so ``phonenumbers``
accepts every number of the plan as valid and the store and the dialer treat it like
any customer's; the lab never routes it off loopback)::

    +4930199 B RR TT [suffix]

    B   behaviour digit
    RR  seconds of ringing before the final response (two digits)
    TT  seconds of talk before the customer hangs up (two digits, 00 = until the other
        side sends BYE)
    suffix  any further digits, free: use them to make numbers unique

    B = 1  answer: 180, ring RR s, 200 with real G.711 A-law audio (a 1000 Hz tone with
           tremolo), talk TT s, then BYE (TT = 00: wait for the caller's BYE)
    B = 2  busy: 180, ring RR s, then 486 Busy Here
    B = 3  never answers: 180 and ring until the caller sends CANCEL (then 487)
    B = 4  rejects: 180, ring RR s, then 603 Decline
    B = 5  unreachable: 480 Temporarily Unavailable at once, no ringing

Any other trunk number (``+`` or ``00`` then digits) is answered after 1 s of ringing and
talks until the caller hangs up. The caller may CANCEL during any ringing and hang up
during any talk. A re-INVITE is answered 200 and restarts the talk timer.

Every INVITE the customers receive is logged (number, SIP Call-ID, arrival time from
SIPp's own clock) in ``customers-invites.log``; :meth:`Customers.invites` reads it.

Inbound calls (a customer calling an extension) are made by :meth:`Customers.call`, one
SIPp UAC per call, authenticating as the ``trunk`` subscriber. A caller offers
``telephone-event`` (RFC 4733 DTMF) and answers a re-INVITE (hold, resume) with 200,
which restarts its talk timer, as a called customer does.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import signal
import uuid
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from lab import _ports, _proc, _sip, audio

__all__ = [
    "Behaviour",
    "CustomerCall",
    "Customers",
    "CustomersError",
    "SeenInvite",
    "customer_number",
]

NUMBER_PREFIX = "+4930199"
CUSTOMER_TONE_HZ = 1000.0
TRUNK_USER = "trunk"
UAC_RTP_OFFSET = 200  # UAS media on the first ports of the lab block, UACs from here


class Behaviour(IntEnum):
    """The behaviour digit of a customer number."""

    ANSWER = 1
    BUSY = 2
    NEVER_ANSWER = 3
    REJECT = 4
    UNREACHABLE = 5


def customer_number(
    behaviour: Behaviour, *, ring: int = 0, talk: int = 0, suffix: str | int = ""
) -> str:
    """The E.164-style number that makes a customer behave as asked.

    ``ring`` and ``talk`` are whole seconds (0-99); ``suffix`` is free digits to make the
    number unique (an int is zero-padded to 2 digits).
    """
    if not (0 <= ring <= 99 and 0 <= talk <= 99):
        raise ValueError("ring and talk must be 0-99 seconds")
    tail = f"{suffix:02d}" if isinstance(suffix, int) else suffix
    if tail and not tail.isdigit():
        raise ValueError("suffix must be digits")
    return f"{NUMBER_PREFIX}{int(behaviour)}{ring:02d}{talk:02d}{tail}"


@dataclass(frozen=True, slots=True)
class SeenInvite:
    """One initial INVITE as the customers received it."""

    number: str
    call_id: str
    at: float  # epoch seconds, microsecond resolution, SIPp's clock


class CustomersError(RuntimeError):
    """SIPp could not be started, or a customer call could not be placed."""


class PortTaken(CustomersError):
    """A port chosen as free was taken by another program before SIPp bound it."""


_SEEN = re.compile(r"^SEEN (\S+) (\S+) \S+\t\S+\t(\d+\.\d+) ;")
_CANCELLED = re.compile(r"^CANCELLED (\S+) (\S+) \S+\t\S+\t(\d+\.\d+) ;")


# SIPp's [next_url] copies the whole Contact, display name included, into the request
# line ("BYE "Line 2001" <sip:...>"), which Kamailio refuses: in-dialog requests use
# the bare URI captured as peer_contact instead.
# SIPp rejects variables used only once, hence the shared ``whole`` capture. The log line
# ends with " ;" because SIPp writes the newline in a later, separate write.
def _sdp(version: int) -> str:
    """The customers' SDP body (PCMA and RFC 4733 telephone-event), at ``version``
    of its origin line: 1 in an offer or first answer, 2 in a re-INVITE's answer."""
    return (
        f"v=0\n"
        f"o=customer 1 {version} IN IP[local_ip_type] [local_ip]\n"
        "s=-\n"
        "c=IN IP[media_ip_type] [media_ip]\n"
        "t=0 0\n"
        "m=audio [rtpstream_audio_port] RTP/AVP 8 101\n"
        "a=rtpmap:8 PCMA/8000\n"
        "a=rtpmap:101 telephone-event/8000\n"
        "a=fmtp:101 0-15\n"
        "a=sendrecv"
    )


# The answer to a re-INVITE (hold, resume, a transfer's media change) in both
# directions' scenarios: 200 with the customer's SDP again, then back to talking.
# @@CONTACT@@: the Contact header line of the scenario.
_REINVITE = r"""  <label id="reinvite"/>
  <send retrans="500">
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
@@CONTACT@@
Content-Type: application/sdp
Content-Length: [len]

@@SDP2@@
]]>
  </send>
  <recv request="ACK" next="talk"/>
""".replace("@@SDP2@@", _sdp(2))

_UAS = r"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="lab customers">
  <!-- SIPp matches a global receive only when it lies *behind* the current step, and
       refuses optional receives not followed by a mandatory one: hence CANCEL and BYE
       here, before the INVITE. From any later step (a pause too) they jump. -->
  <recv request="CANCEL" optional="global" next="cancelled"/>
  <recv request="BYE" optional="global" next="remote_bye"/>
  <recv request="INVITE" rrs="true">
    <action>
      <assignstr assign_to="b" value="1"/>
      <assignstr assign_to="r" value="1"/>
      <assignstr assign_to="t" value="0"/>
      <ereg regexp="^INVITE sip:([^@;&gt; ]*)" search_in="msg" check_it="false"
            assign_to="whole,number"/>
      <ereg regexp="^INVITE sip:\+4930199([0-9])([0-9][0-9])([0-9][0-9])" search_in="msg"
            check_it="false" assign_to="whole,b,r,t"/>
      <ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" check_it="true" assign_to="invite_cseq"/>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="remote_from"/>
      <ereg regexp=".*" search_in="hdr" header="To:" check_it="true" assign_to="local_to"/>
      <ereg regexp="sip:[^&gt; ]*" search_in="hdr" header="Contact:" check_it="true"
            assign_to="peer_contact"/>
      <log message="SEEN [$number] [call_id] [timestamp] ;"/>
      <todouble assign_to="beh" variable="b"/>
      <todouble assign_to="ring_ms" variable="r"/>
      <multiply assign_to="ring_ms" value="1000"/>
      <todouble assign_to="talk_ms" variable="t"/>
      <multiply assign_to="talk_ms" value="1000"/>
      <test assign_to="is_busy" variable="beh" compare="equal" value="2"/>
      <test assign_to="is_never" variable="beh" compare="equal" value="3"/>
      <test assign_to="is_reject" variable="beh" compare="equal" value="4"/>
      <test assign_to="is_unreach" variable="beh" compare="equal" value="5"/>
      <test assign_to="talk_forever" variable="talk_ms" compare="less_than" value="1"/>
    </action>
  </recv>
  <nop test="is_unreach" next="unreachable"/>
  <send>
    <![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
To: [$local_to];tag=[pid]lab[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:[$number]@[local_ip]:[local_port];transport=[transport]>
Content-Length: 0
]]>
  </send>
  <nop test="is_never" next="never"/>
  <pause variable="ring_ms"/>
  <nop test="is_busy" next="busy"/>
  <nop test="is_reject" next="reject"/>
  <send retrans="500">
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
To: [$local_to];tag=[pid]lab[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:[$number]@[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

@@SDP1@@
]]>
  </send>
  <!-- A re-INVITE may come at any time after this point (hold, transfer). -->
  <recv request="INVITE" optional="global" next="reinvite"/>
  <recv request="ACK">
    <action>
      <exec rtp_stream="@@AUDIO@@,-1,8"/>
    </action>
  </recv>
  <label id="talk"/>
  <nop test="talk_forever" next="wait_bye"/>
  <pause variable="talk_ms"/>
  <send retrans="500">
    <![CDATA[
BYE [$peer_contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: [$local_to];tag=[pid]lab[call_number]
To: [$remote_from]
Call-ID: [call_id]
CSeq: 1 BYE
Max-Forwards: 70
Content-Length: 0
]]>
  </send>
  <recv response="200" next="done"/>
  <label id="wait_bye"/>
  <recv request="BYE" next="remote_bye"/>

  <label id="never"/>
  <recv request="CANCEL" next="cancelled"/>

  <label id="busy"/>
  <send>
    <![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
To: [$local_to];tag=[pid]lab[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]>
  </send>
  <recv request="ACK" next="done"/>

  <label id="reject"/>
  <send>
    <![CDATA[
SIP/2.0 603 Decline
[last_Via:]
[last_From:]
To: [$local_to];tag=[pid]lab[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]>
  </send>
  <recv request="ACK" next="done"/>

  <label id="unreachable"/>
  <send>
    <![CDATA[
SIP/2.0 480 Temporarily Unavailable
[last_Via:]
[last_From:]
To: [$local_to];tag=[pid]lab[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]>
  </send>
  <recv request="ACK" next="done"/>

  <label id="cancelled"/>
  <nop>
    <action>
      <log message="CANCELLED [$number] [call_id] [timestamp] ;"/>
    </action>
  </nop>
  <send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
To: [$local_to];tag=[pid]lab[call_number]
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
To: [$local_to];tag=[pid]lab[call_number]
[last_Call-ID:]
CSeq: [$invite_cseq] INVITE
Content-Length: 0
]]>
  </send>
  <recv request="ACK" next="done"/>

@@REINVITE@@
  <label id="remote_bye"/>
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
  <nop next="done"/>

  <label id="done"/>
</scenario>
""".replace(
    "@@REINVITE@@",
    _REINVITE.replace(
        "@@CONTACT@@", "Contact: <sip:[$number]@[local_ip]:[local_port];transport=[transport]>"
    ),
).replace("@@SDP1@@", _sdp(1))

# The first INVITE and its 407 round trip, then the authenticated INVITE: shared by
# every caller scenario; @@HEADERS@@ takes extra header lines of the second INVITE.
_UAC_AUTH_TEMPLATE = r"""  <send retrans="500">
    <![CDATA[
INVITE sip:[$to]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[$from]@[remote_ip]>;tag=[pid]lab[call_number]
To: <sip:[$to]@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:[$from]@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

@@SDP1@@
]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="407" auth="true"/>
  <send>
    <![CDATA[
ACK sip:[$to]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
From: <sip:[$from]@[remote_ip]>;tag=[pid]lab[call_number]
To: <sip:[$to]@[remote_ip]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
]]>
  </send>
  <send retrans="500">
    <![CDATA[
INVITE sip:[$to]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[$from]@[remote_ip]>;tag=[pid]lab[call_number]
To: <sip:[$to]@[remote_ip]>
Call-ID: [call_id]
CSeq: 2 INVITE
Contact: <sip:[$from]@[local_ip]:[local_port]>
[authentication]
@@HEADERS@@Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

@@SDP1@@
]]>
  </send>
"""


def _uac_auth(headers: str = "") -> str:
    """The authenticating INVITE exchange, with ``headers`` (lines ending in a newline)
    added to the authenticated INVITE."""
    return _UAC_AUTH_TEMPLATE.replace("@@HEADERS@@", headers).replace("@@SDP1@@", _sdp(1))


_UAC_AUTH = _uac_auth()

_UAC = (
    r"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="lab customer calls in">
  <Global variables="to,from,talk"/>
"""
    + _uac_auth("X-Lab-Talk-Ms: [$talk]\n")
    + r"""  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv request="BYE" optional="global" next="remote_bye"/>
  <!-- A re-INVITE may come at any time once answered (hold, resume). -->
  <recv request="INVITE" optional="global" next="reinvite"/>
  <recv response="200" rrs="true">
    <action>
      <todouble assign_to="talk_ms" variable="talk"/>
      <ereg regexp="sip:[^&gt; ]*" search_in="hdr" header="Contact:" check_it="true"
            assign_to="peer_contact"/>
    </action>
  </recv>
  <send>
    <![CDATA[
ACK [$peer_contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: <sip:[$from]@[remote_ip]>;tag=[pid]lab[call_number]
To: <sip:[$to]@[remote_ip]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 ACK
Max-Forwards: 70
Content-Length: 0
]]>
  </send>
  <nop>
    <action>
      <exec rtp_stream="@@AUDIO@@,-1,8"/>
    </action>
  </nop>
  <label id="talk"/>
  <pause variable="talk_ms"/>
  <send retrans="500">
    <![CDATA[
BYE [$peer_contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: <sip:[$from]@[remote_ip]>;tag=[pid]lab[call_number]
To: <sip:[$to]@[remote_ip]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 3 BYE
Max-Forwards: 70
Content-Length: 0
]]>
  </send>
  <recv response="200" next="done"/>

@@REINVITE@@
  <label id="remote_bye"/>
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
  <label id="done"/>
</scenario>
"""
).replace(
    "@@REINVITE@@",
    _REINVITE.replace("@@CONTACT@@", "Contact: <sip:[$from]@[local_ip]:[local_port]>"),
)


# ACK of a final non-2xx answer to the authenticated INVITE (same transaction).
_UAC_ACK_FINAL = r"""  <send>
    <![CDATA[
ACK sip:[$to]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
From: <sip:[$from]@[remote_ip]>;tag=[pid]lab[call_number]
To: <sip:[$to]@[remote_ip]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 ACK
Max-Forwards: 70
Content-Length: 0
]]>
  </send>
"""

# A caller who expects to be refused with @@CODE@@ (the scenario fails on anything
# else, an answer included). Forked calls bring one 180 per branch: all absorbed.
_UAC_REFUSED = (
    r"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="lab customer calls in and is refused">
  <Global variables="to,from"/>
"""
    + _UAC_AUTH
    + r"""  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="@@CODE@@"/>
"""
    + _UAC_ACK_FINAL
    + "</scenario>\n"
)

# A caller who hangs up (CANCEL) @@WAIT@@ ms after the call starts ringing, and
# expects 487 Request Terminated -- or the 480/486 of another branch, which a forking
# proxy prefers to 487 as the final answer. A forked call brings one 180 per branch, which a
# <pause> would take as unexpected: the wait is a receive that times out instead
# (restarted by each further 180).
_UAC_CANCEL = (
    r"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="lab customer calls in and gives up">
  <Global variables="to,from"/>
"""
    + _UAC_AUTH
    + r"""  <recv response="100" optional="true"/>
  <recv response="180"/>
  <recv response="180" optional="true" timeout="@@WAIT@@" ontimeout="cancel"/>
  <recv response="183" optional="true" timeout="@@WAIT@@" ontimeout="cancel"/>
  <recv response="699" timeout="@@WAIT@@" ontimeout="cancel"/>
  <label id="cancel"/>
  <send>
    <![CDATA[
CANCEL sip:[$to]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
From: <sip:[$from]@[remote_ip]>;tag=[pid]lab[call_number]
To: <sip:[$to]@[remote_ip]>
Call-ID: [call_id]
CSeq: 2 CANCEL
Max-Forwards: 70
Content-Length: 0
]]>
  </send>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" optional="true"/>
  <recv response="480" optional="true" next="ack"/>
  <recv response="486" optional="true" next="ack"/>
  <recv response="487" next="ack"/>
  <label id="ack"/>
"""
    + _UAC_ACK_FINAL
    + "</scenario>\n"
)


def _sipp() -> str:
    return shutil.which("sipp") or "/usr/bin/sipp"


class CustomerCall:
    """One inbound call placed by a customer (a SIPp UAC process)."""

    def __init__(self, proc: asyncio.subprocess.Process, call_id: str, log_path: Path) -> None:
        self._proc = proc
        self.call_id = call_id
        self.log_path = log_path

    @property
    def done(self) -> bool:
        return self._proc.returncode is not None

    async def wait(self, *, timeout: float) -> bool:
        """Wait until the call is over; ``True`` if it was answered and ended cleanly.

        Raises ``TimeoutError`` after ``timeout`` s (the call keeps going). Cancelling
        the wait does not end the call; :meth:`abort` does.
        """
        async with asyncio.timeout(timeout):
            code = await self._proc.wait()
        return code == 0

    async def abort(self) -> None:
        """Kill the customer's SIPp at once (no BYE is sent). Idempotent."""
        await _proc.kill_group(self._proc, grace=0.0, sig=signal.SIGKILL)


class Customers:
    """The SIPp UAS behind the trunk, plus the SIPp UACs of customer-originated calls."""

    def __init__(
        self,
        run_dir: Path,
        *,
        host: str,
        port: int,
        pbx_port: int,
        rtp_base: int,
        trunk_password: str,
    ) -> None:
        self.host = host
        self.port = port
        self.run_dir = run_dir
        self._pbx_port = pbx_port
        self._rtp_base = rtp_base
        self._trunk_password = trunk_password
        self._proc: asyncio.subprocess.Process | None = None
        self._calls: list[CustomerCall] = []
        self._serial = itertools.count(1)
        self.invites_path = run_dir / "customers-invites.log"
        self.log_path = run_dir / "customers.log"
        self.audio_path = run_dir / "customers.al"

    async def start(self, *, timeout: float = 10.0) -> None:
        """Start the SIPp UAS; return once it answers OPTIONS.

        Raises ``CustomersError`` if it does not within ``timeout`` s (it is then killed).
        Cancellation kills it too.
        """
        if self._proc is not None:
            return
        await audio.make_tone(self.audio_path, CUSTOMER_TONE_HZ, seconds=10.0, alaw=True)
        scenario = self.run_dir / "customers-uas.xml"
        scenario.write_text(_UAS.replace("@@AUDIO@@", str(self.audio_path)))
        (self.run_dir / "customers-uac.xml").write_text(
            _UAC.replace("@@AUDIO@@", str(self.audio_path))
        )
        argv = [
            _sipp(),
            "-sf", str(scenario),
            "-i", self.host,
            "-p", str(self.port),
            "-bind_local",
            "-mi", self.host,
            "-mp", str(self._rtp_base),
            "-cp", str(_ports.free_port(self.host)),
            "-nostdin",
            "-aa",
            "-trace_logs", "-log_file", str(self.invites_path),
            "-trace_err", "-error_file", str(self.run_dir / "customers-errors.log"),
        ]  # fmt: skip
        self._proc = await _proc.spawn(
            argv, log_path=self.log_path, stdout=asyncio.subprocess.DEVNULL, cwd=self.run_dir
        )
        try:
            async with asyncio.timeout(timeout):
                exited = asyncio.create_task(self._proc.wait(), name="customers-exit")
                ping = asyncio.create_task(
                    _sip.wait_answering(self.host, self.port, timeout=timeout),
                    name="customers-ping",
                )
                try:
                    await asyncio.wait({ping, exited}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (ping, exited):
                        task.cancel()
                    await asyncio.gather(ping, exited, return_exceptions=True)
                if self._proc.returncode is not None or ping.cancelled() or ping.exception():
                    log = await asyncio.to_thread(self.log_path.read_text, errors="replace")
                    if "errno = 98" in log:  # EADDRINUSE, in SIPp's words
                        raise PortTaken(f"SIPp could not bind a port; see {self.log_path}")
                    raise CustomersError(f"SIPp UAS did not come up; see {self.log_path}")
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Kill the UAS and every customer call still running. Idempotent."""
        calls, self._calls = self._calls, []
        for call in calls:
            await call.abort()
        proc, self._proc = self._proc, None
        if proc is not None:
            await _proc.kill_group(proc, grace=0.0, sig=signal.SIGKILL)

    def invites(self) -> list[SeenInvite]:
        """Every initial INVITE the customers have received so far, in arrival order."""
        return self._logged(_SEEN)

    def cancels(self) -> list[SeenInvite]:
        """Every CANCEL the customers received, in arrival order (``at``: its
        arrival on SIPp's clock, as for :meth:`invites`)."""
        return self._logged(_CANCELLED)

    def _logged(self, pattern: re.Pattern[str]) -> list[SeenInvite]:
        try:
            text = self.invites_path.read_text()
        except FileNotFoundError:
            return []
        seen = []
        for line in text.splitlines():
            match = pattern.match(line)
            if match:
                seen.append(SeenInvite(match[1], match[2], float(match[3])))
        return seen

    async def call(
        self,
        to_extension: str,
        from_number: str,
        *,
        talk_seconds: float = 5.0,
        timeout: float = 10.0,
        expect_code: int | None = None,
        cancel_after: float | None = None,
    ) -> CustomerCall:
        """A customer calls ``to_extension`` with caller id ``from_number``.

        Returns as soon as the customer's SIPp runs; the call then rings, is answered,
        plays audio for ``talk_seconds`` and hangs up (or is hung up on). Await
        :meth:`CustomerCall.wait` for the outcome. The call is killed by :meth:`stop`;
        one cancelled while its SIPp is being spawned may outlive :meth:`stop` only until
        the runner exits (it dies with its parent).

        With ``expect_code`` the customer instead expects the call to be refused with
        that final status (:meth:`CustomerCall.wait` is ``True`` only if it was); with
        ``cancel_after`` they hang up (CANCEL) that many seconds after the first 180
        and expect ``487`` (or a forking proxy's 480/486: ``wait`` is ``True`` if so).
        """
        if self._proc is None:
            raise CustomersError("customers are not running")
        if expect_code is not None and cancel_after is not None:
            raise ValueError("give expect_code or cancel_after, not both")
        serial = next(self._serial)
        call_id = f"lab-in-{uuid.uuid4().hex}"
        log_path = self.run_dir / f"customer-call-{serial:03d}.log"
        # Each UAC gets 20 RTP ports of the lab block, in turn.
        rtp = self._rtp_base + UAC_RTP_OFFSET + (serial % 20) * 20
        scenario = self.run_dir / "customers-uac.xml"
        variables = ["-set", "talk", str(int(talk_seconds * 1000))]
        if expect_code is not None:
            if not 300 <= expect_code <= 699:
                raise ValueError("expect_code must be a final non-2xx status")
            # One file per call: calls placed at once must not read a file being written.
            scenario = self.run_dir / f"customers-uac-refused-{serial:03d}.xml"
            text = _UAC_REFUSED.replace("@@CODE@@", str(expect_code))
            await asyncio.to_thread(scenario.write_text, text)
            variables = []
        elif cancel_after is not None:
            wait_ms = max(0, int(cancel_after * 1000))
            scenario = self.run_dir / f"customers-uac-cancel-{serial:03d}.xml"
            text = _UAC_CANCEL.replace("@@WAIT@@", str(wait_ms))
            await asyncio.to_thread(scenario.write_text, text)
            variables = []
        argv = [
            _sipp(),
            f"{self.host}:{self._pbx_port}",
            "-sf", str(scenario),
            "-i", self.host,
            "-p", str(_ports.free_port(self.host)),
            "-bind_local",
            "-mi", self.host,
            "-mp", str(rtp),
            "-cp", str(_ports.free_port(self.host)),
            "-nostdin",
            "-m", "1",
            "-cid_str", call_id,
            "-au", TRUNK_USER,
            "-ap", self._trunk_password,
            "-set", "to", to_extension,
            "-set", "from", from_number,
            *variables,
            "-timeout", str(int(talk_seconds + timeout + 30)),
            "-trace_err", "-error_file", str(log_path.with_suffix(".err")),
        ]  # fmt: skip
        proc = await _proc.spawn(
            argv, log_path=log_path, stdout=asyncio.subprocess.DEVNULL, cwd=self.run_dir
        )
        call = CustomerCall(proc, call_id, log_path)
        self._calls.append(call)
        return call
