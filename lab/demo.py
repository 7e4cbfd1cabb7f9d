"""``python -m lab demo``: the lab plus a Switchboard daemon wired to it.

Starts the lab (Kamailio on a free port, the customers, agent phones 1001-1003),
writes a configuration derived from ``config/examples/switchboard.toml`` into the
run directory — the same lines, agents and secrets, with the PBX port pointed at
the lab and the store and recordings kept in the run directory — and runs
``switchboard run`` on it until SIGINT or SIGTERM. Then it stops the daemon
(SIGTERM, so calls are closed properly) and the lab.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lab.customers import Behaviour, customer_number
from lab.runner import Lab

__all__ = ["EXAMPLE", "demo_config", "dump_toml", "prepare_store", "run_demo"]

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "examples" / "switchboard.toml"


def demo_config(example: Path, *, pbx_port: int, run_dir: Path) -> dict[str, Any]:
    """The example configuration pointed at a lab on ``pbx_port``.

    Relative paths in the example (secret files) are made absolute, because the
    generated file lives in ``run_dir``, not next to the example.
    """
    data = tomllib.loads(example.read_text())
    data["pbx"]["port"] = pbx_port
    for line in data.get("lines", []):
        if "secret_file" in line:
            line["secret_file"] = str((example.parent / line["secret_file"]).resolve())
    data.setdefault("store", {})["url"] = f"sqlite+aiosqlite:///{run_dir / 'switchboard.sqlite3'}"
    data.setdefault("recording", {})["directory"] = str(run_dir / "recordings")
    return data


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


async def prepare_store(config: Path, data: Mapping[str, Any]) -> str | None:
    """Migrate the demo store, create a CRM user for each agent that names one, and
    return an API token for the first of them (``None`` if no agent has a user)."""
    await _switchboard(config, "db", "upgrade")
    users = [a for a in data.get("agents", []) if a.get("user")]
    for agent in users:
        await _switchboard(
            config, "users", "add", agent["user"], "--name", agent["name"],
            "--extension", agent["extension"],
        )  # fmt: skip
    if not users:
        return None
    return (await _switchboard(config, "users", "token", users[0]["user"])).strip()


async def run_demo(run_dir: Path, *, extensions: Mapping[str, str], phones: list[str]) -> int:
    """Run the lab and the daemon until SIGINT/SIGTERM; return the daemon's status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with await Lab.start(run_dir, extensions=extensions, phones=phones) as lab:
        config = run_dir / "switchboard.toml"
        data = demo_config(EXAMPLE, pbx_port=lab.pbx_port, run_dir=run_dir)
        config.write_text(dump_toml(data))
        token = await prepare_store(config, data)
        print(f"PBX (Kamailio)  sip:{lab.pbx_host}:{lab.pbx_port}", flush=True)
        print(f"Configuration   {config}", flush=True)
        if token is not None:
            agent = next(a for a in data["agents"] if a.get("user"))
            ws = data.get("websocket", {})
            number = customer_number(Behaviour.ANSWER, ring=2, talk=10)
            print(
                f"\nPlace a call as {agent['name']} (her phone {agent['extension']} answers, then"
                f" a customer who talks for 10 s):\n"
                f"  SWITCHBOARD_TOKEN={token} {sys.executable} -m switchboard"
                f" --config {config} call {number}\n"
                f"The recording lands in {run_dir / 'recordings'}; websocket clients connect to"
                f" ws://{ws.get('host', '127.0.0.1')}:{ws.get('port', 8765)} with that token.\n",
                flush=True,
            )
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "switchboard", "--config", str(config), "run"
        )
        exited = asyncio.create_task(daemon.wait(), name="daemon")
        stopping = asyncio.create_task(stop.wait(), name="stop")
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
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
