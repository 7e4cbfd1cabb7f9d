"""The ``switchboard`` command line.

Exit codes: 0 success; 1 a runtime failure (store unreachable, user not
found …); 2 invalid configuration or invalid arguments, so that systemd's
``RestartPreventExitStatus=2`` stops a unit that would only fail again.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import ipaddress
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TextIO

import structlog

import config as cfgmod
from config import Config, ConfigError
from crm_store import (
    InvalidPassword,
    Role,
    Store,
    StoreError,
    User,
    downgrade,
    head_revision,
    upgrade,
)
from sip import firewall
from sip.exceptions import PoolConfigError
from sip.pool import plan_workers

from . import cli_dialer
from .daemon import Daemon, StartupError
from .gateway import GatewayProcess
from .logs import configure_logging

__all__ = ["DEFAULT_CONFIG", "main"]

DEFAULT_CONFIG = "/etc/switchboard/switchboard.toml"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

log = structlog.get_logger(__name__)


class _Failure(Exception):
    """A command failed in a way the user can act on; printed without a traceback."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="switchboard",
        description="Self-hosted telephony companion for CRMs.",
    )
    p.add_argument(
        "-c",
        "--config",
        default=os.environ.get("SWITCHBOARD_CONFIG", DEFAULT_CONFIG),
        help=f"configuration file (default: $SWITCHBOARD_CONFIG or {DEFAULT_CONFIG})",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("run", help="run the daemon in the foreground")

    gw = sub.add_parser(
        "gateway", help="run a websocket gateway fed from MQTT (scale-out), in the foreground"
    )
    gw.add_argument("--mqtt", metavar="URL", help="broker URL (default: bus.mqtt_url)")
    gw.add_argument(
        "--site",
        help="site to send commands to when no event says which daemon owns them "
        "(default: site.id)",
    )
    gw.add_argument(
        "--command-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for a daemon's reply to a command (default: 10)",
    )

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", nargs="?", help="file to check (default: --config)")
    check.add_argument(
        "--show", action="store_true", help="print the effective configuration, secrets masked"
    )

    fw = sub.add_parser(
        "firewall",
        help="print kernel filter rules letting only the PBX reach the SIP workers",
        description="Print an nftables ruleset (default) for the SIP and RTP ports of the "
        "configuration, or a systemd drop-in with IPAddressAllow=. See docs/operations.md.",
    )
    fw.add_argument("--format", choices=("nftables", "systemd"), default="nftables")
    fw.add_argument(
        "--rtp-source",
        action="append",
        default=[],
        type=_network,
        metavar="NETWORK",
        help="network RTP may come from (repeatable; default: pbx.allowed_sources)",
    )
    fw.add_argument(
        "--allow",
        action="append",
        default=[],
        type=_network,
        metavar="NETWORK",
        help="systemd only: another peer network of the daemon (web clients, database, "
        "broker); repeatable",
    )

    db = sub.add_parser("db", help="database schema")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dbsub.add_parser("upgrade", help="migrate the schema up (default: to head)")
    up.add_argument("revision", nargs="?", default="head")
    down = dbsub.add_parser("downgrade", help="migrate the schema down to REVISION")
    down.add_argument("revision")
    dbsub.add_parser("current", help="print the schema revision and the code's head")

    users = sub.add_parser("users", help="CRM users and their API tokens")
    usub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = usub.add_parser("add", help="create a user")
    add.add_argument("username")
    add.add_argument("--name", dest="display_name", help="display name (default: username)")
    add.add_argument("--role", choices=[r.value for r in Role], default=Role.AGENT.value)
    add.add_argument("--extension", help="the user's phone extension")
    usub.add_parser("list", help="list users")
    token = usub.add_parser("token", help="issue an API token (printed once)")
    token.add_argument("username")
    token.add_argument("--label", default="cli", help="what the token is for")
    tokens = usub.add_parser("tokens", help="list a user's tokens (never their values)")
    tokens.add_argument("username")
    revoke = usub.add_parser("revoke", help="revoke an API token by its id")
    revoke.add_argument("token_id")
    disable = usub.add_parser("disable", help="disable a user (open sessions are closed)")
    disable.add_argument("username")
    enable = usub.add_parser("enable", help="enable a disabled user again")
    enable.add_argument("username")
    role = usub.add_parser("role", help="change a user's role (open sessions are closed)")
    role.add_argument("username")
    role.add_argument("role", choices=[r.value for r in Role])
    password = usub.add_parser(
        "password",
        help="set a user's password for the web pages (asked twice; ends their browser "
        "sessions and lifts a lock-out)",
    )
    password.add_argument("username")
    password.add_argument(
        "--stdin",
        action="store_true",
        help="read the password from one line of standard input (for scripts)",
    )
    cli_dialer.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(Path(args.file or args.config), show=args.show, out=sys.stdout)
    try:
        cfg = cfgmod.load_config(args.config)
    except ConfigError as exc:
        _print_issues(exc, sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"{args.config}: cannot read: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(fmt=cfg.logging.format, level=cfg.logging.level)
    try:
        if args.command == "run":
            daemon = Daemon(Path(args.config), cfg)
            return asyncio.run(daemon.run())
        if args.command == "gateway":
            try:
                process = GatewayProcess(
                    cfg,
                    mqtt_url=args.mqtt,
                    default_site=args.site,
                    command_timeout=args.command_timeout,
                )
            except ValueError as exc:
                print(f"switchboard gateway: {exc}", file=sys.stderr)
                return EXIT_USAGE
            return asyncio.run(process.run())
        if args.command == "firewall":
            return _firewall(cfg, args, source=args.config, out=sys.stdout)
        if args.command == "db":
            return asyncio.run(_db(cfg, args))
        if args.command == "lists":
            return asyncio.run(cli_dialer.run_lists(cfg, args))
        if args.command == "dialer":
            return asyncio.run(cli_dialer.run_dialer(cfg, args))
        if args.command == "call":
            return asyncio.run(cli_dialer.run_call(cfg, args))
        if args.command == "agent":
            return asyncio.run(cli_dialer.run_agent(cfg, args))
        return asyncio.run(_with_store(cfg, _USERS[args.users_command], args))
    except (StartupError, _Failure, StoreError, cli_dialer.CliProblem) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _network(text: str) -> str:
    """An argparse type: an IP address or CIDR network, as given."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address or network") from None
    return text


def _firewall(cfg: Config, args: argparse.Namespace, *, source: str, out: TextIO) -> int:
    if args.format == "systemd":
        out.write(firewall.systemd_dropin(cfg, allow=args.allow, source=source))
    else:
        out.write(firewall.nftables_ruleset(cfg, rtp_sources=args.rtp_source, source=source))
    return EXIT_OK


def _print_issues(exc: ConfigError, out: TextIO) -> None:
    for issue in exc.issues:
        print(issue.format(), file=out)
    n = len(exc.issues)
    print(f"{n} error{'s' if n != 1 else ''}", file=out)


def _check_config(path: Path, *, show: bool, out: TextIO) -> int:
    try:
        cfg = cfgmod.load_config(path)
    except ConfigError as exc:
        _print_issues(exc, sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    # What the model accepts must also fit on the SIP workers, or the daemon would
    # exit at start: lay the lines out as it will.
    try:
        plan_workers(cfg)
    except PoolConfigError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        print("1 error", file=sys.stderr)
        return EXIT_USAGE
    if show:
        json.dump(cfgmod.dump_redacted(cfg), out, indent=2, default=str)
        out.write("\n")
    else:
        print(
            f"{path}: ok ({len(cfg.lines)} lines, {len(cfg.agents)} agents, "
            f"store {cfg.store.url.split(':', 1)[0]})",
            file=out,
        )
    return EXIT_OK


async def _db(cfg: Config, args: argparse.Namespace) -> int:
    url = cfg.store.url_with_secret()
    if args.db_command == "upgrade":
        await upgrade(url, args.revision)
        print(f"schema at {args.revision}")
    elif args.db_command == "downgrade":
        await downgrade(url, args.revision)
        print(f"schema at {args.revision}")
    else:
        store = await Store.open(url, default_region=cfg.site.default_region)
        try:
            current = await store.schema_revision()
        finally:
            await store.aclose()
        print(f"current: {current or '(empty)'}\nhead:    {head_revision()}")
    return EXIT_OK


StoreCommand = Callable[[Store, argparse.Namespace], Awaitable[int]]


async def _with_store(cfg: Config, command: StoreCommand, args: argparse.Namespace) -> int:
    store = await Store.open(cfg.store.url_with_secret(), default_region=cfg.site.default_region)
    try:
        await store.check_schema()
        return await command(store, args)
    finally:
        await store.aclose()


async def _user(store: Store, username: str) -> User:
    user = await store.users.by_username(username)
    if user is None:
        raise _Failure(f"no user named {username!r}")
    return user


async def _users_add(store: Store, args: argparse.Namespace) -> int:
    user = await store.users.add(
        username=args.username,
        display_name=args.display_name or args.username,
        role=Role(args.role),
        extension=args.extension,
    )
    print(f"{user.id}\t{user.username}\t{user.role}")
    return EXIT_OK


async def _users_list(store: Store, args: argparse.Namespace) -> int:
    for user in await store.users.list():
        state = "active" if user.active else "inactive"
        print(f"{user.id}\t{user.username}\t{user.role}\t{user.extension or '-'}\t{state}")
    return EXIT_OK


async def _users_token(store: Store, args: argparse.Namespace) -> int:
    user = await _user(store, args.username)
    token, plaintext = await store.users.issue_token(user.id, label=args.label)
    # The only place the plaintext ever appears: it is stored hashed.
    print(plaintext)
    print(f"token id {token.id}; shown once, store it now", file=sys.stderr)
    return EXIT_OK


async def _users_tokens(store: Store, args: argparse.Namespace) -> int:
    user = await _user(store, args.username)
    for token in await store.users.list_tokens(user.id):
        state = "revoked" if token.revoked_at else "active"
        print(f"{token.id}\t{token.label}\t{token.created_at.isoformat()}\t{state}")
    return EXIT_OK


async def _users_revoke(store: Store, args: argparse.Namespace) -> int:
    try:
        token_id = uuid.UUID(args.token_id)
    except ValueError as exc:
        raise _Failure(f"not a token id: {args.token_id!r}") from exc
    await store.users.revoke_token(token_id)
    print(f"revoked {token_id}")
    return EXIT_OK


async def _users_active(store: Store, args: argparse.Namespace) -> int:
    user = await _user(store, args.username)
    await store.users.set_active(user.id, args.users_command == "enable")
    print(f"{args.users_command}d {user.username}")
    return EXIT_OK


async def _users_role(store: Store, args: argparse.Namespace) -> int:
    user = await _user(store, args.username)
    await store.users.set_role(user.id, Role(args.role))
    print(f"{user.username} is now {args.role}")
    return EXIT_OK


def _read_password(from_stdin: bool) -> str:
    """The new password: one line of standard input, or typed twice unseen."""
    if from_stdin:
        return sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Again: ") != first:
        raise _Failure("the two passwords differ; nothing changed")
    return first


async def _users_password(store: Store, args: argparse.Namespace) -> int:
    user = await _user(store, args.username)
    password = await asyncio.to_thread(_read_password, args.stdin)
    try:
        await store.users.set_password(user.id, password)
    except InvalidPassword as exc:
        print(f"switchboard: {exc}; nothing changed", file=sys.stderr)
        return EXIT_USAGE
    print(f"password set for {user.username}")
    return EXIT_OK


_USERS: dict[str, StoreCommand] = {
    "add": _users_add,
    "list": _users_list,
    "token": _users_token,
    "tokens": _users_tokens,
    "revoke": _users_revoke,
    "disable": _users_active,
    "enable": _users_active,
    "role": _users_role,
    "password": _users_password,
}


if __name__ == "__main__":
    sys.exit(main())
