"""``python -m lab demo``: the lab plus a Switchboard daemon wired to it.

Starts the lab (Kamailio on a free port, the customers, agent phones 1001-1003),
writes a configuration derived from ``config/examples/switchboard.toml`` into the
run directory — the same lines, agents and secrets, with the PBX port pointed at
the lab, the web pages on port 8080 (or a free port when 8080 is taken), and the
store and recordings kept in the run directory — seeds the store with a small data
set (:mod:`lab.seed`), and runs ``switchboard run`` on it until SIGINT or SIGTERM.
Once the daemon is ready it prints where to log in, the users and their passwords
(also kept in ``<run dir>/passwords``, mode 0600) and the reception number; then,
about every minute, a simulated customer calls the reception line, sometimes with a
known number, sometimes with an unknown one. At the end it stops the daemon
(SIGTERM, so calls are closed properly) and the lab.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import socket
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crm_store import Store
from lab.customers import CustomersError
from lab.runner import Lab, PbxMode
from lab.seed import (
    RECEPTION,
    SeedAgent,
    demo_users,
    known_numbers,
    load_or_create_passwords,
    seed,
    unknown_number,
)

__all__ = [
    "EXAMPLE",
    "PASSWORDS_FILE",
    "demo_config",
    "dump_toml",
    "free_or_default_port",
    "prepare_store",
    "run_demo",
]

#: The users' passwords, in the run directory.
PASSWORDS_FILE = "passwords"

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "examples" / "switchboard.toml"


def demo_config(
    example: Path,
    *,
    pbx_port: int,
    run_dir: Path,
    domain: str | None = None,
    http_port: int | None = None,
    websocket_port: int | None = None,
) -> dict[str, Any]:
    """The example configuration pointed at a lab on ``pbx_port``.

    Relative paths in the example (secret files) are made absolute, because the
    generated file lives in ``run_dir``, not next to the example. ``domain`` is the
    lab's SIP domain (``lab.domain``): the lines register in it, and the SIP workers
    know an incoming call's line by the domain of its request URI. ``http_port`` and
    ``websocket_port`` replace the example's ports (the websocket's allowed origins
    follow the HTTP port). The lines lose their display names (the lab's SIPp
    customers copy a Contact with a display name into their BYE's request line,
    which Kamailio refuses), and the dialer may dial at any hour of any day, so
    that the demo's call list can be tried whenever the demo runs.
    """
    data = tomllib.loads(example.read_text())
    data["pbx"]["port"] = pbx_port
    if domain is not None:
        data["pbx"]["domain"] = domain
    for line in data.get("lines", []):
        if "secret_file" in line:
            line["secret_file"] = str((example.parent / line["secret_file"]).resolve())
        line.pop("display_name", None)
    data.setdefault("store", {})["url"] = f"sqlite+aiosqlite:///{run_dir / 'switchboard.sqlite3'}"
    data.setdefault("recording", {})["directory"] = str(run_dir / "recordings")
    site = data.setdefault("site", {})
    site["working_days"] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    site["working_hours"] = "00:00-23:59"
    http = data.setdefault("http", {})
    if http_port is not None:
        http["port"] = http_port
    ws = data.setdefault("websocket", {})
    if websocket_port is not None:
        ws["port"] = websocket_port
    port = http.get("port", 8080)
    ws["allowed_origins"] = [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    return data


def free_or_default_port(default: int, host: str = "127.0.0.1") -> int:
    """``default`` if nothing listens there on ``host``, else a free port."""
    with socket.socket() as s:
        try:
            s.bind((host, default))
        except OSError:
            s.bind((host, 0))
        return int(s.getsockname()[1])


def dump_toml(data: Mapping[str, Any]) -> str:
    """A TOML document for ``data``: tables of scalars and lists, arrays of tables.

    Enough for configuration files (the standard library reads TOML but cannot
    write it); anything else raises ``TypeError``.
    """
    out: list[str] = []
    scalars = {k: v for k, v in data.items() if not _is_table(v) and not _is_table_array(v)}
    out += [f"{k} = {_value(v)}" for k, v in scalars.items()]
    for key, value in data.items():
        if _is_table(value):
            out += ["", f"[{key}]"]
            out += [f"{k} = {_value(v)}" for k, v in value.items()]
        elif _is_table_array(value):
            for table in value:
                out += ["", f"[[{key}]]"]
                out += [f"{k} = {_value(v)}" for k, v in table.items()]
    return "\n".join(out).lstrip("\n") + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, dict)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


async def _switchboard(config: Path, *args: str) -> str:
    """Run ``switchboard --config CONFIG ARGS`` to completion; its standard output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard", "--config", str(config), *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"switchboard {' '.join(args)}: {err.decode(errors='replace')}")
    return out.decode()


def _agents(data: Mapping[str, Any]) -> list[SeedAgent]:
    return [
        SeedAgent(a["user"], a["name"], a["extension"])
        for a in data.get("agents", [])
        if a.get("user")
    ]


