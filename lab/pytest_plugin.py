"""pytest fixtures for tests that need the lab.

Enable with ``pytest_plugins = ["lab.pytest_plugin"]`` in the root ``conftest.py``, or
import the fixtures into a conftest (``from lab.pytest_plugin import lab, ...``).

``lab`` is function-scoped: every test gets its own Kamailio, customers and phones on
free ports, in ``tmp_path / "lab"``, stopped (process groups killed) at teardown.
Override ``lab_extensions`` or ``lab_phones`` in a test module to change what it runs.

``lab_pbx_mode`` (default ``"proxy"``) chooses the PBX mode and ``lab_b2bua_lines``
(default ``("2100",)``, the tests' reception line) the lines that go through the B2BUA
in ``"b2bua"`` mode. Run a test in both modes with
``@pytest.mark.parametrize("lab_pbx_mode", ["proxy", "b2bua"])``: the parameter
overrides the fixture of that name.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from lab.phones import PhoneSpec
from lab.runner import DEFAULT_B2BUA_LINES, Lab, PbxMode

__all__ = [
    "TEST_EXTENSIONS",
    "lab",
    "lab_b2bua_lines",
    "lab_extensions",
    "lab_pbx_mode",
    "lab_phones",
]

# Lab-only credentials, regenerated into each run directory; not secrets.
TEST_EXTENSIONS: dict[str, str] = {
    "1001": "lab-phone-1001",
    "1002": "lab-phone-1002",
    "1003": "lab-phone-1003",
    "2001": "lab-line-2001",
    "2002": "lab-line-2002",
    "2003": "lab-line-2003",
    "2100": "lab-line-2100",
    "2200": "lab-line-2200",
}

_TOOLS = ("kamailio", "kamcmd", "sipp", "sox")


@pytest.fixture
def lab_extensions() -> dict[str, str]:
    """Extensions and passwords the ``lab`` fixture registers in Kamailio."""
    return dict(TEST_EXTENSIONS)


@pytest.fixture
def lab_phones() -> list[str | PhoneSpec]:
    """The agent phones the ``lab`` fixture runs (default: 1001 and 1002)."""
    return ["1001", "1002"]


@pytest.fixture
def lab_pbx_mode() -> PbxMode:
    """The PBX mode of the ``lab`` fixture: ``proxy`` (Kamailio alone, forking) or
    ``b2bua`` (the lines of ``lab_b2bua_lines`` through the lab B2BUA)."""
    return "proxy"


@pytest.fixture
def lab_b2bua_lines() -> tuple[str, ...]:
    """The lines whose calls go through the B2BUA in b2bua mode (the reception line)."""
    return DEFAULT_B2BUA_LINES


@pytest_asyncio.fixture
async def lab(
    tmp_path: Path,
    lab_extensions: dict[str, str],
    lab_phones: list[str | PhoneSpec],
    lab_pbx_mode: PbxMode,
    lab_b2bua_lines: tuple[str, ...],
) -> AsyncIterator[Lab]:
    """A running lab; stopped, with every process it started killed, after the test."""
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the lab needs {', '.join(missing)} (Debian: kamailio, sip-tester, sox)")
    async with await Lab.start(
        tmp_path / "lab",
        extensions=lab_extensions,
        phones=lab_phones,
        pbx_mode=lab_pbx_mode,
        b2bua_lines=lab_b2bua_lines,
    ) as running:
        yield running
