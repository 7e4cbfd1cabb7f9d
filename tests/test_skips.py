"""The skip allow-list: a skip whose reason is not on it fails the run, by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TESTS = """
import pytest

def test_runs():
    pass

def test_skips_for_a_listed_reason():
    pytest.skip("the printer is asleep")

@pytest.mark.skipif(True, reason="no broker answers at 127.0.0.1:1883")
def test_skips_for_want_of_a_server():
    pass
"""


def _run(directory: Path, allowlist: str, tests: str = TESTS) -> subprocess.CompletedProcess[str]:
    (directory / "pytest.ini").write_text("[pytest]\n")
    (directory / "conftest.py").write_text('pytest_plugins = ["tests._skips"]\n')
    (directory / "test_sample.py").write_text(tests)
    (directory / "allowed.txt").write_text(allowlist)
    env = {**os.environ, "SWITCHBOARD_TEST_SKIP_ALLOWLIST": str(directory / "allowed.txt")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(directory)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_skip_not_on_the_allow_list_fails_the_run_and_is_named(tmp_path: Path) -> None:
    done = _run(tmp_path, "# why the printer may sleep\nthe printer is *\n")
    assert done.returncode == 1, done.stdout
    assert "unexpected skips" in done.stdout
    assert (
        "test_sample.py::test_skips_for_want_of_a_server: no broker answers at 127.0.0.1:1883"
        in done.stdout
    )
    assert "test_skips_for_a_listed_reason:" not in done.stdout
    assert "1 skip(s) not on the allow-list" in done.stdout


def test_skips_all_on_the_allow_list_leave_the_run_green(tmp_path: Path) -> None:
    done = _run(tmp_path, "the printer is *\nno broker answers at *  # a comment\n")
    assert done.returncode == 0, done.stdout
    assert "unexpected skips" not in done.stdout


def test_a_module_skipped_at_collection_counts_as_a_skip(tmp_path: Path) -> None:
    module = 'import pytest\npytest.skip("no SIPp", allow_module_level=True)\n'
    done = _run(tmp_path, "", tests=module)
    assert done.returncode == 1, done.stdout
    assert "test_sample.py: no SIPp" in done.stdout


def test_a_failing_run_keeps_its_own_exit_status(tmp_path: Path) -> None:
    tests = "import pytest\ndef test_fails():\n    raise AssertionError\n" + TESTS
    done = _run(tmp_path, "", tests=tests)
    assert done.returncode == 1, done.stdout
    assert "1 failed" in done.stdout
    assert "unexpected skips" in done.stdout
