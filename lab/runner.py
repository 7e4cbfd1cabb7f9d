"""The lab runner: Kamailio, the simulated customers and the agent phones, on free ports.

Use it as ``async with await Lab.start(run_dir, extensions=..., phones=[...]) as lab:``.

Two PBX modes: ``proxy`` (the default) is Kamailio alone, a forking proxy; ``b2bua``
adds the lab B2BUA (:mod:`lab.b2bua`), to which Kamailio hands the INVITEs for
``b2bua_lines``: it rings each registered contact in a dialog of its own, as Asterisk
does.
Everything the lab starts lives in its own process group, is asked to die with the
runner (``PR_SET_PDEATHSIG``), and is killed by :meth:`Lab.stop`.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, get_args

from lab import _ports
from lab.b2bua_process import B2bua
from lab.customers import TRUNK_USER, Customers, PortTaken
from lab.pbx import Pbx
from lab.phones import LabPhone, PhoneSpec

__all__ = ["DEFAULT_B2BUA_LINES", "PHONE_TONES_HZ", "Lab", "PbxMode"]

PbxMode = Literal["proxy", "b2bua"]
#: The lines that go through the B2BUA in b2bua mode unless told: the reception line.
DEFAULT_B2BUA_LINES = ("2100",)

# Distinct from each other and from the customers' 1000 Hz, none a harmonic of another.
PHONE_TONES_HZ = (440.0, 620.0, 780.0, 530.0, 700.0, 860.0, 470.0, 670.0, 820.0, 580.0)

_RTP_BLOCK = 1200
# Starts tried when a port picked as free is taken before the lab binds it.
_START_ATTEMPTS = 3
_PHONE_RTP_OFFSET = 600
_PHONE_RTP_PORTS = 20


class Lab:
    """A running lab. Build it with :meth:`start`; stop it with :meth:`stop`."""

    def __init__(
        self,
        run_dir: Path,
        *,
        host: str,
        pbx: Pbx,
        customers: Customers,
        phones: dict[str, LabPhone],
        extensions: Mapping[str, str],
        trunk_password: str,
        socket_dir: Path,
        b2bua: B2bua | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.host = host
        self.pbx = pbx
        self.customers = customers
        self.phones = phones
        self.extensions = dict(extensions)
        self.trunk_password = trunk_password
        self._socket_dir = socket_dir
        self._stopped = False
        #: The B2BUA in b2bua mode (its records: ``lab.b2bua.calls``), else None.
        self.b2bua = b2bua

    @property
    def pbx_mode(self) -> PbxMode:
        """``b2bua`` if some lines go through the lab B2BUA, else ``proxy``."""
        return "b2bua" if self.b2bua is not None else "proxy"

    @property
    def b2bua_lines(self) -> tuple[str, ...]:
        """The lines whose calls go through the B2BUA (none in proxy mode)."""
        return self.pbx.b2bua_lines

    @property
    def pbx_host(self) -> str:
        return self.pbx.host

    @property
    def pbx_port(self) -> int:
        return self.pbx.port

    @property
    def domain(self) -> str:
        """SIP domain (and digest realm) to use in account URIs: the PBX address."""
        return self.pbx.host

    def uri(self, user: str) -> str:
        """``sip:user@pbx_host:pbx_port``: how to reach an extension or a customer."""
        return f"sip:{user}@{self.pbx.host}:{self.pbx.port}"

    @classmethod
    async def start(
        cls,
        run_dir: Path,
        *,
        extensions: Mapping[str, str],
        phones: Sequence[str | PhoneSpec] = (),
        host: str = "127.0.0.1",
        timeout: float = 20.0,
        pbx_mode: PbxMode = "proxy",
        b2bua_lines: Sequence[str] = DEFAULT_B2BUA_LINES,
    ) -> Lab:
        """Start Kamailio, the customers' SIPp and one phone process per entry of ``phones``.

        With ``pbx_mode="b2bua"`` the lab B2BUA runs too and Kamailio hands it the INVITEs
        for ``b2bua_lines`` (extensions of ``extensions``); ``b2bua_lines`` is ignored in
        proxy mode.

        ``extensions`` maps every extension (Switchboard's lines and the phones') to its
        password; a ``trunk`` subscriber with a random password is added for the
        customers' inbound calls. Returns once Kamailio and SIPp answer OPTIONS and every
        phone has registered, or raises (``TimeoutError``, ``PbxError``,
        ``CustomersError``, ``PhoneError``) after stopping whatever had started. The same
        holds if the start is cancelled. Ports are picked free and bound by the processes
        a moment later; if another program took one in between, the start is tried
        again on fresh ports (up to three times).
        """
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                return await cls._start_once(
                    run_dir,
                    extensions=extensions,
                    phones=phones,
                    host=host,
                    timeout=timeout,
                    pbx_mode=pbx_mode,
                    b2bua_lines=b2bua_lines,
                )
            except PortTaken:
                if attempt == _START_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    async def _start_once(
        cls,
        run_dir: Path,
        *,
        extensions: Mapping[str, str],
        phones: Sequence[str | PhoneSpec],
        host: str,
        timeout: float,
        pbx_mode: PbxMode,
        b2bua_lines: Sequence[str],
    ) -> Lab:
        if pbx_mode not in get_args(PbxMode):
            raise ValueError(f"pbx_mode must be 'proxy' or 'b2bua', not {pbx_mode!r}")
        if isinstance(b2bua_lines, str):
            raise ValueError("b2bua_lines is a sequence of extensions, not one string")
        lines = tuple(b2bua_lines) if pbx_mode == "b2bua" else ()
        for line in lines:
            if line not in extensions:
                raise ValueError(f"B2BUA line {line} is not an extension")
        if pbx_mode == "b2bua" and not lines:
            raise ValueError("b2bua mode needs at least one line in b2bua_lines")
        specs = [p if isinstance(p, PhoneSpec) else PhoneSpec(p) for p in phones]
        for spec in specs:
            if spec.extension not in extensions:
                raise ValueError(f"phone extension {spec.extension} has no password")
        if len({spec.key for spec in specs}) != len(specs):
            raise ValueError("two phones share a name; give PhoneSpec(name=...)")
        if TRUNK_USER in extensions:
            raise ValueError(f"{TRUNK_USER!r} is reserved for the customers' trunk")
        await asyncio.to_thread(run_dir.mkdir, parents=True, exist_ok=True)
        trunk_password = secrets.token_hex(12)
        all_extensions = {**extensions, TRUNK_USER: trunk_password}
        # Unix socket paths are limited to 108 bytes; pytest's tmp_path can be longer.
        socket_dir = Path(tempfile.mkdtemp(prefix="lab-"))
        pbx_port = _ports.free_port(host, tcp_too=True)
        customers_port = _ports.free_port(host)
        rtp_base = _ports.free_rtp_block(_RTP_BLOCK, host)
        pbx = Pbx(
            run_dir,
            host=host,
            port=pbx_port,
            customers_port=customers_port,
            extensions=all_extensions,
            ctl_path=socket_dir / "kamailio_ctl",
            b2bua_lines=lines,
        )
        b2bua = B2bua(run_dir, host=host) if lines else None
        customers = Customers(
            run_dir,
            host=host,
            port=customers_port,
            pbx_port=pbx_port,
            rtp_base=rtp_base,
            trunk_password=trunk_password,
        )
        lab_phones: dict[str, LabPhone] = {}
        for index, spec in enumerate(specs):
            tone = spec.tone_hz or PHONE_TONES_HZ[index % len(PHONE_TONES_HZ)]
            lab_phones[spec.key] = LabPhone(
                spec,
                run_dir=run_dir,
                password=spec.password or extensions[spec.extension],
                pbx_host=host,
                pbx_port=pbx_port,
                domain=host,
                tone_wav=run_dir / f"phone-{spec.key}-tone.wav",
                tone_hz=tone,
                rtp_port=rtp_base + _PHONE_RTP_OFFSET + index * _PHONE_RTP_PORTS,
                rtp_port_range=_PHONE_RTP_PORTS,
            )
        lab = cls(
            run_dir,
            host=host,
            pbx=pbx,
            customers=customers,
            phones=lab_phones,
            extensions=all_extensions,
            trunk_password=trunk_password,
            socket_dir=socket_dir,
            b2bua=b2bua,
        )
        try:
            async with asyncio.timeout(timeout):
                if b2bua is not None:
                    await b2bua.start(timeout=timeout)
                    pbx.b2bua_port = b2bua.port
                await pbx.start(timeout=timeout)
                await customers.start(timeout=timeout)
                for phone in lab_phones.values():
                    await phone.start()
                await asyncio.gather(
                    *(phone.wait_registered(timeout=timeout) for phone in lab_phones.values())
                )
        except BaseException:
            await lab.stop()
            raise
        return lab

    async def stop(self) -> None:
        """Stop phones, customers and Kamailio, killing their process groups. Idempotent.

        Runs to completion even if the calling task is cancelled meanwhile (the
        cancellation is re-raised afterwards), so no process is left behind.
        """
        if self._stopped:
            return
        self._stopped = True
        task = asyncio.ensure_future(self._stop_all())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise

    async def _stop_all(self) -> None:
        try:
            await asyncio.gather(*(phone.stop() for phone in self.phones.values()))
        finally:
            try:
                await self.customers.stop()
            finally:
                try:
                    await self.pbx.stop()
                finally:
                    try:
                        if self.b2bua is not None:
                            await self.b2bua.stop()
                    finally:
                        shutil.rmtree(self._socket_dir, ignore_errors=True)

    async def __aenter__(self) -> Lab:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
