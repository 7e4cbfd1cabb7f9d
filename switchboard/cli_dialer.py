"""``switchboard lists …``, ``switchboard dialer …``, ``call`` and ``agent state``.

Call lists are built straight in the store: pasted numbers, or one column of a
CSV or XLSX file (a file with any bad row is refused whole, every bad row named
by its line). Dialing sessions run inside the daemon, so ``dialer`` commands are
sent to the running daemon over its websocket protocol, with the API token of
the agent (or of a supervisor acting for them), exactly as the widget sends them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Literal

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from config import Config
from crm_store import CallListReport, Store
from crm_store.importing import MAX_IMPORT_BYTES, printable, read_numbers
from dialer import screen_entries

__all__ = ["CliProblem", "add_parsers", "run_agent", "run_call", "run_dialer", "run_lists"]

EXIT_OK = 0
EXIT_FAILURE = 1


class CliProblem(Exception):
    """Something the user can fix (a bad id, an unreadable file, no daemon)."""


def add_parsers(sub: Any) -> None:
    """Add the ``lists`` and ``dialer`` sub-commands to the CLI's parser."""
    lists = sub.add_parser("lists", help="call lists for the auto-dialer")
    lsub = lists.add_subparsers(dest="lists_command", required=True, metavar="ACTION")
    create = lsub.add_parser("create", help="a list from numbers given on the command line")
    create.add_argument("name")
    create.add_argument("numbers", nargs="+", metavar="NUMBER")
    imp = lsub.add_parser("import", help="a list from one column of a CSV or XLSX file")
    imp.add_argument("name")
    imp.add_argument("file", type=Path)
    imp.add_argument("--column", default="0", help="header name or 0-based index (default 0)")
    imp.add_argument("--no-header", action="store_true", help="the first row is a number too")
    show = lsub.add_parser("show", help="how far a list has got")
    show.add_argument("list_id")

    call = sub.add_parser("call", help="click-to-call: ring your phone, then the number")
    call.add_argument("number")
    _daemon_options(call)

    dialer = sub.add_parser("dialer", help="steer an agent's dialing session in the daemon")
    dsub = dialer.add_subparsers(dest="dialer_command", required=True, metavar="ACTION")
    for action, text in (
        ("start", "start dialing a list"),
        ("pause", "take no new number after the current call"),
        ("resume", "go on dialing"),
        ("skip", "skip the current number"),
        ("stop", "stop the session"),
    ):
        cmd = dsub.add_parser(action, help=text)
        if action == "start":
            cmd.add_argument("list_id")
        _daemon_options(cmd)

    agent = sub.add_parser("agent", help="an agent's state in the daemon, as the widget sets it")
    asub = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    state = asub.add_parser("state", help="become available, paused (with a reason) or offline")
    state.add_argument("state", choices=("available", "paused", "offline"))
    state.add_argument("reason", nargs="?", help="why, when paused: one of [widget] pause_reasons")
    _daemon_options(state)


def _daemon_options(cmd: Any) -> None:
    cmd.add_argument("--agent", help="the agent (default: the token's own)")
    cmd.add_argument(
        "--token",
        default=os.environ.get("SWITCHBOARD_TOKEN"),
        help="API token (default: $SWITCHBOARD_TOKEN)",
    )
    cmd.add_argument("--url", help="the daemon's websocket (default: from [websocket])")


