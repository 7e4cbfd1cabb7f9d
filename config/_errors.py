"""The package's exceptions: one root, carrying every problem found in a config file."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ConfigError", "ConfigIssue"]


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration file.

    ``path`` names the key (``agents[2].extension``: dotted keys, 0-based indices; empty for
    a problem with the file as a whole), ``line`` is the 1-based line of that key or of its
    nearest parent present in the file, and ``source`` names the file.
    """

    path: str
    message: str
    line: int | None = None
    source: str = "<string>"

    def format(self) -> str:
        """Render as ``source:line: path: message``, leaving out the parts that are unknown."""
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; ``issues`` lists every problem found, in file order.

    This is the root exception of the package: nothing else escapes ``load_config`` or
    ``parse_config``.
    """

    issues: tuple[ConfigIssue, ...]

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues = tuple(sorted(issues, key=_issue_order))
        super().__init__(*self.issues)

    def __str__(self) -> str:
        return "\n".join(issue.format() for issue in self.issues)


def _issue_order(issue: ConfigIssue) -> tuple[bool, int, str]:
    return (issue.line is None, issue.line or 0, issue.path)
