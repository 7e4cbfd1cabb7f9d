"""The connection loop the MQTT bridge and the gateway's feed share, on real brokers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
import structlog

from bus._mqtt_connection import ConnectionLoop
from tests._services import PrivateMosquitto, mqtt_address

pytestmark = pytest.mark.mqtt

HOST, PORT = mqtt_address()
TIMEOUT = 10.0


class _Owner:
    """A connection's owner that reports each connection and ends it on request."""

    def __init__(self, port: int, *, end_with: BaseException | None = None) -> None:
        self.port = port
        self.connections: asyncio.Queue[aiomqtt.Client] = asyncio.Queue()
        self.failures: asyncio.Queue[int] = asyncio.Queue()
        self.drop = asyncio.Event()
        self.end_with = end_with
        self.loop = ConnectionLoop(
            name="test",
            url_for_logs=f"mqtt://{HOST}:{port}",
            new_client=self.new_client,
            serve=self.serve,
            timeout=2.0,
            reconnect_min=0.05,
            reconnect_max=0.2,
            on_failure=lambda: self.failures.put_nowait(self.loop.failures),
            log_context=lambda: {"owner": "test"},
        )

    def new_client(self) -> aiomqtt.Client:
        return aiomqtt.Client(HOST, self.port, timeout=2.0)

    async def serve(self, client: aiomqtt.Client) -> None:
        await client.subscribe("switchboard-test/connection", qos=1)
        self.loop.succeeded()
        self.connections.put_nowait(client)
        if self.end_with is not None:
            raise self.end_with
        await self.drop.wait()
        self.drop.clear()
        raise aiomqtt.MqttError("dropped by the test")


@pytest.fixture
async def late_broker(tmp_path: Path) -> AsyncIterator[PrivateMosquitto]:
    """A private broker on a free port, not started yet."""
    broker = PrivateMosquitto(tmp_path / "mqtt")
    try:
        yield broker
    finally:
        await asyncio.to_thread(broker.close)


async def test_a_broker_that_is_not_there_is_retried_until_it_is_and_a_lost_connection_again(
    late_broker: PrivateMosquitto,
) -> None:
    owner = _Owner(late_broker.port)
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(owner.loop.run(), name="connection-loop")
        try:
            async with asyncio.timeout(TIMEOUT):
                assert await owner.failures.get() == 1
                assert await owner.failures.get() == 2
                await late_broker.astart()
                await owner.connections.get()
                assert owner.loop.failures == 0
                owner.drop.set()
                assert await owner.failures.get() == 1
                await owner.connections.get()
                assert owner.loop.failures == 0
        finally:
            task.cancel()
            await asyncio.wait({task})
    lost = [entry for entry in logs if entry["event"] == "test.disconnected"]
    assert len(lost) >= 3
    assert all(entry["owner"] == "test" for entry in lost)
    assert all(entry["url"] == f"mqtt://{HOST}:{late_broker.port}" for entry in lost)
    assert lost[-1]["error"] == "dropped by the test"
    assert all(0.025 <= entry["retry_in"] <= 0.2 for entry in lost)
    assert task.cancelled()


async def test_backoff_grows_with_each_failure_up_to_the_cap_and_follows_changed_bounds() -> None:
    owner = _Owner(PORT)
    loop = owner.loop
    for failures, ceiling in [(0, 0.05), (1, 0.1), (2, 0.2), (9, 0.2)]:
        loop.failures = failures
        assert all(ceiling / 2 <= loop.backoff() <= ceiling for _ in range(100))
    loop.reconnect_min, loop.reconnect_max = 1.0, 4.0
    loop.failures = 5
    assert all(2.0 <= loop.backoff() <= 4.0 for _ in range(100))


async def test_an_error_that_is_not_the_connections_ends_the_loop_for_its_supervisor() -> None:
    owner = _Owner(PORT, end_with=ValueError("a bug in the owner"))
    with pytest.raises(ValueError, match="a bug in the owner"):
        async with asyncio.timeout(TIMEOUT):
            await owner.loop.run()
    assert owner.connections.qsize() == 1
    assert owner.failures.empty()


def test_bounds_that_cannot_back_off_are_refused() -> None:
    with pytest.raises(ValueError, match="reconnect_min"):
        ConnectionLoop(
            name="test",
            url_for_logs="mqtt://broker.invalid",
            new_client=lambda: aiomqtt.Client("broker.invalid"),
            serve=lambda client: asyncio.sleep(0),
            timeout=1.0,
            reconnect_min=2.0,
            reconnect_max=1.0,
        )


async def test_a_task_ending_on_its_own_restarts_all_and_a_connection_resets_the_count() -> None:
    owner = _Owner(PORT)
    loop = owner.loop
    boom = asyncio.Event()
    restarted: list[int] = []

    async def other() -> None:
        await boom.wait()
        boom.clear()
        raise RuntimeError("a bug beside the connection")

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(
            loop.supervise(
                lambda: {"test-connection": loop.run(), "test-other": other()},
                on_restart=lambda: restarted.append(loop.restarts),
            )
        )
        try:
            async with asyncio.timeout(TIMEOUT):
                await owner.connections.get()
                boom.set()
                await owner.connections.get()
        finally:
            task.cancel()
            await asyncio.wait({task})
    assert restarted == [1]
    assert (loop.restarts, loop.crashes) == (1, 0)
    [crashed] = [entry for entry in logs if entry["event"] == "test.crashed"]
    assert crashed["task"] == "test-other"
    assert crashed["error"] == "RuntimeError('a bug beside the connection')"
    # The first crash: the backoff of one failure, reconnect_min * 2 with jitter.
    assert 0.05 <= crashed["restart_in"] <= 0.1
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("test-")] == []


async def test_an_expected_end_returns_once_the_other_tasks_have_ended() -> None:
    owner = _Owner(PORT)
    steps: list[str] = []
    go = asyncio.Event()

    async def first() -> None:
        steps.append("first")
        go.set()

    async def second() -> None:
        await go.wait()
        steps.append("second")

    async with asyncio.timeout(TIMEOUT):
        await owner.loop.supervise(
            lambda: {"test-first": first(), "test-second": second()},
            finished=lambda tasks: tasks["test-first"].done(),
        )
    assert steps == ["first", "second"]
    assert owner.loop.restarts == 0
