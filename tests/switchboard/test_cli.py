"""The command line, run as a user runs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from crm_store import LoginOutcome, Role, Store

from .conftest import SWITCHBOARD, run_cli, write_config

REPO = Path(__file__).resolve().parents[2]

FIVE_MISTAKES = """\
[site]
default_region = "XX"

[pbx]
host = "127.0.0.1"
port = 70000
domain = "switchboard.lab"

[[lines]]
extension = "2001"
secret = "s"
role = "agent"

[[agents]]
name = "Alice"
extension = "10a1"
line = "2001"

[logging]
format = "xml"

[recording]
retention_dayz = 3
"""


def test_example_config_is_valid() -> None:
    result = run_cli("check-config", str(REPO / "config" / "examples" / "switchboard.toml"))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_five_mistakes_are_reported_together_with_key_paths(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(FIVE_MISTAKES)
    result = run_cli("check-config", str(cfg))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith(str(cfg))]
    assert len(lines) == 5, result.stderr
    expected = {
        "site.default_region": 2,
        "pbx.port": 6,
        "agents[0].extension": 16,
        "logging.format": 20,
        "recording.retention_dayz": 23,
    }
    for path, line_no in expected.items():
        assert any(line.startswith(f"{cfg}:{line_no}: {path}: ") for line in lines), (
            path,
            result.stderr,
        )
    assert result.stderr.rstrip().endswith("5 errors")


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("check-config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_run_refuses_an_invalid_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(FIVE_MISTAKES)
    result = run_cli("--config", str(cfg), "run")
    assert result.returncode == 2
    assert "agents[0].extension" in result.stderr


def test_users_add_token_and_revoke(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path / "switchboard.toml"))
    assert run_cli("--config", cfg, "db", "upgrade").returncode == 0
    added = run_cli(
        "--config", cfg, "users", "add", "alice", "--name", "Alice Martin", "--role", "supervisor"
    )
    assert added.returncode == 0, added.stderr
    issued = run_cli("--config", cfg, "users", "token", "alice", "--label", "widget")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token.startswith("sbt_")
    url = f"sqlite+aiosqlite:///{tmp_path / 'switchboard.sqlite3'}"

    async def authenticate() -> str | None:
        store = await Store.open(url, default_region="FR")
        try:
            user = await store.users.authenticate(token)
            return None if user is None else f"{user.username}:{user.role}"
        finally:
            await store.aclose()

    assert asyncio.run(authenticate()) == f"alice:{Role.SUPERVISOR}"
    listed = run_cli("--config", cfg, "users", "tokens", "alice")
    token_id = listed.stdout.split("\t", 1)[0]
    assert token not in listed.stdout
    revoked = run_cli("--config", cfg, "users", "revoke", token_id)
    assert revoked.returncode == 0, revoked.stderr
    assert asyncio.run(authenticate()) is None


def test_users_token_for_unknown_user_fails_clearly(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path / "switchboard.toml"))
    assert run_cli("--config", cfg, "db", "upgrade").returncode == 0
    result = run_cli("--config", cfg, "users", "token", "nobody")
    assert result.returncode == 1
    assert "no user named 'nobody'" in result.stderr


def _password_cli(
    cfg: str, username: str, line: str, *, prompted: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *SWITCHBOARD,
            *("--config", cfg, "users", "password", username),
            *(() if prompted else ("--stdin",)),
        ],
        input=line,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
        check=False,
        # No controlling terminal: the prompts read standard input (getpass's
        # fallback) instead of a terminal the test may be running in.
        start_new_session=True,
    )


def _login(tmp_path: Path, username: str, password: str) -> LoginOutcome:
    url = f"sqlite+aiosqlite:///{tmp_path / 'switchboard.sqlite3'}"

    async def attempt() -> LoginOutcome:
        store = await Store.open(url, default_region="FR")
        try:
            return (await store.sessions.login(username, password, address=None)).outcome
        finally:
            await store.aclose()

    return asyncio.run(attempt())


def test_users_password_from_stdin_lets_the_user_log_in(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path / "switchboard.toml"))
    assert run_cli("--config", cfg, "db", "upgrade").returncode == 0
    assert run_cli("--config", cfg, "users", "add", "alice").returncode == 0
    assert _login(tmp_path, "alice", "s3cret pass phrase") is LoginOutcome.WRONG_CREDENTIALS
    result = _password_cli(cfg, "alice", "s3cret pass phrase\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "password set for alice"
    assert "s3cret" not in result.stdout + result.stderr
    assert _login(tmp_path, "alice", "s3cret pass phrase") is LoginOutcome.OK


def test_users_password_asks_twice_and_refuses_two_different_answers(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path / "switchboard.toml"))
    assert run_cli("--config", cfg, "db", "upgrade").returncode == 0
    assert run_cli("--config", cfg, "users", "add", "alice").returncode == 0
    differ = _password_cli(cfg, "alice", "first answer\nsecond answer\n", prompted=True)
    assert differ.returncode == 1
    assert "differ" in differ.stderr
    assert _login(tmp_path, "alice", "first answer") is LoginOutcome.WRONG_CREDENTIALS
    same = _password_cli(cfg, "alice", "same answer\nsame answer\n", prompted=True)
    assert same.returncode == 0, same.stderr
    assert _login(tmp_path, "alice", "same answer") is LoginOutcome.OK


def test_users_password_refuses_a_short_one_and_changes_nothing(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path / "switchboard.toml"))
    assert run_cli("--config", cfg, "db", "upgrade").returncode == 0
    assert run_cli("--config", cfg, "users", "add", "alice").returncode == 0
    assert _password_cli(cfg, "alice", "long enough one\n").returncode == 0
    short = _password_cli(cfg, "alice", "short\n")
    assert short.returncode == 2
    assert "at least 8 characters" in short.stderr
    assert "short" not in short.stderr.replace("at least", "")
    assert _login(tmp_path, "alice", "long enough one") is LoginOutcome.OK
    unknown = _password_cli(cfg, "nobody", "long enough one\n")
    assert unknown.returncode == 1
    assert "no user named 'nobody'" in unknown.stderr


def test_db_upgrade_then_downgrade_to_base(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path / "switchboard.toml"))
    assert run_cli("--config", cfg, "db", "upgrade").returncode == 0
    current = run_cli("--config", cfg, "db", "current")
    head = current.stdout.splitlines()[1].split()[-1]
    assert current.stdout.splitlines()[0].split()[-1] == head
    assert run_cli("--config", cfg, "db", "downgrade", "base").returncode == 0
    assert "(empty)" in run_cli("--config", cfg, "db", "current").stdout


def test_lists_import_refuses_a_file_with_bad_rows_and_creates_nothing(tmp_path: Path) -> None:
    import sqlite3

    cfg = str(write_config(tmp_path / "switchboard.toml"))
    assert run_cli("--config", cfg, "db", "upgrade").returncode == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("name,phone\nAda,0612345678\nBob\nEve," + "9" * 80 + "\n")
    refused = run_cli("--config", cfg, "lists", "import", "april", str(bad), "--column", "phone")
    assert refused.returncode == 1
    assert "line 3" in refused.stderr
    assert "line 4" in refused.stderr
    with sqlite3.connect(tmp_path / "switchboard.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM call_lists").fetchone() == (0,)

    good = tmp_path / "good.csv"
    good.write_text("name;phone\nAda;06 12 34 56 78\nBob;+33 6 98 76 54 32\nAda again;0612345678\n")
    imported = run_cli("--config", cfg, "lists", "import", "april", str(good), "--column", "phone")
    assert imported.returncode == 0, imported.stderr
    assert "2 numbers added, 1 duplicates merged, 0 invalid" in imported.stderr
    shown = run_cli("--config", cfg, "lists", "show", imported.stdout.strip())
    assert "pending\t2" in shown.stdout


def test_dialer_command_without_a_daemon_says_so(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path / "switchboard.toml"))
    result = run_cli("--config", cfg, "dialer", "pause", "--token", "sbt_x")
    assert result.returncode == 1
    assert "cannot reach the daemon" in result.stderr


def test_lists_import_report_prints_file_cells_without_terminal_controls(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path / "switchboard.toml"))
    assert run_cli("--config", cfg, "db", "upgrade").returncode == 0
    hostile = tmp_path / "hostile.csv"
    # Not a dialable number: it is kept as invalid and shown in the report.
    hostile.write_bytes(b"phone\n0612345678\n\x1b[2J\x1b]0;owned\x07123\n")
    imported = run_cli("--config", cfg, "lists", "import", "may", str(hostile), "--column", "phone")
    assert imported.returncode == 0, imported.stderr
    assert "1 invalid" in imported.stderr
    assert "invalid: [2J]0;owned123:" in imported.stderr
    assert "\x1b" not in imported.stderr
    assert "\x07" not in imported.stderr


def test_lists_import_refuses_a_file_over_the_size_limit(
    tmp_path: Path,
) -> None:
    cfg = str(write_config(tmp_path / "switchboard.toml"))
    assert run_cli("--config", cfg, "db", "upgrade").returncode == 0
    huge = tmp_path / "huge.csv"
    # Sparse: 64 MiB on paper, nothing on disk.
    with huge.open("wb") as out:
        out.truncate(64 * 1024**2)
    refused = run_cli("--config", cfg, "lists", "import", "big", str(huge), "--column", "0")
    assert refused.returncode == 1
    assert "larger than 16777216 bytes" in refused.stderr


def test_check_config_refuses_tls_to_the_pbx_with_key_path_and_reason(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "tls.toml")
    cfg.write_text(cfg.read_text().replace("[pbx]\n", '[pbx]\ntransport = "tls"\n', 1))
    result = run_cli("check-config", str(cfg))
    assert result.returncode == 2, result.stdout
    assert "pbx.transport: tls is not supported by the SIP workers yet" in result.stderr
    assert "use udp or tcp" in result.stderr


def test_check_config_refuses_lines_that_do_not_fit_on_the_workers(tmp_path: Path) -> None:
    # Valid key by key, but the daemon could not lay the lines out at start.
    cfg = write_config(tmp_path / "small.toml", sip={"accounts_per_worker": 1})
    result = run_cli("check-config", str(cfg))
    assert result.returncode == 2, result.stdout
    assert f"{cfg}: sip.accounts_per_worker: must be at least 2" in result.stderr
