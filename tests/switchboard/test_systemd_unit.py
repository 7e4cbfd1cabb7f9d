"""The shipped unit file is valid for systemd and carries the hardening."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "switchboard.service"


def _service_section() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        if section == "Service":
            values.setdefault(key, []).append(value)
    return values


def test_unit_is_notify_with_watchdog_and_hardening() -> None:
    service = _service_section()
    assert service["Type"] == ["notify"]
    assert service["WatchdogSec"][0].rstrip("s").isdigit()
    assert service["RestartPreventExitStatus"] == ["2"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "User": "switchboard",
    }.items():
        assert service[key] == [value], key
    assert "switchboard" in service["StateDirectory"][0].split()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_verifies_with_systemd_analyze(tmp_path: Path) -> None:
    # Point ExecStart at this environment's interpreter so verify can check it.
    unit = tmp_path / "switchboard.service"
    unit.write_text(
        UNIT.read_text().replace("/opt/switchboard/venv/bin/switchboard", sys.executable)
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    problems = [line for line in result.stderr.splitlines() if "switchboard.service" in line]
    assert result.returncode == 0, result.stderr
    assert not problems, result.stderr