async def run_lists(cfg: Config, args: argparse.Namespace) -> int:
    """Carry out ``lists ACTION``; returns the exit code."""
    store = await Store.open(cfg.store.url_with_secret(), default_region=cfg.site.default_region)
    try:
        await store.check_schema()
        if args.lists_command == "show":
            list_id = _uuid(args.list_id)
            for state, count in sorted((await store.call_lists.progress(list_id)).items()):
                print(f"{state}\t{count}")
            return EXIT_OK
        if args.lists_command == "create":
            entries: list[Any] = list(args.numbers)
        else:
            column: str | int = int(args.column) if args.column.isdigit() else args.column
            fmt: Literal["csv", "xlsx"] = "xlsx" if args.file.suffix.lower() == ".xlsx" else "csv"
            try:
                # Checked before reading: the limit must not need the whole file in memory.
                if args.file.stat().st_size > MAX_IMPORT_BYTES:
                    raise CliProblem(
                        f"{args.file}: larger than {MAX_IMPORT_BYTES} bytes; split the list"
                    )
                data = args.file.read_bytes()
            except OSError as exc:
                raise CliProblem(f"{args.file}: cannot read: {exc.strerror}") from exc
            entries = list(read_numbers(data, format=fmt, column=column, header=not args.no_header))
        allowed, refused = screen_entries(entries, cfg)
        call_list, report = await store.call_lists.create_list(args.name, None, allowed)
        _print_report(call_list.id, report, refused)
        return EXIT_OK
    finally:
        await store.aclose()


def _print_report(
    list_id: uuid.UUID, report: CallListReport, refused: list[tuple[str, str]]
) -> None:
    print(list_id)
    print(
        f"{report.added} numbers added, {report.duplicates} duplicates merged, "
        f"{len(report.invalid)} invalid (kept, never dialed), "
        f"{len(refused)} refused by the outbound policy (left out)",
        file=sys.stderr,
    )
    for raw, reason in report.invalid:
        # Both come from the file: a cell could hold terminal escape sequences.
        print(f"invalid: {printable(raw)}: {printable(reason)}", file=sys.stderr)
    for raw, reason in refused:
        print(f"refused: {printable(raw)}: {printable(reason)}", file=sys.stderr)


async def run_dialer(cfg: Config, args: argparse.Namespace) -> int:
    """Send ``dialer ACTION`` to the running daemon; returns the exit code."""
    command: dict[str, Any] = {}
    if args.dialer_command == "start":
        command["call_list_id"] = str(_uuid(args.list_id))
    return await _send(cfg, args, f"dialer.{args.dialer_command}", command)


async def run_agent(cfg: Config, args: argparse.Namespace) -> int:
    """``agent state STATE [REASON]``: the agent's declared state, kept by the daemon
    across restarts; the same command the widget's state menu sends."""
    command: dict[str, Any] = {"state": args.state}
    if args.reason is not None:
        command["reason"] = args.reason
    return await _send(cfg, args, "agent.state.set", command)


async def run_call(cfg: Config, args: argparse.Namespace) -> int:
    """``call NUMBER``: a click-to-call placed by the running daemon."""
    return await _send(cfg, args, "call.originate", {"to": args.number})


async def _send(cfg: Config, args: argparse.Namespace, name: str, command: dict[str, Any]) -> int:
    """Send one command to the running daemon as the token's user; print the result."""
    if not args.token:
        raise CliProblem("an API token is needed (--token or $SWITCHBOARD_TOKEN)")
    ws = cfg.websocket
    scheme = "wss" if ws.tls_cert else "ws"
    url = args.url or f"{scheme}://{ws.host}:{ws.port}"
    if args.agent:
        command["agent"] = args.agent
    try:
        async with connect(url, open_timeout=10, close_timeout=5) as conn:
            await conn.send(json.dumps({"type": "auth", "token": args.token}))
            while json.loads(await conn.recv())["type"] != "auth.ok":
                pass
            message = {"type": "command", "id": "cli", "name": name}
            await conn.send(json.dumps({**message, "args": command}))
            while True:
                reply = json.loads(await conn.recv())
                if reply.get("id") == "cli" and reply["type"] in ("result", "error"):
                    break
    except ConnectionClosed as exc:
        reason = exc.rcvd.reason if exc.rcvd is not None else "connection lost"
        raise CliProblem(f"the daemon at {url} closed the connection: {reason}") from exc
    except OSError as exc:
        raise CliProblem(f"cannot reach the daemon at {url}: {exc}") from exc
    if reply["type"] == "error":
        print(f"switchboard: {name}: {reply['code']}: {reply['message']}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(reply["data"]))
    return EXIT_OK


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError as exc:
        raise CliProblem(f"not a list id: {text!r}") from exc
