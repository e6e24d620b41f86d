"""The v3 package is handed what it needs: it imports neither the app nor the HTTP layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

V3 = Path(__file__).resolve().parents[2] / "runyard" / "v3"
FORBIDDEN = ("runyard.app", "runyard.api", "runyard.web", "runyard.cli")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", sorted(V3.glob("*.py")), ids=lambda p: p.name)
def test_v3_module_imports_no_app_nor_http_layer(path: Path) -> None:
    for name in _imports(path):
        assert not any(
            name == forbidden or name.startswith(forbidden + ".") for forbidden in FORBIDDEN
        ), f"{path.name} imports {name}"


def test_the_check_sees_v3_modules() -> None:
    assert {path.name for path in V3.glob("*.py")} >= {"service.py", "keys.py", "viewer.py"}
