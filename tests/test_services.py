"""The tests' private servers: they start on a free port, stop, and come back with
their data, so fault tests can take them away mid-test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiomqtt
import asyncpg
import pytest

from tests import _services
from tests._services import PrivateMosquitto, PrivatePostgres

TIMEOUT = 10.0


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()


async def test_private_postgres_keeps_its_data_across_a_stop_and_start(
    postgres: PrivatePostgres,
) -> None:
    conn = await asyncpg.connect(postgres.admin_dsn)
    try:
        await conn.execute("CREATE TABLE kept (n int)")
        await conn.execute("INSERT INTO kept VALUES (42)")
    finally:
        await conn.close()

    await postgres.astop()
    assert not postgres.running
    with pytest.raises(ConnectionRefusedError):
        await asyncpg.connect(postgres.admin_dsn, timeout=TIMEOUT)

    await postgres.astart()
    conn = await asyncpg.connect(postgres.admin_dsn)
    try:
        assert await conn.fetchval("SELECT n FROM kept") == 42
    finally:
        await conn.close()


async def test_private_postgres_stop_cuts_open_connections(postgres: PrivatePostgres) -> None:
    conn = await asyncpg.connect(postgres.admin_dsn)
    try:
        await postgres.astop(mode="immediate")
        with pytest.raises((asyncpg.PostgresError, OSError, asyncpg.InterfaceError)):
            await conn.fetchval("SELECT 1")
    finally:
        conn.terminate()
    await postgres.astart()
    assert postgres.running


async def test_private_mosquitto_delivers_a_persistent_sessions_messages_after_a_restart(
    private_broker: PrivateMosquitto,
) -> None:
    observer = {"identifier": "observer", "clean_session": False, "timeout": TIMEOUT}
    async with aiomqtt.Client(private_broker.host, private_broker.port, **observer) as client:
        await client.subscribe("kept/#", qos=1)
    async with aiomqtt.Client(private_broker.host, private_broker.port, timeout=TIMEOUT) as client:
        await client.publish("kept/1", b"one", qos=1)

    await private_broker.astop()
    assert not private_broker.running
    await private_broker.astart()

    async with aiomqtt.Client(private_broker.host, private_broker.port, **observer) as client:
        async with asyncio.timeout(TIMEOUT):
            message = await anext(aiter(client.messages))
    assert (message.topic.value, message.payload) == ("kept/1", b"one")


def test_configured_servers_are_used_unless_private_ones_are_forced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(_services.PG_URL_VARIABLE, "postgresql://postgres@db.test:6543/test")
    monkeypatch.setenv(_services.MQTT_URL_VARIABLE, "mqtt://broker.test:2883")
    monkeypatch.delenv(_services.SERVICES_VARIABLE, raising=False)
    assert _services.postgres_admin_dsn() == "postgresql://postgres@db.test:6543/test"
    assert _services.mqtt_address() == ("broker.test", 2883)

    monkeypatch.setenv(_services.SERVICES_VARIABLE, "private")
    host, port = _services.mqtt_address()
    assert (host, port) != ("broker.test", 2883)
    assert host == "127.0.0.1"
