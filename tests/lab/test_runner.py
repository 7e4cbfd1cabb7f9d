"""The runner: free ports, several labs at once, nothing left behind."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from lab import Lab, PhoneSpec
from lab.pytest_plugin import TEST_EXTENSIONS

from ._helpers import processes_mentioning


async def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    run_dir = tmp_path / "lab"
    lab = await Lab.start(run_dir, extensions=TEST_EXTENSIONS, phones=["1001", "1002"])
    customer = await lab.customers.call("1001", "+33612345678", talk_seconds=30)
    await lab.phones["1001"].wait_call_answered(timeout=5)
    # Kamailio's workers, SIPp UAS and UAC, and both phones.
    assert len(processes_mentioning(str(run_dir))) >= 6
    await lab.stop()
    await lab.stop()  # idempotent
    assert processes_mentioning(str(run_dir)) == []
    assert customer.done


async def test_two_labs_run_side_by_side_on_their_own_ports(tmp_path: Path) -> None:
    first, second = await asyncio.gather(
        Lab.start(tmp_path / "a", extensions=TEST_EXTENSIONS, phones=["1001"]),
        Lab.start(tmp_path / "b", extensions=TEST_EXTENSIONS, phones=["1001"]),
    )
    async with first, second:
        assert first.pbx_port != second.pbx_port
        assert first.customers.port != second.customers.port
        for lab in (first, second):
            assert len(await lab.pbx.contacts("1001")) == 1


async def test_start_that_times_out_leaves_no_process_behind(tmp_path: Path) -> None:
    run_dir = tmp_path / "lab"
    # A phone with a wrong password never registers, so the start waits until cancelled.
    phones = ["1001", PhoneSpec("1002", password="wrong")]
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(3):
            await Lab.start(run_dir, extensions=TEST_EXTENSIONS, phones=phones)
    assert (run_dir / "kamailio.log").exists()
    assert processes_mentioning(str(run_dir)) == []


async def test_start_tries_again_when_a_picked_port_is_taken_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another program holds the first RTP block's first port, as if it had bound it
    # between the lab's probe and SIPp's bind; the second pick is a genuinely free block.
    from lab import _ports

    pick = _ports.free_rtp_block
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken = pick(1200)
    holder.bind(("127.0.0.1", taken))
    picks: list[int] = []

    def first_taken_then_free(size: int, host: str = "127.0.0.1") -> int:
        picks.append(taken if not picks else pick(size, host))
        return picks[-1]

    monkeypatch.setattr(_ports, "free_rtp_block", first_taken_then_free)
    try:
        lab = await Lab.start(tmp_path / "lab", extensions=TEST_EXTENSIONS, phones=["1001"])
        async with lab:
            assert len(picks) == 2
            assert picks[1] != taken
            assert len(await lab.pbx.contacts("1001")) == 1
    finally:
        holder.close()
