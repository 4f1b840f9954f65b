"""Dependencies point one way: api → registry, engine. engine and registry never import each other or api."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"engine": {"api", "registry"}, "registry": {"api", "engine"}}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_upwards(package):
    offenders = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & FORBIDDEN[package])
                 for p in (ROOT / package).rglob("*.py")}
    assert {p: bad for p, bad in offenders.items() if bad} == {}


def test_cli_client_commands_do_not_import_the_engine():
    for path in [ROOT / "api" / "client.py", *(ROOT / "api" / "commands").glob("*.py")]:
        if path.name == "imports.py":          # `pollama import` converts models locally by design
            continue
        assert "engine" not in imported_packages(path), path
