"""The lab's B2BUA: a signalling-only back-to-back user agent that behaves like Asterisk.

In the lab's ``b2bua`` mode Kamailio hands the INVITEs for some lines (the reception
numbers) to this B2BUA, with the line's registered contacts in ``X-Lab-Contacts``
headers. Like Asterisk's ``Dial`` to an endpoint with several contacts, the B2BUA

- answers the caller (through Kamailio) ``100 Trying`` at once, then places **one new
  dialog per contact**, each with its own Call-ID: From is the caller's URI and display
  name with a new tag, To is the dialled line (the incoming R-URI), the R-URI is the
  contact, the SDP is the caller's, and the INVITE goes straight to the contact's
  host:port;
- relays the first ``180``/``183`` of any branch as one ``180 Ringing``;
- on the first ``200``: ACKs it, CANCELs the other branches with
  ``Reason: SIP;cause=200;text="Call completed elsewhere"`` and answers the caller
  ``200`` with that branch's SDP (Record-Route echoed, its own Contact);
- follows a ``3xx``: a new INVITE (new Call-ID) to the first Contact of the answer, at
  most three redirects per call;
- when every branch failed, answers the lowest 4xx, else the first 5xx/6xx (``480``
  without contacts, or when the ring timeout passes);
- on the caller's CANCEL: ``200``, CANCEL to every branch, ``487``;
- once answered: relays BYE both ways, relays re-INVITE, UPDATE and INFO with their
  bodies (and the responses, and a re-INVITE's ACK), answers other requests ``501``.

Media is not touched: the SDP passes through and RTP flows end to end. UDP only; the
B2BUA retransmits its requests and its final INVITE responses (T1 = 0.5 s doubling up to
T2 = 4 s), absorbs retransmitted requests (the last response is sent again) and drops
unreadable datagrams after logging them.

Run as ``python -m lab.b2bua --host 127.0.0.1 [--port N]``: it writes one JSON event per
line on stdout (``ready``, ``call``, ``branch``, ``redirect``, ``cancel``, ``answered``,
``final``, ``ended``, ``error``) and logs the messages it sends and receives to stderr.
:class:`lab.b2bua_process.B2bua` runs it for the lab.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lab._sipmsg import (
    Message,
    NameAddr,
    SipError,
    new_branch,
    new_tag,
    parse,
    parse_nameaddr,
    uri_hostport,
)

__all__ = ["COMPLETED_ELSEWHERE", "CONTACTS_HEADER", "B2bua", "Settings", "main"]

#: The header in which Kamailio lists the dialled line's registered contacts.
CONTACTS_HEADER = "X-Lab-Contacts"
COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'
T1 = 0.5
T2 = 4.0
LINGER = 32.0  # how long finished transactions and dialogs absorb late retransmissions
_ALLOW = "INVITE, ACK, CANCEL, BYE, UPDATE, INFO, OPTIONS"
_RELAYED = ("INVITE", "UPDATE", "INFO")
# Headers of an in-dialog request copied onto the other leg with its body.
_RELAYED_HEADERS = ("Content-Type", "Content-Disposition", "Info-Package", "Event")

log = logging.getLogger("lab.b2bua")

Addr = tuple[str, int]
Emit = Callable[..., None]


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 0
    ring_timeout: float = 300.0  # the caller gets 480 if no branch answered by then
    timer_b: float = 32.0  # a request without any answer fails (408) after this
    max_redirects: int = 3


class _Resend:
    """Send a datagram again at T1, 2·T1... (at most T2 apart) until stopped; after
    ``give_up`` s stop and call ``on_timeout`` (if any)."""

    def __init__(
        self,
        send: Callable[[], None],
        *,
        give_up: float,
        on_timeout: Callable[[], None] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._send = send
        self._on_timeout = on_timeout
        self._interval = T1
        self._next: asyncio.TimerHandle | None = self._loop.call_later(T1, self._again)
        self._end: asyncio.TimerHandle | None = self._loop.call_later(give_up, self._expire)

    def _again(self) -> None:
        self._send()
        self._interval = min(self._interval * 2, T2)
        self._next = self._loop.call_later(self._interval, self._again)

    def _expire(self) -> None:
        self.stop()
        if self._on_timeout is not None:
            self._on_timeout()

    def quiet(self) -> None:
        """Stop sending again, but keep the timeout (a provisional answer came)."""
        if self._next is not None:
            self._next.cancel()
            self._next = None

    def stop(self) -> None:
        self.quiet()
        if self._end is not None:
            self._end.cancel()
            self._end = None


@dataclass(eq=False)
class _ClientTx:
    """A request the B2BUA sent, waiting for its final response."""

    request: Message
    addr: Addr
    on_response: Callable[[Message], None]
    resend: _Resend | None = None
    final: int = 0
    ack: bytes | None = None  # sent again when the final response is retransmitted


@dataclass(eq=False)
class _ServerTx:
    """A request the B2BUA received, and the last response it sent to it."""

    request: Message
    addr: Addr
    last: bytes | None = None
    resend: _Resend | None = None
    call: _Call | None = None


@dataclass(eq=False)
class _Leg:
    """One dialog of a call: the caller's (through Kamailio) or a branch's."""

    call: _Call
    call_id: str
    local: str  # our From/To value, with our tag
    remote: str  # theirs, with their tag once known
    target: str  # R-URI of in-dialog requests
    route: list[str] = field(default_factory=list)
    cseq: int = 0
    # Our 2xx to an INVITE on this leg, sent again until its ACK (by CSeq number).
    unacked: dict[int, _Resend] = field(default_factory=dict)
    # ACKs to pass on when this leg ACKs our 2xx: CSeq -> (other leg's tx).
    ack_relay: dict[int, _ClientTx] = field(default_factory=dict)


@dataclass(eq=False)
class _Branch(_Leg):
    """A dialog the B2BUA placed toward one contact."""

    invite_tx: _ClientTx | None = None
    state: str = "trying"  # trying, early, answered, failed, redirected, cancelled
    cancel_reason: str | None = None
    cancel_wanted: bool = False
    provisional: bool = False


@dataclass(eq=False)
class _Call:
    serial: int
    tx: _ServerTx
    line: str  # the dialled line's URI (R-URI of the incoming INVITE)
    caller: _Leg | None = None
    branches: list[_Branch] = field(default_factory=list)
    state: str = "early"  # early, answered, done
    rang: bool = False
    redirects: int = 0
    winner: _Branch | None = None
    failures: list[int] = field(default_factory=list)
    ring_timer: asyncio.TimerHandle | None = None


def _best_final(codes: list[int]) -> int:
    """The caller's answer when every branch failed: lowest 4xx, else first 5xx/6xx."""
    fours = [code for code in codes if 400 <= code < 500]
    if fours:
        return min(fours)
    later = [code for code in codes if code >= 500]
    return later[0] if later else 480


