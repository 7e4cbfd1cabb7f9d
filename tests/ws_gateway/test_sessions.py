"""Open sessions follow the store: revoked, disabled or demoted users are closed
(4401) within a second, whoever made the change (this process or the CLI)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import pytest

from config import AgentConfig
from crm_store import Role, Store
from ws_gateway import Gateway, Principal

from ..switchboard.conftest import run_cli, write_config
from .conftest import AGENTS, Client, until


async def closed_within(client: Client, seconds: float) -> tuple[int, str, float]:
    """Wait for the server to close ``client``; its code, reason and the delay."""
    started = time.monotonic()
    code, reason = await client.close_frame(seconds)
    return code, reason, time.monotonic() - started


async def token_id_of(store: Store, username: str) -> Any:
    user = await store.users.by_username(username)
    assert user is not None
    [token] = await store.users.list_tokens(user.id)
    return token.id


async def test_revoked_token_closes_its_open_session_with_4401_within_a_second(
    open_client: Any, tokens: dict[str, str], store: Store
) -> None:
    alice: Client = await open_client(tokens["alice"])
    bob: Client = await open_client(tokens["bob"])
    await alice.expect("snapshot")
    await bob.expect("snapshot")
    await store.users.revoke_token(await token_id_of(store, "alice"))
    code, reason, delay = await closed_within(alice, 1.0)
    assert (code, reason) == (4401, "access revoked")
    assert delay < 1.0
    # Bob's session is not touched.
    assert (await bob.command("agent.state.set", {"state": "available"}))["type"] == "result"


async def test_disabled_user_is_closed_with_4401_within_a_second(
    open_client: Any, tokens: dict[str, str], store: Store
) -> None:
    sue: Client = await open_client(tokens["sue"])
    await sue.expect("snapshot")
    user = await store.users.by_username("sue")
    assert user is not None
    await store.users.set_active(user.id, False)
    code, reason, _ = await closed_within(sue, 1.0)
    assert (code, reason) == (4401, "access revoked")


async def test_supervisor_role_removed_in_the_store_closes_the_session_with_4401(
    open_client: Any, tokens: dict[str, str], store: Store
) -> None:
    sue: Client = await open_client(tokens["sue"])
    assert (await sue.expect("snapshot"))["type"] == "snapshot"
    user = await store.users.by_username("sue")
    assert user is not None
    await store.users.set_role(user.id, Role.AGENT)
    code, reason, _ = await closed_within(sue, 1.0)
    assert (code, reason) == (4401, "rights changed")
    # Coming back with the same token gives a session with the current rights.
    again: Client = await open_client()
    ok = await again.auth(tokens["sue"])
    assert ok["role"] == "agent"


async def test_supervisor_flag_removed_by_a_config_reload_closes_the_session_with_4401(
    make_gateway: Any, open_client: Any, tokens: dict[str, str]
) -> None:
    agents = [
        *AGENTS,
        AgentConfig(name="Bobsup", extension="104", line="2004", user="bob", supervisor=True),
    ]
    gw: Gateway = await make_gateway(agents=agents)
    bob: Client = await open_client(gw=gw)
    assert (await bob.auth(tokens["bob"]))["role"] == "supervisor"
    agents[-1] = AgentConfig(name="Bobsup", extension="104", line="2004", user="bob")
    code, reason, _ = await closed_within(bob, 1.0)
    assert (code, reason) == (4401, "rights changed")


@pytest.mark.parametrize(
    ("action", "user", "reason"),
    [
        ("revoke", "alice", "access revoked"),
        ("disable", "alice", "access revoked"),
        ("role", "sue", "rights changed"),
    ],
)
async def test_a_change_made_by_the_cli_in_another_process_closes_the_session_within_a_second(
    tmp_path: Path,
    open_client: Any,
    tokens: dict[str, str],
    store: Store,
    action: str,
    user: str,
    reason: str,
) -> None:
    # The CLI writes the same SQLite file through its own process and connection.
    (tmp_path / "cli").mkdir()
    config = write_config(tmp_path / "cli" / "switchboard.toml")
    text = config.read_text().replace(
        str(tmp_path / "cli" / "switchboard.sqlite3"), str(tmp_path / "crm.sqlite3")
    )
    config.write_text(text)
    client: Client = await open_client(tokens[user])
    await client.expect("snapshot")
    args = {
        "revoke": [str(await token_id_of(store, user))],
        "disable": [user],
        "role": [user, "agent"],
    }[action]
    done = await asyncio.to_thread(run_cli, "--config", str(config), "users", action, *args)
    assert done.returncode == 0, done.stderr
    code, got, _ = await closed_within(client, 1.0)
    assert (code, got) == (4401, reason)


async def test_a_failing_session_check_closes_no_one(
    make_gateway: Any, open_client: Any, tokens: dict[str, str]
) -> None:
    checks = 0

    async def store_down(tokens: Collection[str]) -> Mapping[str, Principal]:
        nonlocal checks
        checks += 1
        raise ConnectionRefusedError("the store is down")

    gw: Gateway = await make_gateway(session_check=store_down, session_check_interval=0.02)
    alice: Client = await open_client(gw=gw)
    await alice.auth(tokens["alice"])
    await alice.expect("snapshot")
    await until(lambda: checks >= 3)
    assert (await alice.command("agent.state.set", {"state": "available"}))["type"] == "result"
    assert gw.stats.closed_revoked == 0
