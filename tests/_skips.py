"""A skipped test fails the run unless its reason is on the allow-list.

A green run that skipped the PostgreSQL or the MQTT tests proves nothing about them,
so a skip is an error by default. The allow-list (``tests/skips-allowed.txt``, or the
file ``SWITCHBOARD_TEST_SKIP_ALLOWLIST`` names) holds one pattern per line, matched
against the skip's reason with :func:`fnmatch.fnmatchcase`; ``#`` starts a comment,
which should say why that skip is acceptable. At the end of the session, every skip
whose reason no pattern matches is listed, and the run's exit status is 1.

Loaded from tests/conftest.py as a plugin (``pytest_plugins``).
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = [
    "ALLOWLIST_VARIABLE",
    "Skip",
    "SkipGuard",
    "allowed_patterns",
    "allowlist_path",
    "unexpected",
]

ALLOWLIST_VARIABLE = "SWITCHBOARD_TEST_SKIP_ALLOWLIST"
DEFAULT_ALLOWLIST = Path(__file__).with_name("skips-allowed.txt")


@dataclass(frozen=True, slots=True)
class Skip:
    """One skipped test (or module) and the reason it gave."""

    nodeid: str
    reason: str


def allowed_patterns(path: Path | None = None) -> list[str]:
    """The patterns of the allow-list at ``path`` (by default the environment's or
    tests/skips-allowed.txt), comments and blank lines removed. A missing file allows
    nothing."""
    if path is None:
        path = allowlist_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    patterns = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [p for p in patterns if p]


def allowlist_path() -> Path:
    """The allow-list file: ``SWITCHBOARD_TEST_SKIP_ALLOWLIST``, else tests/skips-allowed.txt."""
    configured = os.environ.get(ALLOWLIST_VARIABLE, "").strip()
    return Path(configured) if configured else DEFAULT_ALLOWLIST


def unexpected(skips: list[Skip], patterns: list[str]) -> list[Skip]:
    """The skips whose reason matches none of ``patterns``."""
    return [s for s in skips if not any(fnmatch.fnmatchcase(s.reason, p) for p in patterns)]


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason.removeprefix("Skipped: ")


class SkipGuard:
    """The plugin object: records skips as they are reported, fails the session on
    the unexpected ones and lists them in the terminal summary."""

    def __init__(self) -> None:
        self.skips: list[Skip] = []

    def unexpected(self) -> list[Skip]:
        return unexpected(self.skips, allowed_patterns())

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skips.append(Skip(report.nodeid, _reason(report)))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:
            self.skips.append(Skip(report.nodeid, _reason(report)))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # A run whose only module skipped collected no test: still a skip to report.
        quiet = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
        if self.unexpected() and session.exitstatus in quiet:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        found = self.unexpected()
        if not found:
            return
        terminalreporter.section("unexpected skips", sep="=", red=True, bold=True)
        for skip in found:
            terminalreporter.line(f"{skip.nodeid}: {skip.reason}")
        terminalreporter.line(
            f"{len(found)} skip(s) not on the allow-list ({allowlist_path()}): the run "
            "fails. Make the test run, or add its reason there with a comment saying why."
        )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipGuard(), "switchboard-skip-guard")
