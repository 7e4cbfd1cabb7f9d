"""``python -m lab up|demo [--run-dir DIR]``: run the lab until SIGINT or SIGTERM.

``up`` runs the lab alone; ``demo`` runs it with a Switchboard daemon configured
from ``config/examples/switchboard.toml`` and registered on it (see lab.demo).

Agent phones 1001-1003 register and auto-answer; Switchboard's lines 2001-2003 (agents),
2100 (reception) and 2200 (dialer) exist on the PBX with the passwords found in
``config/examples/secrets/<ext>`` when that directory exists, else ``demo-<ext>``.

``--pbx-mode b2bua`` puts the reception line 2100 behind the lab B2BUA, which rings each
of its registrations in a dialog of its own, as Asterisk does (default: ``proxy``,
Kamailio alone).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from pathlib import Path
from typing import get_args

from lab.customers import NUMBER_PREFIX, Behaviour, customer_number
from lab.demo import run_demo
from lab.runner import Lab, PbxMode

PHONES = ("1001", "1002", "1003")
LINES = ("2001", "2002", "2003", "2100", "2200")
_SECRETS = Path(__file__).resolve().parent.parent / "config" / "examples" / "secrets"


def demo_extensions(secrets_dir: Path = _SECRETS) -> dict[str, str]:
    """Passwords for the demo: the example secrets for lines if present, else demo ones."""
    extensions = {ext: f"demo-{ext}" for ext in (*PHONES, *LINES)}
    for ext in LINES:
        secret = secrets_dir / ext
        if secret.is_file():
            extensions[ext] = secret.read_text().strip()
    return extensions


def _banner(lab: Lab) -> str:
    plan = [
        (Behaviour.ANSWER, 2, 10, "answers after 2 s, talks 10 s, hangs up"),
        (Behaviour.ANSWER, 1, 0, "answers after 1 s, talks until you hang up"),
        (Behaviour.BUSY, 1, 0, "rings 1 s, then 486 Busy Here"),
        (Behaviour.NEVER_ANSWER, 0, 0, "rings until you cancel"),
        (Behaviour.REJECT, 1, 0, "rings 1 s, then 603 Decline"),
        (Behaviour.UNREACHABLE, 0, 0, "480 at once, no ringing"),
    ]
    lines = [
        f"PBX (Kamailio)  sip:{lab.pbx_host}:{lab.pbx_port}  (UDP and TCP, realm = From domain)",
        f"PBX mode        {lab.pbx_mode}"
        + (
            f"  (lines {', '.join(lab.b2bua_lines)} through the B2BUA on port {lab.b2bua.port})"
            if lab.b2bua is not None
            else ""
        ),
        f"Run directory   {lab.run_dir}",
        "Extensions      " + ", ".join(sorted(e for e in lab.extensions if e != "trunk")),
        "Agent phones    " + ", ".join(f"{k} ({p.tone_hz:g} Hz)" for k, p in lab.phones.items()),
        "",
        f"Customers: dial {NUMBER_PREFIX} B RR TT [suffix]  (B behaviour, RR ring s, TT talk s)",
    ]
    lines += [f"  {customer_number(b, ring=r, talk=t)}  {text}" for b, r, t, text in plan]
    lines += ["", "Ctrl-C stops the lab."]
    return "\n".join(lines)


async def _up(run_dir: Path, pbx_mode: PbxMode) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with await Lab.start(
        run_dir, extensions=demo_extensions(), phones=list(PHONES), pbx_mode=pbx_mode
    ) as lab:
        print(_banner(lab), flush=True)
        await stop.wait()
        print("stopping the lab", flush=True)
    return 0


def _mode_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pbx-mode",
        choices=get_args(PbxMode),
        default="proxy",
        help="proxy: Kamailio forks to every registration (default); b2bua: the reception "
        "line 2100 goes through the lab B2BUA, one dialog per registration, as Asterisk",
    )


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m lab")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run a demo lab until interrupted")
    up.add_argument("--run-dir", type=Path, help="default: a new temporary directory")
    _mode_argument(up)
    demo = sub.add_parser("demo", help="run the lab and a Switchboard daemon on it")
    demo.add_argument("--run-dir", type=Path, help="default: a new temporary directory")
    _mode_argument(demo)
    demo.add_argument(
        "--caller-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a simulated customer calls reception this often (default 60; 0: never)",
    )
    args = parser.parse_args(argv)
    run_dir = (args.run_dir or Path(tempfile.mkdtemp(prefix="switchboard-lab-"))).resolve()
    if args.command == "demo":
        return asyncio.run(
            run_demo(
                run_dir,
                extensions=demo_extensions(),
                phones=list(PHONES),
                caller_every=args.caller_every,
                pbx_mode=args.pbx_mode,
            )
        )
    return asyncio.run(_up(run_dir, args.pbx_mode))


if __name__ == "__main__":
    sys.exit(main())
