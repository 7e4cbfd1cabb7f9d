"""The dialer's modules: small, and speaking the leg vocabulary, not the worker's wire."""

from __future__ import annotations

import ast
from pathlib import Path

import dialer

_PACKAGE = Path(dialer.__file__).parent
# The worker's protocol and the pool's private modules belong to sip/.
_FORBIDDEN = ("sip.protocol", "sip.client", "sip.worker", "sip._")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_dialer_module_reads_the_worker_protocol() -> None:
    offenders = {
        f"{path.name}: {name}"
        for path in sorted(_PACKAGE.glob("*.py"))
        for name in _imports(path)
        if name.startswith(_FORBIDDEN)
    }
    assert offenders == set()


def test_no_dialer_module_is_over_600_lines() -> None:
    sizes = {
        path.name: len(path.read_text(encoding="utf-8").splitlines())
        for path in _PACKAGE.glob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > 600} == {}
