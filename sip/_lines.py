"""The PBX lines of a SIP worker: their accounts, registrations and retries.

Runs on the worker's pj thread, like the engine that owns it. Each line is one
``pj.Account`` registering an extension with the PBX; its steps are reported as
``registration`` events. pjsua's own registration retry is off: a PBX that
answered 5xx/6xx is asked again at a doubling interval up to the maximum (or
after its Retry-After), one that did not answer at the base interval, and one
that refused the credentials not at all.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import pjsua2 as pj  # type: ignore[import-untyped]

from sip import _sipmsg as sipmsg
from sip import protocol as p
from sip._pj import Account, EngineError, log

__all__ = ["Lines"]


class Lines:
    """The lines of one worker, by line name.

    ``new_account(line)`` makes the (not yet created) account of a line,
    ``account_config()`` the account configuration of a PBX line,
    ``defer_after(delay, action)`` runs ``action`` on the pj thread ``delay``
    seconds later, and ``emit`` reports events.
    """

    def __init__(
        self,
        *,
        emit: Callable[[p.Event], None],
        settings: Callable[[], p.WorkerSettings],
        new_account: Callable[[str], Account],
        account_config: Callable[[], Any],
        defer_after: Callable[[float, Callable[[], None]], None],
    ) -> None:
        self._emit_event = emit
        self._settings = settings
        self._new_account = new_account
        self._account_config = account_config
        self._defer_after = defer_after
        self.accounts: dict[str, Account] = {}
        self._unregistering: set[str] = set()
        # Registration retries: consecutive refusals per line, and the token of
        # the one retry each line may have pending.
        self._refusals: dict[str, int] = {}
        self._retry_tokens: dict[str, object] = {}
        # Lines being unregistered: a failed un-REGISTER must not be retried as a
        # REGISTER.
        self._leaving: set[str] = set()

    def register(self, cmd: p.Register) -> None:
        """Create the account of ``cmd.line`` and start its registration."""
        s = self._settings()
        if not s.pbx_host or not s.domain:
            raise EngineError("no_pbx", "configure has no pbx_host/domain")
        if cmd.line in self.accounts:
            raise EngineError("line_exists", f"line {cmd.line} is already registered")
        if len(self.accounts) + 1 >= s.max_accounts:  # +1: the local identity
            raise EngineError("too_many_accounts", f"at most {s.max_accounts - 1} lines")
        acfg = self._account_config()
        name = cmd.display_name.replace('"', "")
        uri = f"sip:{cmd.extension}@{s.domain}"
        acfg.idUri = f'"{name}" <{uri}>' if name else uri
        acfg.regConfig.registrarUri = f"sip:{s.pbx_host}:{s.pbx_port};transport={s.pbx_transport}"
        acfg.regConfig.timeoutSec = cmd.expires
        # Retries are scheduled here (_after): pjsua's own retry has one fixed
        # interval, and a PBX refusing with 503 should be asked less and less often.
        acfg.regConfig.retryIntervalSec = 0
        acfg.regConfig.randomRetryIntervalSec = 0
        acfg.regConfig.dropCallsOnFail = False
        # Credentials for the PBX's realm only: with "*" any challenger (a stray
        # proxy, a hostile UAS a call was sent to) would get a digest answer.
        realm = s.realm or s.domain
        acfg.sipConfig.authCreds.append(
            pj.AuthCredInfo("digest", realm, cmd.extension, 0, cmd.password)
        )
        self._refusals.pop(cmd.line, None)
        self._retry_tokens.pop(cmd.line, None)
        self._leaving.discard(cmd.line)
        account = self._new_account(cmd.line)
        self.accounts[cmd.line] = account
        try:
            account.create(acfg, False)
        except BaseException:
            del self.accounts[cmd.line]
            account.shutdown()
            raise

    def unregister(self, cmd: p.Unregister) -> None:
        """Unregister ``cmd.line``; its account is dropped once the PBX answered (2 s)."""
        if cmd.line not in self.accounts:
            raise EngineError("unknown_line", f"no line {cmd.line}")
        account = self.accounts[cmd.line]
        self._retry_tokens.pop(cmd.line, None)  # no retry after this
        self._leaving.add(cmd.line)
        with contextlib.suppress(pj.Error):
            account.setRegistration(False)  # onRegState reports "unregistered"
        # The account object lives on until the un-REGISTER is answered.
        self._defer_after(2.0, lambda: self._drop(cmd.line))

    def started(self, account: Account) -> None:
        """A REGISTER (not an un-REGISTER) of ``account``'s line is on its way."""
        assert account.line is not None
        self._emit(account.line, "registering", 0, "", 0)

    def answered(self, account: Account, code: int, expires: int, reason: str, msg: str) -> None:
        """The registration of ``account``'s line ended with ``code`` (``msg``:
        the PBX's whole answer, empty when it did not answer)."""
        line = account.line
        assert line is not None
        self._unregistering.discard(line)
        state = "failed"
        if code // 100 == 2:
            state = "registered" if expires > 0 else "unregistered"
        self._emit(line, state, code, reason, expires)
        self._after(account, code, expires, msg)

    def unregister_all(self, poll: Callable[[int], None]) -> None:
        """Unregister every line, wait (bounded, polling) for the PBX's answers,
        and release the accounts (so that libDestroy need not wait its fixed second)."""
        self._leaving.update(self.accounts)
        self._retry_tokens.clear()
        for line, account in self.accounts.items():
            with contextlib.suppress(pj.Error):
                if account.getInfo().regIsActive:
                    account.setRegistration(False)
                    self._unregistering.add(line)
        deadline = time.monotonic() + 1.5
        while self._unregistering and time.monotonic() < deadline:
            poll(10)
        for line in list(self.accounts):
            self._drop(line)

    def _emit(self, line: str, state: str, code: int, reason: str, exp: int) -> None:
        self._emit_event(
            p.Registration(
                line=line,
                state=state,  # type: ignore[arg-type]
                code=code,
                reason=sipmsg.text(reason),
                expires=exp,
            )
        )

    def connection_lost(self) -> None:
        """A TCP connection closed: register every line again after the retry interval.

        Over TCP a PBX that goes away closes the connection its registrations used;
        pjsua would re-register only with its own retry on, which the engine replaces.
        """
        s = self._settings()
        for line, account in self.accounts.items():
            if line not in self._retry_tokens and line not in self._leaving:
                self._schedule(line, account, float(s.register_retry_seconds))

    def _after(self, account: Account, code: int, expires: int, msg: str) -> None:
        """Schedule the next attempt after a failed registration.

        A PBX that *answered* 5xx/6xx is asked again after the retry interval,
        doubled at each consecutive refusal up to the maximum (or after its
        Retry-After, within the maximum); a PBX that did not answer (timeout,
        transport error) is retried at the base interval, so that its return is
        noticed at once. Credentials refused (401/403...) are not retried.
        """
        line = account.line
        assert line is not None
        if code // 100 == 2:
            self._refusals.pop(line, None)
            self._retry_tokens.pop(line, None)
            return
        if line in self._leaving or self.accounts.get(line) is not account:
            return
        s = self._settings()
        answered = bool(msg)
        if answered and code not in sipmsg.RETRYABLE and code < 600:
            return
        delay = float(s.register_retry_seconds)
        if answered:
            refusals = self._refusals.get(line, 0) + 1
            self._refusals[line] = refusals
            delay = min(delay * 2 ** (refusals - 1), float(s.register_retry_max_seconds))
            match = sipmsg.RETRY_AFTER_RE.search(msg)
            if match is not None:
                delay = min(max(delay, float(match.group(1))), float(s.register_retry_max_seconds))
        log("info", "registration retry scheduled", line=line, code=code, delay=delay)
        self._schedule(line, account, delay)

    def _schedule(self, line: str, account: Account, delay: float) -> None:
        """Send a REGISTER for ``line`` in ``delay`` seconds, replacing any pending one."""
        token = object()
        self._retry_tokens[line] = token

        def retry() -> None:
            if self._retry_tokens.get(line) is not token or self.accounts.get(line) is not account:
                return
            if line in self._leaving:
                return
            del self._retry_tokens[line]
            try:
                account.setRegistration(True)
            except pj.Error as exc:
                log("warning", "registration retry failed", line=line, reason=exc.info())
                self._after(account, 503, 0, "")

        self._defer_after(delay, retry)

    def _drop(self, line: str) -> None:
        self._leaving.discard(line)
        self._retry_tokens.pop(line, None)
        self._refusals.pop(line, None)
        account = self.accounts.pop(line, None)
        if account is not None:
            account.shutdown()
