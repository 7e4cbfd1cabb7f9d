"""The layout docs/architecture.md promises: small modules, and the worker's wire
protocol read only inside sip/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("config", "crm_store", "sip", "dialer", "bus", "ws_gateway", "web", "switchboard")
# Modules a newcomer reads whole: one concept each.
SMALL = ("sip", "dialer", "ws_gateway", "switchboard")
MAX_LINES = 600
# The worker's protocol and the pool's private modules belong to sip/.
SIP_INSIDE = ("sip.protocol", "sip.client", "sip.worker", "sip._")


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("package", [p for p in PRODUCT if p != "sip"])
def test_only_sip_reads_the_worker_protocol(package: str) -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in _modules(package)
        for name in _imports(path)
        if name.startswith(SIP_INSIDE)
    }
    assert offenders == set()


@pytest.mark.parametrize("package", SMALL)
def test_no_module_is_over_600_lines(package: str) -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in _modules(package)
    }
    assert sizes, package
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