async def prepare_store(config: Path, data: Mapping[str, Any], *, run_dir: Path) -> dict[str, str]:
    """Migrate the demo store and seed it (:func:`lab.seed.seed`); return the users'
    passwords, kept in ``run_dir / PASSWORDS_FILE`` (mode 0600; a run directory used
    again keeps its passwords, and its store is not seeded twice)."""
    await _switchboard(config, "db", "upgrade")
    agents = _agents(data)
    passwords = load_or_create_passwords(
        run_dir / PASSWORDS_FILE, [u.user for u in demo_users(agents)]
    )
    region = data.get("site", {}).get("default_region", "FR")
    async with await Store.open(data["store"]["url"], default_region=region) as store:
        await seed(
            store,
            passwords=passwords,
            recordings=Path(data["recording"]["directory"]),
            agents=agents,
        )
    return passwords


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(json.load(reply).get("status") == "ready")
    except (OSError, ValueError):
        return False


async def wait_ready(base_url: str, daemon: asyncio.subprocess.Process, timeout: float) -> None:
    """Poll ``base_url/readyz`` until the daemon is ready; raise if it exits first
    or is not ready within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(_ready, f"{base_url}/readyz"):
        if daemon.returncode is not None:
            raise RuntimeError(f"the daemon exited with status {daemon.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the daemon was not ready within {timeout:g} s")
        await asyncio.sleep(0.3)


def banner(
    base_url: str, data: Mapping[str, Any], passwords: Mapping[str, str], run_dir: Path
) -> str:
    """What the demo prints once the daemon is ready."""
    roles = {u.user: u for u in demo_users(_agents(data))}
    lines = [
        "",
        "Switchboard demo is ready.",
        f"  Log in at     {base_url}/login",
        "  Users (user name, password, role):",
    ]
    for user, password in passwords.items():
        spec = roles.get(user)
        role = spec.role.value if spec else "user"
        phone = f", desk phone {spec.extension}" if spec and spec.extension else ""
        lines.append(f"    {user:<8} {password}   {role}{phone}")
    lines += [
        f"  Passwords are kept in {run_dir / PASSWORDS_FILE} (mode 0600).",
        f"  Reception     extension {RECEPTION}: a simulated customer calls it about every"
        " minute; set yourself available to get the pop-up.",
        '  Dialer        the call list "Spring campaign" reaches lab customers who answer.',
        f"  API docs      {base_url}/api/docs",
        "",
        "Ctrl-C stops the demo.",
        "",
    ]
    return "\n".join(lines)


async def _callers(lab: Lab, every: float) -> None:
    """Every ``every`` seconds, a customer calls reception: a known client or lead,
    then an unknown number, in turn. The first call comes after a third of the
    period, so a pop-up shows within a minute of logging in."""
    known = list(known_numbers().items())
    await asyncio.sleep(every / 3)
    for n in itertools.count(1):
        if n % 2:
            name, number = known[(n // 2) % len(known)]
        else:
            name, number = "unknown", unknown_number(n)
        print(f"customer {number} ({name}) calls reception {RECEPTION}", flush=True)
        try:
            await lab.customers.call(RECEPTION, number, talk_seconds=40, timeout=30)
        except (CustomersError, OSError) as exc:  # the demo goes on without this call
            print(f"the customer could not call: {exc}", flush=True)
        await asyncio.sleep(every)


async def run_demo(
    run_dir: Path,
    *,
    extensions: Mapping[str, str],
    phones: list[str],
    caller_every: float = 60.0,
    pbx_mode: PbxMode = "proxy",
) -> int:
    """Run the lab and the daemon until SIGINT/SIGTERM; return the daemon's status.

    ``caller_every`` is the period of the simulated reception calls (0: none);
    ``pbx_mode`` ``b2bua`` puts the reception line behind the lab B2BUA."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with await Lab.start(
        run_dir, extensions=extensions, phones=phones, pbx_mode=pbx_mode
    ) as lab:
        config = run_dir / "switchboard.toml"
        http_port = free_or_default_port(8080)
        data = demo_config(
            EXAMPLE,
            pbx_port=lab.pbx_port,
            run_dir=run_dir,
            domain=lab.domain,
            http_port=http_port,
            websocket_port=free_or_default_port(8765),
        )
        config.write_text(dump_toml(data))
        passwords = await prepare_store(config, data, run_dir=run_dir)
        print(f"PBX (Kamailio)  sip:{lab.pbx_host}:{lab.pbx_port}", flush=True)
        print(f"Configuration   {config}", flush=True)
        print(f"Recordings      {run_dir / 'recordings'}", flush=True)
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "switchboard", "--config", str(config), "run"
        )
        exited = asyncio.create_task(daemon.wait(), name="daemon")
        stopping = asyncio.create_task(stop.wait(), name="stop")
        callers: asyncio.Task[None] | None = None
        base_url = f"http://{data['http'].get('host', '127.0.0.1')}:{http_port}"
        ready = asyncio.create_task(wait_ready(base_url, daemon, 60), name="ready")
        await asyncio.wait({ready, exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done() and ready.exception() is None:
            print(banner(base_url, data, passwords, run_dir), flush=True)
            if caller_every > 0:
                callers = asyncio.create_task(_callers(lab, caller_every), name="callers")
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        elif ready.done():
            print(f"the demo did not start: {ready.exception()}", flush=True)
        ready.cancel()
        if callers is not None:
            callers.cancel()
        if daemon.returncode is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await exited
            except TimeoutError:
                daemon.kill()
                await exited
        stopping.cancel()
        print("stopping the lab", flush=True)
        return daemon.returncode or 0