_REASONS = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    400: "Bad Request",
    405: "Method Not Allowed",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    487: "Request Terminated",
    500: "Server Internal Error",
    501: "Not Implemented",
}


class B2bua:
    """The B2BUA on one UDP socket. ``await start()``, then it serves until ``close()``."""

    def __init__(self, settings: Settings, emit: Emit | None = None) -> None:
        self.settings = settings
        self._emit_cb = emit
        self._transport: asyncio.DatagramTransport | None = None
        self.port = settings.port
        self._clients: dict[tuple[str, str], _ClientTx] = {}
        self._servers: dict[tuple[str, str], _ServerTx] = {}
        self._legs: dict[str, _Leg] = {}
        self._serials = itertools.count(1)
        self._cseqs = itertools.count(1)

    # --- socket ----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        b2bua = self

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
                b2bua._received(data, (str(addr[0]), int(addr[1])))

            def error_received(self, exc: Exception) -> None:
                log.warning("socket error: %s", exc)

        transport, _ = await loop.create_datagram_endpoint(
            Protocol, local_addr=(self.settings.host, self.settings.port)
        )
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        self._contact = f"<sip:b2bua@{self.settings.host}:{self.port}>"

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _emit(self, event: str, **fields: Any) -> None:
        if self._emit_cb is not None:
            self._emit_cb(event, **fields)

    def _send(self, data: bytes, addr: Addr) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        log.info("-> %s:%d\n%s", addr[0], addr[1], data.decode(errors="replace"))
        self._transport.sendto(data, addr)

    def _received(self, data: bytes, addr: Addr) -> None:
        if not data.strip():
            return  # keep-alive
        log.info("<- %s:%d\n%s", addr[0], addr[1], data.decode(errors="replace"))
        try:
            message = parse(data)
            if message.is_request:
                self._on_request(message, addr)
            else:
                self._on_response(message)
        except SipError as exc:
            log.warning("dropped an unreadable message from %s:%d: %s", *addr, exc)
            self._emit("error", info=f"unreadable message: {exc}")
        except Exception as exc:  # one bad message must not stop the B2BUA
            log.exception("failed on a message from %s:%d", *addr)
            self._emit("error", info=f"{type(exc).__name__}: {exc}")

    def _later(self, delay: float, callback: Callable[[], object]) -> None:
        asyncio.get_running_loop().call_later(delay, callback)

    # --- messages --------------------------------------------------------------------

    def _via(self, branch: str) -> str:
        return f"SIP/2.0/UDP {self.settings.host}:{self.port};branch={branch};rport"

    def _request(self, method: str, leg: _Leg, *, cseq: int | None = None) -> Message:
        """An in-dialog request on ``leg`` (a new CSeq unless given)."""
        if cseq is None:
            leg.cseq += 1
            cseq = leg.cseq
        headers = [("Via", self._via(new_branch())), ("Max-Forwards", "70")]
        headers += [("Route", route) for route in leg.route]
        headers += [
            ("From", leg.local),
            ("To", leg.remote),
            ("Call-ID", leg.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        if method in ("INVITE", "UPDATE"):
            headers.append(("Contact", self._contact))
        return Message(f"{method} {leg.target} SIP/2.0", headers)

    def _next_hop(self, leg: _Leg) -> Addr:
        """Loose routing: the first Route if any, else the target."""
        uri = parse_nameaddr(leg.route[0]).uri if leg.route else leg.target
        return uri_hostport(uri)

    def _respond(
        self,
        tx: _ServerTx,
        code: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> bytes:
        request = tx.request
        out = [(k, v) for k, v in request.headers if k == "Via"]
        to = request.to
        out += [
            ("From", request.need("From")),
            ("To", to.with_tag(to_tag) if to_tag and to.tag is None else request.need("To")),
            ("Call-ID", request.call_id),
            ("CSeq", request.need("CSeq")),
        ]
        if request.method == "INVITE" and 100 < code < 300:
            out += [(k, v) for k, v in request.headers if k == "Record-Route"]
        if request.method in ("INVITE", "UPDATE") and 100 < code < 300:
            out.append(("Contact", self._contact))
        out += headers or []
        response = Message(f"SIP/2.0 {code} {reason or _REASONS.get(code, '')}", out, body)
        data = response.encode()
        tx.last = data
        self._send(data, tx.addr)
        if code >= 200:
            key = (request.top_via_branch, request.method)
            self._later(LINGER, lambda: self._servers.pop(key, None))
        return data

    def _client(
        self, request: Message, addr: Addr, on_response: Callable[[Message], None]
    ) -> _ClientTx:
        """Send ``request`` as a client transaction: resent until answered; a 408 is
        made up when nothing answers within timer B."""
        tx = _ClientTx(request, addr, on_response)
        data = request.encode()
        key = (request.top_via_branch, request.method)
        self._clients[key] = tx

        def timeout() -> None:
            if tx.final == 0:
                tx.final = 408
                log.info("no answer to %s %s: 408", request.method, request.uri)
                on_response(Message("SIP/2.0 408 Request Timeout", list(request.headers)))
                self._later(LINGER, lambda: self._clients.pop(key, None))

        tx.resend = _Resend(
            lambda: self._send(data, addr), give_up=self.settings.timer_b, on_timeout=timeout
        )
        self._send(data, addr)
        return tx

    def _on_response(self, response: Message) -> None:
        key = (response.top_via_branch, response.method)
        tx = self._clients.get(key)
        if tx is None:
            return  # not ours, or long finished
        code = response.status
        if tx.final:
            if code >= 200 and tx.ack is not None:
                self._send(tx.ack, tx.addr)  # the final came again: so does our ACK
            return
        if code < 200:
            if tx.resend is not None:
                if tx.request.method == "INVITE":
                    tx.resend.stop()  # from now on the ring timeout bounds it
                else:
                    tx.resend.quiet()
            tx.on_response(response)
            return
        tx.final = code
        if tx.resend is not None:
            tx.resend.stop()
        self._later(LINGER, lambda: self._clients.pop(key, None))
        if tx.request.method == "INVITE" and code >= 300:
            tx.ack = self._ack_non2xx(tx.request, response).encode()
            self._send(tx.ack, tx.addr)
        tx.on_response(response)

    def _ack_non2xx(self, invite: Message, response: Message) -> Message:
        """RFC 3261 17.1.1.3: same branch, R-URI and Route as the INVITE, To of the answer."""
        headers = [(k, v) for k, v in invite.headers if k == "Via"][:1]
        headers += [(k, v) for k, v in invite.headers if k == "Route"]
        headers += [
            ("Max-Forwards", "70"),
            ("From", invite.need("From")),
            ("To", response.need("To")),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq[0]} ACK"),
        ]
        return Message(f"ACK {invite.uri} SIP/2.0", headers)

    # --- requests --------------------------------------------------------------------

    def _on_request(self, request: Message, addr: Addr) -> None:
        method = request.method
        branch = request.top_via_branch
        if method == "ACK":
            server = self._servers.get((branch, "INVITE"))
            if server is not None:  # the ACK of our non-2xx final answer
                if server.resend is not None:
                    server.resend.stop()
                return
            leg = self._legs.get(request.call_id)
            if leg is not None:
                self._on_ack(leg, request)
            return
        old = self._servers.get((branch, method))
        if old is not None:  # a retransmission: answer it as before
            if old.last is not None:
                self._send(old.last, old.addr)
            return
        tx = _ServerTx(request, addr)
        self._servers[(branch, method)] = tx
        if method == "CANCEL":
            self._on_cancel(tx)
        elif request.to.tag is not None:
            leg = self._legs.get(request.call_id)
            if leg is None or leg.call.caller is None:
                self._respond(tx, 481)
            else:
                self._in_dialog(leg, tx)
        elif method == "INVITE":
            self._on_invite(tx)
        elif method == "OPTIONS":
            self._respond(tx, 200, headers=[("Allow", _ALLOW)])
        else:
            self._respond(tx, 405, headers=[("Allow", _ALLOW)])

    def _on_invite(self, tx: _ServerTx) -> None:
        invite = tx.request
        self._respond(tx, 100)
        if invite.get(CONTACTS_HEADER) is None:
            self._respond(tx, 400, f"No {CONTACTS_HEADER} header", to_tag=new_tag())
            return
        caller_contact = invite.contact_uri
        if caller_contact is None:
            self._respond(tx, 400, "No Contact header", to_tag=new_tag())
            return
        call = _Call(next(self._serials), tx, line=invite.uri)
        tx.call = call
        local_tag = new_tag()
        call.caller = _Leg(
            call,
            invite.call_id,
            local=invite.to.with_tag(local_tag),
            remote=invite.need("From"),
            target=caller_contact,
            route=invite.get_all("Record-Route"),
        )
        self._legs[invite.call_id] = call.caller
        contacts = [parse_nameaddr(value).uri for value in invite.get_all(CONTACTS_HEADER)]
        caller = invite.from_
        self._emit(
            "call",
            call=call.serial,
            call_id=invite.call_id,
            caller=caller.uri,
            display=caller.display.strip('"'),
            line=call.line,
            contacts=contacts,
        )
        if not contacts:
            self._fail(call, 480)
            return
        for contact in contacts:
            self._place(call, contact)
        call.ring_timer = asyncio.get_running_loop().call_later(
            self.settings.ring_timeout, self._ring_timeout, call
        )

    def _place(self, call: _Call, target: str, *, redirected_from: str | None = None) -> None:
        """A new dialog toward ``target``: new Call-ID, the caller's From with a new tag."""
        invite = call.tx.request
        caller = invite.from_
        branch = _Branch(
            call,
            f"{uuid.uuid4()}@b2bua",
            local=NameAddr(caller.display, caller.uri, "").with_tag(new_tag()),
            remote=f"<{call.line}>",
            target=target,
        )
        call.branches.append(branch)
        self._legs[branch.call_id] = branch
        self._emit(
            "branch",
            call=call.serial,
            call_id=branch.call_id,
            target=target,
            redirected_from=redirected_from,
        )
        request = self._request("INVITE", branch)
        request.headers.append(("Allow", _ALLOW))
        content_type = invite.get("Content-Type")
        if content_type is not None:
            request.headers.append(("Content-Type", content_type))
        request.body = invite.body
        try:
            addr = self._next_hop(branch)
        except SipError as exc:
            log.warning("cannot reach contact %r: %s", target, exc)
            branch.state = "failed"
            self._branch_failed(call, branch, 480)
            return
        branch.invite_tx = self._client(
            request, addr, lambda response: self._branch_response(call, branch, response)
        )

    def _branch_response(self, call: _Call, branch: _Branch, response: Message) -> None:
        code = response.status
        if code < 200:
            branch.provisional = True  # from now on it may be CANCELed (RFC 3261 9.1)
            if code > 100 and branch.state == "trying":
                branch.state = "early"
            if branch.cancel_wanted:
                self._send_cancel(branch)
            elif code in (180, 183) and call.state == "early" and not call.rang:
                call.rang = True
                assert call.caller is not None
                self._respond(call.tx, 180, to_tag=parse_nameaddr(call.caller.local).tag)
            return
        self._emit("branch_final", call=call.serial, call_id=branch.call_id, code=code)
        if code < 300:
            self._branch_answered(call, branch, response)
        elif code < 400 and branch.state in ("trying", "early") and not branch.cancel_wanted:
            self._redirect(call, branch, response)
        else:
            if branch.state in ("trying", "early"):
                branch.state = "failed"
            self._branch_failed(call, branch, code)

    def _branch_answered(self, call: _Call, branch: _Branch, response: Message) -> None:
        branch.remote = response.need("To")
        branch.target = response.contact_uri or branch.target
        branch.route = list(reversed(response.get_all("Record-Route")))
        ack = self._request("ACK", branch, cseq=response.cseq[0])
        assert branch.invite_tx is not None
        branch.invite_tx.ack = ack.encode()
        branch.invite_tx.addr = self._next_hop(branch)
        self._send(branch.invite_tx.ack, branch.invite_tx.addr)
        if call.state != "early" or branch.cancel_wanted:
            # Answered although we gave it up (a race with our CANCEL): end it at once.
            log.info("branch %s answered after it was given up: BYE", branch.call_id)
            branch.state = "cancelled"
            self._client(self._request("BYE", branch), self._next_hop(branch), lambda r: None)
            return
        branch.state = "answered"
        call.state = "answered"
        call.winner = branch
        self._stop_ringing(call)
        for other in call.branches:
            if other is not branch:
                self._cancel(other, COMPLETED_ELSEWHERE)
        assert call.caller is not None
        headers = [(k, v) for k, v in response.headers if k == "Content-Type"]
        self._answer_2xx(call.tx, call.caller, 200, body=response.body, headers=headers)
        self._emit("answered", call=call.serial, call_id=branch.call_id)

    def _answer_2xx(
        self,
        tx: _ServerTx,
        leg: _Leg,
        code: int,
        *,
        reason: str | None = None,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """A 2xx to an INVITE on ``leg``, sent again until its ACK comes."""
        data = self._respond(
            tx, code, reason, to_tag=parse_nameaddr(leg.local).tag, body=body, headers=headers
        )
        cseq = tx.request.cseq[0]

        def no_ack() -> None:
            leg.unacked.pop(cseq, None)
            log.warning("no ACK for our %d on %s: hanging up", code, leg.call_id)
            self._hang_up(leg.call, by="no ACK")

        leg.unacked[cseq] = _Resend(
            lambda: self._send(data, tx.addr), give_up=LINGER, on_timeout=no_ack
        )

    def _redirect(self, call: _Call, branch: _Branch, response: Message) -> None:
        target = response.contact_uri
        branch.state = "redirected"
        if target is None:
            log.info("a %d without Contact from %s", response.status, branch.call_id)
            self._branch_failed(call, branch, 480)
        elif call.redirects >= self.settings.max_redirects:
            log.info("more than %d redirects: not following", self.settings.max_redirects)
            self._branch_failed(call, branch, 482)
        else:
            call.redirects += 1
            self._emit(
                "redirect",
                call=call.serial,
                call_id=branch.call_id,
                code=response.status,
                target=target,
            )
            self._place(call, target, redirected_from=branch.call_id)

    def _branch_failed(self, call: _Call, branch: _Branch, code: int) -> None:
        call.failures.append(code)
        pending = [b for b in call.branches if b.state in ("trying", "early")]
        if call.state == "early" and not pending:
            self._fail(call, _best_final(call.failures))

    def _fail(self, call: _Call, code: int, reason: str | None = None) -> None:
        """A final non-2xx answer to the caller, sent again until its ACK."""
        call.state = "done"
        self._stop_ringing(call)
        tag = parse_nameaddr(call.caller.local).tag if call.caller else new_tag()
        data = self._respond(call.tx, code, reason, to_tag=tag)
        call.tx.resend = _Resend(lambda: self._send(data, call.tx.addr), give_up=LINGER)
        self._emit("final", call=call.serial, code=code)
        self._forget(call)

    def _stop_ringing(self, call: _Call) -> None:
        if call.ring_timer is not None:
            call.ring_timer.cancel()
            call.ring_timer = None

    def _ring_timeout(self, call: _Call) -> None:
        if call.state != "early":
            return
        log.info("call %d: nobody answered within %g s", call.serial, self.settings.ring_timeout)
        for branch in call.branches:
            self._cancel(branch, None)
        self._fail(call, 480, "No Answer")

    def _cancel(self, branch: _Branch, reason: str | None) -> None:
        """CANCEL a pending branch (once it has answered provisionally: RFC 3261 9.1)."""
        if branch.state not in ("trying", "early") or branch.cancel_wanted:
            return
        branch.cancel_wanted = True
        branch.cancel_reason = reason
        if branch.provisional:
            self._send_cancel(branch)

    def _send_cancel(self, branch: _Branch) -> None:
        tx = branch.invite_tx
        if tx is None or tx.final or branch.state == "cancelled":
            return
        branch.state = "cancelled"
        invite = tx.request
        headers = [(k, v) for k, v in invite.headers if k == "Via"][:1]
        headers += [(k, v) for k, v in invite.headers if k == "Route"]
        headers += [
            ("Max-Forwards", "70"),
            ("From", invite.need("From")),
            ("To", invite.need("To")),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq[0]} CANCEL"),
        ]
        if branch.cancel_reason is not None:
            headers.append(("Reason", branch.cancel_reason))
        cancel = Message(f"CANCEL {invite.uri} SIP/2.0", headers)
        self._client(cancel, tx.addr, lambda r: None)
        self._emit(
            "cancel",
            call=branch.call.serial,
            call_id=branch.call_id,
            reason=branch.cancel_reason,
        )

    def _on_cancel(self, tx: _ServerTx) -> None:
        invite_tx = self._servers.get((tx.request.top_via_branch, "INVITE"))
        if invite_tx is None or invite_tx.call is None:
            self._respond(tx, 481)
            return
        self._respond(tx, 200)
        call = invite_tx.call
        if call.state != "early":
            return
        for branch in call.branches:
            self._cancel(branch, None)
        self._fail(call, 487)

    # --- dialogs ---------------------------------------------------------------------

    def _in_dialog(self, leg: _Leg, tx: _ServerTx) -> None:
        call = leg.call
        request = tx.request
        method = request.method
        if call.state != "answered" or (leg is not call.caller and leg is not call.winner):
            self._respond(tx, 200 if method == "BYE" else 481)
            return
        other = call.winner if leg is call.caller else call.caller
        assert other is not None
        if method == "BYE":
            self._respond(tx, 200)
            self._hang_up(call, by="caller" if leg is call.caller else "callee", spare=leg)
        elif method in _RELAYED:
            if method == "INVITE":
                self._respond(tx, 100)
            self._relay(leg, tx, other)
        else:
            self._respond(tx, 501)

    def _relay(self, leg: _Leg, tx: _ServerTx, other: _Leg) -> None:
        request = tx.request
        out = self._request(request.method, other)
        out.headers += [(k, v) for k, v in request.headers if k in _RELAYED_HEADERS]
        out.body = request.body

        def relayed(response: Message) -> None:
            code = response.status
            if code < 200:
                return
            headers = [(k, v) for k, v in response.headers if k in _RELAYED_HEADERS]
            if request.method == "INVITE" and code < 300:
                if out_tx.ack is None:
                    leg.ack_relay[request.cseq[0]] = out_tx
                    self._answer_2xx(
                        tx, leg, code, reason=response.reason, body=response.body, headers=headers
                    )
                return
            self._respond(tx, code, response.reason, body=response.body, headers=headers)
            if request.method == "INVITE":
                data = tx.last or b""
                tx.resend = _Resend(lambda: self._send(data, tx.addr), give_up=LINGER)

        out_tx = self._client(out, self._next_hop(other), relayed)

    def _on_ack(self, leg: _Leg, ack: Message) -> None:
        cseq = ack.cseq[0]
        resend = leg.unacked.pop(cseq, None)
        if resend is not None:
            resend.stop()
        out_tx = leg.ack_relay.pop(cseq, None)
        if out_tx is None or out_tx.ack is not None:
            return
        call = leg.call
        other = call.winner if leg is call.caller else call.caller
        assert other is not None
        relayed = self._request("ACK", other, cseq=out_tx.request.cseq[0])
        relayed.headers += [(k, v) for k, v in ack.headers if k == "Content-Type"]
        relayed.body = ack.body
        out_tx.ack = relayed.encode()
        self._send(out_tx.ack, self._next_hop(other))

    def _hang_up(self, call: _Call, *, by: str, spare: _Leg | None = None) -> None:
        """End an answered call: BYE on its legs (but ``spare``, which hung up)."""
        if call.state != "answered":
            return
        call.state = "done"
        for leg in (call.caller, call.winner):
            if leg is not None and leg is not spare:
                for resend in leg.unacked.values():
                    resend.stop()
                self._client(self._request("BYE", leg), self._next_hop(leg), lambda r: None)
        self._emit("ended", call=call.serial, by=by)
        self._forget(call)

    def _forget(self, call: _Call) -> None:
        """Drop the call's dialogs once late retransmissions have had their time."""
        legs = [leg for leg in (call.caller, *call.branches) if leg is not None]

        def forget() -> None:
            for leg in legs:
                if self._legs.get(leg.call_id) is leg:
                    del self._legs[leg.call_id]

        self._later(LINGER, forget)


def _emit_json(event: str, **fields: Any) -> None:
    fields["event"] = event
    fields["at"] = time.time()
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def _serve(settings: Settings) -> None:
    b2bua = B2bua(settings, _emit_json)
    await b2bua.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    _emit_json("ready", host=settings.host, port=b2bua.port, pid=os.getpid())
    try:
        await stop.wait()
    finally:
        b2bua.close()


def main(argv: list[str] | None = None) -> int:
    """Run the B2BUA until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m lab.b2bua")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--ring-timeout", type=float, default=Settings.ring_timeout)
    parser.add_argument("--timer-b", type=float, default=Settings.timer_b)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    settings = Settings(
        host=args.host, port=args.port, ring_timeout=args.ring_timeout, timer_b=args.timer_b
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
