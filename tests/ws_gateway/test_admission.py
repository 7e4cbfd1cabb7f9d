"""Who gets to authenticate, and how often: the token check is a read, floods
are capped and throttled, and users have a bounded number of sessions."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ws_gateway import Gateway

from .conftest import Client, until


@pytest.fixture
def write_lock_held(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection to the store's SQLite file holding its write lock."""
    conn = sqlite3.connect(tmp_path / "crm.sqlite3", isolation_level=None, timeout=0)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")
        conn.close()


async def test_token_checks_are_reads_answered_while_another_writer_holds_the_lock(
    make_gateway: Any,
    open_client: Any,
    tokens: dict[str, str],
    write_lock_held: sqlite3.Connection,
) -> None:
    # A check that took the write lock (BEGIN IMMEDIATE) would queue behind the
    # writer for the busy timeout; a read goes through at once (WAL).
    # Under the old check, each guess waited for the lock past auth_timeout
    # (2 s here; the busy timeout is 10 s) and was closed 1011, "cannot check".
    gw: Gateway = await make_gateway(
        auth_failures_per_address=1000, max_unauthenticated_per_address=100
    )
    guesses = [await open_client(gw=gw) for _ in range(20)]
    for n, guess in enumerate(guesses):
        await guess.ws.send(json.dumps({"type": "auth", "token": f"sbt_guess{n:040d}"}))
    codes = await asyncio.gather(*(g.close_frame(5.0) for g in guesses))
    assert codes == [(4401, "invalid token")] * 20
    sue: Client = await open_client(gw=gw)
    assert (await sue.auth(tokens["sue"]))["user"] == "sue"
    # The writer was never blocked by the flood: it still holds its lock, and
    # it commits.
    write_lock_held.execute("UPDATE users SET display_name = display_name")


async def test_repeated_auth_failures_from_an_address_are_throttled_with_4429(
    make_gateway: Any, open_client: Any, tokens: dict[str, str]
) -> None:
    gw: Gateway = await make_gateway(auth_failures_per_address=3, auth_failure_window=0.5)
    for n in range(3):
        guess: Client = await open_client(gw=gw)
        await guess.ws.send(json.dumps({"type": "auth", "token": f"sbt_wrong{n}"}))
        assert await guess.close_frame(1.0) == (4401, "invalid token")
    # The address is refused at once, before it may send even a good token.
    refused: Client = await open_client(gw=gw)
    assert await refused.close_frame(1.0) == (
        4429,
        "too many failed authentications; retry later",
    )
    assert gw.stats.closed_auth_throttled == 1
    # Another address is not throttled.
    other: Client = await open_client(gw=gw, local_addr=("127.0.0.2", 0))
    await other.auth(tokens["bob"])
    # Once the window has passed, the address may try again.
    await asyncio.sleep(0.6)  # the window is a span of time, not a state
    again: Client = await open_client(gw=gw)
    await again.auth(tokens["alice"])


async def test_unauthenticated_connections_are_capped_per_address_with_1013(
    make_gateway: Any, open_client: Any, tokens: dict[str, str]
) -> None:
    gw: Gateway = await make_gateway(max_unauthenticated_per_address=2, auth_timeout=5.0)
    waiting = [await open_client(gw=gw) for _ in range(2)]
    extra: Client = await open_client(gw=gw)
    assert await extra.close_frame(1.0) == (
        1013,
        "too many connections authenticating; retry later",
    )
    other: Client = await open_client(gw=gw, local_addr=("127.0.0.2", 0))
    await other.auth(tokens["bob"])
    # Once one of the waiting authenticates, there is room again.
    await waiting[0].auth(tokens["alice"])
    late: Client = await open_client(gw=gw)
    await late.auth(tokens["sue"])


async def test_unauthenticated_connections_are_capped_in_all_with_1013(
    make_gateway: Any, open_client: Any
) -> None:
    gw: Gateway = await make_gateway(max_unauthenticated=3, auth_timeout=5.0)
    for n in range(3):
        await open_client(gw=gw, local_addr=(f"127.0.0.{n + 2}", 0))
    await until(lambda: gw.stats.authenticating == 3)
    extra: Client = await open_client(gw=gw, local_addr=("127.0.0.9", 0))
    assert await extra.close_frame(1.0) == (
        1013,
        "too many connections authenticating; retry later",
    )


async def test_a_user_over_max_sessions_per_user_is_closed_with_4409(
    make_gateway: Any, open_client: Any, tokens: dict[str, str]
) -> None:
    gw: Gateway = await make_gateway(max_sessions_per_user=2)
    first: Client = await open_client(tokens["alice"], gw=gw)
    await open_client(tokens["alice"], gw=gw)
    third: Client = await open_client(gw=gw)
    await third.ws.send(json.dumps({"type": "auth", "token": tokens["alice"]}))
    assert await third.close_frame(1.0) == (4409, "too many sessions for this user")
    # Others are not counted against alice.
    await open_client(tokens["bob"], gw=gw)
    await first.ws.close()
    await until(lambda: gw.stats.connected == 2)
    await open_client(tokens["alice"], gw=gw)
